"""The pool on-chain: per-client balances a vault can spend only into that client's channels.

``ASCManager.pooled[vault][client]`` is credited only by tokens arriving (``depositToPool``,
``depositToPoolWithAuthorization``), moved into a channel only with the vault's approval
(``createASCFromPool``), credited back by every exit of a pool channel, and taken out only by
the client (``withdrawFromPool``, or its signed order relayed by anyone). Checked here on
anvil, asserting token balances and ``pooled`` to the unit: exits, blocklists, signed orders,
deposits by authorization, batches, and conservation over a random sequence.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import (
    BalanceState,
    ChannelTerms,
    pool_deposit_nonce,
    pool_withdrawal_digest,
    sign_pool_open_approval,
)
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
from a402.crypto import EVM

from .helpers import (
    DISPUTE_WINDOW,
    EXITS,
    PAID,
    Parties,
    balance,
    cooperative,
    fresh_account,
    increase_time,
    reverts_with,
    selector,
)

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"


@pytest.fixture(scope="module")
def token(asc_chain: Chain) -> Any:
    return deploy_contract(asc_chain, asc_chain.accounts[0], "RestrictedToken")


@pytest.fixture(scope="module")
def restricted(asc_chain: Chain, token: Any) -> ASCManager:
    return ASCManager.deploy(asc_chain, asc_chain.accounts[0], token.address, DISPUTE_WINDOW)


@pytest.fixture
def restore(asc_chain: Chain, token: Any) -> Iterator[list[str]]:
    """Addresses a test blocklists; unblocked (and the token unpaused) afterwards."""
    blocked: list[str] = []
    yield blocked
    for who in blocked:
        transact(asc_chain, asc_chain.accounts[0], token.functions.setBlocklisted(who, False))
    transact(asc_chain, asc_chain.accounts[0], token.functions.setPaused(False))


def now(chain: Chain) -> int:
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def pool_client(chain: Chain, token: Any, manager: ASCManager, vault: str,
                amount: int) -> LocalAccount:
    """A fresh client with ``amount`` pooled with ``vault`` (deposited from its own wallet)."""
    client = fresh_account(chain)
    transact(chain, chain.accounts[0], token.functions.mint(client.address, amount))
    transact(chain, client, token.functions.approve(manager.address, amount))
    manager.deposit_to_pool(client, vault, client.address, amount)
    return client


def pool_channel(chain: Chain, token: Any, manager: ASCManager, *,
                 vault: LocalAccount | None = None, client: LocalAccount | None = None,
                 deposit: int = DEPOSIT) -> Parties:
    """A pool channel's parties (not opened): the client pooled ``deposit`` with the vault."""
    vault = vault or fresh_account(chain)
    client = client or pool_client(chain, token, manager, vault.address, deposit)
    provider = fresh_account(chain)
    schnorr = EVM.generate_key()
    terms = ChannelTerms(client=client.address, vault=vault.address, provider=provider.address,
                         provider_key=schnorr.public_key, deposit=deposit, salt=os.urandom(32))
    return Parties(chain, token, manager, client, vault, provider, schnorr, terms)


def opened(chain: Chain, token: Any, manager: ASCManager) -> Parties:
    p = pool_channel(chain, token, manager)
    manager.create_from_pool(p.vault, p.terms)
    return p


# ------------------------------------------------------------------- exits


@pytest.mark.parametrize("exit_path", EXITS)
def test_every_exit_of_a_pool_channel_credits_the_clients_share_back_to_the_pool(
    asc_chain: Chain, token: Any, restricted: ASCManager, exit_path: str
) -> None:
    p = pool_channel(asc_chain, token, restricted)
    escrow = balance(token, restricted.address)
    restricted.create_from_pool(p.vault, p.terms)
    assert restricted.pooled(p.vault.address, p.client.address) == 0
    assert restricted.pool_funded(p.cid)
    assert balance(token, restricted.address) == escrow  # opening moved no token

    EXITS[exit_path](p)

    assert restricted.channel(p.cid).status == OnChainStatus.CLOSED
    assert restricted.pooled(p.vault.address, p.client.address) == DEPOSIT - PAID
    assert p.payouts() == (0, PAID)  # the client's share stayed here, in its pool balance
    assert balance(token, restricted.address) == escrow - PAID
    restricted.withdraw_from_pool(p.client, p.vault.address, p.client.address, DEPOSIT - PAID)
    assert p.payouts() == (DEPOSIT - PAID, PAID)
    assert restricted.pooled(p.vault.address, p.client.address) == 0


