"""Attestation: what an enclave proves about itself, and the policy a verifier applies.

An A402 party trusts a peer enclave for what its code does (paper §2.4, TEE
registration ``(pk, h_code, att)``): the provider's adaptor pre-signatures are
only worth paying for if attested code made them, and the vault holds client
balances only inside attested code. Evidence therefore has to bind three things:

* the **code measurement** (a SHA-384, PCR-like digest of the enclave image);
* the enclave's **long-term public keys**: a secp256k1 signing key (the
  provider's Schnorr/adaptor key, the vault's ECDSA key; 33-byte compressed)
  and an X25519 key-agreement key (32 bytes) that authenticates the secure
  channel (:mod:`a402.tee.channel`);
* **freshness**: a verifier-chosen nonce and the time of attestation.

Backends produce evidence in their own format (a :class:`Quote` signed by a
simulation root, an AWS Nitro attestation document, …). Each
:class:`AttestationVerifier` turns evidence into the same
:class:`VerifiedEnclave`, then applies one shared :class:`AttestationPolicy`
(:meth:`AttestationPolicy.check`), so callers never branch on the backend.

Everything here is pure: time is passed in, never read.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from coincurve import PublicKey

from a402.evm.ecdsa import OPENZEPPELIN, public_key_address, recover_address

from . import _cbor
from .errors import AttestationError

#: Backend kinds. A verifier handles exactly one kind.
SIMULATED = "simulated"
AWS_NITRO = "aws-nitro"

SIGNING_KEY_SIZE = 33
KX_KEY_SIZE = 32
MAX_NONCE_SIZE = 512
MAX_USER_DATA_SIZE = 512
#: Measurements are digests; SHA-384 (48 bytes) is what Nitro and SEV-SNP use.
MEASUREMENT_SIZES = (32, 48, 64)
QUOTE_VERSION = 1
_MAX_QUOTE_SIZE = 2048
_QUOTE_FIELDS = frozenset(
    {"version", "kind", "measurement", "signing_key", "kx_key", "nonce", "timestamp_ms",
     "user_data"}
)


def check_signing_key(key: bytes) -> None:
    """Raise :class:`ValueError` unless ``key`` is a compressed secp256k1 point on the curve."""
    if not isinstance(key, bytes) or len(key) != SIGNING_KEY_SIZE or key[0] not in (2, 3):
        raise ValueError("signing key must be a 33-byte compressed secp256k1 point")
    try:
        PublicKey(key)
    except ValueError:
        raise ValueError("signing key is not a point on secp256k1") from None


def _check_bytes(name: str, value: object, *, sizes: Iterable[int] | None = None,
                 max_size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{name} must be bytes")
    if sizes is not None and len(value) not in tuple(sizes):
        raise ValueError(f"{name} has length {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise ValueError(f"{name} is longer than {max_size} bytes")


@dataclass(frozen=True, slots=True)
class Quote:
    """The statement a simulated enclave makes about itself (signed by the simulation root).

    Canonical encoding (:meth:`to_bytes`): a canonical CBOR map with exactly the
    field names below, so the signed bytes have a single interpretation.
    """

    kind: str
    measurement: bytes
    signing_key: bytes
    kx_key: bytes
    nonce: bytes
    timestamp_ms: int
    user_data: bytes = b""
    version: int = QUOTE_VERSION

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version != QUOTE_VERSION:
            raise ValueError(f"unsupported quote version {self.version!r}")
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("kind must be a non-empty string")
        _check_bytes("measurement", self.measurement, sizes=MEASUREMENT_SIZES)
        check_signing_key(self.signing_key)
        _check_bytes("kx_key", self.kx_key, sizes=(KX_KEY_SIZE,))
        _check_bytes("nonce", self.nonce, max_size=MAX_NONCE_SIZE)
        _check_bytes("user_data", self.user_data, max_size=MAX_USER_DATA_SIZE)
        if (not isinstance(self.timestamp_ms, int) or isinstance(self.timestamp_ms, bool)
                or not 0 <= self.timestamp_ms < 1 << 63):
            raise ValueError("timestamp_ms must be a non-negative integer")

    def to_bytes(self) -> bytes:
        return _cbor.encode({
            "version": self.version,
            "kind": self.kind,
            "measurement": self.measurement,
            "signing_key": self.signing_key,
            "kx_key": self.kx_key,
            "nonce": self.nonce,
            "timestamp_ms": self.timestamp_ms,
            "user_data": self.user_data,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse a canonical quote; :class:`ValueError` if it is anything else."""
        item = _cbor.decode_canonical(data, max_size=_MAX_QUOTE_SIZE)
        if not isinstance(item, dict) or set(item) != _QUOTE_FIELDS:
            raise ValueError("a quote is a map with exactly the quote fields")
        return cls(**item)


