"""Paying for MCP tools from an official ``mcp`` ``ClientSession``, within limits.

    async with ClientSession(read, write) as session:
        await session.initialize()
        paying = PayingMCPSession(session, key, max_per_request=token_units_max("0.01"),
                                  budget=Budget(1_000_000))
        answer = await paying.call_tool("forecast", {"city": "Paris"})
        print(answer.result.content, answer.payment.summary() if answer.payment else "free")

A tool call is sent as it is; a result that asks for payment in the x402 MCP wire form
(:mod:`a402.mcp.wire`) is answered with one signed payment in the request's ``_meta``
(``exact``: EIP-3009 of the price; ``upto``: Permit2 of the maximum, which the server
settles for what the tool used, at most that), chosen and reserved by the paying
client's own decision code (:func:`a402.client.choose.choose_within`: the wallet's
allow-lists, the per-call maximum, the budget and, with ``mandate=``, the owner's
mandate, durably reserved before signing). A refusal raises
:class:`~a402.client.errors.PaymentRefused` and nothing was signed. An ``upto`` offer is
paid only in a token the wallet names (``Wallet(key, assets=[...])``) or the mandate
bounds, and counts in the cap, the budget and the mandate at its whole maximum: that is
what the signature risks.

What the caller is told is what the server proved, no more (:class:`PaidToolResult`):
``payment.status`` is ``settled`` only with a receipt saying ``success`` for this payer
on the offer's network; a paid call answered with another payment-required is
``rejected`` (with the server's reason; but a *resent* payment answered "already used"
is ``unconfirmed``, reason ``used_answer_lost``: it was taken for the send whose answer
was lost, and may have been charged), an answer with no successful receipt (the tool
failed and was not charged, says the server) ``unconfirmed``. The amount stays in the
budget in every case: the signed authorization could be settled until it expires, and
only the chain can say it was not.

With ``vault=`` (a :class:`~a402.client.vault.VaultClient` or
:class:`~a402.client.vault.AsyncVaultClient`), a tool priced ``a402`` is paid inside an
Atomic Service Channel: the call is sent, as one JSON-RPC ``tools/call``, through the
vault to the tool's own endpoint the offer names (``extra.mcpUrl``,
:mod:`a402.mcp.channels`), for at most the offered price (and within ``max_per_request``
and the budget) and only to the offer's ``payTo``, and only if the offer is priced in the
vault's own token (the cap and budget are checked in the offer's asset, the vault pays in
its token); the provider's enclave releases the
result against the payment (:class:`PaidToolResult.channel` is the vault's record).
A vault call that fails raises :class:`~a402.client.vault.VaultCallError` (its reason
says whether anything may have been paid; the same call again resends nothing new:
pass its ``idempotencyKey`` to the vault to ask). A mandate is not applied to vault
payments here: with ``mandate=``, an ``a402`` offer is refused.

One call signs at most one payment. When the server answers "resend the same payment"
(the facilitator gave no verdict, the settlement is pending, the payment is in use) the
*same* payload is resent, up to ``retries`` times; a paid call that got no answer at all,
or still that one after the retries, raises :class:`MCPPaymentUnresolved` and the next
call of the same tool with the same arguments resends that payload while it is valid,
so a retry never pays twice.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError

from a402.client import errors
from a402.client.auth import _signed_terms
from a402.client.budget import Budget
from a402.client.choose import choose_within
from a402.client.errors import BudgetExceeded, PaymentError, PaymentRefused
from a402.client.limits import MaxAmount, as_max_amount
from a402.client.records import Payment, PaymentStatus
from a402.client.vault import AsyncVaultClient, VaultCallError, VaultClient, VaultResult
from a402.client.wallet import Wallet
from a402.evm.address import address_key
from a402.exact.upto import SCHEME_UPTO
from a402.mcp import wire
from a402.mcp.paywall import RETRYABLE
from a402.wire import vault_api
from a402.wire.jsonstrict import DEFAULT_LIMITS, loads_object
from a402.wire.x402 import PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from a402.mandate.guard import MandateGuard

log = logging.getLogger(__name__)

DEFAULT_MAX_VALIDITY: Final = 300
REPLAY_MARGIN: Final = 6
DEFAULT_HISTORY: Final = 10_000
_NO_CLIENT_CAP: Final = 1 << 256
PAYMENT_ALREADY_USED: Final = "payment_already_used"
ANSWER_LOST: Final = "used_answer_lost"
"""Reason: a resent payment was "already used" by the server (taken for an earlier send
whose answer was lost): it may have been charged, with no output returned."""


class MCPPaymentUnresolved(PaymentError):
    """A payment was sent with a tool call and no answer came back: it may still settle.
    ``payment`` is the record (status ``unknown``); calling the same tool with the same
    arguments again resends the same payload while it is valid."""

    def __init__(self, message: str, payment: Payment) -> None:
        super().__init__("payment_unresolved", message)
        self.payment = payment


@dataclass(frozen=True)
class PaidToolResult:
    """A tool's result and the payment made for it (None: the tool asked for none, or the
    payment-required answer could not be read and is returned as the result)."""

    result: types.CallToolResult
    payment: Payment | None = None
    channel: VaultResult | None = None
    """A tool priced ``a402``: the vault's record of the call (outcome, amount, receipt)."""

    @property
    def receipt(self) -> SettleResponse | None:
        return self.payment.receipt if self.payment is not None else None

    @property
    def paid(self) -> bool:
        """True only if the server returned a successful receipt for our payment (or the
        vault says the channel paid for the result it delivered)."""
        if self.channel is not None:
            return self.channel.outcome == vault_api.PAID
        return self.payment is not None and self.payment.status == PaymentStatus.SETTLED


