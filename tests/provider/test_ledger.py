"""The replay ledger's state machine, in memory and in SQL (a SQLite file, PostgreSQL).

Every case runs against each implementation. The SQL ledgers get a fresh payer
per test, so runs on a shared PostgreSQL database never see each other's rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from a402.provider.ledger import (
    Admission,
    InMemoryLedger,
    LedgerState,
    PaymentKey,
    SqlLedger,
    payment_fingerprint,
    payment_terms,
)
from a402.wire.x402 import SettleResponse

pytestmark = pytest.mark.anyio

Ledger = InMemoryLedger | SqlLedger
MakeLedger = Callable[..., Ledger]

KEY = PaymentKey.of("eip155:1", "0xAA", "0xBB", "0x" + "ab" * 32)
RECEIPT = SettleResponse(success=True, transaction="0x" + "11" * 32, network="eip155:1")
PENDING = SettleResponse(success=False, error_reason="settlement_pending",
                         transaction="0x" + "22" * 32, network="eip155:1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLedger]:
    """Build ledgers of one kind (``make(clock=...)``); SQL ones on one database per test."""
    made: list[SqlLedger] = []
    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'ledger.db'}",
           "postgres": lambda: request.getfixturevalue("postgres_url")}.get(request.param)

    def make(**options: Any) -> Ledger:
        if url is None:
            return InMemoryLedger(**options)
        ledger = SqlLedger(url(), **options)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database two SQL ledgers can share, as two gateways (or replicas) would."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared-ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def key() -> PaymentKey:
    """A key with a payer of this test's own (PostgreSQL keeps rows between runs)."""
    return PaymentKey.of("eip155:1", "0xaa", "0x" + os.urandom(20).hex(), "0x" + "ab" * 32)


async def test_keys_ignore_address_and_nonce_case() -> None:
    assert PaymentKey.of("eip155:1", "0xaa", "0xbb", "0x" + "AB" * 32) == KEY


async def test_fingerprint_ignores_signature_case_but_not_terms() -> None:
    auth = {"from": "0x1", "value": "5"}
    assert payment_fingerprint("0xABCD", auth) == payment_fingerprint("0xabcd", dict(auth))
    assert payment_fingerprint("0xabcd", auth) != payment_fingerprint("0xabcd", {**auth,
                                                                                 "value": "6"})


