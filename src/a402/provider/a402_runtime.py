"""The provider's A402 runtime: tunnels, channels, and one paid request per EXEC.

This is the I/O shell around :class:`a402.asc.ProviderChannel` (the pure state
machine). What it adds:

* **Tunnels.** A vault enclave opens a tunnel: a Noise XX secure channel
  (attestation verified both ways, :mod:`a402.tee.channel`); every message afterwards is one
  encrypted :class:`~a402.wire.a402.Envelope`. A tunnel may drive a channel
  only after OPEN proved, with the channel's vault key, that it speaks for the
  channel's vault (the signature covers the tunnel's handshake hash).
* **The enclave runs the protocol.** The channels' state machines run in the
  provider enclave's code (:mod:`a402.provider_enclave`), which decrypts every
  frame and encrypts every answer itself; this host relays ciphertext, runs
  the paid requests the enclave hands it, stores what the enclave seals, and
  pays gas. It has no call that pre-signs anything.
* **Execution.** On EXEC (:class:`~a402.provider_enclave.Execute`) the request
  runs against the wrapped ASGI app (the provider's service, or the gateway's
  reverse proxy), fully buffered; a response with status ≥ 400, an exception
  or a timeout is answered with the response itself and *no* REPLY (nothing
  is charged, the request is abandoned). Otherwise the enclave builds the
  result — the response plus the hash of the request bytes — seals it under
  a fresh ``t`` and pre-signs ``m``.
* **Durability.** Each channel's state, together with the last (message,
  answer) pair, is sealed by the enclave and written to the store *before* the
  answer leaves. A retransmitted message (the vault lost our answer) is
  answered from that record, byte for byte, without running or charging
  anything twice.
* **Seams for tests.** :meth:`ProviderRuntime.before_send` sees every recorded
  answer (as ciphertext) before it is stored and sent; a deliberately faulty
  *enclave* is a :class:`~a402.provider_enclave.ProviderEnclaveCode` subclass
  named by :attr:`ProviderRuntime.enclave_code`.

The watcher (:mod:`a402.provider.a402_watch`) adds the on-chain side: Δ_ack,
client force-closes, cooperative closes nobody submitted. It drives the runtime;
the runtime does not know it: :class:`~a402.provider.a402_payments.A402Payments`
owns both and starts and stops the watcher.

Trust split: the enclave holds the attested Schnorr key and runs the channel
machines (it makes every pre-signature, for results it sealed itself); the
provider's Ethereum account (``operator``) signs channel states (passed into
the enclave's code as a signer) and sends ``forceClose``. A host that misused
the operator key could only sign states that pay the provider *less*; what
makes a payment atomic — the pre-signature — never leaves the enclave. In the
simulated backend the enclave's code runs in the host process (no isolation);
a hardware backend runs the same code inside the enclave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from eth_account.signers.local import LocalAccount
from starlette.types import ASGIApp, Message, Scope

from a402 import jsonbytes
from a402.asc import ForceCloseClaim, SignedState, Status
from a402.asc.snapshot import hx, unhex
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.crypto import EcdsaSigner
from a402.provider.a402_store import ChannelBlobStore
from a402.provider.asgi import run_buffered
from a402.provider.routes import RouteTable
from a402.provider.settings import ChannelTimeouts, Limits, Watching
from a402.provider_enclave import (
    Answer,
    ChannelNeeded,
    ChannelView,
    Execute,
    Outcome,
    ProviderEnclave,
    ProviderEnclaveCode,
)
from a402.tee import AttestationPolicy, AttestationVerifier, Enclave, TeeError
from a402.tee.chains import check_backends
from a402.wire.a402 import (
    PROLOGUE,
    HttpRequest,
    HttpResponse,
    PricedRoute,
    ProviderInfo,
    provider_user_data,
)

log = logging.getLogger("a402.provider.a402")

_RECORD_FORMAT = "a402/provider-channel-record/v2"
_MAX_NONCE = 64
#: Request headers that describe the transport of the /message call, not the paid request.
_TRANSPORT_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


@dataclass
class A402Config:
    """How a provider accepts ``a402``: its parts, and its settings in three groups.

    - ``enclave``: the provider enclave; its attested key (launched with
      ``PROVIDER_PURPOSES``) makes every pre-signature and is the channels'
      ``providerKey``.
    - ``operator``: the provider's Ethereum account: its address is the
      channels' ``provider`` (it is paid, it signs states, it sends
      ``forceClose``); it needs gas.
    - ``chain``, ``manager``: where channels live (an ``ASCManager`` address);
      its token must be the token the middleware charges in.
    - ``vault_policy``, ``verifiers``: which vault enclaves may open tunnels.
    - ``store``: where sealed channel records go (:mod:`a402.provider.a402_store`).
    - ``timeouts``: Δ_ack and the lock (:class:`~a402.provider.settings.ChannelTimeouts`:
      no ACK ``ack_timeout`` after REVEAL, and the provider claims on-chain;
      ``lock_timeout``: how long the provider refuses a new EXEC while one executes;
      keep it below the vaults' Δ_lock).
    - ``watching``: the watcher's period and ``close_grace``, how long after
      co-signing a final state the provider waits for someone else to submit
      ``closeASC`` before submitting it itself (:class:`~a402.provider.settings.Watching`);
      ``watch``: whether the watcher runs at all.
    - ``limits``: how many tunnels, idle for how long (:class:`~a402.provider.settings.Limits`).
    - ``clock``: Unix time (a seam for tests).
    """

    enclave: Enclave
    operator: LocalAccount
    chain: Chain
    manager: str
    vault_policy: AttestationPolicy
    verifiers: Sequence[AttestationVerifier]
    store: ChannelBlobStore
    timeouts: ChannelTimeouts = field(default_factory=ChannelTimeouts)
    watching: Watching = field(default_factory=Watching)
    limits: Limits = field(default_factory=Limits)
    watch: bool = True
    clock: Callable[[], float] = time.time


class UnknownTunnel(Exception):
    """No established tunnel under that id (expired, evicted, or never finished)."""


@dataclass
class VaultTunnel:
    """One vault's tunnel, as the provider holds it: the enclave's secure-channel handle
    and the channels it may drive."""

    handle: str
    last_used: float
    established: bool = False
    channels: set[bytes] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Slot:
    """One channel as the host holds it: a view of the enclave's channel (public facts
    only) plus the host's own on-chain bookkeeping."""

    channel: ChannelView
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing_on_chain: bool = False
    force_close_due: bool = False
    onchain_closed: bool = False
    close_tx: str | None = None

    @property
    def channel_id(self) -> bytes:
        return self.channel.channel_id

    @property
    def final(self) -> SignedState | None:
        return self.channel.final

    @property
    def closed_at(self) -> float | None:
        return self.channel.closed_at


