"""Group commit: many writers, fewer COMMITs, and each write durable and isolated."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Integer, String, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from a402.sqlite import GroupCommit, make_engine, readers, use_wal


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Db:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(f"sqlite:///{path}")
        Base.metadata.create_all(self.engine)
        self.commits = 0
        event.listen(self.engine, "commit", self._count)
        self.group = GroupCommit(sessionmaker(self.engine, expire_on_commit=False))

    def _count(self, _connection: object) -> None:
        self.commits += 1

    def on_disk(self) -> dict[str, int]:
        """What another process would read, through the plain sqlite3 module."""
        with sqlite3.connect(self.path) as raw:
            return dict(raw.execute("SELECT key, value FROM rows").fetchall())


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    db = Db(tmp_path / "g.db")
    yield db
    db.group.close()
    db.engine.dispose()


def insert(key: str, value: int):  # type: ignore[no-untyped-def]
    def work(session: Session) -> int:
        session.add(Row(key=key, value=value))
        session.flush()
        return value
    return work


def test_every_caller_gets_its_result_after_its_write_is_on_disk(db: Db) -> None:
    seen: dict[str, int] = {}

    def writer(i: int) -> None:
        assert db.group.run(insert(f"k{i}", i)) == i
        seen[f"k{i}"] = db.on_disk()[f"k{i}"]  # visible to a fresh connection on return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {f"k{i}": i for i in range(64)}
    assert db.on_disk() == seen


def test_writes_waiting_together_share_one_commit(db: Db) -> None:
    gate, started = threading.Event(), threading.Event()

    def blocker(session: Session) -> None:
        started.set()
        gate.wait(10)  # the writer thread is busy: the next writes queue up

    first = threading.Thread(target=db.group.run, args=(blocker,))
    first.start()
    assert started.wait(10)
    before = db.commits
    threads = [threading.Thread(target=db.group.run, args=(insert(f"q{i}", i),))
               for i in range(20)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while db.group._queue.qsize() < 20:  # all twenty queued behind the blocker
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gate.set()
    for t in [first, *threads]:
        t.join()
    assert len(db.on_disk()) == 20
    assert db.commits - before <= 2  # the blocker's batch, then one for all twenty


def test_a_failing_write_is_undone_alone(db: Db) -> None:
    db.group.run(insert("taken", 1))

    def fails(session: Session) -> None:
        session.add(Row(key="half", value=2))
        session.flush()
        raise ValueError("refused after a partial write")

    with pytest.raises(ValueError, match="partial"):
        db.group.run(fails)
    with pytest.raises(Exception, match="UNIQUE"):
        db.group.run(insert("taken", 3))
    assert db.group.run(insert("next", 4)) == 4
    assert db.on_disk() == {"taken": 1, "next": 4}


def test_exclusive_transactions_and_readers_do_not_wait_on_sqlite(db: Db) -> None:
    with db.group.exclusive() as session:
        session.add(Row(key="own", value=7))
    with readers(db.engine)() as session:
        assert session.scalars(select(Row.value)).all() == [7]
    assert db.on_disk() == {"own": 7}


INSERT = 'INSERT INTO "rows" ("key", "value") VALUES (:key, :value)'


def test_plain_sql_awaited_by_coroutines_is_durable_isolated_and_skipped_if_abandoned(
    db: Db,
) -> None:
    async def scenario() -> None:
        counts = await asyncio.gather(*(db.group.execute([(INSERT, {"key": f"a{i}", "value": i})])
                                        for i in range(50)))
        assert counts == [[1]] * 50 and len(db.on_disk()) == 50  # durable once awaited
        with pytest.raises(IntegrityError):  # the second statement fails: both are undone
            await db.group.execute([(INSERT, {"key": "b", "value": 1}),
                                    (INSERT, {"key": "a0", "value": 0})])
        assert "b" not in db.on_disk()

        gate, started = threading.Event(), threading.Event()

        def blocker(_: Session) -> None:
            started.set()
            gate.wait(10)

        busy = threading.Thread(target=db.group.run, args=(blocker,))
        busy.start()
        assert started.wait(10)
        abandoned = asyncio.ensure_future(db.group.execute([(INSERT, {"key": "c", "value": 2})]))
        await asyncio.sleep(0)  # queued behind the blocker
        abandoned.cancel()
        gate.set()
        busy.join()
        assert await db.group.execute([(INSERT, {"key": "d", "value": 3})]) == [1]
        assert "c" not in db.on_disk() and db.on_disk()["d"] == 3

    asyncio.run(scenario())


UPDATE = 'UPDATE "rows" SET "value" = :value WHERE "key" = :key'


def test_each_statement_of_a_batch_gets_its_own_row_count(db: Db) -> None:
    """The writer runs a batch's statements one after another on one cursor: each count
    is its own statement's, never the one before it."""
    async def scenario() -> list[list[int]]:
        return await asyncio.gather(
            db.group.execute([(UPDATE, {"key": "none yet", "value": 1}),
                              (INSERT, {"key": "p", "value": 1})]),
            db.group.execute([(INSERT, {"key": "q", "value": 2}),
                              (UPDATE, {"key": "p", "value": 3}),
                              (UPDATE, {"key": "missing", "value": 4})]))

    assert asyncio.run(scenario()) == [[0, 1], [1, 1, 0]]
    assert db.on_disk() == {"p": 3, "q": 2}


