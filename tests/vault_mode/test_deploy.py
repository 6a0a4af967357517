"""The dev stack deploys an A402Vault bound to the vault enclave's key when asked, and
keeps every manifest key it had."""

from __future__ import annotations

import pytest

from a402.chain.deploy import Manifest, deploy_dev_stack
from a402.chain.node import Chain
from a402.crypto import EcdsaSigner
from a402.vault_contract import A402Vault

from .helpers import new_vault_key

pytestmark = pytest.mark.anvil


def test_the_dev_stack_deploys_the_vault_contract_for_the_enclaves_key(
    vault_chain: Chain,
) -> None:
    upto = {"Permit2", "UptoPermit2Proxy"}  # x402 upto's, at the SDK's addresses on anvil
    plain = deploy_dev_stack(vault_chain, client_funds=1)
    assert set(plain.contracts) == {"TestUSDC", "MandateRegistry", *upto}
    key: EcdsaSigner = new_vault_key()
    stack = deploy_dev_stack(vault_chain, client_funds=1, asc_manager=True,
                             vault_signer="0x" + key.address.hex(), settle_window=900)
    assert set(stack.contracts) == {"TestUSDC", "MandateRegistry", "ASCManager", "A402Vault",
                                    *upto}
    again = Manifest.from_json(stack.to_json())
    vault = A402Vault(vault_chain, again.contracts["A402Vault"])
    assert vault.vault_signer.lower() == "0x" + key.address.hex()
    assert vault.token == stack.token.address
    assert vault.settle_window == 900
    assert vault.last_epoch() == 0
