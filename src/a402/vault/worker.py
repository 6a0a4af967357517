"""Recovery and the watchtower: what the vault does without being asked.

One loop, one :meth:`Worker.tick` every ``poll_interval`` seconds; the first
tick after start-up is the recovery pass. Every step is bounded (network and
chain calls have timeouts, a busy channel is skipped until the next tick) and
idempotent (journaled transactions are keyed, settlements and answers are
compare-and-set), so running a tick twice, or crashing in the middle of one,
only costs time.

Per tick:

1. **Transactions** journaled but not final: mined → apply (whether a channel
   opened is read from the manager's record, not the receipt: see
   ``Channels.settle_open``; a settlement recorded, a relayed pool deposit
   credited from its ``PoolDeposited`` logs, a relayed withdrawal order
   confirmed or refused — nothing moved then); dropped → the same as reverted;
   pending → rebroadcast if the node forgot it.
2. **Watchtower** — the ASCManager's logs since the last block seen (stored,
   so a restart misses nothing):

   * ``ForceCloseInitiated``/``ForceCloseChallenged`` on one of our channels
     with an older version than our latest co-signed state →
     ``challengeForceClose`` with it (a stale client force-close loses);
     the channel takes no new request; once the deadline has passed,
     ``finalForceClose``;
   * ``ProviderForceClosed`` → extract ``t`` from the claim, open the
     result, answer the call that paid for it (④b);
   * ``ChannelClosed``/``ForceCloseFinalized`` → record the payout; a
     request still PENDING when a force-close finalized was never claimed,
     so δ came back: the call is answered ``aborted``;
   * ``PoolDeposited`` naming this vault → mirrored in the store, once per
     ``(tx hash, log index)`` (the same key a reported deposit is credited
     under), so a client's own ``depositToPool`` is counted even unreported;
   * ``PoolWithdrawn`` naming this vault, in a transaction this vault did not
     send (a client's own ``withdrawFromPool``, the exit that needs no vault)
     → mirrored in the store as a confirmed withdrawal, once.

3. **Channels** by state (at start-up, first reconciled with the chain's own
   record of each channel):

   * OPENING (a crash between debit and sending, an open that failed or is
     still in flight) → the chain decides: opened by anyone → OPEN; unopened
     in a *finalized* block stamped after the enclave's last approval to open
     it lapsed → FAILED, its pool deposit back; else ask again next tick;
   * FAILED pool channels (at start-up, then every ``_RECLAIM_EVERY`` ticks,
     those failed in the last ``_RECLAIM_HORIZON``, and older ones whose
     reclaim started, until it is final) that the chain shows
     open after all (a reorg below the block the decision was read at: their
     deposit left the client's pool balance on-chain) → force-closed with their
     opening state by the enclave's order, then ``finalForceClose``: the contract
     credits the whole deposit back to ``pooled[vault][client]`` (no token moves,
     nothing to the vault's address);
   * LOCKED → ``resume``: EXEC again (answered from the provider's record) →
     REPLY → AUTH → REVEAL; or, with the provider unreachable, let Δ_lock
     expire: no σ_U exists, so δ is released and nothing is paid;
   * PENDING → ``resume``: AUTH again, REVEAL → delivered; while the
     provider stays silent the chain decides (its ``forceClose`` reveals
     ``t``); PENDING longer than ``pending_escalation`` → ``initForceClose``
     with the latest co-signed state (the provider must then claim within
     the dispute window or the client gets δ back) → ``finalForceClose``;
   * CLOSING off-chain → finish the cooperative close (``closeASC`` with the
     co-signed final state), or escalate the same way.
   * OPEN and idle, its last ACK perhaps not at the provider (at start-up:
     resting at DELIVERED, ATTACHED or EXPIRED) → re-send it, on every tick
     until the provider has it (a repeat is ignored); a call that comes first
     carries it on its EXEC. Nothing is stuck on our side: no escalation.

4. **Calls** whose result is paid but whose answer was not recorded
   (DELIVERED) are answered from the sealed result and ``t``; calls whose
   lock was released are answered "refused, nothing paid" (retryable).

Deposits and withdrawals need no step of their own: the pool is on-chain
(:mod:`a402.vault.funds`), so a relayed deposit or withdrawal order is one
journaled transaction, finished in step 1; and a pool channel's refund goes
back into the client's pool balance on the chain itself, never to the vault's
address (which holds no tokens), so there is nothing owed to the vault to
collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from eth_utils import event_abi_to_log_topic, filter_abi_by_type
from hexbytes import HexBytes

from a402.asc import RemoteProtocolError, Status
from a402.asc_manager import OnChainStatus, terms_tuple
from a402.tee import TeeError
from a402.wire import vault_api as api

from . import records
from . import store as vault_store
from .call import ResumedCall
from .channels import Channels
from .funds import Funds
from .invoke import Invoker
from .tunnel import (
    Checkpoint,
    CheckpointReason,
    PaymentPending,
    ResultMismatch,
    TunnelError,
    recover_from_force_close,
)

log = logging.getLogger("a402.vault.worker")

_WATCHED = ("ForceCloseInitiated", "ForceCloseChallenged", "ProviderForceClosed",
            "ChannelClosed", "ForceCloseFinalized", "PoolDeposited", "PoolWithdrawn")
_BLOCK_KEY = "watch_block"
_LOG_CHUNK = 2_000
#: An OPENING channel this old is asked about on-chain (younger ones are being opened now).
_OPENING_GRACE = 60.0
#: FAILED channels are checked against the chain at start-up and every this many ticks...
_RECLAIM_EVERY = 20
#: ... those failed this recently (seconds): a reorg deeper than this is not expected.
_RECLAIM_HORIZON = 86_400.0
_UNREACHABLE = (TunnelError, TeeError, httpx.HTTPError, OSError)
#: The checkpoints an idle channel may rest at with its last ACK not at the provider: the
#: ACK waits up to ``ack_delay`` after DELIVERED, may have ridden on an EXEC given up since
#: (EXPIRED), and is owed again by the tunnel that last bound it (ATTACHED).
_ACK_MAY_BE_OWED = frozenset({CheckpointReason.DELIVERED.value, CheckpointReason.ATTACHED.value,
                              CheckpointReason.EXPIRED.value})


class Worker:
    def __init__(
        self, channels: Channels, invoker: Invoker, funds: Funds, *, poll_interval: float,
        pending_escalation: float,
    ) -> None:
        self.channels = channels
        self.invoker = invoker
        self.funds = funds
        self.store = channels.store
        self.manager = channels.manager
        self.w3 = channels.manager.chain.w3
        self.poll_interval = poll_interval
        self.pending_escalation = pending_escalation
        self._topics = {
            bytes(event_abi_to_log_topic(abi)): abi["name"]
            for abi in filter_abi_by_type("event", self.manager.contract.abi)
            if abi["name"] in _WATCHED
        }
        #: Settlement events for channels that were busy: handled on a later tick.
        self._deferred: dict[str, Any] = {}
        #: Channels whose provider did not answer: (next attempt, current delay).
        self._backoff: dict[str, tuple[float, float]] = {}
        #: Idle channels whose last ACK the recovery pass has not delivered yet.
        self._acks_owed: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.recovered = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="a402-vault-worker")

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=30)
            except TimeoutError:
                task.cancel()

    async def _run(self) -> None:
        startup = True
        while not self._stop.is_set():
            try:
                await self.tick(startup=startup)
                startup = False
                self.recovered.set()
            except Exception:  # keep watching; the next tick retries
                log.exception("vault worker tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def tick(self, *, startup: bool = False) -> None:
        await self._transactions()
        await self._events()
        for row in await asyncio.to_thread(self.store.channels, phases=vault_store.UNSETTLED):
            try:
                await self._channel(row, startup=startup)
            except Exception:
                log.exception("channel %s: recovery step failed", row.cid)
        if startup or self.ticks % _RECLAIM_EVERY == 0:
            await self._reclaim()
        await self._requests()
        self.ticks += 1

    # ------------------------------------------------------------ transactions

    async def _transactions(self) -> None:
        journal = self.channels.journal
        for record in await asyncio.to_thread(journal.unfinished):
            outcome = await asyncio.to_thread(journal.reconcile, record)
            if not outcome.final:
                continue
            if record.kind == "open":
                for cid in record.ref.split(","):  # one channel, or a createASCBatch
                    row = await asyncio.to_thread(self.store.channel, cid)
                    if row is not None and row.phase == vault_store.OPENING:
                        await self.channels.settle_open(row)  # the chain says, not the receipt
            elif record.kind == "withdraw":  # a relayed pool withdrawal order
                await asyncio.to_thread(self.funds.withdrawal_mined, record.ref, outcome.ok,
                                        record.tx_hash)
            elif record.kind == "deposit":  # a relayed pool deposit
                if outcome.receipt is not None:
                    await asyncio.to_thread(self.funds.credit_receipt, outcome.receipt)
            elif outcome.receipt is not None:
                await self.channels.settled_by(outcome.receipt)

    # --------------------------------------------------------------- watchtower

    async def _events(self) -> None:
        for cid, entry in list(self._deferred.items()):
            del self._deferred[cid]
            await self._event(entry)
        latest = int(await asyncio.to_thread(lambda: self.w3.eth.block_number))
        stored = await asyncio.to_thread(self.store.get_meta, _BLOCK_KEY)
        start = latest + 1 if stored is None else int(stored) + 1
        while start <= latest:
            end = min(latest, start + _LOG_CHUNK - 1)
            logs = await asyncio.to_thread(self.w3.eth.get_logs, {
                "address": self.manager.address, "fromBlock": start, "toBlock": end})
            for entry in logs:
                await self._event(entry)
            await asyncio.to_thread(self.store.put_meta, _BLOCK_KEY, str(end).encode())
            start = end + 1
        if stored is None:
            await asyncio.to_thread(self.store.put_meta, _BLOCK_KEY, str(latest).encode())

    async def _event(self, entry: Any) -> None:
        name = self._topics.get(bytes(entry["topics"][0]))
        if name is None:
            return
        args = dict(getattr(self.manager.contract.events, name)().process_log(entry)["args"])
        if name == "PoolDeposited":  # a deposit nobody reported (a client's own depositToPool)
            await asyncio.to_thread(self.funds.credit_log, entry, args)
            return
        if name == "PoolWithdrawn":  # perhaps a client's own exit (withdrawFromPool)
            await asyncio.to_thread(self.funds.mirror_withdrawal, entry, args)
            return
        cid = "0x" + bytes(args["channelId"]).hex()
        row = await asyncio.to_thread(self.store.channel, cid)
        if row is None or row.phase not in vault_store.FUNDED:
            return  # not ours, or already settled
        tx_hash = HexBytes(entry["transactionHash"]).to_0x_hex()
        log.info("channel %s: %s in %s", cid, name, tx_hash)
        if name in ("ForceCloseInitiated", "ForceCloseChallenged"):
            self.channels.retire(cid)
            values: dict[str, Any] = {"phase": vault_store.CLOSING,
                                      "disputed_version": int(args["version"])}
            if "deadline" in args:
                values["deadline"] = int(args["deadline"])
            await asyncio.to_thread(self.store.set_channel, cid, **values)
            fresh = await asyncio.to_thread(self.store.channel, cid)
            assert fresh is not None
            await self._answer_dispute(fresh)
        elif name == "ProviderForceClosed":
            await self._provider_claimed(row, tx_hash, args, entry)
        else:
            await self._finalized(row, tx_hash, args, entry)

    async def _reclaim(self) -> None:
        """FAILED pool channels that opened after all: force-closed with their opening state,
        finalized once the dispute window is over (see the module docstring, 3)."""
        since = time.time() - _RECLAIM_HORIZON
        for row in await asyncio.to_thread(self.store.channels, phases=(vault_store.FAILED,)):
            if row.funding != api.POOL:
                continue
            # Past the horizon, a row whose reclaim started is swept still, whatever its age,
            # until its force close is final (the settlement moves it out of FAILED): a
            # reclaim started late in the horizon is finished after it.
            if row.updated_at < since and await asyncio.to_thread(
                    self.store.tx, f"reclaim:{row.cid}") is None:
                continue
            try:
                await self._reclaim_one(row)
            except Exception:
                log.exception("channel %s: reclaiming a FAILED channel that opened failed",
                              row.cid)

    async def _reclaim_one(self, row: vault_store.Channel) -> None:
        channel_id = bytes.fromhex(row.cid[2:])
        onchain = await asyncio.to_thread(self.manager.channel, channel_id)
        if onchain.status is OnChainStatus.NONE:
            return
        log.warning("channel %s: FAILED here but %s on-chain (a reorg): reclaiming its "
                    "deposit for the pool", row.cid, onchain.status.name)
        channel = await self.channels.machine(row)  # closed in the enclave: it pays nothing
        now = int((await asyncio.to_thread(self.w3.eth.get_block, "latest"))["timestamp"])
        if onchain.status is OnChainStatus.OPEN:
            # The enclave's order for its latest state: the opening one (the enclave closed
            # the channel when it wrote the deposit off, so it never signed another).
            latest, order = self.channels.vault.force_close(channel_id, now=now)
            call = self.manager.contract.functions.initForceCloseFor(
                terms_tuple(channel.terms), latest.state.as_tuple(), latest.vault_signature,
                latest.provider_signature, order)
            await self.channels.transact(f"reclaim:{row.cid}", "init", row.cid, call)
        elif onchain.status is OnChainStatus.CLOSING and now >= onchain.deadline:
            call = self.manager.contract.functions.finalForceClose(terms_tuple(channel.terms))
            await self.channels.transact(f"final:{row.cid}", "final", row.cid, call)

    async def _answer_dispute(self, row: vault_store.Channel) -> None:
        """A force-close recorded an older state than ours: challenge with ours."""
        channel = await self.channels.machine(row)
        ours = channel.latest_state()
        if row.disputed_version is None or ours.state.version <= row.disputed_version:
            return
        call = self.channels.state_call("challengeForceClose", channel.terms, ours)
        if await self.channels.transact(f"challenge:{row.cid}:{ours.state.version}", "challenge",
                                        row.cid, call):
            log.warning("channel %s: a stale force-close (version %d) was challenged with "
                        "version %d", row.cid, row.disputed_version, ours.state.version)

    async def _provider_claimed(self, row: vault_store.Channel, tx_hash: str, args: dict[str, Any],
                                entry: Any) -> None:
        """④b: the provider settled on-chain; extract t and answer the call it paid for."""
        async with self._locked(row) as got:
            if not got:
                self._deferred[row.cid] = entry
                return
            channel = await self.channels.machine(row)
            key = row.request_key
            if channel.status is Status.PENDING and key is not None:
                call = ResumedCall(key)
                try:
                    paid = await asyncio.to_thread(recover_from_force_close, channel,
                                                   self.manager, tx_hash=tx_hash)
                except RemoteProtocolError as e:
                    paid = None
                    log.error("channel %s: the on-chain claim does not open: %s", row.cid, e)
                    await self.invoker.record(
                        key, 502, {"error": api.PROTOCOL_VIOLATION, "message": str(e),
                                   "outcome": api.PAID}, outcome=api.PAID, reason=e.reason,
                        transaction=tx_hash)
                await self.channels.persist(
                    Checkpoint.of(channel, CheckpointReason.FORCE_CLOSED, call=call))
                if paid is not None:
                    await self.invoker.record_paid(key, paid, channel.channel_id, row.provider)
            await self.channels.settle(row.cid, int(args["clientPayout"]),
                                       int(args["providerPayout"]), tx_hash)

    async def _finalized(self, row: vault_store.Channel, tx_hash: str, args: dict[str, Any],
                         entry: Any) -> None:
        async with self._locked(row) as got:
            if not got:
                self._deferred[row.cid] = entry
                return
            await self.channels.settle(row.cid, int(args["clientPayout"]),
                                       int(args["providerPayout"]), tx_hash)

    # ----------------------------------------------------------------- channels

    @contextlib.asynccontextmanager
    async def _locked(self, row: vault_store.Channel) -> AsyncIterator[bool]:
        """The channel's pair lock if it is free now (a busy channel waits for the next tick)."""
        lock = self.channels.pair_lock(row.client, row.provider)
        if lock.locked():
            yield False
            return
        async with lock:
            yield True

    async def _channel(self, row: vault_store.Channel, *, startup: bool) -> None:
        if row.phase == vault_store.OPENING:
            # The chain decides (settle_open): opened by anyone → OPEN; still unopened once
            # every approval to open it has lapsed → FAILED, its pool debit back; else wait.
            # A journaled transaction is settled as soon as it is final, in _transactions.
            if time.time() - row.updated_at > _OPENING_GRACE:
                await self.channels.settle_open(row)
            return
        if startup and not await self._reconcile_onchain(row):
            return
        if not startup and not _needs_attention(row) and row.cid not in self._acks_owed:
            return  # an idle open channel: nothing to read again, nothing to do
        if (not startup and row.deadline is None and row.phase != vault_store.CLOSING
                and self.channels.pair_lock(row.client, row.provider).locked()):
            return  # a call is running on it and takes it to its end: nothing to resume
        fresh = await asyncio.to_thread(self.store.channel, row.cid)
        if fresh is None or fresh.phase not in vault_store.FUNDED:
            return
        row = fresh
        waiting = self._backoff.get(row.cid)
        # A provider that did not answer lately is not asked again on every tick.
        backing_off = waiting is not None and time.monotonic() < waiting[0]
        if row.deadline is not None:
            await self._dispute(row, resume=not backing_off)
        elif backing_off:
            return
        elif row.status in (Status.LOCKED.value, Status.PENDING.value):
            await self._resume(row)
        elif row.phase == vault_store.CLOSING:
            await self._finish_close(row)
        elif row.cid in self._acks_owed or (startup and _ack_may_be_owed(row)):
            # The last ACK may not have left before the restart: without it the provider
            # takes no new request and would claim on-chain after Δ_ack. Re-send it (a
            # repeat is ignored), on later ticks too until the provider has it.
            self._acks_owed.add(row.cid)
            if await self._resume(row):
                self._acks_owed.discard(row.cid)

    async def _reconcile_onchain(self, row: vault_store.Channel) -> bool:
        """At start-up: apply what the chain did while we were down. False if settled."""
        onchain = await asyncio.to_thread(self.manager.channel, bytes.fromhex(row.cid[2:]))
        if onchain.status is OnChainStatus.CLOSED:
            logs = await asyncio.to_thread(self.w3.eth.get_logs, {
                "address": self.manager.address, "fromBlock": 0, "toBlock": "latest",
                "topics": [None, row.cid]})
            for entry in logs:
                await self._event(entry)
            return False
        if onchain.status is OnChainStatus.CLOSING and row.deadline is None:
            self.channels.retire(row.cid)
            await asyncio.to_thread(self.store.set_channel, row.cid, phase=vault_store.CLOSING,
                                    deadline=onchain.deadline, disputed_version=onchain.version)
        return True

    async def _dispute(self, row: vault_store.Channel, *, resume: bool) -> None:
        """A force-close is under way: keep our newest state recorded; finalize when due."""
        await self._answer_dispute(row)
        if resume and row.status in (Status.LOCKED.value, Status.PENDING.value):
            await self._resume(row)  # a REVEAL may still come; the provider may also claim
        now = int((await asyncio.to_thread(self.w3.eth.get_block, "latest"))["timestamp"])
        assert row.deadline is not None
        if now >= row.deadline:
            terms = (await self.channels.machine(row)).terms
            call = self.manager.contract.functions.finalForceClose(terms_tuple(terms))
            await self.channels.transact(f"final:{row.cid}", "final", row.cid, call)

    async def _resume(self, row: vault_store.Channel) -> bool:
        """``tunnel.resume`` the channel; whether it finished (False: busy, or try later)."""
        async with self._locked(row) as got:
            if not got:
                return False
            channel = await self.channels.machine(row)
            key = row.request_key
            call = None if key is None else ResumedCall(key)
            try:
                tunnel, channel = await self.channels.bound(row)
                paid = await tunnel.resume(channel, call=call)
                if paid is not None and key is not None:
                    await self.invoker.record_paid(key, paid, channel.channel_id, row.provider)
            except PaymentPending:
                self._later(row.cid)
                await self._maybe_escalate(row)
            except ResultMismatch as e:  # paid, for a result that answers something else
                if key is not None:
                    await self.invoker.record_paid(key, e.paid, channel.channel_id, row.provider)
            except _UNREACHABLE as e:
                log.info("channel %s: provider unreachable (%s)", row.cid, e)
                self._later(row.cid)
                if channel.status is Status.LOCKED:
                    channel.poll(now=time.time())  # Δ_lock: no σ_U exists, release δ
                    if channel.status is Status.OPEN:
                        await self.channels.persist(
                            Checkpoint.of(channel, CheckpointReason.EXPIRED, call=call))
                elif channel.status is not Status.OPEN:  # an owed ACK is no reason
                    await self._maybe_escalate(row)
            else:
                self._backoff.pop(row.cid, None)
                return True
            return False

    def _later(self, cid: str) -> None:
        """Try this channel again later, waiting twice as long each time (up to 30 s)."""
        delay = min(30.0, 2 * self._backoff.get(cid, (0.0, self.poll_interval / 2))[1])
        self._backoff[cid] = (time.monotonic() + delay, delay)

    async def _maybe_escalate(self, row: vault_store.Channel) -> None:
        """PENDING (or a close) stuck too long: start a force-close with our latest state."""
        since = row.pending_since or row.updated_at
        if row.deadline is not None or time.time() - since < self.pending_escalation:
            return
        channel = await self.channels.machine(row)
        # The enclave's order, for its own latest co-signed state; the gas account sends it.
        latest, order = self.channels.vault.force_close(
            channel.channel_id, now=await asyncio.to_thread(self.manager.chain_time))
        call = self.manager.contract.functions.initForceCloseFor(
            terms_tuple(channel.terms), latest.state.as_tuple(), latest.vault_signature,
            latest.provider_signature, order)
        if await self.channels.transact(f"init:{row.cid}", "init", row.cid, call):
            log.warning("channel %s: stuck since %.0f; force-close started", row.cid, since)

    async def _finish_close(self, row: vault_store.Channel) -> None:
        async with self._locked(row) as got:
            if not got:
                return
            channel = await self.channels.machine(row)
            if row.final_state is not None:
                await self.channels.submit_close(row.cid, channel.terms,
                                                 records.signed_from_json(row.final_state))
                return
            try:
                await self.channels.close(row)
            except _UNREACHABLE as e:
                log.info("channel %s: close not finished (%s)", row.cid, e)
                self._later(row.cid)
                await self._maybe_escalate(row)
            except RemoteProtocolError as e:
                log.warning("channel %s: close refused (%s)", row.cid, e)
                await self._maybe_escalate(row)

    # ------------------------------------------------------------------ calls

    async def _requests(self) -> None:
        for row in await asyncio.to_thread(self.store.requests, (vault_store.DELIVERED,
                                                                 vault_store.RELEASED)):
            if self.invoker.is_running(row.key):
                continue
            try:
                if row.state == vault_store.DELIVERED:
                    await self._answer_delivered(row)
                else:
                    body = {"error": api.LOCK_RELEASED, "outcome": api.REFUSED,
                            "idempotencyKey": row.key.split(":", 1)[1],
                            "message": "the request was given up before it was paid; "
                                       "nothing was paid"}
                    await self.invoker.record(row.key, 503, body, outcome=api.REFUSED,
                                              reason=api.LOCK_RELEASED, retryable=True,
                                              from_states=(vault_store.RELEASED,))
            except Exception:
                log.exception("call %s: could not record its answer", row.key)

    async def _answer_delivered(self, row: vault_store.Request) -> None:
        """A paid call whose answer was never recorded: rebuild it from the sealed halves."""
        enclave = self.channels.enclave
        assert row.secret is not None and row.sealed_result is not None
        assert row.channel_id is not None and row.request_id is not None
        secret = records.unseal_json(enclave, "secret", row.key, row.secret)
        sealed = enclave.unseal(records.label("result", row.key), row.sealed_result)
        channel_id = bytes.fromhex(row.channel_id[2:])
        response = records.open_result(bytes.fromhex(secret["t"]), sealed, channel_id,
                                       row.request_id)
        channel = await asyncio.to_thread(self.store.channel, row.channel_id)
        payment = records.Payment(
            int(row.amount or 0), self.manager.token, self.channels.network,
            channel.provider if channel else "", channel_id, row.request_id, secret["receipt"])
        body = records.answer_json(api.PAID, row.key.split(":", 1)[1], response=response,
                                   payment=payment)
        await self.invoker.record(row.key, 200, body, outcome=api.PAID,
                                  amount=int(row.amount or 0), from_states=(vault_store.DELIVERED,))


def _ack_may_be_owed(row: vault_store.Channel) -> bool:
    """Whether an idle channel (at start-up) may owe the provider its last ACK."""
    return (row.status == Status.OPEN.value and row.version > 0
            and row.checkpoint in _ACK_MAY_BE_OWED)


def _needs_attention(row: vault_store.Channel) -> bool:
    """Whether a channel (as listed at the start of a tick) may have work for the worker:
    a dispute, a request in flight, or a close under way."""
    return (row.deadline is not None or row.phase == vault_store.CLOSING
            or row.status in (Status.LOCKED.value, Status.PENDING.value))
