"""A journal made by an older a402 (no ``resource`` column) is brought up to date when
the facilitator opens it, on SQLite and on PostgreSQL, keeping its rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from a402.facilitator.store import SettlementRow, SettlementStore, State

OLD_ROW = {
    "key": "k" * 64, "payload_hash": "p" * 64, "network": "eip155:1", "asset": "0x1",
    "payer": "0x2", "pay_to": "0x3", "amount": "5", "valid_before": 1, "state": "confirmed",
    "tx_hash": "0x" + "ab" * 32, "raw_tx": None, "response": {"success": True},
    "created_at": 1.0, "updated_at": 1.0,
}


def make_old_journal(url: str) -> None:
    """The journal table as the first release made it, holding one settled row."""
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in SettlementRow.__table__.columns if c.name != "resource"]
    old = Table(SettlementRow.__tablename__, MetaData(), *columns)
    engine = create_engine(url)
    old.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(old).values(**OLD_ROW))
    engine.dispose()


def assert_brought_up_to_date(url: str) -> None:
    store = SettlementStore(url)
    try:
        old = store.get(OLD_ROW["key"])
        assert old is not None and old.state == State.CONFIRMED and old.resource is None
        assert store.peek(OLD_ROW["key"]) == (State.CONFIRMED, OLD_ROW["tx_hash"], None)
        assert store.claim(key="n" * 64, payload_hash="q" * 64, network="eip155:1", asset="0x1",
                           payer="0x2", pay_to="0x3", amount=1, valid_before=1,
                           resource="https://a.example/report")
        fresh = store.get("n" * 64)
        assert fresh is not None and fresh.resource == "https://a.example/report"
    finally:
        store.close()
    SettlementStore(url).close()  # opening it again changes nothing


def test_an_older_sqlite_journal_gains_the_resource_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    make_old_journal(url)
    assert_brought_up_to_date(url)


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """The test database, but tables made in a schema of this test's own."""
    schema = "a402_schema_migration_test"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.mark.postgres
def test_an_older_postgresql_journal_gains_the_resource_column(pg_schema_url: str) -> None:
    make_old_journal(pg_schema_url)
    assert_brought_up_to_date(pg_schema_url)


def open_together(url: str, replicas: int = 4) -> list[BaseException]:
    """Open the journal at ``url`` from ``replicas`` stores (each its own engine and
    connections, as processes have) at the same moment: what each raised."""
    start = threading.Barrier(replicas)
    failures: list[BaseException] = []

    def open_journal() -> None:
        start.wait()
        try:
            SettlementStore(url).close()
        except BaseException as e:  # the failure is the finding
            failures.append(e)

    threads = [threading.Thread(target=open_journal) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return failures


@pytest.mark.postgres
@pytest.mark.parametrize("older", [False, True], ids=["fresh", "older"])
def test_replicas_starting_together_all_open_the_journal(pg_schema_url: str, older: bool) -> None:
    """Four replicas open one PostgreSQL journal at the same moment, on an empty
    database or on an older journal: each must start (not lose a race to create the
    table or add a column), and the journal must be whole."""
    if older:
        make_old_journal(pg_schema_url)
    assert open_together(pg_schema_url) == []
    if older:
        assert_brought_up_to_date(pg_schema_url)


@pytest.mark.parametrize("older", [False, True], ids=["fresh", "older"])
def test_processes_starting_together_all_open_a_sqlite_journal(
    tmp_path: Path, older: bool
) -> None:
    """The same on one SQLite file (a facilitator restarted while the old process still
    starts, or run with several workers): none may crash creating the table."""
    url = f"sqlite:///{tmp_path}/journal.db"
    if older:
        make_old_journal(url)
    for attempt in range(5):  # a race: give it a few chances to show
        assert open_together(f"sqlite:///{tmp_path}/journal{attempt}.db"
                             if not older else url) == []
    if older:
        assert_brought_up_to_date(url)
