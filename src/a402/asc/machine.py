"""The ASC state machine for one channel, from the vault's side and from the provider's (pure).

In the style of h11: no sockets, no clock, no storage. The caller feeds in
messages (already decoded by :func:`a402.asc.messages.decode`) together with
the current time, and gets back a :class:`Step`: the messages to send and the
events to act on. Invalid input raises :class:`~a402.asc.errors.RemoteProtocolError`
(or :class:`~a402.asc.errors.LocalProtocolError` for a forbidden local action)
with a :class:`~a402.asc.errors.Reason`, and leaves the channel exactly as it
was. Time is a number of seconds on any monotonic scale the caller likes;
randomness comes only from :mod:`a402.crypto` (adaptor secrets, nonces).

One paid request (paper Alg. 2; architecture "The A402 exchange")::

    vault                                   provider enclave
    OPEN, free ≥ δ: lock δ, LOCKED ──EXEC──▶ run the request req
                                            t, T = t·G, h = H(res), δ' ≤ δ the charge,
                                            m = m(cid, rid, δ', answer_hash(req, h))
    δ' ≤ δ, pre-verify σ̂, PENDING ◀─REPLY── σ̂ = pre-sign(m, T), EncRes = seal(t, res)
     (on m from the req it sent)
                 σ_U over (m, δ', e) ──AUTH──▶ check σ_U
   t·G = T, open EncRes, credit δ', ◀─REVEAL─ t, and its signature on the new state
              OPEN; sign the state ──ACK───▶ co-signed state; OPEN

The request is bound too: ``m`` commits to ``answer_hash(req, h)``
(:func:`a402.crypto.answer_hash`), and the vault rebuilds it from the request *it* sent
in the EXEC, never from anything the provider or a host relays. A host that rewrites
the EXEC's request (the vault's host encrypts tunnel frames, so it can) makes the
provider pre-sign another ``m``: the vault refuses that REPLY (``bad_presignature``)
before σ_U exists, so nobody is paid for a request the client never asked for. The
REPLY carries ``h = H(res)`` itself, which the vault checks the opened result against.

The charge δ' is δ for a fixed price; a metered route's enclave computes it from
the result (:mod:`a402.metering`). It travels in REPLY and is the amount of ``m``,
so the pre-signature binds it to ``h``: the vault authorises (and the contract
pays) exactly δ', never more than the δ it locked, and the rest of δ is free
again once the request completes.

Timeouts: Δ_lock on the vault (no valid REPLY in time → LOCKED reverts to OPEN;
no σ_U was issued, so nothing can be claimed); Δ_ack on the provider (no ACK in
time → :class:`ForceCloseDue`, with everything ``ASCManager.forceClose`` needs).
PENDING never times out on the vault: once σ_U is out, only the provider's
REVEAL or its on-chain claim (from which the vault extracts ``t`` with
:meth:`VaultChannel.provider_force_closed`) can settle the request, or a
client force-close whose dispute window the provider lets pass.

Counters. ``version`` is the version of the latest co-signed state, and a state
of version ``v`` accounts for every request id below ``v``. Request ids come
from ``next_request_id``, which never falls below ``version``: completing
request ``r`` produces state ``r + 1``; a request whose lock expired burns its
id (a late REPLY for it can never be confused with a later request); a
cooperative close consumes one more id. So a payment's request id is always at
least the version of the state it builds on — the rule ``ASCManager.forceClose``
enforces so that no payment is counted twice.

One request in flight: the vault refuses to start a request unless OPEN. The
provider refuses a second EXEC while it holds σ_U for an unacknowledged request
(PENDING), and while it is executing one (LOCKED) for as long as the vault's
lock on it can still be running (its own ``lock_timeout``). After that, an EXEC
for a newer request means the vault's lock expired, so the older request is
abandoned: no σ_U exists for it, so nothing is lost, and a provider whose
REPLY was lost is not stuck forever.

Recovering lost messages: a lost EXEC or REPLY ends in Δ_lock. A lost AUTH
would leave both sides waiting, so the vault's runtime re-sends
:meth:`VaultChannel.pending_auth` when no REVEAL comes. If the ACK is lost, the
provider keeps refusing new EXECs (``request_in_flight``); its runtime re-sends
:meth:`ProviderChannel.pending_reveal` and the vault answers an identical
REVEAL with the same ACK again, without paying twice.

Chains. What depends on the chain — ``m``, the pre-signature flavour and its wire form,
σ_U, the state signatures, payments the chain cannot settle, whether an ACK is needed — is
asked of a :class:`~a402.asc.settlement.Settlement`. The constructors build the EVM one
from the terms and the domain (the rules above, unchanged); ``over`` takes any other (the
Bitcoin channel's: :mod:`a402.bitcoin.exchange`). Without ACKs the provider's state is
co-signed when AUTH arrives (σ_U completed with ``t`` is the vault's signature on it), it
answers a re-sent AUTH with the same REVEAL, and the vault sends nothing back for a REVEAL.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from a402.crypto import (
    PaymentDomain,
    PreSignature,
    ResultContext,
    SecretKey,
    adaptor_point,
    answer_hash,
    generate_adaptor,
    is_adaptor_secret,
    result_hash,
    seal,
    sealing,
)
from a402.crypto.errors import CryptoError, ExtractionError, SealError

from . import snapshot as _snap
from .errors import LocalProtocolError, Reason, RemoteProtocolError
from .messages import Ack, Auth, Close, CloseAck, Exec, Message, Reply, Reveal
from .settlement import EvmSettlement, Settlement
from .settlement import KeyPreSigner as KeyPreSigner  # defined there, exported here too
from .settlement import PreSigner as PreSigner
from .terms import MAX_VERSION, BalanceState, ChannelTerms, DigestSigner


class Status(StrEnum):
    OPEN = "open"
    LOCKED = "locked"
    PENDING = "pending"
    CLOSED = "closed"


#: Each status as a snapshot's field.
_STATUS_FIELD = {status: _snap.s(status.value) for status in Status}


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SignedState:
    """A state with both approvals, ready for ``closeASC``/``initForceClose``/a challenge.

    Version 0 (the opening state) carries empty signatures: the contract needs none.
    """

    state: BalanceState
    vault_signature: bytes
    provider_signature: bytes


@dataclass(frozen=True, slots=True)
class ForceCloseClaim:
    """Everything ``ASCManager.forceClose`` takes besides the terms.

    ``signature`` (``e ‖ s``) is the provider's pre-signature completed with
    ``t``; publishing it is what lets the vault extract ``t``. ``result_hash`` is the
    ``h`` of ``m`` (the contract's ``resultHash``, from which it rebuilds ``m``): the
    answer hash of the request and its result, not ``H(result)`` itself.
    """

    state: BalanceState
    vault_signature: bytes
    request_id: int
    amount: int
    result_hash: bytes
    signature: bytes
    authorization: bytes

    @property
    def e(self) -> bytes:
        return self.signature[:32]

    @property
    def s(self) -> int:
        return int.from_bytes(self.signature[32:], "big")

    def payment_tuple(self) -> tuple[int, int, bytes, bytes, int]:
        """The contract's ``Payment`` tuple."""
        return (self.request_id, self.amount, self.result_hash, self.e, self.s)


@dataclass(frozen=True, slots=True)
class PaymentAuthorized:
    """Vault: σ_U is out for ``request_id``; the provider can now claim δ on-chain."""

    request_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class ResultDelivered:
    """Vault: the paid result, opened and checked against ``H(result)``.

    ``on_chain`` when ``t`` came from the provider's force-close rather than REVEAL.
    """

    request_id: int
    amount: int
    result: bytes
    on_chain: bool = False


@dataclass(frozen=True, slots=True)
class RequestExpired:
    """Vault: no valid REPLY within Δ_lock; δ is free again, the request id is burnt."""

    request_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class CloseReady:
    """Both sides signed the final state: either may submit ``closeASC``."""

    signed: SignedState


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """Provider: run ``request`` and call :meth:`ProviderChannel.reply` with the result."""

    request_id: int
    amount: int
    request: bytes


@dataclass(frozen=True, slots=True)
class RequestAbandoned:
    """Provider: the vault moved on (its lock expired); do not reply to ``request_id``."""

    request_id: int


@dataclass(frozen=True, slots=True)
class PaymentAcknowledged:
    """Provider: the vault's receipt arrived; ``state`` is co-signed and pays ``request_id``."""

    request_id: int
    amount: int
    state: BalanceState


@dataclass(frozen=True, slots=True)
class ForceCloseDue:
    """Provider: no ACK within Δ_ack; submit ``claim`` with ``ASCManager.forceClose``."""

    claim: ForceCloseClaim


Event = (
    PaymentAuthorized
    | ResultDelivered
    | RequestExpired
    | CloseReady
    | ExecuteRequest
    | RequestAbandoned
    | PaymentAcknowledged
    | ForceCloseDue
)


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one input: messages to send (in order) and events to act on."""

    send: tuple[Message, ...] = ()
    events: tuple[Event, ...] = ()


# -------------------------------------------------------------------- common


class _Channel:
    """What both sides track: the settlement, the latest co-signed state, and the status.

    ``settlement`` (:mod:`a402.asc.settlement`) is the chain's half: an EVM channel's
    (:class:`~a402.asc.settlement.EvmSettlement`, built from the terms and the domain by
    the constructors) or a Bitcoin channel's (``a402.bitcoin.exchange``, built with
    ``over``).
    """

    def _init_channel(self, settlement: Settlement) -> None:
        self.settlement = settlement
        self.channel_id = settlement.channel_id
        self.status = Status.OPEN
        self._state = settlement.opening_state()
        self._vault_signature = b""
        self._provider_signature = b""
        self.next_request_id = 0
        #: The first fields of this channel's binary snapshots (:meth:`_common_binary`).
        self._snapshot_where = b""

    @property
    def terms(self) -> ChannelTerms:
        """The EVM channel's terms (a channel on another chain has none)."""
        return self._evm().terms

    @property
    def domain(self) -> PaymentDomain:
        """The EVM channel's EIP-712 domain (a channel on another chain has none)."""
        return self._evm().domain

    def _evm(self) -> EvmSettlement:
        if not isinstance(self.settlement, EvmSettlement):
            raise AttributeError("this channel does not settle on an EVM chain")
        return self.settlement

    @property
    def state(self) -> BalanceState:
        """The latest co-signed state."""
        return self._state

    @property
    def version(self) -> int:
        return self._state.version

    def latest_state(self) -> SignedState:
        """The latest co-signed state with both signatures (empty for version 0)."""
        return SignedState(self._state, self._vault_signature, self._provider_signature)

    def closed_on_chain(self) -> None:
        """The chain settled the channel (any path); nothing more can happen off-chain."""
        self.status = Status.CLOSED

    def _common_snapshot(self, fmt: str) -> dict[str, Any]:
        settlement = self.settlement
        if isinstance(settlement, EvmSettlement):
            where: dict[str, Any] = {
                "terms": _snap.terms_to_json(settlement.terms),
                "domain": _snap.domain_to_json(settlement.domain),
            }
        else:  # restored with its settlement passed back in, checked against this id
            where = {
                "channelId": _snap.hx(self.channel_id),
                "settlement": _snap.hx(settlement.binding),
            }
        return {
            "format": fmt,
            **where,
            "status": self.status.value,
            "state": _snap.state_to_json(self._state),
            "vaultSignature": _snap.hx(self._vault_signature),
            "providerSignature": _snap.hx(self._provider_signature),
            "nextRequestId": self.next_request_id,
        }

    def _common_binary(self, header: bytes) -> list[bytes]:
        """The fields of a binary snapshot both sides write first (:mod:`.snapshot`)."""
        fixed = self._snapshot_where
        if not fixed:  # the settlement never changes: its fields are encoded once
            fixed = self._snapshot_where = header + _snap.where(self.settlement)
        state = self._state
        return [
            fixed, _STATUS_FIELD[self.status], _snap.i(state.version),
            _snap.i(state.client_balance), _snap.i(state.provider_balance),
            _snap.t(state.is_final), _snap.b(self._vault_signature),
            _snap.b(self._provider_signature), _snap.i(self.next_request_id),
        ]

    def _restore_common(self, doc: dict[str, Any]) -> None:
        self.status = Status(doc["status"])
        self._state = _snap.state_from_json(doc["state"])
        self._vault_signature = _snap.unhex(doc["vaultSignature"])
        self._provider_signature = _snap.unhex(doc["providerSignature"])
        self.next_request_id = _snap.integer(doc["nextRequestId"])

    def _check_channel(self, message: Message) -> None:
        if not hmac.compare_digest(message.channel_id, self.channel_id):
            raise RemoteProtocolError(Reason.WRONG_CHANNEL, "message is for another channel")

    def _message(self, request_id: int, amount: int, h: bytes) -> bytes:
        return self.settlement.payment_message(self._state, request_id, amount, h)

    def _signer_is(self, state: BalanceState, signature: bytes, party: bytes) -> bool:
        return self.settlement.signed_by(state, signature, party)

    def _refusal(self, amount: int) -> tuple[Reason, str] | None:
        return self.settlement.refuse_payment(self._state, amount)

    @staticmethod
    def _settled_by(settlement: Settlement | None, doc: dict[str, Any]) -> Settlement:
        """The settlement a snapshot names: its EVM terms, or the one passed back in."""
        if settlement is None:
            return EvmSettlement(
                _snap.terms_from_json(doc["terms"]), _snap.domain_from_json(doc["domain"])
            )
        if _snap.unhex(doc.get("channelId")) != settlement.channel_id:
            raise ValueError("the snapshot is of another channel")
        if _snap.unhex(doc.get("settlement")) != settlement.binding:
            raise ValueError("the snapshot is of this channel under other parameters")
        return settlement