@pytest.mark.parametrize("exit_path", EXITS)
def test_a_blocklisted_provider_leaves_the_clients_share_in_the_pool(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str], exit_path: str
) -> None:
    p = opened(asc_chain, token, restricted)
    transact(asc_chain, asc_chain.accounts[0], token.functions.setBlocklisted(p.provider.address,
                                                                               True))
    restore.append(p.provider.address)
    EXITS[exit_path](p)
    assert restricted.pooled(p.vault.address, p.client.address) == DEPOSIT - PAID
    assert restricted.owed(p.provider.address) == PAID
    assert p.payouts() == (0, 0)


def test_a_blocklisted_client_still_has_its_pool_share_and_takes_it_out_elsewhere(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str]
) -> None:
    p = opened(asc_chain, token, restricted)
    transact(asc_chain, asc_chain.accounts[0], token.functions.setBlocklisted(p.client.address,
                                                                               True))
    restore.append(p.client.address)
    cooperative(p)
    assert balance(token, p.provider.address) == PAID
    with pytest.raises(TransactionFailed, match="blacklisted"):  # nothing moved
        restricted.withdraw_from_pool(p.client, p.vault.address, p.client.address, 1)
    assert restricted.pooled(p.vault.address, p.client.address) == DEPOSIT - PAID
    elsewhere = fresh_account(asc_chain)
    restricted.withdraw_from_pool(p.client, p.vault.address, elsewhere.address, DEPOSIT - PAID)
    assert balance(token, elsewhere.address) == DEPOSIT - PAID


# ------------------------------------------------------------------ opening


def test_only_the_vaults_approval_opens_a_pool_channel_and_only_within_the_clients_balance(
    asc_chain: Chain, token: Any, restricted: ASCManager
) -> None:
    p = pool_channel(asc_chain, token, restricted)
    stranger = fresh_account(asc_chain)
    with reverts_with("NotAuthorized()"):
        restricted.create_from_pool(stranger, p.terms)
    with reverts_with("NotAuthorized()"):  # not even the client itself
        restricted.create_from_pool(p.client, p.terms)
    # Another vault cannot spend this client's balance with this vault.
    other = pool_channel(asc_chain, token, restricted, client=p.client)
    with reverts_with("InsufficientPool(uint256,uint256)"):
        restricted.create_from_pool(other.vault, other.terms)
    bigger = pool_channel(asc_chain, token, restricted, vault=p.vault, client=p.client,
                          deposit=DEPOSIT + 1)
    with reverts_with("InsufficientPool(uint256,uint256)"):
        restricted.create_from_pool(p.vault, bigger.terms)
    # The vault's signed approval, relayed by its gas payer, opens it once.
    deadline = now(asc_chain) + 600
    approval = sign_pool_open_approval(p.vault_signer, restricted.domain, p.terms, deadline)
    restricted.create_from_pool(stranger, p.terms, approval, deadline)
    assert restricted.pooled(p.vault.address, p.client.address) == 0
    with reverts_with("ChannelExists(bytes32)"):
        restricted.create_from_pool(stranger, p.terms, approval, deadline)


