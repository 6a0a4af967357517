"""The vault's durable state: accounts, deposits, channels, requests, transactions.

SQLAlchemy 2; SQLite by default (:mod:`a402.sqlite`: WAL, full sync, ``BEGIN
IMMEDIATE`` so that a read-modify-write never races, and group commit: the
writes of concurrent calls share COMMITs), PostgreSQL by URL. Every money-moving step is
one database transaction that commits *before* the step is acknowledged or the
next message leaves:

* a deposit is credited in the transaction that records it, keyed by what can
  happen only once on-chain (the ``PoolDeposited`` log), so crediting twice is
  a primary-key violation, not a bug to look for;
* opening a channel debits the balance and inserts the channel in one
  transaction, before the ``createASC(FromPool)`` transaction is even signed;
* each channel checkpoint (the sealed state machine) is written together with
  the progress of the request it carries, so a restarted vault knows which
  call a LOCKED or PENDING channel belongs to;
* settling a channel credits what came back, exactly once (the phase moves to
  ``settled`` under a compare-and-set).

The writes of a paid request (the call's claim and its nonce, each channel
checkpoint, the answer) are coroutines: plain SQL that the event loop awaits
while the group commit makes it durable, without holding a thread
(:meth:`a402.sqlite.Writes.submit`). Everything else is synchronous, for
worker threads.

Amounts are decimal strings (token amounts exceed 64 bits); balances change
only by compare-and-set on the previous value, which is safe across replicas
sharing one PostgreSQL database. A client's balance here mirrors its on-chain
pool balance (``ASCManager.pooled[vault][client]``), which is what guards the
money: this store chooses deposits and answers clients, it never lets tokens
move (:mod:`a402.vault.funds`).

Conservation (:meth:`VaultStore.totals`), which the tests check against the
chain: ``deposits == balances + in_channels + paid + withdrawn``, where
``in_channels`` is the client side (free + locked) of every funded channel not
yet settled (and every deposit on its way into a channel), ``paid`` the
provider side of every channel (co-signed, or paid out on-chain), and
``withdrawn`` what left the pool to clients' wallets (withdrawals, and the
refunds of wallet-funded channels).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from a402.evm.address import address_key
from a402.sqlite import Plain, Statement, make_engine, readers, writes

from .tables import (
    AccountRow,
    Base,
    Channel,
    ChannelRow,
    ConsumedRow,
    DepositRow,
    LedgerRow,
    MetaRow,
    NonceRow,
    Request,
    RequestRow,
    Totals,
    Transaction,
    TxRow,
    Withdrawal,
    WithdrawalRow,
    channel_record,
    request_record,
    transaction_record,
    withdrawal_record,
)

T = TypeVar("T")

# Channel phases (the vault's lifecycle; the machine's status is separate).
PROPOSED = "proposed"  # wallet funding: terms offered to the client, nothing moved
OPENING = "opening"  # deposit taken from the balance; createASC journaled or about to be
OPEN = "open"
CLOSING = "closing"  # closing cooperatively or by force; no new request starts
SETTLED = "settled"  # paid out on-chain; what came back is credited
FAILED = "failed"  # never opened; the deposit was given back
FUNDED = (OPEN, CLOSING)
UNSETTLED = (OPENING, OPEN, CLOSING)

# Request states.
RECEIVED = "received"  # claimed; nothing sent under it yet
LOCKED = "locked"  # δ locked, EXEC out
AUTHORIZED = "authorized"  # σ_U out: PENDING until REVEAL or the chain settles it
DELIVERED = "delivered"  # t known, result recoverable; outcome not yet recorded
RELEASED = "released"  # the lock was given up (no σ_U): nothing paid; outcome not yet recorded
DONE = "done"  # final: ``outcome`` says how it ended
IN_FLIGHT = (LOCKED, AUTHORIZED, DELIVERED)

# Transaction states.
TX_SUBMITTED = "submitted"
TX_CONFIRMED = "confirmed"
TX_FAILED = "failed"


#: Where the ledger was stored (in meta) before it had a row of its own.
LEGACY_LEDGER_KEY = "enclave_ledger"


class VaultBusy(Exception):
    """Another live process serves this vault from this database."""


class InsufficientBalance(Exception):
    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"balance {balance} < {needed}")
        self.balance = balance
        self.needed = needed


class ReplayedNonce(Exception):
    """A call's signature nonce was seen before."""


@dataclass(slots=True)
class Claim:
    """A new call not yet recorded: its row and signature nonce go into the database with
    its channel's LOCKED checkpoint, so a paid call costs one commit fewer than a claim
    written on its own. ``recorded`` turns true once that checkpoint is durable."""

    key: str
    client: str
    fingerprint: str
    url: str
    method: str
    nonce: str | None
    nonce_keep: float
    recorded: bool = False


class ClaimTaken(Exception):
    """A :class:`Claim`'s key or nonce was recorded before: its checkpoint wrote nothing."""


