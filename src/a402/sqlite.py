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

The paid-request path writes a few rows per request, and there an ORM
session costs a hundred times more CPU than SQLite itself: a session, its
SAVEPOINT and its flush take about 0.6 ms, the statement about 5 µs. Such
writes are therefore plain SQL (:data:`Statement`: text with ``:name``
parameters, valid on SQLite and PostgreSQL alike), which the writer thread
runs on the driver's connection: first all of a batch's writes straight in its
transaction, and only if one of them fails, the whole batch again with each write
in a SAVEPOINT of its own (the same outcome: the failing write undone alone, the
others committed).
:meth:`Writes.execute` awaits them from an event loop without parking a
thread for every write in flight: the writes a loop makes in one pass of its
callbacks reach the writer as one queue entry (one wake-up of the writer, one
batch), and the writer hands the results back through one
``call_soon_threadsafe`` per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, TextClause, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

#: One SQL statement with ``:name`` parameters.
Statement = tuple[str, Mapping[str, Any]]

_STOP = object()
_READ_OPTION = "a402_sqlite_read"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


#: How long a new connection waits for a database file others are switching to WAL.
WAL_PATIENCE = 30.0


def use_wal(dbapi_connection: sqlite3.Connection, *, patience: float = WAL_PATIENCE) -> None:
    """Put the database file in WAL mode, waiting out other connections doing the same.

    WAL is a property of the file, and switching a new file to it takes an exclusive
    lock for which SQLite does not call its busy handler: of several processes opening
    one new file together, all but one would fail at once with "database is locked",
    whatever their timeout. So a locked switch is retried until ``patience`` runs out.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL").close()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync and ``BEGIN IMMEDIATE``."""
    if not _is_sqlite(url):
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        use_wal(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=FULL").close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        read = connection.get_execution_options().get(_READ_OPTION)
        connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


class Plain:
    """Plain SQL in an open SQLAlchemy transaction ``conn``, run on the driver's own
    connection when it is SQLite (the paid path: SQLAlchemy's per-statement work costs
    several times SQLite's own), through SQLAlchemy otherwise. Statements are text with
    ``:name`` parameters, valid on both; rows are tuples in the order selected."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        driver = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        self.driver: sqlite3.Connection | None = driver

    def one(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if self.driver is not None:
            cursor = self.driver.execute(sql, dict(params))
            try:
                row = cursor.fetchone()
            finally:
                cursor.close()
            return None if row is None else tuple(row)
        found = self.conn.execute(_text(sql), params).first()
        return None if found is None else tuple(found)

    def run(self, sql: str, params: Mapping[str, Any]) -> int:
        """Execute; the row count."""
        if self.driver is not None:
            cursor = self.driver.execute(sql, dict(params))
            count = cursor.rowcount
            cursor.close()
            return int(count)
        return int(self.conn.execute(_text(sql), params).rowcount)


def readers(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading: on SQLite a deferred BEGIN (a WAL snapshot that neither
    takes nor waits for the write lock); elsewhere ordinary sessions."""
    return sessionmaker(engine.execution_options(**{_READ_OPTION: True}),
                        expire_on_commit=False)


class Writes(Protocol):
    """How a store writes: ``run(work)`` durable on return, ``submit(statements)`` for
    plain SQL (one transaction; the future holds each statement's row count once it is
    durable), ``exclusive()`` for a transaction of its own, ``close()`` when the store
    closes."""

    def run(self, work: Callable[[Session], T]) -> T: ...

    def submit(self, statements: Sequence[Statement]) -> Future[list[int]]: ...

    async def execute(self, statements: Sequence[Statement]) -> list[int]:
        """:meth:`submit`, awaited."""
        ...

    def exclusive(self) -> AbstractContextManager[Session]: ...

    def close(self) -> None: ...

    def fence_with(self, fence: Callable[[Session], None] | None) -> None:
        """Run ``fence(session)`` first in every write transaction (it raises to refuse the
        transaction): a lease's fencing check (:mod:`a402.vault.lease`). PostgreSQL only."""
        ...


def writes(url: str, sessions: sessionmaker[Session], *, name: str) -> Writes:
    """Group commit for a SQLite ``url``; a transaction per write for any other."""
    return GroupCommit(sessions, name=name) if _is_sqlite(url) else _TransactionPerWrite(sessions)


class _TransactionPerWrite:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="store-write")
        self._fence: Callable[[Session], None] | None = None

    def fence_with(self, fence: Callable[[Session], None] | None) -> None:
        self._fence = fence

    @contextmanager
    def _begin(self) -> Iterator[Session]:
        """A write transaction, its fence (if any) checked first, inside it: a fence that
        raises leaves nothing written."""
        with self._sessions.begin() as session:
            if self._fence is not None:
                self._fence(session)
            yield session

    def run(self, work: Callable[[Session], T]) -> T:
        with self._begin() as session:
            return work(session)

    def submit(self, statements: Sequence[Statement]) -> Future[list[int]]:
        return self._threads.submit(self._execute, statements)

    async def execute(self, statements: Sequence[Statement]) -> list[int]:
        return await asyncio.wrap_future(self.submit(statements))

    def _execute(self, statements: Sequence[Statement]) -> list[int]:
        with self._begin() as session:
            return [int(session.execute(_text(sql), params).rowcount)  # type: ignore[attr-defined]
                    for sql, params in statements]

    def exclusive(self) -> AbstractContextManager[Session]:
        return self._begin()

    def close(self) -> None:
        self._threads.shutdown()


