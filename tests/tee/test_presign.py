"""The provider enclave's pre-signature operation: the attested key, by purpose only."""

from __future__ import annotations

import os

import pytest

from a402.crypto import EVM, generate_adaptor
from a402.tee import PROVIDER_PURPOSES, EnclaveError, SimulatedPlatform

from .conftest import PROVIDER_CODE, VAULT_CODE


def test_a_provider_enclave_pre_signs_with_its_attested_key(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    m = os.urandom(32)
    t, T = generate_adaptor()
    presignature = EVM.presignature_from_bytes(provider.schnorr_pre_sign(m, T))
    key = provider.signing_public_key
    assert key[0] == 2
    assert EVM.pre_verify(key[1:], m, T, presignature)
    assert EVM.verify(key[1:], m, EVM.adapt(presignature, t))


def test_each_role_signs_with_one_scheme_only(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    vault = platform.launch(VAULT_CODE)  # default purposes: the vault's ECDSA ones
    _, T = generate_adaptor()
    with pytest.raises(EnclaveError) as refused:
        vault.schnorr_pre_sign(os.urandom(32), T)
    assert refused.value.reason == "purpose_not_allowed"
    with pytest.raises(EnclaveError) as refused:
        provider.sign_digest("a402/channel-state", os.urandom(32))
    assert refused.value.reason == "purpose_not_allowed"


def test_bad_inputs_are_refused(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    _, T = generate_adaptor()
    for message, point in ((os.urandom(31), T), (os.urandom(32), b"\x02" + bytes(32)),
                           (os.urandom(32), T[:-1])):
        with pytest.raises(EnclaveError) as refused:
            provider.schnorr_pre_sign(message, point)
        assert refused.value.reason == "bad_input"
