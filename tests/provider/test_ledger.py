"""The replay ledger's state machine (pure, in memory)."""

from __future__ import annotations

import anyio
import pytest

from a402.provider.ledger import (
    Admission,
    InMemoryLedger,
    LedgerState,
    PaymentKey,
    payment_fingerprint,
)
from a402.wire.x402 import SettleResponse

pytestmark = pytest.mark.anyio

KEY = PaymentKey.of("eip155:1", "0xAA", "0xBB", "0x" + "ab" * 32)
RECEIPT = SettleResponse(success=True, transaction="0x" + "11" * 32, network="eip155:1")
PENDING = SettleResponse(success=False, error_reason="settlement_pending",
                         transaction="0x" + "22" * 32, network="eip155:1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_keys_ignore_address_and_nonce_case() -> None:
    assert PaymentKey.of("eip155:1", "0xaa", "0xbb", "0x" + "AB" * 32) == KEY


async def test_fingerprint_ignores_signature_case_but_not_terms() -> None:
    auth = {"from": "0x1", "value": "5"}
    assert payment_fingerprint("0xABCD", auth) == payment_fingerprint("0xabcd", dict(auth))
    assert payment_fingerprint("0xabcd", auth) != payment_fingerprint("0xabcd", {**auth,
                                                                                 "value": "6"})


async def test_one_admission_at_a_time_and_release_frees_it() -> None:
    ledger = InMemoryLedger()
    assert (await ledger.acquire(KEY, "f", expires_at=2e9)).admission is Admission.FRESH
    busy = await ledger.acquire(KEY, "f", expires_at=2e9)
    assert (busy.admission, busy.state) == (Admission.REFUSED, LedgerState.IN_FLIGHT)
    await ledger.release(KEY)
    assert ledger.state_of(KEY) is None
    assert (await ledger.acquire(KEY, "f", expires_at=2e9)).admission is Admission.FRESH


async def test_settled_is_refused_forever_with_its_receipt() -> None:
    ledger = InMemoryLedger()
    await ledger.acquire(KEY, "f", expires_at=2e9)
    await ledger.mark_settled(KEY, RECEIPT)
    await ledger.release(KEY)  # a late release must not resurrect a sold payment
    again = await ledger.acquire(KEY, "f", expires_at=2e9)
    assert again.admission is Admission.REFUSED
    assert again.state is LedgerState.SETTLED and again.settlement == RECEIPT


async def test_pending_resumes_only_for_the_same_payload_and_only_once() -> None:
    ledger = InMemoryLedger()
    await ledger.acquire(KEY, "f", expires_at=2e9)
    await ledger.mark_pending(KEY, PENDING)
    other = await ledger.acquire(KEY, "other-signature", expires_at=2e9)
    assert (other.admission, other.state) == (Admission.REFUSED, LedgerState.PENDING)
    resumed = await ledger.acquire(KEY, "f", expires_at=2e9)
    assert resumed.admission is Admission.RESUMED and resumed.settlement == PENDING
    # While one retry is settling, a concurrent identical retry must wait its turn.
    assert (await ledger.acquire(KEY, "f", expires_at=2e9)).admission is Admission.REFUSED
    await ledger.mark_pending(KEY, None)  # the answer was lost again: keep the last receipt
    assert (await ledger.acquire(KEY, "f", expires_at=2e9)).settlement == PENDING


async def test_mark_pending_never_downgrades_a_settled_payment() -> None:
    ledger = InMemoryLedger()
    await ledger.acquire(KEY, "f", expires_at=2e9)
    await ledger.mark_settled(KEY, RECEIPT)
    await ledger.mark_pending(KEY, PENDING)
    assert ledger.state_of(KEY) is LedgerState.SETTLED


async def test_entries_expire_after_their_deadline() -> None:
    clock = Clock()
    ledger = InMemoryLedger(clock=clock)
    await ledger.acquire(KEY, "f", expires_at=1_100)
    await ledger.mark_settled(KEY, RECEIPT)
    clock.now = 1_099
    assert (await ledger.acquire(KEY, "f", expires_at=1_200)).admission is Admission.REFUSED
    clock.now = 1_100
    assert (await ledger.acquire(KEY, "f", expires_at=1_200)).admission is Admission.FRESH
    assert len(ledger) == 1


async def test_reacquired_key_keeps_its_new_deadline() -> None:
    clock = Clock()
    ledger = InMemoryLedger(clock=clock)
    await ledger.acquire(KEY, "f", expires_at=1_100)
    await ledger.release(KEY)
    await ledger.acquire(KEY, "f", expires_at=5_000)
    clock.now = 2_000  # past the first deadline, whose heap entry is now stale
    other = PaymentKey.of("eip155:1", "0xaa", "0xcc", "0x01")
    await ledger.acquire(other, "g", expires_at=9_000)
    assert ledger.state_of(KEY) is LedgerState.IN_FLIGHT


async def test_concurrent_acquires_admit_exactly_one() -> None:
    ledger = InMemoryLedger()
    results: list[Admission] = []

    async def grab() -> None:
        await anyio.sleep(0)
        results.append((await ledger.acquire(KEY, "f", expires_at=2e9)).admission)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(grab)
    assert results.count(Admission.FRESH) == 1
    assert results.count(Admission.REFUSED) == 19
