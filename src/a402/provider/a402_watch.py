"""The provider's watcher: what it must do on-chain without being asked.

One bounded loop per runtime (one tick every ``poll_interval``, each tick one
``eth_getLogs`` plus the transactions it has to send), stoppable at any time:

* **Δ_ack.** A channel whose REVEAL went unacknowledged for Δ_ack is claimed
  with ``ASCManager.forceClose``: the pre-signature completed with ``t``, the
  vault's σ_U and the latest co-signed state (paper Alg. 2, ④b). Publishing the
  signature is what lets the vault extract ``t`` and still open the result.
* **Client force-close.** ``ForceCloseInitiated`` (or a challenge) on a channel
  where the provider holds σ_U: claim at once, before the dispute window ends
  (the contract allows ``forceClose`` while Closing). On a channel with no
  request pending but a newer co-signed state than the one recorded: answer
  with ``challengeForceClose`` (the provider is its own watchtower). Either
  way the channel takes no new EXEC.
* **Cooperative close nobody submitted.** After co-signing a final state the
  provider waits ``close_grace`` for the vault to submit ``closeASC``, then
  submits it itself.
* **Settled channels** (any path, seen in the logs) are marked closed and
  stop being watched.
* **Payouts the token refused** (a paused token when a channel settled): the
  ASCManager credited them to the provider (``owed``); the watcher takes them
  with ``withdraw`` once the token sends again.

On start it reloads every active channel from the store and reads each one's
on-chain status once, so a restart misses nothing that happened meanwhile.
A failed transaction is retried on the next tick; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from eth_utils import event_abi_to_log_topic, filter_abi_by_type

from a402.asc import Status

if TYPE_CHECKING:
    from a402.provider.a402_runtime import ProviderRuntime, Slot

log = logging.getLogger("a402.provider.a402")

_DISPUTES = ("ForceCloseInitiated", "ForceCloseChallenged")
_SETTLEMENTS = ("ChannelClosed", "ForceCloseFinalized", "ProviderForceClosed")


class ChannelWatcher:
    """Runs :meth:`tick` every ``poll_interval`` seconds until :meth:`stop`."""

    def __init__(self, runtime: ProviderRuntime) -> None:
        self.runtime = runtime
        self.manager = runtime.manager
        self.w3 = runtime.manager.chain.w3
        self._topics: dict[bytes, str] = {
            bytes(event_abi_to_log_topic(abi)): abi["name"]
            for abi in filter_abi_by_type("event", self.manager.contract.abi)
            if abi["name"] in (*_DISPUTES, *_SETTLEMENTS)
        }
        self._from_block = 0
        self._owed_reported = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    async def start(self) -> None:
        self._from_block = await asyncio.to_thread(lambda: int(self.w3.eth.block_number))
        for slot in await self.runtime.load_active():
            async with slot.lock:
                if not await self.runtime.reconcile(slot) and slot.closing_on_chain:
                    await self._answer_dispute(slot, recorded_version=None)
        self._task = asyncio.create_task(self._run(), name="a402-provider-watcher")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=30)
            except TimeoutError:
                task.cancel()

    async def _run(self) -> None:
        interval = self.runtime.config.watching.poll_interval
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:  # a flaky node must not end the watch
                log.exception("a402 watcher tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)

    async def tick(self) -> None:
        """One pass: timers, then chain events, then unsubmitted cooperative closes."""
        runtime = self.runtime
        now = runtime.clock()
        for slot in runtime.active_slots():
            async with slot.lock:
                claim = runtime.poll(slot)
                if claim is not None:
                    log.info("no ACK on %s within Δ_ack: claiming request %d on-chain",
                             slot.channel_id.hex(), claim.request_id)
                    slot.force_close_due = True
                    await runtime.persist(slot)
                if slot.force_close_due and not slot.onchain_closed:
                    await runtime.force_close(slot)
        await self._scan_logs()
        await self._collect_owed()
        for slot in runtime.active_slots():
            if (
                slot.final is not None
                and slot.closed_at is not None
                and now - slot.closed_at >= runtime.config.watching.close_grace
            ):
                async with slot.lock:
                    await self._submit_close(slot)
        self.ticks += 1

    async def _scan_logs(self) -> None:
        latest = await asyncio.to_thread(lambda: int(self.w3.eth.block_number))
        if latest < self._from_block:
            return
        logs = await asyncio.to_thread(self.w3.eth.get_logs, {
            "address": self.manager.address,
            "fromBlock": self._from_block,
            "toBlock": latest,
            "topics": [["0x" + t.hex() for t in self._topics]],
        })
        self._from_block = latest + 1
        for raw in logs:
            name = self._topics.get(bytes(raw["topics"][0]))
            slot = self.runtime.slot(bytes(raw["topics"][1]))
            if name is None or slot is None or slot.onchain_closed:
                continue
            async with slot.lock:
                if name in _SETTLEMENTS:
                    await self.runtime.mark_closed(slot)
                else:
                    args = self._decode(name, raw)
                    await self._answer_dispute(slot, recorded_version=int(args["version"]))

    async def _collect_owed(self) -> None:
        operator = self.runtime.operator
        owed = await asyncio.to_thread(self.manager.owed, operator.address)
        if not owed:
            return
        try:
            await asyncio.to_thread(self.manager.withdraw, operator, operator.address)
        except Exception as e:  # still refused (paused, or this address blocklisted)
            if owed != self._owed_reported:
                log.warning("the ASCManager owes %s %d (a payout its token refused); "
                            "withdrawing it failed, retrying every tick: %s",
                            operator.address, owed, e)
                self._owed_reported = owed
            return
        log.info("collected %d the ASCManager owed %s", owed, operator.address)
        self._owed_reported = 0

    def _decode(self, name: str, raw: Any) -> dict[str, Any]:
        event = getattr(self.manager.contract.events, name)()
        return dict(event.process_log(raw)["args"])

    async def _answer_dispute(self, slot: Slot, *, recorded_version: int | None) -> None:
        """A client force-close is under way: claim if σ_U is held, else challenge if newer."""
        runtime = self.runtime
        if not slot.closing_on_chain:
            slot.closing_on_chain = True
            await runtime.persist(slot)
        if slot.channel.status is Status.PENDING:
            log.info("client force-close of %s while σ_U is held: claiming now",
                     slot.channel_id.hex())
            await runtime.force_close(slot)
            return
        if recorded_version is None:
            recorded_version = (await asyncio.to_thread(
                self.manager.channel, slot.channel_id)).version
        latest = slot.channel.latest_state()
        if latest.state.version > recorded_version:
            log.info("challenging the force-close of %s with version %d",
                     slot.channel_id.hex(), latest.state.version)
            try:
                await asyncio.to_thread(
                    self.manager.challenge, runtime.operator, slot.channel.terms, latest
                )
            except Exception as e:
                log.warning("challenge of %s failed: %s", slot.channel_id.hex(), e)
                await runtime.reconcile(slot)

    async def _submit_close(self, slot: Slot) -> None:
        if slot.onchain_closed or slot.final is None or await self.runtime.reconcile(slot):
            return
        try:
            receipt = await asyncio.to_thread(
                self.manager.close, self.runtime.operator, slot.channel.terms, slot.final
            )
        except Exception as e:
            log.warning("closeASC of %s failed: %s", slot.channel_id.hex(), e)
            await self.runtime.reconcile(slot)
            return
        slot.close_tx = receipt["transactionHash"].to_0x_hex()
        await self.runtime.mark_closed(slot)