def test_connections_opening_one_new_file_together_all_switch_it_to_wal(tmp_path: Path) -> None:
    """Switching a new file to WAL does not wait in SQLite's busy handler: opened by four
    connections at once, all but one used to fail with "database is locked" (a few times
    in a hundred). Each must now wait its turn and find the file in WAL mode."""
    failures: list[BaseException] = []
    modes: list[str] = []
    for attempt in range(100):
        path = tmp_path / f"new{attempt}.db"
        start = threading.Barrier(4)

        def open_file(path: Path = path, start: threading.Barrier = start) -> None:
            connection = sqlite3.connect(path, timeout=30)
            start.wait()
            try:
                use_wal(connection)
                modes.append(connection.execute("PRAGMA journal_mode").fetchone()[0])
            except BaseException as e:  # the failure is the finding
                failures.append(e)
            finally:
                connection.close()

        threads = [threading.Thread(target=open_file) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert modes == ["wal"] * 400


def test_coroutines_sharing_a_commit_are_answered_together_each_with_its_own_outcome(
    db: Db,
) -> None:
    """A batch's answers to one event loop come in one wake-up of that loop, and still each
    caller gets its own row count or its own error, only once the batch is durable."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wakeups = 0
        threadsafe = loop.call_soon_threadsafe

        def counted(*args: object) -> object:
            nonlocal wakeups
            wakeups += 1
            return threadsafe(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        await db.group.execute([(INSERT, {"key": "taken", "value": 0})])
        gate, started = threading.Event(), threading.Event()

        def blocker(_: Session) -> None:
            started.set()
            gate.wait(10)

        busy = threading.Thread(target=db.group.run, args=(blocker,))
        busy.start()
        assert started.wait(10)
        writes = [asyncio.ensure_future(db.group.execute([(INSERT, {"key": k, "value": i})]))
                  for i, k in enumerate(["x", "taken", "y", "z"])]
        await asyncio.sleep(0.05)  # all four queued behind the blocker: one batch
        wakeups = 0
        gate.set()
        busy.join()
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert results[0] == [1] and results[2] == [1] and results[3] == [1]
        assert isinstance(results[1], IntegrityError)
        assert wakeups == 1
        assert db.on_disk() == {"taken": 0, "x": 0, "y": 2, "z": 3}

    asyncio.run(scenario())


def test_writes_coroutines_make_in_one_pass_of_the_loop_reach_the_writer_as_one_batch(
    db: Db,
) -> None:
    batches: list[int] = []
    commit = db.group._commit

    def counted(batch: list[tuple[object, object]]) -> None:
        batches.append(len(batch))
        commit(batch)  # type: ignore[arg-type]

    db.group._commit = counted  # type: ignore[method-assign]

    async def scenario() -> None:
        # Thirty coroutines woken together each make a write: one hand-over, one batch,
        # and every one of them answered only once its row is durable.
        counts = await asyncio.gather(*(db.group.execute([(INSERT, {"key": f"p{i}", "value": i})])
                                        for i in range(30)))
        assert counts == [[1]] * 30 and len(db.on_disk()) == 30
        assert batches == [30]

    asyncio.run(scenario())


def test_a_write_gathered_when_the_store_closes_is_refused_and_not_written(db: Db) -> None:
    async def scenario() -> None:
        write = asyncio.ensure_future(db.group.execute([(INSERT, {"key": "late", "value": 1})]))
        await asyncio.sleep(0)  # gathered on this loop, not handed to the writer yet
        db.group.close()
        with pytest.raises(RuntimeError, match="closed"):
            await write
        with pytest.raises(RuntimeError, match="closed"):
            await db.group.execute([(INSERT, {"key": "later", "value": 2})])

    asyncio.run(scenario())
    assert db.on_disk() == {}


def test_a_connection_whose_cursor_cannot_be_made_is_given_back_and_the_next_write_succeeds(
    db: Db, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer keeps a connection and its cursor for plain SQL: both or neither. A
    connection whose cursor fails is closed, the batch refused, and the next batch asks for
    a connection again (it used to keep the connection without a cursor, and every later
    batch and the store's close failed on it)."""
    real, given_back = db.engine.raw_connection, []

    class NoCursor:
        def cursor(self) -> None:
            raise sqlite3.OperationalError("no cursor today")

    class CursorFails:
        def __init__(self) -> None:
            self.connection = real()
            self.driver_connection = NoCursor()

        def close(self) -> None:
            given_back.append(True)
            self.connection.close()

    async def scenario() -> None:
        monkeypatch.setattr(db.engine, "raw_connection", CursorFails)
        with pytest.raises(sqlite3.OperationalError, match="no cursor today"):
            await db.group.execute([(INSERT, {"key": "x", "value": 1})])
        monkeypatch.undo()
        assert await db.group.execute([(INSERT, {"key": "y", "value": 2})]) == [1]

    asyncio.run(scenario())
    assert given_back == [True] and db.on_disk() == {"y": 2}
