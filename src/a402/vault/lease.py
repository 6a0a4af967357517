"""One active vault process per shard: a lease row in PostgreSQL, renewed, fenced, taken over.

Several ``a402 vault`` processes may run over one PostgreSQL database (replicas of
one vault: same database, same enclave identity, same gas key). Exactly one of
them, the *active*, drives channels; the others are *standbys* that answer
``503 vault_standby`` and wait. Which one is active is a row of
``a402_vault_lease`` per shard (this version has one shard, ``vault``: the whole
vault): its ``holder``, a fencing ``token``, and ``expires_at`` on the
database's own clock.

* **Take-over.** A standby polls; it takes the lease with one ``UPDATE … SET
  token = token + 1 … WHERE expires_at < now()``. Two standbys racing for it are
  serialized by the row lock, and the second one's ``WHERE`` is evaluated again
  on the row the first one wrote (no longer expired): one wins, the other keeps
  waiting. The token only grows.
* **Renewal.** The active renews every ``renew_every`` seconds (``expires_at =
  now() + ttl``, only while the token is still its own) from a thread of its own,
  so a busy event loop does not lose the lease. A renewal that finds another
  token, or that could not be made for a whole ``ttl``, means the lease is lost:
  ``on_lost`` runs (``a402 vault`` exits; its supervisor restarts it as a standby,
  since its in-memory channel state is no longer the truth).
* **Fencing.** Every write transaction of the active checks, first and inside the
  same transaction, that the lease row still carries its token (``SELECT … FOR
  SHARE``: the row stays share-locked until the transaction ends). A take-over
  needs the row's exclusive lock, so it waits for every write already past its
  check, and after it commits every later check fails (:class:`LeaseLost`,
  nothing written). So a process paused (SIGSTOP, a long GC, a partition) and
  resumed after another took over cannot write: not a checkpoint, not a ledger, not
  a journaled transaction — and since the vault sends nothing (no message, no
  signature, no transaction) before the write that records it is durable, it
  cannot move money either. The new active reads the database only after its
  take-over committed, so it sees every write of the old one.
* **Answering and sending.** The lease is valid *here* only while less than
  ``ttl`` minus a margin has passed (monotonic clock) since the last renewal was
  sent; past that, the process answers no ``/v1`` call (503), even one computed
  earlier, and sends no frame to a provider (:class:`~a402.vault.tunnel.ProviderTunnel`'s
  ``may_send``) — so a resumed old active neither answers nor sends even the
  message it had checkpointed just before it was paused (:func:`not_serving_answer`:
  ``vault_standby`` if the call never ran here, ``answer_dropped`` if its answer was
  withheld: that call may have been paid) (the new active sends it,
  from the same checkpoint). What it cannot stop is a transaction it journaled
  before the pause and broadcasts after: the same signed transaction (same nonce,
  same hash) that the new active sends again from the journal, so it lands once.

A stalled process's open transaction would keep the row share-locked and block
the take-over: the lease's connections set ``idle_in_transaction_session_timeout``
(so the server ends such a transaction), and the take-over itself gives up a
round after ``lock_timeout`` rather than hang.

SQLite serves one process only (an exclusive file lock, :meth:`VaultStore.lock_for`):
no lease there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from a402.wire import vault_api as api

from .store import VaultStore

log = logging.getLogger("a402.vault.lease")

#: The one shard of this version: the whole vault.
WHOLE_VAULT = "vault"

#: How long the server lets a transaction of a vault process sit idle (ms): a paused
#: process cannot hold the lease row's share lock longer than that.
IDLE_IN_TRANSACTION_MS = 5000

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


def not_serving_answer(active: str | None, *, dropped: bool) -> dict[str, Any]:
    """The 503 body of a replica that does not serve (``active``: the active replica's URL
    if known). ``dropped``: the call ran here and its answer was withheld because the lease
    lapsed meanwhile. Then it may have been paid (σ_U may be out, the answer recorded), so
    the answer must not say "nothing was done": ``answer_dropped``, which a client
    takes as "may have been paid" and asks again with the same idempotency key (the
    recorded answer, never a second payment). Otherwise ``vault_standby``: the call never
    reached the vault, nothing was done."""
    if dropped:
        return {"error": api.ANSWER_DROPPED, "active": active, "message": (
            "this vault replica lost its lease while it ran the call, so its answer was "
            "withheld: the call may have been paid; ask the active replica (or this one "
            "again) with the same idempotency key for its answer")}
    return {"error": api.VAULT_STANDBY, "active": active, "message": (
        "this vault replica is not the active one: nothing was done here; call the active "
        "replica, or again shortly")}


class LeaseLost(Exception):
    """This process no longer holds the lease: the write was refused, nothing was written."""


@dataclass(frozen=True)
class LeaseHolder:
    """The lease as stored: who holds it, its token, until when, where it answers."""

    shard: str
    holder: str
    token: int
    expires_at: float
    url: str | None
    now: float

    @property
    def expired(self) -> bool:
        return self.expires_at <= self.now

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "holder": self.holder, "token": self.token,
                "url": self.url, "expiresIn": round(self.expires_at - self.now, 3)}


def holder_id() -> str:
    """A process's holder id: host, pid, and a random part (a restarted process with a
    recycled pid is still someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """This process's claim on one shard of the vault in ``store`` (PostgreSQL)."""

    def __init__(self, store: VaultStore, *, holder: str | None = None,
                 shard: str = WHOLE_VAULT, ttl: float = 3.0, renew_every: float = 1.0,
                 url: str | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        if store.engine.dialect.name == "sqlite":
            raise ValueError("SQLite serves one vault process (a file lock); the lease "
                             "needs PostgreSQL")
        if not 0 < renew_every < ttl / 2:
            raise ValueError("renew the lease at least twice per ttl")
        self.store = store
        self.holder = holder or holder_id()
        self.shard = shard
        self.ttl = ttl
        self.renew_every = renew_every
        self.url = url
        #: Called once (from the renewal thread or a refused write) when the lease is lost.
        self.on_lost = on_lost
        #: The token this process holds (None: standby).
        self.token: int | None = None
        self._renewed_at = 0.0  # monotonic time the last successful renewal was sent
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._engine = store.engine
        event.listen(self._engine, "connect", _limit_idle_transactions)
        self._engine.dispose()  # connections made before now get the limit too
        with self._engine.begin() as c:
            c.execute(text(
                "INSERT INTO a402_vault_lease (shard, holder, token, expires_at, url, "
                "acquired_at) VALUES (:shard, '', 0, 0, NULL, 0) ON CONFLICT (shard) "
                "DO NOTHING"), {"shard": shard})

    # ------------------------------------------------------------------ reading

    def current(self) -> LeaseHolder:
        with self._engine.connect() as c:
            row = c.execute(text(
                f"SELECT holder, token, expires_at, url, {_NOW} FROM a402_vault_lease "
                "WHERE shard = :shard"), {"shard": self.shard}).one()
        return LeaseHolder(self.shard, row[0], int(row[1]), float(row[2]), row[3],
                           float(row[4]))

    def not_serving_answer(self, *, dropped: bool = False) -> dict[str, Any]:
        """:func:`not_serving_answer` naming the active replica if another holds the lease
        unexpired (none if the lease cannot be read: the database is away, still a
        standby)."""
        active: str | None = None
        try:
            holder = self.current()
            active = None if holder.expired or holder.holder == self.holder else holder.url
        except Exception:
            log.warning("reading the lease failed", exc_info=True)
        return not_serving_answer(active, dropped=dropped)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def serving(self) -> bool:
        """Whether this process may answer as the active one now: it holds the lease, has
        not lost it, and renewed it less than ``ttl`` minus a margin ago (the database
        dates the expiry from after the renewal was sent, so this side errs early)."""
        return (self.token is not None and not self._lost.is_set()
                and time.monotonic() - self._renewed_at < self.ttl * 0.8)

    # ---------------------------------------------------------------- taking it

    def try_acquire(self) -> bool:
        """Take the lease if it expired (one round); True if this process now holds it."""
        if self.token is not None:
            return True
        sent = time.monotonic()
        try:
            with self._engine.begin() as c:
                c.execute(text("SET LOCAL lock_timeout = '1s'"))
                token = c.execute(text(
                    f"UPDATE a402_vault_lease SET holder = :holder, token = token + 1, "
                    f"expires_at = {_NOW} + :ttl, url = :url, acquired_at = {_NOW} "
                    f"WHERE shard = :shard AND expires_at < {_NOW} RETURNING token"),
                    {"holder": self.holder, "ttl": self.ttl, "url": self.url,
                     "shard": self.shard}).scalar()
        except DBAPIError as e:  # a lock timeout, or the database is away: not this round
            log.info("lease %s not taken this round: %s", self.shard, e.orig)
            return False
        if token is None:
            return False
        self.token, self._renewed_at = int(token), sent
        log.warning("lease %s taken by %s with token %d", self.shard, self.holder, token)
        return True

    def acquire(self, poll: float = 0.25, stop: threading.Event | None = None) -> bool:
        """Wait until this process holds the lease (True), or ``stop`` is set (False)."""
        while not self.try_acquire():
            if stop is not None and stop.wait(poll):
                return False
            if stop is None:
                time.sleep(poll)
        return True

    # ---------------------------------------------------------------- keeping it

    def renew(self) -> bool:
        """Push the expiry forward while the token is still ours; False if it is not
        (the lease was lost). Raises the database's error if it could not ask."""
        assert self.token is not None
        sent = time.monotonic()
        with self._engine.begin() as c:
            c.execute(text("SET LOCAL lock_timeout = '1s'"))
            done = c.execute(text(
                f"UPDATE a402_vault_lease SET expires_at = {_NOW} + :ttl "
                "WHERE shard = :shard AND holder = :holder AND token = :token"),
                {"ttl": self.ttl, "shard": self.shard, "holder": self.holder,
                 "token": self.token}).rowcount
        if done != 1:
            return False
        self._renewed_at = sent
        return True

    def keep(self) -> None:
        """Renew from a thread of its own until :meth:`release` (or the lease is lost)."""
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name=f"lease-{self.shard}",
                                            daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                if not self.renew():
                    self._lose("another process took the lease over")
                    return
            except DBAPIError as e:
                if time.monotonic() - self._renewed_at >= self.ttl:
                    self._lose(f"the lease could not be renewed for {self.ttl} s: {e.orig}")
                    return
                log.warning("renewing lease %s failed (will retry): %s", self.shard, e.orig)

    def _lose(self, why: str) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        log.critical("lease %s lost by %s (token %s): %s", self.shard, self.holder,
                     self.token, why)
        if self.on_lost is not None:
            self.on_lost(why)

    def release(self) -> None:
        """Stop renewing and let the lease expire now (a clean stop: a standby takes over
        at its next poll instead of after ``ttl``)."""
        self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(5)
        if self.token is None or self._lost.is_set():
            return
        with contextlib.suppress(DBAPIError), self._engine.begin() as c:
            c.execute(text("UPDATE a402_vault_lease SET expires_at = 0 WHERE shard = :shard "
                           "AND holder = :holder AND token = :token"),
                      {"shard": self.shard, "holder": self.holder, "token": self.token})
        self._lost.set()

    # ------------------------------------------------------------------ fencing

    def fence(self, session: Session) -> None:
        """First statement of every write transaction: the row still carries our token
        (share-locked until the transaction ends), else :class:`LeaseLost`."""
        row = session.execute(text(
            "SELECT holder, token FROM a402_vault_lease WHERE shard = :shard FOR SHARE"),
            {"shard": self.shard}).first()
        if self.token is None or row is None or (row[0], int(row[1])) != (
                self.holder, self.token):
            why = f"lease {self.shard} is held by {row[0] if row else 'no one'} " \
                  f"(token {row[1] if row else '-'}), not by this process"
            self._lose(why)
            raise LeaseLost(why)

    def fence_store(self) -> None:
        """Fence every write of the store from now on (call once the lease is taken)."""
        self.store.fence_writes(self.fence)


def _limit_idle_transactions(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
    cursor.close()
    dbapi_connection.commit()