def _bump(request_id: int) -> int:
    if request_id >= MAX_VERSION:
        raise LocalProtocolError(Reason.NOT_ALLOWED, "request ids exhausted; close the channel")
    return request_id + 1


# ----------------------------------------------------------------------- vault


@dataclass(slots=True)
class _VaultRequest:
    request_id: int
    amount: int
    request: bytes
    lock_deadline: float
    reply: Reply | None = None
    presignature: PreSignature | None = None
    authorization: bytes = b""


class VaultChannel(_Channel):
    """The vault's (U's) side of one channel: it spends the client's balance.

    ``free``/``locked``/``provider_balance`` are the architecture's channel
    state; ``lock_timeout`` is Δ_lock. ``vault_key`` signs σ_U and states: in
    the vault service this machine runs inside the vault enclave
    (:mod:`a402.vault_enclave`), whose code alone builds it, with the enclave's
    attested key; the host drives it through a proxy and never holds the key.
    Tests and tools may build one with a key of their own.
    """

    def __init__(
        self,
        terms: ChannelTerms,
        domain: PaymentDomain,
        vault_key: DigestSigner,
        *,
        lock_timeout: float,
    ) -> None:
        self._setup(EvmSettlement(terms, domain), vault_key, lock_timeout)

    @classmethod
    def over(
        cls, settlement: Settlement, vault_key: DigestSigner, *, lock_timeout: float
    ) -> VaultChannel:
        """The vault's side of a channel settled by ``settlement`` (any chain's)."""
        channel = cls.__new__(cls)
        channel._setup(settlement, vault_key, lock_timeout)
        return channel

    def _setup(self, settlement: Settlement, vault_key: DigestSigner, lock_timeout: float) -> None:
        if vault_key.address != settlement.vault:
            raise ValueError("the vault key does not match the channel's vault address")
        if lock_timeout <= 0:
            raise ValueError("lock_timeout must be positive")
        self._init_channel(settlement)
        self._key = vault_key
        self.lock_timeout = lock_timeout
        self._pending: _VaultRequest | None = None
        self._last_reveal: Reveal | None = None
        self._last_ack: Ack | None = None
        self._last_expired: int | None = None
        self._final: Close | None = None
        self._final_acked = False

    @property
    def locked(self) -> int:
        return self._pending.amount if self._pending is not None else 0

    @property
    def free(self) -> int:
        return self._state.client_balance - self.locked

    @property
    def provider_balance(self) -> int:
        return self._state.provider_balance

    # -- local actions -----------------------------------------------------

    def request(self, request: bytes, amount: int, *, now: float) -> Exec:
        """Step ①: lock δ and issue EXEC. Only when OPEN with ``free ≥ amount``."""
        if self.status is Status.CLOSED:
            raise LocalProtocolError(Reason.CHANNEL_CLOSED)
        if self.status is not Status.OPEN:
            raise LocalProtocolError(
                Reason.REQUEST_IN_FLIGHT, f"request {self._rid()} is {self.status}"
            )
        if amount <= 0:
            raise LocalProtocolError(Reason.INVALID_AMOUNT, "amount must be positive")
        if amount > self.free:
            raise LocalProtocolError(Reason.INSUFFICIENT_BALANCE, f"{amount} > free {self.free}")
        refusal = self._refusal(amount)
        if refusal is not None:
            raise LocalProtocolError(*refusal)
        rid = self.next_request_id
        self.next_request_id = _bump(rid)
        self._pending = _VaultRequest(rid, amount, bytes(request), now + self.lock_timeout)
        self.status = Status.LOCKED
        return Exec(self.channel_id, rid, self.version, amount, bytes(request))

    def poll(self, *, now: float) -> Step:
        """Apply Δ_lock: a LOCKED request with no valid REPLY reverts to OPEN."""
        pending = self._pending
        if self.status is Status.LOCKED and pending is not None and now >= pending.lock_deadline:
            self._pending = None
            self._last_expired = pending.request_id
            self.status = Status.OPEN
            return Step(events=(RequestExpired(pending.request_id, pending.amount),))
        return Step()

    def abandon(self) -> Step:
        """Give up the LOCKED request now instead of waiting for Δ_lock.

        For when the provider refused the EXEC or sent a REPLY that failed its
        checks: no σ_U was issued, so nothing can be claimed for the request,
        and releasing δ early is as safe as releasing it at the deadline. The
        request id stays burnt, exactly as after :meth:`poll` expires it.
        Only while LOCKED; a PENDING request can only settle (REVEAL or chain).
        """
        pending = self._pending
        if self.status is not Status.LOCKED or pending is None:
            raise LocalProtocolError(Reason.NOT_ALLOWED, "no unauthorised request to abandon")
        self._pending = None
        self._last_expired = pending.request_id
        self.status = Status.OPEN
        return Step(events=(RequestExpired(pending.request_id, pending.amount),))

    def pending_exec(self) -> Exec | None:
        """The EXEC of the LOCKED request, to re-send if it or its REPLY may have been lost.

        The provider answers an identical EXEC with the REPLY it already made
        (its runtime remembers the last exchange), so re-sending never runs or
        charges a request twice.
        """
        pending = self._pending
        if self.status is Status.LOCKED and pending is not None:
            return Exec(
                self.channel_id, pending.request_id, self.version, pending.amount, pending.request
            )
        return None

    def pending_request(self) -> tuple[int, int, bytes] | None:
        """``(request id, δ, request bytes)`` of the request in flight (LOCKED or PENDING)."""
        pending = self._pending
        if pending is None or self.status not in (Status.LOCKED, Status.PENDING):
            return None
        return pending.request_id, pending.amount, pending.request

    def pending_reply(self) -> Reply | None:
        """The REPLY of the request in flight, once accepted (PENDING: its sealed result)."""
        return None if self._pending is None else self._pending.reply

    def last_reveal(self) -> Reveal | None:
        """The REVEAL of the last completed request (its ``t``)."""
        return self._last_reveal

    def last_ack(self) -> Ack | None:
        """The receipt for the last completed request, to re-send after a restart.

        The provider stays PENDING until it has it (and refuses new EXECs);
        re-sending is harmless: an ACK already handled is answered again or
        refused as a replay, and pays nothing either way.
        """
        return self._last_ack

    def pending_close(self) -> Close | None:
        """The CLOSE proposed and not yet co-signed, to re-send (the provider answers it again)."""
        return self._final if self._final is not None and not self._final_acked else None

    def close(self) -> Close:
        """Propose the final state (CLOSE). Only when OPEN; from now on no request starts.

        The final state consumes one request id, so its version exceeds every
        request id ever issued and every state either side signed.
        """
        if self.status is Status.CLOSED:
            raise LocalProtocolError(Reason.CHANNEL_CLOSED)
        if self.status is not Status.OPEN:
            raise LocalProtocolError(
                Reason.REQUEST_IN_FLIGHT, f"request {self._rid()} is {self.status}"
            )
        version = _bump(self.next_request_id)
        final = BalanceState(
            version, self._state.client_balance, self._state.provider_balance, True
        )
        self.next_request_id = version
        self._final = Close(
            self.channel_id, final, self.settlement.sign_state(self._key, final)
        )
        self.status = Status.CLOSED
        return self._final

    # -- messages ------------------------------------------------------------

    def receive(self, message: Message, *, now: float) -> Step:
        """Handle a provider message: REPLY, REVEAL or CLOSE_ACK."""
        self._check_channel(message)
        if isinstance(message, Reply):
            return self._on_reply(message, now)
        if isinstance(message, Reveal):
            return self._on_reveal(message)
        if isinstance(message, CloseAck):
            return self._on_close_ack(message)
        raise RemoteProtocolError(
            Reason.UNEXPECTED_MESSAGE, f"a vault does not receive {type(message).__name__}"
        )

    def _rid(self) -> int | None:
        return self._pending.request_id if self._pending is not None else None

    def _stale(self, request_id: int, what: str) -> RemoteProtocolError:
        """The reason for a message that does not belong to the request in flight."""
        if request_id >= self.next_request_id:
            return RemoteProtocolError(
                Reason.UNKNOWN_REQUEST, f"{what} for request {request_id}, never issued"
            )
        if request_id == self._last_expired:
            return RemoteProtocolError(
                Reason.LOCK_EXPIRED, f"{what} for request {request_id}, expired"
            )
        return RemoteProtocolError(
            Reason.REPLAYED, f"{what} for request {request_id}, already handled"
        )

    def _on_reply(self, reply: Reply, now: float) -> Step:
        pending = self._pending
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if pending is None or reply.request_id != pending.request_id:
            raise self._stale(reply.request_id, "REPLY")
        if self.status is not Status.LOCKED:  # PENDING: this request already has its REPLY
            raise RemoteProtocolError(
                Reason.REPLAYED, f"request {reply.request_id} already replied"
            )
        if now >= pending.lock_deadline:
            raise RemoteProtocolError(
                Reason.LOCK_EXPIRED, f"REPLY after Δ_lock for {reply.request_id}"
            )
        settlement = self.settlement
        try:
            presignature = settlement.parse_presignature(reply.presignature)
            sealing.EncRes.from_bytes(reply.sealed_result)
        except (ValueError, CryptoError) as e:
            raise RemoteProtocolError(Reason.MALFORMED, str(e)) from None
        if reply.amount > pending.amount:
            raise RemoteProtocolError(
                Reason.INVALID_AMOUNT,
                f"the charge {reply.amount} exceeds the δ={pending.amount} locked for it",
            )
        refusal = self._refusal(reply.amount)
        if refusal is not None:
            raise RemoteProtocolError(*refusal)
        # m names the request this machine sent (pending.request), so a pre-signature
        # over the answer to any other request (one a host put in the EXEC) fails here.
        answer = answer_hash(pending.request, reply.result_hash)
        m = self._message(pending.request_id, reply.amount, answer)
        if not settlement.pre_verify(m, reply.adaptor_point, presignature):
            raise RemoteProtocolError(
                Reason.BAD_PRESIGNATURE,
                "σ̂ does not verify for m(cid, rid, δ', answer_hash(request, h)) under T",
            )
        authorization = settlement.authorize(
            self._key, m, reply.amount, presignature, reply.adaptor_point
        )
        pending.reply = reply
        pending.presignature = presignature
        pending.authorization = authorization
        self.status = Status.PENDING
        return Step(
            send=(Auth(self.channel_id, pending.request_id, authorization),),
            events=(PaymentAuthorized(pending.request_id, reply.amount),),
        )

    def _on_reveal(self, reveal: Reveal) -> Step:
        pending = self._pending
        if self._last_reveal is not None and reveal == self._last_reveal:
            # a retransmission: the same receipt (none without ACKs), paid once
            return Step(send=() if self._last_ack is None else (self._last_ack,))
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if pending is None or reveal.request_id != pending.request_id:
            raise self._stale(reveal.request_id, "REVEAL")
        if self.status is not Status.PENDING or pending.reply is None:
            raise RemoteProtocolError(Reason.UNEXPECTED_MESSAGE, "REVEAL before AUTH")
        reply = pending.reply
        if not is_adaptor_secret(reveal.adaptor_secret, reply.adaptor_point):
            raise RemoteProtocolError(Reason.BAD_ADAPTOR_SECRET, "t·G ≠ T")
        expected = self._state.pay(reply.amount, _bump(pending.request_id))
        if reveal.state != expected:
            raise RemoteProtocolError(
                Reason.STATE_MISMATCH, f"expected {expected}, got {reveal.state}"
            )
        if not self._signer_is(expected, reveal.signature, self.settlement.provider):
            raise RemoteProtocolError(Reason.BAD_STATE_SIGNATURE, "not the provider's signature")
        result = self._open(pending, reveal.adaptor_secret)

        ack: Ack | None
        if self.settlement.needs_ack:
            signature = self.settlement.sign_state(self._key, expected)
            ack = Ack(self.channel_id, pending.request_id, expected, signature)
        else:  # σ_U completed with t is the vault's signature the provider already holds
            signature = self.settlement.completed_authorization(
                pending.authorization, reveal.adaptor_secret
            )
            ack = None
        self._state = expected
        self._vault_signature = signature
        self._provider_signature = reveal.signature
        self.next_request_id = max(self.next_request_id, expected.version)
        self._pending = None
        self._last_reveal, self._last_ack = reveal, ack
        self.status = Status.OPEN
        return Step(
            send=() if ack is None else (ack,),
            events=(ResultDelivered(pending.request_id, reply.amount, result),),
        )

    def _open(self, pending: _VaultRequest, t: bytes) -> bytes:
        assert pending.reply is not None
        context = ResultContext(self.channel_id, pending.request_id)
        try:
            result = sealing.open(t, pending.reply.sealed_result, context)
        except SealError as e:
            raise RemoteProtocolError(Reason.RESULT_DOES_NOT_OPEN, str(e)) from None
        if not hmac.compare_digest(result_hash(result), pending.reply.result_hash):
            raise RemoteProtocolError(Reason.RESULT_HASH_MISMATCH, "H(result) ≠ h")
        return result

    def _on_close_ack(self, close_ack: CloseAck) -> Step:
        if self._final is None:
            raise RemoteProtocolError(Reason.UNEXPECTED_MESSAGE, "no close was proposed")
        if self._final_acked:
            raise RemoteProtocolError(Reason.REPLAYED, "the final state is already co-signed")
        if close_ack.state != self._final.state:
            raise RemoteProtocolError(Reason.STATE_MISMATCH, "not the proposed final state")
        if not self._signer_is(close_ack.state, close_ack.signature, self.settlement.provider):
            raise RemoteProtocolError(Reason.BAD_STATE_SIGNATURE, "not the provider's signature")
        self._final_acked = True
        signed = SignedState(close_ack.state, self._final.signature, close_ack.signature)
        return Step(events=(CloseReady(signed),))

    def pending_auth(self) -> Auth | None:
        """The AUTH of the PENDING request, to re-send if the provider may have lost it.

        Re-sending the same σ_U is harmless (it authorises nothing new); the
        provider rejects it as a replay if it already has it, and then re-sends
        its REVEAL.
        """
        pending = self._pending
        if self.status is Status.PENDING and pending is not None and pending.authorization:
            return Auth(self.channel_id, pending.request_id, pending.authorization)
        return None

    # -- persistence -----------------------------------------------------------

    def snapshot(self, *, binary: bool = False) -> bytes:
        """Everything this channel knows except the key (see :mod:`a402.asc.snapshot`):
        format version 1 (JSON), or with ``binary`` version 2 (what a runtime writes at
        every step: half the bytes, less CPU). ``restore`` reads both."""
        if binary:
            return self._binary_snapshot()
        doc = self._common_snapshot(_snap.VAULT_FORMAT)
        pending = self._pending
        doc.update(
            lockTimeout=self.lock_timeout,
            pending=None
            if pending is None
            else {
                "requestId": pending.request_id,
                "amount": pending.amount,
                "request": _snap.hx(pending.request),
                "lockDeadline": pending.lock_deadline,
                "reply": _snap.message_to_json(pending.reply),
                "authorization": _snap.hx(pending.authorization),
            },
            lastReveal=_snap.message_to_json(self._last_reveal),
            lastAck=_snap.message_to_json(self._last_ack),
            lastExpired=self._last_expired,
            final=_snap.message_to_json(self._final),
            finalAcked=self._final_acked,
        )
        return _snap.dumps(doc)

    def _binary_snapshot(self) -> bytes:
        parts = self._common_binary(_snap.VAULT_HEADER)
        parts.append(_snap.f(self.lock_timeout))
        pending = self._pending
        if pending is None:
            parts.append(_snap.ABSENT)
        else:
            parts += (
                _snap.PRESENT, _snap.i(pending.request_id), _snap.i(pending.amount),
                _snap.b(pending.request), _snap.f(pending.lock_deadline),
                _snap.m(pending.reply), _snap.b(pending.authorization),
            )
        parts += (
            _snap.m(self._last_reveal), _snap.m(self._last_ack), _snap.i(self._last_expired),
            _snap.m(self._final), _snap.t(self._final_acked),
        )
        return b"".join(parts)

    @classmethod
    def restore(
        cls, data: bytes, vault_key: DigestSigner, *, settlement: Settlement | None = None
    ) -> VaultChannel:
        """The channel :meth:`snapshot` described, signing with ``vault_key``.

        An EVM channel's settlement is rebuilt from the snapshot's terms; any other
        channel's must be passed back in as ``settlement`` (its id must match).
        Raises :class:`~a402.asc.snapshot.SnapshotError` for damaged bytes and
        :class:`ValueError` if the key is not the channel's vault key.
        """
        doc = _snap.loads(data, _snap.VAULT_FORMAT)
        with _snap.parsing("vault"):
            settled = cls._settled_by(settlement, doc)
            lock_timeout = _snap.number(doc["lockTimeout"])
        channel = cls.over(settled, vault_key, lock_timeout=lock_timeout)
        with _snap.parsing("vault"):
            channel._restore_common(doc)
            raw = doc["pending"]
            if raw is not None:
                reply = _snap.message_from_json(raw["reply"], Reply,
                                                v1_charge=_snap.integer(raw["amount"]))
                channel._pending = _VaultRequest(
                    _snap.integer(raw["requestId"]),
                    _snap.integer(raw["amount"]),
                    _snap.unhex(raw["request"]),
                    _snap.number(raw["lockDeadline"]),
                    reply,
                    None if reply is None else settled.parse_presignature(reply.presignature),
                    _snap.unhex(raw["authorization"]),
                )
            channel._last_reveal = _snap.message_from_json(doc["lastReveal"], Reveal)
            channel._last_ack = _snap.message_from_json(doc["lastAck"], Ack)
            last_expired = doc["lastExpired"]
            channel._last_expired = None if last_expired is None else _snap.integer(last_expired)
            channel._final = _snap.message_from_json(doc["final"], Close)
            channel._final_acked = bool(doc["finalAcked"])
        return channel

    # -- the chain -----------------------------------------------------------

    def provider_force_closed(self, request_id: int, signature: bytes) -> Step:
        """The provider's ``forceClose`` for ``request_id`` was seen on-chain with ``e ‖ s``.

        For the pending request, extracts ``t = s − ŝ`` and opens the result (the
        paper's ④b); the channel is CLOSED either way. A signature that does not
        complete this request's pre-signature cannot have passed the contract, so
        it is reported as :attr:`Reason.BAD_COMPLETION` without changing anything.
        """
        pending = self._pending
        if (
            self.status is Status.PENDING
            and pending is not None
            and pending.request_id == request_id
            and pending.reply is not None
            and pending.presignature is not None
        ):
            try:
                t = self.settlement.extract(
                    pending.presignature, pending.authorization, pending.reply.adaptor_point,
                    signature,
                )
            except ExtractionError as e:
                raise RemoteProtocolError(Reason.BAD_COMPLETION, str(e)) from None
            result = self._open(pending, t)
            self._pending = None
            self.status = Status.CLOSED
            charge = pending.reply.amount
            return Step(events=(ResultDelivered(request_id, charge, result, on_chain=True),))
        self._pending = None
        self.status = Status.CLOSED
        return Step()


