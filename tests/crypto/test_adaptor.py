"""Schnorr adaptor signatures, both flavours: what the A402 exchange relies on.

Each scenario plays a step of a paid request: the provider pre-signs the
payment message under ``T``, the vault pre-verifies, the provider completes
the signature with ``t`` (to settle on-chain), and the vault extracts ``t``
from what the provider published.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from coincurve import PublicKeyXOnly
from hypothesis import given
from hypothesis import strategies as st

from a402.crypto import (
    BIP340,
    EVM,
    ExtractionError,
    PreSignature,
    SchnorrScheme,
    SecretKey,
    generate_adaptor,
    is_adaptor_secret,
)
from a402.crypto._secp import N, b32, base_mul, int_from

from ._strategies import SETTINGS, aux, messages32, scalars

SCHEMES = [pytest.param(EVM, id="evm"), pytest.param(BIP340, id="bip340")]


@dataclass
class Exchange:
    """One provider pre-signature, with everything needed to check and complete it."""

    scheme: SchnorrScheme
    key: SecretKey
    message: bytes
    t: bytes
    adaptor: bytes
    presig: PreSignature


def exchange(scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes) -> Exchange:
    key = scheme.generate_key()
    adaptor = base_mul(t).format()
    presig = scheme.pre_sign(key, message, adaptor, aux_rand=aux_rand)
    return Exchange(scheme, key, message, b32(t), adaptor, presig)


def flip_bit(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, aux_rand=aux)
def test_honest_exchange_pre_verifies_adapts_verifies_and_extracts_t(
    scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes
) -> None:
    ex = exchange(scheme, message, t, aux_rand)

    assert scheme.pre_verify(ex.key.public_key, message, ex.adaptor, ex.presig)
    signature = scheme.adapt(ex.presig, ex.t)
    assert scheme.verify(ex.key.public_key, message, signature)
    assert scheme.extract(ex.presig, signature, ex.adaptor) == ex.t


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, aux_rand=aux, bit=st.integers(0, 255))
def test_pre_verify_rejects_a_different_message(
    scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes, bit: int
) -> None:
    ex = exchange(scheme, message, t, aux_rand)
    tampered = flip_bit(message, bit)
    assert not scheme.pre_verify(ex.key.public_key, tampered, ex.adaptor, ex.presig)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, other_t=scalars, aux_rand=aux)
def test_pre_verify_rejects_a_different_adaptor_point(
    scheme: SchnorrScheme, message: bytes, t: int, other_t: int, aux_rand: bytes
) -> None:
    ex = exchange(scheme, message, t, aux_rand)
    if other_t != t:
        assert not scheme.pre_verify(
            ex.key.public_key, message, base_mul(other_t).format(), ex.presig
        )
    negated = bytes([ex.adaptor[0] ^ 1]) + ex.adaptor[1:]  # −T: same x, other parity
    assert not scheme.pre_verify(ex.key.public_key, message, negated, ex.presig)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, aux_rand=aux)
def test_pre_verify_rejects_another_providers_key(
    scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes
) -> None:
    ex = exchange(scheme, message, t, aux_rand)
    other = scheme.generate_key()
    assert not scheme.pre_verify(other.public_key, message, ex.adaptor, ex.presig)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(
    message=messages32,
    t=scalars,
    aux_rand=aux,
    bit=st.integers(0, 263),
    delta=st.integers(1, N - 1),
)
def test_pre_verify_rejects_a_tampered_pre_signature(
    scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes, bit: int, delta: int
) -> None:
    ex = exchange(scheme, message, t, aux_rand)
    nonce_tampered = PreSignature(ex.presig.flavour, flip_bit(ex.presig.r, bit), ex.presig.s)
    scalar_tampered = PreSignature(ex.presig.flavour, ex.presig.r, (ex.presig.s + delta) % N)

    assert not scheme.pre_verify(ex.key.public_key, message, ex.adaptor, nonce_tampered)
    assert not scheme.pre_verify(ex.key.public_key, message, ex.adaptor, scalar_tampered)


def test_a_bip340_pre_signature_commits_to_the_parity_of_its_nonce() -> None:
    """R and −R share x(R); the parity decides whether t is added or subtracted, so a
    pre-signature with the other parity must not pass."""
    for _ in range(8):  # covers both parities with overwhelming probability
        _, adaptor = generate_adaptor()
        key = BIP340.generate_key()
        message = b"\x42" * 32
        presig = BIP340.pre_sign(key, message, adaptor)
        twisted = PreSignature("bip340", bytes([presig.r[0] ^ 1]) + presig.r[1:], presig.s)
        assert BIP340.pre_verify(key.public_key, message, adaptor, presig)
        assert not BIP340.pre_verify(key.public_key, message, adaptor, twisted)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, aux_rand=aux)
def test_a_pre_signature_is_not_a_signature(
    scheme: SchnorrScheme, message: bytes, t: int, aux_rand: bytes
) -> None:
    ex = exchange(scheme, message, t, aux_rand)
    as_signature = ex.presig.r[-32:] + b32(ex.presig.s)  # the 64-byte shape of a signature
    assert not scheme.verify(ex.key.public_key, message, as_signature)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, other=messages32, t=scalars, aux_rand=aux)
def test_a_signature_for_one_message_never_verifies_for_another(
    scheme: SchnorrScheme, message: bytes, other: bytes, t: int, aux_rand: bytes
) -> None:
    if other == message:
        return
    ex = exchange(scheme, message, t, aux_rand)
    adapted = scheme.adapt(ex.presig, ex.t)
    plain = scheme.sign(ex.key, message, aux_rand=aux_rand)

    assert scheme.verify(ex.key.public_key, message, plain)
    assert not scheme.verify(ex.key.public_key, other, adapted)
    assert not scheme.verify(ex.key.public_key, other, plain)


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(message=messages32, t=scalars, wrong=scalars, aux_rand=aux)
def test_completing_with_the_wrong_secret_gives_no_valid_signature(
    scheme: SchnorrScheme, message: bytes, t: int, wrong: int, aux_rand: bytes
) -> None:
    if wrong == t:
        return
    ex = exchange(scheme, message, t, aux_rand)
    assert not scheme.verify(ex.key.public_key, message, scheme.adapt(ex.presig, b32(wrong)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_extract_refuses_a_signature_that_is_not_the_completion(scheme: SchnorrScheme) -> None:
    """A fresh signature by the same key on the same message reveals nothing about t;
    extract must say so rather than return a wrong secret."""
    t, adaptor = generate_adaptor()
    key = scheme.generate_key()
    message = b"\x07" * 32
    presig = scheme.pre_sign(key, message, adaptor)
    fresh = scheme.sign(key, message)
    completed = scheme.adapt(presig, t)
    _, other_adaptor = generate_adaptor()

    with pytest.raises(ExtractionError):
        scheme.extract(presig, fresh, adaptor)
    with pytest.raises(ExtractionError):
        scheme.extract(presig, completed, other_adaptor)
    assert scheme.extract(presig, completed, adaptor) == t


def key_candidates(
    scheme: SchnorrScheme, pk: bytes, a: PreSignature, ma: bytes, b: PreSignature, mb: bytes
) -> set[int]:
    """Keys an attacker would compute if the two pre-signatures shared a nonce k:
    from ŝ = ±k + e·x, x = (ŝa ∓ ŝb) / (ea ∓ eb) (BIP-340 may negate k on either side)."""
    if scheme is EVM:
        ea, eb = int_from(a.r) % N, int_from(b.r) % N
    else:
        ea, eb = BIP340.challenge(a.r[1:], pk, ma), BIP340.challenge(b.r[1:], pk, mb)
    candidates = set()
    for sign in (1, -1):
        if (ea - sign * eb) % N:
            candidates.add((a.s - sign * b.s) * pow(ea - sign * eb, -1, N) % N)
    return candidates


@pytest.mark.parametrize("scheme", SCHEMES)
@SETTINGS
@given(m1=messages32, m2=messages32, aux_rand=aux)
def test_no_nonce_is_reused_even_when_the_randomness_repeats(
    scheme: SchnorrScheme, m1: bytes, m2: bytes, aux_rand: bytes
) -> None:
    """Same key, same (stuck) randomness: pre-signatures on two messages, or on one message
    under two adaptor points, must not share a nonce (which would give away the key)."""
    key = scheme.generate_key()
    t1, adaptor1 = generate_adaptor()
    _, adaptor2 = generate_adaptor()
    secret = int_from(key.to_bytes())
    pairs = [(m1, adaptor1, m1, adaptor2)]  # one message, two adaptor points
    if m1 != m2:
        pairs.append((m1, adaptor1, m2, adaptor1))  # two messages, one adaptor point
    for ma, ta, mb, tb in pairs:
        a = scheme.pre_sign(key, ma, ta, aux_rand=aux_rand)
        b = scheme.pre_sign(key, mb, tb, aux_rand=aux_rand)
        leaked = key_candidates(scheme, key.public_key, a, ma, b, mb)
        assert secret not in leaked and N - secret not in leaked
    # The adaptor is honest: same inputs and randomness give the same pre-signature...
    again = scheme.pre_sign(key, m1, adaptor1, aux_rand=aux_rand)
    assert again == scheme.pre_sign(key, m1, adaptor1, aux_rand=aux_rand)
    # ...and fresh randomness (the default) gives a different one that still completes.
    fresh = scheme.pre_sign(key, m1, adaptor1)
    assert fresh != again
    assert scheme.verify(key.public_key, m1, scheme.adapt(fresh, t1))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_pre_signatures_round_trip_through_bytes(scheme: SchnorrScheme) -> None:
    _, adaptor = generate_adaptor()
    key = scheme.generate_key()
    presig = scheme.pre_sign(key, b"\x01" * 32, adaptor)
    encoded = presig.to_bytes()
    assert len(encoded) == (64 if scheme is EVM else 65)
    assert scheme.presignature_from_bytes(encoded) == presig


def test_the_flavours_do_not_accept_each_others_pre_signatures() -> None:
    t, adaptor = generate_adaptor()
    evm_key, btc_key = EVM.generate_key(), BIP340.generate_key()
    message = b"\x09" * 32
    evm_presig = EVM.pre_sign(evm_key, message, adaptor)
    btc_presig = BIP340.pre_sign(btc_key, message, adaptor)
    assert not BIP340.pre_verify(evm_key.public_key, message, adaptor, evm_presig)
    assert not EVM.pre_verify(btc_key.public_key, message, adaptor, btc_presig)
    with pytest.raises(ValueError):
        BIP340.adapt(evm_presig, t)


@SETTINGS
@given(message=st.binary(max_size=200), t=scalars, aux_rand=aux)
def test_bip340_completions_verify_under_libsecp256k1(
    message: bytes, t: int, aux_rand: bytes
) -> None:
    """An independent verifier (libsecp256k1's own BIP-340 code) accepts the completed
    adaptor signatures and plain signatures, for messages of any length."""
    key = BIP340.generate_key()
    adaptor = base_mul(t).format()
    presig = BIP340.pre_sign(key, message, adaptor, aux_rand=aux_rand)
    oracle = PublicKeyXOnly(key.public_key)

    assert BIP340.pre_verify(key.public_key, message, adaptor, presig)
    assert oracle.verify(BIP340.adapt(presig, b32(t)), message)
    assert oracle.verify(BIP340.sign(key, message, aux_rand=aux_rand), message)


@SETTINGS
@given(message=st.binary(max_size=100), bit=st.integers(0, 511))
def test_bip340_verify_agrees_with_libsecp256k1_on_damaged_signatures(
    message: bytes, bit: int
) -> None:
    key = BIP340.generate_key()
    damaged = flip_bit(BIP340.sign(key, message), bit)
    expected = PublicKeyXOnly(key.public_key).verify(damaged, message)
    assert BIP340.verify(key.public_key, message, damaged) is expected


def test_the_revealed_secret_is_checked_against_the_adaptor_point() -> None:
    t, adaptor = generate_adaptor()
    other, _ = generate_adaptor()
    assert is_adaptor_secret(t, adaptor)
    assert not is_adaptor_secret(other, adaptor)
    assert not is_adaptor_secret(b"\x00" * 32, adaptor)
    assert not is_adaptor_secret(b32(N), adaptor)
