"""Deterministic deployment: contracts created at an address their creation code fixes
(does I/O to deploy).

:data:`CREATE2_PROXY` (the deployment proxy anvil and most EVM chains hold), called with
``salt ‖ init code``, creates that contract at keccak256(0xff ‖ proxy ‖ salt ‖
keccak256(init code))[12:]: an address that proves how the contract there was created
(:meth:`a402.vault_contract.A402Vault.created_with`), and, for a contract without
constructor arguments deployed with one salt, the same address on every chain
(:func:`ensure_transfer_prover`).
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from a402.chain.artifacts import load_artifact
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.evm.address import to_checksum
from a402.evm.keccak import keccak256

CREATE2_PROXY = "0x4e59b44847b379578588920cA78FbF26c0B4956C"

#: The salt of the one ``TransferProver`` per chain.
PROVER_SALT = bytes(32)


def create2_address(salt: bytes, init: bytes) -> str:
    """Where :data:`CREATE2_PROXY` creates ``init`` with ``salt`` (EIP-55)."""
    return to_checksum(keccak256(b"\xff" + bytes.fromhex(CREATE2_PROXY[2:]) + salt
                                 + keccak256(init))[12:])


def create2_deploy(chain: Chain, account: LocalAccount, salt: bytes, init: bytes) -> str:
    """Create ``init`` with ``salt`` through :data:`CREATE2_PROXY`, sent by ``account``;
    its address."""
    transact(chain, account, {"to": chain.w3.to_checksum_address(CREATE2_PROXY),
                              "data": HexStr("0x" + (salt + init).hex())})
    return create2_address(salt, init)


def _prover_init() -> bytes:
    return bytes.fromhex(load_artifact("TransferProver").bytecode.removeprefix("0x"))


def transfer_prover_address() -> str:
    """Where this release's ``TransferProver`` is, on every chain with the proxy."""
    return create2_address(PROVER_SALT, _prover_init())


def ensure_transfer_prover(chain: Chain, account: LocalAccount) -> str:
    """Create the chain's ``TransferProver`` unless it is there already; its address."""
    address = transfer_prover_address()
    if not chain.w3.eth.get_code(chain.w3.to_checksum_address(address)):
        create2_deploy(chain, account, PROVER_SALT, _prover_init())
    return address


__all__ = ["CREATE2_PROXY", "PROVER_SALT", "create2_address", "create2_deploy",
           "ensure_transfer_prover", "transfer_prover_address"]
