"""The attested secure channel between a vault enclave and a provider enclave.

Paper §2.4: after registration, U and S "run an authenticated Diffie–Hellman
to derive a channel key ``ch``, which protects all ASC messages". This module
is that channel: pure (bytes in, bytes out; no sockets, no clock reads beyond
an injectable ``clock``).

**Handshake: Noise XX with attested static keys.** Each enclave's long-term
X25519 key (bound to its code measurement by its attestation evidence) is the
Noise static key; see :mod:`a402.tee._noise` for the pattern::

    initiator                                   responder
    -> e
                                  <- e, ee, s, es, {evidence_R}
    -> s, se, {evidence_I}

Why this design:

* Authentication comes from DH with the *attested* static keys (``es``,
  ``se``), not from signatures, so the secp256k1 key that signs payments is
  never used for anything but payments (no cross-protocol signing).
* Each side's payload is its attestation evidence, and a verifier accepts it
  only if (1) it verifies under the configured :class:`AttestationPolicy`,
  (2) its attested X25519 key equals the static key the peer just proved it
  holds in the handshake, and (3) its nonce equals the Noise transcript hash
  ``h`` at the point the payload is written. (2) stops a man in the middle
  who relays genuine evidence but uses his own key; (3) makes the evidence
  fresh for *this* handshake, so recorded evidence cannot be replayed even by
  someone who later learns a static key, and binds it to both ephemerals.
* The payloads are encrypted (Noise XX hides both identities from observers)
  and mixed into ``h``, so the final ``h`` (:attr:`SecureChannel.binding`)
  commits to the whole transcript; ASC messages can include it.
* Both sides must use the same ``prologue`` (e.g. ``b"vault->provider"``);
  it is hashed first, so a vault and a provider can never be tricked into a
  handshake meant for different roles.

**Transport.** Noise's ``Split`` (HKDF-SHA256 from the chaining key) gives one
ChaCha20-Poly1305 key per direction. A frame is ``counter (8 bytes, big
endian) ‖ ciphertext ‖ tag``, encrypted with Noise's nonce for ``counter``
and the caller's associated data. The counter is authenticated because it is
the nonce. A receiver accepts only counters strictly greater than the last one
it accepted and updates its state only after a frame authenticates, so replays
and reordered frames fail with ``replay`` while forged frames cannot advance
it. Gaps are allowed: a lost frame is the ASC layer's concern (requests carry
``rid``/version ``k`` and are retried idempotently), not a reason to tear the
channel down. Departure from Noise: Noise transport messages carry no counter;
we send it so that a replay is reported as a replay, not as a generic
authentication failure. The ciphertext itself is exactly Noise's.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from . import _cbor
from ._noise import CipherState, NoiseError, XXHandshake
from .errors import ChannelError
from .quote import AttestationPolicy, AttestationVerifier, VerifiedEnclave

PROLOGUE_PREFIX = b"A402/asc-channel/v1"
COUNTER_SIZE = 8
_MAX_PAYLOAD = 16 * 1024


class ChannelIdentity(Protocol):
    """What a handshake needs from the local enclave; implemented inside it.

    ``dh`` performs X25519 with the attested static key; ``attest`` produces
    evidence with the given nonce and returns ``(kind, evidence)``.
    """

    @property
    def kx_public_key(self) -> bytes: ...

    def dh(self, peer_public_key: bytes) -> bytes: ...

    def attest(self, nonce: bytes) -> tuple[str, bytes]: ...


def _verifier_map(verifiers: Iterable[AttestationVerifier]) -> dict[str, AttestationVerifier]:
    table: dict[str, AttestationVerifier] = {}
    for verifier in verifiers:
        if verifier.kind in table:
            raise ValueError(f"two verifiers for kind {verifier.kind!r}")
        table[verifier.kind] = verifier
    if not table:
        raise ValueError("at least one attestation verifier is required")
    return table


def _prologue(prologue: bytes) -> bytes:
    return PROLOGUE_PREFIX + len(prologue).to_bytes(2, "big") + prologue


def _channel_error(e: NoiseError) -> ChannelError:
    return ChannelError(e.reason, str(e))


class _Side:
    """Shared logic of both handshake roles."""

    def __init__(
        self,
        identity: ChannelIdentity,
        verifiers: Iterable[AttestationVerifier],
        policy: AttestationPolicy,
        *,
        initiator: bool,
        prologue: bytes,
        clock: Callable[[], float],
    ) -> None:
        self._identity = identity
        self._verifiers = _verifier_map(verifiers)
        self._policy = policy
        self._clock = clock
        self._hs = XXHandshake(
            initiator=initiator,
            static=identity,
            prologue=_prologue(prologue),
        )

    def _evidence_payload(self, h: bytes) -> bytes:
        kind, evidence = self._identity.attest(h)
        return _cbor.encode({"kind": kind, "evidence": evidence})

    def _write(self) -> bytes:
        try:
            return self._hs.write_message(self._evidence_payload)
        except NoiseError as e:
            raise _channel_error(e) from None

    def _read_peer(self, message: bytes) -> VerifiedEnclave:
        try:
            payload, h = self._hs.read_message(message)
        except NoiseError as e:
            raise _channel_error(e) from None
        try:
            envelope = _cbor.decode_canonical(payload, max_size=_MAX_PAYLOAD)
        except ValueError as e:
            raise ChannelError("malformed", f"attestation payload: {e}") from None
        if (not isinstance(envelope, dict) or set(envelope) != {"kind", "evidence"}
                or not isinstance(envelope["kind"], str)
                or not isinstance(envelope["evidence"], bytes)):
            raise ChannelError("malformed", "attestation payload must be {kind, evidence}")
        verifier = self._verifiers.get(envelope["kind"])
        if verifier is None:
            raise ChannelError("unsupported_kind", f"no verifier for {envelope['kind']!r}")
        peer = verifier.verify(envelope["evidence"], self._policy.with_nonce(h), now=self._clock())
        remote_static = self._hs.remote_static
        if remote_static is None or not hmac.compare_digest(peer.kx_key, remote_static):
            raise ChannelError(
                "key_not_attested", "the peer's handshake key is not the key its evidence attests"
            )
        return peer

    def _channel(self, peer: VerifiedEnclave) -> SecureChannel:
        send, receive = self._hs.split()
        return SecureChannel(peer, self._hs.handshake_hash, send, receive,
                             initiator=self._hs.initiator)


class Initiator(_Side):
    """The side that opens the channel (normally the vault). ``start`` then ``finish``."""

    def __init__(
        self,
        identity: ChannelIdentity,
        verifiers: Iterable[AttestationVerifier],
        policy: AttestationPolicy,
        *,
        prologue: bytes = b"",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(identity, verifiers, policy, initiator=True, prologue=prologue,
                         clock=clock)

    def start(self) -> bytes:
        """The first handshake message (32 bytes: an ephemeral key)."""
        try:
            return self._hs.write_message(b"")
        except NoiseError as e:
            raise _channel_error(e) from None

    def finish(self, message: bytes) -> tuple[bytes, SecureChannel]:
        """Verify the responder; return the third message and the open channel.

        Raises :class:`AttestationError` if the responder's evidence fails the
        policy, :class:`ChannelError` for anything else.
        """
        peer = self._read_peer(message)
        third = self._write()
        return third, self._channel(peer)


class Responder(_Side):
    """The side that accepts the channel (normally the provider). ``respond`` then ``finish``."""

    def __init__(
        self,
        identity: ChannelIdentity,
        verifiers: Iterable[AttestationVerifier],
        policy: AttestationPolicy,
        *,
        prologue: bytes = b"",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(identity, verifiers, policy, initiator=False, prologue=prologue,
                         clock=clock)

    def respond(self, message: bytes) -> bytes:
        """Answer the first message with this enclave's evidence."""
        try:
            payload, _h = self._hs.read_message(message)
        except NoiseError as e:
            raise _channel_error(e) from None
        if payload:
            raise ChannelError("malformed", "the first handshake message carries no payload")
        return self._write()

    def finish(self, message: bytes) -> SecureChannel:
        """Verify the initiator from the third message; return the open channel."""
        return self._channel(self._read_peer(message))


