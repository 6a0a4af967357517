"""Sealed persistence: enclave state leaves the enclave only encrypted and authenticated.

A vault's balances and keys must survive restarts, but the host that stores
them is untrusted (paper §2.7: the host cannot read or modify enclave memory
or "extract sealed secrets"). Sealing gives the host an opaque blob that only
the same enclave code on the same platform can open.

Construction (version 1):

* **Sealing key** ``= HKDF-SHA256(ikm = platform secret, salt = "A402/seal/v1",
  info = "A402/seal/v1/key" ‖ len ‖ purpose ‖ len ‖ measurement)``. A real TEE
  derives it in hardware from a fused secret and the enclave's identity (SGX
  ``EGETKEY`` with MRENCLAVE, SEV-SNP ``MSG_KEY_REQ`` with the measurement);
  the simulated backend derives it from a platform secret the operator keeps.
  Code with another measurement derives another key, so it cannot open the
  blob even if handed it. ``purpose`` separates key domains (the enclave's own
  identity vs. application state) so that one can never open the other.
* **Per-blob key** ``= HKDF-SHA256(ikm = sealing key, salt = 24 random bytes,
  info = "A402/seal/v1/blob")``, used for exactly one ChaCha20-Poly1305
  encryption under a zero nonce. A fresh key per blob removes the birthday
  bound that random 96-bit nonces would put on a vault sealing state at a high
  rate for months (2^32 seals per key).
* **Associated data** ``= header ‖ len ‖ measurement ‖ len ‖ label``: a blob
  sealed under one label (``"channel/42"``) does not open under another, so the
  host cannot swap one channel's state for another's.
* **Wire format** ``"A4S" ‖ version (1) ‖ salt (24) ‖ ciphertext ‖ tag (16)``.

**Rollback is not prevented.** Sealing proves a blob was made by this enclave
for this label; it cannot prove the blob is the *latest* one. A host can hand
back an older sealed state (for a vault: an earlier, higher client balance).
Real deployments need a monotonic counter (SGX monotonic counters are
deprecated; TPM NV counters, a replicated counter across vault replicas, or
on-chain checkpoints serve); that is out of scope for the simulation. The A402
design bounds the damage on-chain: a stale channel state can be challenged in
the dispute window (paper §2.4, watchtower), but an enclave restored from a
stale blob would still act on it until caught. Applications should keep a
version number inside the sealed state and compare it with any external
evidence they have.

Everything here is pure; :mod:`a402.tee.storage` writes blobs to files.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import SealingError

VERSION = 1
MAGIC = b"A4S"
HEADER = MAGIC + bytes([VERSION])
SALT_SIZE = 24
TAG_SIZE = 16
MIN_SECRET_SIZE = 32
MAX_LABEL_SIZE = 255
_ZERO_NONCE = bytes(12)
_KEY_SALT = b"A402/seal/v1"
_KEY_INFO = b"A402/seal/v1/key"
_BLOB_INFO = b"A402/seal/v1/blob"


def _lp(data: bytes) -> bytes:
    """Length-prefix (2 bytes) so that concatenated fields cannot be re-split."""
    return len(data).to_bytes(2, "big") + data


def _label_bytes(label: str) -> bytes:
    if not isinstance(label, str) or not label or not label.isprintable():
        raise SealingError("bad_label", "a label is a non-empty printable string")
    encoded = label.encode()
    if len(encoded) > MAX_LABEL_SIZE:
        raise SealingError("bad_label", f"a label is at most {MAX_LABEL_SIZE} bytes")
    return encoded


class SealingKey:
    """A sealing key bound to one measurement and purpose. ``repr`` never shows the key.

    Lives inside the enclave; the host only ever sees what :meth:`seal` returns.
    """

    __slots__ = ("_key", "measurement", "purpose")

    def __init__(self, key: bytes, measurement: bytes, purpose: str) -> None:
        self._key = key
        self.measurement = measurement
        self.purpose = purpose

    def _associated_data(self, label: str) -> bytes:
        return HEADER + _lp(self.measurement) + _lp(_label_bytes(label))

    def _aead(self, salt: bytes) -> ChaCha20Poly1305:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_BLOB_INFO).derive(
            self._key
        )
        return ChaCha20Poly1305(key)

    def seal(self, label: str, plaintext: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` for this enclave under ``label``."""
        ad = self._associated_data(label)
        salt = secrets.token_bytes(SALT_SIZE)
        return HEADER + salt + self._aead(salt).encrypt(_ZERO_NONCE, bytes(plaintext), ad)

    def unseal(self, label: str, blob: bytes) -> bytes:
        """Open a blob made by :meth:`seal` with the same key and label, or raise."""
        ad = self._associated_data(label)
        blob = bytes(blob)
        if len(blob) < len(HEADER) + SALT_SIZE + TAG_SIZE or blob[:3] != MAGIC:
            raise SealingError("malformed", "not a sealed blob")
        if blob[3] != VERSION:
            raise SealingError("unsupported_version", f"sealed blob version {blob[3]}")
        salt = blob[len(HEADER) : len(HEADER) + SALT_SIZE]
        try:
            return self._aead(salt).decrypt(_ZERO_NONCE, blob[len(HEADER) + SALT_SIZE :], ad)
        except InvalidTag:
            raise SealingError(
                "open_failed", "wrong enclave, wrong label, or the blob was modified"
            ) from None

    def __repr__(self) -> str:
        return f"SealingKey(purpose={self.purpose!r}, measurement={self.measurement.hex()})"


def derive_sealing_key(platform_secret: bytes, measurement: bytes, purpose: str) -> SealingKey:
    """The sealing key for code ``measurement`` on the platform holding ``platform_secret``."""
    if not isinstance(platform_secret, bytes) or len(platform_secret) < MIN_SECRET_SIZE:
        raise ValueError(f"the platform secret must be at least {MIN_SECRET_SIZE} bytes")
    if not measurement:
        raise ValueError("a measurement is required")
    info = _KEY_INFO + _lp(purpose.encode()) + _lp(measurement)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_KEY_SALT, info=info).derive(
        platform_secret
    )
    return SealingKey(key, measurement, purpose)
