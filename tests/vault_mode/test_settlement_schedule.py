"""The vault-mode settlement scheduler (:mod:`a402.vault.settlement_schedule`), as scenarios:
the clock and the randomness are passed in, so every batch's time is exact."""

from __future__ import annotations

import random

import pytest

from a402.vault.settlement_schedule import Batch, SchedulePolicy, SettlementScheduler

POLICY = SchedulePolicy(window=120.0, jitter=30.0, min_participants=3, max_per_tx=10)


def scheduler(policy: SchedulePolicy = POLICY, seed: int = 7) -> SettlementScheduler:
    return SettlementScheduler(policy, random.Random(seed))


def first_jitter(seed: int = 7, jitter: float = 30.0) -> float:
    return random.Random(seed).uniform(0.0, jitter)


def names(batch: Batch | None) -> list[str]:
    assert batch is not None
    return [p.participant for p in batch.payouts]


def test_a_lone_payout_request_is_never_paid_alone_however_long_it_waits() -> None:
    s = scheduler()
    s.request("0xA", 500, now=0)
    s.request("0xB", 700, now=10)
    assert s.next_wakeup() is None
    for t in (0, 130, 10_000, 10**7):
        assert s.due(now=t) is None
    assert s.waiting == 2


def test_a_batch_is_due_when_enough_requests_have_waited_their_window_plus_the_jitter() -> None:
    s = scheduler()
    s.request("0xA", 500, now=0)
    s.request("0xB", 700, now=10)
    s.request("0xC", 900, now=50)
    due = 50 + 120 + first_jitter()
    assert s.next_wakeup() == pytest.approx(due)
    assert s.due(now=due - 0.001) is None
    batch = s.due(now=due)
    assert names(batch) == ["0xA", "0xB", "0xC"]
    assert batch is not None and batch.pairs() == [("0xA", 500), ("0xB", 700), ("0xC", 900)]
    assert s.waiting == 0 and s.next_wakeup() is None


def test_a_request_that_joins_late_waits_its_own_window_and_is_not_paid_with_the_early_ones(
) -> None:
    """The batch takes only requests that waited their window: a payout is never paid
    right after it was asked, so its time says nothing about the request."""
    s = scheduler()
    for i, name in enumerate(("0xA", "0xB", "0xC")):
        s.request(name, 100, now=i)
    s.request("0xLATE", 100, now=140)
    batch = s.due(now=2 + 120 + 30)
    assert "0xLATE" not in names(batch)
    assert s.waiting == 1


def test_requests_of_one_participant_merge_and_it_is_paid_once_per_batch() -> None:
    s = scheduler()
    s.request("0xA", 100, now=0)
    s.request("0xa", 250, now=5)  # the same participant, any case
    s.request("0xB", 100, now=6)
    s.request("0xC", 100, now=7)
    batch = s.due(now=7 + 150)
    assert batch is not None and batch.pairs() == [("0xA", 350), ("0xB", 100), ("0xC", 100)]


def test_at_most_max_per_tx_payees_per_batch_oldest_first_with_no_remainder_left_stranded(
) -> None:
    s = scheduler(SchedulePolicy(window=60, jitter=0, min_participants=3, max_per_tx=10))
    for i in range(21):
        s.request(f"0x{i:02d}", 10 + i, now=i)
    first = s.due(now=1_000)
    # 21 requests: 10, then 11 left; a second batch of 10 would strand 1, below the
    # minimum, so it holds back 2 and the third pays 3.
    assert names(first) == [f"0x{i:02d}" for i in range(10)]
    second = s.due(now=1_000)
    assert names(second) == [f"0x{i:02d}" for i in range(10, 18)]
    third = s.due(now=1_000)
    assert names(third) == ["0x18", "0x19", "0x20"]
    assert s.due(now=1_000) is None
    for batch in (first, second, third):
        assert batch is not None and 3 <= len(batch.payouts) <= 10


def test_each_batch_draws_its_own_jitter_within_the_bound() -> None:
    rng = random.Random(1234)
    s = SettlementScheduler(SchedulePolicy(window=100, jitter=40, min_participants=2,
                                           max_per_tx=2), rng)
    delays = []
    for round_ in range(20):
        t = round_ * 1_000
        s.request(f"0xA{round_}", 1, now=t)
        s.request(f"0xB{round_}", 1, now=t)
        wake = s.next_wakeup()
        assert wake is not None
        batch = s.due(now=wake)
        assert batch is not None
        s.done(batch)
        delays.append(wake - t)
    assert all(100 <= d <= 140 for d in delays)
    assert len({round(d, 6) for d in delays}) == 20  # no two batches share a delay
    replay = random.Random(1234)  # the rng passed in is the only source of randomness
    assert delays == [pytest.approx(100 + replay.uniform(0, 40)) for _ in range(20)]


def test_a_failed_batch_goes_back_with_its_requests_original_times() -> None:
    s = scheduler()
    for i, name in enumerate(("0xA", "0xB", "0xC")):
        s.request(name, 100, now=i)
    batch = s.due(now=200)
    assert batch is not None
    s.request("0xA", 50, now=300)  # asked again while its payout was in flight
    assert s.due(now=10_000) is None  # 0xA is in flight; only one other request waits
    s.failed(batch)
    again = s.due(now=10_000)
    assert again is not None and again.pairs() == [("0xA", 150), ("0xB", 100), ("0xC", 100)]
    assert again.payouts[0].asked == 0
    s.done(again)
    assert s.waiting == 0


def test_a_policy_that_cannot_form_a_batch_is_refused() -> None:
    for bad in ({"window": -1}, {"jitter": -1}, {"min_participants": 0},
                {"min_participants": 5, "max_per_tx": 4}):
        with pytest.raises(ValueError):
            SchedulePolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        scheduler().request("0xA", 0, now=0)
