"""The provider's on-chain side: its channel transactions, and the watcher that sends them.

:class:`OnChain` is what the provider sends for one channel — ``forceClose`` with
the enclave's claim, ``challengeForceClose`` with a newer co-signed state,
``closeASC`` with the final state — and how it reads the chain's view back
(:meth:`OnChain.reconcile`). Each runs under the channel's lock and persists
what it changed. :class:`ChannelWatcher` decides when:

One bounded loop per provider (one tick every ``poll_interval``, each tick one
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

Safety argument: the claim the provider submits comes from its enclave
(:meth:`ProviderEnclave.claim <a402.provider_enclave.ProviderEnclave.claim>`),
which completes the pre-signature only for the request whose σ_U it holds — the
result the vault already holds sealed, and opens with the ``t`` the claim
publishes. The host's operator key pays gas and signs states that can only
pay the provider less; the contract checks everything else.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, filter_abi_by_type

from a402.asc import ForceCloseClaim, Status
from a402.asc_manager import ASCManager, OnChainStatus
from a402.crypto.vault_messages import NO_LEDGER, VaultChannelTerms
from a402.provider.a402_channels import Channels, Slot
from a402.provider.settings import Watching
from a402.provider_enclave import ProviderEnclave
from a402.vault_contract import A402Vault, PendingClaim

log = logging.getLogger("a402.provider.a402")

#: How long a vault-mode AUTH waits for the settlement its record names to land (a vault
#: that names only landed epochs needs none of it), and how often the chain is read then.
LANDING_WAIT = 3.0
LANDING_POLL = 0.25

_DISPUTES = ("ForceCloseInitiated", "ForceCloseChallenged")
_SETTLEMENTS = ("ChannelClosed", "ForceCloseFinalized", "ProviderForceClosed")


class OnChain:
    """The provider's transactions on one channel, sent with ``operator`` (it pays gas).

    Every method expects the caller to hold ``slot.lock`` and persists what it changed.
    """

    def __init__(self, manager: ASCManager, operator: LocalAccount,
                 provider_enclave: ProviderEnclave, channels: Channels,
                 vault_contract: A402Vault | None = None) -> None:
        self.manager = manager
        #: The A402Vault of the vault-mode channels (their claim path: ``claimPayment``).
        self.vault_contract = vault_contract
        self.operator = operator
        self.provider_enclave = provider_enclave
        self.channels = channels
        self._ledger = NO_LEDGER
        self._landed = 0

    def pinned_ledger(self) -> bytes:
        """The ledger life the A402Vault pinned, as last read (zero: none yet); no I/O.
        The provider enclave reveals for a vault-mode AUTH only if its record names it."""
        return self._ledger

    async def read_ledger(self) -> None:
        """Read ``A402Vault.ledger()`` until it is pinned (the first landed settlement pins
        it, and it never changes after): once non-zero it is never read again. A failed
        read leaves it unknown, and the enclave refuses to reveal meanwhile."""
        if self._ledger != NO_LEDGER or self.vault_contract is None:
            return
        try:
            self._ledger = await asyncio.to_thread(self.vault_contract.ledger)
        except Exception as e:  # the chain is unreachable: nothing is revealed meanwhile
            log.warning("A402Vault.ledger() not read: %s", e)

    def landed_epoch(self) -> int:
        """``A402Vault.lastEpoch()`` as last read (it only grows); no I/O."""
        return self._landed

    async def read_epoch(self, epoch: int, *, wait: float = LANDING_WAIT) -> None:
        """Read ``A402Vault.lastEpoch()`` until it reaches ``epoch``, for up to ``wait``
        seconds (a settlement the vault just sent may be a block away). A vault-mode AUTH
        whose pending record names a later epoch is refused meanwhile (nothing revealed); a
        failed read leaves the last value."""
        if self.vault_contract is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                self._landed = max(self._landed,
                                   await asyncio.to_thread(self.vault_contract.last_epoch))
            except Exception as e:  # the chain is unreachable: nothing is revealed meanwhile
                log.warning("A402Vault.lastEpoch() not read: %s", e)
            if self._landed >= epoch or time.monotonic() >= deadline:
                return
            await asyncio.sleep(LANDING_POLL)

    async def status(self, channel_id: bytes) -> str:
        """The channel's on-chain status name (``"OPEN"``, ``"CLOSING"``, …)."""
        onchain = await asyncio.to_thread(self.manager.channel, channel_id)
        return onchain.status.name

    def claim_due(self, slot: Slot) -> ForceCloseClaim | None:
        """Δ_ack for ``slot``: once, when its ACK is overdue, the claim to submit."""
        return self.provider_enclave.poll(slot.channel_id)

    async def force_close(self, slot: Slot) -> bool:
        """Submit ``forceClose`` with the enclave's completed adaptor signature.

        True once the channel is settled on-chain (by us or, as it turns out,
        by someone else); False if it should be retried.
        """
        if slot.channel.status is not Status.PENDING:
            slot.force_close_due = False
            return False
        if slot.channel.terms.vault_mode:
            return await self.claim_vault_payment(slot)
        claim = self.provider_enclave.claim(slot.channel_id)
        try:
            receipt = await asyncio.to_thread(
                self.manager.force_close, self.operator, slot.channel.terms, claim
            )
        except Exception as e:  # reverted, or the node failed: look at the chain
            log.warning("forceClose of %s failed: %s", slot.channel_id.hex(), e)
            return await self.reconcile(slot)
        slot.close_tx = receipt["transactionHash"].to_0x_hex()
        log.info("forceClose of %s for request %d: %s", slot.channel_id.hex(),
                 claim.request_id, slot.close_tx)
        await self.mark_closed(slot)
        return True

    async def claim_vault_payment(self, slot: Slot) -> bool:
        """Vault mode's Δ_ack: ``A402Vault.claimPayment`` with the enclave's completed
        adaptor signature, σ_U and the vault's signed pending record that came with the AUTH
        (the provider revealed only with it). It pays the provider on-chain whether or not
        the vault answers, once the record's epoch has landed and before its deadline; the
        vault's worker reads the claim and credits that payment to nobody again. A claim
        the contract refuses is retried on the next tick (say, before the epoch lands)."""
        note = slot.channel.pending_note
        claim = self.provider_enclave.claim(slot.channel_id)
        if self.vault_contract is None or note is None or note.request_id != claim.request_id:
            log.error("vault-mode channel %s: no A402Vault or pending record to claim "
                      "request %d with", slot.channel_id.hex(), claim.request_id)
            slot.force_close_due = False
            await self.channels.persist(slot)
            return False
        t = slot.channel.terms
        terms = VaultChannelTerms("0x" + t.client.hex(), "0x" + t.provider.hex(),
                                  t.provider_key, t.deposit, t.salt)
        pending = PendingClaim(claim.request_id, claim.amount, claim.result_hash, claim.e,
                               claim.s, note.client_nonce, note.epoch, note.deadline,
                               claim.authorization, note.signature)
        try:
            receipt = await asyncio.to_thread(
                self.vault_contract.claim_payment, self.operator, terms, pending)
        except Exception as e:  # reverted (not yet, or too late) or the node failed
            log.warning("claimPayment of %s request %d failed: %s", slot.channel_id.hex(),
                        claim.request_id, e)
            return False
        slot.close_tx = receipt["transactionHash"].to_0x_hex()
        log.info("claimPayment of %s request %d: %s", slot.channel_id.hex(),
                 claim.request_id, slot.close_tx)
        await self.mark_closed(slot)
        return True

    async def answer_dispute(self, slot: Slot, *, recorded_version: int | None) -> None:
        """A client force-close is under way: claim if σ_U is held, else challenge if newer."""
        if not slot.closing_on_chain:
            slot.closing_on_chain = True
            await self.channels.persist(slot)
        if slot.channel.status is Status.PENDING:
            log.info("client force-close of %s while σ_U is held: claiming now",
                     slot.channel_id.hex())
            await self.force_close(slot)
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
                    self.manager.challenge, self.operator, slot.channel.terms, latest
                )
            except Exception as e:
                log.warning("challenge of %s failed: %s", slot.channel_id.hex(), e)
                await self.reconcile(slot)

    async def submit_close(self, slot: Slot) -> None:
        """``closeASC`` with the co-signed final state, unless the channel settled already."""
        if slot.channel.terms.vault_mode:  # closed inside the vault: nothing to submit
            return
        if slot.onchain_closed or slot.final is None or await self.reconcile(slot):
            return
        try:
            receipt = await asyncio.to_thread(
                self.manager.close, self.operator, slot.channel.terms, slot.final
            )
        except Exception as e:
            log.warning("closeASC of %s failed: %s", slot.channel_id.hex(), e)
            await self.reconcile(slot)
            return
        slot.close_tx = receipt["transactionHash"].to_0x_hex()
        await self.mark_closed(slot)

    async def reconcile(self, slot: Slot) -> bool:
        """Read the channel's on-chain status; mark it closed if it is. True if closed."""
        onchain = await asyncio.to_thread(self.manager.channel, slot.channel_id)
        if onchain.status is OnChainStatus.CLOSED:
            await self.mark_closed(slot)
            return True
        if onchain.status is OnChainStatus.CLOSING and not slot.closing_on_chain:
            slot.closing_on_chain = True
            await self.channels.persist(slot)
        return False

    async def mark_closed(self, slot: Slot) -> None:
        self.provider_enclave.closed_on_chain(slot.channel_id)
        slot.onchain_closed, slot.force_close_due = True, False
        await self.channels.persist(slot)


