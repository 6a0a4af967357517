"""The facilitator's journal of settlements: SQLite by default, PostgreSQL by URL.

Every settlement is claimed here before anything touches the chain, and its
transaction is written here (hash and signed bytes) before it is broadcast. So:

- two calls with the same authorization, from any number of replicas sharing one
  database, race for one primary key; exactly one sends a transaction;
- a crash after broadcasting loses nothing: the journal has the transaction and
  the reconciler finishes it (or re-broadcasts it) on restart;
- a repeated call is answered with the first call's recorded result.

The key is the authorization's identity on-chain, ``(network, asset, payer,
nonce)``; EIP-3009 lets that be spent once, so neither can we. The row also
records what the claiming request named as its resource, so one settlement is
never handed to a second resource.

Replicas sharing one database and one signer key also share its transaction
nonces: ``sender_lock`` serialises their nonce allocation through the
database (a PostgreSQL advisory lock; SQLite is one process, whose own lock
suffices).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Engine,
    Float,
    LargeBinary,
    String,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from a402.evm.address import address_key
from a402.sqlite import use_wal


class State(enum.StrEnum):
    CLAIMED = "claimed"        # a call owns the key; nothing sent yet
    SUBMITTED = "submitted"    # transaction signed and journaled, maybe broadcast
    CONFIRMED = "confirmed"    # mined with status 1: money moved, exactly once
    FAILED = "failed"          # final, and no money moved


FINAL = (State.CONFIRMED, State.FAILED)


class Base(DeclarativeBase):
    pass


class SettlementRow(Base):
    __tablename__ = "a402_settlements"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    payload_hash: Mapped[str] = mapped_column(String(64))
    network: Mapped[str] = mapped_column(String(80))
    asset: Mapped[str] = mapped_column(String(42))
    payer: Mapped[str] = mapped_column(String(42), index=True)
    pay_to: Mapped[str] = mapped_column(String(42))
    amount: Mapped[str] = mapped_column(String(78))
    valid_before: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    response: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # Added after the first release: nullable, so rows of older journals read as
    # claimed by a request that named no resource, by no holder that can still
    # journal under its claim (see ``_add_new_columns``).
    resource: Mapped[str | None] = mapped_column(Text, nullable=True)
    holder: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The current claim's token; only its holder may journal a transaction."""
    scheme: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """The x402 scheme settled (``exact``, ``upto``); NULL in journals older than upto,
    which settled only ``exact``."""


@dataclass(frozen=True)
class Settlement:
    """A snapshot of one journal row, detached from any session."""

    key: str
    payload_hash: str
    network: str
    asset: str
    payer: str
    pay_to: str
    amount: int
    valid_before: int
    state: State
    tx_hash: str | None
    raw_tx: bytes | None
    response: dict | None
    updated_at: float
    resource: str | None
    """What the claiming request named as its resource (None: it named none)."""
    scheme: str = "exact"
    """The x402 scheme of the payment (a row from before ``upto`` reads ``exact``)."""

    @classmethod
    def of(cls, row: SettlementRow) -> Settlement:
        return cls(
            row.key, row.payload_hash, row.network, row.asset, row.payer, row.pay_to,
            int(row.amount), int(row.valid_before), State(row.state), row.tx_hash, row.raw_tx,
            row.response, row.updated_at, row.resource, row.scheme or "exact",
        )


def settlement_key(network: str, asset: str, payer: str, nonce: str) -> str:
    material = "|".join((network, address_key(asset), address_key(payer), nonce.lower()))
    return hashlib.sha256(material.encode()).hexdigest()


def payload_digest(signature: str, authorization: dict[str, str]) -> str:
    """Identity of the exact signed payload, to tell a retry from a conflicting reuse."""
    fields = ("from", "to", "value", "validAfter", "validBefore", "nonce")
    material = "|".join([signature.lower(), *(str(authorization[f]).lower() for f in fields)])
    return hashlib.sha256(material.encode()).hexdigest()


