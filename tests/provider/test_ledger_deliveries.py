"""What a settled payment delivered, kept in the replay ledger (memory, SQLite, PostgreSQL).

A delivery is kept per payment until its deadline, read back as written (headers that
belong to one connection or session dropped), replaced by a later keep, shared by two
ledgers on one database, and purged with the table once expired.
"""

from __future__ import annotations

import pytest

from a402.provider.deliveries import MAX_KEPT_BODY, Delivery, request_digest
from a402.provider.ledger import PaymentKey, SqlLedger
from tests.provider.test_ledger import Clock, MakeLedger, key, make_ledger, sql_url

pytestmark = pytest.mark.anyio
__all__ = ["key", "make_ledger", "sql_url"]  # fixtures


def _delivery(body: bytes = b'{"weather":"sunny"}', request: str = "r") -> Delivery:
    return Delivery.of(fingerprint="f", request=request, status=200, body=body,
                       headers=[("Content-Type", "application/json"), ("Set-Cookie", "s=1"),
                                ("Connection", "close"), ("X-Trace", "t")])


async def test_a_kept_delivery_reads_back_until_its_deadline(
        make_ledger: MakeLedger, key: PaymentKey) -> None:
    clock = Clock()
    ledger = make_ledger(clock=clock)
    await ledger.keep_delivery(key, _delivery(), expires_at=1_100)
    kept = await ledger.delivery(key)
    assert kept == _delivery()
    assert kept is not None and kept.kept and kept.body == b'{"weather":"sunny"}'
    assert kept.headers == (("content-type", "application/json"), ("x-trace", "t"))
    assert kept.answers("f", "r") and not kept.answers("f", "other")
    assert not kept.answers("g", "r")
    clock.now = 1_100
    assert await ledger.delivery(key) is None


async def test_an_oversized_body_is_not_kept_only_that_it_was_delivered(
        make_ledger: MakeLedger, key: PaymentKey) -> None:
    ledger = make_ledger(clock=Clock())
    await ledger.keep_delivery(key, _delivery(b"x" * (MAX_KEPT_BODY + 1)), expires_at=2_000)
    kept = await ledger.delivery(key)
    assert kept is not None and not kept.kept
    assert kept.body == b"" and kept.headers == () and kept.size == MAX_KEPT_BODY + 1


async def test_a_later_keep_replaces_the_earlier_one(
        make_ledger: MakeLedger, key: PaymentKey) -> None:
    ledger = make_ledger(clock=Clock())
    await ledger.keep_delivery(key, _delivery(b"held", "a"), expires_at=2_000)
    await ledger.keep_delivery(key, _delivery(b"sold", "b"), expires_at=3_000)
    kept = await ledger.delivery(key)
    assert kept is not None and kept.body == b"sold" and kept.request == "b"


async def test_two_ledgers_on_one_database_share_deliveries_and_purge_expired_ones(
        sql_url: str, key: PaymentKey) -> None:
    clock = Clock()
    one, two = SqlLedger(sql_url, clock=clock, purge_every=10), SqlLedger(sql_url, clock=clock)
    try:
        await one.keep_delivery(key, _delivery(), expires_at=1_050)
        assert await two.delivery(key) == _delivery()
        clock.now = 1_100
        other = PaymentKey.of("eip155:1", "0xaa", key.payer, "0x03")
        await one.acquire(other, "g", expires_at=9_000)  # purges the table
        clock.now = 1_000  # even read "before" its deadline, the row is gone
        assert await two.delivery(key) is None
    finally:
        one.close()
        two.close()


def test_request_digests_tell_requests_apart_whatever_the_key_order() -> None:
    assert request_digest("mcp", tool="t", arguments={"a": 1, "b": 2}) == \
        request_digest("mcp", arguments={"b": 2, "a": 1}, tool="t")
    assert request_digest("mcp", tool="t", arguments={"a": 1}) != \
        request_digest("mcp", tool="t", arguments={"a": 2})
    assert request_digest("http", method="GET", terms="x", body="") != \
        request_digest("http", method="POST", terms="x", body="")
