"""Fixtures for the ASC tests: a private anvil (dispute windows need time travel,
which must not disturb the shared node's other tests), TestUSDC and an ASCManager.

Every test that opens a channel gets fresh client, vault and provider keys
(:func:`parties`), so balances are exact deltas and tests are order-independent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from a402.asc_manager import ASCManager
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract

from .helpers import DISPUTE_WINDOW, Parties, make_parties


@pytest.fixture(scope="session")
def asc_chain() -> Iterator[Chain]:
    with start_anvil(accounts=4) as chain:
        yield chain


@pytest.fixture(scope="session")
def usdc(asc_chain: Chain) -> Any:
    deployer = asc_chain.accounts[0]
    return deploy_contract(
        asc_chain, deployer, "TestUSDC", "USD Coin", "USDC", "2", deployer.address
    )


@pytest.fixture(scope="session")
def manager(asc_chain: Chain, usdc: Any) -> ASCManager:
    return ASCManager.deploy(asc_chain, asc_chain.accounts[0], usdc.address, DISPUTE_WINDOW)


@pytest.fixture
def parties(asc_chain: Chain, usdc: Any, manager: ASCManager) -> Callable[..., Parties]:
    def make(deposit: int = 1_000_000, **kwargs: object) -> Parties:
        return make_parties(asc_chain, usdc, manager, deposit, **kwargs)

    return make
