"""The provider enclave's code: its side of every channel, behind a narrow interface.

A402 makes a payment final only if the request ran in the provider's attested
enclave and its result reached the payer (paper §2.2, Alg. 2). That holds only
if the *enclave*, not its host, decides what is pre-signed. So this code runs
inside the enclave (:meth:`a402.tee.Enclave.start` hands it the
:class:`~a402.tee.EnclaveKernel`) and holds every channel's
:class:`~a402.asc.ProviderChannel`; the host gets a :class:`ProviderEnclave`:

* ``receive(handle, frame)``: a tunnel frame, decrypted *here* with the
  tunnel's traffic keys (the host cannot read or write tunnel plaintext);
  the answer comes back as ciphertext (:class:`Answer`), or as what the host
  must do first: load or admit a channel (:class:`ChannelNeeded`), or run a
  paid request (:class:`Execute`, the only plaintext the host needs).
* ``executed(handle, response)``: the service's response to that request.
  The enclave itself builds the result (the response and the hash of the
  request bytes), draws ``t``, hashes the result into ``m``, seals it under
  ``t``, pre-signs ``m`` under ``T`` and encrypts the REPLY for the tunnel;
  ``failed`` abandons the request (nothing is charged).
* AUTH is answered with REVEAL only by the channel's own machine, for the
  ``m`` it built and the σ_U it checked against it.
* ``claim(channel)``: the completed adaptor signature for ``forceClose``, only
  for a payment whose σ_U the machine holds.
* ``export``/``restore``: channel state leaves only sealed, under a key the
  host's ``unseal`` cannot use.

Safety argument. A pre-signature is made only in
:meth:`ProviderEnclaveCode.commit`, on the ``m`` the machine built from the
result the enclave sealed under the ``t`` it drew, and the REPLY carrying it
is encrypted before the host sees it. The host therefore cannot pair a valid
σ̂ with a sealed result that does not open under ``t`` or with another result:
tampering with the frame fails AEAD at the vault, and no call takes an ``m``
or ``T`` of the host's choosing. σ_U is only useful with ``t`` (to complete
σ̂), and ``t`` leaves only in REVEAL (encrypted) or in :meth:`claim` for a
request the vault authorised — whose result the vault already holds sealed
and can open with the ``t`` the on-chain claim publishes. What the host still
controls is harmless to the payer: it may drop frames (the vault's timeouts
and disputes cover that), refuse or price requests, report the service's
response (the enclave seals exactly those bytes, so what the vault decrypts
is what was paid for), choose the clock (timeouts only), and roll sealed
state back (sealing has no rollback protection, :mod:`a402.tee.sealing`).

The provider's Ethereum account (``operator``) signs channel states from the
host, passed in as a :class:`~a402.asc.terms.DigestSigner`: its address is
the channel's ``provider``, the one paid, so a host misusing it can only sign
states that pay the provider *less*; what makes a payment atomic — the
pre-signature — never leaves the enclave.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from a402.asc import (
    Ack,
    ASCError,
    Auth,
    CloseReady,
    Exec,
    ForceCloseClaim,
    ForceCloseDue,
    ProviderChannel,
    Reason,
    Reply,
    SignedState,
    Status,
    decode,
    encode,
)
from a402.asc import snapshot as _snap
from a402.asc.errors import MessageError
from a402.asc.messages import Message as AscMessage
from a402.asc.snapshot import state_from_json, unhex
from a402.asc.terms import BalanceState, ChannelTerms, DigestSigner
from a402.crypto import EVM, PaymentDomain, PreSignature
from a402.crypto.authorization import recover_signer
from a402.crypto.vault_messages import NO_LEDGER, pending_digest
from a402.metering import MeterRule, UsageUnreadable
from a402.tee import Enclave, EnclaveError, EnclaveKernel
from a402.wire.a402 import (
    REQUEST_AD,
    RESPONSE_AD,
    Envelope,
    FrameError,
    HttpRequest,
    HttpResponse,
    HttpResult,
    Kind,
    OpenChannel,
    PendingNote,
    Refusal,
    binding_digest,
    request_digest,
)

log = logging.getLogger("a402.provider.enclave")

_RECORD_FORMAT = "a402/provider-enclave-channel/v1"
#: A channel's record as :meth:`ProviderEnclaveCode.export` writes it: binary (the
#: encoding of :mod:`a402.asc.snapshot`), these fields in this order. The JSON record of
#: ``_RECORD_FORMAT`` (earlier code's) still restores.
_RECORD_HEADER = b"A4PC\x02"
_RECORD_FIELDS: _snap.Fields = (
    ("channel", "raw"), ("lastIn", "raw"), ("lastOut", "raw"),
    ("final", (("state", "state"), ("vaultSignature", "raw"), ("providerSignature", "raw"))),
    ("closedAt", "of"), ("pendingNote", "raw"),
)

#: The host's price for a paid request: the amount for ``(method, path)``, or None.
PriceOf = Callable[[str, str], "int | None"]
#: The host's metering rule for a paid request's route (its price is then the maximum δ).
MeterOf = Callable[[str, str], "MeterRule | None"]


def _no_meter(method: str, path: str) -> MeterRule | None:
    return None


@dataclass(frozen=True, slots=True)
class VaultModeDomain:
    """The one ``A402Vault`` whose vault-mode channels this provider admits: the contract's
    payment domain (every vault-mode channel id and state is signed in it, and its
    ``claimPayment`` recomputes them) and its vault signer, read from the contract (the
    vault enclave's attested key: only it opens such a channel, with no transaction).

    ``pinned_ledger``: the host's reading of ``A402Vault.ledger()``, the ledger life the
    contract's first landed settlement pinned (16 zero bytes: none landed yet, or not read
    yet). It never changes once non-zero, so the host caches it; the call does no I/O.
    ``landed_epoch``: the host's last reading of ``A402Vault.lastEpoch()`` (no I/O; it only
    grows). A host that lied in either could only make its own provider reveal for a record
    it cannot claim, or refuse payments: it harms nobody but the provider, whose own
    machine it is."""

    domain: PaymentDomain
    vault: bytes
    pinned_ledger: Callable[[], bytes]
    landed_epoch: Callable[[], int] = lambda: 0


# ------------------------------------------------------------ what the host sees


@dataclass(frozen=True, slots=True)
class Answer:
    """Send ``frame`` (already encrypted for the tunnel). If ``persist``, store
    :meth:`ProviderEnclave.export` of ``channel_id`` first. ``incoming`` names the ASC
    message answered, when it was handled (or, with ``replayed``, answered again from
    the record): metadata the host could infer from sizes anyway, for logs and seams."""

    frame: bytes
    channel_id: bytes | None = None
    persist: bool = False
    incoming: str = ""
    replayed: bool = False
    #: For an EXEC answered with REPLY: the charge δ' committed in it (metadata for logs;
    #: the host could compute it from the response it reported anyway).
    charge: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelNeeded:
    """Bring ``channel_id`` in (:meth:`ProviderEnclave.restore` it from the store if it
    is stored and not running), hold its lock, then call :meth:`ProviderEnclave.found`.
    ``opening``: an OPEN; if the channel is stored nowhere, pass its on-chain status."""

    channel_id: bytes
    opening: bool


@dataclass(frozen=True, slots=True)
class Execute:
    """Run ``request`` (a paid request the channel accepted) and call
    :meth:`ProviderEnclave.executed` or :meth:`ProviderEnclave.failed`."""

    channel_id: bytes
    request_id: int
    request: HttpRequest


@dataclass(frozen=True, slots=True)
class EpochNeeded:
    """Vault mode: the AUTH's pending record names settlement ``epoch``, past the
    ``landed_epoch`` the host last read. Read ``A402Vault.lastEpoch()`` again (waiting a
    little for a settlement just sent to land), still holding the channel's lock, then call
    :meth:`ProviderEnclave.found` once more: the AUTH is taken only if the epoch landed."""

    channel_id: bytes
    epoch: int


Outcome = Answer | ChannelNeeded | Execute | EpochNeeded


class ChannelView:
    """Public facts of one channel the enclave runs: no ``t``, σ̂ or σ_U."""

    __slots__ = ("_held",)

    def __init__(self, held: HeldChannel) -> None:
        self._held = held

    @property
    def channel_id(self) -> bytes:
        return self._held.channel.channel_id

    @property
    def terms(self) -> ChannelTerms:
        return self._held.channel.terms

    @property
    def status(self) -> Status:
        return self._held.channel.status

    @property
    def state(self) -> BalanceState:
        return self._held.channel.state

    @property
    def version(self) -> int:
        return self._held.channel.version

    def latest_state(self) -> SignedState:
        return self._held.channel.latest_state()

    @property
    def final(self) -> SignedState | None:
        """The co-signed final state, once a cooperative close was agreed."""
        return self._held.final

    @property
    def closed_at(self) -> float | None:
        return self._held.closed_at

    @property
    def pending_note(self) -> PendingNote | None:
        """Vault mode: the vault's signed pending record of the payment whose AUTH the
        channel answered last (what ``A402Vault.claimPayment`` takes besides the claim)."""
        return self._held.pending_note


class ProviderEnclave(Protocol):
    """The provider enclave as its host sees it, once its code runs.

    Not offered, on purpose: pre-signing, signing a digest, tunnel plaintext,
    unsealed channel state. See the module docstring for why that is enough.
    """

    @property
    def provider_key(self) -> bytes:
        """The attested key's x-coordinate: every channel's ``providerKey``."""
        ...

    def receive(self, handle: str, frame: bytes) -> Outcome: ...

    def found(self, handle: str, *, on_chain: str | None = None) -> Outcome: ...

    def executed(self, handle: str, response: HttpResponse) -> Answer: ...

    def failed(self, handle: str, reason: str, detail: str) -> Answer: ...

    def forget(self, handle: str) -> None: ...

    def view(self, channel_id: bytes) -> ChannelView | None: ...

    def poll(self, channel_id: bytes) -> ForceCloseClaim | None: ...

    def claim(self, channel_id: bytes) -> ForceCloseClaim: ...

    def closed_on_chain(self, channel_id: bytes) -> None: ...

    def export(self, channel_id: bytes) -> bytes: ...

    def restore(self, channel_id: bytes, blob: bytes) -> None: ...


class ProviderEnclaveBoundary:
    """What :meth:`ProviderEnclaveCode.start` hands the host: the :class:`ProviderEnclave`
    calls and nothing else (not the code's seams, not its channels)."""

    __slots__ = ("_code",)

    def __init__(self, code: ProviderEnclaveCode) -> None:
        self._code = code

    @property
    def provider_key(self) -> bytes:
        return self._code.provider_key

    def receive(self, handle: str, frame: bytes) -> Outcome:
        return self._code.receive(handle, frame)

    def found(self, handle: str, *, on_chain: str | None = None) -> Outcome:
        return self._code.found(handle, on_chain=on_chain)

    def executed(self, handle: str, response: HttpResponse) -> Answer:
        return self._code.executed(handle, response)

    def failed(self, handle: str, reason: str, detail: str) -> Answer:
        return self._code.failed(handle, reason, detail)

    def forget(self, handle: str) -> None:
        self._code.forget(handle)

    def view(self, channel_id: bytes) -> ChannelView | None:
        return self._code.view(channel_id)

    def poll(self, channel_id: bytes) -> ForceCloseClaim | None:
        return self._code.poll(channel_id)

    def claim(self, channel_id: bytes) -> ForceCloseClaim:
        return self._code.claim(channel_id)

    def closed_on_chain(self, channel_id: bytes) -> None:
        self._code.closed_on_chain(channel_id)

    def export(self, channel_id: bytes) -> bytes:
        return self._code.export(channel_id)

    def restore(self, channel_id: bytes, blob: bytes) -> None:
        self._code.restore(channel_id, blob)


# ------------------------------------------------------------------ inside


class _KernelPreSigner:
    """A :class:`~a402.asc.PreSigner` over the kernel: the attested key, in the enclave."""

    def __init__(self, kernel: EnclaveKernel) -> None:
        key = kernel.signing_public_key
        if key[0] != 2:
            raise ValueError("the enclave's key must have even y to be an EVM Schnorr key")
        self._kernel = kernel
        self.public_key = bytes(key[1:])

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature:
        return EVM.presignature_from_bytes(self._kernel.pre_sign(message, adaptor))


@dataclass
class HeldChannel:
    """One channel in the enclave: the machine plus what the machine does not keep."""

    channel: ProviderChannel
    last_in: bytes = b""
    last_out: bytes = b""
    final: SignedState | None = None
    closed_at: float | None = None
    pending_note: PendingNote | None = None


class _Refused(Exception):
    """A message refused without any change: answered, not recorded (a retry is judged afresh)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.envelope = Refusal(reason, detail).envelope()


@dataclass(frozen=True, slots=True)
class _Opening:
    channel_id: bytes
    terms: ChannelTerms
    domain: PaymentDomain


@dataclass(frozen=True, slots=True)
class _Message:
    channel_id: bytes
    body: bytes
    message: AscMessage
    acked: Ack | None
    pending: PendingNote | None = None
    #: The host was asked to read the landed epoch for this message (:class:`EpochNeeded`).
    #: (Only an AUTH with its pending record asks, and no ACK rides on one: ASC_PENDING.)
    epoch_read: bool = False


@dataclass(frozen=True, slots=True)
class _Executing:
    channel_id: bytes
    body: bytes
    exec_: Exec
    meter: MeterRule | None = None
    started: float = 0.0


class ProviderEnclaveCode:
    """The provider's side of every channel, run inside the enclave.

    Start it with :meth:`start`, which returns the host's :class:`ProviderEnclaveBoundary`.
    ``signer`` is the operator's state-signing key (host-side, see the module
    docstring); ``price`` and ``closing`` are the host's policies (what a route
    costs; whether a force-close of a channel is under way); ``clock`` is the
    host's clock (it only moves timeouts).

    :meth:`commit`, :meth:`outgoing` and :meth:`on_piggybacked_ack` are the
    seams a test overrides to model a *faulty enclave* (other code, so another
    measurement): the host has no such seam.
    """

    def __init__(
        self,
        kernel: EnclaveKernel,
        *,
        domain: PaymentDomain,
        signer: DigestSigner,
        price: PriceOf,
        closing: Callable[[bytes], bool],
        clock: Callable[[], float],
        ack_timeout: float,
        lock_timeout: float,
        vault_mode: VaultModeDomain | None = None,
        meter: MeterOf = _no_meter,
    ) -> None:
        self._kernel = kernel
        self._meter = meter
        self._vault_mode = vault_mode
        self._presigner = _KernelPreSigner(kernel)
        self._domain = domain
        self._signer = signer
        self._price = price
        self._closing = closing
        self._clock = clock
        self._ack_timeout = ack_timeout
        self._lock_timeout = lock_timeout
        self._held: dict[bytes, HeldChannel] = {}
        self._bound: dict[str, set[bytes]] = {}
        self._pending: dict[str, _Opening | _Message | _Executing] = {}

    @classmethod
    def start(
        cls, enclave: Enclave, *, domain: PaymentDomain, signer: DigestSigner, price: PriceOf,
        closing: Callable[[bytes], bool], clock: Callable[[], float], ack_timeout: float,
        lock_timeout: float, vault_mode: VaultModeDomain | None = None,
        meter: MeterOf = _no_meter,
    ) -> ProviderEnclaveBoundary:
        """Run this code in ``enclave``; the host gets only the boundary. ``vault_mode``:
        also admit the vault-mode channels of that ``A402Vault``. ``meter``: the metering
        rule of a route priced by usage (its price is then the maximum δ)."""
        return enclave.start(lambda kernel: ProviderEnclaveBoundary(cls(
            kernel, domain=domain, signer=signer, price=price, closing=closing, clock=clock,
            ack_timeout=ack_timeout, lock_timeout=lock_timeout, vault_mode=vault_mode,
            meter=meter,
        )))

    @property
    def provider_key(self) -> bytes:
        return self._presigner.public_key

    # ---------------------------------------------------------------- frames

    def _answer(
        self, handle: str, envelope: Envelope, channel_id: bytes | None = None, *,
        persist: bool = False, incoming: str = "", replayed: bool = False,
        charge: int | None = None,
    ) -> Answer:
        frame = self._kernel.channel_encrypt(handle, envelope.encode(), ad=RESPONSE_AD)
        return Answer(frame, channel_id, persist, incoming, replayed, charge)

    def receive(self, handle: str, frame: bytes) -> Outcome:
        """One encrypted envelope from the vault. Raises :class:`~a402.tee.ChannelError`
        for a frame that does not authenticate (answered outside the tunnel by the host)."""
        self._pending.pop(handle, None)  # a new frame: the host gave up on the last one
        plaintext = self._kernel.channel_decrypt(handle, frame, ad=REQUEST_AD)
        try:
            envelope = Envelope.decode(plaintext)
            if envelope.kind is Kind.OPEN:
                return self._on_open(handle, OpenChannel.from_body(envelope.body))
            if envelope.kind is Kind.ASC:
                return self._on_asc(handle, envelope.body, None)
            if envelope.kind is Kind.ASC_ACKED:
                ack, body = envelope.ack_and_message()
                return self._on_asc(handle, body, ack)
            if envelope.kind is Kind.ASC_PENDING:
                note, body = envelope.pending_and_message()
                return self._on_asc(handle, body, None, note)
            return self._answer(handle, Refusal(
                "unexpected_envelope", f"a provider does not take {envelope.kind.name}"
            ).envelope())
        except FrameError as e:
            return self._answer(handle, Refusal("malformed", str(e)).envelope())

    def forget(self, handle: str) -> None:
        """The host closed the tunnel ``handle``."""
        self._bound.pop(handle, None)
        self._pending.pop(handle, None)

    def _on_open(self, handle: str, request: OpenChannel) -> Outcome:
        # A channel whose vault is the A402Vault's vault signer is a vault-mode channel of
        # that contract (its id and states in the contract's domain); any other is a
        # standard channel of the ASCManager, admitted only once it is OPEN on-chain.
        vault_mode = self._vault_mode is not None and request.vault == self._vault_mode.vault
        domain = self._vault_mode.domain if vault_mode and self._vault_mode else self._domain
        try:
            terms = ChannelTerms(request.client, request.vault, request.provider,
                                 request.provider_key, request.deposit, request.salt,
                                 vault_mode=vault_mode)
        except ValueError as e:
            return self._answer(handle, Refusal("bad_terms", str(e)).envelope())
        if terms.provider != self._signer.address:
            return self._answer(handle, Refusal(
                "wrong_provider", "the channel pays another provider").envelope())
        if terms.provider_key != self.provider_key:
            return self._answer(handle, Refusal(
                "wrong_provider_key", "the channel names another key").envelope())
        channel_id = terms.channel_id(domain)
        digest = binding_digest(self._kernel.channel_binding(handle), channel_id)
        if recover_signer(digest, request.signature) != terms.vault:
            return self._answer(handle, Refusal(
                "bad_binding_signature", "not signed by the channel's vault").envelope())
        self._pending[handle] = _Opening(channel_id, terms, domain)
        return ChannelNeeded(channel_id, opening=True)

    def _on_asc(self, handle: str, body: bytes, ack: bytes | None,
                pending: PendingNote | None = None) -> Outcome:
        try:
            message = decode(body)
            acked = None if ack is None else decode(ack)
        except MessageError as e:
            return self._answer(handle, Refusal("malformed", str(e)).envelope())
        if acked is not None and (not isinstance(acked, Ack)
                                  or acked.channel_id != message.channel_id):
            return self._answer(handle, Refusal(
                "malformed", "ASC_ACKED carries an ACK of the same channel").envelope())
        if message.channel_id not in self._bound.get(handle, ()):
            return self._answer(handle, Refusal(
                "channel_not_bound", "send OPEN for this channel first").envelope())
        self._pending[handle] = _Message(message.channel_id, body, message, acked, pending)
        return ChannelNeeded(message.channel_id, opening=False)

    def found(self, handle: str, *, on_chain: str | None = None) -> Outcome:
        """Continue after :class:`ChannelNeeded` (the host restored the channel if stored).
        ``on_chain``: the channel's on-chain status name, for an OPEN of a channel stored
        nowhere (only ``"OPEN"`` admits it)."""
        pending = self._pending.pop(handle, None)
        if isinstance(pending, _Opening):
            return self._admit(handle, pending, on_chain)
        if not isinstance(pending, _Message):
            raise EnclaveError("out_of_order_call", "no message waits for its channel")
        held = self._held.get(pending.channel_id)
        if held is None:  # bound channels are always stored
            return self._answer(handle, Refusal("unknown_channel", "no such channel").envelope())
        return self._on_message_for(handle, held, pending)

    def _admit(self, handle: str, opening: _Opening, on_chain: str | None) -> Answer:
        """Admit a channel stored nowhere: a standard one only once it is OPEN on-chain; a
        vault-mode one has no on-chain record (it is funded by the client's account in the
        vault enclave): it is admitted on the vault's signature over this tunnel's binding
        (checked in :meth:`_on_open`), the vault being the ``A402Vault``'s own signer. That
        is what makes it payable: every σ_U of the channel is checked against that key, and
        ``claimPayment`` of that contract pays a payment it authorised even if the vault
        goes dark (with the pending record that came with the AUTH)."""
        channel_id, persist = opening.channel_id, False
        if channel_id not in self._held:
            if on_chain != "OPEN" and not opening.terms.vault_mode:
                return self._answer(handle, Refusal(
                    "channel_not_open", f"on-chain status is {on_chain}").envelope())
            self._held[channel_id] = HeldChannel(ProviderChannel(
                opening.terms, opening.domain, self._signer, self._presigner,
                ack_timeout=self._ack_timeout, lock_timeout=self._lock_timeout,
            ))
            persist = True
            log.info("channel %s registered (deposit %d)", channel_id.hex(),
                     opening.terms.deposit)
        self._bound.setdefault(handle, set()).add(channel_id)
        return self._answer(handle, Envelope.ok(), channel_id, persist=persist)

    def _on_message_for(self, handle: str, held: HeldChannel, pending: _Message) -> Outcome:
        """One ASC message; with an ACK riding on it (ASC_ACKED), the ACK first.

        A retransmitted message is answered from the record whether or not an ACK
        rides on it: the ACK was taken before the message was first handled.
        """
        channel_id, body, message = pending.channel_id, pending.body, pending.message
        if held.last_in and body == held.last_in:  # a retransmission: the same answer
            return self._answer(handle, Envelope.decode(held.last_out), channel_id,
                                incoming=type(message).__name__, replayed=True)
        try:
            took_ack = pending.acked is not None and self.on_piggybacked_ack(held, pending.acked)
        except _Refused as refused:
            return self._answer(handle, refused.envelope)
        try:
            if isinstance(message, Exec):
                return self._on_exec(handle, held, pending, message)
            note = self._pending_note(held, message, pending.pending)
            if note is not None and note.epoch > self._landed_epoch():
                if not pending.epoch_read:  # ask the host to read the chain, then come back
                    self._pending[handle] = replace(pending, epoch_read=True)
                    return EpochNeeded(channel_id, note.epoch)
                raise _Refused("epoch_not_landed", (
                    f"the record names settlement {note.epoch}, the A402Vault has landed "
                    f"{self._landed_epoch()}: it could not be claimed yet; nothing was revealed"))
            answer = self._on_message(held, message)
            if note is not None:
                held.pending_note = note
        except _Refused as refused:
            # the message is refused, but a payment its ACK acknowledged stands
            return self._answer(handle, refused.envelope, channel_id, persist=took_ack)
        return self._finish(handle, held, body, message, answer)

    def _finish(
        self, handle: str, held: HeldChannel, body: bytes, message: AscMessage,
        answer: Envelope, charge: int | None = None,
    ) -> Answer:
        answer = self.outgoing(held, message, answer)
        encoded = answer.encode()
        held.last_in, held.last_out = body, encoded
        frame = self._kernel.channel_encrypt(handle, encoded, ad=RESPONSE_AD)
        return Answer(frame, held.channel.channel_id, True, type(message).__name__, False,
                      charge)

    def _pending_note(self, held: HeldChannel, message: AscMessage,
                      note: PendingNote | None) -> PendingNote | None:
        """Vault mode: an AUTH is taken (and ``t`` revealed) only with the vault's pending
        record of that payment, signed by the channel's vault in the contract's domain:
        without it a provider that revealed could not claim on-chain if the vault went dark
        (``claimPayment`` checks the same signature).

        The record must also name the ledger life the ``A402Vault`` pinned (issue 13):
        ``claimPayment`` recomputes the digest with the contract's ``ledger``, not the
        record's, so a record of another life (a vault enclave whose sealed ledger was wiped
        and restarted under the same key signs for a fresh life) is signed by the vault but
        never claimable: revealing for it would let the vault keep the result and withhold
        the ACK, and the provider would have delivered unpaid. So nothing is revealed
        (``wrong_ledger``). With no life pinned yet (no settlement landed) the provider
        refuses too (``ledger_not_pinned``): such a record is not claimable either, since
        ``claimPayment`` reverts ``EpochNotSettled`` unless the record's epoch (that of the
        settlement that confirmed the client's deposits, ≥ 1) has landed, and the first
        landed settlement is what pins the life."""
        terms = held.channel.terms
        if not terms.vault_mode or not isinstance(message, Auth):
            return None
        # The epoch (issue 13, review s14-rev12): ``claimPayment`` pays only once the
        # record's epoch has landed (it names the settlement that confirmed the money behind
        # the payment). A vault host that had such a settlement signed and withholds it would
        # have the provider reveal for a payment it can never claim, while the client leaves
        # with an earlier statement that still counts the money. So the AUTH is taken only
        # once the epoch has landed (:meth:`_on_message_for`, after the host read the chain:
        # :class:`EpochNeeded`); an honest vault names only landed epochs anyway.
        if note is None:
            raise _Refused("pending_record_required",
                           "a vault-mode AUTH comes with its signed pending record")
        if (note.channel_id, note.request_id) != (message.channel_id, message.request_id):
            raise _Refused("bad_pending_record", "the record names another payment")
        digest = pending_digest(held.channel.domain, note.channel_id, note.request_id,
                                note.client_nonce, note.epoch, note.deadline, note.ledger)
        if recover_signer(digest, note.signature) != terms.vault:
            raise _Refused("bad_pending_record", "not signed by the channel's vault")
        pinned = self._vault_mode.pinned_ledger() if self._vault_mode else NO_LEDGER
        if pinned == NO_LEDGER:
            raise _Refused("ledger_not_pinned", "no settlement of the A402Vault has landed "
                           "yet: the record could not be claimed; nothing was revealed")
        if note.ledger != pinned:
            raise _Refused("wrong_ledger", f"the record names ledger {note.ledger.hex()}, "
                           f"the A402Vault pinned {pinned.hex()}: it could not be claimed; "
                           "nothing was revealed")
        return note

    def _landed_epoch(self) -> int:
        return self._vault_mode.landed_epoch() if self._vault_mode else 0

    def on_piggybacked_ack(self, held: HeldChannel, ack: Ack) -> bool:
        """Take an ACK that rode on the next message; whether it changed the channel. As on
        its own, a repeated ACK or one for a channel settled meanwhile changes nothing; any
        other refusal refuses the frame."""
        try:
            self._on_message(held, ack)
        except _Refused as refused:
            if refused.reason not in (Reason.REPLAYED.value, Reason.CHANNEL_CLOSED.value):
                raise
            return False
        return True

    def _on_message(self, held: HeldChannel, message: AscMessage) -> Envelope:
        try:
            step = held.channel.receive(message, now=self._clock())
        except ASCError as e:
            raise _Refused(e.reason.value, e.detail) from None
        for event in step.events:
            if isinstance(event, CloseReady):
                held.final, held.closed_at = event.signed, self._clock()
        return Envelope.asc(encode(step.send[0])) if step.send else Envelope.ok()

    def _on_exec(
        self, handle: str, held: HeldChannel, pending: _Message, exec_: Exec
    ) -> Execute:
        try:
            request = HttpRequest.decode(exec_.request)
        except FrameError as e:
            raise _Refused("malformed_request", str(e)) from None
        price = self._price(request.method, request.path)
        if price is None:
            raise _Refused("not_a_paid_route", f"{request.method} {request.path} is not priced")
        if exec_.amount != price:
            raise _Refused("amount_mismatch", f"the price is {price}, not {exec_.amount}")
        if self._closing(pending.channel_id):
            raise _Refused("channel_closing", "a force-close of this channel is under way")
        try:
            held.channel.receive(exec_, now=self._clock())
        except ASCError as e:
            raise _Refused(e.reason.value, e.detail) from None
        meter = self._meter(request.method, request.path)
        self._pending[handle] = _Executing(pending.channel_id, pending.body, exec_, meter,
                                           self._clock())
        return Execute(pending.channel_id, exec_.request_id, request)

    def _executing(self, handle: str) -> tuple[HeldChannel, _Executing]:
        pending = self._pending.pop(handle, None)
        if not isinstance(pending, _Executing) or pending.channel_id not in self._held:
            raise EnclaveError("out_of_order_call", "no paid request executes on this tunnel")
        return self._held[pending.channel_id], pending

    def executed(self, handle: str, response: HttpResponse) -> Answer:
        """The service answered: REPLY (committed, sealed, pre-signed, encrypted here), or,
        for a status ≥ 400, the response itself and no charge.

        A metered route's charge is computed here, from the very response sealed (and,
        for ``per-second``, the time since the EXEC was handed out), capped at the
        EXEC's δ (:mod:`a402.metering`), and committed in ``m``. A response whose usage
        cannot be read is refused (``usage_unreadable``) and nothing is charged."""
        held, pending = self._executing(handle)
        exec_, rid = pending.exec_, pending.exec_.request_id
        if response.status >= 400:
            held.channel.abandon(rid)
            answer = Refusal(
                "service_failed", f"the service answered {response.status}", response
            ).envelope()
            return self._finish(handle, held, pending.body, exec_, answer)
        charge = exec_.amount
        if pending.meter is not None:
            try:
                charge = min(exec_.amount, pending.meter.charge(
                    response.status, response.headers, response.body,
                    max(0.0, self._clock() - pending.started)))
            except UsageUnreadable as e:
                held.channel.abandon(rid)
                answer = Refusal("usage_unreadable", str(e)).envelope()
                return self._finish(handle, held, pending.body, exec_, answer)
        result = HttpResult(request_digest(exec_.request), response).encode()
        try:
            reply = self.commit(held, exec_, result, charge)
        except Exception as e:  # the enclave refused or failed: nothing was signed
            log.exception("could not commit to request %d on %s", rid, pending.channel_id.hex())
            held.channel.abandon(rid)
            answer = Refusal("commit_failed", type(e).__name__).envelope()
            return self._finish(handle, held, pending.body, exec_, answer)
        return self._finish(handle, held, pending.body, exec_, Envelope.asc(encode(reply)),
                            charge=reply.amount)

    def failed(self, handle: str, reason: str, detail: str) -> Answer:
        """The service failed (timeout, crash): abandon the request; nothing is charged."""
        held, pending = self._executing(handle)
        held.channel.abandon(pending.exec_.request_id)
        answer = Refusal(reason, detail).envelope()
        return self._finish(handle, held, pending.body, pending.exec_, answer)

    # ------------------------------------------------------------------ seams

    def commit(self, held: HeldChannel, exec_: Exec, result: bytes,
               charge: int | None = None) -> Reply:
        """Step ②: draw ``t``, seal ``result`` under it, build ``m`` (with the charge δ',
        default δ) and pre-sign (REPLY)."""
        return held.channel.reply(exec_.request_id, result, charge=charge)

    def outgoing(self, held: HeldChannel, incoming: AscMessage, answer: Envelope) -> Envelope:
        """Every recorded answer to a vault message passes here before it is encrypted."""
        return answer

    # ----------------------------------------------------------- the chain side

    def _get(self, channel_id: bytes) -> HeldChannel:
        held = self._held.get(channel_id)
        if held is None:
            raise EnclaveError("unknown_channel", "this enclave runs no such channel")
        return held

    def view(self, channel_id: bytes) -> ChannelView | None:
        held = self._held.get(channel_id)
        return None if held is None else ChannelView(held)

    def poll(self, channel_id: bytes) -> ForceCloseClaim | None:
        """Apply Δ_ack: once, when the ACK is overdue, the claim to submit (then persist)."""
        for event in self._get(channel_id).channel.poll(now=self._clock()).events:
            if isinstance(event, ForceCloseDue):
                return event.claim
        return None

    def claim(self, channel_id: bytes) -> ForceCloseClaim:
        """The completed adaptor signature for ``forceClose``: only for the request whose
        σ_U the channel holds (:meth:`~a402.asc.ProviderChannel.claim` refuses otherwise)."""
        try:
            return self._get(channel_id).channel.claim()
        except ASCError as e:
            raise EnclaveError("nothing_to_claim", e.detail) from None

    def closed_on_chain(self, channel_id: bytes) -> None:
        self._get(channel_id).channel.closed_on_chain()

    # ------------------------------------------------------------- persistence

    def _label(self, channel_id: bytes) -> str:
        return f"a402/provider-channel/{channel_id.hex()}"

    def export(self, channel_id: bytes) -> bytes:
        """The channel's state, sealed (it holds ``t`` of the request in flight)."""
        held = self._get(channel_id)
        final, note = held.final, held.pending_note
        record = b"".join((
            _RECORD_HEADER, _snap.b(held.channel.snapshot(binary=True)), _snap.b(held.last_in),
            _snap.b(held.last_out),
            _snap.ABSENT if final is None else b"".join((
                _snap.PRESENT, _snap.i(final.state.version), _snap.i(final.state.client_balance),
                _snap.i(final.state.provider_balance), _snap.t(final.state.is_final),
                _snap.b(final.vault_signature), _snap.b(final.provider_signature))),
            _snap.of(held.closed_at), _snap.b(None if note is None else note.encode()),
        ))
        return self._kernel.seal(self._label(channel_id), record)

    def restore(self, channel_id: bytes, blob: bytes) -> None:
        """Run a channel again from :meth:`export` (a no-op if it runs already)."""
        if channel_id in self._held:
            return
        plaintext = self._kernel.unseal(self._label(channel_id), blob)
        if plaintext.startswith(_RECORD_HEADER[:4]):
            record = _snap.read(plaintext, _RECORD_HEADER, _RECORD_FIELDS)
            snapshot, final = record["channel"], record["final"]
            last_in, last_out, note = record["lastIn"], record["lastOut"], record["pendingNote"]
            signed = None if final is None else SignedState(
                state_from_json(final["state"]), final["vaultSignature"],
                final["providerSignature"])
        else:  # the JSON record earlier code wrote
            record = json.loads(plaintext)
            if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
                raise ValueError("not a provider channel record")
            snapshot, final = record["channel"].encode(), record["final"]
            last_in, last_out = unhex(record["lastIn"]), unhex(record["lastOut"])
            note = None if record.get("pendingNote") is None else unhex(record["pendingNote"])
            signed = None if final is None else SignedState(
                state_from_json(final[0]), unhex(final[1]), unhex(final[2]))
        if None in (snapshot, last_in, last_out):
            raise ValueError("a provider channel record without its channel")
        channel = ProviderChannel.restore(snapshot, self._signer, self._presigner)
        if channel.channel_id != channel_id:
            raise ValueError("the record is for another channel")
        self._held[channel_id] = HeldChannel(
            channel, last_in=last_in, last_out=last_out, final=signed,
            closed_at=record["closedAt"],
            pending_note=None if note is None else PendingNote.decode(note),
        )
