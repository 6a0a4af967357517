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
``terms`` (:func:`payment_terms`: scheme, network, amount, asset, payTo of the
requirements it was admitted for, and the resource) tells the same payment
resent for *other* terms: a resumed payment is settled without a new
``/verify``, so resuming it against a dearer route whose unsigned
``accepted.amount`` was edited would buy that route for the first price. Such
a retry is :attr:`Admission.OTHER_TERMS` and changes nothing.

Where the ledger lives decides what it protects. Every process that can be
handed the same payment header must see the same entries: replicas of one
gateway behind a load balancer, and *different* gateways paid to the same
``payTo`` through the same facilitator (which answers a second ``/settle`` of
one authorization with the first receipt, so each would serve a response for
one transfer). :class:`SqlLedger` is that shared ledger: one table with the
four-tuple as its key and each transition one conditional INSERT/UPDATE/DELETE,
atomic across processes: a SQLite file for the processes of one machine, a
PostgreSQL database for replicas and for gateways sharing a ``payTo``. It is
the gateway's default. :class:`InMemoryLedger` is correct for one process
only (tests, and embedding the middleware in a single-process app).

Beside the entries, a :class:`DeliveryLedger` keeps what each settled payment
delivered (a second table, ``a402_provider_deliveries``; :mod:`a402.provider.deliveries`),
so the identical resend of a payment whose response was lost gets it again; it is read
only for an entry that is SETTLED (or resumed from PENDING), and expires with it.

A durable ledger outlives its process, and so does an entry a crash left
IN_FLIGHT: it keeps refusing that authorization (as "in use") until it expires.
It is never taken over, because a live holder cannot be told from a dead one,
and taking over a live one is exactly the double sale the ledger exists to
prevent. The payer signs a new authorization; the refused one moved no money
unless the crash came mid-settle, which no ledger can tell either.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    inspect,
    select,
)
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from a402.exact.replay import Admission as Admission
from a402.exact.replay import Admit as Admit
from a402.exact.replay import LedgerState as LedgerState
from a402.exact.replay import PaymentKey as PaymentKey
from a402.exact.replay import payment_fingerprint as payment_fingerprint
from a402.exact.replay import payment_terms as payment_terms
from a402.provider.deliveries import Delivery
from a402.sqlite import Statement, make_engine, readers, writes
from a402.wire.x402 import SettleResponse


class PaymentLedger(Protocol):
    """Every transition is atomic with respect to every other caller, in every replica."""

    async def acquire(self, key: PaymentKey, fingerprint: str, *, expires_at: float,
                      terms: str = "") -> Admit:
        """Admit one request for ``key`` on ``terms``; ``expires_at`` (Unix time) bounds how
        long to remember."""
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

    async def note_charge(self, key: PaymentKey, settlement: SettleResponse) -> None:
        """Record, durably and before ``/settle`` is asked, what an IN_FLIGHT ``upto``
        payment is about to be charged (``settlement.amount``), state unchanged. A lost
        settle answer then leaves it PENDING *with* that amount (``mark_pending(None)``
        keeps it), so a retry resumes it for exactly that amount."""
        ...


@runtime_checkable
class DeliveryLedger(Protocol):
    """A ledger that also keeps what a settled payment delivered, to hand it again to the
    identical resend (:mod:`a402.provider.deliveries`). Both ledgers here are one."""

    async def keep_delivery(self, key: PaymentKey, delivery: Delivery, *,
                            expires_at: float) -> None:
        """Durably keep ``delivery`` for ``key`` until ``expires_at`` (replacing any)."""
        ...

    async def delivery(self, key: PaymentKey) -> Delivery | None:
        """What ``key`` delivered, if kept and not expired."""
        ...


def _refusal(state: LedgerState, fingerprint: str, terms: str, settlement: SettleResponse | None,
             *, asked_fingerprint: str, asked_terms: str) -> Admit:
    """Why an existing entry that could not be taken refuses this request (pure)."""
    if (state == LedgerState.PENDING and fingerprint == asked_fingerprint
            and terms != asked_terms):
        return Admit(Admission.OTHER_TERMS, state=state, settlement=settlement)
    return Admit(Admission.REFUSED, state=state, settlement=settlement)


@dataclass
class _Entry:
    state: LedgerState
    fingerprint: str
    expires_at: float
    terms: str = ""
    settlement: SettleResponse | None = None