def test_a_pool_batch_with_one_member_short_of_balance_opens_the_others(
    asc_chain: Chain, token: Any, restricted: ASCManager
) -> None:
    vault = fresh_account(asc_chain)
    rich = pool_client(asc_chain, token, restricted, vault.address, 2 * DEPOSIT)
    poor = pool_client(asc_chain, token, restricted, vault.address, DEPOSIT - 1)
    members = [
        pool_channel(asc_chain, token, restricted, vault=vault, client=rich),
        pool_channel(asc_chain, token, restricted, vault=vault, client=poor),
        pool_channel(asc_chain, token, restricted, vault=vault, client=rich),
        pool_channel(asc_chain, token, restricted, vault=vault, client=rich),  # third: short
    ]
    escrow = balance(token, restricted.address)
    deadline = now(asc_chain) + 600
    approvals = [sign_pool_open_approval(m.vault_signer, restricted.domain, m.terms, deadline)
                 for m in members]
    receipt = restricted.create_from_pool_batch(
        fresh_account(asc_chain), [m.terms for m in members], approvals, [deadline] * 4)
    skipped = restricted.skipped(receipt)
    assert sorted(skipped) == [1, 3]
    short = selector("InsufficientPool(uint256,uint256)")
    assert skipped[1].hex() == short + (DEPOSIT - 1).to_bytes(32).hex() + DEPOSIT.to_bytes(32).hex()
    assert skipped[3].hex() == short + bytes(32).hex() + DEPOSIT.to_bytes(32).hex()
    assert [restricted.channel(m.cid).status for m in members] == [
        OnChainStatus.OPEN, OnChainStatus.NONE, OnChainStatus.OPEN, OnChainStatus.NONE]
    assert restricted.pooled(vault.address, rich.address) == 0
    assert restricted.pooled(vault.address, poor.address) == DEPOSIT - 1
    assert balance(token, restricted.address) == escrow


# -------------------------------------------------------------- withdrawals


def test_a_pool_client_takes_exactly_its_balance_out_with_the_vault_gone(
    asc_chain: Chain, token: Any, restricted: ASCManager
) -> None:
    """The vault's key is lost and its host is gone: the client needs neither."""
    p = opened(asc_chain, token, restricted)
    cooperative(p)
    neighbour = pool_client(asc_chain, token, restricted, p.vault.address, DEPOSIT)
    escrow = balance(token, restricted.address)
    with reverts_with("InsufficientPool(uint256,uint256)"):
        restricted.withdraw_from_pool(p.client, p.vault.address, p.client.address,
                                      DEPOSIT - PAID + 1)
    with reverts_with("InsufficientPool(uint256,uint256)"):  # nothing with another vault
        restricted.withdraw_from_pool(p.client, p.provider.address, p.client.address, 1)
    restricted.withdraw_from_pool(p.client, p.vault.address, p.client.address, DEPOSIT - PAID)
    assert balance(token, p.client.address) == DEPOSIT - PAID
    assert balance(token, restricted.address) == escrow - (DEPOSIT - PAID)
    with reverts_with("InsufficientPool(uint256,uint256)"):
        restricted.withdraw_from_pool(p.client, p.vault.address, p.client.address, 1)
    assert restricted.pooled(p.vault.address, neighbour.address) == DEPOSIT


def test_a_signed_pool_withdrawal_cannot_be_replayed_nor_redirected(
    asc_chain: Chain, token: Any, restricted: ASCManager
) -> None:
    vault = fresh_account(asc_chain)
    client = pool_client(asc_chain, token, restricted, vault.address, DEPOSIT)
    relayer, to = fresh_account(asc_chain), fresh_account(asc_chain)
    deadline = now(asc_chain) + 600
    nonce, order = restricted.pool_withdrawal_order(client, vault.address, to.address, PAID,
                                                    deadline)
    for redirected in (
        (vault.address, client.address, relayer.address, PAID),  # another `to`
        (vault.address, client.address, to.address, PAID + 1),  # more
        (relayer.address, client.address, to.address, PAID),  # another vault
    ):
        with reverts_with("BadSignature(address)"):
            restricted.withdraw_from_pool_for(relayer, *redirected, nonce, deadline, order)
    restricted.withdraw_from_pool_for(relayer, vault.address, client.address, to.address, PAID,
                                      nonce, deadline, order)
    assert balance(token, to.address) == PAID
    assert restricted.pooled(vault.address, client.address) == DEPOSIT - PAID
    with reverts_with("WrongNonce(uint256,uint256)"):  # used
        restricted.withdraw_from_pool_for(relayer, vault.address, client.address, to.address,
                                          PAID, nonce, deadline, order)
    late_nonce, late = restricted.pool_withdrawal_order(client, vault.address, to.address, 1,
                                                        now(asc_chain) - 1)
    with reverts_with("OrderExpired(uint256)"):
        restricted.withdraw_from_pool_for(relayer, vault.address, client.address, to.address, 1,
                                          late_nonce, now(asc_chain) - 1, late)
    assert balance(token, to.address) == PAID
    assert restricted.pooled(vault.address, client.address) == DEPOSIT - PAID


