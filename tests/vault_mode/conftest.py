"""Fixtures for the vault-mode contract: a private anvil (force-settles need time travel),
TestUSDC, the vault enclave's key (which never sends) and an ``A402Vault`` bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract
from a402.crypto import EcdsaSigner
from a402.vault_contract import A402Vault

from .accounts_setup import Host
from .helpers import SETTLE_WINDOW, funded, new_vault_key


@pytest.fixture(scope="session")
def vault_chain() -> Iterator[Chain]:
    with start_anvil(accounts=4) as chain:
        yield chain


@pytest.fixture(scope="session")
def usdc(vault_chain: Chain) -> Any:
    deployer = vault_chain.accounts[0]
    return deploy_contract(
        vault_chain, deployer, "TestUSDC", "USD Coin", "USDC", "2", deployer.address
    )


@pytest.fixture(scope="session")
def vault_key() -> EcdsaSigner:
    return new_vault_key()


@pytest.fixture
def vault(vault_chain: Chain, usdc: Any, vault_key: EcdsaSigner) -> A402Vault:
    """A fresh vault per test: epochs start at 0 and the pool holds only what the test put."""
    return A402Vault.deploy(vault_chain, vault_chain.accounts[0], usdc.address,
                            "0x" + vault_key.address.hex(), SETTLE_WINDOW)


@pytest.fixture
def gas_payer(vault_chain: Chain, usdc: Any) -> LocalAccount:
    """Whoever sends what others signed (it holds ETH and no stake in the vault)."""
    return funded(vault_chain, usdc)


@pytest.fixture
def host(vault_chain: Chain, usdc: Any) -> Host:
    """A vault-mode enclave (simulated) and the A402Vault whose key it holds, with the
    host's part played in a few lines (:class:`~tests.vault_mode.accounts_setup.Host`)."""
    return Host(vault_chain, usdc).start()
