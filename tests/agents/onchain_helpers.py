"""Helpers for the on-chain agent tests (plain functions; each test module owns its fixtures)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.logs import DISCARD
from web3.types import TxReceipt

from a402.agents.card import Interface, OnchainCard, Payment, Skill
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact

ETH = 10**18


def selector(error: str) -> str:
    """The hex selector of a custom error signature such as ``"NotAPayer(address)"``."""
    return keccak(text=error)[:4].hex()


def reverts_with(error: str) -> Any:
    """``pytest.raises`` for a revert with custom error ``error``, checked by its selector."""
    return pytest.raises(TransactionFailed, match=selector(error))


def fresh_account(chain: Chain, eth: int = ETH) -> LocalAccount:
    """A new key holding ``eth`` wei, so tests never share a sender's nonce or balance."""
    account: LocalAccount = Account.create()
    if eth:
        transact(chain, chain.accounts[0], {"to": account.address}, value=eth)
    return account


def eth_balance(chain: Chain, address: str) -> int:
    return int(chain.w3.eth.get_balance(chain.w3.to_checksum_address(address)))


def increase_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def events(contract: Any, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    """The decoded ``args`` of every ``name`` event ``contract`` itself emitted in ``receipt``.

    Filtered by address: every agent clone shares one ABI, so a signature match alone
    would also pick up another agent's events from the same transaction.
    """
    decoded = getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return [dict(e["args"]) for e in decoded if e["address"] == contract.address]


def sample_card(
    *, name: str = "Translator", pay_to: str | None = None, asset: str | None = None,
    amount: int = 10_000, network: str = "eip155:31337", version: str = "1.0.0",
) -> OnchainCard:
    """A card like the ones the A2A provider serves: two interfaces, one skill, x402 terms."""
    payment = None
    if pay_to is not None:
        payment = Payment(network=network, asset=asset or pay_to, amount=amount, pay_to=pay_to)
    return OnchainCard(
        name=name,
        description="Translates text between languages.",
        interfaces=(Interface("https://translator.example/a2a"),
                    Interface("https://translator.example/a2a", "JSONRPC", "0.3")),
        version=version,
        skills=(Skill("translate", "Translate", "Translate a text.", ("language", "text"),
                      examples=("Translate 'hello' to French",)),),
        payment=payment,
        payment_description="Payment per task with x402 (exact, EIP-3009) in task metadata."
        if payment else "",
    )