@functools.cache
def _text(sql: str) -> TextClause:
    return text(sql)


class GroupCommit:
    """A writer thread committing queued ``work(session)`` calls in batches."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = 256,
                 name: str = "group-commit") -> None:
        engine = sessions.kw.get("bind")
        if not isinstance(engine, Engine):
            raise TypeError("group commit needs sessions bound to an engine")
        self._engine = engine
        self._sessions = sessions
        self._driver: Any = None  # the writer thread's own connection, for plain SQL
        self._cursor: Any = None  # and its one cursor (a cursor per statement costs more)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._closing = threading.Lock()
        self._closed = False
        #: Writes of coroutines not yet handed to the writer, by event loop (:meth:`execute`).
        self._gathering: dict[asyncio.AbstractEventLoop, list[tuple[object, _Done]]] = {}
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
        self._put(work, done)
        return done.result()

    def submit(self, statements: Sequence[Statement]) -> Future[list[int]]:
        """Queue ``statements`` for the next batch (one SAVEPOINT: all or none); the
        future is resolved with their row counts once the batch is committed, or with
        the exception (SQLAlchemy's, e.g. ``IntegrityError``) that undid them."""
        done: Future[list[int]] = Future()
        self._put(statements, done)
        return done

    async def execute(self, statements: Sequence[Statement]) -> list[int]:
        """:meth:`submit` for a coroutine: the same batch, without a thread-safe future.

        The writes an event loop makes in one pass of its callbacks reach the writer
        thread together, in one hand-over at the end of that pass (see :meth:`_gather`),
        not one queue entry (and one wake-up of the writer) each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        gathered = self._gathering.get(loop)
        if gathered is None:
            if self._closed:
                raise RuntimeError("the store is closed")
            gathered = self._gathering[loop] = []
            loop.call_soon(self._hand_over, loop)
        gathered.append((statements, _Awaited(future)))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue the writes ``loop`` gathered since the last hand-over, as one entry.

        Called once per pass of the loop's callbacks that made a write (``call_soon``
        runs it after every callback already scheduled): coroutines woken together (a
        batch's answers, frames that arrived together) put their next writes into one
        entry, which the writer takes whole into its next batch. Nothing changes for
        durability: each write is still answered only after the COMMIT that holds it."""
        gathered = self._gathering.pop(loop, None)
        if not gathered:
            return
        try:
            self._put(gathered, None)
        except RuntimeError as e:  # closed meanwhile: nothing of these was written
            _answer([(done, False, e) for _, done in gathered])

    def _put(self, item: object, done: _Done | None) -> None:
        """Queue one write and its caller's handle, or (``done`` None) a list of
        such pairs gathered on an event loop, which the writer takes whole."""
        with self._closing:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.put(item if done is None else (item, done))

    def fence_with(self, fence: Callable[[Session], None] | None) -> None:
        if fence is not None:
            raise NotImplementedError("SQLite serves one process (a file lock): no lease")

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
        if self._driver is not None:
            self._cursor.close()
            self._driver.close()  # back to the engine's pool, which the store disposes
            self._driver = self._cursor = None

    def _run(self) -> None:
        queued = self._queue
        while True:
            first = queued.get()
            if first is _STOP:
                return
            batch = list(first) if isinstance(first, list) else [first]
            # (empty() first: get_nowait on an empty queue raises, and an exception per
            # batch costs the writer more than the check; only this thread takes items,
            # so a queue not empty here is not empty at get_nowait either)
            while len(batch) < self._max_batch and not queued.empty():  # (never split a list)
                item = queued.get_nowait()
                if item is _STOP:  # the last item ever queued: finish this batch, then stop
                    queued.put(_STOP)
                    break
                if isinstance(item, list):
                    batch.extend(item)
                else:
                    batch.append(item)
            self._commit(batch)  # type: ignore[arg-type]

    def _commit(self, batch: list[tuple[object, _Done]]) -> None:
        outcomes: list[tuple[_Done, bool, object]] = []
        running: list[tuple[object, _Done]] = []
        plain = True
        for item, done in batch:  # (a future cancelled before its batch ran is left out:
            if done.set_running_or_notify_cancel():  # its caller gave up)
                running.append((item, done))
                if plain and callable(item):
                    plain = False
        if not running:
            return
        try:
            with self._mutex:
                if plain:
                    self._commit_statements(running, outcomes)  # type: ignore[arg-type]
                else:
                    self._commit_with_sessions(running, outcomes)
        except Exception as e:  # the COMMIT failed: nothing of this batch is durable
            outcomes = [(done, False, e) for _, done in running if not done.done()]
        _answer(outcomes)

    def _commit_with_sessions(self, batch: list[tuple[object, _Done]],
                              outcomes: list[tuple[_Done, bool, object]]) -> None:
        with self._engine.connect() as connection, connection.begin():
            driver: Any = connection.connection.driver_connection
            cursor = driver.cursor()
            for item, done in batch:
                if callable(item):
                    outcomes.append((done, *_work(connection, item)))
                else:
                    outcomes.append((done, *_statements(cursor, item)))  # type: ignore[arg-type]
            cursor.close()

    def _commit_statements(self, batch: list[tuple[Sequence[Statement], _Done]],
                           outcomes: list[tuple[_Done, bool, object]]) -> None:
        """A batch of plain SQL only (the paid-request path): straight on the driver's
        connection, which the writer keeps, without an engine connection per batch."""
        if self._driver is None:
            driver: Any = self._engine.raw_connection()  # set up by make_engine's hook
            try:
                self._cursor = driver.driver_connection.cursor()
            except BaseException:
                driver.close()  # both or neither: the next batch asks again
                raise
            self._driver = driver
        cursor = self._cursor
        cursor.execute("BEGIN IMMEDIATE")
        try:
            counted = _all_statements(cursor, batch)
            if counted is None:  # one write failed: undo them all, then again one by one
                if cursor.connection.in_transaction:
                    cursor.execute("ROLLBACK")
                cursor.execute("BEGIN IMMEDIATE")
                for statements, done in batch:
                    outcomes.append((done, *_statements(cursor, statements)))
            else:
                outcomes.extend((done, True, counts)
                                for (_, done), counts in zip(batch, counted, strict=True))
            cursor.execute("COMMIT")
        except BaseException:
            outcomes.clear()
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise


class _Awaited:
    """The writer thread's handle on an awaiting coroutine's future: the subset of
    :class:`concurrent.futures.Future` the writer uses, answered on the future's loop."""

    __slots__ = ("_finished", "_future")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future
        self._finished = False

    def set_running_or_notify_cancel(self) -> bool:
        return not self._future.cancelled()  # a cancelled caller's write is not run

    def done(self) -> bool:
        return self._finished

    def set_result(self, value: Any) -> None:
        self._finished = True
        self._future.get_loop().call_soon_threadsafe(_resolve, self._future, value, None)

    def set_exception(self, error: BaseException) -> None:
        self._finished = True
        self._future.get_loop().call_soon_threadsafe(_resolve, self._future, None, error)


#: Where the writer puts a write's outcome.
_Done = Future[Any] | _Awaited


def _answer(outcomes: list[tuple[_Done, bool, object]]) -> None:
    """Hand each write's outcome to its caller, once the batch is durable (or failed).

    Coroutines awaiting on one event loop are answered by one callback on that loop
    for the whole batch, not one each: every ``call_soon_threadsafe`` wakes the loop
    (a write to its self-pipe and a pass through its selector), and a batch holds a
    write of several channels at once. Each future still gets only its own outcome.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any,
                                                         BaseException | None]]] = {}
    for done, ok, value in outcomes:
        if isinstance(done, _Awaited):
            done._finished = True
            future = done._future
            by_loop.setdefault(future.get_loop(), []).append(
                (future, value, None) if ok else (future, None, value))  # type: ignore[arg-type]
        elif ok:
            done.set_result(value)
        else:
            done.set_exception(value)  # type: ignore[arg-type]
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits any more
            loop.call_soon_threadsafe(_resolve_all, answers)


def _resolve_all(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in answers:
        _resolve(future, value, error)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _work(connection: Connection, work: Callable[[Session], object]) -> tuple[bool, object]:
    """``work`` in a SAVEPOINT of the batch's transaction."""
    try:
        with Session(connection, join_transaction_mode="create_savepoint",
                     expire_on_commit=False) as session:
            result = work(session)
            session.commit()
            return True, result
    except Exception as e:
        return False, e


def _all_statements(cursor: sqlite3.Cursor,
                    batch: list[tuple[Sequence[Statement], _Done]]) -> list[list[int]] | None:
    """Every write of ``batch`` in the open transaction, without a SAVEPOINT each: their
    row counts, or ``None`` as soon as one fails (the caller then rolls the transaction
    back and runs them one by one, each in its own SAVEPOINT, so that only the failing
    one is undone).

    Writes rarely fail (a replayed nonce, a key taken twice), and every statement is a
    call into SQLite that lets go of the GIL and must win it back from the event loop's
    thread: the optimistic pass makes a batch of ``k`` writes ``2k`` such calls fewer.
    One cursor runs them all (``Connection.execute`` makes a cursor per statement).
    """
    counted: list[list[int]] = []
    execute = cursor.execute
    try:
        for statements, _ in batch:
            counts = []
            for sql, params in statements:
                execute(sql, params)
                counts.append(cursor.rowcount)
            counted.append(counts)
    except sqlite3.Error:
        return None
    return counted


def _statements(cursor: sqlite3.Cursor, statements: Sequence[Statement]
                ) -> tuple[bool, object]:
    """Plain SQL on the driver's connection, in a SAVEPOINT of the batch's transaction."""
    cursor.execute("SAVEPOINT a402_write")
    counts: list[int] = []
    for sql, params in statements:
        try:
            counts.append(cursor.execute(sql, params).rowcount)
        except sqlite3.Error as e:
            cursor.execute("ROLLBACK TO a402_write")
            cursor.execute("RELEASE a402_write")
            return False, DBAPIError.instance(sql, params, e, sqlite3.Error)
    cursor.execute("RELEASE a402_write")
    return True, counts