class ChannelWatcher:
    """Runs :meth:`tick` every ``poll_interval`` seconds until :meth:`stop`.

    ``watching`` is called for the current settings at each tick (an operator's
    configuration object may be replaced while it runs).
    """

    def __init__(self, onchain: OnChain, channels: Channels, *,
                 watching: Callable[[], Watching], clock: Callable[[], float]) -> None:
        self.onchain = onchain
        self.channels = channels
        self.manager = onchain.manager
        self.watching = watching
        self.clock = clock
        self.w3 = onchain.manager.chain.w3
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
        for slot in await self.channels.load_active():
            async with slot.lock:
                if not await self.onchain.reconcile(slot) and slot.closing_on_chain:
                    await self.onchain.answer_dispute(slot, recorded_version=None)
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
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:  # a flaky node must not end the watch
                log.exception("a402 watcher tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(),
                                       timeout=self.watching().poll_interval)

    async def tick(self) -> None:
        """One pass: timers, then chain events, then unsubmitted cooperative closes."""
        onchain = self.onchain
        now = self.clock()
        for slot in self.channels.active():
            async with slot.lock:
                claim = onchain.claim_due(slot)
                if claim is not None:
                    log.info("no ACK on %s within Δ_ack: claiming request %d on-chain",
                             slot.channel_id.hex(), claim.request_id)
                    slot.force_close_due = True
                    await self.channels.persist(slot)
                if slot.force_close_due and not slot.onchain_closed:
                    await onchain.force_close(slot)
        await self._scan_logs()
        await self._collect_owed()
        grace = self.watching().close_grace
        for slot in self.channels.active():
            if slot.final is not None and slot.closed_at is not None \
                    and now - slot.closed_at >= grace:
                async with slot.lock:
                    await onchain.submit_close(slot)
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
            slot = self.channels.slot(bytes(raw["topics"][1]))
            if name is None or slot is None or slot.onchain_closed:
                continue
            async with slot.lock:
                if name in _SETTLEMENTS:
                    await self.onchain.mark_closed(slot)
                else:
                    args = self._decode(name, raw)
                    await self.onchain.answer_dispute(
                        slot, recorded_version=int(args["version"]))

    async def _collect_owed(self) -> None:
        operator = self.onchain.operator
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


__all__ = ["ChannelWatcher", "OnChain"]
