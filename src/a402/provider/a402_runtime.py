"""The provider's A402 runtime: tunnels, channels, and one paid request per EXEC.

This is the I/O shell around :class:`a402.asc.ProviderChannel` (the pure state
machine). What it adds:

* **Tunnels.** A vault enclave opens a tunnel: a Noise XX secure channel
  (attestation verified both ways, :mod:`a402.tee.channel`); every message afterwards is one
  encrypted :class:`~a402.wire.a402.Envelope`. A tunnel may drive a channel
  only after OPEN proved, with the channel's vault key, that it speaks for the
  channel's vault (the signature covers the tunnel's handshake hash).
* **Execution.** On EXEC the request runs against the wrapped ASGI app (the
  provider's service, or the gateway's reverse proxy), fully buffered; a
  response with status ≥ 400, an exception or a timeout is answered with the
  response itself and *no* REPLY (nothing is charged, the request is
  abandoned). Otherwise the result — the response plus the hash of the request
  bytes — is sealed under a fresh ``t`` and pre-signed by the enclave.
* **Durability.** Each channel's machine snapshot, together with the last
  (message, answer) pair, is sealed by the enclave and written to the store
  *before* the answer leaves. A retransmitted message (the vault lost our
  answer) is answered from that record, byte for byte, without running or
  charging anything twice.
* **Seams for tests.** :meth:`ProviderRuntime.commit` (REPLY) and
  :meth:`ProviderRuntime.outgoing` (every answer) are the two places a
  deliberately faulty provider overrides; nothing else is special.

The watcher (:mod:`a402.provider.a402_watch`) adds the on-chain side: Δ_ack,
client force-closes, cooperative closes nobody submitted. It drives the runtime;
the runtime does not know it: :class:`~a402.provider.a402_payments.A402Payments`
owns both and starts and stops the watcher.

Trust split: the enclave holds the attested Schnorr key (it makes every
pre-signature); the provider's Ethereum account (``operator``) signs channel
states and sends ``forceClose``. A host that misused the operator key could
only sign states that pay the provider *less*; what makes a payment atomic —
the pre-signature — never leaves the enclave. In the simulated backend the
state machine, and so ``t``, runs in the host process; a hardware backend runs
it inside the enclave with the same code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from eth_account.signers.local import LocalAccount
from starlette.types import ASGIApp, Message, Scope

from a402 import jsonbytes
from a402.asc import (
    Ack,
    ASCError,
    CloseReady,
    Exec,
    ForceCloseClaim,
    PreSigner,
    ProviderChannel,
    Reason,
    Reply,
    SignedState,
    Status,
    decode,
    encode,
)
from a402.asc.errors import MessageError
from a402.asc.messages import Message as AscMessage
from a402.asc.snapshot import hx, state_from_json, state_to_json, unhex
from a402.asc.terms import ChannelTerms
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.crypto import EVM, EcdsaSigner, PreSignature
from a402.crypto.authorization import recover_signer
from a402.provider.a402_store import ChannelBlobStore
from a402.provider.asgi import run_buffered
from a402.provider.routes import RouteTable
from a402.provider.settings import ChannelTimeouts, Limits, Watching
from a402.tee import AttestationPolicy, AttestationVerifier, Enclave, TeeError
from a402.tee.chains import check_backends
from a402.wire.a402 import (
    PROLOGUE,
    REQUEST_AD,
    RESPONSE_AD,
    Envelope,
    FrameError,
    HttpRequest,
    HttpResponse,
    HttpResult,
    Kind,
    OpenChannel,
    PricedRoute,
    ProviderInfo,
    Refusal,
    binding_digest,
    provider_user_data,
    request_digest,
)

log = logging.getLogger("a402.provider.a402")

_RECORD_FORMAT = "a402/provider-channel-record/v1"
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


class EnclavePreSigner:
    """A :class:`~a402.asc.PreSigner` whose key stays in the enclave."""

    def __init__(self, enclave: Enclave) -> None:
        key = enclave.signing_public_key
        if key[0] != 2:
            raise ValueError("the enclave's key must have even y to be an EVM Schnorr key")
        self._enclave = enclave
        self.public_key = bytes(key[1:])

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature:
        return EVM.presignature_from_bytes(self._enclave.schnorr_pre_sign(message, adaptor))


class UnknownTunnel(Exception):
    """No established tunnel under that id (expired, evicted, or never finished)."""


class _Refused(Exception):
    """A message refused without any change: answered, not recorded (a retry is judged afresh)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.envelope = Refusal(reason, detail).envelope()


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
    """One channel as the runtime holds it: the machine plus what the machine does not keep."""

    channel: ProviderChannel
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_in: bytes = b""
    last_out: bytes = b""
    final: SignedState | None = None
    closed_at: float | None = None
    closing_on_chain: bool = False
    force_close_due: bool = False
    onchain_closed: bool = False
    close_tx: str | None = None

    @property
    def channel_id(self) -> bytes:
        return self.channel.channel_id


