"""Verifier for AWS Nitro Enclaves attestation documents.

A Nitro enclave asks its Nitro Secure Module (NSM) for an attestation
document: a COSE_Sign1 structure (RFC 9052; CBOR tag 18 or untagged)::

    [protected: bstr .cbor {1: -35 (ES384)}, unprotected: {}, payload: bstr, signature: bstr]

signed with ECDSA P-384 / SHA-384 over the ``Sig_structure``
``["Signature1", protected, external_aad = b"", payload]``. The payload is a
CBOR map: ``module_id``, ``digest`` (``"SHA384"``), ``timestamp`` (ms),
``pcrs`` (index → 32/48/64 bytes), ``certificate`` (the signing leaf, DER),
``cabundle`` (DER, root first), and optional ``public_key``, ``user_data``,
``nonce``. The leaf is issued through a chain of short-lived AWS
intermediates to the AWS Nitro root. AWS publishes the root (a P-384
certificate, SHA-256 fingerprint :data:`AWS_NITRO_ROOT_G1_SHA256`); it cannot
be fetched where a402 is built, so it is always a parameter here.

Verification (:func:`verify_document`), every failure an
:class:`AttestationError` with a reason:

1. size, COSE structure, ES384 in the protected header → ``bad_cose``;
2. payload fields and types (AWS's "syntactical validation") → ``bad_document``;
3. certificates parse; the leaf key is P-384 → ``bad_certificate``;
4. the COSE signature verifies with the leaf key → ``bad_signature``;
5. every certificate is valid at the document's timestamp →
   ``expired_certificate`` / ``certificate_not_yet_valid``;
6. the chain builds from the leaf through ``cabundle`` to the configured root
   with RFC 5280 path validation (pyca/cryptography's verifier: signatures,
   names, basic constraints and path length, CA key usage; the leaf must be
   an end entity allowed to sign) → ``bad_chain``.

:class:`NitroVerifier` then maps the document to a :class:`VerifiedEnclave`
(measurement = PCR0, the enclave image) and applies the shared policy (PCRs,
age, nonce). Debug-mode enclaves report all-zero PCRs and let the parent
instance read their memory, so they are refused (``debug_enclave``) unless
explicitly allowed.

**Key binding.** An a402 enclave puts its X25519 key-agreement key (32 raw
bytes) in ``public_key`` and its secp256k1 signing key in ``user_data``, as
the canonical CBOR map ``{"a402": 1, "signing_key": 33 bytes, "data": bytes}``
(:func:`encode_user_data`), ``data`` being application user data. Both fields
are covered by the NSM's signature.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from . import _cbor
from .errors import AttestationError
from .quote import (
    AWS_NITRO,
    KX_KEY_SIZE,
    AttestationPolicy,
    VerifiedEnclave,
    check_signing_key,
)

#: SHA-256 fingerprint of the AWS Nitro Enclaves root certificate (G1), as AWS
#: publishes it; check the root you configure against it.
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

MAX_DOCUMENT_SIZE = 32 * 1024
MAX_CHAIN_DEPTH = 8
COSE_SIGN1_TAG = 0xD2  # major type 6 (tag), value 18, in one byte
ES384 = -35
_SIGNATURE_SIZE = 96
_PCR_SIZES = (32, 48, 64)
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")
_USER_DATA_VERSION = 1


@dataclass(frozen=True, slots=True)
class NitroDocument:
    """A Nitro attestation document whose signature and chain verified."""

    module_id: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes] = field(hash=False)
    certificate: x509.Certificate
    cabundle: tuple[x509.Certificate, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcrs", MappingProxyType(dict(self.pcrs)))


def _bad(reason: str, detail: str) -> AttestationError:
    return AttestationError(reason, detail)


def _parse_cose(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``(protected, payload, signature)`` of a COSE_Sign1 with ES384."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise _bad("bad_cose", "empty document")
    data = bytes(data)
    if data[0] == COSE_SIGN1_TAG:
        data = data[1:]
    try:
        item = _cbor.decode(data, max_size=MAX_DOCUMENT_SIZE)
    except ValueError as e:
        raise _bad("bad_cose", str(e)) from None
    if not isinstance(item, list) or len(item) != 4:
        raise _bad("bad_cose", "COSE_Sign1 is a four-element array")
    protected, unprotected, payload, signature = item
    if not (isinstance(protected, bytes) and isinstance(unprotected, dict)
            and isinstance(payload, bytes) and isinstance(signature, bytes)):
        raise _bad("bad_cose", "COSE_Sign1 element types")
    try:
        header = _cbor.decode(protected, max_size=64)
    except ValueError as e:
        raise _bad("bad_cose", f"protected header: {e}") from None
    if header != {1: ES384}:
        raise _bad("bad_cose", "the protected header must be exactly {1: -35 (ES384)}")
    if unprotected:
        raise _bad("bad_cose", "the unprotected header must be empty")
    return protected, payload, signature


def _bytes_field(payload: dict[str, Any], name: str, *, low: int, high: int) -> bytes | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        raise _bad("bad_document", f"{name} must be {low}..{high} bytes")
    return value


def _parse_payload(payload_bytes: bytes) -> dict[str, Any]:
    try:
        payload = _cbor.decode(payload_bytes, max_size=MAX_DOCUMENT_SIZE)
    except ValueError as e:
        raise _bad("bad_document", str(e)) from None
    if not isinstance(payload, dict):
        raise _bad("bad_document", "the payload is a map")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise _bad("bad_document", f"missing fields: {', '.join(missing)}")
    unknown = set(payload) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise _bad("bad_document", f"unknown fields: {sorted(map(str, unknown))}")
    if not isinstance(payload["module_id"], str) or not payload["module_id"]:
        raise _bad("bad_document", "module_id must be a non-empty string")
    if payload["digest"] != "SHA384":
        raise _bad("bad_document", "digest must be SHA384")
    timestamp = payload["timestamp"]
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 < timestamp < 1 << 63:
        raise _bad("bad_document", "timestamp must be a positive integer (ms)")
    pcrs = payload["pcrs"]
    if not isinstance(pcrs, dict) or not 1 <= len(pcrs) <= 32:
        raise _bad("bad_document", "pcrs must map 1..32 indices")
    for index, value in pcrs.items():
        if (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 32
                or not isinstance(value, bytes) or len(value) not in _PCR_SIZES):
            raise _bad("bad_document", "a PCR is an index 0..31 and 32, 48 or 64 bytes")
    certificate = payload["certificate"]
    if not isinstance(certificate, bytes) or not 1 <= len(certificate) <= 1024:
        raise _bad("bad_document", "certificate must be 1..1024 bytes of DER")
    cabundle = payload["cabundle"]
    if (not isinstance(cabundle, list) or not 1 <= len(cabundle) <= MAX_CHAIN_DEPTH
            or not all(isinstance(c, bytes) and 1 <= len(c) <= 1024 for c in cabundle)):
        raise _bad("bad_document", "cabundle must list 1..8 DER certificates")
    _bytes_field(payload, "public_key", low=1, high=1024)
    _bytes_field(payload, "user_data", low=0, high=512)
    _bytes_field(payload, "nonce", low=0, high=512)
    return payload


def _certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm):
        raise _bad("bad_certificate", f"{what} is not a DER certificate") from None


def _leaf_must_sign(_policy: object, _cert: object, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("the signing certificate's key usage must allow digitalSignature")


def _leaf_is_end_entity(_policy: object, _cert: object, constraints: x509.BasicConstraints) -> None:
    if constraints.ca:
        raise ValueError("the signing certificate must not be a CA")


# The leaf is neither a TLS client nor server certificate (no SAN, no EKU, no
# authority key identifier in AWS's leaves), so its profile is spelled out:
# it must be an end entity whose key may sign. CAs keep the Web PKI CA profile.
_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_is_end_entity)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_must_sign)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


def _check_validity(certificates: list[x509.Certificate], at: datetime) -> None:
    for cert in certificates:
        if at > cert.not_valid_after_utc:
            raise _bad("expired_certificate",
                       f"{cert.subject.rfc4514_string()} expired {cert.not_valid_after_utc}")
        if at < cert.not_valid_before_utc:
            raise _bad("certificate_not_yet_valid",
                       f"{cert.subject.rfc4514_string()} is valid from {cert.not_valid_before_utc}")


def verify_document(data: bytes, root: x509.Certificate) -> NitroDocument:
    """Verify a Nitro attestation document's structure, signature and chain to ``root``.

    This proves the document came from a Nitro enclave on AWS hardware, at
    its timestamp. It does not check freshness, PCRs or keys: that is
    :class:`NitroVerifier`'s job.
    """
    protected, payload_bytes, signature = _parse_cose(data)
    payload = _parse_payload(payload_bytes)
    leaf = _certificate(payload["certificate"], "certificate")
    bundle = [_certificate(der, "a cabundle entry") for der in payload["cabundle"]]
    try:
        leaf_key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise _bad("bad_certificate", "the signing certificate's key does not parse") from None
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or leaf_key.curve.name != "secp384r1":
        raise _bad("bad_certificate", "the signing certificate must hold a P-384 key")

    if len(signature) != _SIGNATURE_SIZE:
        raise _bad("bad_signature", "an ES384 signature is 96 bytes")
    sig_structure = _cbor.encode(["Signature1", protected, b"", payload_bytes])
    der_signature = encode_dss_signature(
        int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    )
    try:
        leaf_key.verify(der_signature, sig_structure, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise _bad("bad_signature", "the COSE signature does not verify") from None

    at = datetime.fromtimestamp(payload["timestamp"] / 1000, UTC)
    try:
        _check_validity([leaf, *bundle], at)
    except ValueError as e:
        if isinstance(e, AttestationError):
            raise
        raise _bad("bad_certificate", f"unreadable certificate field: {e}") from None
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, bundle)
    except (VerificationError, ValueError, UnsupportedAlgorithm) as e:
        # Anything the path validator cannot accept fails closed as a chain error.
        raise _bad("bad_chain", str(e)) from None

    return NitroDocument(
        module_id=payload["module_id"],
        timestamp_ms=payload["timestamp"],
        pcrs=payload["pcrs"],
        certificate=leaf,
        cabundle=tuple(bundle),
        public_key=payload.get("public_key"),
        user_data=payload.get("user_data"),
        nonce=payload.get("nonce"),
    )


def encode_user_data(signing_key: bytes, data: bytes = b"") -> bytes:
    """The ``user_data`` an a402 Nitro enclave asks the NSM to sign."""
    check_signing_key(signing_key)
    return _cbor.encode({"a402": _USER_DATA_VERSION, "signing_key": signing_key, "data": data})


def decode_user_data(user_data: bytes | None) -> tuple[bytes, bytes]:
    """``(signing_key, data)`` from :func:`encode_user_data` output, or ``bad_key_binding``."""
    if user_data is None:
        raise _bad("bad_key_binding", "the document has no user_data")
    try:
        item = _cbor.decode_canonical(user_data, max_size=512)
    except ValueError as e:
        raise _bad("bad_key_binding", f"user_data: {e}") from None
    if (not isinstance(item, dict) or set(item) != {"a402", "signing_key", "data"}
            or item["a402"] != _USER_DATA_VERSION or not isinstance(item["data"], bytes)):
        raise _bad("bad_key_binding", "user_data is not an a402 key binding")
    try:
        check_signing_key(item["signing_key"])
    except ValueError as e:
        raise _bad("bad_key_binding", str(e)) from None
    return item["signing_key"], item["data"]


def load_root(certificate: x509.Certificate | bytes) -> x509.Certificate:
    """Accept a root as a certificate object, DER or PEM bytes."""
    if isinstance(certificate, x509.Certificate):
        return certificate
    if certificate.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(certificate)
    return x509.load_der_x509_certificate(certificate)


class NitroVerifier:
    """An :class:`AttestationVerifier` for a402 enclaves on AWS Nitro.

    ``root`` is the AWS Nitro root certificate (or, in tests, a generated one).
    ``allow_debug`` admits debug-mode enclaves (all-zero PCR0), which are not
    confidential; never enable it with real funds.
    """

    kind = AWS_NITRO

    def __init__(self, root: x509.Certificate | bytes, *, allow_debug: bool = False) -> None:
        self._root = load_root(root)
        self.allow_debug = allow_debug

    def verify(
        self, evidence: bytes, policy: AttestationPolicy, *, now: float | None = None
    ) -> VerifiedEnclave:
        doc = verify_document(evidence, self._root)
        pcr0 = doc.pcrs.get(0)
        if pcr0 is None:
            raise _bad("bad_document", "PCR0 (the enclave image) is missing")
        if not self.allow_debug and not any(pcr0):
            raise _bad("debug_enclave", "PCR0 is all zeros: a debug-mode enclave")
        if doc.public_key is None or len(doc.public_key) != KX_KEY_SIZE:
            raise _bad("bad_key_binding", "public_key must be the 32-byte X25519 key")
        signing_key, data = decode_user_data(doc.user_data)
        enclave = VerifiedEnclave(
            kind=AWS_NITRO,
            measurement=pcr0,
            signing_key=signing_key,
            kx_key=doc.public_key,
            timestamp_ms=doc.timestamp_ms,
            nonce=doc.nonce or b"",
            user_data=data,
            pcrs=doc.pcrs,
            module_id=doc.module_id,
        )
        policy.check(enclave, time.time() if now is None else now)
        return enclave
