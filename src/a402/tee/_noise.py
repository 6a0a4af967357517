"""The Noise ``XX`` handshake, ``Noise_XX_25519_ChaChaPoly_SHA256``, exactly as specified.

Noise (revision 34) is a framework for key exchange protocols with published
security analyses and test vectors; implementing one fixed pattern from it,
on pyca/cryptography's X25519, ChaCha20-Poly1305, SHA-256 and HKDF, is much
safer than designing a handshake. The test suite checks this module byte for
byte against the cacophony test vectors.

``XX``::

    -> e
    <- e, ee, s, es
    -> s, se

Noise's ``HKDF(ck, ikm)`` (two outputs) is RFC 5869 HKDF with ``salt = ck`` and
empty ``info``, which is what :func:`_hkdf2` computes with the library.

The static key is not an object here but a :class:`StaticKey`: something
that can report its public key and perform X25519 with it. Inside an enclave
that object wraps the attested key, which never leaves.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
#: Noise reserves nonce 2^64 - 1.
MAX_NONCE = (1 << 64) - 1


class NoiseError(Exception):
    """A handshake or cipher step failed; ``reason`` as in :class:`ChannelError`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StaticKey(Protocol):
    """A long-term X25519 key that performs DH without revealing itself."""

    @property
    def kx_public_key(self) -> bytes: ...

    def dh(self, peer_public_key: bytes) -> bytes: ...


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519(private_key: X25519PrivateKey, peer_public_key: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero output) is a handshake failure."""
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError:
        raise NoiseError("malformed", "invalid X25519 public key") from None


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    out = HKDF(algorithm=hashes.SHA256(), length=2 * HASHLEN, salt=chaining_key, info=b"").derive(
        ikm
    )
    return out[:HASHLEN], out[HASHLEN:]


#: Noise's ChaChaPoly nonce for counter ``n``: 4 zero bytes, then ``n`` as 8 little-endian
#: bytes (every caller has checked ``n < MAX_NONCE``).
_nonce = struct.Struct("<4xQ").pack


class CipherState:
    """A ChaCha20-Poly1305 key with Noise's 64-bit counter nonce."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt_at(self, n: int, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            raise NoiseError("malformed", "no key")
        if not 0 <= n < MAX_NONCE:
            raise NoiseError("exhausted", "nonce space exhausted")
        return self._aead.encrypt(_nonce(n), plaintext, ad)

    def decrypt_at(self, n: int, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            raise NoiseError("malformed", "no key")
        if not 0 <= n < MAX_NONCE:
            raise NoiseError("exhausted", "nonce space exhausted")
        try:
            return self._aead.decrypt(_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("decrypt_failed", "authentication failed") from None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        out = self.encrypt_at(self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        out = self.decrypt_at(self.n, ad, ciphertext)
        self.n += 1
        return out


class _SymmetricState:
    def __init__(self) -> None:
        self.h = PROTOCOL_NAME.ljust(HASHLEN, b"\x00")  # the name is exactly 32 bytes
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(key)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


Payload = bytes | Callable[[bytes], bytes]
"""A handshake payload, or a function of the handshake hash at the point the
payload is written (so the payload can commit to the transcript so far)."""


class XXHandshake:
    """One side of an ``XX`` handshake. Three messages; then :meth:`split`.

    Any failure is final: a handshake that failed once refuses further use,
    so a forged message cannot be retried against the same state.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static: StaticKey,
        prologue: bytes = b"",
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self.initiator = initiator
        self._static = static
        self._e = ephemeral or X25519PrivateKey.generate()
        self._re: bytes | None = None
        self.remote_static: bytes | None = None
        self._ss = _SymmetricState()
        self._ss.mix_hash(prologue)
        self._step = 0  # index of the next message: 0, 1, 2; 3 = complete
        self._failed = False

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h``; after completion it identifies this handshake."""
        return self._ss.h

    def _turn(self, writing: bool) -> int:
        if self._failed:
            raise NoiseError("out_of_order_call", "the handshake has failed")
        if self._step >= 3:
            raise NoiseError("out_of_order_call", "the handshake is complete")
        my_turn = (self._step % 2 == 0) == self.initiator
        if my_turn != writing:
            raise NoiseError("out_of_order_call", "not this side's turn")
        return self._step

    def write_message(self, payload: Payload = b"") -> bytes:
        step = self._turn(writing=True)
        try:
            out = self._write(step, payload)
        except BaseException:
            self._failed = True
            raise
        if len(out) > MAX_MESSAGE:
            self._failed = True
            raise NoiseError("malformed", "handshake message too long")
        self._step += 1
        return out

    def read_message(self, message: bytes) -> tuple[bytes, bytes]:
        """Process ``message``; return ``(payload, h)`` with ``h`` the handshake hash
        at the point the payload was written (what a transcript-bound payload binds)."""
        step = self._turn(writing=False)
        try:
            if len(message) > MAX_MESSAGE:
                raise NoiseError("malformed", "handshake message too long")
            result = self._read(step, bytes(message))
        except BaseException:
            self._failed = True
            raise
        self._step += 1
        return result

    def _payload(self, payload: Payload) -> bytes:
        data = payload(self._ss.h) if callable(payload) else payload
        return self._ss.encrypt_and_hash(data)

    def _write(self, step: int, payload: Payload) -> bytes:
        ss = self._ss
        e_pub = _public_bytes(self._e)
        if step == 0:  # -> e
            ss.mix_hash(e_pub)
            return e_pub + self._payload(payload)
        assert self._re is not None
        if step == 1:  # <- e, ee, s, es
            ss.mix_hash(e_pub)
            ss.mix_key(x25519(self._e, self._re))
            s = ss.encrypt_and_hash(self._static.kx_public_key)
            ss.mix_key(self._static.dh(self._re))
            return e_pub + s + self._payload(payload)
        # -> s, se
        s = ss.encrypt_and_hash(self._static.kx_public_key)
        ss.mix_key(self._static.dh(self._re))
        return s + self._payload(payload)

    def _read(self, step: int, message: bytes) -> tuple[bytes, bytes]:
        ss = self._ss
        if step == 0:  # -> e
            if len(message) < DHLEN:
                raise NoiseError("malformed", "truncated handshake message")
            self._re = message[:DHLEN]
            ss.mix_hash(self._re)
            h = ss.h
            return ss.decrypt_and_hash(message[DHLEN:]), h
        if step == 1:  # <- e, ee, s, es
            if len(message) < 2 * DHLEN + 2 * TAGLEN:
                raise NoiseError("malformed", "truncated handshake message")
            self._re = message[:DHLEN]
            ss.mix_hash(self._re)
            ss.mix_key(x25519(self._e, self._re))
            rs = ss.decrypt_and_hash(message[DHLEN : 2 * DHLEN + TAGLEN])
            ss.mix_key(x25519(self._e, rs))
            h = ss.h
            payload = ss.decrypt_and_hash(message[2 * DHLEN + TAGLEN :])
            self.remote_static = rs
            return payload, h
        # -> s, se
        if len(message) < DHLEN + 2 * TAGLEN:
            raise NoiseError("malformed", "truncated handshake message")
        assert self._re is not None
        rs = ss.decrypt_and_hash(message[: DHLEN + TAGLEN])
        ss.mix_key(x25519(self._e, rs))
        h = ss.h
        payload = ss.decrypt_and_hash(message[DHLEN + TAGLEN :])
        self.remote_static = rs
        return payload, h

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` cipher states for this side."""
        if not self.complete:
            raise NoiseError("out_of_order_call", "the handshake is not complete")
        c1, c2 = self._ss.split()
        return (c1, c2) if self.initiator else (c2, c1)
