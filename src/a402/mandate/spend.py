"""What was spent under each mandate, durably: SQLite by default, PostgreSQL for shared agents.

The rule that makes a budget a budget: **reserve before signing, release only if
nothing was signed.** A signed payment (an EIP-3009 authorization, a channel
payment) can move money whether or not the request that carried it succeeded,
so its amount counts as spent from the moment it *could* be signed:

1. :meth:`SpendStore.reserve` decides, in one transaction holding the
   mandate's row locked, with the spend it just read (the pure
   :func:`a402.mandate.policy.decide`), and if allowed adds the amount to the
   totals and writes a ``reserved`` row, all committed before it returns. A
   refusal changes nothing.
2. The payer signs, then :meth:`SpendStore.signed` marks the row ``signed``.
3. Only a reservation still ``reserved`` (the signer failed: nothing exists
   that could move money) may be :meth:`SpendStore.release`\\ d, which takes
   its amount off the totals. A ``signed`` one never comes back.

A crash anywhere in between leaves a ``reserved`` row whose amount still
counts: the budget errs toward spending less, never more.

A payer that signs in its own memory (the ``exact`` payers) uses one step instead
(:meth:`SpendStore.reserve_in` with ``state`` ``signed``, from
:meth:`a402.mandate.guard.MandateGuard.commit`): the decision and the reservation,
already marked signed, commit with the payment's evidence record after the payload
was signed and before it is sent. Until that commit nobody but the process holds the
signature, so nothing can move money that the store does not count; a refusal there
discards the signature unsent. Concurrent payers,
threads or processes or several machines on one PostgreSQL, cannot overshoot,
because every reserve reads and writes the totals under the row's lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
serializes writers, see :mod:`a402.sqlite`). A restart reads the totals back:
they are the database's, not the process's.

An owner's confirmation (above ``confirm_above``) is good for one payment: its
nonce is stored with the reservation and a second use is refused
(``mandate_confirmation_used``), even after a release.

Amounts are uint256 and so are stored as decimal text; all arithmetic is on
Python ints under the lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from a402.mandate.document import Confirmation, SignedMandate, load_signed
from a402.mandate.policy import MandateRefused, ProposedPayment, Spent, decide, period_index
from a402.sqlite import Plain, make_engine

MANDATE_CONFIRMATION_USED: Final = "mandate_confirmation_used"
DEFAULT_URL: Final = "sqlite:///a402-mandates.db"

RESERVED: Final = "reserved"
SIGNED: Final = "signed"
RELEASED: Final = "released"

metadata = MetaData()

mandates = Table(
    "a402_mandates", metadata,
    Column("hash", String(66), primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("agent", String(42), nullable=False, index=True),
    Column("document", Text, nullable=False),
    Column("spent_total", String(78), nullable=False),
    Column("period_index", BigInteger, nullable=False),
    Column("spent_period", String(78), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

reservations = Table(
    "a402_mandate_reservations", metadata,
    Column("id", String(32), primary_key=True),
    Column("mandate", String(66), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("amount", String(78), nullable=False),
    Column("period_index", BigInteger, nullable=False),
    Column("payee", String(42), nullable=False),
    Column("network", String(80), nullable=False),
    Column("asset", String(42), nullable=False),
    Column("scheme", String(16), nullable=False),
    Column("resource", Text, nullable=False),
    Column("confirmation", String(66), nullable=True, unique=True),
    Column("payment_ref", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


_LOCK_ROW: Final = text(
    "SELECT spent_total, period_index, spent_period FROM a402_mandates WHERE hash = :hash")
_LOCK_ROW_FOR_UPDATE: Final = text(
    "SELECT spent_total, period_index, spent_period FROM a402_mandates WHERE hash = :hash "
    "FOR UPDATE")
_RESERVE_TOTALS: Final = text(
    "UPDATE a402_mandates SET spent_total = :total, period_index = :period, "
    "spent_period = :in_period, updated_at = :at WHERE hash = :hash")
_RESERVE_ROW: Final = text(
    "INSERT INTO a402_mandate_reservations (id, mandate, state, amount, period_index, payee, "
    "network, asset, scheme, resource, confirmation, payment_ref, created_at, updated_at) "
    "VALUES (:id, :mandate, :state, :amount, :period, :payee, :network, :asset, :scheme, "
    ":resource, :confirmation, :ref, :at, :at)")
_MARK_SIGNED: Final = text(
    "UPDATE a402_mandate_reservations SET state = 'signed', payment_ref = :ref, "
    "updated_at = :at WHERE id = :id AND state = 'reserved'")

__all__ = ["MandateRefused", "ReleaseRefused", "Reservation", "SpendStore"]


class ReleaseRefused(Exception):
    """A signed reservation cannot be released: its money may move."""


@dataclass(frozen=True)
class Reservation:
    """Proof that ``amount`` was reserved under mandate ``mandate`` (0x hash)."""

    id: str
    mandate: str
    amount: int
    period_index: int
    spent_after: Spent | None = None
    """The mandate's totals once this reservation is counted (set by a reserve; the
    period part is that of ``period_index``)."""


@dataclass(frozen=True)
class MandateSpend:
    """One mandate's row, for ``a402 mandate list``."""

    signed: SignedMandate
    spent_total: int
    period_index: int
    spent_period: int
    reservations: int
    updated_at: float


