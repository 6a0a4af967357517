"""The vault's side of the A402 exchange: one attested tunnel per provider.

The driver around a vault channel's machine that the vault service builds
on: the vault enclave's :class:`~a402.vault_enclave.EnclaveChannel` (in
production: the machine, and the key, stay in the enclave), or a bare
:class:`a402.asc.VaultChannel` (tests and tools). It decides what to send and
what an answer means; the bytes travel by a
:class:`~a402.vault.link.ProviderLink` (see **Link** below). :class:`ProviderTunnel`:

1. ``connect()``: fetches ``…/info`` with a fresh nonce, verifies the
   provider's attestation (a configured verifier and policy; simulated quotes
   only if that verifier was built with ``allow_simulated=True``), checks the
   evidence binds the advertised Schnorr key, address and ASCManager, then
   runs the Noise XX handshake (both sides' evidence verified again, bound to
   the transcript) and checks the handshake peer is the same enclave.
2. ``attach(channel)``: OPEN — proves to the provider, with the vault's
   signature over the tunnel's binding (:class:`TunnelAuthority`), that this
   tunnel speaks for the channel (after ``createASC``).
3. ``request(channel, call, δ)``: EXEC (for an enclave channel, ``call`` is the
   client's :class:`~a402.vault_enclave.SignedCall`, which the enclave checks and
   turns into the paid request) → check REPLY (pre-signature
   on m(cid, rid, δ, answer_hash(request, h)) under T with the attested key, the
   request being the one this EXEC carried) → AUTH (σ_U) → check
   REVEAL (t·G = T, the provider's state signature), open the sealed result
   and check ``H(result) = h`` and that it answers *this* request → ACK.
   Returns the service's response and the receipt (the co-signed state) as
   soon as the result is checked: the ACK rides on the channel's next EXEC
   (one frame, ``ASC_ACKED``), or is sent on its own after ``ack_delay``.
4. ``close(channel)``: CLOSE → CLOSE_ACK: the final state, ready for
   ``closeASC``.

:func:`recover_from_force_close` is the fallback of ④b: when the provider
settles on-chain instead of revealing, ``t`` is extracted from its
``forceClose`` calldata and/or the ``ProviderForceClosed`` log and the result
is opened all the same.

**Persistence.** Every transition is handed to ``persist`` (a
:class:`Checkpoint`, with the machine's snapshot) *before* the next message
leaves: before EXEC (the request id is taken), before AUTH (σ_U is about to
exist — the vault must remember the pre-signature to extract ``t`` later),
before ACK (δ is credited), before CLOSE and after CLOSE_ACK. Restore with
:meth:`VaultEnclave.restore <a402.vault_enclave.VaultEnclave.restore>` (the
snapshot is sealed by the enclave's code) or ``VaultChannel.restore`` and call
:meth:`ProviderTunnel.resume`.

**A held DELIVERED.** The ACK never leaves with the REVEAL: it rides on the channel's
next EXEC, or leaves on its own after ``ack_delay``. So the DELIVERED checkpoint need
only be durable before *that* frame, not before the result is returned. A tunnel built
with ``durable`` marks its DELIVERED checkpoints :attr:`Checkpoint.deferrable`: its
persister may hold one back and write it in the same transaction as the channel's next
checkpoint (the next request's LOCKED: one commit a request fewer on a busy channel),
and the tunnel calls ``durable(channel_id)`` before any ACK leaves on its own
(:meth:`_flush_ack`: the ACK timer, :meth:`close`, :meth:`resume`, a provider that
still holds the request). Every money-moving step stays durable before it is
acknowledged: σ_U before AUTH (AUTHORIZED, never held), δ's credit before the ACK
(DELIVERED, written with or before the frame that carries the ACK). A process that dies
with a DELIVERED held restarts at AUTHORIZED (PENDING): :meth:`resume` re-sends AUTH,
the provider — which has no ACK, so still holds the request — answers it from its
record with the same REVEAL, and the result and its receipt are recorded then: nothing
is paid twice (the same request id, the same state) and no delivered result is lost
(the provider keeps it until the ACK, which cannot have left).

**Retries.** A lost request or answer is retried with the same ASC message in
a fresh frame (new Noise counter); the provider answers a repeated message
from its record, so a retry never runs or pays twice. A frame the provider
could not authenticate (tampered in transit) is retried the same way. One
frame is in flight per tunnel (Noise counters must arrive in order); one
request is in flight per channel — a second caller waits (or, with
``wait=False``, is refused).

**Link.** The tunnel decides; a :class:`~a402.vault.link.ProviderLink`
carries its bytes (:mod:`a402.vault.link`): ``…/info``, the handshake, and the
frames through a :class:`~a402.wire.transport.FrameTransport`. By default an
:class:`~a402.vault.link.HttpLink`: frames over one WebSocket per tunnel
(``…/stream``; a fraction of the cost of an HTTP request per frame), or by
``POST …/message`` when the tunnel is built with ``transport="http"`` or with
its own ``http`` client (a test's recording transport), and for good once a
provider refuses the WebSocket upgrade. Give ``link`` to carry them otherwise
(:class:`~a402.vault.link.InMemoryLink`: a provider in the same process). The
transport's failures mean the same whatever carries the frames:
:class:`~a402.wire.transport.UnknownTunnel` → handshake again;
:class:`~a402.wire.transport.FrameRefused` and
:class:`~a402.wire.transport.LinkDown` → the same message in a fresh frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import httpx
from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes
from web3.types import TxReceipt

from a402.asc import (
    Ack,
    ChannelTerms,
    CloseAck,
    CloseReady,
    LocalProtocolError,
    Reason,
    RemoteProtocolError,
    Reply,
    ResultDelivered,
    Reveal,
    SignedState,
    Status,
    VaultChannel,
    decode,
)
from a402.asc.errors import MessageError
from a402.asc.messages import Message as AscMessage
from a402.asc_manager import ASCManager, PublishedSignature
from a402.crypto import PaymentDomain
from a402.memo import memo_short
from a402.tee import AttestationError, AttestationPolicy, AttestationVerifier, Enclave
from a402.tee.errors import ChannelError
from a402.vault_enclave import EnclaveChannel, LogEntry, SignedCall
from a402.wire.a402 import (
    PROLOGUE,
    REQUEST_AD,
    RESPONSE_AD,
    WELL_KNOWN_PREFIX,
    Envelope,
    FrameError,
    HttpRequest,
    HttpResponse,
    HttpResult,
    Kind,
    OpenChannel,
    ProviderInfo,
    Refusal,
    provider_user_data,
    request_digest,
)
from a402.wire.transport import FrameRefused, LinkDown, UnknownTunnel

from .link import BadInfo, HttpLink, Mode, ProviderLink
from .store import Claim

log = logging.getLogger("a402.vault.tunnel")

M = TypeVar("M", bound=AscMessage)

#: A channel's machine as the tunnel drives it: in the vault enclave, or (tests) here.
AnyChannel = VaultChannel | EnclaveChannel


class TunnelAuthority(Protocol):
    """Who speaks for the channels on a tunnel: the vault (its enclave,
    :class:`~a402.vault_enclave.VaultEnclave`), which signs OPEN's binding only for a
    channel it holds."""

    @property
    def address(self) -> bytes:
        """The vault's 20-byte address (every channel's ``vault``)."""
        ...

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        """The vault's signature over ``binding_digest(channel_binding(handle), cid)``."""
        ...