def upto_settlement_key(network: str, asset: str, payer: str, nonce: str) -> str:
    """An upto authorization's identity on-chain: its payer's Permit2 nonce (a decimal
    uint256), kept apart from EIP-3009 nonces by a prefix."""
    return settlement_key(network, asset, payer, f"permit2:{int(nonce)}")


def upto_payload_digest(signature: str, authorization: dict[str, Any], amount: int) -> str:
    """Identity of a signed upto payload *and* the amount asked of it: a retry asks the
    same amount; the same authorization asked another amount is a second charge, refused."""
    permitted, witness = authorization["permitted"], authorization["witness"]
    fields = [authorization["from"], permitted["token"], permitted["amount"],
              authorization["spender"], authorization["nonce"], authorization["deadline"],
              witness["to"], witness["facilitator"], witness["validAfter"]]
    material = "|".join(["upto", signature.lower(), *(str(f).lower() for f in fields),
                         str(amount)])
    return hashlib.sha256(material.encode()).hexdigest()


class SettlementStore:
    def __init__(self, url: str = "sqlite:///a402-facilitator.db") -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = create_engine(url, connect_args={"check_same_thread": False,
                                                           "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        # Replicas starting together on PostgreSQL would race to create the table (the
        # losers crash on a catalog unique violation): they take turns.
        with _advisory_lock(self.engine, "a402-schema"):
            _create_table(self.engine)
            _add_new_columns(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def get(self, key: str) -> Settlement | None:
        with self._tx() as s:
            row = s.get(SettlementRow, key)
            return Settlement.of(row) if row else None

    def peek(self, key: str) -> tuple[State, str | None, str | None] | None:
        """State, transaction and resource of a key, without the ORM: this is on
        verify's hot path."""
        with self.engine.connect() as conn:
            row = conn.execute(self._peek, {"key": key}).first()
        return (State(row[0]), row[1], row[2]) if row else None

    _peek = select(SettlementRow.state, SettlementRow.tx_hash, SettlementRow.resource).where(
        SettlementRow.key == bindparam("key"))

    def claim(
        self, *, key: str, payload_hash: str, network: str, asset: str, payer: str, pay_to: str,
        amount: int, valid_before: int, resource: str | None = None, scheme: str = "exact",
    ) -> str | None:
        """Take the key for this call: the claim's holder token, or None if any call
        (anywhere) already has it."""
        now, holder = time.time(), secrets.token_hex(16)
        row = SettlementRow(
            key=key, payload_hash=payload_hash, network=network, asset=asset, payer=payer,
            pay_to=pay_to, amount=str(amount), valid_before=valid_before, state=State.CLAIMED,
            created_at=now, updated_at=now, resource=resource, holder=holder, scheme=scheme,
        )
        try:
            with self._tx() as s:
                s.add(row)
        except IntegrityError:
            return None
        return holder

    def take_over(
        self, key: str, *, stale_before: float, payload_hash: str, resource: str | None
    ) -> str | None:
        """Take a claim untouched since ``stale_before`` (its holder presumed dead) made
        for this very request (``payload_hash`` and ``resource``): the new holder token,
        or None if the claim is not (or no longer) stale, or is another request's. A
        compare-and-set, so of several callers one takes it; the old holder, should it
        be alive after all, can no longer journal (see ``record_submission``).

        The request is part of the condition because the row read as stale may have
        been released and claimed again, for another resource, by a replica whose
        clock is slow enough for its fresh claim to look stale here: taking that
        claim would settle it for this request and hand the payment to both."""
        holder = secrets.token_hex(16)
        taken = self._where([SettlementRow.key == key, SettlementRow.state == State.CLAIMED,
                             SettlementRow.updated_at < stale_before,
                             SettlementRow.payload_hash == payload_hash,
                             SettlementRow.resource == resource], holder=holder)
        return holder if taken else None

    def release(
        self, key: str, *, holder: str | None = None, stale_before: float | None = None
    ) -> None:
        """Give back a claim under which nothing was sent: ``holder``'s own (verification
        or the chain failed before anything was journaled), or, with ``stale_before``,
        whoever's is untouched since then (the reconciler's clean-up of a dead holder's).
        A journaled row is never deleted."""
        condition = [SettlementRow.key == key, SettlementRow.state == State.CLAIMED]
        if holder is not None:
            condition.append(SettlementRow.holder == holder)
        if stale_before is not None:
            condition.append(SettlementRow.updated_at < stale_before)
        with self._tx() as s:
            s.execute(delete(SettlementRow).where(*condition))

    def record_submission(self, key: str, holder: str, tx_hash: str, raw_tx: bytes) -> bool:
        """Journal the signed transaction under ``holder``'s claim; it must commit before
        the transaction is broadcast. False if that claim is no longer held (then send
        nothing).

        This compare-and-set is what makes claims safe to take over after a short
        timeout: a row leaves ``claimed`` once, and only for the holder of the claim at
        that moment, so of all the calls that ever held a claim on one authorization
        exactly one journals a transaction, and only that one broadcasts. A holder
        presumed dead while still alive (taken over, or released and claimed again,
        perhaps by a request for another resource) fails here, sends nothing, and
        follows whoever holds the claim now: the cost is time, never money.
        """
        return self._where([SettlementRow.key == key, SettlementRow.state == State.CLAIMED,
                            SettlementRow.holder == holder],
                           state=State.SUBMITTED, tx_hash=tx_hash, raw_tx=raw_tx)

    def record_resubmission(
        self, key: str, replaced: str, tx_hash: str, raw_tx: bytes
    ) -> bool:
        """Replace the journaled transaction ``replaced``, whose nonce another took, by
        its re-signed copy; False if the row was finished or ``replaced`` was replaced
        already (then send nothing)."""
        return self._where([SettlementRow.key == key, SettlementRow.state == State.SUBMITTED,
                            SettlementRow.tx_hash == replaced], tx_hash=tx_hash, raw_tx=raw_tx)

    def settle_without_transaction(self, key: str, holder: str, response: dict) -> bool:
        """Finish ``holder``'s claim as settled with no transaction (an ``upto`` charge of
        0): the row goes ``claimed`` → ``confirmed`` with its answer, so the authorization
        is spent here as surely as by a mined transfer, and no call ever sends one for
        it. False if the claim is no longer held (then follow whoever holds it)."""
        return self._where([SettlementRow.key == key, SettlementRow.state == State.CLAIMED,
                            SettlementRow.holder == holder],
                           state=State.CONFIRMED, response=response)

    def finish(self, key: str, state: State, response: dict) -> None:
        assert state in FINAL
        self._set(key, State.SUBMITTED, state=state, response=response)

    def _set(self, key: str, from_state: State, **values: object) -> bool:
        """A compare-and-set on the row's state, so concurrent finishers cannot disagree."""
        return self._where([SettlementRow.key == key, SettlementRow.state == from_state],
                           **values)

    def _where(self, condition: list[ColumnElement[bool]], **values: object) -> bool:
        """Update the row if ``condition`` holds, touching ``updated_at``; did it hold?"""
        with self._tx() as s:
            result = s.execute(
                update(SettlementRow).where(*condition).values(updated_at=time.time(), **values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    @contextmanager
    def sender_lock(self, network: str, address: str) -> Iterator[None]:
        """Hold the database's lock on ``address``'s nonces on ``network``.

        PostgreSQL: a transaction-scoped advisory lock, held on a connection of
        its own until the block exits and released by PostgreSQL if this process
        dies, so replicas sharing a signer key allocate nonces one at a time
        (pending nonce, sign, journal, broadcast) instead of signing two
        transactions with one nonce. Callers take their in-process lock first,
        so each process has at most one connection waiting here. SQLite: a no-op
        (one process; its in-process lock serialises). Should the lock's
        connection die mid-block, two replicas may collide on a nonce once: the
        journal still sends each authorization once, and the reconciler re-signs
        the transaction the node refused.
        """
        with _advisory_lock(self.engine, f"a402-nonce|{network}|{address_key(address)}",
                            timeout=SENDER_LOCK_TIMEOUT):
            yield

    def unfinished(self) -> list[Settlement]:
        with self._tx() as s:
            rows = s.scalars(select(SettlementRow).where(
                SettlementRow.state.in_([State.CLAIMED, State.SUBMITTED])))
            return [Settlement.of(r) for r in rows]

    def journal(self, *, since: float | None = None, until: float | None = None,
                payer: str | None = None, pay_to: str | None = None,
                state: str | None = None, limit: int = 100
                ) -> list[tuple[Settlement, float]]:
        """Journal rows, newest first, each with its creation time (read-only: what the
        operator API and ``a402 payments --facilitator`` show). Addresses match in any
        case."""
        query = select(SettlementRow)
        if since is not None:
            query = query.where(SettlementRow.created_at >= since)
        if until is not None:
            query = query.where(SettlementRow.created_at < until)
        if payer is not None:
            query = query.where(func.lower(SettlementRow.payer) == payer.lower())
        if pay_to is not None:
            query = query.where(func.lower(SettlementRow.pay_to) == pay_to.lower())
        if state is not None:
            query = query.where(SettlementRow.state == state)
        query = query.order_by(SettlementRow.created_at.desc()).limit(limit)
        with self._tx() as s:
            return [(Settlement.of(r), r.created_at) for r in s.scalars(query)]

    def created_at(self, key: str) -> float | None:
        with self._tx() as s:
            row = s.get(SettlementRow, key)
            return None if row is None else row.created_at

    def count_by_state(self) -> dict[str, int]:
        with self._tx() as s:
            rows = s.execute(select(SettlementRow.state))
            counts: dict[str, int] = {}
            for (state,) in rows:
                counts[state] = counts.get(state, 0) + 1
            return counts

    def close(self) -> None:
        self.engine.dispose()


SENDER_LOCK_TIMEOUT = 10.0
"""Seconds to wait for another replica's turn with the signer's nonces. Its turn
takes a few RPC calls; a replica frozen in its turn (stopped, swapped out, a hung
call) keeps the lock, as PostgreSQL sees its connection alive: then the waiter gives
up (``OperationalError``, HTTP 503, its claim released) instead of stalling every
replica's settlements for as long as the freeze lasts."""


@contextmanager
def _advisory_lock(engine: Engine, name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold PostgreSQL's transaction-scoped advisory lock named ``name`` (hashed to
    its 64-bit key) on a connection of its own until the block exits; PostgreSQL
    releases it if this process dies. Waiting longer than ``timeout`` seconds raises
    ``OperationalError``. Elsewhere a no-op: SQLite serves one process."""
    if engine.dialect.name != "postgresql":
        yield
        return
    lock_id = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn, conn.begin():
        if timeout is not None:
            conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"),
                         {"ms": f"{int(timeout * 1000)}ms"})
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        yield


def _create_table(engine: Engine) -> None:
    """Create the journal's table if it is missing. Processes opening one new SQLite
    file together may both find it missing: the loser's "already exists" is checked
    for and ignored (on PostgreSQL the callers take turns instead)."""
    try:
        Base.metadata.create_all(engine)
    except OperationalError:
        if not inspect(engine).has_table(SettlementRow.__tablename__):
            raise


def _add_new_columns(engine: Engine) -> None:
    """Bring a journal made by an older a402 up to this schema.

    ``create_all`` makes missing tables but leaves existing ones alone, so the
    columns added since (all nullable) are added here; old rows read NULL.
    Replicas may start together: PostgreSQL's ``IF NOT EXISTS`` makes the race
    harmless there; on SQLite a "duplicate column" from a concurrent process is
    checked for and ignored.
    """
    table = Base.metadata.tables[SettlementRow.__tablename__]
    present = {c["name"] for c in inspect(engine).get_columns(table.name)}
    for column in table.columns:
        if column.name in present:
            continue
        assert column.nullable, f"{column.name}: a new column must be nullable"
        kind = column.type.compile(dialect=engine.dialect)
        guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
        try:
            with engine.begin() as conn:
                conn.execute(text(
                    f"ALTER TABLE {table.name} ADD COLUMN {guard}{column.name} {kind}"))
        except OperationalError:
            if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and full sync: a journal is only a journal if a power cut keeps it."""
    use_wal(dbapi_connection)
    dbapi_connection.execute("PRAGMA synchronous=FULL").close()
