"""The facilitator's journal of settlements: SQLite by default, PostgreSQL by URL.

Every settlement is claimed here before anything touches the chain, and its
transaction is written here (hash and signed bytes) before it is broadcast. So:

- two calls with the same authorization, from any number of replicas sharing one
  database, race for one primary key; exactly one sends a transaction;
- a crash after broadcasting loses nothing: the journal has the transaction and
  the reconciler finishes it (or re-broadcasts it) on restart;
- a repeated call is answered with the first call's recorded result.

The key is the authorization's identity on-chain, ``(network, asset, payer,
nonce)``; EIP-3009 lets that be spent once, so neither can we.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    LargeBinary,
    String,
    bindparam,
    create_engine,
    delete,
    event,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


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

    @classmethod
    def of(cls, row: SettlementRow) -> Settlement:
        return cls(
            row.key, row.payload_hash, row.network, row.asset, row.payer, row.pay_to,
            int(row.amount), int(row.valid_before), State(row.state), row.tx_hash, row.raw_tx,
            row.response, row.updated_at,
        )


def settlement_key(network: str, asset: str, payer: str, nonce: str) -> str:
    material = "|".join((network, asset.lower(), payer.lower(), nonce.lower()))
    return hashlib.sha256(material.encode()).hexdigest()


def payload_digest(signature: str, authorization: dict[str, str]) -> str:
    """Identity of the exact signed payload, to tell a retry from a conflicting reuse."""
    fields = ("from", "to", "value", "validAfter", "validBefore", "nonce")
    material = "|".join([signature.lower(), *(str(authorization[f]).lower() for f in fields)])
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
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def get(self, key: str) -> Settlement | None:
        with self._tx() as s:
            row = s.get(SettlementRow, key)
            return Settlement.of(row) if row else None

    def peek(self, key: str) -> tuple[State, str | None] | None:
        """State and transaction of a key, without the ORM: this is on verify's hot path."""
        with self.engine.connect() as conn:
            row = conn.execute(self._peek, {"key": key}).first()
        return (State(row[0]), row[1]) if row else None

    _peek = select(SettlementRow.state, SettlementRow.tx_hash).where(
        SettlementRow.key == bindparam("key"))

    def claim(
        self, *, key: str, payload_hash: str, network: str, asset: str, payer: str, pay_to: str,
        amount: int, valid_before: int,
    ) -> bool:
        """Take the key for this call; False if any call (anywhere) already has it."""
        now = time.time()
        row = SettlementRow(
            key=key, payload_hash=payload_hash, network=network, asset=asset, payer=payer,
            pay_to=pay_to, amount=str(amount), valid_before=valid_before, state=State.CLAIMED,
            created_at=now, updated_at=now,
        )
        try:
            with self._tx() as s:
                s.add(row)
        except IntegrityError:
            return False
        return True

    def release(self, key: str) -> None:
        """Give back a claim under which nothing was sent (verification failed)."""
        with self._tx() as s:
            s.execute(delete(SettlementRow).where(SettlementRow.key == key,
                                                  SettlementRow.state == State.CLAIMED))

    def record_submission(
        self, key: str, tx_hash: str, raw_tx: bytes, *, from_state: State = State.CLAIMED
    ) -> bool:
        """Journal the signed transaction; it must commit before the transaction is
        broadcast. False if the record is no longer in ``from_state`` (then send nothing)."""
        return self._set(key, from_state, state=State.SUBMITTED, tx_hash=tx_hash, raw_tx=raw_tx)

    def finish(self, key: str, state: State, response: dict) -> None:
        assert state in FINAL
        self._set(key, State.SUBMITTED, state=state, response=response)

    def _set(self, key: str, from_state: State, **values: object) -> bool:
        """A compare-and-set on the row's state, so concurrent finishers cannot disagree."""
        with self._tx() as s:
            result = s.execute(
                update(SettlementRow)
                .where(SettlementRow.key == key, SettlementRow.state == from_state)
                .values(updated_at=time.time(), **values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def unfinished(self) -> list[Settlement]:
        with self._tx() as s:
            rows = s.scalars(select(SettlementRow).where(
                SettlementRow.state.in_([State.CLAIMED, State.SUBMITTED])))
            return [Settlement.of(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        with self._tx() as s:
            rows = s.execute(select(SettlementRow.state))
            counts: dict[str, int] = {}
            for (state,) in rows:
                counts[state] = counts.get(state, 0) + 1
            return counts

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """WAL and full sync: a journal is only a journal if a power cut keeps it."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
