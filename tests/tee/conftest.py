"""Fixtures for the enclave-boundary tests: a simulated platform on a fixed clock."""

from __future__ import annotations

import hashlib

import pytest

from a402.tee import _warn
from a402.tee.quote import AttestationPolicy
from a402.tee.simulated import SimulatedEnclave, SimulatedPlatform, SimulatedVerifier

from .nitro_factory import NOW

VAULT_CODE = hashlib.sha384(b"vault enclave image").digest()
PROVIDER_CODE = hashlib.sha384(b"provider enclave image").digest()


class Clock:
    """A settable clock so that freshness checks are deterministic."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_warnings():
    _warn.reset_for_tests()
    yield
    _warn.reset_for_tests()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def platform(clock: Clock) -> SimulatedPlatform:
    return SimulatedPlatform.generate(clock=clock)


@pytest.fixture
def vault(platform: SimulatedPlatform) -> SimulatedEnclave:
    return platform.launch(VAULT_CODE)


@pytest.fixture
def provider(platform: SimulatedPlatform) -> SimulatedEnclave:
    return platform.launch(PROVIDER_CODE)


@pytest.fixture
def verifier(platform: SimulatedPlatform) -> SimulatedVerifier:
    return SimulatedVerifier(platform.root.public_key, allow_simulated=True)


def policy_for(*measurements: bytes, **kwargs) -> AttestationPolicy:
    return AttestationPolicy(frozenset(measurements), **kwargs)
