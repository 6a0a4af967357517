"""The vault's tables and the detached records the store hands out (SQLAlchemy 2 models).

One row per thing the vault must not forget: its own identity and watch
position (meta), its enclave's sealed ledger, client balances (accounts),
credited deposits, withdrawals, channels (terms, phase, the sealed state
machine, payouts), calls (their idempotency key, progress and sealed answer),
used request nonces, and journaled transactions. :mod:`a402.vault.store` is
what reads and writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "a402_vault_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerRow(Base):
    """The vault enclave's sealed ledger (one row, ``id`` 1), written by compare-and-set on
    ``version``, the version the enclave sealed into it."""

    __tablename__ = "a402_vault_ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class LeaseRow(Base):
    """Which process serves a shard (:mod:`a402.vault.lease`): its holder, the fencing
    ``token`` (one more at every take-over), until when (the database's clock, epoch
    seconds) and where it answers."""

    __tablename__ = "a402_vault_lease"
    shard: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Float)
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    acquired_at: Mapped[float] = mapped_column(Float)


class AccountRow(Base):
    __tablename__ = "a402_vault_accounts"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    balance: Mapped[str] = mapped_column(String(78))
    updated_at: Mapped[float] = mapped_column(Float)


class DepositRow(Base):
    __tablename__ = "a402_vault_deposits"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[str] = mapped_column(String(78))
    kind: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)


class WithdrawalRow(Base):
    __tablename__ = "a402_vault_withdrawals"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    recipient: Mapped[str] = mapped_column(String(42))
    amount: Mapped[str] = mapped_column(String(78))
    state: Mapped[str] = mapped_column(String(16), index=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ChannelRow(Base):
    __tablename__ = "a402_vault_channels"
    cid: Mapped[str] = mapped_column(String(66), primary_key=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    provider: Mapped[str] = mapped_column(String(42), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048))
    funding: Mapped[str] = mapped_column(String(8))
    deposit: Mapped[str] = mapped_column(String(78))
    lock_timeout: Mapped[float] = mapped_column(Float)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    phase: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16))
    checkpoint: Mapped[str | None] = mapped_column(String(16), nullable=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    free: Mapped[str] = mapped_column(String(78))
    locked: Mapped[str] = mapped_column(String(78), default="0")
    provider_balance: Mapped[str] = mapped_column(String(78), default="0")
    snapshot: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    proposal: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disputed_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    final_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pending_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    client_payout: Mapped[str | None] = mapped_column(String(78), nullable=True)
    provider_payout: Mapped[str | None] = mapped_column(String(78), nullable=True)
    settle_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RequestRow(Base):
    __tablename__ = "a402_vault_requests"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(80), nullable=True)
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    url: Mapped[str] = mapped_column(String(4096))
    method: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str | None] = mapped_column(String(66), nullable=True)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount: Mapped[str | None] = mapped_column(String(78), nullable=True)
    sealed_result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    answer: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    transaction: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ConsumedRow(Base):
    """One entry of a channel's log of consumed calls (the vault enclave's
    :class:`~a402.vault_enclave.LogEntry`), written with the checkpoint whose sealed record
    names it; handed back with that record when the channel is restored."""

    __tablename__ = "a402_vault_consumed"
    cid: Mapped[str] = mapped_column(String(66), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    newest: Mapped[int] = mapped_column(BigInteger)
    entry: Mapped[bytes] = mapped_column(LargeBinary)


class NonceRow(Base):
    __tablename__ = "a402_vault_nonces"
    client: Mapped[str] = mapped_column(String(42), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float, index=True)


class TxRow(Base):
    __tablename__ = "a402_vault_txs"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    # What the transaction is about: a channel id, a withdrawal key, or the ids of
    # every channel a batch opens or closes, comma-separated (so: unbounded text).
    ref: Mapped[str] = mapped_column(Text)
    tx_hash: Mapped[str] = mapped_column(String(66))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


# ------------------------------------------------------------------------ records


def _record(cls: type[T]) -> Callable[[Any], T]:
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return lambda row: cls(**{n: getattr(row, n) for n in names})


@dataclass(frozen=True)
class Channel:
    cid: str
    client: str
    provider: str
    endpoint: str
    funding: str
    deposit: str
    lock_timeout: float
    terms: dict[str, Any]
    phase: str
    status: str
    checkpoint: str | None
    version: int
    free: str
    locked: str
    provider_balance: str
    snapshot: bytes | None
    request_key: str | None
    proposal: dict[str, Any] | None
    deadline: int | None
    disputed_version: int | None
    final_state: dict[str, Any] | None
    pending_since: float | None
    client_payout: str | None
    provider_payout: str | None
    settle_tx: str | None
    updated_at: float


@dataclass(frozen=True)
class Request:
    key: str
    client: str
    fingerprint: str
    state: str
    outcome: str | None
    reason: str | None
    retryable: bool
    url: str
    method: str
    channel_id: str | None
    request_id: int | None
    amount: str | None
    sealed_result: bytes | None
    secret: bytes | None
    answer: bytes | None
    transaction: str | None
    updated_at: float


@dataclass(frozen=True)
class Transaction:
    key: str
    kind: str
    ref: str
    tx_hash: str
    raw: bytes
    nonce: int
    state: str
    updated_at: float


@dataclass(frozen=True)
class Withdrawal:
    key: str
    client: str
    recipient: str
    amount: str
    state: str
    tx_hash: str | None
    created_at: float


channel_record = _record(Channel)
request_record = _record(Request)
transaction_record = _record(Transaction)
withdrawal_record = _record(Withdrawal)


@dataclass(frozen=True)
class Totals:
    """The conservation terms (see the module docstring), in atomic units."""

    deposits: int
    balances: int
    in_channels: int
    paid: int
    withdrawn: int

    @property
    def conserved(self) -> bool:
        return self.deposits == self.balances + self.in_channels + self.paid + self.withdrawn
