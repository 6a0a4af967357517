"""The simulated backend: refused by default, loud when accepted, keys kept inside."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import a402.tee
from a402.crypto import EVM, generate_adaptor
from a402.tee import (
    PAYMENT_AUTHORIZATION,
    AttestationError,
    Enclave,
    EnclaveError,
    Quote,
    SealingError,
    SimulatedPlatform,
    SimulatedVerifier,
    SimulationRoot,
    _cbor,
)
from a402.tee.measure import measure_tree
from a402.tee.simulated import ENCLAVE_WARNING, VERIFIER_WARNING

from .conftest import PROVIDER_CODE, VAULT_CODE, policy_for
from .nitro_factory import NOW

NONCE = b"n" * 32
OTHER_SIGNING_KEY = b"\x02" + EVM.generate_key().public_key


def test_simulated_enclave_implements_the_enclave_interface(vault):
    assert isinstance(vault, Enclave)


def test_simulated_quotes_are_refused_by_default(platform, vault):
    evidence = vault.quote(NONCE)
    with pytest.raises(AttestationError) as info:
        SimulatedVerifier(platform.root.public_key).verify(evidence, policy_for(VAULT_CODE),
                                                           now=NOW)
    assert info.value.reason == "simulated_not_allowed"


def test_accepting_a_simulated_quote_warns_once(platform, vault, capsys):
    verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    capsys.readouterr()
    enclave = verifier.verify(vault.quote(NONCE), policy_for(VAULT_CODE, nonce=NONCE), now=NOW)
    assert enclave.signing_key == vault.signing_public_key
    assert enclave.kx_key == vault.kx_public_key
    assert enclave.measurement == VAULT_CODE
    assert enclave.pcrs == {0: VAULT_CODE}
    assert VERIFIER_WARNING in capsys.readouterr().err
    verifier.verify(vault.quote(NONCE), policy_for(VAULT_CODE), now=NOW)
    assert VERIFIER_WARNING not in capsys.readouterr().err  # once per process


def test_launching_a_simulated_enclave_warns(capsys):
    SimulatedPlatform.generate().launch(VAULT_CODE)
    assert ENCLAVE_WARNING in capsys.readouterr().err


def test_a_refused_quote_does_not_warn(platform, vault, capsys):
    capsys.readouterr()
    with pytest.raises(AttestationError):
        SimulatedVerifier(platform.root.public_key).verify(vault.quote(NONCE),
                                                           policy_for(VAULT_CODE), now=NOW)
    assert "ACCEPTED" not in capsys.readouterr().err


# -- what a quote binds ----------------------------------------------------------------


def _reopen(evidence: bytes) -> tuple[dict, Quote]:
    envelope = _cbor.decode_canonical(evidence, max_size=4096)
    return envelope, Quote.from_bytes(envelope["quote"])


@pytest.mark.parametrize(
    "change",
    [
        {"measurement": PROVIDER_CODE},
        {"signing_key": OTHER_SIGNING_KEY},
        {"kx_key": bytes(32)},
        {"nonce": b"m" * 32},
        {"timestamp_ms": int(NOW * 1000) + 1},
        {"user_data": b"other"},
    ],
)
def test_changing_any_bound_field_breaks_the_quote(platform, vault, verifier, change):
    envelope, quote = _reopen(vault.quote(NONCE))
    forged = dataclasses.replace(quote, **change)
    envelope["quote"] = forged.to_bytes()
    with pytest.raises(AttestationError) as info:
        verifier.verify(_cbor.encode(envelope), policy_for(VAULT_CODE, PROVIDER_CODE), now=NOW)
    assert info.value.reason == "bad_signature"


def test_a_quote_signed_by_another_root_is_refused(vault, verifier):
    envelope, quote = _reopen(vault.quote(NONCE))
    evidence = SimulationRoot.generate().sign_quote(quote)
    with pytest.raises(AttestationError) as info:
        verifier.verify(evidence, policy_for(VAULT_CODE), now=NOW)
    assert info.value.reason == "untrusted_root"
    other = SimulationRoot.generate()
    envelope["root"] = verifier._root_bytes  # claim the trusted root, sign with another
    envelope["signature"] = _cbor.decode_canonical(other.sign_quote(quote), max_size=4096)[
        "signature"
    ]
    with pytest.raises(AttestationError) as info:
        verifier.verify(_cbor.encode(envelope), policy_for(VAULT_CODE), now=NOW)
    assert info.value.reason == "bad_signature"


def test_policy_is_applied_to_simulated_quotes(vault, verifier, clock):
    evidence = vault.quote(NONCE)
    for policy, now, reason in [
        (policy_for(PROVIDER_CODE), NOW, "measurement_mismatch"),
        (policy_for(VAULT_CODE, pcrs={1: VAULT_CODE}), NOW, "pcr_mismatch"),
        (policy_for(VAULT_CODE, nonce=b"x" * 32), NOW, "nonce_mismatch"),
        (policy_for(VAULT_CODE), NOW + 301, "stale"),
        (policy_for(VAULT_CODE), NOW - 31, "future_timestamp"),
    ]:
        with pytest.raises(AttestationError) as info:
            verifier.verify(evidence, policy, now=now)
        assert info.value.reason == reason


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_change_in_the_evidence_is_rejected(vault, verifier, data):
    evidence = vault.quote(NONCE)
    at = data.draw(st.integers(0, len(evidence) - 1))
    delta = data.draw(st.integers(1, 255))
    tampered = evidence[:at] + bytes([evidence[at] ^ delta]) + evidence[at + 1 :]
    with pytest.raises(AttestationError):
        verifier.verify(tampered, policy_for(VAULT_CODE, nonce=NONCE), now=NOW)


@pytest.mark.parametrize("evidence", [b"", b"\xa0", b"\x00" * 10, _cbor.encode({"format": 1})])
def test_garbage_evidence(verifier, evidence):
    with pytest.raises(AttestationError) as info:
        verifier.verify(evidence, policy_for(VAULT_CODE), now=NOW)
    assert info.value.reason == "bad_quote"


# -- operations by purpose; secrets stay inside ----------------------------------------


def test_the_enclaves_code_signs_by_allowed_purpose_only(platform, vault, verifier):
    kernel = vault.start(lambda kernel: kernel)  # as the enclave's own code would
    digest = hashlib.sha256(b"sigma_U").digest()
    signature = kernel.sign(PAYMENT_AUTHORIZATION, digest)
    attested = verifier.verify(vault.quote(NONCE), policy_for(VAULT_CODE), now=NOW)
    assert attested.verify_digest_signature(digest, signature)
    assert not attested.verify_digest_signature(hashlib.sha256(b"other").digest(), signature)
    with pytest.raises(EnclaveError) as info:
        kernel.sign("anything/else", digest)
    assert info.value.reason == "purpose_not_allowed"
    restricted = platform.launch(VAULT_CODE, allowed_purposes=())
    with pytest.raises(EnclaveError):
        restricted.start(lambda kernel: kernel).sign(PAYMENT_AUTHORIZATION, digest)
    with pytest.raises(EnclaveError) as info:
        kernel.sign(PAYMENT_AUTHORIZATION, b"short")
    assert info.value.reason == "bad_input"


def test_the_host_has_no_signing_call(vault):
    public = {name for name in dir(vault) if not name.startswith("_")}
    assert {name for name in public if "sign" in name} == {"signing_public_key"}


def test_signing_key_is_usable_for_evm_schnorr_adaptor_signatures(vault):
    # What the enclave's code does with kernel.pre_sign(m, T): the attested key
    # (test-only peek at it here) pre-signs, and the attested public key verifies.
    t, adaptor = generate_adaptor()
    m = hashlib.sha256(b"cid|rid|delta|h").digest()
    presig = EVM.pre_sign(vault._signing, m, adaptor)
    assert vault.signing_public_key[0] == 2  # even y, as EVM Schnorr keys must be
    assert EVM.pre_verify(vault.signing_public_key[1:], m, adaptor, presig)
    assert EVM.verify(vault.signing_public_key[1:], m, EVM.adapt(presig, t))


def test_no_public_output_contains_a_secret(vault):
    secrets = [
        vault._signing.to_bytes(),
        vault._kx.private_bytes_raw(),
    ]  # test-only peeks at what must never leave
    outputs = [
        vault.quote(NONCE), vault.export_sealed(), vault.seal("x", b"state"), repr(vault).encode(),
        vault.signing_public_key, vault.kx_public_key,
    ]
    public = [name for name in dir(vault) if not name.startswith("_")]
    assert not any("secret" in name or "private" in name for name in public)
    for secret in secrets:
        assert all(secret not in out and secret.hex().encode() not in out for out in outputs)


# -- sealed identity -----------------------------------------------------------------


def test_sealed_identity_restores_the_same_keys(platform, vault):
    restored = platform.restore(VAULT_CODE, vault.export_sealed())
    assert restored.signing_public_key == vault.signing_public_key
    assert restored.kx_public_key == vault.kx_public_key
    digest = bytes(32)
    assert restored.start(lambda k: k).sign(PAYMENT_AUTHORIZATION, digest) == vault.start(
        lambda k: k).sign(PAYMENT_AUTHORIZATION, digest)  # RFC 6979: same key, same signature


def test_sealed_identity_opens_only_for_the_same_code_and_platform(platform, vault):
    blob = vault.export_sealed()
    with pytest.raises(SealingError) as info:
        platform.restore(PROVIDER_CODE, blob)
    assert info.value.reason == "open_failed"
    other = SimulatedPlatform(platform.root, b"\x01" * 32)
    with pytest.raises(SealingError):
        other.restore(VAULT_CODE, blob)


def test_application_unseal_cannot_open_the_identity(vault):
    with pytest.raises(SealingError):
        vault.unseal("a402.enclave/identity", vault.export_sealed())


def test_application_state_round_trip_and_label_binding(platform, vault, provider):
    blob = vault.seal("channel/42", b"balances")
    assert vault.unseal("channel/42", blob) == b"balances"
    restored = platform.restore(VAULT_CODE, vault.export_sealed())
    assert restored.unseal("channel/42", blob) == b"balances"  # survives a restart
    with pytest.raises(SealingError):
        vault.unseal("channel/43", blob)
    with pytest.raises(SealingError):
        provider.unseal("channel/42", blob)  # other measurement


def test_root_key_export_round_trip():
    root = SimulationRoot.generate()
    again = SimulationRoot.from_private_bytes(root.private_bytes())
    assert again.public_key == root.public_key
    assert root.private_bytes().hex() not in repr(root)


# -- measurement and the package example ----------------------------------------------


def test_measurement_changes_with_code(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    first = measure_tree(tmp_path)
    assert len(first) == 48 and measure_tree(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    second = measure_tree(tmp_path)
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert len({first, second, measure_tree(tmp_path)}) == 3


def test_package_docstring_example_runs():
    result = doctest.testmod(a402.tee, verbose=False)
    assert result.attempted > 0 and result.failed == 0