class InMemoryLedger:
    """A process-local ledger, for one process only (see the module docstring).

    Entries are dropped after ``expires_at``: the middleware sets it past the
    authorization's ``validBefore``, after which the token contract itself
    refuses the authorization and the chain is a sufficient memory.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[PaymentKey, _Entry] = {}
        self._expiry: list[tuple[float, int, PaymentKey]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._clock = clock
        self._deliveries: dict[PaymentKey, tuple[Delivery, float]] = {}

    async def acquire(self, key: PaymentKey, fingerprint: str, *, expires_at: float,
                      terms: str = "") -> Admit:
        with self._lock:
            self._purge()
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(LedgerState.IN_FLIGHT, fingerprint, expires_at,
                                            terms)
                self._seq += 1
                heapq.heappush(self._expiry, (expires_at, self._seq, key))
                return Admit(Admission.FRESH)
            if (entry.state == LedgerState.PENDING and entry.fingerprint == fingerprint
                    and entry.terms == terms):
                entry.state = LedgerState.IN_FLIGHT
                return Admit(Admission.RESUMED, settlement=entry.settlement)
            return _refusal(entry.state, entry.fingerprint, entry.terms, entry.settlement,
                            asked_fingerprint=fingerprint, asked_terms=terms)

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

    async def note_charge(self, key: PaymentKey, settlement: SettleResponse) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.state == LedgerState.IN_FLIGHT:
                entry.settlement = settlement

    async def keep_delivery(self, key: PaymentKey, delivery: Delivery, *,
                            expires_at: float) -> None:
        with self._lock:
            self._purge()
            self._deliveries[key] = (delivery, expires_at)
            self._seq += 1
            heapq.heappush(self._expiry, (expires_at, self._seq, key))

    async def delivery(self, key: PaymentKey) -> Delivery | None:
        with self._lock:
            kept = self._deliveries.get(key)
            if kept is None:
                return None
            if kept[1] <= self._clock():
                del self._deliveries[key]
                return None
            return kept[0]

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
            kept = self._deliveries.get(key)
            if kept is not None and kept[1] <= now:
                del self._deliveries[key]


# ------------------------------------------------------------------ the shared ledger


class _Base(DeclarativeBase):
    pass


class _LedgerRow(_Base):
    __tablename__ = "a402_provider_ledger"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(42), primary_key=True)
    payer: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(66), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    terms: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    settlement: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Added after the first release (what the operator API lists; no decision reads it):
    # nullable, so entries of older ledgers read as of an unknown time.
    created_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class _DeliveryRow(_Base):
    """What a settled payment delivered (added after the entries' table: a table of its
    own, so older ledgers gain it by ``create_all`` and the entries' schema is unchanged)."""

    __tablename__ = "a402_provider_deliveries"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(42), primary_key=True)
    payer: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(66), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    request: Mapped[str] = mapped_column(String(64))
    kept: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int] = mapped_column(Integer)
    headers: Mapped[str] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


_KEY: Final = "network = :network AND asset = :asset AND payer = :payer AND nonce = :nonce"
_TABLE: Final = _LedgerRow.__tablename__
_DROP_EXPIRED: Final = f"DELETE FROM {_TABLE} WHERE {_KEY} AND expires_at <= :now"
_INSERT: Final = (
    f"INSERT INTO {_TABLE} (network, asset, payer, nonce, state, fingerprint, terms, "
    "expires_at, settlement, created_at) VALUES (:network, :asset, :payer, :nonce, "
    "'in_flight', :fingerprint, :terms, :expires_at, NULL, :now) "
    "ON CONFLICT (network, asset, payer, nonce) DO NOTHING"
)
_RESUME: Final = (
    f"UPDATE {_TABLE} SET state = 'in_flight' WHERE {_KEY} AND state = 'pending' "
    "AND fingerprint = :fingerprint AND terms = :terms"
)
_RELEASE: Final = f"DELETE FROM {_TABLE} WHERE {_KEY} AND state = 'in_flight'"
_PENDING: Final = (
    f"UPDATE {_TABLE} SET state = 'pending', settlement = COALESCE(:settlement, settlement) "
    f"WHERE {_KEY} AND state <> 'settled'"
)
_NOTE: Final = (
    f"UPDATE {_TABLE} SET settlement = :settlement WHERE {_KEY} AND state = 'in_flight'"
)
_SETTLED: Final = f"UPDATE {_TABLE} SET state = 'settled', settlement = :settlement WHERE {_KEY}"
_PURGE: Final = f"DELETE FROM {_TABLE} WHERE expires_at <= :now"
_DELIVERIES: Final = _DeliveryRow.__tablename__
_PURGE_DELIVERIES: Final = f"DELETE FROM {_DELIVERIES} WHERE expires_at <= :now"
_KEEP: Final = (
    f"INSERT INTO {_DELIVERIES} (network, asset, payer, nonce, fingerprint, request, kept, "
    "status, headers, body, size, expires_at) VALUES (:network, :asset, :payer, :nonce, "
    ":fingerprint, :request, :kept, :status, :headers, :body, :size, :expires_at) "
    "ON CONFLICT (network, asset, payer, nonce) DO UPDATE SET fingerprint = "
    "excluded.fingerprint, request = excluded.request, kept = excluded.kept, status = "
    "excluded.status, headers = excluded.headers, body = excluded.body, size = "
    "excluded.size, expires_at = excluded.expires_at"
)
_PG_NOW: Final = "LEAST(:now, CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION))"