def test_a_withdrawal_to_a_blocklisted_address_is_refused_and_another_to_is_signed(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str]
) -> None:
    vault = fresh_account(asc_chain)
    client = pool_client(asc_chain, token, restricted, vault.address, DEPOSIT)
    relayer, blocked, good = (fresh_account(asc_chain) for _ in range(3))
    transact(asc_chain, asc_chain.accounts[0], token.functions.setBlocklisted(blocked.address,
                                                                               True))
    restore.append(blocked.address)
    escrow = balance(token, restricted.address)
    deadline = now(asc_chain) + 600
    nonce, order = restricted.pool_withdrawal_order(client, vault.address, blocked.address,
                                                    DEPOSIT, deadline)
    with pytest.raises(TransactionFailed, match="blacklisted"):
        restricted.withdraw_from_pool_for(relayer, vault.address, client.address,
                                          blocked.address, DEPOSIT, nonce, deadline, order)
    # Nothing moved; the order's nonce is still the next one.
    assert restricted.pooled(vault.address, client.address) == DEPOSIT
    assert balance(token, restricted.address) == escrow
    assert restricted.pool_withdrawal_nonce(client.address) == nonce
    # The client signs the same nonce to another address: only one of the two can ever go.
    _, instead = restricted.pool_withdrawal_order(client, vault.address, good.address, DEPOSIT,
                                                  deadline, nonce=nonce)
    restricted.withdraw_from_pool_for(relayer, vault.address, client.address, good.address,
                                      DEPOSIT, nonce, deadline, instead)
    assert balance(token, good.address) == DEPOSIT
    transact(asc_chain, asc_chain.accounts[0], token.functions.setBlocklisted(blocked.address,
                                                                               False))
    with reverts_with("WrongNonce(uint256,uint256)"):
        restricted.withdraw_from_pool_for(relayer, vault.address, client.address,
                                          blocked.address, DEPOSIT, nonce, deadline, order)
    assert balance(token, blocked.address) == 0


# ----------------------------------------------------------------- deposits


