"""The aggregator: what waits together is sent together, and each waiter gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from a402.vault.aggregate import Aggregator

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def send(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("the chain is down")
        return [i * 10 for i in items]


async def test_submissions_within_the_window_share_one_send() -> None:
    recorder = Recorder()
    aggregator = Aggregator(recorder.send, window=0.2, limit=100)
    outcomes = await asyncio.gather(*(aggregator.submit(i) for i in range(5)))
    assert outcomes == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1, 2, 3, 4]]


async def test_a_full_batch_goes_at_once_and_the_rest_waits_for_the_next() -> None:
    recorder = Recorder()
    aggregator = Aggregator(recorder.send, window=30, limit=3)
    first = await asyncio.wait_for(asyncio.gather(*(aggregator.submit(i) for i in range(3))), 5)
    assert first == [0, 10, 20] and recorder.batches == [[0, 1, 2]]
    late = asyncio.ensure_future(aggregator.submit(7))
    await asyncio.sleep(0.05)
    assert not late.done()  # alone, it waits for its window (or two more)
    rest = await asyncio.wait_for(asyncio.gather(aggregator.submit(8), aggregator.submit(9)), 5)
    assert (await late, rest) == (70, [80, 90])
    assert recorder.batches[-1] == [7, 8, 9]


async def test_without_a_window_each_goes_alone() -> None:
    recorder = Recorder()
    aggregator = Aggregator(recorder.send, window=0, limit=10)
    assert await asyncio.gather(aggregator.submit(1), aggregator.submit(2)) == [10, 20]
    assert recorder.batches == [[1], [2]]


async def test_a_failed_send_fails_every_waiter_of_that_batch_only() -> None:
    recorder = Recorder(fail=True)
    aggregator = Aggregator(recorder.send, window=0.05, limit=10)
    results = await asyncio.gather(aggregator.submit(1), aggregator.submit(2),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    recorder.fail = False
    assert await aggregator.submit(3) == 30


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Aggregator(Recorder().send, window=-1, limit=1)
    with pytest.raises(ValueError):
        Aggregator(Recorder().send, window=0, limit=0)
