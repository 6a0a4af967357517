"""Money into and out of the vault: deposits and withdrawals.

**Deposits.** A client pays the vault's address with an x402 ``exact``
payload (an EIP-3009 ``transferWithAuthorization`` it signed: gasless for the
client), which the vault settles with the facilitator's journaled,
idempotent settlement (:class:`a402.facilitator.core.Facilitator`, same
database); or it transfers tokens itself and reports the transaction. Either
way the credit is keyed by the mined ``Transfer`` log — ``(tx hash, log
index)`` — and is granted only once the transaction is mined: a deposit can
be reported any number of times, by either route, and counts once. A
settlement still pending when the call returns is credited by the worker
(:meth:`Funds.reconcile`), including after a crash.

Deposits are paid to the vault's address — its enclave's — and credited in
the enclave's ledger too (:mod:`a402.vault_enclave`), which trusts the host's
report of the mined transfer (it cannot see the chain) and counts each
``(tx hash, log index)`` once.

**Withdrawals.** The balance is debited in the same database transaction that
records the withdrawal (keyed by the client's idempotency key); the enclave
checks the client's signed call and its own ledger, debits it there, and
signs an EIP-3009 ``transferWithAuthorization`` from the vault's address,
which the host's gas account submits (journaled before it is broadcast). A
transfer sent again is the same authorization (same EIP-3009 nonce) signed
again, so at most one ever moves tokens. A transfer that fails gives the
host's balance back; the enclave's debit stays (it cannot tell a failed
transfer from a hidden one).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Final

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD
from web3.types import TxReceipt

from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, contract_at
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementRow
from a402.facilitator.store import State as SettlementState
from a402.tee import EnclaveError
from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api
from a402.wire.errors import WireError
from a402.wire.x402 import PaymentPayload, PaymentRequirements

from . import store as vault_store
from .channels import LEDGER_KEY, Channels, VaultError
from .txjournal import TxJournal

_TX_HASH: Final = re.compile(r"0x[0-9a-fA-F]{64}")

log = logging.getLogger("a402.vault.funds")

DEPOSIT_TIMEOUT = 300
"""``maxTimeoutSeconds`` of the deposit requirement: how long a signed deposit may wait."""


class Funds:
    def __init__(
        self, *, chain: Chain, channels: Channels, token: TokenInfo,
        store: vault_store.VaultStore, facilitator: Facilitator, journal: TxJournal,
        chain_timeout: float,
    ) -> None:
        self.chain = chain
        self.vault = channels.vault
        self.address = channels.vault.checksum_address
        self.token = token
        self.store = store
        self.facilitator = facilitator
        self.journal = journal
        self.chain_timeout = chain_timeout
        self.erc20 = contract_at(chain, "TestUSDC", token.address)

    def requirement(self, amount: int = 0) -> PaymentRequirements:
        """What a deposit of ``amount`` pays: x402 ``exact`` to the vault's address."""
        return PaymentRequirements(
            scheme="exact", network=self.chain.network, amount=str(amount),
            asset=to_checksum_address(self.token.address), pay_to=self.address,
            max_timeout_seconds=DEPOSIT_TIMEOUT, extra=self.token.eip712_extra(),
        )

    # --------------------------------------------------------------- deposits

    async def deposit(self, client: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /v1/deposits``: ``{"payload": …}`` (x402 exact) or ``{"transaction": …}``."""
        if "payload" in body:
            return await self._deposit_payload(client, body["payload"])
        if isinstance(body.get("transaction"), str):
            # A malformed hash names no transaction: refused, not "pending" forever.
            if _TX_HASH.fullmatch(body["transaction"]) is None:
                raise VaultError(400, api.BAD_REQUEST, "`transaction` is not a transaction "
                                 "hash (0x and 64 hex digits)")
            return await self._deposit_transfer(client, body["transaction"])
        raise VaultError(400, api.BAD_REQUEST, "give an x402 `payload` or a `transaction` hash")

    async def _deposit_payload(self, client: str, raw: Any) -> tuple[int, dict[str, Any]]:
        """Settle a deposit payload, then credit the transfer it mined.

        This is not the server-side ``exact`` flow (:mod:`a402.exact.serve`) that
        the middleware and the A2A agent drive, and does not drive it: what that
        flow protects is a response sold for a payment between ``/verify`` and the
        transfer being mined, so it needs a replay ledger, a verify before serving,
        and a settle whose failure means "deliver nothing". A deposit sells nothing
        before the money moves: it is credited from the mined ``Transfer`` log,
        keyed by ``(tx hash, log index)``, so the same payload reported any number
        of times counts once without a ledger; the journaled facilitator verifies
        inside ``settle`` and answers a repeat with the same outcome; and any answer
        that names a transaction (pending, but also reverted or expired) is
        "pending" here, because the credit is decided by that transaction's receipt
        (reported again, or found by :meth:`reconcile`), not by the settle answer.
        """
        try:
            payload = PaymentPayload.from_wire(raw, reason=api.BAD_REQUEST)
        except WireError as e:
            raise VaultError(400, api.BAD_REQUEST, e.message or e.reason) from None
        accepted = payload.accepted
        expected = self.requirement(0)
        if (accepted.scheme, accepted.network, accepted.pay_to.lower(), accepted.asset.lower(),
                accepted.extra) != (expected.scheme, expected.network, self.address.lower(),
                                    expected.asset.lower(), expected.extra):
            raise VaultError(400, api.BAD_REQUEST, "the payload does not pay this vault's "
                             "deposit requirement (see GET /v1/info)")
        payer = str((payload.payload.get("authorization") or {}).get("from", ""))
        if payer.lower() != client.lower():
            raise VaultError(400, api.BAD_REQUEST, "a deposit must come from the caller")
        request = {"x402Version": 2, "paymentPayload": payload.to_wire(),
                   "paymentRequirements": accepted.to_wire()}
        try:
            settled = await asyncio.to_thread(self.facilitator.settle, request)
        except WireError as e:
            raise VaultError(400, api.BAD_REQUEST, e.message or e.reason) from None
        if not settled.success:
            if settled.transaction:  # journaled and broadcast, not yet mined
                return 202, {"state": "pending", "transaction": settled.transaction,
                             "reason": settled.error_reason}
            raise VaultError(400, settled.error_reason or "deposit_failed",
                             settled.error_message or "")
        return await self._deposit_transfer(client, settled.transaction)

    async def _deposit_transfer(self, client: str, tx_hash: str) -> tuple[int, dict[str, Any]]:
        try:
            receipt = await asyncio.to_thread(self.chain.w3.eth.get_transaction_receipt,
                                              HexBytes(tx_hash))
        except (TransactionNotFound, ValueError):
            return 202, {"state": "pending", "transaction": tx_hash}
        credited = await asyncio.to_thread(self.credit_receipt, receipt, client)
        if credited is None:
            raise VaultError(400, api.BAD_REQUEST,
                             "the transaction moved no tokens from the caller to the vault")
        balance = await asyncio.to_thread(self.store.balance, client)
        return 200, {"state": "credited", "transaction": tx_hash, "amount": str(credited),
                     "balance": str(balance)}

    def credit_receipt(self, receipt: TxReceipt, client: str | None = None) -> int | None:
        """Credit every transfer to the vault in ``receipt`` (from ``client`` if given).

        Returns the amount those transfers carry (credited now or before), or
        None if there is none.
        """
        if int(receipt["status"]) != 1:
            return None
        found = None
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        for event in self.erc20.events.Transfer().process_receipt(receipt, errors=DISCARD):
            args = event["args"]
            if event["address"].lower() != self.token.address.lower():
                continue
            if args["to"].lower() != self.address.lower():
                continue
            if client is not None and args["from"].lower() != client.lower():
                continue
            key = f"transfer:{tx_hash}:{event['logIndex']}"
            # The enclave's ledger first (durable), then the host's: a crash in between is
            # found again by reconcile (the host's record is missing), and counts once.
            if self.vault.credit_deposit(key, args["from"], int(args["value"])):
                self.store.put_meta(LEDGER_KEY, self.vault.export_ledger())
            self.store.credit_deposit(key, args["from"], int(args["value"]), "transfer", tx_hash)
            found = (found or 0) + int(args["value"])
        return found

    def reconcile(self, *, everything: bool = False) -> int:
        """Finish settlements left pending (and, at start-up, credit any not yet credited)."""
        unfinished = {s.key for s in self.facilitator.store.unfinished()}
        self.facilitator.reconcile()
        credited = 0
        if not everything and not unfinished:
            return 0
        query = select(SettlementRow.key, SettlementRow.tx_hash).where(
            SettlementRow.state == SettlementState.CONFIRMED,
            SettlementRow.pay_to == self.address)
        if not everything:  # only what was unfinished: not the whole journal every tick
            query = query.where(SettlementRow.key.in_(unfinished))
        with Session(self.facilitator.store.engine) as session:  # the journal is ours too
            rows = list(session.execute(query))
        for _, tx_hash in rows:
            assert tx_hash is not None  # a confirmed settlement names its transaction
            if self.store.deposited_tx(tx_hash):
                continue
            receipt = self.chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            if self.credit_receipt(receipt) is not None:
                credited += 1
        return credited

    # ------------------------------------------------------------- withdrawals

    async def withdraw(self, client: str, body: dict[str, Any], call: SignedCall
                       ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/withdrawals``: ``{"amount", "idempotencyKey", "to"?}``; ``call`` is the
        request as the client signed it, which the enclave checks before it signs."""
        try:
            amount = api.parse_amount(body.get("amount"), "amount")
            idem = body.get("idempotencyKey")
            to = to_checksum_address(body.get("to") or client)
        except ValueError as e:
            raise VaultError(400, api.BAD_REQUEST, str(e)) from None
        if not isinstance(idem, str) or not 1 <= len(idem) <= 128 or amount <= 0:
            raise VaultError(400, api.BAD_REQUEST, "a positive amount and an idempotencyKey")
        key = f"{client.lower()}:{idem}"
        try:
            created, record = await asyncio.to_thread(
                self.store.claim_withdrawal, key, client=client, recipient=to, amount=amount)
        except vault_store.InsufficientBalance as e:
            raise VaultError(402, api.INSUFFICIENT_BALANCE, str(e),
                             extra={"balance": str(e.balance)}) from None
        if not created and (record.recipient, int(record.amount)) != (to, amount):
            raise VaultError(409, api.IDEMPOTENCY_KEY_REUSED, "this key named another withdrawal")
        if record.state == vault_store.TX_SUBMITTED:
            try:
                self.vault.withdraw(call, now=int(time.time()))
            except EnclaveError as e:
                if await asyncio.to_thread(self.store.tx, f"withdraw:{key}") is None:
                    await asyncio.to_thread(self.store.finish_withdrawal, key, ok=False,
                                            tx_hash=None)
                status = 402 if e.reason == "insufficient_balance" else 400
                raise VaultError(status, e.reason, e.detail) from None
            await asyncio.to_thread(self.store.put_meta, LEDGER_KEY, self.vault.export_ledger())
            await self.send_withdrawal(key)
        return await asyncio.to_thread(self.withdrawal_answer, key)

    async def send_withdrawal(self, key: str) -> None:
        """Submit the enclave's transfer for withdrawal ``key`` (signed again: same nonce)."""
        try:
            signed = self.vault.withdrawal_again(key, now=int(time.time()))
        except EnclaveError as e:  # the enclave never debited it: nothing can move
            log.warning("withdrawal %s has no enclave authorization: %s", key, e)
            await asyncio.to_thread(self.store.finish_withdrawal, key, ok=False, tx_hash=None)
            return
        v = signed.signature[64] if signed.signature[64] >= 27 else signed.signature[64] + 27
        call = self.erc20.functions.transferWithAuthorization(
            to_checksum_address(signed.source), to_checksum_address(signed.to), signed.value,
            signed.valid_after, signed.valid_before, signed.nonce, v, signed.signature[:32],
            signed.signature[32:64])
        try:
            tx = await asyncio.to_thread(self.journal.send, f"withdraw:{key}", "withdraw", key,
                                         call)
        except TransactionFailed as e:
            log.warning("withdrawal %s would revert: %s", key, e.reason)
            await asyncio.to_thread(self.store.finish_withdrawal, key, ok=False, tx_hash=None)
            return
        outcome = await asyncio.to_thread(self.journal.wait, tx, self.chain_timeout)
        if outcome.final:
            await asyncio.to_thread(self.store.finish_withdrawal, key, ok=outcome.ok,
                                    tx_hash=tx.tx_hash)

    def withdrawal_answer(self, key: str) -> tuple[int, dict[str, Any]]:
        record = self.store.withdrawal(key)
        assert record is not None
        tx = self.store.tx(f"withdraw:{key}")
        body = {"state": record.state, "amount": record.amount, "to": record.recipient,
                "transaction": record.tx_hash or (tx.tx_hash if tx else None)}
        return (202 if record.state == vault_store.TX_SUBMITTED else 200), body
