"""Fixtures for the vault service: a private anvil (some tests move time, which must not
disturb the shared node), TestUSDC, an ASCManager, and one simulated enclave platform
whose root every verifier here trusts *explicitly*.

The providers are the real payment middleware behind ``A402Payments`` (tests/a402_exchange's
:class:`World` builds them); the vault is the real service, in-process behind real
HTTP or as an ``a402 vault`` subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from a402.asc_manager import ASCManager
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract
from a402.tee import SimulatedPlatform, SimulatedVerifier
from tests.a402_exchange.helpers import DISPUTE_WINDOW, World


@pytest.fixture(scope="session")
def vault_chain() -> Iterator[Chain]:
    with start_anvil(accounts=2) as chain:
        yield chain


@pytest.fixture(scope="session")
def vault_token(vault_chain: Chain) -> Any:
    deployer = vault_chain.accounts[0]
    return deploy_contract(vault_chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                           deployer.address)


@pytest.fixture(scope="session")
def vault_manager(vault_chain: Chain, vault_token: Any) -> ASCManager:
    return ASCManager.deploy(vault_chain, vault_chain.accounts[0], vault_token.address,
                             DISPUTE_WINDOW)


@pytest.fixture(scope="session")
def vault_platform() -> SimulatedPlatform:
    return SimulatedPlatform.generate()


@pytest.fixture
def world(vault_chain: Chain, vault_token: Any, vault_manager: ASCManager,
          vault_platform: SimulatedPlatform, tmp_path: Any) -> World:
    info = TokenInfo(vault_token.address, "USD Coin", "USDC", "2", 6)
    verifier = SimulatedVerifier(vault_platform.root.public_key, allow_simulated=True)
    return World(vault_chain, vault_token, info, vault_manager, vault_platform, verifier,
                 tmp_path)


@pytest.fixture
def private_world(tmp_path: Any) -> Iterator[World]:
    """A world on an anvil of its own, whose clock and mining this test may change."""
    with start_anvil(accounts=2) as chain:
        deployer = chain.accounts[0]
        token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                                deployer.address)
        manager = ASCManager.deploy(chain, deployer, token.address, DISPUTE_WINDOW)
        platform = SimulatedPlatform.generate()
        yield World(chain, token, TokenInfo(token.address, "USD Coin", "USDC", "2", 6), manager,
                    platform, SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                    tmp_path)
