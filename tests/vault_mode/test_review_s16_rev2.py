"""Adversarial review s16 (rev2): ``a402 vault deposit``'s check of the vault's A402Vault.

Played on anvil against the real ``A402Vault`` and TestUSDC; asserts token balances."""

from __future__ import annotations

from typing import Any

import pytest

from a402.chain.artifacts import load_artifact
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.evm.address import to_checksum
from a402.evm.keccak import keccak256
from a402.vault_contract import A402Vault

from .helpers import SETTLE_WINDOW, balance, funded, new_vault_key

pytestmark = pytest.mark.anvil

#: ``owed`` and ``totalOwed``'s storage slots in A402Vault (EIP712's two fallback strings
#: take slots 0 and 1; then lastEpoch|resolvedUntil|ledger, totalOwed, claimState, and the
#: mappings in declaration order).
TOTAL_OWED_SLOT, OWED_SLOT = 3, 13


def _push32(value: int) -> bytes:
    return b"\x7f" + value.to_bytes(32, "big")


@pytest.mark.xfail(strict=True, reason="review s16-rev2-1: runs_this_release checks the "
                   "runtime code only; a constructor of the host's may preset any storage")
def test_deposit_refuses_an_a402vault_whose_own_constructor_preset_its_storage(
    vault_chain: Chain, usdc: Any
) -> None:
    """A host deploys, with creation code of its own, a contract whose runtime code is byte
    for byte this release's A402Vault for the token, the vault's published key and window
    (so the getters and ``runs_this_release`` hold), but whose constructor first wrote
    ``owed[host] = totalOwed = 10^12``. Its /v1/info names it and the published key: every
    check ``a402 vault deposit --vault-address`` makes passes. Carol deposits 4,000; the host
    withdraws them by ``withdrawWithSignature`` (no enclave signature needed). Code equality
    says nothing of storage: the check must prove the contract's creation (e.g. its deploy
    transaction's input, or a CREATE2 address over the expected init code)."""
    from a402.vault.mode_command import CommandError, _check_vault

    host = funded(vault_chain, usdc)
    published = to_checksum("0x" + new_vault_key().address.hex())
    artifact = load_artifact("A402Vault")
    factory = vault_chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    genuine = factory.constructor(usdc.address, published, SETTLE_WINDOW).data_in_transaction
    # the runtime code the genuine creation gives at the host's next CREATE address
    runtime = bytes(vault_chain.w3.eth.call({"from": host.address, "data": genuine}))
    preset = 10**12
    owed_slot = int.from_bytes(keccak256(bytes(12) + bytes.fromhex(host.address[2:])
                                         + OWED_SLOT.to_bytes(32, "big")), "big")
    prologue = b"".join(_push32(preset) + _push32(slot) + b"\x55"
                        for slot in (owed_slot, TOTAL_OWED_SLOT))
    tail = len(prologue) + 15  # PUSH2 n PUSH2 off PUSH1 0 CODECOPY PUSH2 n PUSH1 0 RETURN
    n = len(runtime).to_bytes(2, "big")
    init = (prologue + b"\x61" + n + b"\x61" + tail.to_bytes(2, "big") + b"\x60\x00\x39"
            + b"\x61" + n + b"\x60\x00\xf3" + runtime)
    receipt = transact(vault_chain, host, {"data": "0x" + init.hex()})
    fake = A402Vault(vault_chain, receipt["contractAddress"])
    assert int(fake.contract.functions.owed(host.address).call()) == preset
    info = {"vault": published, "a402Vault": fake.address}
    refused = False
    try:
        _check_vault(published, info, fake)
    except CommandError:
        refused = True
    if not refused:  # what the deposit then does, and what the host does next
        carol = funded(vault_chain, usdc, 4_000)
        transact(vault_chain, carol, usdc.functions.approve(fake.address, 4_000))
        fake.deposit(carol, carol.address, 4_000)
        before = balance(usdc, host.address)
        digest = bytes(fake.contract.functions.withdrawalDigest(
            host.address, host.address, 4_000, 0, 2**64).call())
        order = bytes(host.unsafe_sign_hash(digest).signature)
        transact(vault_chain, host, fake.contract.functions.withdrawWithSignature(
            host.address, host.address, 4_000, 2**64, order))
        assert balance(usdc, host.address) - before == 4_000  # Carol's deposit, taken
        assert balance(usdc, carol.address) == balance(usdc, fake.address) == 0
    assert refused, "a contract with preset storage passed every check"