class ProviderRuntime:
    """Serves the A402 exchange for one provider; owned by
    :class:`~a402.provider.a402_payments.A402Payments`.

    ``app`` is what a paid request runs against, ``routes`` prices it,
    ``token``/``network`` are what the middleware charges in (checked against
    the ASCManager's token and the chain). The enclave's code is
    :attr:`enclave_code`, started in the enclave here.
    """

    enclave_code: ClassVar[type[ProviderEnclaveCode]] = ProviderEnclaveCode

    def __init__(
        self, config: A402Config, *, app: ASGIApp, routes: RouteTable, token: str, network: str
    ) -> None:
        self.config = config
        self.app = app
        self.routes = routes
        self.clock = config.clock
        self.enclave = config.enclave
        self.manager = ASCManager(config.chain, config.manager)
        self.domain = self.manager.domain
        check_backends(self.domain.chain_id,
                       [config.enclave.kind, *(v.kind for v in config.verifiers)])
        if self.manager.token.lower() != token.lower():
            raise ValueError(f"the ASCManager escrows {self.manager.token}, not {token}")
        if config.chain.network != network:
            raise ValueError(f"the ASCManager is on {config.chain.network}, not {network}")
        if config.timeouts.lock_timeout <= 0 or config.timeouts.ack_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.network = network
        self.operator = config.operator
        self.signer = EcdsaSigner(bytes(config.operator.key))
        self.store = config.store
        self._tunnels: dict[str, VaultTunnel] = {}
        self._slots: dict[bytes, Slot] = {}
        self._load_lock = asyncio.Lock()
        self.provider_enclave: ProviderEnclave = self.enclave_code.start(
            config.enclave, domain=self.domain, signer=self.signer, price=self._price,
            closing=self._closing, clock=self.clock,
            ack_timeout=config.timeouts.ack_timeout, lock_timeout=config.timeouts.lock_timeout,
        )

    def _price(self, method: str, path: str) -> int | None:
        match = self.routes.match(method, path)
        return None if match is None else match.amount

    def _closing(self, channel_id: bytes) -> bool:
        slot = self._slots.get(channel_id)
        return slot is not None and slot.closing_on_chain

    # ------------------------------------------------------------------ facts

    @property
    def provider_address(self) -> bytes:
        return self.signer.address

    @property
    def provider_key(self) -> bytes:
        return self.provider_enclave.provider_key

    def info(self, nonce: bytes) -> ProviderInfo:
        """``GET …/info``: attestation evidence made for ``nonce``, bound to our address."""
        if len(nonce) > _MAX_NONCE:
            raise ValueError(f"the nonce is at most {_MAX_NONCE} bytes")
        user_data = provider_user_data(
            self.domain.chain_id, self.domain.verifying_contract, self.provider_address
        )
        return ProviderInfo(
            network=self.network,
            chain_id=self.domain.chain_id,
            asc_manager=self.domain.verifying_contract,
            token=bytes.fromhex(self.manager.token[2:]),
            dispute_window=self.manager.dispute_window,
            provider=self.provider_address,
            provider_key=self.provider_key,
            attestation_kind=self.enclave.kind,
            evidence=self.enclave.quote(nonce, user_data),
            nonce=bytes(nonce),
            lock_timeout=self.config.timeouts.lock_timeout,
            ack_timeout=self.config.timeouts.ack_timeout,
            routes=tuple(PricedRoute(r.pattern.text, r.amount) for r in self.routes.routes),
        )

    # --------------------------------------------------------------- tunnels

    def open_tunnel(self, first: bytes) -> tuple[str, bytes]:
        """Handshake message 1 in, tunnel id and message 2 out."""
        self._evict_tunnels()
        handle, second = self.enclave.channel_respond(
            first, self.config.vault_policy, self.config.verifiers, prologue=PROLOGUE
        )
        tunnel_id = secrets.token_urlsafe(18)
        self._tunnels[tunnel_id] = VaultTunnel(handle, self.clock())
        return tunnel_id, second

    def finish_tunnel(self, tunnel_id: str, third: bytes) -> bytes:
        """Handshake message 3 in: verifies the vault's evidence; returns its measurement."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.established:
            raise UnknownTunnel(tunnel_id)
        try:
            peer = self.enclave.channel_accept(tunnel.handle, third)
        except TeeError:
            self._drop_tunnel(tunnel_id)
            raise
        tunnel.established, tunnel.last_used = True, self.clock()
        return peer.measurement

    def is_established(self, tunnel_id: str) -> bool:
        """Whether ``tunnel_id`` names a finished handshake (it may still expire later)."""
        tunnel = self._tunnels.get(tunnel_id)
        return tunnel is not None and tunnel.established

    def _drop_tunnel(self, tunnel_id: str) -> None:
        tunnel = self._tunnels.pop(tunnel_id, None)
        if tunnel is not None:
            self.provider_enclave.forget(tunnel.handle)
            self.enclave.channel_close(tunnel.handle)

    def _evict_tunnels(self) -> None:
        now = self.clock()
        stale = [
            tid for tid, s in self._tunnels.items()
            if now - s.last_used > self.config.limits.tunnel_idle_timeout and not s.lock.locked()
        ]
        for tid in stale:
            self._drop_tunnel(tid)
        while len(self._tunnels) >= self.config.limits.max_tunnels:
            oldest = min(self._tunnels, key=lambda tid: self._tunnels[tid].last_used)
            self._drop_tunnel(oldest)

    async def handle_frame(self, tunnel_id: str, frame: bytes, scope: Scope) -> bytes:
        """One encrypted envelope in, one encrypted envelope out (the enclave reads and
        writes both; this relays them, and does what the enclave asks in between).

        Raises :class:`UnknownTunnel`, or :class:`~a402.tee.ChannelError` for a
        frame that does not authenticate (tampered, replayed, reordered): those
        are answered outside the channel, and leave it usable.
        """
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or not tunnel.established:
            raise UnknownTunnel(tunnel_id)
        async with tunnel.lock:
            outcome = self.provider_enclave.receive(tunnel.handle, frame)
            tunnel.last_used = self.clock()
            if isinstance(outcome, ChannelNeeded):
                return await self._with_channel(tunnel, outcome, scope)
            return await self._send(None, outcome)

    async def _with_channel(self, tunnel: VaultTunnel, need: ChannelNeeded, scope: Scope
                            ) -> bytes:
        """Bring the channel in and hold its lock while the enclave handles the message."""
        handle, channel_id = tunnel.handle, need.channel_id
        if need.opening:
            async with self._load_lock:
                slot = await self._load(channel_id)
                on_chain = None
                if slot is None:
                    onchain = await asyncio.to_thread(self.manager.channel, channel_id)
                    on_chain = onchain.status.name
                outcome = self.provider_enclave.found(handle, on_chain=on_chain)
                if slot is None and isinstance(outcome, Answer) and outcome.persist:
                    slot = Slot(self._view(channel_id))  # admitted: stored before it answers
                    frame = await self._send(slot, outcome)
                    self._slots[channel_id] = slot
                    return frame
                return await self._send(slot, outcome)
        slot = await self._load(channel_id)
        if slot is None:
            return await self._send(None, self.provider_enclave.found(handle))
        async with slot.lock:
            outcome = self.provider_enclave.found(handle)
            if isinstance(outcome, Execute):
                outcome = await self._run(handle, outcome, scope)
            return await self._send(slot, outcome)

    async def _run(self, handle: str, paid: Execute, scope: Scope) -> Answer:
        """Run the paid request; the enclave turns the response into a REPLY (or a refusal)."""
        try:
            response = await asyncio.wait_for(
                self.execute(paid.request, scope), timeout=self.config.timeouts.lock_timeout * 0.8
            )
        except TimeoutError:
            return self.provider_enclave.failed(
                handle, "execution_timeout", "the service did not answer in time")
        except Exception as e:  # the service crashed: nothing is charged
            log.exception("paid request %d on %s failed", paid.request_id,
                          paid.channel_id.hex())
            return self.provider_enclave.failed(handle, "service_error", type(e).__name__)
        return self.provider_enclave.executed(handle, response)

    async def _send(self, slot: Slot | None, outcome: Outcome) -> bytes:
        """Store what the enclave sealed (if the answer changed the channel), then relay."""
        if not isinstance(outcome, Answer):
            raise TypeError(f"the enclave asked for {type(outcome).__name__} out of turn")
        if slot is not None and outcome.incoming and not outcome.replayed:
            self.before_send(slot, outcome)
        if slot is not None and outcome.persist:
            await self.persist(slot)
        return outcome.frame

    # ------------------------------------------------------------------ seams

    def before_send(self, slot: Slot, answer: Answer) -> None:
        """Every recorded answer passes here (ciphertext) before it is stored and sent."""

    async def execute(self, request: HttpRequest, outer: Scope) -> HttpResponse:
        """Run ``request`` against the wrapped app, buffered (the service, or the upstream)."""
        headers = [(k, v) for k, v in request.headers if k not in _TRANSPORT_HEADERS]
        if request.body:
            headers.append((b"content-length", str(len(request.body)).encode()))
        if not any(k == b"host" for k, _ in headers):
            headers += [(k, v) for k, v in outer.get("headers", ()) if k == b"host"]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": outer.get("asgi", {"version": "3.0"}),
            "http_version": outer.get("http_version", "1.1"),
            "method": request.method,
            "scheme": outer.get("scheme", "http"),
            "path": request.path,
            "raw_path": quote(request.path, safe="/:@!$&'()*+,;=~").encode("ascii"),
            "root_path": outer.get("root_path", ""),
            "query_string": request.query,
            "headers": headers,
            "client": outer.get("client"),
            "server": outer.get("server"),
            "extensions": {},
        }
        if "state" in outer:
            scope["state"] = dict(outer["state"])
        done = asyncio.Event()
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await done.wait()  # nothing more will come; an app listening for a disconnect waits
            return {"type": "http.disconnect"}

        try:
            buffered = await run_buffered(self.app, scope, receive)
        finally:
            done.set()
        return HttpResponse(buffered.status, tuple(buffered.headers), b"".join(buffered.body))

    # ------------------------------------------------------------ persistence

    async def persist(self, slot: Slot) -> None:
        """Store ``slot``: the enclave's sealed channel state and the host's bookkeeping
        (durable when this returns)."""
        record = {
            "format": _RECORD_FORMAT,
            "sealed": hx(self.provider_enclave.export(slot.channel_id)),
            "closingOnChain": slot.closing_on_chain,
            "forceCloseDue": slot.force_close_due,
            "onchainClosed": slot.onchain_closed,
            "closeTx": slot.close_tx,
        }
        await self.store.save(slot.channel_id, jsonbytes.dumps(record),
                              active=not slot.onchain_closed)

    def _view(self, channel_id: bytes) -> ChannelView:
        view = self.provider_enclave.view(channel_id)
        if view is None:
            raise LookupError(f"the enclave runs no channel {channel_id.hex()}")
        return view

    async def _load(self, channel_id: bytes) -> Slot | None:
        slot = self._slots.get(channel_id)
        if slot is not None:
            return slot
        blob = await asyncio.to_thread(self.store.load, channel_id)
        if blob is None:
            return None
        slot = self._restore(channel_id, blob)
        return self._slots.setdefault(channel_id, slot)

    def _restore(self, channel_id: bytes, blob: bytes) -> Slot:
        record = json.loads(blob)
        if record.get("format") != _RECORD_FORMAT:
            raise ValueError("not a provider channel record")
        self.provider_enclave.restore(channel_id, unhex(record["sealed"]))
        return Slot(
            self._view(channel_id),
            closing_on_chain=bool(record["closingOnChain"]),
            force_close_due=bool(record["forceCloseDue"]),
            onchain_closed=bool(record["onchainClosed"]),
            close_tx=record["closeTx"],
        )

    async def load_active(self) -> list[Slot]:
        """Every stored channel not settled on-chain (after a restart: resume watching)."""
        ids = await asyncio.to_thread(self.store.active)
        slots = [await self._load(cid) for cid in ids]
        return [s for s in slots if s is not None]

    def active_slots(self) -> list[Slot]:
        return [s for s in self._slots.values() if not s.onchain_closed]

    def slot(self, channel_id: bytes) -> Slot | None:
        """The in-memory channel (for the watcher and for tests' read-only checks)."""
        return self._slots.get(channel_id)

    # ---------------------------------------------------------------- on-chain

    async def force_close(self, slot: Slot) -> bool:
        """Submit ``forceClose`` with the adapted signature (caller holds ``slot.lock``).

        True once the channel is settled on-chain (by us or, as it turns out,
        by someone else); False if it should be retried.
        """
        if slot.channel.status is not Status.PENDING:
            slot.force_close_due = False
            return False
        claim: ForceCloseClaim = self.provider_enclave.claim(slot.channel_id)
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

    async def reconcile(self, slot: Slot) -> bool:
        """Read the channel's on-chain status; mark it closed if it is. True if closed."""
        onchain = await asyncio.to_thread(self.manager.channel, slot.channel_id)
        if onchain.status is OnChainStatus.CLOSED:
            await self.mark_closed(slot)
            return True
        if onchain.status is OnChainStatus.CLOSING and not slot.closing_on_chain:
            slot.closing_on_chain = True
            await self.persist(slot)
        return False

    def poll(self, slot: Slot) -> ForceCloseClaim | None:
        """Δ_ack for ``slot``: once, when its ACK is overdue, the claim to submit."""
        return self.provider_enclave.poll(slot.channel_id)

    async def mark_closed(self, slot: Slot) -> None:
        self.provider_enclave.closed_on_chain(slot.channel_id)
        slot.onchain_closed, slot.force_close_due = True, False
        await self.persist(slot)