@dataclass(frozen=True, slots=True)
class VerifiedEnclave:
    """A peer enclave whose evidence verified: what it runs and which keys it holds.

    ``measurement`` is the code identity policies pin (for Nitro, PCR0, the
    enclave image); ``pcrs`` holds every measurement register the evidence
    reported (the simulated backend reports ``{0: measurement}``).
    """

    kind: str
    measurement: bytes
    signing_key: bytes
    kx_key: bytes
    timestamp_ms: int
    nonce: bytes = b""
    user_data: bytes = b""
    pcrs: Mapping[int, bytes] = field(default_factory=dict, hash=False)
    module_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcrs", MappingProxyType(dict(self.pcrs)))

    @property
    def address(self) -> bytes:
        """The 20-byte Ethereum address of the attested signing key."""
        return public_key_address(PublicKey(self.signing_key))

    def verify_digest_signature(self, digest: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (65-byte ``r ‖ s ‖ v``) over ``digest`` is by the attested key.

        This checks signatures made by the enclave's code (:meth:`EnclaveKernel.sign`).
        """
        signer = recover_address(digest, signature, policy=OPENZEPPELIN)
        return signer is not None and hmac.compare_digest(signer, self.address)


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    """What a verifier requires of a peer beyond "genuine evidence".

    ``measurements`` must be non-empty: accepting any code would make
    attestation meaningless, so there is deliberately no wildcard. ``pcrs``
    pins further registers (Nitro PCR1/PCR2/PCR8 …). ``nonce``, when set, must
    equal the evidence's nonce (the channel handshake sets it to the
    transcript hash). Evidence older than ``max_age_s`` is ``stale``; evidence
    from more than ``max_clock_skew_s`` in the future is rejected too.
    """

    measurements: frozenset[bytes]
    pcrs: Mapping[int, bytes] = field(default_factory=dict, hash=False)
    max_age_s: float = 300.0
    max_clock_skew_s: float = 30.0
    nonce: bytes | None = None

    def __post_init__(self) -> None:
        measurements = frozenset(self.measurements)
        if not measurements:
            raise ValueError("an attestation policy must name at least one measurement")
        for m in measurements:
            _check_bytes("measurement", m, sizes=MEASUREMENT_SIZES)
        object.__setattr__(self, "measurements", measurements)
        object.__setattr__(self, "pcrs", MappingProxyType(dict(self.pcrs)))
        if self.max_age_s <= 0 or self.max_clock_skew_s < 0:
            raise ValueError("max_age_s must be positive and max_clock_skew_s non-negative")

    def with_nonce(self, nonce: bytes) -> AttestationPolicy:
        return replace(self, nonce=nonce)

    def check(self, enclave: VerifiedEnclave, now: float) -> None:
        """Raise :class:`AttestationError` unless ``enclave`` satisfies this policy at ``now``.

        ``now`` is Unix time in seconds.
        """
        if not any(hmac.compare_digest(enclave.measurement, m) for m in self.measurements):
            raise AttestationError(
                "measurement_mismatch", f"measurement {enclave.measurement.hex()} is not allowed"
            )
        for index, expected in self.pcrs.items():
            actual = enclave.pcrs.get(index)
            if actual is None or not hmac.compare_digest(actual, expected):
                raise AttestationError("pcr_mismatch", f"PCR{index} does not match the policy")
        age_s = now - enclave.timestamp_ms / 1000
        if age_s > self.max_age_s:
            raise AttestationError("stale", f"evidence is {age_s:.0f} s old")
        if -age_s > self.max_clock_skew_s:
            raise AttestationError("future_timestamp", f"evidence is {-age_s:.0f} s in the future")
        if self.nonce is not None and not hmac.compare_digest(enclave.nonce, self.nonce):
            raise AttestationError("nonce_mismatch", "evidence was made for another nonce")


@runtime_checkable
class AttestationVerifier(Protocol):
    """Turns one backend's evidence into a :class:`VerifiedEnclave`, or raises.

    Implementations verify the evidence's own authenticity (signature, chain),
    map it to a :class:`VerifiedEnclave`, then call ``policy.check``.
    ``now`` (Unix seconds) defaults to the current time.
    """

    @property
    def kind(self) -> str: ...

    def verify(
        self, evidence: bytes, policy: AttestationPolicy, *, now: float | None = None
    ) -> VerifiedEnclave: ...
