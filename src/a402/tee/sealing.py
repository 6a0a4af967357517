"""Sealed persistence: enclave state leaves the enclave only encrypted and authenticated.

A vault's balances and keys must survive restarts, but the host that stores
them is untrusted (paper §2.7: the host cannot read or modify enclave memory
or "extract sealed secrets"). Sealing gives the host an opaque blob that only
the same enclave code on the same platform can open.

Construction (version 2; version 1 blobs still open, see below):

* **Sealing key** ``= HKDF-SHA256(ikm = platform secret, salt = "A402/seal/v1",
  info = "A402/seal/v1/key" ‖ len ‖ purpose ‖ len ‖ measurement)``. A real TEE
  derives it in hardware from a fused secret and the enclave's identity (SGX
  ``EGETKEY`` with MRENCLAVE, SEV-SNP ``MSG_KEY_REQ`` with the measurement);
  the simulated backend derives it from a platform secret the operator keeps.
  Code with another measurement derives another key, so it cannot open the
  blob even if handed it. ``purpose`` separates key domains (the enclave's own
  identity vs. application state) so that one can never open the other.
* **Epoch key** ``= HKDF-SHA256(ikm = sealing key, salt = 24 random bytes,
  info = "A402/seal/v2/epoch")``, drawn the first time a process seals under the
  key, again after :data:`EPOCH_BLOBS` blobs, and again in a child after a
  ``fork`` (so parent and child never share an epoch; the child also gets a new lock
  per key, in case another thread held one at the fork). Each blob of an epoch is
  one ChaCha20-Poly1305 encryption under that key with a 96-bit **counter**
  nonce (1, 2, ...), never repeated within the epoch: nonces are unique by
  construction, not by chance, so no birthday bound applies however many blobs
  the enclave seals, and two epochs share a key only if two random 192-bit salts
  collide. This assumes the enclave's memory is never restored from a snapshot (the
  threat model: the host cannot read or modify enclave memory; SGX and Nitro offer no
  such restore): a restored copy would repeat the epoch's counter under its key (the
  XOR of two plaintexts, and Poly1305 forgeries). A platform that can restore one must
  draw a new epoch on resume (version 1 fared no better if the snapshot holds the
  RNG's state: its per-blob salts would repeat). (Version 1 derived a key per blob,
  an HKDF and a cipher set-up costing about three times the encryption of a channel's
  record; the paid path seals several per request.)
* **Associated data** ``= header ‖ len ‖ measurement ‖ len ‖ label``: a blob
  sealed under one label (``"channel/42"``) does not open under another, so the
  host cannot swap one channel's state for another's; the header holds the
  version, so a blob cannot be re-read under another construction.
* **Wire format** ``"A4S" ‖ version (2) ‖ epoch salt (24) ‖ nonce (12) ‖
  ciphertext ‖ tag (16)``.

Version 1 (``"A4S" ‖ 1 ‖ salt (24) ‖ ciphertext ‖ tag``, a key per blob: HKDF of
the sealing key with the blob's salt and info ``"A402/seal/v1/blob"``, zero
nonce) is what earlier code sealed; :meth:`SealingKey.unseal` still opens it, so
stores written before keep restoring, and their next write is version 2. Any
other version is refused (``unsupported_version``).

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

import itertools
import os
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import SealingError

VERSION = 2
#: The version earlier code sealed (a key per blob); still opened.
VERSION_1 = 1
MAGIC = b"A4S"
HEADER = MAGIC + bytes([VERSION])
HEADER_V1 = MAGIC + bytes([VERSION_1])
SALT_SIZE = 24
NONCE_SIZE = 12
TAG_SIZE = 16
MIN_SECRET_SIZE = 32
MAX_LABEL_SIZE = 255
#: Blobs sealed under one epoch key before another is drawn (far below the 2^96 nonces).
EPOCH_BLOBS = 1 << 32
_ZERO_NONCE = bytes(12)
_KEY_SALT = b"A402/seal/v1"
_KEY_INFO = b"A402/seal/v1/key"
_BLOB_INFO = b"A402/seal/v1/blob"
_EPOCH_INFO = b"A402/seal/v2/epoch"
#: How many epochs' ciphers :meth:`SealingKey.unseal` keeps (a restart's blobs span a few).
_OPENED_EPOCHS = 64
#: How many labels' associated data :meth:`SealingKey.seal` keeps made (a label per channel,
#: sealed at every step of its requests); all are dropped when there are more.
_LABELS_KEPT = 4096

#: One more in every child process after a ``fork``: an epoch drawn in another generation
#: is never used again (parent and child must not share a counter under one key).
_generation = 0


#: Every key alive, so that a forked child can give each a lock of its own.
_keys: weakref.WeakSet[SealingKey] = weakref.WeakSet()


def _forked() -> None:
    """In a child after ``fork`` (one thread, the forking one): a new generation, and a
    new lock for every key, since a thread of the parent that held one at the fork does
    not exist here to release it (the child would wait on it for ever)."""
    global _generation
    _generation += 1
    for key in list(_keys):
        key._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


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

    __slots__ = ("__weakref__", "_ads", "_epoch", "_key", "_lock", "_opened", "measurement",
                 "purpose")

    def __init__(self, key: bytes, measurement: bytes, purpose: str) -> None:
        self._key = key
        self.measurement = measurement
        self.purpose = purpose
        #: (generation, salt, cipher, counter) of the epoch this process seals under.
        self._epoch: tuple[int, bytes, ChaCha20Poly1305, Iterator[int]] | None = None
        self._lock = threading.Lock()
        #: Ciphers of epochs recently opened, by salt (their blobs come in runs).
        self._opened: OrderedDict[bytes, ChaCha20Poly1305] = OrderedDict()
        #: The associated data of version 2 blobs, by label (:meth:`_associated_data`).
        self._ads: dict[str, bytes] = {}
        _keys.add(self)

    def _associated_data(self, header: bytes, label: str) -> bytes:
        return header + _lp(self.measurement) + _lp(_label_bytes(label))

    def _cipher(self, salt: bytes, info: bytes) -> ChaCha20Poly1305:
        """The cipher of a key derived from the sealing key: an epoch's (``_EPOCH_INFO``) or,
        version 1, one blob's (``_BLOB_INFO``)."""
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(
            self._key
        )
        return ChaCha20Poly1305(key)

    def _next_nonce(self) -> tuple[bytes, ChaCha20Poly1305, bytes]:
        """The current epoch's salt and cipher and a nonce never used under them."""
        epoch = self._epoch
        if epoch is not None and epoch[0] == _generation:
            n = next(epoch[3])  # (atomic: a C iterator, under the GIL)
            if n < EPOCH_BLOBS:
                return epoch[1], epoch[2], n.to_bytes(NONCE_SIZE, "big")
        with self._lock:
            epoch = self._epoch
            if epoch is None or epoch[0] != _generation or next(epoch[3]) >= EPOCH_BLOBS:
                salt = secrets.token_bytes(SALT_SIZE)
                epoch = self._epoch = (_generation, salt, self._cipher(salt, _EPOCH_INFO),
                                       itertools.count(1))
            n = next(epoch[3])
            return epoch[1], epoch[2], n.to_bytes(NONCE_SIZE, "big")

    def seal(self, label: str, plaintext: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` for this enclave under ``label``."""
        ad = self._ads.get(label) if type(label) is str else None
        if ad is None:
            ad = self._associated_data(HEADER, label)  # (checks the label)
            ads = self._ads
            if len(ads) >= _LABELS_KEPT:
                ads.clear()
            ads[label] = ad
        salt, cipher, nonce = self._next_nonce()
        return HEADER + salt + nonce + cipher.encrypt(nonce, bytes(plaintext), ad)

    def unseal(self, label: str, blob: bytes) -> bytes:
        """Open a blob made by :meth:`seal` (either version) with the same key and label,
        or raise. Whatever the host hands back is refused with a reason, never trusted:
        anything but bytes (``bytes(n)`` of an integer would allocate ``n`` bytes), a cut
        or unknown format, or a blob that does not open."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise SealingError("malformed", f"a sealed blob is bytes, not {type(blob).__name__}")
        blob = bytes(blob)
        if len(blob) < len(HEADER) + SALT_SIZE + TAG_SIZE or blob[:3] != MAGIC:
            raise SealingError("malformed", "not a sealed blob")
        version = blob[3]
        salt = blob[len(HEADER) : len(HEADER) + SALT_SIZE]
        try:
            if version == VERSION:
                if len(blob) < len(HEADER) + SALT_SIZE + NONCE_SIZE + TAG_SIZE:
                    raise SealingError("malformed", "not a sealed blob")
                at = len(HEADER) + SALT_SIZE
                return self._opener(salt).decrypt(
                    blob[at : at + NONCE_SIZE], blob[at + NONCE_SIZE :],
                    self._associated_data(HEADER, label))
            if version == VERSION_1:
                return self._cipher(salt, _BLOB_INFO).decrypt(
                    _ZERO_NONCE, blob[len(HEADER) + SALT_SIZE :],
                    self._associated_data(HEADER_V1, label))
        except InvalidTag:
            raise SealingError(
                "open_failed", "wrong enclave, wrong label, or the blob was modified"
            ) from None
        raise SealingError("unsupported_version", f"sealed blob version {version}")

    def _opener(self, salt: bytes) -> ChaCha20Poly1305:
        with self._lock:
            cipher = self._opened.get(salt)
            if cipher is not None:
                self._opened.move_to_end(salt)
                return cipher
        cipher = self._cipher(salt, _EPOCH_INFO)
        with self._lock:
            self._opened[salt] = cipher
            while len(self._opened) > _OPENED_EPOCHS:
                self._opened.popitem(last=False)
        return cipher

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