class SqlLedger:
    """:class:`PaymentLedger` in one SQL table (``sqlite:///path`` or a PostgreSQL URL).

    Safety: each transition is one statement whose WHERE clause is the
    transition's precondition, so the database's own row locking decides every
    race, whichever process the callers are in. ``acquire`` runs, in one
    transaction: drop this key's entry if it has expired; ``INSERT … ON
    CONFLICT DO NOTHING`` (one row inserted: FRESH); ``UPDATE … WHERE state =
    'pending' AND`` same fingerprint and terms (one row updated: RESUMED). Of
    two concurrent callers at most one sees a row count of 1 (PostgreSQL makes
    the second INSERT wait for the first's commit and then skip; SQLite lets
    one writer in at a time); a caller that gets neither reads the entry only
    to say why it is refused. ``release``, ``mark_pending`` and
    ``mark_settled`` are guarded the same way (a late release never deletes a
    settled entry, a pending mark never downgrades one). Every write is
    durable before the call returns (on SQLite, :mod:`a402.sqlite`'s group
    commit shares the fsync among concurrent requests), so a restarted
    gateway still refuses what it sold. Expired entries are dropped for the key
    on each acquire and for the whole table every ``purge_every`` seconds.

    Expiry is decided by ``clock``, except that on PostgreSQL "now" is never
    later than the database's own clock: a replica whose clock runs ahead (by
    more than the validity left plus the retention) would otherwise take an entry
    that is still in flight elsewhere for expired and admit the payment again.
    A clock that runs behind only keeps entries longer. (A SQLite file is shared
    by the processes of one machine, which share its clock.)
    """

    def __init__(self, url: str = "sqlite:///a402-provider-ledger.db", *,
                 clock: Callable[[], float] = time.time, purge_every: float = 60.0) -> None:
        self.url = url
        self.engine = make_engine(url)
        _Base.metadata.create_all(self.engine)
        _add_created_at(self.engine)
        self._readers = readers(self.engine)
        self._writes = writes(url, sessionmaker(self.engine, expire_on_commit=False),
                              name="provider-ledger")
        self._clock = clock
        now = _PG_NOW if self.engine.dialect.name == "postgresql" else ":now"
        self._drop_expired = _DROP_EXPIRED.replace(":now", now)
        self._purge = _PURGE.replace(":now", now)
        self._purge_deliveries = _PURGE_DELIVERIES.replace(":now", now)
        self._purge_every = purge_every
        self._next_purge = 0.0

    async def acquire(self, key: PaymentKey, fingerprint: str, *, expires_at: float,
                      terms: str = "") -> Admit:
        for _ in range(3):  # an entry released between our INSERT and our read: once more
            now = self._clock()
            params = {**_key(key), "fingerprint": fingerprint, "terms": terms,
                      "expires_at": expires_at, "now": now}
            statements: list[Statement] = [
                (self._drop_expired, _only(params, "now")),
                (_INSERT, _only(params, "fingerprint", "terms", "expires_at", "now")),
                (_RESUME, _only(params, "fingerprint", "terms")),
            ]
            if now >= self._next_purge:
                self._next_purge = now + self._purge_every
                statements.append((self._purge, {"now": now}))
                statements.append((self._purge_deliveries, {"now": now}))
            counts = await self._writes.execute(statements)
            if counts[1] == 1:
                return Admit(Admission.FRESH)
            row = await asyncio.to_thread(self._read, key)
            if counts[2] == 1:  # the entry is ours now (IN_FLIGHT): its receipt stays put
                return Admit(Admission.RESUMED, settlement=row[3] if row else None)
            if row is not None:
                state, their_fingerprint, their_terms, settlement = row
                return _refusal(state, their_fingerprint, their_terms, settlement,
                                asked_fingerprint=fingerprint, asked_terms=terms)
        return Admit(Admission.REFUSED, state=LedgerState.IN_FLIGHT)

    async def release(self, key: PaymentKey) -> None:
        await self._writes.execute([(_RELEASE, _key(key))])

    async def mark_pending(self, key: PaymentKey, settlement: SettleResponse | None) -> None:
        receipt = settlement.to_json() if settlement is not None else None
        await self._writes.execute([(_PENDING, {**_key(key), "settlement": receipt})])

    async def mark_settled(self, key: PaymentKey, settlement: SettleResponse) -> None:
        await self._writes.execute([(_SETTLED, {**_key(key), "settlement": settlement.to_json()})])

    async def note_charge(self, key: PaymentKey, settlement: SettleResponse) -> None:
        await self._writes.execute([(_NOTE, {**_key(key), "settlement": settlement.to_json()})])

    async def keep_delivery(self, key: PaymentKey, delivery: Delivery, *,
                            expires_at: float) -> None:
        await self._writes.execute([(_KEEP, {
            **_key(key), "fingerprint": delivery.fingerprint, "request": delivery.request,
            "kept": delivery.kept, "status": delivery.status,
            "headers": json.dumps([list(h) for h in delivery.headers]),
            "body": delivery.body, "size": delivery.size, "expires_at": expires_at})])

    async def delivery(self, key: PaymentKey) -> Delivery | None:
        return await asyncio.to_thread(self._read_delivery, key)

    def _read_delivery(self, key: PaymentKey) -> Delivery | None:
        with self._readers() as session:
            row = session.get(_DeliveryRow, (key.network, key.asset, key.payer, key.nonce))
            if row is None or row.expires_at <= self._clock():
                return None
            return Delivery(fingerprint=row.fingerprint, request=row.request,
                            kept=bool(row.kept), status=row.status,
                            headers=tuple((str(k), str(v)) for k, v in json.loads(row.headers)),
                            body=bytes(row.body), size=row.size)

    def state_of(self, key: PaymentKey) -> LedgerState | None:
        """For tests and diagnostics (an expired entry not yet dropped still shows)."""
        row = self._read(key)
        return None if row is None else row[0]

    def entries(self, *, since: float | None = None, until: float | None = None,
                payer: str | None = None, state: str | None = None, limit: int = 100
                ) -> list[dict[str, Any]]:
        """Entries still held (an entry is dropped once its authorization has expired and
        its retention passed), newest first: read-only, for the operator API. An entry
        from an older ledger has no ``created_at`` and sorts last."""
        query = select(_LedgerRow)
        if since is not None:
            query = query.where(_LedgerRow.created_at >= since)
        if until is not None:
            query = query.where(_LedgerRow.created_at < until)
        if payer is not None:
            query = query.where(func.lower(_LedgerRow.payer) == payer.lower())
        if state is not None:
            query = query.where(_LedgerRow.state == state)
        query = query.order_by(_LedgerRow.created_at.desc().nulls_last()).limit(limit)
        with self._readers() as session:
            return [{"network": r.network, "asset": r.asset, "payer": r.payer,
                     "nonce": r.nonce, "state": r.state, "expiresAt": r.expires_at,
                     "createdAt": r.created_at, "settlement": r.settlement}
                    for r in session.scalars(query)]

    def close(self) -> None:
        self._writes.close()
        self.engine.dispose()

    def _read(self, key: PaymentKey
              ) -> tuple[LedgerState, str, str, SettleResponse | None] | None:
        with self._readers() as session:
            row = session.get(_LedgerRow, (key.network, key.asset, key.payer, key.nonce))
            if row is None:
                return None
            settlement = (SettleResponse.model_validate_json(row.settlement)
                          if row.settlement is not None else None)
            return LedgerState(row.state), row.fingerprint, row.terms, settlement


def _add_created_at(engine: Engine) -> None:
    """Bring a ledger made before ``created_at`` up to this schema. Two processes opening
    one old ledger together may both try: the loser's error is checked for and ignored."""
    if "created_at" in {c["name"] for c in inspect(engine).get_columns(_TABLE)}:
        return
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"ALTER TABLE {_TABLE} ADD COLUMN created_at DOUBLE PRECISION")
    except (OperationalError, ProgrammingError):
        if "created_at" not in {c["name"] for c in inspect(engine).get_columns(_TABLE)}:
            raise


def _key(key: PaymentKey) -> dict[str, Any]:
    return {"network": key.network, "asset": key.asset, "payer": key.payer, "nonce": key.nonce}


def _only(params: dict[str, Any], *names: str) -> dict[str, Any]:
    """The key's parameters and ``names``: exactly what one statement binds."""
    return {k: params[k] for k in ("network", "asset", "payer", "nonce", *names)}
