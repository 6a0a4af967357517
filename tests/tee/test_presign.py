"""The provider enclave's pre-signature: the attested key, for the enclave's own code only.

The host gets no call that pre-signs (issue 12, finding 1): the key is reachable
only through the :class:`~a402.tee.EnclaveKernel` that :meth:`start` hands to the
enclave's code. These tests play that code (``start(lambda kernel: kernel)``);
the provider runtime starts :mod:`a402.provider_enclave` instead.
"""

from __future__ import annotations

import os

import pytest

from a402.crypto import EVM, generate_adaptor
from a402.tee import (
    PROVIDER_PURPOSES,
    Enclave,
    EnclaveError,
    EnclaveKernel,
    SealingError,
    SimulatedPlatform,
)

from .conftest import PROVIDER_CODE, VAULT_CODE


def _code(kernel: EnclaveKernel) -> EnclaveKernel:
    return kernel


def test_the_enclave_code_pre_signs_with_the_attested_key(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    kernel = provider.start(_code)
    m = os.urandom(32)
    t, T = generate_adaptor()
    presignature = EVM.presignature_from_bytes(kernel.pre_sign(m, T))
    key = provider.signing_public_key
    assert key[0] == 2 and kernel.signing_public_key == key
    assert EVM.pre_verify(key[1:], m, T, presignature)
    assert EVM.verify(key[1:], m, EVM.adapt(presignature, t))


def test_the_host_has_no_call_that_pre_signs(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    for name in ("schnorr_pre_sign", "pre_sign"):
        assert not hasattr(provider, name)
        assert not hasattr(Enclave, name)


def test_each_role_signs_with_one_scheme_only(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    vault = platform.launch(VAULT_CODE)  # default purposes: the vault's ECDSA ones
    _, T = generate_adaptor()
    with pytest.raises(EnclaveError) as refused:
        vault.start(_code).pre_sign(os.urandom(32), T)
    assert refused.value.reason == "purpose_not_allowed"
    with pytest.raises(EnclaveError) as refused:
        provider.start(_code).sign("a402/channel-state", os.urandom(32))
    assert refused.value.reason == "purpose_not_allowed"


def test_bad_inputs_are_refused(platform: SimulatedPlatform) -> None:
    kernel = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES).start(_code)
    _, T = generate_adaptor()
    for message, point in ((os.urandom(31), T), (os.urandom(32), b"\x02" + bytes(32)),
                           (os.urandom(32), T[:-1])):
        with pytest.raises(EnclaveError) as refused:
            kernel.pre_sign(message, point)
        assert refused.value.reason == "bad_input"


def test_a_restart_revokes_the_previous_code(platform: SimulatedPlatform) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    old = provider.start(_code)
    new = provider.start(_code)
    _, T = generate_adaptor()
    with pytest.raises(EnclaveError) as refused:
        old.pre_sign(os.urandom(32), T)
    assert refused.value.reason == "restarted"
    assert new.pre_sign(os.urandom(32), T)


def test_the_code_s_sealed_state_does_not_open_for_the_host(platform: SimulatedPlatform
                                                            ) -> None:
    provider = platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES)
    kernel = provider.start(_code)
    blob = kernel.seal("a402/provider-channel/00", b"t and friends")
    assert kernel.unseal("a402/provider-channel/00", blob) == b"t and friends"
    with pytest.raises(SealingError):
        provider.unseal("a402/provider-channel/00", blob)
