"""Fixtures for the A402 exchange over HTTP: a private anvil (client force-closes need
time travel, which must not disturb the shared node), TestUSDC, an ASCManager, and one
simulated enclave platform whose root the verifiers trust *explicitly*.

Every test gets fresh accounts and fresh enclaves, so balances are exact deltas and
tests are independent of each other's order.
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

from .helpers import DISPUTE_WINDOW, World


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def exchange_chain() -> Iterator[Chain]:
    with start_anvil(accounts=2) as chain:
        yield chain


@pytest.fixture(scope="session")
def exchange_token(exchange_chain: Chain) -> Any:
    deployer = exchange_chain.accounts[0]
    return deploy_contract(
        exchange_chain, deployer, "TestUSDC", "USD Coin", "USDC", "2", deployer.address
    )


@pytest.fixture(scope="session")
def token_info(exchange_token: Any) -> TokenInfo:
    return TokenInfo(exchange_token.address, "USD Coin", "USDC", "2", 6)


@pytest.fixture(scope="session")
def exchange_manager(exchange_chain: Chain, exchange_token: Any) -> ASCManager:
    return ASCManager.deploy(
        exchange_chain, exchange_chain.accounts[0], exchange_token.address, DISPUTE_WINDOW
    )


@pytest.fixture(scope="session")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.generate()


@pytest.fixture(scope="session")
def verifier(platform: SimulatedPlatform) -> SimulatedVerifier:
    """Trusts this test platform's simulation root, because the test says so."""
    return SimulatedVerifier(platform.root.public_key, allow_simulated=True)


@pytest.fixture
def world(
    exchange_chain: Chain, exchange_token: Any, token_info: TokenInfo,
    exchange_manager: ASCManager, platform: SimulatedPlatform, verifier: SimulatedVerifier,
    tmp_path: Any,
) -> World:
    return World(exchange_chain, exchange_token, token_info, exchange_manager, platform,
                 verifier, tmp_path)
