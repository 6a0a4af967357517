"""SQLite the way a402's stores use it: durable engines, and group commit.

:func:`make_engine`: WAL with ``synchronous=FULL`` (a committed record
survives a power cut, not just a crash), ``BEGIN IMMEDIATE`` (a
read-modify-write transaction takes the write lock up front, so it never
fails halfway with ``SQLITE_BUSY_SNAPSHOT``; :func:`readers` sessions read a
snapshot instead and take no lock), and the driver's own
transaction handling switched off so SAVEPOINTs work. Other URLs (PostgreSQL)
get a plain pooled engine.

With ``synchronous=FULL`` every SQLite COMMIT waits for the disk, and SQLite
lets one writer in at a time: the others spin in its busy handler, which
sleeps up to 100 ms between tries. A paid request writes a checkpoint before
each protocol message it sends, so fifty channels committing one by one spend
their time queueing for the lock and the disk instead of paying.

:class:`GroupCommit` runs writes on one writer thread instead. It takes every
write waiting at that moment, runs each in a SAVEPOINT of one transaction (so
a write that raises is undone alone and the others stand), commits once, and
only then answers each caller: a caller still returns after its own write is
durable, exactly as with a transaction of its own, but the fsync is shared.

Writes that need a transaction of their own take
:meth:`GroupCommit.exclusive`, which holds the same mutex as the writer
thread, so nothing ever waits in SQLite's busy handler. :func:`writes` gives a
store either, behind one interface: group commit on SQLite, and on PostgreSQL
(many writers at once, its own commit batching) a transaction per write.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

_STOP = object()
_READ_OPTION = "a402_sqlite_read"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync and ``BEGIN IMMEDIATE``."""
    if not _is_sqlite(url):
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        read = connection.get_execution_options().get(_READ_OPTION)
        connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def readers(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading: on SQLite a deferred BEGIN (a WAL snapshot that neither
    takes nor waits for the write lock); elsewhere ordinary sessions."""
    return sessionmaker(engine.execution_options(**{_READ_OPTION: True}),
                        expire_on_commit=False)


class Writes(Protocol):
    """How a store writes: ``run(work)`` durable on return, ``exclusive()`` for a
    transaction of its own, ``close()`` when the store closes."""

    def run(self, work: Callable[[Session], T]) -> T: ...

    def exclusive(self) -> AbstractContextManager[Session]: ...

    def close(self) -> None: ...


def writes(url: str, sessions: sessionmaker[Session], *, name: str) -> Writes:
    """Group commit for a SQLite ``url``; a transaction per write for any other."""
    return GroupCommit(sessions, name=name) if _is_sqlite(url) else _TransactionPerWrite(sessions)


class _TransactionPerWrite:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def run(self, work: Callable[[Session], T]) -> T:
        with self._sessions.begin() as session:
            return work(session)

    def exclusive(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    def close(self) -> None:
        pass


class GroupCommit:
    """A writer thread committing queued ``work(session)`` calls in batches."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = 256,
                 name: str = "group-commit") -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in the next batch; its result once the batch is committed.

        ``work`` must use only the session it is given (it runs on the writer
        thread, inside a SAVEPOINT); an exception it raises undoes its own
        changes and is raised here.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("a batched write cannot wait for another batched write")
        done: Future[T] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.put((work, done))
        return done.result()

    @contextmanager
    def exclusive(self) -> Iterator[Session]:
        """A transaction of its own, between batches."""
        with self._mutex, self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        """Commit what is queued, then stop; later writes are refused."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:  # the last item ever queued: finish this batch, then stop
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._commit(batch)  # type: ignore[arg-type]

    def _commit(self, batch: list[tuple[Callable[[Session], object], Future[object]]]) -> None:
        outcomes: list[tuple[Future[object], bool, object]] = []
        try:
            with self._mutex, self._sessions.begin() as session:
                for work, done in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((done, True, work(session)))
                    except Exception as e:
                        outcomes.append((done, False, e))
        except Exception as e:  # the COMMIT failed: nothing of this batch is durable
            for _, done in batch:
                done.set_exception(e)
            return
        for done, ok, value in outcomes:
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)  # type: ignore[arg-type]