def call_key(name: str, arguments: Mapping[str, Any] | None) -> str:
    """What makes two calls 'the same call' for resending an unanswered payment."""
    canonical = json.dumps({"name": name, "arguments": arguments or {}}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PayingMCPSession:
    """Wraps an initialized ``mcp.ClientSession``; pays x402 ``exact`` and ``upto`` tool
    prices.

    ``max_per_request``: atomic units (int, any asset), asset → units, or a
    :class:`~a402.client.limits.MaxAmount`; required unless ``mandate`` is given (then
    the mandate's cap is the cap). ``budget``: the total this session may sign.
    """

    def __init__(
        self,
        session: ClientSession,
        wallet: Wallet | str | bytes | LocalAccount,
        *,
        max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
        budget: Budget | None = None,
        mandate: MandateGuard | None = None,
        max_validity: int = DEFAULT_MAX_VALIDITY,
        retries: int = 3,
        retry_delay: float = 1.0,
        history: int | None = DEFAULT_HISTORY,
        vault: VaultClient | AsyncVaultClient | None = None,
    ) -> None:
        self.session = session
        self.vault = vault
        self.wallet = wallet if isinstance(wallet, Wallet) else Wallet(wallet)
        if max_per_request is None:
            if mandate is None:
                raise TypeError("max_per_request is required (or a mandate, whose cap it "
                                "then is)")
            max_per_request = _NO_CLIENT_CAP
        if mandate is not None and address_key(mandate.agent) != address_key(
                self.wallet.address):
            raise ValueError(f"the mandate is for {mandate.agent}, the wallet is "
                             f"{self.wallet.address}")
        if max_validity < REPLAY_MARGIN + 1:
            raise ValueError(f"max_validity must exceed {REPLAY_MARGIN} s")
        self.max_amount = as_max_amount(max_per_request)
        self.budget = budget
        self.mandate = mandate
        self.max_validity = max_validity
        self.retries = retries
        self.retry_delay = retry_delay
        self._lock = threading.Lock()
        self._payments: deque[Payment] = deque(maxlen=history)
        self._unresolved: dict[str, tuple[Payment, PaymentPayload]] = {}

    @property
    def payments(self) -> list[Payment]:
        """Payments signed so far, oldest first."""
        with self._lock:
            return list(self._payments)

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *,
        read_timeout_seconds: timedelta | None = None,
    ) -> PaidToolResult:
        """Call ``name``; pay if the result asks for it and the limits allow; the result
        and what was paid. Raises ``PaymentRefused`` (nothing signed) or
        ``MCPPaymentUnresolved`` (signed, sent, no answer)."""
        key = call_key(name, arguments)
        earlier = self._take_unresolved(key)
        if earlier is not None:
            return await self._send_paid(name, arguments, key, *earlier,
                                         timeout=read_timeout_seconds, resent=True)
        try:
            result = await self.session.call_tool(name, arguments,
                                                  read_timeout_seconds=read_timeout_seconds)
            required = wire.required_of(result)
        except McpError as e:  # the other form of "payment required": a JSON-RPC 402
            required = wire.required_of_error(e.error)
            if required is None:
                raise
        else:
            if required is None:
                return PaidToolResult(result)
        channel = _channel_offer(required) if self.vault is not None else None
        if channel is not None:
            return await self._pay_in_channel(name, arguments, required, channel)
        payment, payload = self._pay(name, arguments, required)
        return await self._send_paid(name, arguments, key, payment, payload,
                                     timeout=read_timeout_seconds)

    # --- paying

    async def _pay_in_channel(self, name: str, arguments: dict[str, Any] | None,
                              required: PaymentRequired, offer: PaymentRequirements
                              ) -> PaidToolResult:
        """Send the call through the vault to the tool's endpoint, paid in a channel.

        The vault pays at most ``offer.amount`` (``max_price``) and only ``offer.payTo``
        (signed into the call); the price counts against the per-call maximum and the
        budget first, and stays in the budget unless the vault says nothing was paid (a
        4xx refusal, an outcome that paid nothing; never a 5xx or no answer, after which
        the call may have been paid)."""
        assert self.vault is not None
        url = str((offer.extra or {}).get(wire.MCP_URL) or "")
        amount = offer.amount_int
        offered = required.accepts
        if not url.startswith(("http://", "https://")):
            raise PaymentRefused(errors.NO_ACCEPTABLE_REQUIREMENT,
                                 "the a402 offer names no endpoint (extra.mcpUrl)",
                                 url=url, offered=offered)
        if self.mandate is not None:
            raise PaymentRefused(errors.NO_ACCEPTABLE_REQUIREMENT, "a mandate is not applied to "
                                 "vault payments of MCP tools; nothing was paid", url=url,
                                 offered=offered)
        cap = self.max_amount(offer)
        if cap is None or amount > cap:
            raise PaymentRefused(errors.PRICE_ABOVE_MAXIMUM,
                                 f"{amount} > maximum {cap}; nothing was paid", url=url,
                                 offered=offered)
        # The cap and the budget above are in the offer's asset, the server's word; the
        # vault pays ``max_price`` in its own token. An offer naming another asset (one
        # with a looser cap, or outside the budget) would have the vault pay up to that
        # amount of its token: refused unless the asset is the vault's.
        token = await self._vault_token()
        if address_key(offer.asset) != address_key(token):
            raise PaymentRefused(errors.NO_ACCEPTABLE_REQUIREMENT,
                                 f"the a402 offer is priced in {offer.asset:.50}, but the vault "
                                 f"pays in {token}; nothing was paid", url=url, offered=offered)
        reservation = None
        if self.budget is not None:
            try:
                reservation = self.budget.reserve(offer.asset, amount)
            except BudgetExceeded as e:
                raise PaymentRefused(errors.BUDGET_EXHAUSTED, f"{e}; nothing was paid",
                                     url=url, offered=offered) from e
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": name, "arguments": arguments or {}}},
                          separators=(",", ":")).encode()
        how: dict[str, Any] = {
            "method": "POST", "content": call, "max_price": amount, "pay_to": offer.pay_to,
            "headers": [(b"content-type", b"application/json"),
                        (b"accept", b"application/json")]}
        try:
            if isinstance(self.vault, AsyncVaultClient):
                answer = await self.vault.invoke(url, **how)
            else:
                answer = await anyio.to_thread.run_sync(
                    functools.partial(self.vault.invoke, url, **how))
        except VaultCallError as e:
            # Given back only when the vault says nothing was paid: never after a 5xx
            # that is not its own refusal (an answer lost on the way, after which the call
            # may have been paid), nor after the reasons that say it was or may have been.
            if reservation is not None and self.budget is not None and not e.may_have_paid:
                self.budget.release(reservation)  # the vault says nothing was paid
            raise
        assert isinstance(answer, VaultResult)
        if answer.outcome != vault_api.PAID and reservation is not None \
                and self.budget is not None and answer.outcome != vault_api.PENDING:
            self.budget.release(reservation)
        return PaidToolResult(_channel_result(answer), channel=answer)

    async def _vault_token(self) -> str:
        """The token the vault pays in: the one its client expects (checked against every
        info answer), else its (first, then pinned) info's."""
        assert self.vault is not None
        expect = getattr(self.vault, "expect", None)
        if expect is not None:
            return str(expect.token)
        if isinstance(self.vault, AsyncVaultClient):
            info = await self.vault.info()
        else:
            info = await anyio.to_thread.run_sync(self.vault.info)
        token = info.get("token")
        return str(token.get("address") if isinstance(token, dict) else "")

    def _pay(self, name: str, arguments: dict[str, Any] | None, required: PaymentRequired
             ) -> tuple[Payment, PaymentPayload]:
        url = required.resource.url if required.resource is not None else f"mcp://tool/{name}"
        offer, reservation, held = choose_within(required, self.wallet, self.max_amount,
                                                 self.budget, self.mandate, url=url)

        def give_back() -> None:
            # Nothing left this process, so nothing can move: the budget's reservation may
            # go back (the mandate's admission wrote nothing).
            if reservation is not None and self.budget is not None:
                self.budget.release(reservation)

        try:
            payload = self.wallet.sign(
                offer.requirements, resource=required.resource,
                extensions=copy.deepcopy(required.extensions),
                valid_for=min(offer.view.max_timeout_seconds, self.max_validity))
            assert isinstance(payload, PaymentPayload)
            signed = _signed_terms(payload.payload)  # exact: the value; upto: the maximum
            if (signed.amount != offer.amount
                    or address_key(signed.pay_to) != address_key(offer.pay_to)):
                raise ValueError("signed value/recipient differ from the offer")
        except Exception as e:
            give_back()
            raise PaymentRefused(errors.SIGNING_FAILED, f"{type(e).__name__}: {e}", url=url,
                                 offered=required.accepts) from e
        payment = Payment(
            method="tools/call", url=url, offer=offer, payer=self.wallet.address,
            nonce=signed.nonce, valid_before=signed.valid_before,
            header_name=wire.PAYMENT_META_KEY, header_value=payload.to_json(),
            reservation=reservation)
        if held is not None:
            # Signed in memory only: the mandate's reservation (as signed) and the call's
            # record commit now, before the payload leaves; a refusal (or a crash) here
            # discards a signature nobody saw (a402.mandate.guard).
            payment.mandate_reservation = self._commit(held, name, arguments, payment,
                                                       payload, required, give_back)
        with self._lock:
            self._payments.append(payment)
        return payment, payload

    async def _send_paid(
        self, name: str, arguments: dict[str, Any] | None, key: str, payment: Payment,
        payload: PaymentPayload, *, timeout: timedelta | None, resent: bool = False,
    ) -> PaidToolResult:
        attempts = 0
        while True:
            payment.status = PaymentStatus.SENT
            try:
                result = await self.session.call_tool(
                    name, arguments, read_timeout_seconds=timeout,
                    meta=wire.payment_meta(payload))
            except McpError as e:
                # A JSON-RPC 402 is an answer: the payment was refused. Any other error
                # (a timeout, a lost connection, a server failure) says nothing about it.
                refused = wire.required_of_error(e.error)
                if refused is None:
                    raise self._unresolved_after(name, arguments, key, payment, payload,
                                                 _no_answer(e)) from e
                result = wire.payment_required_result(refused)
            except Exception as e:
                raise self._unresolved_after(name, arguments, key, payment, payload,
                                             _no_answer(e)) from e
            required = _conclude(payment, result)
            if (resent or attempts) and payment.reason == PAYMENT_ALREADY_USED:
                # Ours, sent before with no usable answer, and now "already used": it was
                # taken for that send (the money may well have moved), not refused.
                payment.status, payment.reason = PaymentStatus.UNCONFIRMED, ANSWER_LOST
            unsettled = required is not None and required.error in RETRYABLE
            if unsettled and attempts >= self.retries:
                # "Resend the same payment" was still the answer after every retry: it may
                # yet settle (a pending settlement will), so the next call of this tool with
                # these arguments must resend it, never sign a second one.
                assert required is not None
                raise self._unresolved_after(name, arguments, key, payment, payload,
                                             (str(required.error),
                                              str(getattr(required, "message", "") or "")))
            if not unsettled:
                self._evidence(name, arguments, payment, payload, result)
                return PaidToolResult(result, payment)
            attempts += 1
            await anyio.sleep(self.retry_delay)

    def _unresolved_after(self, name: str, arguments: dict[str, Any] | None, key: str,
                          payment: Payment, payload: PaymentPayload, why: tuple[str, str]
                          ) -> MCPPaymentUnresolved:
        """The paid call got no usable answer (``why``: a reason and its detail; no
        answer at all, or "resend the same payment" after every retry): keep the payload
        for a resend of the same call, record it, and say that the payment may still
        settle."""
        reason, detail = why
        payment.status = PaymentStatus.UNKNOWN
        payment.reason = reason
        self._evidence(name, arguments, payment, payload, None)
        with self._lock:
            self._unresolved[key] = (payment, payload)
        return MCPPaymentUnresolved(
            f"the paid call of {name!r:.60} got no final answer ({reason}: "
            f"{detail:.200}); the payment of {payment.amount} may still settle until "
            f"{payment.valid_before}: call the same tool with the same arguments to resend "
            "it (never a second payment)", payment)

    def _take_unresolved(self, key: str) -> tuple[Payment, PaymentPayload] | None:
        horizon = time.time() + REPLAY_MARGIN
        with self._lock:
            found = self._unresolved.pop(key, None)
            for stale in [k for k, (p, _) in self._unresolved.items()
                          if p.valid_before <= horizon]:
                del self._unresolved[stale]
        if found is not None and found[0].valid_before > horizon:
            return found
        return None

    def _commit(self, admitted: Any, name: str, arguments: dict[str, Any] | None,
                payment: Payment, payload: PaymentPayload, required: PaymentRequired,
                give_back: Callable[[], None]) -> Any:
        from a402.mandate.spend import MandateRefused

        assert self.mandate is not None
        try:
            fields = mcp_record(
                mandate=self.mandate.mandate_hash, agent=self.wallet.address,
                url=payment.url, tool=name, arguments=arguments, payload=payload,
                settlement=None, status="sending", result=None)
            return self.mandate.commit(admitted, fields, self.wallet.sign_evidence,
                                       payment_ref=payment.nonce)
        except MandateRefused as e:
            give_back()
            raise PaymentRefused(e.reason, f"{e.detail}; the payment signed in memory was "
                                 "discarded unsent: nothing was paid", url=payment.url,
                                 offered=required.accepts) from e
        except Exception as e:
            give_back()
            raise PaymentRefused(
                errors.MANDATE_SPEND_UNAVAILABLE,
                f"the mandate's spend store failed ({type(e).__name__}: {e}); the payment "
                "signed in memory was discarded unsent: nothing was paid", url=payment.url,
                offered=required.accepts) from e

    def _evidence(self, name: str, arguments: dict[str, Any] | None, payment: Payment,
                  payload: PaymentPayload, result: types.CallToolResult | None) -> None:
        """The call's outcome in the mandate's evidence chain (queued: durable with the
        next payment's commit or the guard's flush); the payment was signed and sent
        whatever happens here, so a failure is logged, never raised."""
        if self.mandate is None or payment.mandate_reservation is None:
            return
        try:
            fields = mcp_record(
                mandate=self.mandate.mandate_hash, agent=self.wallet.address,
                url=payment.url, tool=name, arguments=arguments, payload=payload,
                settlement=payment.receipt, status=payment.status, result=result)
            outcome = {k: fields[k] for k in ("mandate", "agent", "scheme", "settlement",
                                              "status", "result")}
            self.mandate.settle(payment.mandate_reservation, outcome,
                                self.wallet.sign_evidence)
        except Exception as e:
            log.error("a paid tool call's payment was signed and sent, but its outcome "
                      "could not be recorded (%s: %s)", type(e).__name__, e)


