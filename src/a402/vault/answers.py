"""What a call answers, sealed and recorded once: the vault's side of "exactly once".

Every final answer (paid, unpaid, free, refused, aborted) is sealed by the vault
enclave under the call's key and written by a compare-and-set from the states the
call may end from (:meth:`~a402.vault.store.VaultStore.finish_request`): the first
writer wins, and everyone after it — a retry, a replica, the worker, a restarted
process — reads and returns that same answer. A call whose σ_U may be out is never
answered "refused" (refusals end only a call in which nothing can have been paid);
it stays pending until the worker settles it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from a402.tee import Enclave
from a402.wire import vault_api as api

from . import records
from . import store as vault_store
from .channels import VaultError
from .tunnel import PaidResponse

#: Every state a call may be answered from (not DONE: answered already).
_UNANSWERED = (vault_store.RECEIVED, vault_store.LOCKED, vault_store.AUTHORIZED,
               vault_store.DELIVERED, vault_store.RELEASED)


class Answers:
    """Seals, records and reads the vault's answers to its clients' calls."""

    def __init__(self, store: vault_store.VaultStore, enclave: Enclave, *, token: str,
                 network: str) -> None:
        self.store = store
        self.enclave = enclave
        self.token = token
        self.network = network

    def answer_of(self, row: vault_store.Request) -> tuple[int, dict[str, Any]]:
        """What a recorded (or in-flight) call answers now."""
        if row.state == vault_store.DONE and row.answer is not None:
            stored = records.unseal_json(self.enclave, "answer", row.key, row.answer)
            return int(stored["status"]), stored["body"]
        body = {"outcome": api.PENDING, "idempotencyKey": client_key(row.key),
                "state": row.state, "channelId": row.channel_id, "requestId": row.request_id}
        return 202, body

    async def record(
        self, key: str, status: int, body: dict[str, Any], *, outcome: str,
        reason: str | None = None, retryable: bool = False, amount: int | None = None,
        transaction: str | None = None, from_states: tuple[str, ...] = _UNANSWERED,
    ) -> tuple[int, dict[str, Any]]:
        """Seal and store a final answer (once); returns it (or the one recorded first)."""
        values = self.final(key, status, body, outcome=outcome, reason=reason,
                            retryable=retryable, amount=amount, transaction=transaction)
        if await self.store.finish_request(key, from_states=from_states, **values):
            return status, body
        row = await asyncio.to_thread(self.store.request, key)  # answered before: that answer
        assert row is not None
        return self.answer_of(row)

    def final(self, key: str, status: int, body: dict[str, Any], *, outcome: str,
              reason: str | None = None, retryable: bool = False, amount: int | None = None,
              transaction: str | None = None) -> dict[str, Any]:
        """The columns of a call's final record: the sealed answer and how it ended."""
        sealed = records.seal_json(self.enclave, "answer", key, {"status": status, "body": body})
        values: dict[str, Any] = {"state": vault_store.DONE, "outcome": outcome, "reason": reason,
                                  "retryable": retryable, "answer": sealed}
        if amount is not None:
            values["amount"] = str(amount)
        if transaction is not None:
            values["transaction"] = transaction
        return values

    def paid(self, key: str, paid: PaidResponse, channel_id: bytes,
             provider: str) -> dict[str, Any]:
        """The body of a paid call's answer: the response, and the payment's proof."""
        receipt = None if paid.receipt is None else records.receipt_json(channel_id, paid.receipt)
        payment = records.Payment(paid.amount, self.token, self.network, provider, channel_id,
                                  paid.request_id, receipt, paid.transaction)
        return records.answer_json(api.PAID, client_key(key), response=paid.response,
                                   payment=payment)

    async def record_paid(self, key: str, paid: PaidResponse, channel_id: bytes,
                          provider: str) -> tuple[int, dict[str, Any]]:
        body = self.paid(key, paid, channel_id, provider)
        return await self.record(key, 200, body, outcome=api.PAID, amount=paid.amount,
                                 transaction=paid.transaction)

    async def record_aborted(self, key: str, tx_hash: str | None) -> None:
        """The channel settled on-chain without this call's payment: δ went back."""
        body = {"outcome": api.ABORTED, "idempotencyKey": client_key(key),
                "reason": "channel_settled", "message": "the channel was settled on-chain "
                "without this request's payment: nothing was paid", "transaction": tx_hash}
        await self.record(key, 200, body, outcome=api.ABORTED, reason="channel_settled",
                          transaction=tx_hash)

    async def record_refusal(self, key: str, error: VaultError) -> tuple[int, dict[str, Any]]:
        body = {**error.body(), "outcome": api.REFUSED, "idempotencyKey": client_key(key)}
        # Only from states in which nothing can have been paid: a call whose σ_U may be
        # out is never answered "refused"; it stays pending until the worker settles it.
        return await self.record(key, error.status, body, outcome=api.REFUSED,
                                 reason=error.reason, retryable=error.retryable,
                                 from_states=(vault_store.RECEIVED, vault_store.RELEASED))


def client_key(key: str) -> str:
    """The client's idempotency key (the store prefixes it with the client's address)."""
    return key.split(":", 1)[1]
