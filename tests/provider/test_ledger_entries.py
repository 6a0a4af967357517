"""The replay ledger, read by an operator: its entries with their creation time, newest
first, on SQLite and PostgreSQL, and a ledger made before ``created_at`` brought up to
the new schema without losing what it sold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from a402.provider.ledger import Admission, LedgerState, PaymentKey, SqlLedger
from a402.wire.x402 import SettleResponse

pytestmark = pytest.mark.anyio

RECEIPT = SettleResponse(success=True, transaction="0x" + "11" * 32, network="eip155:1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_entries_list_what_was_sold_newest_first_with_their_transaction(
        sql_url: str) -> None:
    payer = "0x" + os.urandom(20).hex()  # PostgreSQL keeps rows between runs: our own payer
    clock = Clock()
    ledger = SqlLedger(sql_url, clock=clock)
    try:
        sold = PaymentKey.of("eip155:1", "0xaa", payer, "0x01")
        waiting = PaymentKey.of("eip155:1", "0xaa", payer, "0x02")
        await ledger.acquire(sold, "f", expires_at=2e9)
        await ledger.mark_settled(sold, RECEIPT)
        clock.now = 1_005.0
        await ledger.acquire(waiting, "g", expires_at=2e9)
        entries = ledger.entries(payer=payer.upper().replace("0X", "0x"))
        settled = ledger.entries(payer=payer, state="settled")
        later = ledger.entries(payer=payer, since=1_001.0)
    finally:
        ledger.close()
    assert [(e["nonce"], e["state"], e["createdAt"]) for e in entries] == [
        (waiting.nonce, "in_flight", 1_005.0), (sold.nonce, "settled", 1_000.0)]
    assert [e["nonce"] for e in settled] == [sold.nonce]
    assert '"transaction":"0x' + "11" * 32 in (settled[0]["settlement"] or "")
    assert [e["nonce"] for e in later] == [waiting.nonce]


async def test_a_ledger_from_before_created_at_gets_the_column_and_keeps_refusing_what_it_sold(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:  # the table as the first release made it
        connection.exec_driver_sql(
            "CREATE TABLE a402_provider_ledger (network VARCHAR(64) NOT NULL, asset "
            "VARCHAR(42) NOT NULL, payer VARCHAR(42) NOT NULL, nonce VARCHAR(66) NOT NULL, "
            "state VARCHAR(16) NOT NULL, fingerprint VARCHAR(64) NOT NULL, terms VARCHAR(64) "
            "NOT NULL, expires_at FLOAT NOT NULL, settlement TEXT, "
            "PRIMARY KEY (network, asset, payer, nonce))")
        connection.exec_driver_sql(
            "INSERT INTO a402_provider_ledger VALUES ('eip155:1', '0xaa', '0xbb', '0x01', "
            "'settled', 'f', '', 2e9, NULL)")
    engine.dispose()
    ledger, again = SqlLedger(url), SqlLedger(url)  # two processes opening it together
    try:
        refused = await ledger.acquire(PaymentKey.of("eip155:1", "0xaa", "0xbb", "0x01"), "f",
                                       expires_at=2e9)
        fresh = await again.acquire(PaymentKey.of("eip155:1", "0xaa", "0xbb", "0x02"), "g",
                                    expires_at=2e9)
        entries = ledger.entries()
    finally:
        ledger.close()
        again.close()
    assert (refused.admission, refused.state) == (Admission.REFUSED, LedgerState.SETTLED)
    assert fresh.admission == Admission.FRESH
    assert [(e["nonce"], e["createdAt"] is None) for e in entries] == [
        ("0x02", False), ("0x01", True)]
