"""Vault mode's invoker (:mod:`a402.vault.mode_invoke`): the sealed provider
endpoint bound to its channel, the owed-ACK re-send run again on each start (a lease taken
over), and ``aclose`` cancelled while it waits for the re-send to stop."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from a402.chain.node import Chain
from a402.tee import AttestationPolicy
from a402.vault.mode_invoke import ModeInvoker, open_endpoint, seal_endpoint

from .accounts_setup import PROVIDER_CODE, launch
from .test_service import Harness


def test_a_provider_endpoint_blob_moved_to_another_channels_row_is_ignored_as_if_absent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The host swaps two channels' sealed endpoint rows (it cannot read or forge them):
    the enclave's seal binds each to its channel id, so under the other channel the blob
    does not open; it is logged and counts as no stored endpoint (never an error that
    could stop a host that starts). Nor does a blob of the unbound format, or garbage."""
    _, enclave = launch()
    first, second = os.urandom(32), os.urandom(32)
    blob = seal_endpoint(enclave, first, "https://provider.example/.well-known/a402")
    assert open_endpoint(enclave, first, blob) == "https://provider.example/.well-known/a402"
    with caplog.at_level(logging.WARNING, logger="a402.vault.mode"):
        assert open_endpoint(enclave, second, blob) is None  # moved to the other's row
        unbound = enclave.seal("a402/vault-mode-endpoint", b"https://elsewhere.example/")
        assert open_endpoint(enclave, first, unbound) is None
        assert open_endpoint(enclave, first, b"not a sealed blob") is None
    assert sum("is ignored" in r.getMessage() for r in caplog.records) == 3


class HeldResend(ModeInvoker):
    """A re-send the test holds open (the owed ACKs' providers slow to answer), and which
    takes its time to stop once cancelled (its tunnels closing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs = 0
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def resend_owed_acks(self) -> None:
        self.runs += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.release.wait()
            raise
        finally:
            self.running -= 1


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def _invoker(h: Harness) -> HeldResend:
    return HeldResend(h.service, verifiers=[], policy=AttestationPolicy(frozenset({PROVIDER_CODE})))


@pytest.mark.anvil
def test_owed_acks_are_resent_again_on_each_start_but_never_two_resends_at_once(
    h: Harness,
) -> None:
    """A replica that takes the lease (again) starts the invoker: the ACKs the holder
    before it may have died owing are re-sent each time. A start while a re-send still
    runs adds none (it would send the same ACKs twice); after aclose, none starts."""

    async def run() -> HeldResend:
        invoker = _invoker(h)
        await invoker.start()
        await invoker.start()  # the first still runs: not doubled
        await _until(lambda: invoker.runs == 1, "the first re-send")
        invoker.release.set()
        await _until(lambda: invoker.running == 0, "the first re-send's end")
        invoker.release.clear()
        await invoker.start()  # taken over again: re-sent again
        await _until(lambda: invoker.runs == 2, "the second re-send")
        invoker.release.set()
        await invoker.aclose()
        await invoker.start()  # closed: nothing more
        await asyncio.sleep(0)
        await invoker.http.aclose()
        return invoker

    invoker = asyncio.run(run())
    assert (invoker.runs, invoker.most_at_once, invoker.running) == (2, 1, 0)


@pytest.mark.anvil
def test_aclose_cancelled_while_the_resend_stops_is_cancelled_not_swallowed(
    h: Harness,
) -> None:
    """``aclose`` cancels the re-send and waits for it to stop; the re-send's own
    cancellation is not raised, but a cancellation aimed at ``aclose`` (a shutdown that
    gave up waiting) reaches its caller instead of being swallowed with the re-send's."""

    async def run() -> tuple[bool, bool]:
        invoker = _invoker(h)
        await invoker.start()
        await _until(lambda: invoker.runs == 1, "the re-send")
        closing = asyncio.get_running_loop().create_task(invoker.aclose())
        await invoker.cancelled.wait()  # aclose now waits for the re-send to stop
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        caller_cancelled = closing.cancelled()
        invoker.release.set()  # the re-send stops now; a second aclose returns quietly
        await invoker.aclose()
        await invoker.http.aclose()
        assert invoker._resending is not None
        return caller_cancelled, invoker._resending.cancelled()

    assert asyncio.run(run()) == (True, True)