def _channel_offer(required: PaymentRequired) -> PaymentRequirements | None:
    """The ``a402`` entry of an offer that names a tool endpoint, if any."""
    for offer in required.accepts:
        if isinstance(offer, PaymentRequirements) and offer.scheme == "a402" \
                and isinstance((offer.extra or {}).get(wire.MCP_URL), str):
            return offer
    return None


def _channel_result(answer: VaultResult) -> types.CallToolResult:
    """The tool's result in the endpoint's JSON-RPC answer (a failed tool's too); an
    answer that is none is an error result saying what came back."""
    try:
        body = loads_object(answer.content, limits=DEFAULT_LIMITS)
        if isinstance(body.get("result"), dict):
            return types.CallToolResult.model_validate(body["result"])
        error = body.get("error")
        text = (str(error.get("message")) if isinstance(error, dict)
                else str(body.get("message") or body.get("error") or ""))
    except Exception as e:
        text = f"an unreadable answer ({type(e).__name__})"
    return types.CallToolResult(content=[types.TextContent(
        type="text", text=f"HTTP {answer.status} ({answer.outcome}): {text}"[:2000])],
        isError=True)


def _no_answer(error: Exception) -> tuple[str, str]:
    return f"no answer: {type(error).__name__}", str(error)


def _conclude(payment: Payment, result: types.CallToolResult) -> PaymentRequired | None:
    """Record what the server said about ``payment``; the payment-required answer if any."""
    receipt = wire.receipt_of(result)
    required = wire.required_of(result)
    upto = payment.offer.view.scheme == SCHEME_UPTO
    payment.receipt = receipt
    if required is not None:
        payment.status = PaymentStatus.REJECTED
        failed = wire.failed_receipt_of(result)
        if failed is not None:
            payment.receipt = failed
        payment.reason = required.error or "payment_rejected"
    elif receipt is not None and receipt.success and (
            receipt.transaction or _settled_nothing(payment, receipt)):
        if receipt.payer and address_key(receipt.payer) != address_key(payment.payer):
            payment.status, payment.reason = PaymentStatus.UNCONFIRMED, "receipt_payer_mismatch"
        elif receipt.network != payment.network:
            payment.status, payment.reason = (PaymentStatus.UNCONFIRMED,
                                              "receipt_network_mismatch")
        elif upto and payment.charged is None:
            payment.status, payment.reason = (PaymentStatus.UNCONFIRMED,
                                              "receipt_without_amount")
        elif upto and (payment.charged or 0) > payment.amount:
            payment.status, payment.reason = (PaymentStatus.UNCONFIRMED,
                                              "receipt_amount_above_maximum")
        else:
            payment.status, payment.reason = PaymentStatus.SETTLED, None
    else:
        payment.status = PaymentStatus.UNCONFIRMED
        if receipt is None:
            payment.reason = "tool_error_not_charged" if result.isError else "no_receipt"
        elif receipt.success:
            payment.reason = "receipt_without_transaction"
        else:
            payment.reason = receipt.error_reason or "settlement_failed"
    return required