class SpendStore:
    """The spend ledger at ``url`` (SQLAlchemy URL; ``sqlite:///a402-mandates.db`` by default)."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            metadata.create_all(self.engine)
        except (OperationalError, IntegrityError):  # another process created them first
            names = set(inspect(self.engine).get_table_names())
            if not {mandates.name, reservations.name} <= names:
                raise
        self._lock_sql = _LOCK_ROW if self.engine.dialect.name == "sqlite" \
            else _LOCK_ROW_FOR_UPDATE
        self._known: set[bytes] = set()
        self._known_lock = threading.Lock()
        self.writer = threading.Lock()
        """Held by this process's payers around a one-commit payment's write transaction
        (:meth:`a402.mandate.guard.MandateGuard.commit`, and the outcome flush). Those
        transactions all queue on the evidence chain's head row anyway (one at a time per
        database); without this, every waiting thread would hold a pooled connection
        while it waits, and two hundred payers in one process would exhaust the pool
        (30 connections, 30 s), failing payments the budget allows with a pool timeout
        instead of paying them. Threads now wait here, unbounded like the row lock they
        would otherwise wait for, and each process holds one connection for its writes;
        other processes and machines still serialize on the database's own locks."""

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _lock_row(self, conn: Connection, mandate_hash: str) -> Any:
        query = select(mandates).where(mandates.c.hash == mandate_hash)
        if self.engine.dialect.name != "sqlite":
            query = query.with_for_update()
        return conn.execute(query).first()

    def register(self, signed: SignedMandate) -> None:
        """Make the mandate's row (idempotent; concurrent callers: one insert wins)."""
        with self._known_lock:
            if signed.hash in self._known:
                return
        now = time.time()
        try:
            with self._tx() as conn:
                if self._lock_row(conn, signed.hash_hex) is None:
                    conn.execute(mandates.insert().values(
                        hash=signed.hash_hex, owner=signed.mandate.owner.lower(),
                        agent=signed.mandate.agent.lower(), document=signed.dumps(),
                        spent_total="0", period_index=0, spent_period="0",
                        created_at=now, updated_at=now))
        except IntegrityError:
            pass  # another payer registered it between our read and our insert
        with self._known_lock:
            self._known.add(signed.hash)

    def reserve(
        self,
        signed: SignedMandate,
        payment: ProposedPayment,
        *,
        now: int | None = None,
        revoked: bool = False,
        confirmation: Confirmation | None = None,
    ) -> Reservation:
        """Decide and reserve in one locked transaction (module doc); ``MandateRefused``
        with the reason otherwise, having changed nothing."""
        self.register(signed)
        with self._tx() as conn:
            return self.reserve_in(conn, signed, payment, now=now, revoked=revoked,
                                   confirmation=confirmation)

    def reserve_in(
        self,
        conn: Connection,
        signed: SignedMandate,
        payment: ProposedPayment,
        *,
        now: int | None = None,
        revoked: bool = False,
        confirmation: Confirmation | None = None,
        state: str = RESERVED,
        payment_ref: str | None = None,
    ) -> Reservation:
        """:meth:`reserve` inside the caller's write transaction ``conn`` (which must be
        a write transaction: SQLite's ``BEGIN IMMEDIATE``, or the row is locked ``FOR
        UPDATE`` here), the mandate registered before. ``state`` ``signed`` with its
        ``payment_ref``: the payment was already signed in memory and is reserved and
        marked signed at once, committing with its evidence record
        (:meth:`a402.mandate.guard.MandateGuard.commit`). A refusal raises before
        anything is written: the caller's rollback leaves the store as it was."""
        at = int(time.time()) if now is None else now
        index = period_index(signed.mandate, at)
        plain = Plain(conn)
        row = plain.one(self._lock_sql.text, {"hash": signed.hash_hex})
        if row is None:
            raise ValueError(f"mandate {signed.hash_hex} is not registered in this store")
        stored_total, stored_period, stored_in_period = row
        total = int(stored_total)
        # A clock behind the stored period (another payer's clock ran ahead) counts
        # in the stored period: periods only move forward.
        new_period = max(index, int(stored_period))
        in_period = int(stored_in_period) if int(stored_period) == new_period else 0
        decision = decide(signed, payment, Spent(total, in_period), now=at,
                          revoked=revoked, confirmation=confirmation)
        if not decision:
            raise MandateRefused.of(decision)
        confirmation_nonce = None
        if confirmation is not None and signed.mandate.confirm_above \
                and payment.amount > signed.mandate.confirm_above:
            confirmation_nonce = "0x" + confirmation.nonce.hex()
            used = conn.execute(select(reservations.c.id).where(
                reservations.c.confirmation == confirmation_nonce)).first()
            if used is not None:
                raise MandateRefused(MANDATE_CONFIRMATION_USED,
                                     "the owner's confirmation was already used once")
        stamp = time.time()
        reservation = Reservation(secrets.token_hex(16), signed.hash_hex, payment.amount,
                                  new_period, Spent(total + payment.amount,
                                                    in_period + payment.amount))
        # Prepared once (module level), bound here: the statements of the paid path
        # skip SQLAlchemy's per-call construction and cache-key work.
        plain.run(_RESERVE_TOTALS.text, {
            "hash": signed.hash_hex, "total": str(total + payment.amount),
            "period": new_period, "in_period": str(in_period + payment.amount),
            "at": stamp})
        plain.run(_RESERVE_ROW.text, {
            "id": reservation.id, "mandate": signed.hash_hex, "state": state,
            "amount": str(payment.amount), "period": new_period,
            "payee": payment.payee.lower(), "network": payment.network,
            "asset": payment.asset.lower(), "scheme": payment.scheme,
            "resource": payment.resource, "confirmation": confirmation_nonce,
            "ref": payment_ref, "at": stamp})
        return reservation

    def signed(self, reservation: Reservation, payment_ref: str | None = None) -> None:
        """The payment was signed: its amount never comes back (``payment_ref``: e.g. the
        authorization's nonce, for the record)."""
        with self._tx() as conn:
            self.mark_signed(conn, reservation, payment_ref)

    @staticmethod
    def mark_signed(conn: Connection, reservation: Reservation,
                    payment_ref: str | None = None) -> None:
        """:meth:`signed` inside the caller's transaction ``conn`` (the evidence record
        of the payment commits with it: one commit per payment fewer). Idempotent."""
        done = conn.execute(_MARK_SIGNED, {"id": reservation.id, "ref": payment_ref,
                                           "at": time.time()})
        if done.rowcount != 1:
            state = conn.execute(select(reservations.c.state).where(
                reservations.c.id == reservation.id)).scalar()
            if state != SIGNED:
                raise ValueError(f"reservation {reservation.id} is {state}, not reserved")

    def release(self, reservation: Reservation) -> bool:
        """Give back a reservation nothing was signed for. True if released now, False if
        it already was; ``ReleaseRefused`` if it was signed."""
        with self._tx() as conn:
            row = self._lock_row(conn, reservation.mandate)
            state = conn.execute(select(reservations.c.state).where(
                reservations.c.id == reservation.id)).scalar()
            if state == RELEASED:
                return False
            if state != RESERVED or row is None:
                raise ReleaseRefused(f"reservation {reservation.id} is {state}: a signed "
                                     "payment may move money, its amount stays spent")
            conn.execute(update(reservations).where(reservations.c.id == reservation.id)
                         .values(state=RELEASED, updated_at=time.time()))
            period = int(row.spent_period)
            if int(row.period_index) == reservation.period_index:
                period -= reservation.amount
            conn.execute(update(mandates).where(mandates.c.hash == reservation.mandate).values(
                spent_total=str(int(row.spent_total) - reservation.amount),
                spent_period=str(period), updated_at=time.time()))
        return True

    def spent(self, signed: SignedMandate, *, now: int | None = None) -> Spent:
        """Reserved so far (signed or not yet), in total and in the period of ``now``."""
        at = int(time.time()) if now is None else now
        with self.engine.connect() as conn:  # (the totals only, not the document)
            row = conn.execute(_LOCK_ROW, {"hash": signed.hash_hex}).first()
        if row is None:
            return Spent()
        index = period_index(signed.mandate, at)
        return Spent(int(row.spent_total),
                     int(row.spent_period) if row.period_index == index else 0)

    def count(self, signed: SignedMandate, state: str) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(select(reservations.c.id).where(
                reservations.c.mandate == signed.hash_hex, reservations.c.state == state))
            return len(rows.all())

    def mandates(self) -> list[MandateSpend]:
        """Every mandate this store has seen, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(mandates).order_by(mandates.c.created_at.desc())).all()
            counts: dict[str, int] = {}
            for (mandate_hash,) in conn.execute(select(reservations.c.mandate).where(
                    reservations.c.state != RELEASED)):
                counts[mandate_hash] = counts.get(mandate_hash, 0) + 1
        return [MandateSpend(load_document(r.document), int(r.spent_total), int(r.period_index),
                             int(r.spent_period), counts.get(r.hash, 0), float(r.updated_at))
                for r in rows]


def load_document(text: str) -> SignedMandate:
    """A stored mandate document: a402 JSON, or the SD-JWT of an AP2 mandate."""
    from a402.mandate.ap2 import load_sd_jwt, looks_like_sd_jwt

    return load_sd_jwt(text) if looks_like_sd_jwt(text) else load_signed(text)