#: How frames reach the provider over HTTP: the tunnel's WebSocket, or one POST each.
Transport = Mode


# ------------------------------------------------------------------ persistence


class CheckpointReason(StrEnum):
    """Which transition a checkpoint records."""

    ATTACHED = "attached"  # the channel is bound to a provider tunnel (state as opened)
    LOCKED = "locked"  # δ locked, request id taken; EXEC about to leave
    AUTHORIZED = "authorized"  # REPLY verified, σ_U made; AUTH about to leave
    DELIVERED = "delivered"  # REVEAL verified, δ credited; ACK about to leave
    EXPIRED = "expired"  # the locked request was given up (refused, bad REPLY, Δ_lock)
    CLOSING = "closing"  # the final state proposed; CLOSE about to leave
    CLOSE_READY = "close_ready"  # the final state co-signed; ready for closeASC
    FORCE_CLOSED = "force_closed"  # the provider settled on-chain; t extracted


class CallRecord(Protocol):
    """The call a channel's request pays for, as that request's checkpoints record it.

    The tunnel hands it, untouched, to every checkpoint of the request it was given
    with (:meth:`ProviderTunnel.request`, :meth:`~ProviderTunnel.resume`); the
    writer (:meth:`Channels.persist <a402.vault.channels.Channels.persist>`)
    records the call's progress from it in the checkpoint's own transaction. The
    vault's is :class:`~a402.vault.call.PaidCall` (or, for a call the worker
    finishes, :class:`~a402.vault.call.ResumedCall`).
    """

    @property
    def key(self) -> str:
        """The call's record (the store's request key)."""
        ...

    @property
    def claim(self) -> Claim | None:
        """The call's claim while it is not recorded: written with the LOCKED checkpoint."""
        ...

    def final(self, paid: PaidResponse) -> dict[str, Any] | None:
        """The call's final record once ``paid``, written with the DELIVERED checkpoint;
        ``None``: recorded afterwards, on its own."""
        ...

    def continues(self, paid: PaidResponse) -> bool:
        """Whether a next call on the channel is expected at once once ``paid`` (a
        stream's group that is not its last): its DELIVERED checkpoint may then wait to be
        written with that call's LOCKED (see :attr:`Checkpoint.deferrable`)."""
        ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One durable step of a vault channel.

    The indexed fields are for the store's queries and dashboards; ``snapshot``
    is the whole truth: for an enclave channel, its record sealed by the vault
    enclave's code (restored with :meth:`VaultEnclave.restore
    <a402.vault_enclave.VaultEnclave.restore>`; the host cannot open it); for a
    bare :class:`VaultChannel`, :meth:`VaultChannel.snapshot` (restored with
    :meth:`VaultChannel.restore`). Store it atomically, keyed by ``channel_id``,
    replacing the previous one.
    """

    channel_id: bytes
    reason: CheckpointReason
    status: Status
    version: int
    next_request_id: int
    free: int
    locked: int
    provider_balance: int
    snapshot: bytes
    #: AUTHORIZED: the REPLY σ_U answers (its sealed result is the call's to keep).
    reply: Reply | None = None
    #: DELIVERED: ``t`` and the co-signed state that paid the request...
    secret: bytes | None = None
    receipt: SignedState | None = None
    #: ...and the paid response, so that the writer may record the call's answer in the
    #: same transaction (one commit fewer per paid request).
    paid: PaidResponse | None = None
    #: The call the channel's request pays for (None: no request, or a bare use).
    call: CallRecord | None = None
    #: New entries of the channel's log of consumed calls (an enclave channel's, see
    #: :meth:`EnclaveChannel.checkpoint`): stored in the same transaction as ``snapshot``,
    #: which names them.
    log: tuple[LogEntry, ...] = ()
    #: DELIVERED, and the ACK it acknowledges has not left: the persister may hold it and
    #: write it with the channel's next checkpoint, as long as it is durable when the
    #: tunnel's ``durable`` hook returns (the tunnel calls it before the ACK leaves on
    #: its own). Nothing else is ever deferrable.
    deferrable: bool = False

    @classmethod
    def of(cls, channel: AnyChannel, reason: CheckpointReason,
           paid: PaidResponse | None = None, call: CallRecord | None = None, *,
           deferrable: bool = False) -> Checkpoint:
        reply = channel.pending_reply() if reason is CheckpointReason.AUTHORIZED else None
        reveal = channel.last_reveal() if reason is CheckpointReason.DELIVERED else None
        if isinstance(channel, EnclaveChannel):
            snapshot, log = channel.checkpoint()
            figures = channel.figures()
        else:
            snapshot, log = channel.snapshot(), []
            figures = (channel.status, channel.version, channel.next_request_id, channel.free,
                       channel.locked, channel.provider_balance)
        return cls(
            channel.channel_id, reason, *figures,
            snapshot, reply, None if reveal is None else reveal.adaptor_secret,
            None if reveal is None else channel.latest_state(), paid, call, tuple(log),
            deferrable and reason is CheckpointReason.DELIVERED,
        )


#: Called with every checkpoint; must return only once it is durable (a
#: :attr:`Checkpoint.deferrable` one: once it is durable or held, see ``Durable``).
Persist = Callable[[Checkpoint], Awaitable[None]]
#: Makes the channel's held DELIVERED checkpoint (if any) durable; called before an ACK
#: leaves on its own.
Durable = Callable[[bytes], Awaitable[None]]


async def _no_persistence(_: Checkpoint) -> None:
    return None


# ----------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class PaidResponse:
    """A paid result: the service's response, what was paid, and the proof of payment.

    ``receipt`` is the state that pays this request, signed by vault and
    provider (off-chain delivery); ``transaction`` the provider's
    ``forceClose`` when the result came from the chain instead.
    """

    response: HttpResponse
    request_id: int
    amount: int
    receipt: SignedState | None = None
    transaction: str | None = None

    @property
    def on_chain(self) -> bool:
        return self.transaction is not None


class TunnelError(Exception):
    """Base of the tunnel's errors; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = str(reason)
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else str(reason))


#: A frame refused because this vault process lost its lease (the reason of
#: :class:`ProviderUnavailable`; the API answers ``vault_standby`` anyway).
NOT_ACTIVE = "vault_standby"


class ProviderUnavailable(TunnelError):
    """No usable answer after the retries (network, provider down, frames rejected)."""


class ProviderRefused(TunnelError):
    """The provider refused the request; nothing was authorised, nothing is paid.

    ``response`` is the service's own answer when the service failed (status ≥ 400).
    """

    def __init__(self, reason: str, detail: str = "", response: HttpResponse | None = None):
        super().__init__(reason, detail)
        self.response = response


class ProtocolViolation(TunnelError):
    """The provider sent something the protocol forbids (e.g. a bad pre-signature).

    Raised before σ_U is issued, so nothing is paid; the channel is OPEN again.
    """


class PaymentPending(TunnelError):
    """σ_U is out and no valid REVEAL came: the request is PENDING.

    It settles one of three ways: a later REVEAL (:meth:`ProviderTunnel.resume`),
    the provider's on-chain claim (:func:`recover_from_force_close`, which still
    yields the result), or a client force-close after the dispute window.
    """

    def __init__(self, reason: str, detail: str, channel_id: bytes, request_id: int) -> None:
        super().__init__(reason, detail)
        self.channel_id = channel_id
        self.request_id = request_id


class ResultMismatch(TunnelError):
    """The opened result answers another request than the one sent (paid nonetheless)."""

    def __init__(self, paid: PaidResponse) -> None:
        super().__init__("result_mismatch", "the sealed result is for another request")
        self.paid = paid


class _Retry(Exception):
    """One attempt failed in a way a fresh frame may fix."""


class _TunnelLost(Exception):
    """The provider no longer knows the tunnel: handshake again."""


# ------------------------------------------------------------------------ tunnel


@memo_short(4096)  # a pure function, asked several times per paid call
def canonical_endpoint(endpoint: str) -> str:
    """``endpoint`` as a tunnel names it: no trailing slash, ending in the a402 prefix."""
    base = endpoint.rstrip("/")
    return base if base.endswith(WELL_KNOWN_PREFIX) else base + WELL_KNOWN_PREFIX


class ProviderTunnel:
    """The vault's attested tunnel with one provider; drives that provider's channels.

    - ``endpoint``: the provider's base URL, or its ``…/.well-known/a402``
      endpoint (as the 402's ``extra.endpoint`` gives it).
    - ``enclave``: the vault enclave (its attested X25519 key authenticates
      the tunnel); ``verifiers`` and ``policy``: what provider enclaves are
      acceptable.
    - ``vault``: the vault (:class:`TunnelAuthority`: its address, and OPEN's
      binding signature; σ_U and states are signed by each channel's machine).
    - ``network``: refuse a provider on any other chain.
    - ``persist``: see :class:`Checkpoint`; the default keeps nothing.
    - ``durable``: see **A held DELIVERED** (module): with it, DELIVERED checkpoints
      are deferrable, and the hook is called before any ACK leaves on its own.
    - ``ack_delay``: how long an unsent ACK waits to ride on the channel's next
      EXEC (default: a quarter of the provider's Δ_ack, at most five seconds).
    - ``transport``: ``"stream"`` (one WebSocket per tunnel) or ``"http"``
      (one POST per frame). Default: the stream, unless ``http`` is given —
      a caller that brings its own client wants to see the frames in it.
      ``timeout`` bounds each frame's round trip either way.
    - ``link``: what carries the bytes instead of an
      :class:`~a402.vault.link.HttpLink` to ``endpoint`` (then ``http``,
      ``transport`` and ``timeout`` are the link's business).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        enclave: Enclave,
        verifiers: Sequence[AttestationVerifier],
        policy: AttestationPolicy,
        vault: TunnelAuthority,
        network: str | None = None,
        persist: Persist | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        attempts: int = 3,
        ack_delay: float | None = None,
        clock: Callable[[], float] = time.time,
        transport: Transport | None = None,
        link: ProviderLink | None = None,
        may_send: Callable[[], bool] | None = None,
        durable: Durable | None = None,
    ) -> None:
        self.endpoint = canonical_endpoint(endpoint)
        self._origin = self.endpoint[: -len(WELL_KNOWN_PREFIX)]
        self.enclave = enclave
        self.verifiers = {v.kind: v for v in verifiers}
        self.policy = policy
        self.vault = vault
        self.network = network
        self.persist: Persist = persist or _no_persistence
        self.durable = durable
        self.link: ProviderLink = link or HttpLink(self._origin, http=http, mode=transport,
                                                   timeout=timeout)
        self.attempts = max(1, attempts)
        self.ack_delay = ack_delay
        self.clock = clock
        self.info: ProviderInfo | None = None
        self._attested: tuple[bytes, bytes] | None = None  # (signing key, measurement)
        self._handle: str | None = None
        self._tunnel_id: str | None = None
        self._frame_lock = asyncio.Lock()
        self._channel_locks: dict[bytes, asyncio.Lock] = {}
        self._bound: dict[bytes, ChannelTerms] = {}
        self._unacked: dict[bytes, Ack] = {}
        self._ack_flushes: dict[bytes, asyncio.Task[None]] = {}
        self._closed = False
        #: Checked before every frame leaves (fail-over: false once this process is no
        #: longer the active vault, :mod:`a402.vault.lease`): then nothing is sent.
        self.may_send = may_send

    async def __aenter__(self) -> ProviderTunnel:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._ack_flushes.values()):  # resume() re-sends them after a restart
            task.cancel()
        if self._handle is not None:
            self.enclave.channel_close(self._handle)
            self._handle = None
        await self.link.aclose()

    # ------------------------------------------------------------- attestation

    async def connect(self) -> ProviderInfo:
        """Verify the provider's attestation and open the secure tunnel."""
        nonce = os.urandom(32)
        try:
            info = await self.link.info(nonce)
        except BadInfo as e:
            raise ProtocolViolation(e.reason, e.detail) from None
        except LinkDown as e:
            raise ProviderUnavailable(e.reason, e.detail) from None
        verifier = self.verifiers.get(info.attestation_kind)
        if verifier is None:
            raise AttestationError("unsupported_kind", f"no verifier for {info.attestation_kind!r}")
        attested = verifier.verify(info.evidence, self.policy.with_nonce(nonce))
        if attested.signing_key != b"\x02" + info.provider_key:
            raise AttestationError("bad_key_binding", "the advertised key is not the attested key")
        if attested.user_data != provider_user_data(info.chain_id, info.asc_manager, info.provider):
            raise AttestationError(
                "bad_key_binding", "the evidence does not name this provider and ASCManager"
            )
        if self.network is not None and info.network != self.network:
            raise ProtocolViolation("wrong_network", f"provider is on {info.network}")
        await self._handshake(attested.signing_key, attested.measurement)
        self.info, self._attested = info, (attested.signing_key, attested.measurement)
        return info

    async def _handshake(self, signing_key: bytes, measurement: bytes) -> None:
        handle, first = self.enclave.channel_initiate(
            self.policy, list(self.verifiers.values()), prologue=PROLOGUE
        )
        try:
            tunnel_id, second = await self.link.open_tunnel(first)
            third, peer = self.enclave.channel_finish(handle, second)
            if peer.signing_key != signing_key or peer.measurement != measurement:
                raise AttestationError(
                    "enclave_mismatch", "the tunnel's enclave is not the one /info attested"
                )
            await self.link.finish_tunnel(tunnel_id, third)
        except LinkDown as e:
            self.enclave.channel_close(handle)
            raise ProviderUnavailable(e.reason, e.detail) from None
        except BaseException:
            self.enclave.channel_close(handle)
            raise
        if self._handle is not None:
            self.enclave.channel_close(self._handle)
        # The link's stream (if any) carries the old tunnel: the next frame opens a new one.
        self._handle, self._tunnel_id = handle, tunnel_id

    # ---------------------------------------------------------------- channels

    def terms(
        self, *, client: str | bytes, deposit: int, salt: bytes | None = None
    ) -> ChannelTerms:
        """Terms for a new channel with this provider (its address and attested key)."""
        info = self._require_info()
        return ChannelTerms(
            client=client, vault=self.vault.address, provider=info.provider,
            provider_key=info.provider_key, deposit=deposit, salt=salt or os.urandom(32),
        )

    def _require_info(self) -> ProviderInfo:
        if self.info is None:
            raise LocalProtocolError(Reason.NOT_ALLOWED, "connect() first")
        return self.info

    def _check_channel(self, channel: AnyChannel) -> None:
        info = self._require_info()
        terms, domain = channel.terms, channel.domain
        if (terms.provider, terms.provider_key) != (info.provider, info.provider_key):
            raise ValueError("the channel is with another provider or key")
        if (domain.chain_id, domain.verifying_contract) != (info.chain_id, info.asc_manager):
            raise ValueError("the channel lives on another chain or ASCManager")
        if terms.vault != self.vault.address:
            raise ValueError("the channel's vault is not this tunnel's vault")
        if channel.lock_timeout <= info.lock_timeout:
            raise ValueError(
                f"Δ_lock ({channel.lock_timeout}s) must exceed the provider's lock "
                f"({info.lock_timeout}s), or the provider may still be executing a request "
                "the vault gave up"
            )

    async def attach(self, channel: AnyChannel) -> None:
        """Bind ``channel`` (already open on-chain) to this tunnel (OPEN).

        An idle channel's last ACK is owed again: the tunnel (or process) that made it
        may have ended before it reached the provider, which then refuses every EXEC
        until it comes. Like any owed ACK it rides on the channel's next EXEC or leaves
        on its own after ``ack_delay``; the provider ignores one it already has.
        """
        self._check_channel(channel)
        await self._open(channel.terms)
        self._bound[channel.channel_id] = channel.terms
        await self._persist(channel, CheckpointReason.ATTACHED)
        last_ack = channel.last_ack()
        if last_ack is not None and channel.status is Status.OPEN:
            self._owe_ack(channel, last_ack)

    def detach(self, channel_id: bytes) -> None:
        """Forget a channel bound since on another tunnel (its provider moved there): no
        OPEN for it on a reconnect, and no ACK sent from here. Safe to drop the owed ACK:
        :meth:`attach` on the new tunnel owed the channel's newest ACK again there."""
        self._bound.pop(channel_id, None)
        self._unacked.pop(channel_id, None)

    async def _open(self, terms: ChannelTerms) -> None:
        assert self._handle is not None and self.info is not None
        cid = terms.channel_id(_domain(self.info))
        signature = self.vault.bind_tunnel(self._handle, cid)
        envelope = OpenChannel(
            terms.client, terms.vault, terms.provider, terms.provider_key, terms.deposit,
            terms.salt, signature,
        ).envelope()
        answer = await self._exchange_once(envelope)
        if answer.kind is not Kind.OK:
            refusal = _refusal(answer)
            raise ProviderRefused(refusal.reason, refusal.detail)

    def _lock(self, channel: AnyChannel) -> asyncio.Lock:
        return self._lock_of(channel.channel_id)

    def _lock_of(self, channel_id: bytes) -> asyncio.Lock:
        lock = self._channel_locks.get(channel_id)
        if lock is None:  # not setdefault: that would make a lock at every request
            lock = self._channel_locks[channel_id] = asyncio.Lock()
        return lock

    # -------------------------------------------------------------- requests

    async def request(
        self, channel: AnyChannel, request: HttpRequest | SignedCall, amount: int, *,
        wait: bool = True, call: CallRecord | None = None,
    ) -> PaidResponse:
        """Pay ``amount`` for ``request`` through ``channel``; the result and its receipt.

        An enclave channel takes the client's signed call (the enclave builds the paid
        request from it); a bare :class:`~a402.asc.VaultChannel` the request itself.
        ``call`` rides on every checkpoint of this request (see :class:`CallRecord`).

        Raises :class:`ProviderRefused` / :class:`ProtocolViolation` /
        :class:`ProviderUnavailable` when nothing was paid, :class:`PaymentPending`
        when σ_U is out without a valid REVEAL, :class:`ResultMismatch` when the
        paid result answers another request.
        """
        lock = self._lock(channel)
        if not wait and lock.locked():
            raise LocalProtocolError(Reason.REQUEST_IN_FLIGHT, "a request is in flight")
        async with lock:
            if isinstance(channel, EnclaveChannel):
                if not isinstance(request, SignedCall):
                    raise TypeError("an enclave channel pays only for a client's signed call")
                exec_ = channel.request(request, amount, now=self.clock())
            else:
                if not isinstance(request, HttpRequest):
                    raise TypeError("a bare channel takes the HTTP request")
                exec_ = channel.request(request.encode(), amount, now=self.clock())
            raw = exec_.request
            await self._persist(channel, CheckpointReason.LOCKED, call=call)
            # The previous request's ACK, if still unsent, rides on this EXEC (ASC_ACKED).
            return await self._drive(channel, exec_.encode(), raw, call,
                                     ack=self._unacked.pop(channel.channel_id, None))

    async def resume(self, channel: AnyChannel, *,
                     call: CallRecord | None = None) -> PaidResponse | None:
        """Finish whatever ``channel`` was doing (after a restart or a :class:`PaymentPending`).

        LOCKED: re-sends EXEC (answered from the provider's record); PENDING:
        re-sends AUTH and waits for REVEAL; an unsent ACK or CLOSE is re-sent.
        Returns the paid response if a request completed. ``call``: the call the
        channel's request pays for, for its checkpoints.
        """
        async with self._lock(channel):
            last_ack = channel.last_ack()  # may have been riding on the EXEC in flight
            if channel.status is Status.LOCKED:
                channel.poll(now=self.clock())
                exec_ = channel.pending_exec()
                if exec_ is None:  # Δ_lock passed meanwhile
                    await self._persist(channel, CheckpointReason.EXPIRED, call=call)
                    if last_ack is not None:
                        self._owe_ack(channel, last_ack)
                    return None
                return await self._drive(channel, exec_.encode(), exec_.request, call,
                                         ack=last_ack)
            if channel.status is Status.PENDING:
                pending, auth = channel.pending_request(), channel.pending_auth()
                assert pending is not None and auth is not None
                return await self._settle(channel, auth.encode(), pending[2], call)
            if last_ack is not None and channel.status is Status.OPEN:
                self._unacked.setdefault(channel.channel_id, last_ack)
            await self._flush_ack(channel.channel_id)
            return None

    async def _drive(
        self, channel: AnyChannel, exec_bytes: bytes, raw: bytes, call: CallRecord | None, *,
        ack: Ack | None = None,
    ) -> PaidResponse:
        """From EXEC sent to the end: REPLY checked, AUTH, then :meth:`_settle`."""
        try:
            reply = await self._ask(channel, exec_bytes, Reply, ack=ack)
        except Exception as e:  # no σ_U exists yet: releasing δ is safe whatever went wrong
            if ack is not None:  # maybe not delivered: send it again (a repeat is harmless)
                self._owe_ack(channel, ack)
            await self._give_up(channel, call)
            if isinstance(e, ProviderRefused) and e.reason == Reason.REQUEST_IN_FLIGHT:
                await self._ack_now(channel)
            raise
        try:
            step = channel.receive(reply, now=self.clock())
        except RemoteProtocolError as e:
            await self._give_up(channel, call)
            raise ProtocolViolation(e.reason, e.detail) from None
        await self._persist(channel, CheckpointReason.AUTHORIZED, call=call)
        return await self._settle(channel, step.send[0].encode(), raw, call)

    async def _settle(self, channel: AnyChannel, auth_bytes: bytes, raw: bytes,
                      call: CallRecord | None) -> PaidResponse:
        """AUTH sent, REVEAL checked, result opened, ACK sent."""
        pending = channel.pending_request()
        assert pending is not None
        request_id = pending[0]
        try:
            reveal = await self._ask(channel, auth_bytes, Reveal)
            step = channel.receive(reveal, now=self.clock())
        except (RemoteProtocolError, TunnelError) as e:
            raise PaymentPending(e.reason, e.detail, channel.channel_id, request_id) from None
        except Exception as e:  # e.g. the tunnel could not be re-established
            raise PaymentPending(type(e).__name__, str(e), channel.channel_id, request_id) from e
        ack, delivered = step.send[0], step.events[0]
        assert isinstance(ack, Ack) and isinstance(delivered, ResultDelivered)
        paid: PaidResponse | None = None
        failure: TunnelError | None = None
        try:
            # the charge δ' the provider committed to in m (≤ the δ locked)
            paid = _paid(delivered.result, raw, request_id, delivered.amount,
                         receipt=channel.latest_state())
        except (ResultMismatch, ProtocolViolation) as e:  # paid all the same: raised below
            failure = e
        # Durable (or held: see the module) before the ACK leaves, which it does not here.
        await self._persist(channel, CheckpointReason.DELIVERED, paid, call,
                            deferrable=self.durable is not None)
        # The result is ours: the ACK rides on this channel's next EXEC (after its LOCKED
        # checkpoint, which writes a held DELIVERED), or goes out on its own after
        # ``ack_delay`` if none comes — well within the provider's Δ_ack.
        self._owe_ack(channel, ack)
        if failure is not None:
            raise failure
        assert paid is not None
        return paid

    async def _ack_now(self, channel: AnyChannel) -> None:
        """The provider still holds an earlier request of ``channel`` (it refused an EXEC
        with ``request_in_flight``): send our last ACK now, so that a retry finds the
        channel free. Best effort under the channel's lock; if it fails, the owed ACK
        goes out later as any other."""
        last_ack = channel.last_ack()
        if last_ack is None or channel.status is not Status.OPEN:
            return
        self._owe_ack(channel, last_ack)
        try:
            await self._flush_ack(channel.channel_id)
        except TunnelError as e:
            log.warning("ACK on %s not delivered yet: %s", channel.channel_id.hex(), e)

    def _ack_delay(self) -> float:
        """How long an ACK waits for a next EXEC to ride on: a quarter of the provider's
        Δ_ack, at most five seconds — long enough that a busy channel (even one slowed
        by load) never sends an ACK frame of its own, and short enough to leave three
        quarters of Δ_ack for retries before the provider would claim on-chain."""
        if self.ack_delay is not None:
            return self.ack_delay
        return min(5.0, self.info.ack_timeout / 4) if self.info is not None else 0.0

    def _owe_ack(self, channel: AnyChannel, ack: Ack) -> None:
        """Remember an unsent ACK (the newest wins) and make sure it leaves in time."""
        current = self._unacked.get(channel.channel_id)
        if current is None or current.request_id <= ack.request_id:
            self._unacked[channel.channel_id] = ack
        self._flush_ack_later(channel)

    def _flush_ack_later(self, channel: AnyChannel) -> None:
        cid = channel.channel_id
        if cid in self._ack_flushes or self._closed:  # a pending flush sends the newest ACK
            return

        async def flush() -> None:
            again = False
            try:
                await asyncio.sleep(self._ack_delay())
                async with self._lock(channel):
                    await self._flush_ack(cid)
            except ProviderRefused as e:
                log.error("ACK on %s refused: %s", cid.hex(), e)
            except Exception as e:  # the provider is unreachable: try again later
                log.warning("ACK on %s not delivered yet: %s", cid.hex(), e)
                again = True
            finally:
                self._ack_flushes.pop(cid, None)
            if again and cid in self._unacked:
                self._flush_ack_later(channel)

        self._ack_flushes[cid] = asyncio.get_running_loop().create_task(flush())

    async def flush_acks(self) -> None:
        """Send every unsent ACK now, instead of with the next EXEC or after ``ack_delay``."""
        for channel_id in list(self._unacked):
            async with self._lock_of(channel_id):
                await self._flush_ack(channel_id)

    def forget_ack(self, channel_id: bytes) -> None:
        """Drop the channel's unsent ACK: the DELIVERED it acknowledges was held and could
        not be written, so it must never leave (the channel's machine restarts from its
        last durable state, and owes the ACK again only once that state has it)."""
        self._unacked.pop(channel_id, None)

    async def _flush_ack(self, channel_id: bytes) -> None:
        ack = self._unacked.get(channel_id)
        if ack is None:
            return
        if self.durable is not None:  # the DELIVERED it acknowledges, if still held
            await self.durable(channel_id)
            if self._unacked.get(channel_id) is not ack:  # forgotten: it was not written
                return
        answer = await self.exchange(Envelope.asc(ack.encode()))
        if answer.kind is Kind.ERROR:
            refusal = _refusal(answer)
            # Already acknowledged (a re-send after a restart), or the provider settled
            # on-chain meanwhile: nothing is left to acknowledge.
            if refusal.reason not in (Reason.CHANNEL_CLOSED, Reason.REPLAYED):
                raise ProviderRefused(refusal.reason, refusal.detail)
        self._unacked.pop(channel_id, None)

    async def _give_up(self, channel: AnyChannel, call: CallRecord | None) -> None:
        """Release a LOCKED request: no σ_U exists for it, so δ is safe to free now."""
        if channel.status is Status.LOCKED:
            channel.abandon()
            await self._persist(channel, CheckpointReason.EXPIRED, call=call)

    async def _ask(
        self, channel: AnyChannel, message: bytes, kind: type[M], *, ack: Ack | None = None
    ) -> M:
        """Send one ASC message (after ``ack``); the answer must be a ``kind`` message."""
        envelope = Envelope.asc(message) if ack is None else Envelope.acked(ack.encode(), message)
        answer = await self.exchange(envelope)
        if answer.kind is Kind.ERROR:
            refusal = _refusal(answer)
            raise ProviderRefused(refusal.reason, refusal.detail, refusal.response)
        if answer.kind is not Kind.ASC:
            raise ProtocolViolation("unexpected_answer", f"{answer.kind.name} instead of a message")
        try:
            decoded = decode(answer.body)
        except MessageError as e:
            raise ProtocolViolation(Reason.MALFORMED, str(e)) from None
        if not isinstance(decoded, kind):
            raise ProtocolViolation(
                Reason.UNEXPECTED_MESSAGE, f"{type(decoded).__name__} instead of {kind.__name__}"
            )
        return decoded

    # ------------------------------------------------------------------ close

    async def close(self, channel: AnyChannel) -> SignedState:
        """Co-sign the final state with the provider (CLOSE → CLOSE_ACK), for ``closeASC``."""
        async with self._lock(channel):
            await self._flush_ack(channel.channel_id)
            close = channel.pending_close()
            if close is None:
                close = channel.close()
                await self._persist(channel, CheckpointReason.CLOSING)
            close_ack = await self._ask(channel, close.encode(), CloseAck)
            try:
                step = channel.receive(close_ack, now=self.clock())
            except RemoteProtocolError as e:
                raise ProtocolViolation(e.reason, e.detail) from None
            ready = step.events[0]
            assert isinstance(ready, CloseReady)
            await self._persist(channel, CheckpointReason.CLOSE_READY)
            return ready.signed

    # -------------------------------------------------------------- the chain

    async def recover(
        self, channel: AnyChannel, manager: ASCManager, *, tx_hash: bytes | str | None = None,
        receipt: TxReceipt | None = None, call: CallRecord | None = None,
    ) -> PaidResponse | None:
        """:func:`recover_from_force_close`, then persist (the channel is CLOSED)."""
        async with self._lock(channel):
            paid = await asyncio.to_thread(
                recover_from_force_close, channel, manager, tx_hash=tx_hash, receipt=receipt
            )
            self._unacked.pop(channel.channel_id, None)
            await self._persist(channel, CheckpointReason.FORCE_CLOSED, call=call)
            return paid

    # ---------------------------------------------------------------- frames

    async def exchange(self, envelope: Envelope) -> Envelope:
        """Send one envelope and return the provider's; retried on transient failures.

        Only for idempotent envelopes (every ASC message and OPEN are): a retry
        carries the same envelope in a fresh frame.
        """
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                return await self._exchange_once(envelope)
            except _TunnelLost as e:
                last = e
                try:
                    await self._reconnect()
                except (_Retry, _TunnelLost) as again:  # an OPEN of the new tunnel failed
                    last = again
            except _Retry as e:
                last = e
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise ProviderUnavailable("provider_unavailable", f"{self.attempts} attempts: {last}")

    async def _exchange_once(self, envelope: Envelope) -> Envelope:
        """One frame out, its answer in, through the link's frame transport."""
        plaintext = envelope.encode()
        async with self._frame_lock:
            handle, tunnel_id = self._handle, self._tunnel_id
            if self.may_send is not None and not self.may_send():
                raise ProviderUnavailable(NOT_ACTIVE, "this vault process is no longer the "
                                          "active one: nothing was sent")
            if handle is None or tunnel_id is None:
                raise _TunnelLost("no tunnel")
            frame = self.enclave.channel_encrypt(handle, plaintext, ad=REQUEST_AD)
            try:
                answer = await self.link.frames.carry(tunnel_id, frame)
            except UnknownTunnel:
                raise _TunnelLost("the provider forgot the tunnel") from None
            except FrameRefused as e:  # outside the channel: the tunnel stays usable
                raise _Retry(f"frame rejected: {e}") from None
            except LinkDown as e:
                raise _Retry(f"link: {e}") from None
            try:
                return Envelope.decode(
                    self.enclave.channel_decrypt(handle, answer, ad=RESPONSE_AD)
                )
            except (ChannelError, FrameError) as e:
                raise _Retry(f"answer rejected: {e}") from None

    async def _reconnect(self) -> None:
        """A new handshake with the enclave ``connect`` attested, then OPEN again."""
        if self._attested is None:
            raise _TunnelLost("never connected")
        await self._handshake(*self._attested)
        for terms in self._bound.values():
            await self._open(terms)

    async def _persist(self, channel: AnyChannel, reason: CheckpointReason,
                       paid: PaidResponse | None = None, call: CallRecord | None = None, *,
                       deferrable: bool = False) -> None:
        await self.persist(Checkpoint.of(channel, reason, paid, call, deferrable=deferrable))


# -------------------------------------------------------------------- helpers


def _domain(info: ProviderInfo) -> PaymentDomain:
    return PaymentDomain(info.chain_id, info.asc_manager)


def _refusal(answer: Envelope) -> Refusal:
    if answer.kind is not Kind.ERROR:
        return Refusal("unexpected_answer", answer.kind.name)
    try:
        return Refusal.from_body(answer.body)
    except FrameError as e:
        return Refusal("malformed", str(e))


def _paid(
    result: bytes, raw_request: bytes, request_id: int, amount: int, *,
    receipt: SignedState | None = None, transaction: str | None = None,
) -> PaidResponse:
    try:
        decoded = HttpResult.decode(result)
    except FrameError as e:
        raise ProtocolViolation("malformed_result", str(e)) from None
    paid = PaidResponse(decoded.response, request_id, amount, receipt, transaction)
    if decoded.request_digest != request_digest(raw_request):
        raise ResultMismatch(paid)
    return paid


def find_provider_force_close(
    manager: ASCManager, channel_id: bytes, *, from_block: int = 0
) -> str | None:
    """The hash of the ``forceClose`` that settled ``channel_id``, if there is one."""
    abi = manager.contract.events.ProviderForceClosed().abi
    topic = "0x" + bytes(event_abi_to_log_topic(abi)).hex()
    logs = manager.chain.w3.eth.get_logs({
        "address": manager.address, "fromBlock": from_block, "toBlock": "latest",
        "topics": [topic, "0x" + channel_id.hex()],
    })
    return HexBytes(logs[-1]["transactionHash"]).to_0x_hex() if logs else None


def recover_from_force_close(
    channel: AnyChannel,
    manager: ASCManager,
    *,
    tx_hash: bytes | str | None = None,
    receipt: TxReceipt | None = None,
) -> PaidResponse | None:
    """Extract ``t`` from the provider's ``forceClose`` and open the pending result.

    With ``tx_hash``, reads ``e ‖ s`` from the transaction's calldata *and*
    from the ``ProviderForceClosed`` log of its receipt, which must agree;
    with ``receipt`` alone, from the log only (a claim relayed through a
    contract has no ``forceClose`` calldata of its own, but the manager
    always logs it). Returns the paid response for the PENDING request the
    claim settled, or ``None`` if it settled no request of ours; the channel
    is CLOSED afterwards in every case where the claim is genuine. Raises
    :class:`~a402.asc.RemoteProtocolError`: ``bad_completion`` for a
    signature that does not complete our pre-signature (it cannot have passed
    the contract); ``result_does_not_open`` / ``result_hash_mismatch`` when
    the provider's enclave sealed something else (it was paid δ on-chain all
    the same: evidence against its attestation). :class:`ValueError` when the
    transaction is not a claim on this channel. Persist the channel afterwards.
    """
    if tx_hash is None and receipt is None:
        raise ValueError("give the forceClose transaction hash or its receipt")
    found: list[PublishedSignature] = []
    if tx_hash is not None:
        try:
            from_calldata = manager.signature_from_calldata(tx_hash)
        except ValueError:  # not a direct call: the log is authoritative
            from_calldata = None
        if from_calldata is not None and from_calldata.channel_id == channel.channel_id:
            found.append(from_calldata)
        if receipt is None:
            receipt = manager.chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    assert receipt is not None
    from_logs = [
        p for p in manager.signatures_from_logs(receipt) if p.channel_id == channel.channel_id
    ]
    if found and from_logs and found[0] != from_logs[0]:
        raise ValueError("the calldata and the log disagree on the claim")
    found += from_logs
    if not found:
        raise ValueError("the transaction is not a forceClose of this channel")
    claim = found[0]
    pending = channel.pending_request()
    try:
        step = channel.provider_force_closed(claim.request_id, claim.signature)
    except RemoteProtocolError as e:
        if e.reason in (Reason.RESULT_DOES_NOT_OPEN, Reason.RESULT_HASH_MISMATCH):
            channel.closed_on_chain()  # settled on-chain whatever the result was
        raise
    transaction = HexBytes(receipt["transactionHash"]).to_0x_hex()
    for event in step.events:
        if isinstance(event, ResultDelivered) and pending is not None:
            return _paid(event.result, pending[2], event.request_id, event.amount,
                         transaction=transaction)
    return None
