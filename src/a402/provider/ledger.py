"""The provider's memory of which authorizations it has already sold a response for.

Why a provider needs one although the chain refuses a used nonce: between
``/verify`` and the transaction being mined, the same signed ``PAYMENT-SIGNATURE``
verifies as valid on every request that carries it (x402 issues #803, #1805).
An idempotent facilitator makes it worse, not better: settling the same payload
five times returns the same successful receipt five times, so five responses
would be served for one transfer. The ledger closes that window: one
authorization, identified by ``(network, asset, payer, nonce)``, is admitted
by at most one request at a time and buys at most one response.

States of one entry::

    (absent) --acquire--> IN_FLIGHT --release--> (absent)          nothing moved
                                    --settled--> SETTLED           sold; refuse forever
                                    --pending--> PENDING           money may be moving
    PENDING  --acquire (same payload)--> IN_FLIGHT (resumed: settle again, no verify)

``fingerprint`` tells the *same* payment retried (which may resume a pending
one) from a different signature over the same nonce (which never may).

The in-memory ledger below is correct for one process. **Replicas behind a
load balancer need one shared ledger** (a table with a unique key on the
four-tuple and a conditional update per transition), or a payment could be
admitted once per replica.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from a402.wire.x402 import SettleResponse


class LedgerState(StrEnum):
    IN_FLIGHT = "in_flight"
    PENDING = "pending"
    SETTLED = "settled"


class Admission(StrEnum):
    FRESH = "fresh"
    """Never seen (or released): verify, serve, settle."""
    RESUMED = "resumed"
    """The same payload after ``settlement_pending`` or a lost settle answer: settle again."""
    REFUSED = "refused"
    """In use by another request right now, or already sold a response."""


@dataclass(frozen=True)
class PaymentKey:
    """The identity of one EIP-3009 authorization; addresses and nonce compared lowercase."""

    network: str
    asset: str
    payer: str
    nonce: str

    @classmethod
    def of(cls, network: str, asset: str, payer: str, nonce: str) -> PaymentKey:
        return cls(network, asset.lower(), payer.lower(), nonce.lower())


@dataclass(frozen=True)
class Admit:
    admission: Admission
    state: LedgerState | None = None
    """For a refusal: the state that caused it."""
    settlement: SettleResponse | None = None
    """For a refusal of a sold or pending payment: its last known receipt."""


def payment_fingerprint(signature: str, authorization: dict[str, Any]) -> str:
    """A digest of what was signed and the signature, independent of header encoding."""
    canonical = json.dumps(
        {"signature": signature.lower(), "authorization": authorization},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class PaymentLedger(Protocol):
    """Every transition is atomic with respect to every other caller, in every replica."""

    async def acquire(self, key: PaymentKey, fingerprint: str, *, expires_at: float) -> Admit:
        """Admit one request for ``key``; ``expires_at`` (Unix time) bounds how long to remember."""
        ...

    async def release(self, key: PaymentKey) -> None:
        """Forget an IN_FLIGHT entry: no money moved, the authorization may be used again."""
        ...

    async def mark_pending(self, key: PaymentKey, settlement: SettleResponse | None) -> None:
        """Money may be moving (settle pending, or its answer was lost): allow only resumption."""
        ...

    async def mark_settled(self, key: PaymentKey, settlement: SettleResponse) -> None:
        """The payment bought its response: refuse this authorization from now on."""
        ...


@dataclass
class _Entry:
    state: LedgerState
    fingerprint: str
    expires_at: float
    settlement: SettleResponse | None = None


class InMemoryLedger:
    """A process-local ledger; see the module docstring for why replicas need a shared one.

    Entries are dropped after ``expires_at``: the middleware sets it past the
    authorization's ``validBefore``, after which the token contract itself
    refuses the authorization and the chain is a sufficient memory.
    """

    def __init__(self, *, clock: Any = time.time) -> None:
        self._entries: dict[PaymentKey, _Entry] = {}
        self._expiry: list[tuple[float, int, PaymentKey]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._clock = clock

    async def acquire(self, key: PaymentKey, fingerprint: str, *, expires_at: float) -> Admit:
        with self._lock:
            self._purge()
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(LedgerState.IN_FLIGHT, fingerprint, expires_at)
                self._seq += 1
                heapq.heappush(self._expiry, (expires_at, self._seq, key))
                return Admit(Admission.FRESH)
            if entry.state == LedgerState.PENDING and entry.fingerprint == fingerprint:
                entry.state = LedgerState.IN_FLIGHT
                return Admit(Admission.RESUMED, settlement=entry.settlement)
            return Admit(Admission.REFUSED, state=entry.state, settlement=entry.settlement)

    async def release(self, key: PaymentKey) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.state == LedgerState.IN_FLIGHT:
                del self._entries[key]

    async def mark_pending(self, key: PaymentKey, settlement: SettleResponse | None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.state != LedgerState.SETTLED:
                entry.state = LedgerState.PENDING
                entry.settlement = settlement or entry.settlement

    async def mark_settled(self, key: PaymentKey, settlement: SettleResponse) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.state = LedgerState.SETTLED
                entry.settlement = settlement

    def state_of(self, key: PaymentKey) -> LedgerState | None:
        """For tests and diagnostics."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.state

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _purge(self) -> None:
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, _, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            # A released-and-reacquired key has a newer deadline; keep that one.
            if entry is not None and entry.expires_at <= now:
                del self._entries[key]