async def test_one_admission_at_a_time_and_release_frees_it(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    ledger = make_ledger()
    assert (await ledger.acquire(key, "f", expires_at=2e9)).admission is Admission.FRESH
    busy = await ledger.acquire(key, "f", expires_at=2e9)
    assert (busy.admission, busy.state) == (Admission.REFUSED, LedgerState.IN_FLIGHT)
    await ledger.release(key)
    assert ledger.state_of(key) is None
    assert (await ledger.acquire(key, "f", expires_at=2e9)).admission is Admission.FRESH


async def test_settled_is_refused_forever_with_its_receipt(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    ledger = make_ledger()
    await ledger.acquire(key, "f", expires_at=2e9)
    await ledger.mark_settled(key, RECEIPT)
    await ledger.release(key)  # a late release must not resurrect a sold payment
    again = await ledger.acquire(key, "f", expires_at=2e9)
    assert again.admission is Admission.REFUSED
    assert again.state is LedgerState.SETTLED and again.settlement == RECEIPT


async def test_pending_resumes_only_for_the_same_payload_and_only_once(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    ledger = make_ledger()
    await ledger.acquire(key, "f", expires_at=2e9)
    await ledger.mark_pending(key, PENDING)
    other = await ledger.acquire(key, "other-signature", expires_at=2e9)
    assert (other.admission, other.state) == (Admission.REFUSED, LedgerState.PENDING)
    resumed = await ledger.acquire(key, "f", expires_at=2e9)
    assert resumed.admission is Admission.RESUMED and resumed.settlement == PENDING
    # While one retry is settling, a concurrent identical retry must wait its turn.
    assert (await ledger.acquire(key, "f", expires_at=2e9)).admission is Admission.REFUSED
    await ledger.mark_pending(key, None)  # the answer was lost again: keep the last receipt
    assert (await ledger.acquire(key, "f", expires_at=2e9)).settlement == PENDING


async def test_mark_pending_never_downgrades_a_settled_payment(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    ledger = make_ledger()
    await ledger.acquire(key, "f", expires_at=2e9)
    await ledger.mark_settled(key, RECEIPT)
    await ledger.mark_pending(key, PENDING)
    assert ledger.state_of(key) is LedgerState.SETTLED


async def test_entries_expire_after_their_deadline(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    clock = Clock()
    ledger = make_ledger(clock=clock)
    await ledger.acquire(key, "f", expires_at=1_100)
    await ledger.mark_settled(key, RECEIPT)
    clock.now = 1_099
    assert (await ledger.acquire(key, "f", expires_at=1_200)).admission is Admission.REFUSED
    clock.now = 1_100
    assert (await ledger.acquire(key, "f", expires_at=1_200)).admission is Admission.FRESH
    assert ledger.state_of(key) is LedgerState.IN_FLIGHT


async def test_reacquired_key_keeps_its_new_deadline(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    clock = Clock()
    ledger = make_ledger(clock=clock)
    await ledger.acquire(key, "f", expires_at=1_100)
    await ledger.release(key)
    await ledger.acquire(key, "f", expires_at=5_000)
    clock.now = 2_000  # past the first deadline, whose heap entry is now stale
    other = PaymentKey.of("eip155:1", "0xaa", key.payer, "0x01")
    await ledger.acquire(other, "g", expires_at=9_000)
    assert ledger.state_of(key) is LedgerState.IN_FLIGHT


async def test_concurrent_acquires_admit_exactly_one(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    ledger = make_ledger()
    results: list[Admission] = []

    async def grab() -> None:
        await anyio.sleep(0)
        results.append((await ledger.acquire(key, "f", expires_at=2e9)).admission)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(grab)
    assert results.count(Admission.FRESH) == 1
    assert results.count(Admission.REFUSED) == 19


async def test_a_pending_payment_resumes_only_on_the_terms_it_was_admitted_for(
    make_ledger: MakeLedger, key: PaymentKey,
) -> None:
    cheap = payment_terms(scheme="exact", network="eip155:1", amount="1000", asset="0xAA",
                          pay_to="0xCC")
    dear = payment_terms(scheme="exact", network="eip155:1", amount="2000", asset="0xaa",
                         pay_to="0xcc")
    assert cheap == payment_terms(scheme="exact", network="eip155:1", amount="1000",
                                  asset="0xaa", pay_to="0xcc")
    ledger = make_ledger()
    await ledger.acquire(key, "f", expires_at=2e9, terms=cheap)
    await ledger.mark_pending(key, PENDING)
    elsewhere = await ledger.acquire(key, "f", expires_at=2e9, terms=dear)
    assert elsewhere.admission is Admission.OTHER_TERMS
    assert elsewhere.state is LedgerState.PENDING and elsewhere.settlement == PENDING
    assert ledger.state_of(key) is LedgerState.PENDING  # left for a retry on its own terms
    resumed = await ledger.acquire(key, "f", expires_at=2e9, terms=cheap)
    assert resumed.admission is Admission.RESUMED


async def test_two_ledgers_on_one_database_admit_a_payment_exactly_once(
    sql_url: str, key: PaymentKey,
) -> None:
    first, second = SqlLedger(sql_url), SqlLedger(sql_url)
    try:
        results: list[Admission] = []

        async def grab(ledger: SqlLedger) -> None:
            results.append((await ledger.acquire(key, "f", expires_at=2e9)).admission)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(grab, (first, second)[i % 2])
        assert results.count(Admission.FRESH) == 1
        assert results.count(Admission.REFUSED) == 9
        await first.mark_settled(key, RECEIPT)
        sold = await second.acquire(key, "f", expires_at=2e9)
        assert (sold.admission, sold.state, sold.settlement) == (
            Admission.REFUSED, LedgerState.SETTLED, RECEIPT)
    finally:
        first.close()
        second.close()


async def test_a_restarted_ledger_still_refuses_what_it_sold(sql_url: str, key: PaymentKey,
                                                             ) -> None:
    before = SqlLedger(sql_url)
    await before.acquire(key, "f", expires_at=2e9)
    await before.mark_settled(key, RECEIPT)
    before.close()
    after = SqlLedger(sql_url)
    try:
        again = await after.acquire(key, "f", expires_at=2e9)
        assert (again.admission, again.state) == (Admission.REFUSED, LedgerState.SETTLED)
    finally:
        after.close()


async def test_expired_entries_of_other_payments_are_purged_too(sql_url: str, key: PaymentKey
                                                                ) -> None:
    clock = Clock()
    ledger = SqlLedger(sql_url, clock=clock, purge_every=10)
    try:
        await ledger.acquire(key, "f", expires_at=1_050)  # also purges (its first acquire)
        clock.now = 1_100
        other = PaymentKey.of("eip155:1", "0xaa", key.payer, "0x02")
        await ledger.acquire(other, "g", expires_at=9_000)
        assert ledger.state_of(key) is None
    finally:
        ledger.close()


async def test_a_replica_whose_clock_runs_ahead_does_not_take_an_entry_in_flight_elsewhere(
    postgres_url: str, key: PaymentKey,
) -> None:
    """Two replicas on one PostgreSQL ledger, the second's clock 700 s ahead: the entry the
    first holds (validBefore a minute away, kept 600 s past it) is not expired for it."""
    right = SqlLedger(postgres_url)
    ahead = SqlLedger(postgres_url, clock=lambda: time.time() + 700, purge_every=0)
    try:
        expires_at = time.time() + 60 + 600
        assert (await right.acquire(key, "f", expires_at=expires_at)).admission \
            is Admission.FRESH
        again = await ahead.acquire(key, "f", expires_at=expires_at)
        assert (again.admission, again.state) == (Admission.REFUSED, LedgerState.IN_FLIGHT)
        assert right.state_of(key) is LedgerState.IN_FLIGHT
    finally:
        right.close()
        ahead.close()
