"""Keys: what each flavour accepts, and that key generation always yields a usable key."""

from __future__ import annotations

import pytest
from coincurve import PrivateKey
from hypothesis import given

from a402.crypto import BIP340, EVM, InvalidKeyError
from a402.crypto._secp import HALF_N, N, b32, int_from

from ._strategies import SETTINGS, scalars


def test_generated_evm_keys_satisfy_the_on_chain_constraints() -> None:
    """Even y (ecrecover is called with v = 27) and x at most (N-1)/2, every time."""
    for _ in range(64):
        key = EVM.generate_key()
        point = PrivateKey(key.to_bytes()).public_key.format()
        assert point[0] == 0x02
        assert point[1:] == key.public_key
        assert 0 < int_from(key.public_key) <= HALF_N


@SETTINGS
@given(secret=scalars)
def test_an_evm_secret_is_usable_exactly_when_its_x_is_in_the_lower_half(secret: int) -> None:
    x = int_from(PrivateKey(b32(secret)).public_key.format()[1:])
    if x <= HALF_N:
        key = EVM.secret_key(b32(secret))
        assert key.public_key == b32(x)
        assert int_from(key.to_bytes()) in (secret, N - secret)  # negated when y is odd
    else:
        with pytest.raises(InvalidKeyError):
            EVM.secret_key(b32(secret))


@SETTINGS
@given(secret=scalars)
def test_bip340_keys_are_x_only_and_normalised_to_even_y(secret: int) -> None:
    key = BIP340.secret_key(b32(secret))
    point = PrivateKey(key.to_bytes()).public_key.format()
    assert point == b"\x02" + key.public_key
    assert key.public_key == PrivateKey(b32(secret)).public_key.format()[1:]


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b32(0), b32(N), b"\xff" * 32])
def test_malformed_secrets_are_refused(bad: bytes) -> None:
    for scheme in (EVM, BIP340):
        with pytest.raises(InvalidKeyError):
            scheme.secret_key(bad)


def test_a_key_never_shows_its_secret_and_stays_in_its_flavour() -> None:
    key = EVM.generate_key()
    assert key.to_bytes().hex() not in repr(key)
    assert EVM.secret_key(key.to_bytes()) == key
    with pytest.raises(InvalidKeyError):
        BIP340.pre_sign(key, b"\x00" * 32, PrivateKey().public_key.format())


def test_evm_verification_refuses_keys_the_contract_would_refuse() -> None:
    key = EVM.generate_key()
    message = b"\x11" * 32
    signature = EVM.sign(key, message)
    assert EVM.verify(key.public_key, message, signature)
    for bad_key in (b32(0), b32(HALF_N + 1), b"\xff" * 32, key.public_key[:31]):
        assert not EVM.verify(bad_key, message, signature)
    # s must be in [1, N): s + N (same value mod N) is a malleable twin the contract rejects.
    s = int_from(signature[32:])
    if s + N < 2**256:
        assert not EVM.verify(key.public_key, message, signature[:32] + b32(s + N))
    assert not EVM.verify(key.public_key, message, signature[:32] + b32(0))
