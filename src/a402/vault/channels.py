"""The vault's channels: attested tunnels, live state machines, checkpoints, open and close.

This is where the store, the chain and :class:`~a402.vault.tunnel.ProviderTunnel`
meet. Two rules carry the safety argument:

* **Checkpoint before message.** :meth:`Channels.persist` is every tunnel's
  ``persist``: it seals the channel's snapshot in the vault enclave and writes
  it, together with the progress of the request the channel carries, in one
  database transaction; the tunnel sends nothing until it returns.
* **Debit before transaction.** A pool-funded channel's deposit leaves the
  client's balance in the host's store (its mirror of the on-chain
  ``pooled[vault][client]``) in the transaction that creates the channel row,
  before ``createASCFromPool`` is approved; the transaction is journaled before
  it is broadcast (:mod:`a402.vault.txjournal`); a channel that never opens
  gives the deposit back to the mirror (the chain never debited it).
  Settlement mirrors what the chain credited back to the pool, once. The
  store only mirrors: the contract debits the real balance, and refuses a
  deposit beyond it, whatever the store says.
* **The chain says whether a channel opened** (:meth:`Channels.settle_open`),
  never our own receipt: anyone may send a copy of our ``createASC`` (or of
  the enclave's approval in it) first, and then ours reverts although the
  channel is open. A channel is FAILED, and its pool deposit given back, only
  once the manager's record shows it unopened in a block stamped after the
  enclave's last approval to open it lapsed (``A402Open(id, deadline)``);
  until then it stays OPENING, since that approval could still be mined.

Keys. The vault's address is its enclave's attested key
(:mod:`a402.vault_enclave`): every channel's ``vault``, the vault its clients
pool with on-chain, the signer of every approval, state and σ_U. The enclave's
code holds the channels' machines (the host drives
:class:`~a402.vault_enclave.EnclaveChannel` proxies), and approves each channel
it opens. The host's ``account`` only pays gas: it sends
``createASC(FromPool)`` with the enclave's
approval (dated from the chain's latest block time, lapsing a few minutes
later), ``closeASC`` with the co-signed final state.

Funding. ``pool``: the client is the channel's on-chain client and its
deposit is debited from its on-chain pool balance (``createASCFromPool``: no
token moves); every exit credits the client's share back to that balance on
the chain itself, and the store mirrors it. ``wallet``: the client is
the on-chain client; the deposit moves from its wallet by an EIP-3009
``receiveWithAuthorization`` whose nonce is the channel id (the client signs
the terms the vault proposes, answering a 428), refunds go straight back to
its wallet, and the client can force-close without the vault.

Aggregation: pool channels that open together share one ``createASCFromPoolBatch``,
and cooperative closes that happen together one ``closeASCBatch``
(:mod:`a402.vault.aggregate`); the journal records such a transaction once,
its ``ref`` naming every channel in it.

Parallelism: one request in flight per channel (the tunnel's lock), and one
frame in flight per tunnel (Noise counters arrive in order), so each provider gets a small pool of
tunnels and each channel is pinned to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from a402.asc import ChannelTerms, SignedState, Status
from a402.asc import snapshot as snap
from a402.asc_manager import ASCManager, OnChainStatus, terms_tuple
from a402.chain.deploy import TokenInfo
from a402.chain.rpc import ChainUnavailable, node_errors
from a402.chain.tx import TransactionFailed, contract_at
from a402.evm.address import address_key, to_checksum
from a402.evm.eip3009 import RECEIVE_WITH_AUTHORIZATION_TYPES
from a402.tee import AttestationPolicy, AttestationVerifier, Enclave, EnclaveError
from a402.vault_enclave import (
    EnclaveChannel,
    OpenApproval,
    SignedCall,
    VaultEnclave,
    pool_deposit_cap,
)
from a402.wire import jsonstrict
from a402.wire import vault_api as api

from . import records
from . import store as vault_store
from .aggregate import Aggregator
from .ledger import Ledger, LedgerBusy
from .settings import Batching, Connections, Deposits, Timing
from .tunnel import Checkpoint, CheckpointReason, ProviderTunnel, canonical_endpoint
from .txjournal import TxJournal

log = logging.getLogger("a402.vault")


class VaultError(Exception):
    """A call the vault answers with ``status`` and a machine-readable ``reason``.

    ``retryable``: nothing was paid and the same idempotency key may run again.
    """

    def __init__(
        self, status: int, reason: str, detail: str = "", *, retryable: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.reason, "message": self.detail, **self.extra}


#: The HTTP status of the enclave's refusals of a signed call (nothing was signed for it),
#: each answered with its own reason; any other reason is answered 403 with its own name.
_REFUSALS = {api.PRICE_ABOVE_MAXIMUM: 402, api.REPLAYED_CALL: 401, api.STALE_CALL: 401,
             api.WRONG_LIFE: 401, api.CLIENT_OUTDATED: 400, api.BAD_REQUEST: 400,
             api.CREATED_AFTER_SIGNATURE: 400, api.UNAUTHENTICATED: 401,
             api.BAD_SIGNATURE: 401, "future_call": 400, "not_a_pool_channel": 400,
             # One signed call opens at most one pool channel, within what it allows: a
             # new call (a new idempotency key) opens the next one.
             "call_used": 409, "deposit_too_large": 400}
#: Refusals the client may retry as they are (the same key, the same ``createdAt``).
_RETRYABLE = frozenset({api.CREATED_AFTER_SIGNATURE, "future_call"})


def refusal(e: EnclaveError) -> VaultError:
    """The answer to the vault enclave refusing a client's call: its own reason and status
    (each of its messages says what was paid: nothing, or for ``replayed_call`` that the
    call was paid, or may have been, already)."""
    return VaultError(_REFUSALS.get(e.reason, 403), e.reason, e.detail,
                      retryable=e.reason in _RETRYABLE)


def hex_id(channel_id: bytes) -> str:
    return "0x" + channel_id.hex()


def batch_id(members: Sequence[vault_store.Channel] | Sequence[str]) -> str:
    """A journal key part naming a batch by its channels (one channel: its id)."""
    cids = [m if isinstance(m, str) else m.cid for m in members]
    if len(cids) == 1:
        return cids[0]
    return "batch-" + hashlib.sha256(",".join(cids).encode()).hexdigest()[:32]


class NoUsableChannel(Exception):
    """No OPEN channel can pay, and the caller may not close or open one."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    """What one checkpoint writes (:meth:`Channels.persist`)."""

    values: dict[str, Any]
    key: str | None
    request: dict[str, Any] | None
    claim: vault_store.Claim | None
    log: list[tuple[int, int, bytes]]
    #: A held DELIVERED: if it cannot be written, its ACK must never leave.
    held: bool = False


class Channels:
    """Tunnels, live channels and their durable state, for one vault."""

    def __init__(
        self, *, account: LocalAccount, manager: ASCManager, token: TokenInfo,
        store: vault_store.VaultStore, journal: TxJournal, enclave: Enclave,
        vault: VaultEnclave, ledger: Ledger, verifiers: Sequence[AttestationVerifier],
        policy: AttestationPolicy, timing: Timing, deposits: Deposits, batching: Batching,
        connections: Connections,
    ) -> None:
        self.account = account  # pays gas, and nothing else
        self.vault = vault
        self.ledger = ledger  # every change of the enclave's ledger goes through it
        self.address = vault.checksum_address
        self.manager = manager
        self.token = token
        self.network = manager.chain.network
        self.store = store
        self.journal = journal
        self.enclave = enclave
        self.verifiers = list(verifiers)
        self.policy = policy
        self.timing = timing
        self.deposits = deposits
        self.connections = connections
        # Opens and closes that happen together share a transaction (aggregate.py).
        self._opens = Aggregator(self._send_opens, window=batching.batch_window,
                                 limit=batching.batch_limit)
        self._closes = Aggregator(self._send_closes, window=batching.batch_window,
                                  limit=batching.batch_limit)
        self.live: dict[bytes, EnclaveChannel] = {}
        #: Held DELIVERED checkpoints, by channel (see :meth:`persist`)...
        self._held: dict[bytes, _Write] = {}
        #: ... and what serialises each channel's writes (:meth:`_writing`), with how many
        #: writes of each are under way or waiting for the lock.
        self._write_locks: dict[bytes, asyncio.Lock] = {}
        self._writers: dict[bytes, int] = {}
        #: How many times each channel's machine was forgotten (:meth:`_forget`): a
        #: checkpoint made before that (waiting for the write lock) is never written.
        #: The lock and this count go with a settled channel (:meth:`_prune`); the count of
        #: writers empties itself.
        self._forgotten: dict[bytes, int] = {}
        self._tunnels: dict[tuple[str, int], ProviderTunnel] = {}
        self._attached: dict[tuple[str, int], set[bytes]] = {}
        self._tunnel_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._pair_locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: The OPEN channel each (client, provider) used last, found again without a read;
        #: :meth:`retire` forgets a channel as soon as it takes no new request.
        self._usable: dict[tuple[str, str], vault_store.Channel] = {}
        #: Answers a call whose channel settled without it (set by the service).
        self.on_unfinished: Callable[[str, str | None], Awaitable[Any]] | None = None
        #: Fail-over: whether this process may still send frames (set by the service).
        self.may_send: Callable[[], bool] | None = None

    # ------------------------------------------------------------------ tunnels

    def _slot(self, endpoint: str, channel_id: bytes | None) -> tuple[str, int]:
        size = max(1, self.connections.tunnels_per_provider)
        return (canonical_endpoint(endpoint),
                0 if channel_id is None else int.from_bytes(channel_id[:4]) % size)

    async def tunnel(self, endpoint: str, channel_id: bytes | None = None) -> ProviderTunnel:
        """A connected, attested tunnel with ``endpoint``; the channel's own if given."""
        slot = self._slot(endpoint, channel_id)
        tunnel = self._tunnels.get(slot)
        if tunnel is not None and tunnel.info is not None:  # connected: no lock to take
            return tunnel
        async with self._tunnel_locks.setdefault(slot, asyncio.Lock()):
            tunnel = self._tunnels.get(slot)
            if tunnel is None or tunnel.info is None:
                # Each tunnel has its own connection: one frame is in flight per tunnel
                # anyway, and a pool shared by many tunnels costs CPU per request.
                tunnel = ProviderTunnel(
                    endpoint, enclave=self.enclave, verifiers=self.verifiers, policy=self.policy,
                    vault=self.vault, network=self.network, persist=self.persist,
                    timeout=self.connections.http_timeout, may_send=self.may_send,
                    durable=self.durable,
                )
                await tunnel.connect()  # attestation errors propagate; nothing is cached
                self._tunnels[slot] = tunnel
                self._attached[slot] = set()
            return tunnel

    async def bound(self, row: vault_store.Channel, endpoint: str | None = None
                    ) -> tuple[ProviderTunnel, EnclaveChannel]:
        """The channel's tunnel and live machine, attached (OPEN sent) on that tunnel.

        ``endpoint`` is where the provider is reached now (its 402's endpoint), by default
        the one the channel was last bound at. A provider whose gateway restarted at
        another URL knows the channel only once it is bound there, so a channel is
        attached on every endpoint it is used at, and the store records the newest (for
        the close). Safe because the endpoint is only an address: the tunnel to it is
        attested, and :meth:`ProviderTunnel.attach` refuses a channel whose provider
        address or enclave key is not the tunnel's attested ones (and the provider's
        enclave accepts OPEN only for its own key), so another provider at that URL can
        never be bound to, or paid on, this channel.
        """
        endpoint = canonical_endpoint(endpoint or row.endpoint)
        channel = await self.machine(row)
        tunnel = await self.tunnel(endpoint, channel.channel_id)
        slot = self._slot(endpoint, channel.channel_id)
        attached = self._attached[slot]
        if channel.channel_id not in attached:
            await tunnel.attach(channel)
            # Bound here now: an endpoint it was bound at before (a gateway since gone)
            # binds it again if the provider comes back there.
            for other, ids in self._attached.items():
                if other != slot and channel.channel_id in ids:
                    ids.discard(channel.channel_id)
                    self._tunnels[other].detach(channel.channel_id)
            attached.add(channel.channel_id)
            if endpoint != canonical_endpoint(row.endpoint):
                await asyncio.to_thread(self.store.set_channel, row.cid, endpoint=endpoint)
                self.retire(row.cid)  # the remembered row names the old endpoint
        return tunnel, channel

    def retire(self, cid: str) -> None:
        """``cid`` takes no new request any more (closing, or settled)."""
        for pair in [p for p, row in self._usable.items() if row.cid == cid]:
            del self._usable[pair]

    def pair_lock(self, client: str, provider: str) -> asyncio.Lock:
        """Serialises a client's work with one provider (channel choice, requests, close)."""
        pair = (address_key(client), address_key(provider))
        return self._pair_locks.setdefault(pair, asyncio.Lock())

    async def aclose(self) -> None:
        await self.write_held()
        for tunnel in self._tunnels.values():
            await tunnel.aclose()
        self._tunnels.clear()

    # ---------------------------------------------------------------- live state

    async def machine(self, row: vault_store.Channel) -> EnclaveChannel:
        """The channel's machine in the enclave, restored from its sealed record if needed."""
        channel_id = bytes.fromhex(row.cid[2:])
        channel = self.live.get(channel_id)
        if channel is not None:
            return channel
        channel = self.vault.channel(channel_id)
        if channel is None:
            if row.snapshot is None:
                raise EnclaveError("unknown_channel", f"no record of {row.cid} to restore")
            log = await asyncio.to_thread(self.store.consumed_log, row.cid)
            channel = self.vault.channel(channel_id) or self.vault.restore(
                channel_id, row.snapshot, log)
        self.live[channel_id] = channel
        return channel

    async def prepare(self, client: str) -> None:
        """Load every channel of ``client`` the enclave must see before it pays for the
        client's next call (after a restart: the nonces they consumed)."""
        for channel_id in self.vault.missing(client):
            row = await asyncio.to_thread(self.store.channel, hex_id(channel_id))
            if row is None or row.snapshot is None:
                raise VaultError(503, api.CHANNEL_RECOVERING,
                                 f"channel {hex_id(channel_id)} has no record to restore")
            log = await asyncio.to_thread(self.store.consumed_log, row.cid)
            self.vault.restore(channel_id, row.snapshot, log)

    async def persist(self, checkpoint: Checkpoint) -> None:
        """Every tunnel's ``persist``: sealed snapshot + request progress, one transaction.

        The request is the checkpoint's ``call`` (:class:`~a402.vault.tunnel.CallRecord`,
        handed to the tunnel with the request): LOCKED writes its claim too if it is not
        recorded yet, DELIVERED its final answer if it has one — one commit each fewer.

        A deferrable DELIVERED (the tunnel's **A held DELIVERED**) of a call that
        :meth:`~a402.vault.tunnel.CallRecord.continues` (a stream's group, not its last)
        is *held*: its answer is made (so the call can return it) but written only with
        the channel's next checkpoint — the next group's LOCKED, in the same transaction —
        or by :meth:`durable` (before its ACK leaves on its own), :meth:`write_held` or
        :meth:`aclose`. Its ACK cannot leave before either: it rides on the next EXEC,
        which leaves after that LOCKED is durable. If the next checkpoint's claim was
        taken (:class:`~a402.vault.store.ClaimTaken`: nothing of that transaction was
        written), the held one is written on its own first. If it cannot be written at
        all, the channel's unsent ACK is dropped (it must never leave) and the machine is
        unloaded: it restarts from AUTHORIZED, and :meth:`ProviderTunnel.resume
        <a402.vault.tunnel.ProviderTunnel.resume>` gets the same REVEAL again. Writes of
        one channel are serialised here, in order, so a held snapshot never lands after
        a newer one; and a checkpoint that waited for the lock behind a write that failed
        (its machine forgotten then) is refused, never written: its snapshot, made from
        that machine, may count what the failed write did not record.
        """
        channel_id = checkpoint.channel_id
        made_from = self._forgotten.get(channel_id, 0)  # the checkpoint was made just now
        async with self._writing(channel_id):
            if self._forgotten.get(channel_id, 0) != made_from:
                # A write that ended before this one failed (a held DELIVERED written on
                # its own, for a read of the records or an ACK): the machine this
                # checkpoint was made from is forgotten, and its snapshot may count what
                # that write failed to record. Not durable, so not sent.
                raise VaultError(503, api.CHANNEL_RECOVERING,
                                 f"nothing was paid: channel {hex_id(channel_id)} restarts "
                                 "from its last durable state", retryable=True)
            held = self._held.pop(channel_id, None)
            try:
                ledger_changed = self.vault.ledger_unsaved
                if ledger_changed:
                    # The enclave's ledger changed with this step (a mandate's budget
                    # reserved or spent): stored before the step's message leaves, like the
                    # channel's record.
                    await self.ledger.achange(lambda: None)
                plan = self._plan(checkpoint)
            except BaseException:
                # Nothing of this step is durable (nor the held DELIVERED taken above): as
                # for a failed write, its ACK must never leave and the machine that ran
                # ahead of the database is forgotten (it would otherwise resume this step's
                # EXEC with that ACK, under the key the database still names).
                self._forget(channel_id, ack=held is not None)
                raise
            call = checkpoint.call
            if (checkpoint.deferrable and held is None and not ledger_changed
                    and call is not None and checkpoint.paid is not None
                    and call.continues(checkpoint.paid)):
                self._held[channel_id] = dataclasses.replace(plan, held=True)
                return
            await self._write(channel_id, [plan] if held is None else [held, plan])

    async def durable(self, channel_id: bytes) -> None:
        """Write the channel's held DELIVERED checkpoint, if any (the tunnels' ``durable``:
        called before an ACK leaves on its own). Raises if it could not be written (the
        ACK has then been dropped, see :meth:`persist`). Always through the channel's write
        lock, so that a write under way (one that took the held checkpoint: a fold, or
        :meth:`write_held`) has finished when this returns."""
        async with self._writing(channel_id):
            held = self._held.pop(channel_id, None)
            if held is not None:
                await self._write(channel_id, [held])

    async def write_held(self) -> None:
        """Write every held DELIVERED checkpoint now: before the vault reports a client's
        records (so what it reports has every group delivered), and at shutdown. A
        channel being written counts too: the write under way may be a held checkpoint
        another caller took (a read of the records, an ACK leaving on its own), and it
        is durable only once that write returns (:meth:`durable` waits for it). The
        channels are waited for together (each one's writes stay in order)."""

        async def write(channel_id: bytes) -> None:
            if channel_id not in self._held and channel_id not in self._writers:
                return  # written (and maybe settled and pruned) since: nothing to wait for
            try:
                await self.durable(channel_id)
            except Exception:  # the channel restarts from AUTHORIZED: see persist
                log.exception("channel %s: a held DELIVERED checkpoint could not be written",
                              hex_id(channel_id))

        await asyncio.gather(*(write(c) for c in {*self._held, *self._writers}))

    @contextlib.asynccontextmanager
    async def _writing(self, channel_id: bytes) -> AsyncIterator[None]:
        """Hold the channel's write lock, counted among its writers from the call on (a
        checkpoint's :meth:`persist` reads the forget count just before, with no wait
        in between: while it waits it is a writer, so :meth:`_prune` keeps the count)."""
        self._writers[channel_id] = self._writers.get(channel_id, 0) + 1
        try:
            async with self._write_locks.setdefault(channel_id, asyncio.Lock()):
                yield
        finally:
            left = self._writers[channel_id] - 1
            if left:
                self._writers[channel_id] = left
            else:
                del self._writers[channel_id]

    def _prune(self, channel_id: bytes) -> None:
        """Forget a settled channel's write lock and forget count, unless a write of it is
        under way or waiting (then they stay: a few bytes). A write after this makes new
        ones, from zero: no checkpoint made before can be waiting to compare its count."""
        if channel_id not in self._writers and channel_id not in self._held:
            self._write_locks.pop(channel_id, None)
            self._forgotten.pop(channel_id, None)

    def _plan(self, checkpoint: Checkpoint) -> _Write:
        """What ``checkpoint`` writes: the channel's columns and its request's progress."""
        call = checkpoint.call
        key = None if call is None else call.key
        reason = checkpoint.reason
        values: dict[str, Any] = {
            "snapshot": checkpoint.snapshot,  # sealed by the enclave's code
            "status": checkpoint.status.value, "checkpoint": reason.value,
            "version": checkpoint.version,
            "free": str(checkpoint.free), "locked": str(checkpoint.locked),
            "provider_balance": str(checkpoint.provider_balance),
        }
        request: dict[str, Any] | None = None
        claim: vault_store.Claim | None = None
        if reason is CheckpointReason.LOCKED:
            claim = None if call is None else call.claim
            values["request_key"] = key
            request = {"state": vault_store.LOCKED, "channel_id": hex_id(checkpoint.channel_id),
                       "amount": str(checkpoint.locked),
                       "request_id": checkpoint.next_request_id - 1}
        elif reason is CheckpointReason.AUTHORIZED and key is not None:
            values["pending_since"] = time.time()
            assert checkpoint.reply is not None
            sealed = checkpoint.reply.sealed_result
            request = {"state": vault_store.AUTHORIZED,
                       "sealed_result": self.enclave.seal(records.label("result", key), sealed)}
        elif reason is CheckpointReason.DELIVERED and key is not None:
            values.update(request_key=None, pending_since=None)
            secret, signed = checkpoint.secret, checkpoint.receipt
            assert secret is not None and signed is not None
            receipt = records.receipt_json(checkpoint.channel_id, signed)
            request = {"state": vault_store.DELIVERED, "secret": records.seal_json(
                self.enclave, "secret", key, {"t": secret.hex(), "receipt": receipt})}
            final = None if call is None or checkpoint.paid is None else call.final(
                checkpoint.paid)
            if final is not None:
                request.update(final)  # DELIVERED and answered: DONE
        elif reason is CheckpointReason.EXPIRED:
            values.update(request_key=None, pending_since=None)
            request = {"state": vault_store.RELEASED} if key is not None else None
        elif reason is CheckpointReason.CLOSING:
            values["phase"] = vault_store.CLOSING
        elif reason is CheckpointReason.FORCE_CLOSED:
            values.update(request_key=None, pending_since=None)
        return _Write(values, key, request, claim,
                      [(e.seq, e.newest, e.entry) for e in checkpoint.log])

    async def _write(self, channel_id: bytes, plans: Sequence[_Write]) -> None:
        """``plans`` (oldest first; only the last may claim) in one transaction: the
        channel's columns as the newest leaves them, every request's progress."""
        *earlier, last = plans
        values: dict[str, Any] = {}
        for plan in plans:
            values.update(plan.values)
        try:
            await self.store.save_checkpoint(
                hex_id(channel_id), values, last.key, last.request, claim=last.claim,
                log=[entry for plan in plans for entry in plan.log],
                others=[(p.key, p.request) for p in earlier if p.key and p.request])
        except BaseException as e:
            lost = any(plan.held for plan in plans)
            if earlier and isinstance(e, vault_store.ClaimTaken):
                # Nothing was written: the held checkpoints on their own, then the refusal.
                try:
                    await self._write(channel_id, earlier)
                    lost = False
                except BaseException:
                    pass  # _write dropped the ACK and unloaded the machine already
            self._forget(channel_id, ack=lost)
            raise

    def _forget(self, channel_id: bytes, *, ack: bool) -> None:
        """A checkpoint of ``channel_id`` is not durable, so not sent: forget the machine
        that ran ahead of the database (here and in the enclave; the next use restores the
        last durable state) and, with ``ack`` (a held DELIVERED was not written), the
        channel's unsent ACK."""
        if ack:
            for tunnel in self._tunnels.values():
                tunnel.forget_ack(channel_id)
        self._forgotten[channel_id] = self._forgotten.get(channel_id, 0) + 1
        self.live.pop(channel_id, None)
        self.vault.unload(channel_id)

    # ------------------------------------------------------------------ opening

    def _lock_timeout(self, tunnel: ProviderTunnel) -> float:
        assert tunnel.info is not None
        return max(self.timing.lock_timeout, tunnel.info.lock_timeout
                   + self.timing.lock_margin)

    def deposit_for(self, price: int, balance: int) -> int:
        """How much a new pool channel escrows: a multiple of the price, within the balance."""
        s = self.deposits
        wanted = max(price * s.deposit_multiple, s.min_deposit, price)
        if s.max_deposit is not None:
            wanted = max(min(wanted, s.max_deposit), price)
        return min(wanted, balance)

    async def find_or_open(
        self, client: str, tunnel: ProviderTunnel, price: int, *, funding: str,
        wallet_deposit: int | None, authorization: dict[str, str] | None,
        reuse_only: bool = False, call: SignedCall | None = None,
    ) -> EnclaveChannel:
        """An OPEN channel of ``client`` with this provider that can pay ``price``.

        Call with :meth:`pair_lock` held. A channel too poor for the price is
        closed cooperatively (its rest comes back) and a new one is opened; with
        ``reuse_only`` (for a call not recorded yet, which must touch no chain),
        :class:`NoUsableChannel` instead.
        """
        info = tunnel.info
        assert info is not None
        provider = "0x" + info.provider.hex()
        pair = (address_key(client), provider)
        last = self._usable.get(pair)
        if last is not None and last.terms["providerKey"] == info.provider_key.hex():
            channel = self.live.get(bytes.fromhex(last.cid[2:]))
            if channel is not None and channel.status is Status.OPEN and channel.free >= price:
                await self.bound(last, tunnel.endpoint)
                self._usable[pair] = last if last.endpoint == tunnel.endpoint else (
                    dataclasses.replace(last, endpoint=tunnel.endpoint))
                return channel
        for row in reversed(await asyncio.to_thread(
                self.store.channels, client=client, provider=provider, phases=(vault_store.OPEN,))):
            if row.terms["providerKey"] != info.provider_key.hex():
                continue  # an older enclave of this provider: leave it to close
            channel = await self.machine(row)
            if channel.status is not Status.OPEN:
                continue  # busy or being recovered: never share it
            if channel.free >= price:
                await self.bound(row, tunnel.endpoint)
                self._usable[pair] = dataclasses.replace(row, endpoint=tunnel.endpoint)
                return channel
            if reuse_only:
                raise NoUsableChannel
            await self.close(row, tunnel.endpoint)
        if reuse_only:
            raise NoUsableChannel
        if funding == api.WALLET:
            return await self._open_wallet(client, tunnel, price, wallet_deposit, authorization)
        if call is None:
            raise VaultError(401, api.UNAUTHENTICATED,
                             "the vault opens a pool channel only for a signed call")
        return await self._open_pool(client, tunnel, price, call)

    async def _open_pool(self, client: str, tunnel: ProviderTunnel, price: int,
                         call: SignedCall) -> EnclaveChannel:
        # The smaller of the store's mirror and the chain: a client that took its balance
        # out on-chain itself (withdrawFromPool) is not offered a deposit the chain refuses.
        # (The store may be below zero while an open in flight and a withdrawal the chain
        # made overlap: see Funds.mirror_withdrawal.)
        pooled = await asyncio.to_thread(self.manager.pooled, self.address, client)
        balance = max(0, min(await asyncio.to_thread(self.store.balance, client), pooled))
        # Within what the client's call allows: the enclave approves no more (one channel per
        # call, its deposit at most the call's ``deposit`` or a fixed multiple of maxPrice).
        cap = pool_deposit_cap(api.InvokeRequest.from_json(jsonstrict.loads_object(call.body)))
        if cap < price:
            raise VaultError(400, "deposit_too_small",
                             f"nothing was paid: the call allows a channel deposit of {cap}, "
                             f"less than the price {price}",
                             extra={"deposit": str(cap), "price": str(price)})
        deposit = min(self.deposit_for(price, balance), cap)
        if deposit < price:
            opening = f" ({pooled - balance} of it in channels being opened)" \
                if pooled > balance else ""
            raise VaultError(402, api.INSUFFICIENT_BALANCE,
                             f"nothing was paid: your pool balance with this vault is {pooled} "
                             f"on-chain{opening}, which cannot pay {price}",
                             extra={"balance": str(balance), "pooled": str(pooled),
                                    "price": str(price)})
        terms = tunnel.terms(client=client, deposit=deposit, salt=self.vault.salt())
        row = await self._claim(client, tunnel, terms, funding=api.POOL, debit=True)
        try:
            now = await self._chain_time()
            approval = await self._approve(row, lambda: self.vault.approve_pool_channel(
                call, terms, row.lock_timeout, now=now))
        except EnclaveError as e:
            await self.settle_open(row)  # no approval exists: it never opens, the debit comes back
            raise refusal(e) from None
        except LedgerBusy as e:
            await self.settle_open(row)  # no approval left the vault: the same
            raise VaultError(503, api.CONFLICT, str(e), retryable=True) from None
        error = await self._opens.submit((row, terms, approval))
        if error is not None:
            raise error
        return await self._bind_opened(row)

    async def _claim(
        self, client: str, tunnel: ProviderTunnel, terms: ChannelTerms, *, funding: str,
        debit: bool, proposal: dict[str, Any] | None = None,
    ) -> vault_store.Channel:
        channel_id = terms.channel_id(self.manager.domain)
        try:
            return await asyncio.to_thread(
                self.store.claim_channel, debit=debit, cid=hex_id(channel_id),
                client=address_key(client), provider="0x" + terms.provider.hex(),
                endpoint=tunnel.endpoint, funding=funding, deposit=str(terms.deposit),
                lock_timeout=self._lock_timeout(tunnel), terms=snap.terms_to_json(terms),
                status=Status.OPEN.value, version=0, free=str(terms.deposit), proposal=proposal,
            )
        except vault_store.InsufficientBalance as e:
            raise VaultError(402, api.INSUFFICIENT_BALANCE, str(e),
                             extra={"balance": str(e.balance)}) from None

    async def _chain_time(self) -> int:
        return await asyncio.to_thread(self.manager.chain_time)

    async def _approve(self, row: vault_store.Channel, approve: Callable[[], OpenApproval]
                       ) -> OpenApproval:
        """The enclave's approval of ``row``: the channel's record, then the ledger, are
        durable before the approval can leave the vault (one ledger change: run again
        if another replica changed the ledger meanwhile)."""
        channel_id = bytes.fromhex(row.cid[2:])

        def change() -> OpenApproval:
            approval = approve()
            channel = self.vault.channel(channel_id)
            assert channel is not None
            self.store.set_channel(row.cid, snapshot=channel.snapshot())
            return approval

        return await self.ledger.achange(change)

    async def settle_open(self, row: vault_store.Channel) -> bool | None:
        """Whether ``row``'s channel opened, decided by the chain and never by our own receipt
        (a copy of our transaction, or of its approval, may have opened it first — then our
        own reverts — and a batch's receipt says nothing of a member opened elsewhere).

        * The manager's record of the id (at the head) is not NONE: it opened (by whomever):
          recorded OPEN, True.
        * NONE at the head, read *after* the chain's finalized block
          (:meth:`ASCManager.final_time`) was seen stamped after the latest deadline of
          the enclave's approvals to open it: it never can open, so it FAILED, False. An
          open is mined only in a block stamped by its deadline, so before that finalized
          block: no reorg can undo it, and every head read after it shows it. (Only that
          block's timestamp is read, not the contract's state at it: no archive node.)
          The enclave refuses to write it off before that deadline too, and checks the
          channel's latest record, restored here, is untouched; a record the enclave's
          ledger never approved (written before a crash lost the approving ledger change)
          is refused by the enclave: the row is only marked FAILED here. A node without
          ``finalized`` or ``safe`` reads the head's time: a reorg could then still mine
          an open after the write-off, which the worker's sweep of FAILED channels
          (:meth:`Worker._reclaim`) force-closes to refill the pool.
        * Otherwise: not decided yet (an approval may still be mined, or the block past the
          deadline is not final yet), None; the row stays OPENING and the worker asks again.
        """
        channel_id = bytes.fromhex(row.cid[2:])
        stamped, _ = await asyncio.to_thread(self.manager.final_time)
        onchain, _ = await asyncio.to_thread(self.manager.channel_at_head, channel_id)
        if onchain.status is not OnChainStatus.NONE:
            return await self._opened(row)
        if stamped <= self.vault.approved_until(channel_id):
            return None
        if self.vault.channel(channel_id) is None:  # the enclave checks its latest record
            latest = await asyncio.to_thread(self.store.channel, row.cid)
            if latest is not None and latest.snapshot is not None:
                log = await asyncio.to_thread(self.store.consumed_log, row.cid)
                try:
                    self.vault.restore(channel_id, latest.snapshot, log)
                except EnclaveError as e:
                    if e.reason != "not_approved":
                        raise
                    # Not in the enclave's ledger (the change that approved it was never
                    # stored, so no approval left): nothing to write off there, and its
                    # record is not adopted. The row only.
                    await asyncio.to_thread(self.store.fail_channel, row.cid)
                    return False
        # The enclave's ledger first, then the host's: a crash (or a lost ledger race) in
        # between leaves the row OPENING, decided again, and the enclave credits it once.
        await self.ledger.achange(lambda: self.vault.open_failed(channel_id, now=stamped))
        await asyncio.to_thread(self.store.fail_channel, row.cid)
        return False

    async def _finish_open(self, row: vault_store.Channel, call: Any) -> EnclaveChannel:
        (error,) = await self._open_tx(f"open:{row.cid}", call, [row])
        if error is not None:
            raise error
        return await self._bind_opened(row)

    async def _bind_opened(self, row: vault_store.Channel) -> EnclaveChannel:
        fresh = await asyncio.to_thread(self.store.channel, row.cid)
        assert fresh is not None
        _, channel = await self.bound(fresh)
        return channel

    async def _open_tx(self, key: str, call: Any, rows: Sequence[vault_store.Channel]
                       ) -> list[VaultError | None]:
        """Send the transaction that opens ``rows`` and record its outcome: for each row,
        None if it opened, else the :class:`VaultError` to answer (a revert in estimation
        gives the deposits back at once; a batch opens the members it can)."""
        try:
            tx = await asyncio.to_thread(self.journal.send, key, "open",
                                         ",".join(r.cid for r in rows), call)
        except TransactionFailed as e:
            # Our call would revert, perhaps because someone opened the channel first: the
            # chain says which (settle_open), never the revert alone.
            failed = VaultError(502, api.CHAIN_UNAVAILABLE, f"createASC would revert: {e.reason}",
                                retryable=True)
            return [None if await self.settle_open(row) else
                    (await self._wallet_shortfall(row) or failed) for row in rows]
        outcome = await asyncio.to_thread(self.journal.wait, tx, self.timing.chain_timeout)
        if not outcome.final:
            return [VaultError(503, api.CHAIN_UNAVAILABLE,
                               f"createASC {tx.tx_hash} not mined yet", retryable=True)] * len(rows)
        failed = VaultError(502, api.CHAIN_UNAVAILABLE, f"createASC {tx.tx_hash} failed",
                            retryable=True)
        return [None if await self.settle_open(row) else failed for row in rows]

    async def _wallet_shortfall(self, row: vault_store.Channel) -> VaultError | None:
        """For a wallet-funded channel whose opening would revert: ``insufficient_balance``
        if the client's wallet holds less than the deposit (read from the token now), else
        None. Safe to say "nothing was paid": the opening was refused in estimation, so no
        transaction was sent, and :meth:`settle_open` has just found it not opened."""
        if row.funding != api.WALLET:
            return None
        token = contract_at(self.manager.chain, "TestUSDC", self.manager.token)
        try:
            with node_errors("reading the client's wallet balance"):
                held = int(await asyncio.to_thread(
                    token.functions.balanceOf(to_checksum(row.client)).call))
        except ChainUnavailable:
            return None
        if held >= int(row.deposit):
            return None
        return VaultError(402, api.INSUFFICIENT_BALANCE,
                          f"nothing was paid: your wallet {to_checksum(row.client)} holds "
                          f"{held}, less than the channel deposit {row.deposit}; no channel "
                          "was opened", extra={"balance": str(held), "deposit": row.deposit})

    async def _send_opens(
        self, items: Sequence[tuple[vault_store.Channel, ChannelTerms, OpenApproval]]
    ) -> list[VaultError | None]:
        """Open pool channels that waited together: ``createASCFromPool`` for one, else one
        ``createASCFromPoolBatch`` (no token moves: each debits its client's pool balance),
        each with the enclave's approval (the client consented by pooling with this vault;
        its own signed call is what the enclave approved)."""
        rows = [row for row, _, _ in items]
        call = self.manager.create_from_pool_call(
            [t for _, t, _ in items], [a.signature for *_, a in items],
            [a.deadline for *_, a in items], batch=len(items) > 1)
        return await self._open_tx(f"open:{batch_id(rows)}", call, rows)

    async def _opened(self, row: vault_store.Channel) -> bool:
        """Record that ``row``'s channel opened on-chain (only :meth:`settle_open` knows)."""
        wallet_key = f"wallet:{row.cid}" if row.funding == api.WALLET else None
        await asyncio.to_thread(self.store.open_channel, row.cid, wallet_deposit_key=wallet_key)
        return True

    # -- wallet funding ------------------------------------------------------------

    def _typed_data(self, terms: ChannelTerms, proposal: dict[str, Any]) -> dict[str, Any]:
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                **RECEIVE_WITH_AUTHORIZATION_TYPES,
            },
            "primaryType": "ReceiveWithAuthorization",
            "domain": {"name": self.token.name, "version": self.token.version,
                       "chainId": self.manager.chain.chain_id,
                       "verifyingContract": self.manager.token},
            "message": {
                "from": "0x" + terms.client.hex(), "to": self.manager.address,
                "value": terms.deposit, "validAfter": proposal["validAfter"],
                "validBefore": proposal["validBefore"],
                "nonce": hex_id(terms.channel_id(self.manager.domain)),
            },
        }

    async def _open_wallet(
        self, client: str, tunnel: ProviderTunnel, price: int, deposit: int | None,
        authorization: dict[str, str] | None,
    ) -> EnclaveChannel:
        info = tunnel.info
        assert info is not None
        provider = "0x" + info.provider.hex()
        now = int(time.time())
        proposals = [
            r for r in await asyncio.to_thread(
                self.store.channels, client=client, provider=provider,
                phases=(vault_store.PROPOSED,))
            if r.proposal and r.proposal["validBefore"] > now + 60
            and r.terms["providerKey"] == info.provider_key.hex()
        ]
        wanted = deposit if deposit is not None else price * self.deposits.deposit_multiple
        if wanted < price:
            raise VaultError(400, api.BAD_REQUEST, f"a deposit of {wanted} cannot pay {price}")
        row = next((r for r in proposals if int(r.deposit) == wanted), None)
        if authorization is None or row is None or authorization.get("channelId") != row.cid:
            if row is None:
                terms = tunnel.terms(client=client, deposit=wanted, salt=self.vault.salt())
                proposal = {"validAfter": 0,
                            "validBefore": now + self.deposits.authorization_validity}
                row = await asyncio.to_thread(
                    self.store.propose_channel, cid=hex_id(terms.channel_id(self.manager.domain)),
                    client=client.lower(), provider=provider, endpoint=tunnel.endpoint,
                    funding=api.WALLET, deposit=str(wanted),
                    lock_timeout=self._lock_timeout(tunnel), terms=snap.terms_to_json(terms),
                    status=Status.OPEN.value, version=0, free=str(wanted), proposal=proposal)
            terms = snap.terms_from_json(row.terms)
            assert row.proposal is not None
            raise VaultError(428, api.AUTHORIZATION_REQUIRED,
                             "sign the channel's receiveWithAuthorization and send it back",
                             retryable=True,
                             extra={"channelId": row.cid, "deposit": row.deposit,
                                    "typedData": self._typed_data(terms, row.proposal)})
        terms = snap.terms_from_json(row.terms)
        assert row.proposal is not None
        typed = self._typed_data(terms, row.proposal)
        try:
            signature = bytes.fromhex(authorization.get("signature", "").removeprefix("0x"))
            signer = Account.recover_message(encode_typed_data(full_message=typed),
                                             signature=signature)
        except Exception:
            signer = None
        if signer is None or address_key(signer) != address_key(client) or len(signature) != 65:
            raise VaultError(400, api.BAD_AUTHORIZATION,
                             "not the client's signature over the proposed terms")
        await self._claim(client, tunnel, terms, funding=api.WALLET, debit=False)
        now = await self._chain_time()
        try:
            approval = await self._approve(row, lambda: self.vault.approve_wallet_channel(
                terms, row.lock_timeout, now=now))
        except LedgerBusy as e:
            raise VaultError(503, api.CONFLICT, str(e), retryable=True) from None
        except EnclaveError as e:
            # Refused, so no approval of it exists and it can never open (e.g. a proposal
            # whose salt an earlier life of the vault issued): FAILED, and a new one next.
            await asyncio.to_thread(self.store.fail_channel, row.cid)
            raise VaultError(409, api.PROPOSAL_REFUSED,
                             "nothing was paid: the vault will not open the channel it proposed "
                             f"({e.reason}: {e.detail}); call again for a new proposal",
                             retryable=True) from None
        v = signature[64] if signature[64] >= 27 else signature[64] + 27
        call = self.manager.contract.functions.createASCWithAuthorization(
            terms_tuple(terms), row.proposal["validAfter"], row.proposal["validBefore"], v,
            signature[:32], signature[32:64], approval.calldata)
        fresh = await asyncio.to_thread(self.store.channel, row.cid)
        assert fresh is not None
        return await self._finish_open(fresh, call)

    # ------------------------------------------------------------------ closing

    async def close(self, row: vault_store.Channel, endpoint: str | None = None) -> None:
        """Close cooperatively: CLOSE → CLOSE_ACK, then ``closeASC``; credits the rest.

        ``endpoint``: where the provider is reached now (see :meth:`bound`). Call with
        :meth:`pair_lock` held.
        """
        self.retire(row.cid)
        if row.phase != vault_store.CLOSING:  # since when it has been closing: for escalation
            await asyncio.to_thread(self.store.set_channel, row.cid, phase=vault_store.CLOSING,
                                    pending_since=time.time())
        tunnel, channel = await self.bound(row, endpoint)
        signed = await tunnel.close(channel)
        # The machine keeps no copy of the provider's final signature: keep it here, so a
        # restart can still submit closeASC (else the provider submits it after its grace).
        await asyncio.to_thread(self.store.set_channel, row.cid,
                                final_state=records.receipt_json(channel.channel_id, signed))
        await self.submit_close(row.cid, channel.terms, signed)

    async def submit_close(self, cid: str, terms: ChannelTerms, signed: SignedState) -> None:
        """``closeASC`` with the co-signed final state, aggregated with the closes
        submitted meanwhile into one ``closeASCBatch``."""
        await self._closes.submit((cid, terms, signed))

    async def _send_closes(self, items: Sequence[tuple[str, ChannelTerms, SignedState]]
                           ) -> list[None]:
        unique = list({cid: (cid, terms, signed) for cid, terms, signed in items}.values())
        if len(unique) > 1:
            # Channels of one client, then of one provider, next to each other: the
            # contract pays each run of equal payees with one transfer.
            unique.sort(key=lambda i: (i[1].client, i[1].provider))
            call = self.manager.contract.functions.closeASCBatch(
                [terms_tuple(t) for _, t, _ in unique], [s.state.as_tuple() for *_, s in unique],
                [s.vault_signature for *_, s in unique],
                [s.provider_signature for *_, s in unique])
            key = f"close:{batch_id([cid for cid, *_ in unique])}"
            ref = ",".join(cid for cid, *_ in unique)
            # A member that settled some other way meanwhile is skipped by the contract,
            # and the others close.
            if await self.transact(key, "close", ref, call, unless_pending=True):
                return [None] * len(items)
            # The batch itself failed: alone, each close stands or falls by itself.
        for cid, terms, signed in unique:
            await self.transact(f"close:{cid}", "close", cid,
                                self.state_call("closeASC", terms, signed))
        return [None] * len(items)

    async def transact(self, key: str, kind: str, ref: str, call: Any, *,
                       unless_pending: bool = False) -> bool:
        """Send a journaled transaction and apply any settlement it makes; False if it
        would revert (e.g. someone else settled or challenged first) or failed. With
        ``unless_pending``, one not mined yet counts as done: the worker reconciles it."""
        try:
            tx = await asyncio.to_thread(self.journal.send, key, kind, ref, call)
        except TransactionFailed as e:
            log.info("%s not sent: %s", key, e.reason)
            return False
        outcome = await asyncio.to_thread(self.journal.wait, tx, self.timing.chain_timeout)
        if outcome.receipt is not None:
            await self.settled_by(outcome.receipt)
        return outcome.ok or (unless_pending and not outcome.final)

    def state_call(self, name: str, terms: ChannelTerms, signed: SignedState) -> Any:
        """``closeASC``/``initForceClose``/``challengeForceClose`` with a co-signed state."""
        return getattr(self.manager.contract.functions, name)(
            terms_tuple(terms), signed.state.as_tuple(), signed.vault_signature,
            signed.provider_signature)

    async def settled_by(self, receipt: Any) -> None:
        """Apply the settlements a receipt contains (our channels only)."""
        for name in ("ChannelClosed", "ForceCloseFinalized"):
            for args in self.manager.events(name, receipt):
                await self.settle(hex_id(bytes(args["channelId"])), int(args["clientPayout"]),
                                  int(args["providerPayout"]),
                                  "0x" + bytes(receipt["transactionHash"]).hex())

    async def settle(self, cid: str, client_payout: int, provider_payout: int,
                     tx_hash: str | None) -> bool:
        """The chain paid the channel out: record it (a pool channel's client payout went
        back to the client's on-chain pool balance: mirrored in the store), drop the machine.

        A held DELIVERED of the channel is written first (:meth:`durable`): its request
        was delivered, and paid (the provider may claim it on-chain before its ACK is
        due). A request still LOCKED or PENDING in a channel settled this way was never
        claimed (a claim goes through :func:`recover_from_force_close` first and
        clears it): its δ went back with the client's payout, and its call is
        answered so. It is answered before the settlement is recorded: a crash in
        between leaves the channel unsettled, so the next process finds the
        settlement again and answers nothing twice; the other order could leave the
        call unanswered for good.
        """
        self.retire(cid)
        channel_id = bytes.fromhex(cid[2:])
        # A held DELIVERED first (a provider may claim a revealed payment on-chain before
        # its ACK is due): the row must say the request was delivered, not still pending,
        # or the call it paid would be answered "aborted, nothing was paid".
        await self.durable(channel_id)
        row = await asyncio.to_thread(self.store.channel, cid)
        if (row is not None and row.request_key is not None and self.on_unfinished is not None
                and row.status in (Status.LOCKED.value, Status.PENDING.value)):
            await self.on_unfinished(row.request_key, tx_hash)
        self.live.pop(channel_id, None)
        if row is not None and row.phase in vault_store.FUNDED and row.snapshot is not None:
            # The enclave closes the channel for good (no σ_U, no state from now on);
            # durable before the host's record says "settled". The pool refund itself was
            # credited on-chain by the contract: the store below only mirrors it.
            snapshot = row.snapshot
            entries = await asyncio.to_thread(self.store.consumed_log, cid)

            def change() -> int:
                if self.vault.channel(channel_id) is None:
                    self.vault.restore(channel_id, snapshot, entries)
                return self.vault.settled(channel_id, client_payout)

            await self.ledger.achange(change)
            self.vault.forget(channel_id)
        self._prune(channel_id)
        done = await asyncio.to_thread(self.store.settle_channel, cid,
                                       client_payout=client_payout,
                                       provider_payout=provider_payout, tx_hash=tx_hash)
        if done:
            log.info("channel %s settled: client %d, provider %d (%s)", cid, client_payout,
                     provider_payout, tx_hash)
        return done