def test_a_deposit_by_authorization_credits_only_the_vault_client_and_amount_signed(
    asc_chain: Chain, usdc: Any, manager: ASCManager
) -> None:
    payer, vault, client, relayer = (fresh_account(asc_chain) for _ in range(4))
    transact(asc_chain, asc_chain.accounts[0], usdc.functions.mint(payer.address, DEPOSIT))
    auth = manager.sign_pool_deposit(
        payer, vault.address, client.address, DEPOSIT, os.urandom(32), token_name=TOKEN_NAME,
        token_version=TOKEN_VERSION, valid_after=0, valid_before=now(asc_chain) + 600)
    escrow = balance(usdc, manager.address)
    for changed in (replace(auth, client=relayer.address), replace(auth, vault=relayer.address),
                    replace(auth, amount=DEPOSIT - 1), replace(auth, salt=os.urandom(32))):
        with pytest.raises(TransactionFailed, match="invalid signature"):
            manager.deposit_to_pool_with_authorization(relayer, changed)
    assert balance(usdc, manager.address) == escrow
    receipt = manager.deposit_to_pool_with_authorization(relayer, auth)
    assert manager.events("PoolDeposited", receipt) == [
        {"vault": vault.address, "client": client.address, "amount": DEPOSIT}]
    assert manager.pooled(vault.address, client.address) == DEPOSIT
    assert manager.pooled(vault.address, payer.address) == 0
    assert balance(usdc, payer.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    with pytest.raises(TransactionFailed, match="authorization is used"):
        manager.deposit_to_pool_with_authorization(relayer, auth)
    assert manager.pooled(vault.address, client.address) == DEPOSIT


def test_a_fee_on_transfer_token_is_refused_at_the_pool(asc_chain: Chain) -> None:
    fee_token = deploy_contract(asc_chain, asc_chain.accounts[0], "FeeOnTransferToken")
    fees = ASCManager.deploy(asc_chain, asc_chain.accounts[0], fee_token.address, DISPUTE_WINDOW)
    client = fresh_account(asc_chain)
    transact(asc_chain, asc_chain.accounts[0], fee_token.functions.mint(client.address, DEPOSIT))
    transact(asc_chain, client, fee_token.functions.approve(fees.address, DEPOSIT))
    with reverts_with("DepositNotReceived(uint256,uint256)"):
        fees.deposit_to_pool(client, client.address, client.address, DEPOSIT)
    assert fees.pooled(client.address, client.address) == 0


# ------------------------------------------------------------- conservation


@dataclass
class Books:
    """What the test expects the manager to hold: Σ pooled + open escrow + Σ owed."""

    pooled: dict[tuple[str, str], int] = field(default_factory=dict)
    escrow: dict[bytes, int] = field(default_factory=dict)
    owed: dict[str, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.pooled.values()) + sum(self.escrow.values()) + sum(self.owed.values())


def test_the_manager_holds_exactly_the_pool_the_open_escrow_and_what_is_owed(
    asc_chain: Chain, token: Any, restore: list[str]
) -> None:
    """A seeded random sequence of deposits, opens, closes by every exit path (``closeASC``,
    ``closeASCBatch``, the client's force close; some to a blocklisted provider),
    withdrawals: after every step, the manager's token balance is Σ pooled + Σ open escrow +
    Σ owed, each term read from the contract. (``test_review_conservation``-style mixing of
    wallet channels and the provider's ``forceClose``: tests/asc/test_conservation.py.)"""
    manager = ASCManager.deploy(asc_chain, asc_chain.accounts[0], token.address, DISPUTE_WINDOW)
    rng = random.Random(402)
    vaults = [fresh_account(asc_chain) for _ in range(2)]
    clients = [fresh_account(asc_chain) for _ in range(3)]
    for c in clients:
        transact(asc_chain, asc_chain.accounts[0], token.functions.mint(c.address, 10 * DEPOSIT))
        transact(asc_chain, c, token.functions.approve(manager.address, 10 * DEPOSIT))
    books = Books()
    open_channels: list[tuple[Parties, int]] = []
    providers: list[str] = []
    exits: set[str] = set()

    def check() -> None:
        for (v, c), amount in books.pooled.items():
            assert manager.pooled(v, c) == amount
        for who in providers:
            assert manager.owed(who) == books.owed.get(who, 0)
        assert balance(token, manager.address) == books.total()

    for _ in range(60):
        step = rng.choice(["deposit", "deposit", "open", "open", "close", "withdraw"])
        vault, client = rng.choice(vaults), rng.choice(clients)
        key = (vault.address, client.address)
        if step == "deposit":
            amount = rng.randint(1, DEPOSIT)
            manager.deposit_to_pool(client, vault.address, client.address, amount)
            books.pooled[key] = books.pooled.get(key, 0) + amount
        elif step == "open":
            deposit = rng.randint(1, DEPOSIT)
            p = pool_channel(asc_chain, token, manager, vault=vault, client=client,
                             deposit=deposit)
            if books.pooled.get(key, 0) < deposit:
                with reverts_with("InsufficientPool(uint256,uint256)"):
                    manager.create_from_pool(vault, p.terms)
            else:
                manager.create_from_pool(vault, p.terms)
                books.pooled[key] -= deposit
                books.escrow[p.cid] = deposit
                open_channels.append((p, deposit))
        elif step == "close" and open_channels:
            p, deposit = open_channels.pop(rng.randrange(len(open_channels)))
            paid = rng.randint(0, deposit)
            providers.append(p.provider.address)
            if rng.random() < 0.3:
                transact(asc_chain, asc_chain.accounts[0],
                         token.functions.setBlocklisted(p.provider.address, True))
                restore.append(p.provider.address)
                books.owed[p.provider.address] = paid
            exit_path = rng.choice(["closeASC", "closeASCBatch", "finalForceClose"])
            if exit_path == "closeASC":
                manager.close(p.vault, p.terms,
                              p.signed(BalanceState(1, deposit - paid, paid, True)))
            elif exit_path == "closeASCBatch":
                manager.close_batch(p.vault, [(p.terms, p.signed(
                    BalanceState(1, deposit - paid, paid, True)))])
            else:  # the client's force close at the co-signed state, after the window
                manager.init_force_close(p.client, p.terms,
                                         p.signed(BalanceState(1, deposit - paid, paid)))
                check()  # Closing: still escrowed
                increase_time(asc_chain, DISPUTE_WINDOW)
                manager.final_force_close(p.vault, p.terms)
            exits.add(exit_path)
            del books.escrow[p.cid]
            pkey = (p.vault.address, p.client.address)
            books.pooled[pkey] = books.pooled.get(pkey, 0) + deposit - paid
        elif step == "withdraw" and books.pooled.get(key, 0):
            amount = rng.randint(1, books.pooled[key])
            manager.withdraw_from_pool(client, vault.address, client.address, amount)
            books.pooled[key] -= amount
        check()
    assert books.escrow or any(books.pooled.values())  # the sequence did something
    assert len(exits) >= 2, exits  # and closed by more than one path


def test_a_contract_wallets_pool_balance_leaves_by_its_eip1271_order(
    asc_chain: Chain, token: Any, restricted: ASCManager
) -> None:
    """A pool client that is a contract wallet (it sends nothing itself): someone pools
    tokens for it, and its owner's key signs the withdrawal order the wallet approves."""
    owner, payer, vault, relayer, to = (fresh_account(asc_chain) for _ in range(5))
    wallet = deploy_contract(asc_chain, asc_chain.accounts[0], "ERC1271Wallet", owner.address)
    transact(asc_chain, asc_chain.accounts[0], token.functions.mint(payer.address, DEPOSIT))
    transact(asc_chain, payer, token.functions.approve(restricted.address, DEPOSIT))
    restricted.deposit_to_pool(payer, vault.address, wallet.address, DEPOSIT)
    assert restricted.pooled(vault.address, wallet.address) == DEPOSIT
    assert restricted.pooled(vault.address, payer.address) == 0
    deadline = now(asc_chain) + 600
    digest = restricted.contract.functions.poolWithdrawalDigest(
        vault.address, wallet.address, to.address, PAID, 0, deadline).call()
    signature = bytes(owner.unsafe_sign_hash(digest).signature)
    stranger_signature = bytes(relayer.unsafe_sign_hash(digest).signature)
    with reverts_with("BadSignature(address)"):
        restricted.withdraw_from_pool_for(relayer, vault.address, wallet.address, to.address,
                                          PAID, 0, deadline, stranger_signature)
    restricted.withdraw_from_pool_for(relayer, vault.address, wallet.address, to.address, PAID,
                                      0, deadline, signature)
    assert balance(token, to.address) == PAID
    assert restricted.pooled(vault.address, wallet.address) == DEPOSIT - PAID


def test_the_pool_digests_are_the_contracts_own(restricted: ASCManager) -> None:
    vault, client, to = ("0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20)
    salt = os.urandom(32)
    functions = restricted.contract.functions
    checksum = restricted.chain.w3.to_checksum_address
    assert pool_deposit_nonce(restricted.domain, vault, client, 5, salt) == bytes(
        functions.poolDepositNonce(checksum(vault), checksum(client), 5, salt).call())
    assert pool_withdrawal_digest(restricted.domain, vault, client, to, 5, 7, 9) == bytes(
        functions.poolWithdrawalDigest(checksum(vault), checksum(client), checksum(to), 5, 7,
                                       9).call())