class SecureChannel:
    """An established channel: encrypt to the peer, decrypt from it, in order.

    Holds traffic keys, so it lives inside the enclave (see
    :class:`a402.tee.simulated.SimulatedEnclave`, which keeps it behind a handle).
    """

    __slots__ = (
        "_receive",
        "_receive_next",
        "_send",
        "_send_counter",
        "binding",
        "initiator",
        "peer",
    )

    def __init__(self, peer: VerifiedEnclave, binding: bytes, send: CipherState,
                 receive: CipherState, *, initiator: bool) -> None:
        self.peer = peer
        #: The final handshake hash: unique to this secure channel, known to both ends.
        self.binding = binding
        self.initiator = initiator
        self._send = send
        self._receive = receive
        self._send_counter = 0
        self._receive_next = 0

    def encrypt(self, plaintext: bytes, *, ad: bytes = b"") -> bytes:
        """Frame and encrypt one message; ``ad`` must be passed again to decrypt."""
        counter = self._send_counter
        try:
            ciphertext = self._send.encrypt_at(counter, ad, bytes(plaintext))
        except NoiseError as e:
            raise _channel_error(e) from None
        self._send_counter = counter + 1
        return counter.to_bytes(COUNTER_SIZE, "big") + ciphertext

    def decrypt(self, frame: bytes, *, ad: bytes = b"") -> bytes:
        """Authenticate and decrypt one frame; reject replays and reordering."""
        frame = bytes(frame)
        if len(frame) < COUNTER_SIZE + 16:
            raise ChannelError("malformed", "frame too short")
        counter = int.from_bytes(frame[:COUNTER_SIZE], "big")
        if counter < self._receive_next:
            raise ChannelError(
                "replay", f"frame {counter} is not after the last accepted frame"
            )
        try:
            plaintext = self._receive.decrypt_at(counter, ad, frame[COUNTER_SIZE:])
        except NoiseError as e:
            raise _channel_error(e) from None
        self._receive_next = counter + 1
        return plaintext

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"SecureChannel({role}, peer={self.peer.kind}, binding={self.binding.hex()[:16]}…)"


__all__ = [
    "ChannelIdentity",
    "Initiator",
    "Responder",
    "SecureChannel",
]
