"""Result sealing: the paid result, encrypted under a key derived from ``t``.

The provider seals the result under ``t`` before it is paid; whoever learns
``t`` (the vault, from the off-chain reveal or by extracting it from the
on-chain signature) can open it. Revealing ``t`` is how the provider gets
paid, so getting paid and delivering the result are the same act.

Construction (version 1):

* key ``= HKDF-SHA256(ikm = t, salt = none, info = "A402/result-key/v1")``;
  HKDF keeps the AEAD key independent of ``t``'s other use as a signature
  scalar.
* AEAD: ChaCha20-Poly1305 (constant-time in software on any CPU, so it needs
  no AES-NI inside an enclave), 96-bit random nonce. ``t`` is fresh per
  request, but the nonce is random anyway so that sealing twice under one ``t``
  by mistake does not repeat a nonce.
* associated data ``= "A402/EncRes/v1" ‖ channelId (32 bytes) ‖ requestId
  (uint256)``: a sealed result opens only for the request it was made for, so
  it cannot be replayed into another request or channel.
* wire encoding of :class:`EncRes`: ``0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from a402.evm.keccak import keccak256

from ._secp import N, b32, ct_equal, int_from
from .errors import SealError

VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
_KEY_INFO = b"A402/result-key/v1"
_AD_PREFIX = b"A402/EncRes/v1"


@dataclass(frozen=True, slots=True)
class ResultContext:
    """The request a sealed result belongs to: ``(channel id, request id)``."""

    channel_id: bytes
    request_id: int

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32:
            raise ValueError("channel id must be 32 bytes")
        if not 0 <= self.request_id < 1 << 256:
            raise ValueError("request id must fit in uint256")

    def associated_data(self) -> bytes:
        return _AD_PREFIX + self.channel_id + b32(self.request_id)


@dataclass(frozen=True, slots=True)
class EncRes:
    """A sealed result: AEAD nonce and ciphertext (with tag)."""

    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return bytes([VERSION]) + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> EncRes:
        if len(data) < 1 + NONCE_SIZE + TAG_SIZE or data[0] != VERSION:
            raise SealError("not a version-1 sealed result")
        return cls(bytes(data[1 : 1 + NONCE_SIZE]), bytes(data[1 + NONCE_SIZE :]))


def _aead(t: bytes) -> ChaCha20Poly1305:
    if len(t) != 32 or not 0 < int_from(t) < N:
        raise SealError("the sealing secret t must be a 32-byte scalar in [1, N)")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(t)
    return ChaCha20Poly1305(key)


def seal(t: bytes, result: bytes, context: ResultContext) -> EncRes:
    """Encrypt ``result`` under ``t`` for the request ``context``."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return EncRes(nonce, _aead(t).encrypt(nonce, result, context.associated_data()))


def open(  # the protocol's name for the operation (shadows the builtin only in this module)
    t: bytes,
    sealed: EncRes | bytes,
    context: ResultContext,
    *,
    expected_hash: bytes | None = None,
) -> bytes:
    """Decrypt a sealed result; raise :class:`SealError` on any mismatch.

    Pass ``expected_hash`` (the ``H(result)`` committed in the payment
    message) to also check that the provider sealed the result it was paid
    for; the vault should always do so.
    """
    if isinstance(sealed, bytes | bytearray):
        sealed = EncRes.from_bytes(bytes(sealed))
    if len(sealed.nonce) != NONCE_SIZE:
        raise SealError("malformed nonce")
    try:
        result = _aead(t).decrypt(sealed.nonce, sealed.ciphertext, context.associated_data())
    except InvalidTag:
        raise SealError("sealed result does not open under this key and context") from None
    if expected_hash is not None and not ct_equal(keccak256(result), expected_hash):
        raise SealError("the opened result does not match the committed result hash")
    return result
