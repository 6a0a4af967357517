"""The facilitator: verify and settle x402 ``exact`` payments on one EVM chain.

Sans-HTTP: the ASGI app in ``app.py`` only decodes bodies and maps outcomes to
status codes. The order of operations in ``settle`` is the safety argument:

1. offline checks (no I/O) and the journal's memory of this authorization;
2. claim the authorization in the journal (one winner across replicas);
3. simulate on-chain; failure releases the claim, nothing moved;
4. sign the transaction and journal it *before* broadcasting, under a lock on
   the signer's nonces that replicas sharing the key share (the database's);
5. wait, boundedly, for the receipt; a slow chain yields ``settlement_pending``
   with the transaction hash, and the reconciler (or the next identical call)
   finishes the job.

A chain failure before step 4 commits releases the claim and raises
``ChainUnavailable`` or ``RpcError`` (HTTP 503: nothing changed, retry); after
it, the transaction is journaled and the answer is ``settlement_pending``.

A repeated call with the same signed payload, the same terms and the same
resource gets the first call's result; the same authorization with a different
payload, other terms or for another resource is refused. The resource is what
the request names: ``paymentRequirements.resource`` in x402 v1,
``paymentPayload.resource.url`` in v2 (a resource server overwrites the
client's unsigned copy with its own). It is compared as a value: a request that
names no resource matches only a claim that named none.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_typing import HexStr
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TimeExhausted
from web3.types import TxParams

from a402.chain.exact_transfer import (
    authorization_used,
    classify_revert,
    estimate_transfer_gas,
    simulate_transfer,
    transfer_calldata,
)
from a402.chain.node import Chain
from a402.chain.rpc import ChainUnavailable, Reverted, RpcError, as_int, rpc
from a402.chain.tx import SignedTx, broadcast, pending_nonce, sign, wait_for_receipt
from a402.chain.upto_settle import (
    UPTO_PROXY_ADDRESS,
    classify_upto_revert,
    permit2_nonce_used,
    settle_calldata,
)
from a402.exact.checks import VALID_BEFORE_MARGIN, check_exact
from a402.exact.eip3009 import ExactEvmPayload
from a402.exact.upto import SCHEME_UPTO, UptoEvmPayload, check_upto
from a402.facilitator.settings import FacilitatorConfig
from a402.facilitator.store import (
    FINAL,
    Settlement,
    SettlementStore,
    State,
    payload_digest,
    settlement_key,
    upto_payload_digest,
    upto_settlement_key,
)
from a402.wire import errors as wire_errors
from a402.wire.convert import normalize
from a402.wire.errors import WireError
from a402.wire.networks import v1_name
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    parse_facilitator_request,
)

log = logging.getLogger("a402.facilitator")

SCHEME = "exact"


@dataclass(frozen=True)
class _Checked:
    """A payment that passed every offline check, with what settling it takes."""

    payload: PaymentPayload
    requirements: PaymentRequirements
    scheme: str
    payer: str
    key: str
    payload_hash: str
    resource: str | None
    target: str
    """The contract the settlement calls: the token (exact), the upto proxy (upto)."""
    calldata: bytes
    amount: int
    """What the settlement moves; an upto charge of 0 sends no transaction."""
    valid_before: int
    """exact: ``validBefore``; upto: the Permit2 ``deadline`` (the chain refuses past it)."""

    def classify(self, reason: str) -> str:
        if self.scheme == SCHEME_UPTO:
            return classify_upto_revert(reason)
        return classify_revert(reason, wire_errors.TRANSACTION_SIMULATION_FAILED)


class Facilitator:
    def __init__(
        self, chain: Chain, signer: LocalAccount, store: SettlementStore,
        config: FacilitatorConfig | None = None,
    ) -> None:
        self.chain = chain
        self.signer = signer
        self.store = store
        self.config = config or FacilitatorConfig()
        self.network = chain.network
        self._wakeup = threading.Condition()
        self._upto: bool | None = None

    # ------------------------------------------------------------------ supported

    def supported(self) -> SupportedResponse:
        kinds = [SupportedKind(x402_version=2, scheme=SCHEME, network=self.network)]
        if legacy := v1_name(self.chain.chain_id):
            kinds.append(SupportedKind(x402_version=1, scheme=SCHEME, network=legacy))
        if self._upto_available():
            # As the SDK's upto facilitator: clients bind their witness to this address.
            kinds.append(SupportedKind(x402_version=2, scheme=SCHEME_UPTO, network=self.network,
                                       extra={"facilitatorAddress": self.signer.address}))
        return SupportedResponse(kinds=kinds, signers={"eip155:*": [self.signer.address]})

    def _upto_available(self) -> bool:
        """Whether this chain has the upto proxy (and so Permit2) to settle with; asked
        once, then remembered (a chain that could not be asked is asked again)."""
        if self._upto is None:
            try:
                self._upto = self._is_contract(UPTO_PROXY_ADDRESS)
            except (ChainUnavailable, RpcError):
                return False
        return self._upto

    # --------------------------------------------------------------------- verify

    def verify(self, body: Any) -> VerifyResponse:
        """Malformed bodies raise ``WireError`` (HTTP 400); bad payments are answers."""
        checked = self._check(*self._parse(body))
        if isinstance(checked, VerifyResponse):
            return checked
        if (known := self.store.peek(checked.key)) is not None:
            state, tx_hash, resource = known
            if checked.scheme == SCHEME_UPTO and (record := self.store.get(checked.key)) \
                    and self._settled_for_more(checked, record) is not None:
                # Already charged its whole maximum (by whoever held a copy), to this
                # payee for this resource: any usage is covered, and /settle will answer
                # with that settlement (see _settled_for_more).
                return VerifyResponse(is_valid=True, payer=checked.payer)
            if resource != checked.resource:
                return _invalid(wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE,
                                _another_resource_message(state, tx_hash), checked.payer)
            return _invalid(wire_errors.NONCE_ALREADY_USED, _already_message(state, tx_hash),
                            checked.payer)
        try:
            # exact: the transfer itself; upto: the settlement of the whole maximum.
            simulate_transfer(self.chain, self.signer.address, checked.target, checked.calldata)
        except Reverted as e:
            return _invalid(checked.classify(e.reason), e.reason, checked.payer)
        return VerifyResponse(is_valid=True, payer=checked.payer)

    @staticmethod
    def _parse(body: Any) -> tuple[PaymentPayload, PaymentRequirements]:
        request = parse_facilitator_request(body)
        payload, requirements = normalize(request.payment_payload, request.payment_requirements)
        if payload.resource is not None and not _journalable(payload.resource.url):
            raise WireError(wire_errors.INVALID_PAYLOAD,
                            "the resource URL holds a NUL character or an "
                                               "unpaired surrogate, which no URL has")
        return payload, requirements

    def _check(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, now: int | None = None,
        settling: bool = False,
    ) -> _Checked | VerifyResponse:
        """Every offline check, as of ``now`` (default: the present)."""
        if payload.scheme == SCHEME_UPTO and requirements.scheme == SCHEME_UPTO:
            return self._check_upto(payload, requirements, now=now, settling=settling)
        if payload.scheme != SCHEME or requirements.scheme != SCHEME:
            return _invalid(wire_errors.UNSUPPORTED_SCHEME,
                            f"this facilitator settles only {SCHEME!r}")
        if requirements.network != self.network:
            return _invalid(wire_errors.INVALID_NETWORK,
                            f"this facilitator settles on {self.network}")
        check = check_exact(payload, requirements, now=int(time.time()) if now is None else now)
        # A signature that does not recover to `from` may still be a contract
        # wallet's (EIP-1271): then the simulation below is the signature check.
        contract_wallet = (check.needs_contract_check and check.payer is not None
                           and self._is_contract(check.payer))
        if check.reason and not contract_wallet:
            return _invalid(check.reason, check.message or "", check.payer)
        assert check.authorization is not None and check.payer is not None
        assert check.signature is not None
        auth = check.authorization.to_wire()
        signature = str(payload.payload.get("signature", ""))
        return _Checked(
            payload, requirements, SCHEME, check.payer,
            key=settlement_key(self.network, requirements.asset, check.payer, auth["nonce"]),
            payload_hash=payload_digest(signature, auth),
            resource=payload.resource.url if payload.resource is not None else None,
            target=requirements.asset,
            calldata=transfer_calldata(auth, check.signature),
            amount=requirements.amount_int,
            valid_before=int(check.authorization.valid_before),
        )

    def _check_upto(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, now: int | None,
        settling: bool,
    ) -> _Checked | VerifyResponse:
        """The offline upto checks (:func:`a402.exact.upto.check_upto`). At ``/verify``
        the calldata settles the whole maximum (what the simulation must accept); at
        ``/settle``, the amount the resource server asks, at most the maximum."""
        check = check_upto(payload, requirements, facilitators=[self.signer.address],
                           now=int(time.time()) if now is None else now, settling=settling)
        contract_wallet = (check.needs_contract_check and check.payer is not None
                           and self._is_contract(check.payer))
        if check.reason and not contract_wallet:
            return _invalid(check.reason, check.message or "", check.payer)
        assert check.authorization is not None and check.payer is not None
        assert check.signature is not None
        auth = check.authorization.to_wire()
        return _Checked(
            payload, requirements, SCHEME_UPTO, check.payer,
            key=upto_settlement_key(self.network, requirements.asset, check.payer,
                                    check.authorization.nonce),
            payload_hash=upto_payload_digest(str(payload.payload.get("signature", "")), auth,
                                             check.amount),
            resource=payload.resource.url if payload.resource is not None else None,
            target=UPTO_PROXY_ADDRESS,
            calldata=settle_calldata(auth, check.amount, check.signature),
            amount=check.amount,
            valid_before=int(check.authorization.deadline),
        )

    def _is_contract(self, address: str) -> bool:
        return rpc(self.chain, "eth_getCode", [address, "latest"]) not in ("0x", "0x0", None)

    # --------------------------------------------------------------------- settle

    def settle(self, body: Any) -> SettleResponse:
        payload, requirements = self._parse(body)
        deadline = time.monotonic() + self.config.receipt_timeout
        # A retry of a payment already taken on is checked as if it came while its
        # authorization was valid: once its transaction is mined, the authorization may
        # well have expired, and "expired" would be a false answer about money that
        # moved. Every other check still runs, so the journal answers only a request
        # that /verify would have accepted then: same signed authorization (hence the
        # journaled payee, amount, asset and network), requirements that agree with it.
        journaled = self._journaled(payload, requirements)
        checked = self._check(payload, requirements, settling=True,
                              now=None if journaled is None else min(
            int(time.time()), journaled.valid_before - VALID_BEFORE_MARGIN))
        if isinstance(checked, VerifyResponse):
            return SettleResponse(
                success=False, error_reason=checked.invalid_reason,
                error_message=checked.invalid_message, payer=checked.payer, transaction="",
                network=self.network,
            )

        known = journaled
        while True:
            if known is None:
                if (holder := self._claim(checked)) and (
                        answer := self._settle_claimed(checked, holder, deadline)):
                    return answer
                if (known := self.store.get(checked.key)) is None:
                    continue  # the holder released its claim meanwhile: try again
            if (refusal := self._conflict(checked, known)) is not None:
                return refusal
            if self._stale(known) and (holder := self.store.take_over(
                    checked.key, stale_before=time.time() - self.config.claim_timeout,
                    payload_hash=checked.payload_hash, resource=checked.resource)):
                if answer := self._settle_claimed(checked, holder, deadline):
                    return answer
            elif (answer := self._follow(checked, deadline)) is not None:
                return answer
            known = self.store.get(checked.key)

    def _journaled(
        self, payload: PaymentPayload, requirements: PaymentRequirements
    ) -> Settlement | None:
        """The journal's record of this exact signed payload, if it has one."""
        if requirements.scheme == SCHEME_UPTO:
            return self._journaled_upto(payload, requirements)
        try:
            evm = ExactEvmPayload.from_wire(payload.payload, reason=wire_errors.INVALID_PAYLOAD)
        except WireError:
            return None
        auth = evm.authorization.to_wire()
        key = settlement_key(self.network, requirements.asset, auth["from"], auth["nonce"])
        record = self.store.get(key)
        signature = str(payload.payload.get("signature", ""))
        if record is None or record.payload_hash != payload_digest(signature, auth):
            return None
        return record

    def _journaled_upto(
        self, payload: PaymentPayload, requirements: PaymentRequirements
    ) -> Settlement | None:
        """The journal's record of this signed upto payload settled for this amount."""
        try:
            evm = UptoEvmPayload.from_wire(payload.payload, reason=wire_errors.INVALID_PAYLOAD)
            amount = requirements.amount_int
        except WireError:
            return None
        auth = evm.permit2_authorization
        record = self.store.get(upto_settlement_key(self.network, requirements.asset,
                                                    auth.from_address, auth.nonce))
        if record is None or record.payload_hash != upto_payload_digest(
                evm.signature, auth.to_wire(), amount):
            return None
        return record

    def _claim(self, checked: _Checked) -> str | None:
        return self.store.claim(
            key=checked.key, payload_hash=checked.payload_hash, network=self.network,
            asset=checked.requirements.asset, payer=checked.payer,
            pay_to=checked.requirements.pay_to, amount=checked.amount,
            valid_before=checked.valid_before, resource=checked.resource,
            scheme=checked.scheme,
        )

    def _conflict(self, checked: _Checked, known: Settlement) -> SettleResponse | None:
        """The refusal of a request that is not a retry of the journaled one.

        The terms need no comparison here: ``checked`` passed the checks that tie the
        requirements to the signed authorization, and an equal payload hash means
        the journaled request's authorization is that same one.
        """
        if known.payload_hash != checked.payload_hash:
            if (earlier := self._settled_for_more(checked, known)) is not None:
                return earlier
            return self._failure(checked, wire_errors.NONCE_ALREADY_USED,
                                 "this authorization was already used with another signature")
        if known.resource != checked.resource:
            return self._failure(checked, wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE,
                                 _another_resource_message(known.state, known.tx_hash))
        return None

    def _settled_for_more(self, checked: _Checked, known: Settlement) -> SettleResponse | None:
        """An upto authorization already settled (or being settled) for at least the
        amount now asked, for this resource: that settlement's answer, not a refusal.

        Whoever holds a copy of the payment header (the payer itself, a log, a proxy on
        the way) can ask this facilitator to settle it, for any amount up to the signed
        maximum, before the resource server asks for the usage. The money still goes
        only to the signed payee, once; refusing the server's own settle would then
        leave the payer charged with no response. Answering with the earlier settlement
        (its real amount and transaction) lets the server deliver: it was paid at least
        what it asked. A settlement for *less* than asked is still refused (the server
        is not paid what it asked; otherwise a payer could pre-settle 0 and be served
        free). Nothing is sent either way."""
        if checked.scheme != SCHEME_UPTO or known.resource != checked.resource:
            return None
        signed = UptoEvmPayload.from_wire(checked.payload.payload,
                                          reason=wire_errors.INVALID_PAYLOAD)
        if known.amount < checked.amount or known.payload_hash != upto_payload_digest(
                str(checked.payload.payload.get("signature", "")),
                signed.permit2_authorization.to_wire(), known.amount):
            return None  # not this signed authorization, or settled for less
        if known.state == State.CONFIRMED and known.response is not None:
            return SettleResponse.model_validate(known.response)
        if known.state == State.SUBMITTED:
            return self._pending(known)
        return None

    def _stale(self, record: Settlement) -> bool:
        """A claim whose holder has journaled nothing for ``claim_timeout``: presumed dead."""
        return (record.state == State.CLAIMED
                and time.time() - record.updated_at > self.config.claim_timeout)

    def _follow(self, checked: _Checked, deadline: float) -> SettleResponse | None:
        """The outcome of this request's settlement, which some call has taken on; None
        if it was given up, its claim went stale, or the row is no longer this request's
        (released and claimed again meanwhile): the caller looks again."""
        while True:
            known = self.store.get(checked.key)
            if known is None or self._stale(known) or self._conflict(checked, known):
                return None
            if known.state in FINAL:
                return SettleResponse.model_validate(known.response)
            if known.state == State.SUBMITTED:
                return self._await(known, deadline)
            if time.monotonic() > deadline:  # another call holds the claim and is slow
                return self._pending(known)
            self._wait_for_change(0.05)

    def _settle_claimed(
        self, checked: _Checked, holder: str, deadline: float
    ) -> SettleResponse | None:
        """Settle under our claim (``holder``); None if we lost it (taken over, or
        released): nothing was sent and the caller follows whoever holds it now.

        Until the transaction is journaled any failure, of the chain or else, releases
        the claim and propagates: nothing was signed into the journal, nothing sent.
        """
        if checked.amount == 0 and checked.scheme == SCHEME_UPTO:
            return self._settle_nothing(checked, holder)
        calldata = checked.calldata
        try:
            try:
                gas = estimate_transfer_gas(self.chain, self.signer.address, checked.target,
                                            calldata)
            except Reverted as e:
                self.store.release(checked.key, holder=holder)
                return self._failure(checked, checked.classify(e.reason), e.reason)
            call: TxParams = {"to": to_checksum_address(checked.target),
                              "data": HexStr("0x" + calldata.hex())}
            with self._sender_lock():
                signed = sign(self.chain, self.signer, call,
                              nonce=pending_nonce(self.chain, self.signer.address),
                              gas=int(gas * self.config.gas_margin))
                if not self.store.record_submission(checked.key, holder, signed.tx_hash,
                                                    signed.raw):
                    return None
                self._broadcast(signed)
        except BaseException:
            self.store.release(checked.key, holder=holder)  # a journaled row is not touched
            raise
        record = self.store.get(checked.key)
        assert record is not None
        return self._await(record, deadline)

    def _settle_nothing(self, checked: _Checked, holder: str) -> SettleResponse | None:
        """An upto charge of 0: no transaction. The claim becomes a confirmed row with no
        transaction hash, so this authorization is spent in the journal (only this
        facilitator may settle it on-chain: the proxy checks ``witness.facilitator``)
        and every later settle of it, of any amount, is refused or answered this."""
        response = SettleResponse(success=True, transaction="", network=self.network,
                                  payer=checked.payer, amount="0")
        if not self.store.settle_without_transaction(checked.key, holder, response.to_wire()):
            return None
        self._notify()
        return response

    @contextlib.contextmanager
    def _sender_lock(self) -> Iterator[None]:
        """Our signer's nonces, one transaction at a time: this process's threads by the
        chain's lock, then the processes sharing the journal by the database's. In that
        order, so each process holds at most one connection waiting for the database."""
        with self.chain.sender_lock(self.signer.address), \
                self.store.sender_lock(self.network, self.signer.address):
            yield

    def _broadcast(self, signed: SignedTx) -> None:
        """Send a journaled transaction; any failure (the node refused it, or could not
        be reached) is left to the reconciler, which re-sends or re-signs it."""
        try:
            broadcast(self.chain, signed)
        except Exception as e:
            log.warning("broadcast of %s failed: %s", signed.tx_hash, e)

    def _await(self, record: Settlement, deadline: float) -> SettleResponse:
        """Wait for the journaled transaction until ``deadline``, then finish or report pending."""
        assert record.tx_hash is not None
        remaining = max(0.0, deadline - time.monotonic())
        try:
            receipt = wait_for_receipt(self.chain, record.tx_hash, remaining)
        except (TimeExhausted, ChainUnavailable, RpcError):
            return self._pending(record)
        try:
            return self._finish(record, int(receipt["status"]) == 1)
        except (ChainUnavailable, RpcError):  # a revert's cause unknown yet: the next call's
            return self._pending(record)

    def _finish(self, record: Settlement, mined_ok: bool) -> SettleResponse:
        if mined_ok:
            response = SettleResponse(success=True, transaction=record.tx_hash or "",
                                      network=self.network, payer=record.payer,
                                      amount=str(record.amount) if _is_upto(record) else None)
            state = State.CONFIRMED
        elif self._used_by_another(record):
            response = SettleResponse(
                success=False, error_reason=wire_errors.NONCE_ALREADY_USED,
                error_message="the settlement transaction reverted: another transaction had "
                              "already used this authorization, so its funds moved to the "
                              "payee, but not through this settlement",
                transaction=record.tx_hash or "", network=self.network, payer=record.payer)
            state = State.FAILED
        else:
            response = SettleResponse(
                success=False, error_reason=wire_errors.TRANSACTION_FAILED,
                error_message="the settlement transaction reverted; no funds moved",
                transaction=record.tx_hash or "", network=self.network, payer=record.payer)
            state = State.FAILED
        self.store.finish(record.key, state, response.to_wire())
        self._notify()
        return response

    def _used_by_another(self, record: Settlement) -> bool:
        """Whether our reverted transaction's authorization is used on-chain all the same.

        Anyone may submit a signed authorization (a copy of our pending calldata, another
        facilitator given the same payment); if theirs is mined first, ours reverts but
        the payer's funds moved to the payee, and "no funds moved" would be false."""
        assert record.raw_tx is not None
        data = bytes(TypedTransaction.from_bytes(HexBytes(record.raw_tx)).as_dict()["data"])
        if _is_upto(record):  # settle(((token, max), nonce, deadline), amount, owner, ...)
            nonce_word, owner_word = data[4 + 2 * 32:4 + 3 * 32], data[4 + 5 * 32:4 + 6 * 32]
            return permit2_nonce_used(self.chain, "0x" + owner_word[12:].hex(),
                                      int.from_bytes(nonce_word))
        nonce = data[4 + 5 * 32:4 + 6 * 32]  # the sixth argument of either overload
        try:
            return authorization_used(self.chain, record.asset, record.payer, "0x" + nonce.hex())
        except Reverted:  # no EIP-3009 authorizationState to ask: the revert is all we know
            return False

    def _pending(self, record: Settlement) -> SettleResponse:
        return SettleResponse(
            success=False, error_reason=wire_errors.SETTLEMENT_PENDING,
            error_message="the settlement transaction is not confirmed yet; "
                          "repeat the same request to get its outcome",
            transaction=record.tx_hash or "", network=self.network, payer=record.payer,
            # upto: what is being charged, so that a retry asks the same amount.
            amount=str(record.amount) if _is_upto(record) else None)

    def _failure(self, checked: _Checked, reason: str, message: str) -> SettleResponse:
        return SettleResponse(success=False, error_reason=reason, error_message=message,
                              transaction="", network=self.network, payer=checked.payer)

    def _wait_for_change(self, timeout: float) -> None:
        with self._wakeup:
            self._wakeup.wait(timeout)

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> int:
        """Drive every unfinished settlement one step towards a final state.

        Run at start-up and periodically: it is what makes a crash, a dropped
        transaction or an RPC outage cost time but never money.
        """
        finished = 0
        for record in self.store.unfinished():
            try:
                if self._reconcile_one(record):
                    finished += 1
            except (ChainUnavailable, RpcError) as e:
                log.warning("chain failed (%s); reconciliation postponed", e)
                break
        return finished

    def _reconcile_one(self, record: Settlement) -> bool:
        if record.state == State.CLAIMED:
            if self._stale(record):
                self.store.release(record.key,
                                   stale_before=time.time() - self.config.claim_timeout)
            return False
        assert record.tx_hash is not None and record.raw_tx is not None
        receipt = rpc(self.chain, "eth_getTransactionReceipt", [record.tx_hash])
        if receipt:
            self._finish(record, as_int(receipt["status"]) == 1)
            return True
        if rpc(self.chain, "eth_getTransactionByHash", [record.tx_hash]):
            return False  # still in the mempool
        # exact: refused from validBefore on; upto (Permit2): refused past its deadline.
        refused_from = record.valid_before + (1 if _is_upto(record) else 0)
        if refused_from <= int(time.time()) and self._expired_on_chain(refused_from):
            # Not mined, not pending, and the token now refuses the authorization; a copy
            # mined while we looked at the clock is the outcome.
            if receipt := rpc(self.chain, "eth_getTransactionReceipt", [record.tx_hash]):
                self._finish(record, as_int(receipt["status"]) == 1)
                return True
            response = SettleResponse(
                success=False, error_reason=wire_errors.VALID_BEFORE_EXPIRED,
                error_message="the authorization expired before its transaction was mined; "
                              "no funds moved",
                transaction=record.tx_hash, network=self.network, payer=record.payer)
            self.store.finish(record.key, State.FAILED, response.to_wire())
            return True
        self._rebroadcast(record)
        return False

    def _expired_on_chain(self, valid_before: int) -> bool:
        """Whether no block to come can carry a transfer under this authorization.

        The token compares ``validBefore`` with ``block.timestamp``, not with our
        clock, which may run ahead of the chain's (and a block is stamped before the
        transactions it carries arrive): until the latest block is stamped at or past
        ``validBefore``, a copy of the transaction in flight elsewhere can still be
        mined and move the money, so "no funds moved" would be a guess."""
        latest = rpc(self.chain, "eth_getBlockByNumber", ["latest", False])
        return as_int(latest["timestamp"]) >= valid_before

    def _rebroadcast(self, record: Settlement) -> None:
        """Send the journaled transaction again; if its nonce was taken, re-sign it."""
        assert record.raw_tx is not None and record.tx_hash is not None
        try:
            rpc(self.chain, "eth_sendRawTransaction", ["0x" + record.raw_tx.hex()])
            return
        except Reverted:
            return
        except Exception as e:
            if "nonce" not in str(e).lower():
                log.warning("rebroadcast of %s failed: %s", record.tx_hash, e)
                return
        with self._sender_lock():
            # The nonce may have been taken by this very transaction, mined since we looked
            # (a broadcast racing this reconciler): then the next pass records its receipt,
            # and a second transaction must never be signed for the same authorization.
            if rpc(self.chain, "eth_getTransactionReceipt", [record.tx_hash]):
                return
            tx = TypedTransaction.from_bytes(HexBytes(record.raw_tx)).as_dict()
            call: TxParams = {"to": to_checksum_address(tx["to"]),
                              "data": HexStr("0x" + bytes(tx["data"]).hex())}
            signed = sign(self.chain, self.signer, call,
                          nonce=pending_nonce(self.chain, self.signer.address), gas=tx["gas"])
            # Another reconciler (a replica's) may have re-signed it first: then ours is
            # not journaled and must not be sent.
            if self.store.record_resubmission(record.key, record.tx_hash, signed.tx_hash,
                                              signed.raw):
                self._broadcast(signed)


