"""Aggregation: what waits together goes on-chain together.

Every channel costs two transactions (open, close), and each pays the 21,000
gas of a transaction before doing anything. Channels that open or close at
about the same moment — fifty clients' first requests, an operator closing
its idle channels, a busy vault's steady trickle — can share one
``createASCBatch`` / ``closeASCBatch`` instead, so the fixed cost and the
token transfers are paid once per batch (see ``bench/asc_gas.py``).

:class:`Aggregator` holds each submission for at most ``window`` seconds (or
until ``limit`` are waiting), then hands the whole batch to ``send``, which
returns one outcome per item. Each submitter gets its own item's outcome (or
the exception ``send`` raised). A batch of one costs the same as no
aggregation, less the wait; ``window=0`` sends each at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Aggregator(Generic[Item, Outcome]):
    def __init__(
        self, send: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]], *,
        window: float, limit: int,
    ) -> None:
        if limit < 1 or window < 0:
            raise ValueError("limit must be at least 1 and window non-negative")
        self._send = send
        self.window = window
        self.limit = limit
        self._waiting: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._flush: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def submit(self, item: Item) -> Outcome:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if len(self._waiting) >= self.limit or self.window == 0:
            self._start(now=True)
        elif self._flush is None:
            self._start(now=False)
        return await done

    def _start(self, *, now: bool) -> None:
        batch, self._waiting = self._waiting, []
        if now:
            if self._flush is not None:  # its batch is the one taken here
                self._flush.cancel()
                self._flush = None
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            self._waiting = batch
            self._flush = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.window)
        batch, self._waiting, self._flush = self._waiting, [], None
        await self._run(batch)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        if not batch:
            return
        try:
            outcomes = await self._send([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} items")
        except BaseException as e:
            for _, done in batch:
                if not done.done():
                    done.set_exception(e if isinstance(e, Exception) else RuntimeError(str(e)))
            if not isinstance(e, Exception):
                raise
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)