class _Conflict(Exception):
    """A compare-and-set lost a race: run the whole transaction again."""


# -------------------------------------------------------------------------- store


class VaultStore:
    """All of the vault's tables behind one engine (thread-safe; call from worker threads)."""

    def __init__(self, url: str = "sqlite:///a402-vault.db") -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = readers(self.engine)
        self._writes = writes(url, self._sessions, name="vault-store")
        self._lock: Any = None

    def close(self) -> None:
        if self._lock is not None:
            if self.engine.dialect.name != "sqlite":
                self._lock.exec_driver_sql("SELECT pg_advisory_unlock_all()")
                self._lock.commit()
            self._lock.close()
            self._lock = None
        self._writes.close()
        self.engine.dispose()

    def fence_writes(self, fence: Callable[[Session], None] | None) -> None:
        """Run ``fence(session)`` first in every write transaction from now on (a lease's
        fencing check, :mod:`a402.vault.lease`; PostgreSQL only)."""
        self._writes.fence_with(fence)

    def _tx(self) -> AbstractContextManager[Session]:
        """A write transaction of its own (on SQLite, between group commits)."""
        return self._writes.exclusive()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A consistent read that takes no write lock."""
        with self._readers() as session:
            yield session

    def _write(self, work: Callable[[Session], T]) -> T:
        """``work`` in a transaction, durable on return; on SQLite, in the next group commit."""
        return self._writes.run(work)

    async def _submit(self, statements: Sequence[Statement]) -> list[int]:
        """Plain SQL in one transaction, awaited until durable; each statement's row count."""
        return await self._writes.execute(statements)

    def _retrying(self, work: Callable[[Session], T], budget: float = 5.0) -> T:
        """Run ``work`` in one transaction, again from scratch if a compare-and-set lost.

        Lost races are retried with exponential backoff and jitter (so contenders spread
        out instead of colliding again) for about ``budget`` seconds; then one last
        attempt runs whose :class:`_Conflict`, if it loses too, propagates.
        """
        deadline = time.monotonic() + budget
        delay = 0.002
        while True:
            try:
                return self._write(work)
            except _Conflict:
                pause = random.uniform(delay / 2, delay)
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
                delay = min(delay * 2, 0.2)
        return self._write(work)

    # -- meta ----------------------------------------------------------------------

    def claim_for(self, vault: str) -> None:
        """Bind the database to one vault address; a database of another vault is refused.

        Balances, channels and calls are keyed by client, not by vault: two
        vaults in one database would share them. Replicas of one vault (same
        address) share it on purpose.
        """
        owner = self.put_meta("vault", address_key(vault).encode(), only_if_absent=True)
        if owner.decode() != address_key(vault):
            raise ValueError(f"{self.url} belongs to vault {owner.decode()}, not {vault}")

    def lock_for(self, vault: str) -> None:
        """Become the one process serving ``vault`` from this database, or :class:`VaultBusy`.

        Channels' state machines live in the serving process's memory between
        checkpoints, so two live processes must never drive the same channels:
        fail-over is active-passive. The lock dies with the process — an
        exclusive ``flock`` next to a SQLite file, a session advisory lock on
        PostgreSQL — so a vault restarted after a crash (even ``kill -9``) takes
        it at once, while a second copy started next to a live one is refused.
        """
        if self._lock is not None:
            return
        if self.engine.dialect.name == "sqlite":
            import fcntl

            path = self.engine.url.database
            handle: Any = open(f"{path}.lock", "a+")  # noqa: SIM115 (held for the process)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise VaultBusy(f"another process serves {vault} from {self.url}") from None
        else:
            handle = self.engine.connect()
            for _ in range(5):  # a dead holder's session may take a moment to end
                taken = handle.exec_driver_sql(
                    "SELECT pg_try_advisory_lock(hashtext(%s))",
                    (f"a402-vault:{address_key(vault)}",),
                ).scalar()
                handle.commit()
                if taken:
                    break
                time.sleep(0.2)
            else:
                handle.close()
                raise VaultBusy(f"another process serves {vault} from {self.url}")
        self._lock = handle

    def get_meta(self, key: str) -> bytes | None:
        with self._read() as s:
            row = s.get(MetaRow, key)
            return None if row is None else bytes(row.value)

    def put_meta(self, key: str, value: bytes, *, only_if_absent: bool = False) -> bytes:
        """Store ``value``; with ``only_if_absent``, keep (and return) what is there."""
        try:
            with self._tx() as s:
                row = s.get(MetaRow, key)
                if row is None:
                    s.add(MetaRow(key=key, value=value))
                elif only_if_absent:
                    return bytes(row.value)
                else:
                    row.value = value
        except IntegrityError:
            existing = self.get_meta(key)
            assert existing is not None
            return existing
        return value

    def get_metas(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every meta row whose key starts with ``prefix`` (in this case: SQLite's LIKE
        ignores ASCII case, so the exact prefix is compared too), in key order."""
        with self._read() as s:
            rows = s.execute(select(MetaRow.key, MetaRow.value)
                             .where(MetaRow.key.startswith(prefix, autoescape=True),
                                    func.substr(MetaRow.key, 1, len(prefix)) == prefix)
                             .order_by(MetaRow.key)).all()
            return [(str(k), bytes(v)) for k, v in rows]

    def put_metas(self, values: dict[str, bytes], *, delete_prefix: str | None = None,
                  nonces: Sequence[tuple[str, str, float]] = ()) -> None:
        """Store every ``key: value`` in one transaction (all of them, or none); with
        ``delete_prefix``, the same transaction first deletes every row whose key starts
        with it; ``nonces``: ``(client, nonce, seen at)`` recorded in it too (one already
        recorded stays as it is). Durable on return (:meth:`submit_metas`, waited for)."""
        done = self.submit_metas(values, delete_prefix=delete_prefix, nonces=nonces)
        if done is not None:
            done.result()

    def delete_metas(self, keys: Iterable[str]) -> None:
        """Delete the meta rows of ``keys`` (those there are), in one transaction; durable on
        return."""
        statements: list[Statement] = [(_META_DELETE_SQL, {"key": key}) for key in keys]
        if statements:
            self._writes.submit(statements).result()

    def submit_metas(self, values: dict[str, bytes], *, delete_prefix: str | None = None,
                     nonces: Sequence[tuple[str, str, float]] = ()
                     ) -> Future[list[int]] | None:
        """:meth:`put_metas` without waiting: the write's future, resolved only once the
        transaction is durable (or with the exception that undid it); None if there is
        nothing to write. Its done-callbacks run on the thread that resolves it (the group
        commit's writer on SQLite), after the COMMIT.

        Plain SQL through the store's writes (:meth:`a402.sqlite.Writes.submit`: one write,
        all or none; on SQLite in the next group commit, shared with the other writes then
        waiting; on PostgreSQL a transaction of its own, fenced by the lease as every write
        is): vault mode's paid calls store their ledger and answers here, and an ORM
        session per write cost them more CPU than the rest of their writing. Must not be
        called on the writer thread (nothing in this store does)."""
        statements: list[Statement] = [
            (_NONCE_ONCE_SQL, {"client": address_key(client), "nonce": nonce, "seen_at": seen})
            for client, nonce, seen in nonces]
        if delete_prefix is not None:
            statements.append((_META_DELETE_PREFIX_SQL, {
                "pattern": _like_prefix(delete_prefix), "size": len(delete_prefix),
                "prefix": delete_prefix}))
        statements.extend((_META_UPSERT_SQL, {"key": key, "value": bytes(value)})
                          for key, value in values.items())
        return self._writes.submit(statements) if statements else None

    # -- the enclave's ledger ------------------------------------------------------------

    def ledger(self) -> tuple[int, bytes] | None:
        """The enclave's sealed ledger and its version, or None if none was ever stored."""
        with self._read() as s:
            row = s.get(LedgerRow, 1)
            if row is not None:
                return int(row.version), bytes(row.blob)
            legacy = s.get(MetaRow, LEGACY_LEDGER_KEY)  # before the ledger had a row
            return None if legacy is None else (0, bytes(legacy.value))

    def ledger_version(self) -> int | None:
        with self._read() as s:
            found = s.execute(select(LedgerRow.version).where(LedgerRow.id == 1)).first()
            return None if found is None else int(found[0])

    def put_ledger(self, blob: bytes, version: int, *, expected: int | None) -> bool:
        """Store the ledger only if the stored one is still ``expected`` (None: there is
        none yet); False if another writer (a replica) stored a newer one meanwhile."""
        try:
            with self._tx() as s:
                if expected is None:
                    if s.get(LedgerRow, 1) is not None:
                        return False
                    s.add(LedgerRow(id=1, version=version, blob=blob))
                    return True
                done = s.execute(update(LedgerRow).where(LedgerRow.id == 1,
                                                         LedgerRow.version == expected)
                                 .values(version=version, blob=blob))
                return bool(done.rowcount == 1)  # type: ignore[attr-defined]
        except IntegrityError:  # another writer inserted the first row meanwhile
            return False

    def has_history(self) -> bool:
        """Whether this vault's enclave ever approved a channel (then its ledger exists
        somewhere: a missing row is lost state, not a first boot). Deposits and
        withdrawals do not count: they are on-chain, the enclave's ledger never saw them."""
        with self._read() as s:
            queries = (select(ChannelRow.cid).where(ChannelRow.phase != PROPOSED),)
            return any(s.execute(q.limit(1)).first() is not None for q in queries)

    # -- nonces ----------------------------------------------------------------------

    def nonce_seen(self, client: str, nonce: str) -> bool:
        """Whether ``(client, nonce)`` is recorded (:meth:`remember_nonce`, :meth:`put_metas`).
        One plain SELECT in a read transaction (no ORM session). Vault mode reads none per
        call: its service loads them all once (:meth:`nonces`)."""
        with self._readers.kw["bind"].connect() as conn, conn.begin():
            return Plain(conn).one(_NONCE_SEEN_SQL, {"client": address_key(client),
                                                     "nonce": nonce}) is not None

    def nonces(self) -> list[tuple[str, str, float]]:
        """Every recorded ``(client key, nonce, seen at)``, oldest first: what a vault-mode
        service that starts serving loads once (:meth:`a402.vault.mode.VaultModeService.
        hold_nonce` then reads no row per paid call)."""
        with self._readers.kw["bind"].connect() as conn, conn.begin():
            rows = conn.exec_driver_sql(_NONCES_ALL_SQL).all()
        return [(str(client), str(nonce), float(seen)) for client, nonce, seen in rows]

    async def forget_nonces(self, now: float, keep: float) -> None:
        """Now and then, forget the nonces older than ``keep``."""
        prune = _prune_nonces(now, keep)
        if prune:
            await self._submit(prune)

    async def remember_nonce(self, client: str, nonce: str, *, now: float, keep: float
                             ) -> bool:
        """True the first time ``(client, nonce)`` is seen; forgets nonces older than ``keep``
        (now and then, in the same write)."""
        try:
            await self._submit([*_prune_nonces(now, keep), _nonce(client, nonce, now)])
        except IntegrityError:
            return False
        return True

    # -- accounts ----------------------------------------------------------------------

    def balance(self, client: str) -> int:
        with self._read() as s:
            row = s.get(AccountRow, address_key(client))
            return 0 if row is None else int(row.balance)

    def accounts(self, limit: int = 500) -> list[tuple[str, int, float]]:
        """``(address, balance, updated_at)`` of the accounts changed most recently."""
        query = select(AccountRow).order_by(AccountRow.updated_at.desc()).limit(limit)
        with self._read() as s:
            return [(r.address, int(r.balance), r.updated_at) for r in s.scalars(query)]

    def _add(self, s: Session, client: str, delta: int, *, floor: bool = True) -> int:
        """Change a balance by compare-and-set; never below zero unless ``floor`` is False
        (a debit the chain already made: see :meth:`claim_withdrawal`)."""
        address = address_key(client)
        row = s.execute(select(AccountRow.balance).where(AccountRow.address == address)).first()
        if row is None:
            if delta < 0 and floor:
                raise InsufficientBalance(0, -delta)
            try:
                with s.begin_nested():
                    s.add(AccountRow(address=address, balance=str(delta), updated_at=time.time()))
            except IntegrityError:
                raise _Conflict from None
            return delta
        old = int(row[0])
        if old + delta < 0 and floor:
            raise InsufficientBalance(old, -delta)
        done = s.execute(
            update(AccountRow)
            .where(AccountRow.address == address, AccountRow.balance == row[0])
            .values(balance=str(old + delta), updated_at=time.time())
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise _Conflict
        return old + delta

    def credit_deposit(
        self, key: str, client: str, amount: int, kind: str, tx_hash: str | None
    ) -> bool:
        """Record and credit a deposit; False (and no credit) if ``key`` was credited before."""

        def work(s: Session) -> bool:
            if s.get(DepositRow, key) is not None:
                return False
            s.add(DepositRow(key=key, client=address_key(client), amount=str(amount), kind=kind,
                             tx_hash=tx_hash, created_at=time.time()))
            s.flush()
            self._add(s, client, amount)
            return True

        try:
            return self._retrying(work)
        except IntegrityError:
            return False

    def deposited_tx(self, tx_hash: str) -> bool:
        """Whether a deposit made by this transaction was credited."""
        with self._read() as s:
            found = s.execute(select(DepositRow.key).where(DepositRow.tx_hash == tx_hash)
                              .limit(1)).first()
            return found is not None

    # -- channels ----------------------------------------------------------------------

    def propose_channel(self, **values: Any) -> Channel:
        """A wallet-funded channel offered to the client (no money moves)."""
        now = time.time()
        with self._tx() as s:
            row = ChannelRow(phase=PROPOSED, created_at=now, updated_at=now, **values)
            s.add(row)
            s.flush()
            return channel_record(row)

    def claim_channel(self, *, debit: bool, **values: Any) -> Channel:
        """Insert an OPENING channel; with ``debit``, take its deposit from the balance.

        Raises :class:`InsufficientBalance` (and inserts nothing) when the
        balance cannot cover the deposit.
        """

        def work(s: Session) -> Channel:
            now = time.time()
            row = s.get(ChannelRow, values["cid"])
            if row is None:
                row = ChannelRow(phase=OPENING, created_at=now, updated_at=now, **values)
                s.add(row)
            elif row.phase == PROPOSED:
                row.phase, row.updated_at = OPENING, now
            else:
                raise ValueError(f"channel {values['cid']} is already {row.phase}")
            if debit:
                self._add(s, values["client"], -int(values["deposit"]))
            s.flush()
            return channel_record(row)

        return self._retrying(work)

    def fail_channel(self, cid: str) -> bool:
        """An OPENING channel that never opened: give its pool deposit back."""

        def work(s: Session) -> bool:
            row = s.get(ChannelRow, cid)
            if row is None or row.phase not in (OPENING, PROPOSED):
                return False
            if row.phase == OPENING and row.funding == "pool":
                self._add(s, row.client, int(row.deposit))
            row.phase, row.updated_at = FAILED, time.time()
            return True

        return self._retrying(work)

    def open_channel(self, cid: str, *, wallet_deposit_key: str | None = None) -> bool:
        """OPENING → OPEN once ``createASC`` is mined; a wallet-funded deposit is recorded
        (and at once committed to the channel) in the same transaction."""

        def work(s: Session) -> bool:
            row = s.get(ChannelRow, cid)
            if row is None or row.phase != OPENING:
                return False
            if wallet_deposit_key is not None and s.get(DepositRow, wallet_deposit_key) is None:
                s.add(DepositRow(key=wallet_deposit_key, client=row.client, amount=row.deposit,
                                 kind="wallet", tx_hash=None, created_at=time.time()))
            row.phase, row.updated_at = OPEN, time.time()
            return True

        return self._retrying(work)

    def set_channel(self, cid: str, **values: Any) -> None:
        with self._tx() as s:
            s.execute(update(ChannelRow).where(ChannelRow.cid == cid)
                      .values(updated_at=time.time(), **values))

    async def save_checkpoint(
        self, cid: str, channel_values: dict[str, Any], request_key: str | None,
        request_values: dict[str, Any] | None, *, claim: Claim | None = None,
        log: Sequence[tuple[int, int, bytes]] = (),
        others: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """One checkpoint: the channel's sealed state, the new entries of its log of consumed
        calls (``log``: number, newest, bytes; the sealed state names them) and its
        request's progress, atomically; ``others``: the progress of the channel's earlier
        requests (key, values) in the same transaction (a held DELIVERED checkpoint
        written with the next one).

        With ``claim``, the request's row is created here (with ``request_values``) and its
        nonce remembered, all or nothing: :class:`ClaimTaken` if either was there before.
        """
        now = time.time()
        statements = [_update(ChannelRow, "cid", cid, {**channel_values, "updated_at": now})]
        statements += [_insert(ConsumedRow, {"cid": cid, "seq": seq, "newest": newest,
                                             "entry": entry})
                       for seq, newest, entry in log]
        statements += [_update(RequestRow, "key", key, {**values, "updated_at": now})
                       for key, values in others]
        if claim is not None:
            statements[:0] = self._claim_statements(claim, now, request_values or {},
                                                    unless_present=False)
            if claim.nonce is not None:
                statements[:0] = _prune_nonces(now, claim.nonce_keep)
            try:
                await self._submit(statements)
            except IntegrityError:
                raise ClaimTaken(claim.key) from None
            claim.recorded = True
            return
        if request_key is not None and request_values:
            statements.append(
                _update(RequestRow, "key", request_key, {**request_values, "updated_at": now}))
        await self._submit(statements)

    def settle_channel(
        self, cid: str, *, client_payout: int, provider_payout: int, tx_hash: str | None
    ) -> bool:
        """Record the on-chain payout once; a pool channel's client payout is credited back.

        A FAILED channel settles too (it opened after all, after the decision: a reorg),
        crediting no one: its deposit came back to the client's balance when it FAILED,
        so what its settlement pays back refills the pool the open had drawn from."""

        def work(s: Session) -> bool:
            row = s.get(ChannelRow, cid)
            if row is None or row.phase == SETTLED:
                return False
            if row.phase not in FUNDED and row.phase != FAILED:
                raise ValueError(f"channel {cid} is {row.phase}, not funded")
            if row.funding == "pool" and client_payout and row.phase != FAILED:
                self._add(s, row.client, client_payout)
            done = s.execute(
                update(ChannelRow)
                .where(ChannelRow.cid == cid, ChannelRow.phase == row.phase)
                .values(phase=SETTLED, client_payout=str(client_payout),
                        provider_payout=str(provider_payout), settle_tx=tx_hash,
                        request_key=None, updated_at=time.time())
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise _Conflict
            return True

        return self._retrying(work)

    def channel(self, cid: str) -> Channel | None:
        with self._read() as s:
            row = s.get(ChannelRow, cid)
            return None if row is None else channel_record(row)

    def consumed_log(self, cid: str) -> dict[int, bytes]:
        """The stored entries of ``cid``'s log of consumed calls, by number (what the vault
        enclave's ``restore`` takes with the channel's record)."""
        with self._read() as s:
            rows = s.execute(select(ConsumedRow.seq, ConsumedRow.entry)
                             .where(ConsumedRow.cid == cid))
            return {int(seq): bytes(entry) for seq, entry in rows}

    def channels(
        self, *, client: str | None = None, provider: str | None = None,
        phases: tuple[str, ...] | None = None,
    ) -> list[Channel]:
        query = select(ChannelRow).order_by(ChannelRow.created_at)
        if client is not None:
            query = query.where(ChannelRow.client == address_key(client))
        if provider is not None:
            query = query.where(ChannelRow.provider == address_key(provider))
        if phases is not None:
            query = query.where(ChannelRow.phase.in_(phases))
        with self._read() as s:
            return [channel_record(r) for r in s.scalars(query)]

    # -- requests ----------------------------------------------------------------------

    def calls(self, *, since: float | None = None, until: float | None = None,
              client: str | None = None, provider: str | None = None,
              status: str | None = None, key: str | None = None, limit: int = 100
              ) -> list[dict[str, Any]]:
        """Paid calls, newest first, with the provider of their channel (read-only: the
        operator API). ``status`` is the call's outcome once it has one, else its state;
        nothing sealed (result, secret, answer) is read."""
        query = (select(RequestRow.key, RequestRow.client, RequestRow.state,
                        RequestRow.outcome, RequestRow.reason, RequestRow.url,
                        RequestRow.method, RequestRow.channel_id, RequestRow.request_id,
                        RequestRow.amount, RequestRow.transaction, RequestRow.created_at,
                        RequestRow.updated_at, ChannelRow.provider)
                 .outerjoin(ChannelRow, ChannelRow.cid == RequestRow.channel_id))
        if key is not None:
            query = query.where(RequestRow.key == key)
        if since is not None:
            query = query.where(RequestRow.created_at >= since)
        if until is not None:
            query = query.where(RequestRow.created_at < until)
        if client is not None:
            query = query.where(RequestRow.client == address_key(client))
        if provider is not None:
            query = query.where(ChannelRow.provider == address_key(provider))
        if status is not None:
            query = query.where(func.coalesce(RequestRow.outcome, RequestRow.state) == status)
        query = query.order_by(RequestRow.created_at.desc()).limit(limit)
        with self._read() as s:
            return [dict(row._mapping) for row in s.execute(query)]

    async def claim_request(self, claim: Claim) -> tuple[bool, Request]:
        """Take ``claim.key`` for a new call, in a write of its own; ``(False, existing)``
        if it was taken before.

        The call's signature nonce, if any, is remembered in the same write
        (:class:`ReplayedNonce`, and nothing written, if it was seen before).
        """
        now = time.time()
        record = Request(key=claim.key, client=address_key(claim.client),
                         fingerprint=claim.fingerprint, state=RECEIVED, outcome=None,
                         reason=None, retryable=False, url=claim.url, method=claim.method,
                         channel_id=None, request_id=None, amount=None, sealed_result=None,
                         secret=None, answer=None, transaction=None, updated_at=now)
        prune = [] if claim.nonce is None else _prune_nonces(now, claim.nonce_keep)
        try:
            *_, claimed = await self._submit(
                [*prune, *self._claim_statements(claim, now, {"state": RECEIVED},
                                                 unless_present=True)])
        except IntegrityError:
            raise ReplayedNonce(claim.nonce) from None
        if not claimed:
            existing = await asyncio.to_thread(self.request, claim.key)
            assert existing is not None
            return False, existing
        return True, record

    @staticmethod
    def _claim_statements(claim: Claim, now: float, values: dict[str, Any], *,
                          unless_present: bool) -> list[Statement]:
        """The nonce (if any) and the new call's row; with ``unless_present``, a key
        recorded before inserts nothing instead of raising."""
        row = _insert(RequestRow, {
            "key": claim.key, "client": address_key(claim.client), "fingerprint": claim.fingerprint,
            "url": claim.url, "method": claim.method, "retryable": False, "created_at": now,
            "updated_at": now, **values}, unless_present="key" if unless_present else None)
        return [row] if claim.nonce is None else [_nonce(claim.client, claim.nonce, now), row]

    def restart_request(self, key: str, expected_state: str) -> bool:
        """Take over a call that paid nothing (``received``, or a retryable failure)."""
        values = dict(state=RECEIVED, outcome=None, reason=None, retryable=False,
                      updated_at=time.time())
        [changed] = self._writes.submit(
            [_update(RequestRow, "key", key, values, states=(expected_state,))]).result()
        return changed == 1

    async def finish_request(self, key: str, *, from_states: tuple[str, ...], **values: Any
                             ) -> bool:
        """Set the final outcome once (compare-and-set on the state)."""
        values = dict(values, state=DONE, updated_at=time.time())
        [changed] = await self._submit(
            [_update(RequestRow, "key", key, values, states=from_states)])
        return changed == 1

    def request(self, key: str) -> Request | None:
        with self._read() as s:
            row = s.get(RequestRow, key)
            return None if row is None else request_record(row)

    def requests(self, states: tuple[str, ...]) -> list[Request]:
        with self._read() as s:
            rows = s.scalars(select(RequestRow).where(RequestRow.state.in_(states)))
            return [request_record(r) for r in rows]

    # -- withdrawals -------------------------------------------------------------------

    def claim_withdrawal(
        self, key: str, *, client: str, recipient: str, amount: int, on_chain: bool = False
    ) -> tuple[bool, Withdrawal]:
        """Debit ``amount`` and record the withdrawal, once per ``key``; a withdrawal that
        failed (nothing moved) under ``key`` is debited and recorded again (``True``): the
        order it carries takes effect at most once on-chain, so sending it again is safe.

        ``on_chain``: a withdrawal the chain already made (the client's own
        ``withdrawFromPool``): recorded whatever the store holds, even below zero — the
        store is short only by debits of opens in flight, and when those are written off
        their debits come back and the balance equals the chain's again (never refusing it
        here is what keeps the books from showing money the chain does not hold)."""

        def work(s: Session) -> tuple[bool, Withdrawal]:
            row = s.get(WithdrawalRow, key)
            if row is not None and row.state == TX_FAILED:
                self._add(s, row.client, -int(row.amount))
                row.state, row.tx_hash, row.updated_at = TX_SUBMITTED, None, time.time()
                s.flush()
                return True, withdrawal_record(row)
            if row is not None:
                return False, withdrawal_record(row)
            now = time.time()
            self._add(s, client, -amount, floor=not on_chain)
            row = WithdrawalRow(key=key, client=address_key(client), recipient=recipient,
                                amount=str(amount), state=TX_SUBMITTED, created_at=now,
                                updated_at=now)
            s.add(row)
            s.flush()
            return True, withdrawal_record(row)

        return self._retrying(work)

    def finish_withdrawal(self, key: str, *, ok: bool, tx_hash: str | None) -> bool:
        """Confirm, or fail and refund; once."""

        def work(s: Session) -> bool:
            row = s.get(WithdrawalRow, key)
            if row is None or row.state != TX_SUBMITTED:
                return False
            if not ok:
                self._add(s, row.client, int(row.amount))
            row.state = TX_CONFIRMED if ok else TX_FAILED
            row.tx_hash, row.updated_at = tx_hash, time.time()
            return True

        return self._retrying(work)

    def pending_withdrawals(self) -> list[Withdrawal]:
        with self._read() as s:
            rows = s.scalars(select(WithdrawalRow).where(WithdrawalRow.state == TX_SUBMITTED))
            return [withdrawal_record(r) for r in rows]

    def withdrawal(self, key: str) -> Withdrawal | None:
        with self._read() as s:
            row = s.get(WithdrawalRow, key)
            return None if row is None else withdrawal_record(row)

    # -- transactions --------------------------------------------------------------------

    def journal_tx(
        self, key: str, *, kind: str, ref: str, tx_hash: str, raw: bytes, nonce: int
    ) -> None:
        """Write a signed transaction before it is broadcast (a re-signed one replaces it)."""
        now = time.time()
        with self._tx() as s:
            row = s.get(TxRow, key)
            if row is None:
                s.add(TxRow(key=key, kind=kind, ref=ref, tx_hash=tx_hash, raw=raw, nonce=nonce,
                            state=TX_SUBMITTED, created_at=now, updated_at=now))
            else:
                row.tx_hash, row.raw, row.nonce, row.state, row.updated_at = (
                    tx_hash, raw, nonce, TX_SUBMITTED, now)

    def finish_tx(self, key: str, state: str) -> None:
        with self._tx() as s:
            s.execute(update(TxRow).where(TxRow.key == key)
                      .values(state=state, updated_at=time.time()))

    def open_tx(self, cid: str) -> Transaction | None:
        """The journaled transaction that opens channel ``cid``, alone or in a batch."""
        with self._read() as s:
            rows = s.scalars(select(TxRow).where(TxRow.kind == "open",
                                                 TxRow.ref.contains(cid.lower())))
            return next((transaction_record(r) for r in rows
                         if cid.lower() in r.ref.split(",")), None)

    def tx(self, key: str) -> Transaction | None:
        with self._read() as s:
            row = s.get(TxRow, key)
            return None if row is None else transaction_record(row)

    def txs(self, *, states: tuple[str, ...] = (TX_SUBMITTED,)) -> list[Transaction]:
        with self._read() as s:
            rows = s.scalars(select(TxRow).where(TxRow.state.in_(states)))
            return [transaction_record(r) for r in rows]

    # -- conservation --------------------------------------------------------------------

    def totals(self, client: str | None = None) -> Totals:
        """The conservation terms, for one client or the whole vault."""
        who = None if client is None else address_key(client)
        with self._read() as s:
            def rows(model: Any) -> list[Any]:
                query = select(model)
                if who is not None:
                    query = query.where(model.client == who) if model is not AccountRow \
                        else query.where(AccountRow.address == who)
                return list(s.scalars(query))

            deposits = sum(int(d.amount) for d in rows(DepositRow))
            balances = sum(int(a.balance) for a in rows(AccountRow))
            withdrawn = sum(int(w.amount) for w in rows(WithdrawalRow) if w.state != TX_FAILED)
            in_channels = paid = 0
            for c in rows(ChannelRow):
                if c.phase == OPENING and c.funding == "pool":
                    in_channels += int(c.deposit)
                elif c.phase in FUNDED:
                    in_channels += int(c.deposit) - int(c.provider_balance)
                    paid += int(c.provider_balance)
                elif c.phase == SETTLED:
                    paid += int(c.provider_payout or 0)
                    if c.funding == "wallet":
                        withdrawn += int(c.client_payout or 0)
        return Totals(deposits, balances, in_channels, paid, withdrawn)


_META = MetaRow.__tablename__
_NONCES = NonceRow.__tablename__
#: A meta row written whatever was there (valid on SQLite and PostgreSQL alike).
_META_UPSERT_SQL = (f'INSERT INTO "{_META}" ("key", "value") VALUES (:key, :value) '
                    'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"')
#: The meta rows whose key starts with a prefix: the LIKE pattern (:func:`_like_prefix`,
#: which an index may serve) and the prefix itself, compared exactly (SQLite's LIKE
#: ignores ASCII case: a journal's compaction must delete its own rows only).
_META_DELETE_PREFIX_SQL = (f'DELETE FROM "{_META}" WHERE "key" LIKE :pattern ESCAPE \'/\' '
                           'AND substr("key", 1, :size) = :prefix')
_META_DELETE_SQL = f'DELETE FROM "{_META}" WHERE "key" = :key'
#: A nonce recorded, unless it is already (then it stays as it is).
_NONCE_ONCE_SQL = (f'INSERT INTO "{_NONCES}" ("client", "nonce", "seen_at") '
                   "VALUES (:client, :nonce, :seen_at) ON CONFLICT DO NOTHING")
_NONCE_SEEN_SQL = f'SELECT 1 FROM "{_NONCES}" WHERE "client" = :client AND "nonce" = :nonce'
_NONCES_ALL_SQL = f'SELECT "client", "nonce", "seen_at" FROM "{_NONCES}" ORDER BY "seen_at"'


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character ``/``) of the keys that start with ``prefix``."""
    return prefix.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...], unless_present: str | None) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table}" ({names}) VALUES (' + ", ".join(f":{c}" for c in columns) + ")"
    return sql if unless_present is None else sql + f' ON CONFLICT ("{unless_present}") DO NOTHING'


def _insert(model: Any, values: dict[str, Any], *, unless_present: str | None = None
            ) -> Statement:
    """``INSERT INTO model (values)`` as plain SQL: a duplicate key raises
    :class:`IntegrityError` as the ORM would, or, with ``unless_present`` (the key
    column), inserts nothing (row count 0)."""
    return _insert_sql(model.__tablename__, tuple(values), unless_present), values


def _nonce(client: str, nonce: str, now: float) -> Statement:
    return _insert(NonceRow, {"client": address_key(client), "nonce": nonce, "seen_at": now})


_FORGET_NONCES = f'DELETE FROM "{NonceRow.__tablename__}" WHERE "seen_at" < :before'


def _prune_nonces(now: float, keep: float) -> list[Statement]:
    """Now and then (one call in 64, by the clock), the statement that forgets the nonces
    seen more than ``keep`` seconds before ``now``: run in the write that remembers a new
    nonce, not in a transaction (and a commit, and a thread) of its own. A nonce that old
    is refused anyway (its signature is past the auth window), so forgetting it never
    lets a replay through; the write that carries the pruning is undone with it."""
    return [(_FORGET_NONCES, {"before": now - keep})] if int(now * 1000) % 64 == 0 else []


@functools.cache
def _update_sql(table: str, columns: tuple[str, ...], key: str, states: int) -> str:
    # Quoted: some column names ("transaction") are SQL keywords.
    sets = ", ".join(f'"{c}" = :{c}' for c in columns)
    where = f'"{key}" = :_key'
    if states:
        where += ' AND "state" IN (' + ", ".join(f":_state{i}" for i in range(states)) + ")"
    return f'UPDATE "{table}" SET {sets} WHERE {where}'


def _update(model: Any, key: str, value: str, values: dict[str, Any],
            states: tuple[str, ...] = ()) -> Statement:
    """``UPDATE model SET values WHERE key = value [AND state IN states]`` as plain SQL.

    The paid-request path writes a few of these per request; compiling the
    equivalent ORM or Core update would cost several times more CPU than
    executing it.
    """
    sql = _update_sql(model.__tablename__, tuple(values), key, len(states))
    params = {**values, "_key": value}
    if states:
        params.update({f"_state{i}": st for i, st in enumerate(states)})
    return sql, params