def _is_upto(record: Settlement) -> bool:
    """Whether the journaled transaction is an upto settlement (sent to the upto proxy)."""
    if record.raw_tx is None:
        return False
    to = TypedTransaction.from_bytes(HexBytes(record.raw_tx)).as_dict()["to"]
    return bytes(HexBytes(to)) == bytes.fromhex(UPTO_PROXY_ADDRESS[2:])


def _journalable(text: str) -> bool:
    """Whether the journal can store ``text``: JSON may carry a NUL (which PostgreSQL's
    text refuses) or an unpaired surrogate (which is not UTF-8), and a settlement whose
    claim cannot be written must be refused up front, not fail half-way."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _invalid(reason: str, message: str = "", payer: str | None = None) -> VerifyResponse:
    return VerifyResponse(is_valid=False, invalid_reason=reason,
                          invalid_message=message or None, payer=payer)


def _already_message(state: State, tx_hash: str | None) -> str:
    if state == State.CONFIRMED:
        return f"this authorization was already settled in {tx_hash}"
    if state == State.FAILED:
        return (f"this authorization was already submitted in {tx_hash} and that settlement "
                "failed; it is not settled again")
    return "this authorization is already being settled"


def _another_resource_message(state: State, tx_hash: str | None) -> str:
    if state == State.CONFIRMED:
        return (f"this authorization already paid for another resource in {tx_hash}; "
                "it cannot pay for this one")
    if state == State.FAILED:
        return (f"this authorization was already submitted for another resource in {tx_hash} "
                "and that settlement failed; it cannot pay for this one")
    return "this authorization is being settled for another resource; it cannot pay for this one"
