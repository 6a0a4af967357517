"""Budget: never exceeded, including when many threads reserve at once."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.client import Budget, BudgetExceeded
from a402.client.errors import BUDGET_EXHAUSTED

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def test_reserve_spent_remaining() -> None:
    budget = Budget({USDC: 100})
    budget.reserve(USDC, 60)
    assert (budget.spent(USDC), budget.remaining(USDC)) == (60, 40)
    budget.reserve(USDC.lower(), 40)  # the address case does not make a second asset
    assert budget.remaining(USDC.upper().replace("0X", "0x")) == 0
    with pytest.raises(BudgetExceeded) as exc:
        budget.reserve(USDC, 1)
    assert exc.value.reason == BUDGET_EXHAUSTED
    assert (exc.value.amount, exc.value.remaining) == (1, 0)
    assert budget.spent(USDC) == 100  # a refused reservation takes nothing


def test_unnamed_asset_has_no_allowance_but_an_int_limit_covers_every_asset() -> None:
    named = Budget({USDC: 100})
    with pytest.raises(BudgetExceeded):
        named.reserve("0x" + "11" * 20, 1)
    each = Budget(100)
    each.reserve(USDC, 100)
    each.reserve("0x" + "11" * 20, 100)  # its own tally
    with pytest.raises(BudgetExceeded):
        each.reserve(USDC, 1)


def test_release_gives_back_once() -> None:
    budget = Budget({USDC: 100})
    r = budget.reserve(USDC, 70)
    budget.release(r)
    budget.release(r)  # a repeated cleanup must not inflate the budget
    assert budget.spent(USDC) == 0
    budget.reserve(USDC, 100)
    with pytest.raises(BudgetExceeded):
        budget.reserve(USDC, 1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_amounts_are_non_negative_ints(bad: object) -> None:
    with pytest.raises(ValueError):
        Budget({USDC: 100}).reserve(USDC, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Budget(bad)  # type: ignore[arg-type]


def test_concurrent_reservations_never_exceed_the_limit() -> None:
    """16 threads released together race for 7-unit slices of 1000: exactly 142 win."""
    budget = Budget({USDC: 1000})
    start = threading.Barrier(16)
    won: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        mine = 0
        for _ in range(100):
            try:
                budget.reserve(USDC, 7)
                mine += 1
            except BudgetExceeded:
                pass
        with lock:
            won.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1000 // 7
    assert budget.spent(USDC) == 7 * (1000 // 7)
    assert budget.remaining(USDC) == 1000 % 7


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(0, 10_000),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3_000)), max_size=40),
)
def test_spent_matches_a_model_and_never_exceeds(limit: int, ops: list[tuple[bool, int]]) -> None:
    budget = Budget({USDC: limit})
    live = []
    model = 0
    for release, amount in ops:
        if release and live:
            r = live.pop(amount % len(live))
            budget.release(r)
            model -= r.amount
            continue
        if model + amount <= limit:
            live.append(budget.reserve(USDC, amount))
            model += amount
        else:
            with pytest.raises(BudgetExceeded):
                budget.reserve(USDC, amount)
        assert budget.spent(USDC) == model <= limit
    assert budget.remaining(USDC) == limit - model
