"""Helpers for the vault-mode tests: funded keys, the enclave's signatures, time travel."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact
from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import (
    BalanceStatement,
    pack_confirms,
    pack_payouts,
    settlement_digest,
    statement_digest,
)
from a402.vault_contract import A402Vault

SETTLE_WINDOW = 3_600
ETH = 10**18
MAX_UINT = 2**256 - 1


_indices: dict[str, int] = {}
_next_index = itertools.count(1)


def index_of(participant: str) -> int:
    """The participant's stable index, as the enclave assigns it on first sight."""
    if participant not in _indices:
        _indices[participant] = next(_next_index)
    return _indices[participant]


def new_vault_key() -> EcdsaSigner:
    return EcdsaSigner(os.urandom(32))


def selector(signature: str) -> str:
    return keccak(signature.encode())[:4].hex()


def reverts_with(error: str) -> Any:
    """``pytest.raises`` for a revert with custom error ``error`` (matched by selector)."""
    return pytest.raises(TransactionFailed, match=selector(error))


def balance(token: Any, who: str) -> int:
    return int(token.functions.balanceOf(who).call())


def increase_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def now(chain: Chain) -> int:
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def funded(chain: Chain, token: Any, tokens: int = 0, eth: int = ETH) -> LocalAccount:
    """A fresh key with ``eth`` wei and ``tokens`` token units."""
    account = Account.create()
    remember(account, account.address)
    if eth:
        transact(chain, chain.accounts[0], {"to": account.address}, value=eth)
    if tokens:
        transact(chain, chain.accounts[0], token.functions.mint(account.address, tokens))
    return account


def fund_pool(chain: Chain, token: Any, vault: A402Vault, amount: int) -> LocalAccount:
    """Someone deposits ``amount`` for themselves, so the pool can pay what the test signs."""
    depositor = funded(chain, token, amount)
    transact(chain, depositor, token.functions.approve(vault.address, amount))
    vault.deposit(depositor, depositor.address, amount)
    return depositor


def sign_settlement(key: EcdsaSigner, vault: A402Vault, epoch: int,
                    payouts: Sequence[tuple[str, int]], *, prev_epoch: int | None = None,
                    confirms: bytes = b"") -> tuple[bytes, bytes]:
    """The packed payouts (with each payee's index, sorted by it) and the vault key's
    signature authorising them at ``epoch`` with the contract's claim state now (the
    enclave's own view of the claims, when it is in step with the chain)."""
    packed = pack_payouts(sorted(((a, index_of(a), x) for a, x in payouts),
                                 key=lambda r: r[1]))
    return packed, key.sign_digest(settlement_digest(vault.domain, epoch, packed,
                                                     vault.claim_state(), prev_epoch=prev_epoch,
                                                     packed_confirms=confirms))


def settle(key: EcdsaSigner, vault: A402Vault, sender: LocalAccount,
           payouts: Sequence[tuple[str, int]], *, confirms: Sequence[tuple[str, int]] = ()
           ) -> Any:
    epoch = vault.last_epoch() + 1
    packed_confirms = pack_confirms(confirms)
    packed, signature = sign_settlement(key, vault, epoch, payouts, confirms=packed_confirms)
    return vault.settle(sender, packed, epoch, vault.claim_state(), signature,
                        packed_confirms=packed_confirms)


def statement(key: EcdsaSigner, vault: A402Vault, participant: str, balance_: int, *,
              locked: int = 0, epoch: int = 0, nonce: int = 1, deposited: int = 0,
              transferred: int = 0) -> tuple[BalanceStatement, bytes]:
    st = BalanceStatement(participant, index_of(participant), balance_, locked, epoch, nonce,
                          deposited, transferred=transferred)
    return st, key.sign_digest(statement_digest(vault.domain, st))


#: Every participant key the tests make, by address: what signs a participant's exit order.
KEYS: dict[str, Any] = {}


def remember(key: Any, address: str) -> Any:
    KEYS[address.lower()] = key
    return key


def leave(vault: A402Vault, sender: LocalAccount, st: BalanceStatement, signature: bytes) -> Any:
    """``initForceSettle`` sent by ``sender`` with the participant's signed exit order (only
    the participant can start its exit)."""
    return vault.init_force_settle(sender, st, signature,
                                   vault.exit_order(KEYS[st.participant.lower()], st))
