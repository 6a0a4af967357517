"""Generated stand-ins for AWS's Nitro PKI and NSM, for tests only.

Certificates follow the profile of AWS's real chain (checked against a real
document in test_nitro.py): P-384 keys, ECDSA-SHA384, a root, intermediates
with decreasing path lengths, and a short-lived end-entity leaf whose key
usage allows digitalSignature. Documents are COSE_Sign1 exactly as the NSM
produces them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

_DER = Encoding.DER
#: Put in ``DocumentSpec.extra`` to drop a field from the payload.
DROP = object()
#: A fixed "now" for attestation tests: 2026-01-01T00:00:00Z.
NOW = 1_767_225_600.0


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=not ca and sign, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: float,
    not_after: float,
    sign_usage: bool = True,
    basic_constraints: bool = True,
) -> x509.Certificate:
    public = key.public_key()
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(not_before))
        .not_valid_after(_at(not_after))
        .add_extension(_key_usage(sign=sign_usage, ca=ca), critical=True)
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                        critical=False)
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
                critical=False,
            )
    return builder.sign(signer, hashes.SHA384())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@dataclass
class NitroPKI:
    """A root, ``intermediates`` CAs and a leaf, all valid around ``NOW``."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediates: list[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate

    @classmethod
    def generate(cls, *, intermediates: int = 2, leaf_not_after: float = NOW + 3 * 3600,
                 leaf_ca: bool = False, leaf_sign_usage: bool = True,
                 leaf_key: ec.EllipticCurvePrivateKey | None = None) -> NitroPKI:
        root_key = new_key()
        root = make_cert("test.nitro-enclaves root", root_key, None, ca=True,
                         not_before=NOW - 365 * 86400, not_after=NOW + 30 * 365 * 86400)
        chain: list[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = []
        issuer = (root, root_key)
        for i in range(intermediates):
            key = new_key()
            cert = make_cert(f"intermediate {i}", key, issuer, ca=True,
                             path_length=intermediates - 1 - i,
                             not_before=NOW - 86400, not_after=NOW + 20 * 86400)
            chain.append((cert, key))
            issuer = (cert, key)
        leaf_key = leaf_key or new_key()
        leaf = make_cert("i-0123-enc0456.test", leaf_key, issuer, ca=leaf_ca,
                         path_length=0 if leaf_ca else None,
                         not_before=NOW - 3600, not_after=leaf_not_after,
                         sign_usage=leaf_sign_usage)
        return cls(root_key, root, chain, leaf_key, leaf)

    def cabundle(self) -> list[bytes]:
        return [c.public_bytes(_DER) for c in [self.root, *(c for c, _ in self.intermediates)]]


@dataclass
class DocumentSpec:
    """Fields of a Nitro attestation document; ``extra`` overrides raw payload fields."""

    pcrs: dict[int, bytes]
    public_key: bytes | None = None
    user_data: bytes | None = None
    nonce: bytes | None = None
    timestamp_ms: int = int(NOW * 1000)
    module_id: str = "i-0123-enc0456"
    extra: dict[str, Any] = field(default_factory=dict)


def sign_document(pki: NitroPKI, spec: DocumentSpec, *,
                  signing_key: ec.EllipticCurvePrivateKey | None = None, tagged: bool = True,
                  protected: bytes | None = None) -> bytes:
    """A COSE_Sign1 attestation document as the NSM would return it."""
    payload_map: dict[str, Any] = {
        "module_id": spec.module_id,
        "digest": "SHA384",
        "timestamp": spec.timestamp_ms,
        "pcrs": spec.pcrs,
        "certificate": pki.leaf.public_bytes(_DER),
        "cabundle": pki.cabundle(),
        "public_key": spec.public_key,
        "user_data": spec.user_data,
        "nonce": spec.nonce,
    }
    payload_map.update(spec.extra)
    payload_map = {k: v for k, v in payload_map.items() if v is not DROP}
    payload = cbor2.dumps(payload_map)
    protected = cbor2.dumps({1: -35}) if protected is None else protected
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    der = (signing_key or pki.leaf_key).sign(to_sign, ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    body = cbor2.dumps([protected, {}, payload, signature])
    return (b"\xd2" + body) if tagged else body
