"""AWS Nitro attestation documents: generated chains, every tamper, and one real document."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a402.crypto import EVM
from a402.tee import AttestationError, NitroVerifier, verify_document
from a402.tee.nitro import AWS_NITRO_ROOT_G1_SHA256, decode_user_data, encode_user_data
from a402.tee.quote import AWS_NITRO

from .conftest import policy_for
from .nitro_factory import DROP, NOW, DocumentSpec, NitroPKI, make_cert, new_key, sign_document

PCR0 = hashlib.sha384(b"enclave image").digest()
PCR1 = hashlib.sha384(b"kernel").digest()
PCR2 = hashlib.sha384(b"application").digest()
NONCE = b"N" * 32
KX_KEY = bytes(range(100, 132))
SIGNING_KEY = b"\x02" + EVM.generate_key().public_key

REAL_DOCUMENT = Path(__file__).parent / "data" / "nitro_debug_2024-09-17.b64"


def spec(**overrides) -> DocumentSpec:
    fields = dict(
        pcrs={0: PCR0, 1: PCR1, 2: PCR2, 3: bytes(48), 4: bytes(48)},
        public_key=KX_KEY,
        user_data=encode_user_data(SIGNING_KEY, b"app data"),
        nonce=NONCE,
    )
    fields.update(overrides)
    return DocumentSpec(**fields)


@pytest.fixture(scope="module")
def pki() -> NitroPKI:
    return NitroPKI.generate()


@pytest.fixture(scope="module")
def document(pki: NitroPKI) -> bytes:
    return sign_document(pki, spec())


def policy(**kwargs):
    kwargs.setdefault("nonce", NONCE)
    return policy_for(PCR0, **kwargs)


def reason_of(pki: NitroPKI, evidence: bytes, *, now: float = NOW + 5, **kwargs) -> str:
    with pytest.raises(AttestationError) as info:
        NitroVerifier(pki.root, **kwargs).verify(evidence, policy(), now=now)
    return info.value.reason


# -- the valid case -----------------------------------------------------------------


def test_generated_document_verifies_and_maps_to_the_enclave_keys(pki, document):
    enclave = NitroVerifier(pki.root).verify(document, policy(pcrs={1: PCR1, 2: PCR2}),
                                             now=NOW + 5)
    assert enclave.kind == AWS_NITRO
    assert enclave.measurement == PCR0
    assert enclave.signing_key == SIGNING_KEY
    assert enclave.kx_key == KX_KEY
    assert enclave.user_data == b"app data"
    assert enclave.nonce == NONCE
    assert enclave.pcrs[2] == PCR2
    assert enclave.module_id == "i-0123-enc0456"
    assert enclave.timestamp_ms == int(NOW * 1000)


def test_untagged_document_and_pem_root_verify(pki):
    untagged = sign_document(pki, spec(), tagged=False)
    pem = pki.root.public_bytes(Encoding.PEM)
    assert NitroVerifier(pem).verify(untagged, policy(), now=NOW).measurement == PCR0


def test_a_longer_chain_verifies():
    pki = NitroPKI.generate(intermediates=4)
    assert NitroVerifier(pki.root).verify(sign_document(pki, spec()), policy(), now=NOW)


# -- each tamper fails with its reason -----------------------------------------------


def test_payload_byte_flip_breaks_the_signature(pki, document):
    at = document.index(NONCE) + 3
    tampered = document[:at] + bytes([document[at] ^ 1]) + document[at + 1 :]
    assert reason_of(pki, tampered) == "bad_signature"


def test_wrong_root(pki, document):
    assert reason_of(NitroPKI.generate(), document) == "bad_chain"


def test_signature_by_a_different_key(pki):
    forged = sign_document(pki, spec(), signing_key=new_key())
    assert reason_of(pki, forged) == "bad_signature"


def test_expired_leaf():
    pki = NitroPKI.generate(leaf_not_after=NOW - 60)
    assert reason_of(pki, sign_document(pki, spec())) == "expired_certificate"


def test_leaf_not_yet_valid(pki):
    early = sign_document(pki, spec(timestamp_ms=int((NOW - 2 * 3600) * 1000)))
    assert reason_of(pki, early, now=NOW - 2 * 3600) == "certificate_not_yet_valid"


def test_wrong_pcr(pki, document):
    with pytest.raises(AttestationError) as info:
        NitroVerifier(pki.root).verify(document, policy(pcrs={1: PCR2}), now=NOW)
    assert info.value.reason == "pcr_mismatch"
    with pytest.raises(AttestationError) as info:
        NitroVerifier(pki.root).verify(document, policy_for(PCR1, nonce=NONCE), now=NOW)
    assert info.value.reason == "measurement_mismatch"


def test_stale_and_future_documents(pki, document):
    assert reason_of(pki, document, now=NOW + 301) == "stale"
    assert reason_of(pki, document, now=NOW - 31) == "future_timestamp"


def test_wrong_nonce(pki, document):
    with pytest.raises(AttestationError) as info:
        NitroVerifier(pki.root).verify(document, policy(nonce=b"M" * 32), now=NOW)
    assert info.value.reason == "nonce_mismatch"


@pytest.mark.parametrize("cut", [1, 10, 200, -1, -50])
def test_truncated_cbor(pki, document, cut):
    assert reason_of(pki, document[:cut]) == "bad_cose"


def test_trailing_bytes(pki, document):
    assert reason_of(pki, document + b"\x00") == "bad_cose"


def test_wrong_algorithm_in_protected_header(pki):
    es256 = sign_document(pki, spec(), protected=cbor2.dumps({1: -7}))
    assert reason_of(pki, es256) == "bad_cose"


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        ({"digest": "SHA256"}, "digest"),
        ({"module_id": ""}, "module_id"),
        ({"timestamp": -1}, "timestamp"),
        ({"pcrs": {}}, "pcrs"),
        ({"pcrs": {0: b"short"}}, "pcrs"),
        ({"cabundle": []}, "cabundle"),
        ({"certificate": DROP}, "certificate"),
        ({"nonce": b"x" * 513}, "nonce"),
        ({"surprise": 1}, "unknown"),
    ],
)
def test_malformed_payload_fields(pki, extra, what):
    assert reason_of(pki, sign_document(pki, spec(extra=extra))) == "bad_document", what


def test_leaf_that_is_a_ca_or_cannot_sign_is_refused():
    ca = NitroPKI.generate(leaf_ca=True)
    assert reason_of(ca, sign_document(ca, spec())) == "bad_chain"
    no_sign = NitroPKI.generate(leaf_sign_usage=False)
    assert reason_of(no_sign, sign_document(no_sign, spec())) == "bad_chain"


def test_intermediate_without_ca_rights_breaks_the_chain(pki):
    key = new_key()
    not_a_ca = make_cert("not a CA", key, (pki.root, pki.root_key), ca=False,
                         not_before=NOW - 86400, not_after=NOW + 86400)
    leaf = make_cert("leaf", pki.leaf_key, (not_a_ca, key), ca=False,
                     not_before=NOW - 3600, not_after=NOW + 3600)
    bad = NitroPKI(pki.root_key, pki.root, [(not_a_ca, key)], pki.leaf_key, leaf)
    assert reason_of(pki, sign_document(bad, spec())) == "bad_chain"


def test_leaf_with_a_p256_key_is_refused(pki):
    p256 = ec.generate_private_key(ec.SECP256R1())
    issuer = pki.intermediates[-1]
    leaf = make_cert("p256 leaf", p256, issuer, ca=False, not_before=NOW - 60,
                     not_after=NOW + 3600)
    bad = NitroPKI(pki.root_key, pki.root, pki.intermediates, p256, leaf)
    assert reason_of(pki, sign_document(bad, spec())) == "bad_certificate"


def test_debug_enclaves_are_refused_unless_allowed(pki):
    debug = sign_document(pki, spec(pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48)}))
    assert reason_of(pki, debug) == "debug_enclave"
    with pytest.raises(AttestationError) as info:
        NitroVerifier(pki.root, allow_debug=True).verify(debug, policy(), now=NOW)
    assert info.value.reason == "measurement_mismatch"  # gets past the debug gate


@pytest.mark.parametrize(
    "fields",
    [
        {"public_key": None},
        {"public_key": b"k" * 33},
        {"user_data": None},
        {"user_data": b"not cbor"},
        {"user_data": cbor2.dumps({"a402": 1, "signing_key": b"\x02" + bytes(32), "data": b""})},
    ],
)
def test_documents_without_an_a402_key_binding_are_refused(pki, fields):
    assert reason_of(pki, sign_document(pki, spec(**fields))) == "bad_key_binding"


def test_user_data_binding_round_trip():
    assert decode_user_data(encode_user_data(SIGNING_KEY, b"x")) == (SIGNING_KEY, b"x")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_rejected(pki, document, data):
    at = data.draw(st.integers(0, len(document) - 1))
    delta = data.draw(st.integers(1, 255))
    tampered = document[:at] + bytes([document[at] ^ delta]) + document[at + 1 :]
    with pytest.raises(AttestationError):
        NitroVerifier(pki.root).verify(tampered, policy(), now=NOW)


# -- a real document from AWS ---------------------------------------------------------
# A debug-mode attestation document produced by a Nitro enclave on 2024-09-17 (nonce
# 0x00…01), published in EternisAI's remote-attestation demo (tlsn-js). Its chain ends
# at the AWS Nitro root, whose fingerprint AWS publishes.


@pytest.fixture(scope="module")
def real() -> bytes:
    return base64.b64decode(REAL_DOCUMENT.read_text().strip())


@pytest.fixture(scope="module")
def aws_root(real: bytes):
    from cryptography import x509

    payload = cbor2.loads(cbor2.loads(real)[2])
    root = payload["cabundle"][0]
    assert hmac.compare_digest(hashlib.sha256(root).hexdigest(), AWS_NITRO_ROOT_G1_SHA256)
    return x509.load_der_x509_certificate(root)


def test_real_aws_document_verifies_against_the_aws_root(real, aws_root):
    doc = verify_document(real, aws_root)
    assert doc.module_id == "i-0bbf1bfe232b8c2ce-enc0191fc27458c1d41"
    assert doc.nonce == bytes(19) + b"\x01"
    assert len(doc.pcrs) == 16 and not any(doc.pcrs[0])  # debug mode: zero PCR0
    assert len(doc.cabundle) == 4


def test_real_aws_document_is_refused_as_a_debug_enclave_without_a402_keys(real, aws_root):
    now = 1726547441.8 + 10
    with pytest.raises(AttestationError) as info:
        NitroVerifier(aws_root).verify(real, policy_for(bytes(48)), now=now)
    assert info.value.reason == "debug_enclave"
    with pytest.raises(AttestationError) as info:
        NitroVerifier(aws_root, allow_debug=True).verify(real, policy_for(bytes(48)), now=now)
    assert info.value.reason == "bad_key_binding"  # its public_key is b"dummy"


def test_real_aws_document_fails_on_tampering_and_on_another_root(real, aws_root):
    flipped = real[:-5] + bytes([real[-5] ^ 1]) + real[-4:]
    with pytest.raises(AttestationError) as info:
        verify_document(flipped, aws_root)
    assert info.value.reason == "bad_signature"
    with pytest.raises(AttestationError) as info:
        verify_document(real, NitroPKI.generate().root)
    assert info.value.reason == "bad_chain"