# -------------------------------------------------------------------- provider


@dataclass(slots=True)
class _ProviderRequest:
    request_id: int
    amount: int
    request: bytes
    lock_deadline: float
    adaptor_secret: bytes = b""
    #: The charge δ' ≤ δ committed in ``m`` (set by :meth:`ProviderChannel.reply`).
    charge: int = 0
    adaptor_point: bytes = b""
    #: The ``h`` of ``message``, what an on-chain claim gives the contract to rebuild ``m``:
    #: ``answer_hash(request, H(result))``. (An inflight restored from a snapshot written
    #: before ``m`` bound the request holds the ``H(result)`` its ``m`` was built on, which
    #: is equally the ``h`` of its ``m``, so its claim still verifies.)
    result_hash: bytes = b""
    message: bytes = b""
    presignature: PreSignature | None = None
    reveal: Reveal | None = None
    authorization: bytes = b""
    ack_deadline: float = 0.0
    force_close_signalled: bool = field(default=False)


class ProviderChannel(_Channel):
    """The provider's (S's) side of one channel, as its enclave runs it.

    ``signer`` is the provider's Ethereum key (its address signs states);
    ``schnorr_key`` is the attested adaptor key whose x-coordinate the channel
    registered — a :class:`~a402.crypto.SecretKey` or any :class:`PreSigner`
    (an enclave keeps the key inside); ``ack_timeout`` is Δ_ack. ``lock_timeout`` is Δ_lock as the
    provider applies it: how long after accepting an EXEC it refuses the next
    one. Set it no longer than the vault's Δ_lock minus the worst network delay
    and clock skew, so that the provider's lock always ends before the vault's.
    """

    def __init__(
        self,
        terms: ChannelTerms,
        domain: PaymentDomain,
        signer: DigestSigner,
        schnorr_key: SecretKey | PreSigner,
        *,
        ack_timeout: float,
        lock_timeout: float,
    ) -> None:
        self._setup(
            EvmSettlement(terms, domain), signer, schnorr_key, ack_timeout, lock_timeout
        )

    @classmethod
    def over(
        cls,
        settlement: Settlement,
        signer: DigestSigner,
        schnorr_key: SecretKey | PreSigner,
        *,
        ack_timeout: float,
        lock_timeout: float,
    ) -> ProviderChannel:
        """The provider's side of a channel settled by ``settlement`` (any chain's).

        Without ACKs (:attr:`Settlement.needs_ack` false) ``ack_timeout`` is never used:
        the provider's state is co-signed as soon as AUTH arrives.
        """
        channel = cls.__new__(cls)
        channel._setup(settlement, signer, schnorr_key, ack_timeout, lock_timeout)
        return channel

    def _setup(
        self,
        settlement: Settlement,
        signer: DigestSigner,
        schnorr_key: SecretKey | PreSigner,
        ack_timeout: float,
        lock_timeout: float,
    ) -> None:
        if signer.address != settlement.provider:
            raise ValueError("the signer does not match the channel's provider address")
        if isinstance(schnorr_key, SecretKey):
            schnorr_key = settlement.presigner(schnorr_key)
        if schnorr_key.public_key != settlement.provider_key:
            raise ValueError("the Schnorr key does not match the channel's provider key")
        if ack_timeout <= 0 or lock_timeout <= 0:
            raise ValueError("ack_timeout and lock_timeout must be positive")
        self._init_channel(settlement)
        self._key = signer
        self._presigner: PreSigner = schnorr_key
        self.ack_timeout = ack_timeout
        self.lock_timeout = lock_timeout
        self._inflight: _ProviderRequest | None = None
        self._close_ack: CloseAck | None = None
        #: Without ACKs: the last AUTH answered and its REVEAL, to answer a re-sent AUTH.
        self._answered: tuple[Auth, Reveal] | None = None

    # -- messages ------------------------------------------------------------

    def receive(self, message: Message, *, now: float) -> Step:
        """Handle a vault message: EXEC, AUTH, ACK or CLOSE."""
        self._check_channel(message)
        if isinstance(message, Exec):
            return self._on_exec(message, now)
        if isinstance(message, Auth):
            return self._on_auth(message, now)
        if isinstance(message, Ack):
            return self._on_ack(message)
        if isinstance(message, Close):
            return self._on_close(message, now)
        raise RemoteProtocolError(
            Reason.UNEXPECTED_MESSAGE, f"a provider does not receive {type(message).__name__}"
        )

    def _stale(self, request_id: int, what: str) -> RemoteProtocolError:
        if request_id < self.next_request_id:
            return RemoteProtocolError(
                Reason.REPLAYED, f"{what} for request {request_id}, already handled"
            )
        return RemoteProtocolError(
            Reason.UNKNOWN_REQUEST, f"{what} for request {request_id}, never received"
        )

    def _on_exec(self, exec_: Exec, now: float) -> Step:
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if self.status is Status.PENDING:
            raise RemoteProtocolError(
                Reason.REQUEST_IN_FLIGHT,
                f"request {self._rid()} is authorised but not acknowledged",
            )
        if exec_.request_id < self.next_request_id:
            raise RemoteProtocolError(
                Reason.REPLAYED, f"EXEC for request {exec_.request_id}, already seen"
            )
        if exec_.version != self.version:
            raise RemoteProtocolError(
                Reason.STATE_MISMATCH,
                f"EXEC builds on version {exec_.version}, ours is {self.version}",
            )
        if exec_.amount <= 0:
            raise RemoteProtocolError(Reason.INVALID_AMOUNT, "amount must be positive")
        if exec_.amount > self._state.client_balance:
            raise RemoteProtocolError(
                Reason.INSUFFICIENT_BALANCE,
                f"{exec_.amount} > client balance {self._state.client_balance}",
            )
        refusal = self._refusal(exec_.amount)
        if refusal is not None:
            raise RemoteProtocolError(*refusal)
        events: list[Event] = []
        if self._inflight is not None:  # LOCKED
            if now < self._inflight.lock_deadline:
                raise RemoteProtocolError(
                    Reason.REQUEST_IN_FLIGHT, f"request {self._rid()} is still executing"
                )
            events.append(RequestAbandoned(self._inflight.request_id))  # the vault's lock expired
        self._inflight = _ProviderRequest(
            exec_.request_id, exec_.amount, exec_.request, now + self.lock_timeout
        )
        self.next_request_id = _bump(exec_.request_id)
        self.status = Status.LOCKED
        events.append(ExecuteRequest(exec_.request_id, exec_.amount, exec_.request))
        return Step(events=tuple(events))

    def _rid(self) -> int | None:
        return self._inflight.request_id if self._inflight is not None else None

    def reply(
        self, request_id: int, result: bytes, *, adaptor_secret: bytes | None = None,
        charge: int | None = None,
    ) -> Reply:
        """Step ②: commit to ``result`` for the executing request — REPLY(δ', h, T, σ̂, EncRes).

        ``σ̂`` pre-signs ``m(cid, rid, δ', answer_hash(request, h))``: the result as the
        answer to the request this channel received in the EXEC (``h = H(result)``, which
        the REPLY carries).

        ``charge`` is δ', what this result costs (a metered route: computed by the
        enclave from the result); by default the EXEC's δ. It must be within
        ``0 ≤ δ' ≤ δ``: the provider can never commit to more than the vault locked.
        It is the amount in ``m`` (with ``h``), so once pre-signed neither side can
        change it. ``adaptor_secret`` is for tests; by default a fresh ``t`` is drawn.
        """
        inflight = self._inflight
        if (
            self.status is not Status.LOCKED
            or inflight is None
            or inflight.request_id != request_id
        ):
            raise LocalProtocolError(Reason.NOT_ALLOWED, f"request {request_id} is not executing")
        if inflight.presignature is not None:
            raise LocalProtocolError(Reason.NOT_ALLOWED, f"request {request_id} already replied")
        charge = inflight.amount if charge is None else charge
        if not 0 <= charge <= inflight.amount:
            raise LocalProtocolError(
                Reason.INVALID_AMOUNT, f"charge {charge} is not within 0..δ={inflight.amount}"
            )
        refusal = self._refusal(charge)
        if refusal is not None:
            raise LocalProtocolError(*refusal)
        if adaptor_secret is None:
            t, adaptor = generate_adaptor()
        else:
            t, adaptor = adaptor_secret, adaptor_point(adaptor_secret)
        h = result_hash(result)
        answer = answer_hash(inflight.request, h)  # this result, as the answer to that request
        m = self._message(request_id, charge, answer)
        presignature = self._presigner.pre_sign(m, adaptor)
        sealed = seal(t, result, ResultContext(self.channel_id, request_id))
        inflight.adaptor_secret, inflight.adaptor_point = t, adaptor
        inflight.result_hash, inflight.message, inflight.presignature = answer, m, presignature
        inflight.charge = charge
        return Reply(
            self.channel_id, request_id, charge, h, adaptor,
            self.settlement.presignature_bytes(presignature), sealed.to_bytes(),
        )

    def abandon(self, request_id: int) -> Step:
        """Drop the executing request without replying (the service failed; nothing is charged).

        Only before :meth:`reply`: once a pre-signature is out the vault may
        authorise it, and the provider must keep the request to claim it.
        Later EXECs are accepted at once; the request id stays used.
        """
        inflight = self._inflight
        if (
            self.status is not Status.LOCKED
            or inflight is None
            or inflight.request_id != request_id
            or inflight.presignature is not None
        ):
            raise LocalProtocolError(
                Reason.NOT_ALLOWED, f"request {request_id} is not executing unreplied"
            )
        self._inflight = None
        self.status = Status.OPEN
        return Step(events=(RequestAbandoned(request_id),))

    def _on_auth(self, auth: Auth, now: float) -> Step:
        inflight = self._inflight
        if self._answered is not None and auth == self._answered[0]:
            return Step(send=(self._answered[1],))  # a re-sent AUTH (no ACKs): same REVEAL
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if inflight is None or auth.request_id != inflight.request_id:
            raise self._stale(auth.request_id, "AUTH")
        if self.status is Status.PENDING:
            raise RemoteProtocolError(
                Reason.REPLAYED, f"request {auth.request_id} already authorised"
            )
        if inflight.presignature is None:
            raise RemoteProtocolError(Reason.UNEXPECTED_MESSAGE, "AUTH before REPLY")
        settlement = self.settlement
        if not settlement.authorizes(
            inflight.message, inflight.charge, inflight.presignature, inflight.adaptor_point,
            auth.authorization,
        ):
            raise RemoteProtocolError(
                Reason.BAD_AUTHORIZATION, "σ_U is not the vault's over (m, δ', e)"
            )
        state = self._state.pay(inflight.charge, _bump(inflight.request_id))
        signature = settlement.sign_state(self._key, state)
        reveal = Reveal(
            self.channel_id, inflight.request_id, inflight.adaptor_secret, state, signature
        )
        if not settlement.needs_ack:
            # σ_U completed with t is the vault's signature on this state: it is co-signed
            # now, and the provider's close of it publishes t (the vault's ④b).
            self._state = state
            self._vault_signature = settlement.completed_authorization(
                auth.authorization, inflight.adaptor_secret
            )
            self._provider_signature = signature
            self._inflight = None
            self._answered = (auth, reveal)
            self.status = Status.OPEN
            return Step(
                send=(reveal,),
                events=(PaymentAcknowledged(inflight.request_id, inflight.charge, state),),
            )
        inflight.authorization = auth.authorization
        inflight.reveal = reveal
        inflight.ack_deadline = now + self.ack_timeout
        self.status = Status.PENDING
        return Step(send=(reveal,))

    def _on_ack(self, ack: Ack) -> Step:
        inflight = self._inflight
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if inflight is None or ack.request_id != inflight.request_id:
            raise self._stale(ack.request_id, "ACK")
        if self.status is not Status.PENDING or inflight.reveal is None:
            raise RemoteProtocolError(Reason.UNEXPECTED_MESSAGE, "ACK before REVEAL")
        if ack.state != inflight.reveal.state:
            raise RemoteProtocolError(
                Reason.STATE_MISMATCH, f"expected {inflight.reveal.state}, got {ack.state}"
            )
        if not self._signer_is(ack.state, ack.signature, self.settlement.vault):
            raise RemoteProtocolError(Reason.BAD_STATE_SIGNATURE, "not the vault's signature")
        self._state = ack.state
        self._vault_signature = ack.signature
        self._provider_signature = inflight.reveal.signature
        self._inflight = None
        self.status = Status.OPEN
        return Step(events=(PaymentAcknowledged(ack.request_id, inflight.charge, ack.state),))

    def _on_close(self, close: Close, now: float) -> Step:
        if self._close_ack is not None and close.state == self._close_ack.state:
            return Step(send=(self._close_ack,))  # a retransmission
        if self.status is Status.CLOSED:
            raise RemoteProtocolError(Reason.CHANNEL_CLOSED)
        if self.status is Status.PENDING:
            raise RemoteProtocolError(
                Reason.REQUEST_IN_FLIGHT,
                f"request {self._rid()} is authorised but not acknowledged",
            )
        state = close.state
        if not state.is_final:
            raise RemoteProtocolError(Reason.STATE_MISMATCH, "CLOSE must carry a final state")
        if (state.client_balance, state.provider_balance) != (
            self._state.client_balance,
            self._state.provider_balance,
        ):
            raise RemoteProtocolError(
                Reason.STATE_MISMATCH, "final balances differ from the latest state"
            )
        if state.version <= self.version or state.version < self.next_request_id:
            raise RemoteProtocolError(Reason.STATE_MISMATCH, "the final version is not the newest")
        if not self._signer_is(state, close.signature, self.settlement.vault):
            raise RemoteProtocolError(Reason.BAD_STATE_SIGNATURE, "not the vault's signature")
        events: list[Event] = []
        if self._inflight is not None:  # LOCKED and never authorised
            if now < self._inflight.lock_deadline:
                raise RemoteProtocolError(
                    Reason.REQUEST_IN_FLIGHT, f"request {self._rid()} is still executing"
                )
            events.append(RequestAbandoned(self._inflight.request_id))  # the vault gave it up
            self._inflight = None
        signature = self.settlement.sign_state(self._key, state)
        self._close_ack = CloseAck(self.channel_id, state, signature)
        self.next_request_id = state.version
        self.status = Status.CLOSED
        events.append(CloseReady(SignedState(state, close.signature, signature)))
        return Step(send=(self._close_ack,), events=tuple(events))

    # -- persistence -----------------------------------------------------------

    def snapshot(self, *, binary: bool = False) -> bytes:
        """Everything this channel knows except the keys — including the adaptor
        secret ``t`` of the request in flight, so store it sealed. JSON (format version
        1) or, with ``binary``, version 2 (see :meth:`VaultChannel.snapshot`)."""
        if binary:
            return self._binary_snapshot()
        doc = self._common_snapshot(_snap.PROVIDER_FORMAT)
        inflight = self._inflight
        doc.update(
            ackTimeout=self.ack_timeout,
            lockTimeout=self.lock_timeout,
            inflight=None
            if inflight is None
            else {
                "requestId": inflight.request_id,
                "amount": inflight.amount,
                "request": _snap.hx(inflight.request),
                "lockDeadline": inflight.lock_deadline,
                "adaptorSecret": _snap.hx(inflight.adaptor_secret),
                "adaptorPoint": _snap.hx(inflight.adaptor_point),
                "resultHash": _snap.hx(inflight.result_hash),
                "message": _snap.hx(inflight.message),
                "charge": inflight.charge,
                "presignature": None
                if inflight.presignature is None
                else _snap.hx(self.settlement.presignature_bytes(inflight.presignature)),
                "reveal": _snap.message_to_json(inflight.reveal),
                "authorization": _snap.hx(inflight.authorization),
                "ackDeadline": inflight.ack_deadline,
                "forceCloseSignalled": inflight.force_close_signalled,
            },
            closeAck=_snap.message_to_json(self._close_ack),
        )
        if self._answered is not None:  # only without ACKs
            doc.update(
                answeredAuth=_snap.message_to_json(self._answered[0]),
                answeredReveal=_snap.message_to_json(self._answered[1]),
            )
        return _snap.dumps(doc)

    def _binary_snapshot(self) -> bytes:
        parts = self._common_binary(_snap.PROVIDER_HEADER)
        parts += (_snap.f(self.ack_timeout), _snap.f(self.lock_timeout))
        inflight = self._inflight
        if inflight is None:
            parts.append(_snap.ABSENT)
        else:
            presignature = inflight.presignature
            parts += (
                _snap.PRESENT, _snap.i(inflight.request_id), _snap.i(inflight.amount),
                _snap.b(inflight.request), _snap.f(inflight.lock_deadline),
                _snap.b(inflight.adaptor_secret), _snap.b(inflight.adaptor_point),
                _snap.b(inflight.result_hash), _snap.b(inflight.message),
                _snap.i(inflight.charge),
                _snap.b(None if presignature is None
                        else self.settlement.presignature_bytes(presignature)),
                _snap.m(inflight.reveal), _snap.b(inflight.authorization),
                _snap.f(inflight.ack_deadline), _snap.t(inflight.force_close_signalled),
            )
        parts.append(_snap.m(self._close_ack))
        answered = self._answered
        if answered is None:  # (only without ACKs)
            parts.append(_snap.ABSENT)
        else:
            parts += (_snap.PRESENT, _snap.m(answered[0]), _snap.m(answered[1]))
        return b"".join(parts)

    @classmethod
    def restore(
        cls, data: bytes, signer: DigestSigner, schnorr_key: SecretKey | PreSigner,
        *, settlement: Settlement | None = None,
    ) -> ProviderChannel:
        """The channel :meth:`snapshot` described, with its keys passed back in (and the
        settlement, for a channel that is not on an EVM chain)."""
        doc = _snap.loads(data, _snap.PROVIDER_FORMAT)
        with _snap.parsing("provider"):
            settled = cls._settled_by(settlement, doc)
            ack_timeout = _snap.number(doc["ackTimeout"])
            lock_timeout = _snap.number(doc["lockTimeout"])
        channel = cls.over(
            settled, signer, schnorr_key, ack_timeout=ack_timeout, lock_timeout=lock_timeout
        )
        with _snap.parsing("provider"):
            channel._restore_common(doc)
            raw = doc["inflight"]
            if raw is not None:
                presignature = raw["presignature"]
                channel._inflight = _ProviderRequest(
                    request_id=_snap.integer(raw["requestId"]),
                    amount=_snap.integer(raw["amount"]),
                    request=_snap.unhex(raw["request"]),
                    lock_deadline=_snap.number(raw["lockDeadline"]),
                    adaptor_secret=_snap.unhex(raw["adaptorSecret"]),
                    adaptor_point=_snap.unhex(raw["adaptorPoint"]),
                    result_hash=_snap.unhex(raw["resultHash"]),
                    message=_snap.unhex(raw["message"]),
                    charge=_snap.integer(raw.get("charge", raw["amount"])),
                    presignature=None
                    if presignature is None
                    else settled.parse_presignature(_snap.unhex(presignature)),
                    reveal=_snap.message_from_json(raw["reveal"], Reveal),
                    authorization=_snap.unhex(raw["authorization"]),
                    ack_deadline=_snap.number(raw["ackDeadline"]),
                    force_close_signalled=bool(raw["forceCloseSignalled"]),
                )
            channel._close_ack = _snap.message_from_json(doc["closeAck"], CloseAck)
            if "answeredAuth" in doc:
                answered_auth = _snap.message_from_json(doc["answeredAuth"], Auth)
                answered_reveal = _snap.message_from_json(doc["answeredReveal"], Reveal)
                if answered_auth is not None and answered_reveal is not None:
                    channel._answered = (answered_auth, answered_reveal)
        return channel

    # -- timeouts and the chain ------------------------------------------------

    def poll(self, *, now: float) -> Step:
        """Apply Δ_ack: once, when the ACK is overdue, emit :class:`ForceCloseDue`."""
        inflight = self._inflight
        if (
            self.status is Status.PENDING
            and inflight is not None
            and not inflight.force_close_signalled
            and now >= inflight.ack_deadline
        ):
            inflight.force_close_signalled = True
            return Step(events=(ForceCloseDue(self.claim()),))
        return Step()

    def pending_reveal(self) -> Reveal | None:
        """The REVEAL still waiting for its ACK, to re-send (the vault answers it idempotently)."""
        return self._inflight.reveal if self.status is Status.PENDING and self._inflight else None

    def claim(self) -> ForceCloseClaim:
        """The on-chain claim for the authorised request: latest state + payment + σ_U.

        Completing the pre-signature here is what will publish ``s`` on-chain.
        """
        inflight = self._inflight
        if self.status is not Status.PENDING or inflight is None or inflight.presignature is None:
            raise LocalProtocolError(Reason.NOT_ALLOWED, "no authorised payment to claim")
        return ForceCloseClaim(
            state=self._state,
            vault_signature=self._vault_signature,
            request_id=inflight.request_id,
            amount=inflight.charge,
            result_hash=inflight.result_hash,
            signature=self.settlement.complete(inflight.presignature, inflight.adaptor_secret),
            authorization=inflight.authorization,
        )