class ProviderRuntime:
    """Serves the A402 exchange for one provider; owned by
    :class:`~a402.provider.a402_payments.A402Payments`.

    ``app`` is what a paid request runs against, ``routes`` prices it,
    ``token``/``network`` are what the middleware charges in (checked against
    the ASCManager's token and the chain).
    """

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
        self.presigner: PreSigner = EnclavePreSigner(config.enclave)
        self.store = config.store
        self._tunnels: dict[str, VaultTunnel] = {}
        self._slots: dict[bytes, Slot] = {}
        self._load_lock = asyncio.Lock()

    # ------------------------------------------------------------------ facts

    @property
    def provider_address(self) -> bytes:
        return self.signer.address

    @property
    def provider_key(self) -> bytes:
        return self.presigner.public_key

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
        """One encrypted envelope in, one encrypted envelope out.

        Raises :class:`UnknownTunnel`, or :class:`~a402.tee.ChannelError` for a
        frame that does not authenticate (tampered, replayed, reordered): those
        are answered outside the channel, and leave it usable.
        """
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or not tunnel.established:
            raise UnknownTunnel(tunnel_id)
        async with tunnel.lock:
            plaintext = self.enclave.channel_decrypt(tunnel.handle, frame, ad=REQUEST_AD)
            tunnel.last_used = self.clock()
            try:
                envelope = Envelope.decode(plaintext)
                answer = await self._dispatch(tunnel, envelope, scope)
            except FrameError as e:
                answer = Refusal("malformed", str(e)).envelope()
            return self.enclave.channel_encrypt(tunnel.handle, answer.encode(), ad=RESPONSE_AD)

    async def _dispatch(self, tunnel: VaultTunnel, envelope: Envelope, scope: Scope) -> Envelope:
        if envelope.kind is Kind.OPEN:
            return await self._on_open(tunnel, OpenChannel.from_body(envelope.body))
        if envelope.kind is Kind.ASC:
            return await self._on_asc(tunnel, envelope.body, scope)
        if envelope.kind is Kind.ASC_ACKED:
            ack, body = envelope.ack_and_message()
            return await self._on_asc(tunnel, body, scope, ack=ack)
        return Refusal("unexpected_envelope", f"a provider does not take {envelope.kind.name}")\
            .envelope()

    # ------------------------------------------------------------------ OPEN

    async def _on_open(self, tunnel: VaultTunnel, request: OpenChannel) -> Envelope:
        try:
            terms = ChannelTerms(request.client, request.vault, request.provider,
                                 request.provider_key, request.deposit, request.salt)
        except ValueError as e:
            return Refusal("bad_terms", str(e)).envelope()
        if terms.provider != self.provider_address:
            return Refusal("wrong_provider", "the channel pays another provider").envelope()
        if terms.provider_key != self.provider_key:
            return Refusal("wrong_provider_key", "the channel names another key").envelope()
        channel_id = terms.channel_id(self.domain)
        digest = binding_digest(self.enclave.channel_binding(tunnel.handle), channel_id)
        if recover_signer(digest, request.signature) != terms.vault:
            return Refusal("bad_binding_signature", "not signed by the channel's vault").envelope()
        async with self._load_lock:
            slot = await self._load(channel_id)
            if slot is None:
                onchain = await asyncio.to_thread(self.manager.channel, channel_id)
                if onchain.status is not OnChainStatus.OPEN:
                    return Refusal(
                        "channel_not_open", f"on-chain status is {onchain.status.name}"
                    ).envelope()
                slot = Slot(ProviderChannel(
                    terms, self.domain, self.signer, self.presigner,
                    ack_timeout=self.config.timeouts.ack_timeout,
                    lock_timeout=self.config.timeouts.lock_timeout,
                ))
                await self.persist(slot)
                self._slots[channel_id] = slot
                log.info("channel %s registered (deposit %d)", channel_id.hex(), terms.deposit)
        tunnel.channels.add(channel_id)
        return Envelope.ok()

    # ------------------------------------------------------------ ASC messages

    async def _on_asc(
        self, tunnel: VaultTunnel, body: bytes, scope: Scope, *, ack: bytes | None = None
    ) -> Envelope:
        """One ASC message; with ``ack``, the previous request's ACK first (ASC_ACKED).

        A retransmitted message is answered from the record whether or not an ACK
        rides on it: the ACK was taken before the message was first handled.
        """
        try:
            message = decode(body)
            acked = None if ack is None else decode(ack)
        except MessageError as e:
            return Refusal("malformed", str(e)).envelope()
        if acked is not None and (not isinstance(acked, Ack)
                                  or acked.channel_id != message.channel_id):
            return Refusal("malformed", "ASC_ACKED carries an ACK of the same channel").envelope()
        if message.channel_id not in tunnel.channels:
            return Refusal("channel_not_bound", "send OPEN for this channel first").envelope()
        slot = await self._load(message.channel_id)
        if slot is None:  # bound channels are always stored
            return Refusal("unknown_channel", "no such channel").envelope()
        async with slot.lock:
            if slot.last_in and body == slot.last_in:
                return Envelope.decode(slot.last_out)  # a retransmission: the same answer
            try:
                took_ack = acked is not None and self._on_piggybacked_ack(slot, acked)
            except _Refused as refused:
                return refused.envelope
            try:
                if isinstance(message, Exec):
                    answer = await self._on_exec(slot, message, scope)
                else:
                    answer = self._on_message(slot, message)
            except _Refused as refused:
                if took_ack:  # the message is refused, but the payment it acknowledged stands
                    await self.persist(slot)
                return refused.envelope
            answer = self.outgoing(slot, message, answer)
            slot.last_in, slot.last_out = body, answer.encode()
            await self.persist(slot)  # the ACK, if any, is durable with the answer
            return answer

    def _on_piggybacked_ack(self, slot: Slot, ack: Ack) -> bool:
        """Take an ACK that rode on the next message; whether it changed the channel. As on
        its own, a repeated ACK or one for a channel settled meanwhile changes nothing; any
        other refusal refuses the frame."""
        try:
            self._on_message(slot, ack)
        except _Refused as refused:
            if refused.reason not in (Reason.REPLAYED.value, Reason.CHANNEL_CLOSED.value):
                raise
            return False
        return True

    def _on_message(self, slot: Slot, message: AscMessage) -> Envelope:
        try:
            step = slot.channel.receive(message, now=self.clock())
        except ASCError as e:
            raise _Refused(e.reason.value, e.detail) from None
        for event in step.events:
            if isinstance(event, CloseReady):
                slot.final, slot.closed_at = event.signed, self.clock()
        return Envelope.asc(encode(step.send[0])) if step.send else Envelope.ok()

    async def _on_exec(self, slot: Slot, exec_: Exec, scope: Scope) -> Envelope:
        try:
            request = HttpRequest.decode(exec_.request)
        except FrameError as e:
            raise _Refused("malformed_request", str(e)) from None
        match = self.routes.match(request.method, request.path)
        if match is None:
            raise _Refused("not_a_paid_route", f"{request.method} {request.path} is not priced")
        if exec_.amount != match.amount:
            raise _Refused("amount_mismatch", f"the price is {match.amount}, not {exec_.amount}")
        if slot.closing_on_chain:
            raise _Refused("channel_closing", "a force-close of this channel is under way")
        try:
            slot.channel.receive(exec_, now=self.clock())
        except ASCError as e:
            raise _Refused(e.reason.value, e.detail) from None
        rid = exec_.request_id
        try:
            response = await asyncio.wait_for(
                self.execute(request, scope), timeout=self.config.timeouts.lock_timeout * 0.8
            )
        except TimeoutError:
            slot.channel.abandon(rid)
            return Refusal("execution_timeout", "the service did not answer in time").envelope()
        except Exception as e:  # the service crashed: nothing is charged
            log.exception("paid request %d on %s failed", rid, slot.channel_id.hex())
            slot.channel.abandon(rid)
            return Refusal("service_error", type(e).__name__).envelope()
        if response.status >= 400:
            slot.channel.abandon(rid)
            return Refusal(
                "service_failed", f"the service answered {response.status}", response
            ).envelope()
        result = HttpResult(request_digest(exec_.request), response).encode()
        try:
            reply = self.commit(slot, exec_, result)
        except Exception as e:  # the enclave refused or failed: nothing was signed
            log.exception("could not commit to request %d on %s", rid, slot.channel_id.hex())
            slot.channel.abandon(rid)
            return Refusal("commit_failed", type(e).__name__).envelope()
        return Envelope.asc(encode(reply))

    # ------------------------------------------------------------------ seams

    def commit(self, slot: Slot, exec_: Exec, result: bytes) -> Reply:
        """Step ②: seal ``result`` under a fresh ``t`` and pre-sign ``m`` (REPLY)."""
        return slot.channel.reply(exec_.request_id, result)

    def outgoing(self, slot: Slot, incoming: AscMessage, answer: Envelope) -> Envelope:
        """Every answer to a vault message passes here before it is recorded and sent."""
        return answer

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

    def _label(self, channel_id: bytes) -> str:
        return f"a402/provider-channel/{channel_id.hex()}"

    async def persist(self, slot: Slot) -> None:
        """Seal and store ``slot`` (durable when this returns)."""
        record = {
            "format": _RECORD_FORMAT,
            "channel": slot.channel.snapshot().decode(),
            "lastIn": hx(slot.last_in),
            "lastOut": hx(slot.last_out),
            "final": None if slot.final is None else [
                state_to_json(slot.final.state), hx(slot.final.vault_signature),
                hx(slot.final.provider_signature),
            ],
            "closedAt": slot.closed_at,
            "closingOnChain": slot.closing_on_chain,
            "forceCloseDue": slot.force_close_due,
            "onchainClosed": slot.onchain_closed,
            "closeTx": slot.close_tx,
        }
        blob = self.enclave.seal(self._label(slot.channel_id), jsonbytes.dumps(record))
        await self.store.save(slot.channel_id, blob, active=not slot.onchain_closed)

    async def _load(self, channel_id: bytes) -> Slot | None:
        slot = self._slots.get(channel_id)
        if slot is not None:
            return slot
        blob = await asyncio.to_thread(self.store.load, channel_id)
        if blob is None:
            return None
        slot = self._unseal(channel_id, blob)
        return self._slots.setdefault(channel_id, slot)

    def _unseal(self, channel_id: bytes, blob: bytes) -> Slot:
        record = json.loads(self.enclave.unseal(self._label(channel_id), blob))
        if record.get("format") != _RECORD_FORMAT:
            raise ValueError("not a provider channel record")
        channel = ProviderChannel.restore(
            record["channel"].encode(), self.signer, self.presigner
        )
        final = record["final"]
        return Slot(
            channel,
            last_in=unhex(record["lastIn"]),
            last_out=unhex(record["lastOut"]),
            final=None if final is None else SignedState(
                state_from_json(final[0]), unhex(final[1]), unhex(final[2])
            ),
            closed_at=record["closedAt"],
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
        claim: ForceCloseClaim = slot.channel.claim()
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

    async def mark_closed(self, slot: Slot) -> None:
        slot.channel.closed_on_chain()
        slot.onchain_closed, slot.force_close_due = True, False
        await self.persist(slot)