def _settled_nothing(payment: Payment, receipt: SettleResponse) -> bool:
    """An ``upto`` payment settled for 0: a success with no transaction (none is sent)."""
    return payment.offer.view.scheme == SCHEME_UPTO and receipt.amount == "0"


def mcp_record(*, mandate: str, agent: str, url: str, tool: str,
               arguments: Mapping[str, Any] | None, payload: PaymentPayload,
               settlement: SettleResponse | None, status: str,
               result: types.CallToolResult | None) -> dict[str, Any]:
    """The fields of one paid tool call's evidence record (as ``a2a_record`` for a task):
    the request is the tool call at the server's resource ``url``; the result its hash."""
    from a402.client.audit import sha256_hex

    signed = _signed_terms(payload.payload)
    call = json.dumps({"name": tool, "arguments": arguments or {}}, sort_keys=True,
                      separators=(",", ":"), default=str).encode()
    return {
        "mandate": mandate, "agent": agent, "scheme": payload.accepted.scheme,
        "request": {"method": "MCP", "url": url, "tool": tool, "hash": sha256_hex(call)},
        "payment": {"payload": payload.to_wire(), "amount": str(signed.amount),
                    "payee": signed.pay_to, "network": payload.accepted.network,
                    "asset": payload.accepted.asset},
        "settlement": None if settlement is None else settlement.to_wire(),
        "status": status,
        "result": None if result is None else sha256_hex(
            result.model_dump_json(by_alias=True, exclude_none=True).encode()),
    }
