"""Payouts that the token refuses never block the other party, nor undo a settlement.

A token like USDC refuses transfers to a blocklisted address and every transfer while
paused. ASCManager settles first and then tries each payout; a refused one is credited
to its receiver (``owed``), who takes it later with ``withdraw`` (to any address it
names) or a signed withdrawal order that anyone may submit. Checked here, on anvil with
:file:`contracts/RestrictedToken.sol`, in every exit path: the other party is paid in
the settling transaction, the refused party's money is owed to it to the unit, and the
escrow is conserved. Deposits that do not arrive whole (a fee-on-transfer token) are
refused at ``createASC``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import ChannelTerms, sign_channel_open
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact

from .helpers import (
    DISPUTE_WINDOW,
    EXITS,
    PAID,
    Parties,
    balance,
    cooperative,
    final_state,
    fresh_account,
    make_parties,
    reverts_with,
)

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000


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
    admin = asc_chain.accounts[0]
    for who in blocked:
        transact(asc_chain, admin, token.functions.setBlocklisted(who, False))
    transact(asc_chain, admin, token.functions.setPaused(False))


def block(p: Parties, who: str, restore: list[str]) -> None:
    transact(p.chain, p.chain.accounts[0], p.token.functions.setBlocklisted(who, True))
    restore.append(who)


def pause(p: Parties, paused: bool = True) -> None:
    transact(p.chain, p.chain.accounts[0], p.token.functions.setPaused(paused))


def opened(asc_chain: Chain, token: Any, manager: ASCManager) -> Parties:
    p = make_parties(asc_chain, token, manager, DEPOSIT)
    p.open()
    return p


@pytest.mark.parametrize("exit_path", EXITS)
@pytest.mark.parametrize("refused", ["client", "provider"])
def test_a_blocklisted_party_does_not_stop_the_other_being_paid(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str],
    exit_path: str, refused: str,
) -> None:
    p = opened(asc_chain, token, restricted)
    blocked: LocalAccount = getattr(p, refused)
    other = p.provider if refused == "client" else p.client
    due = {p.client.address: DEPOSIT - PAID, p.provider.address: PAID}
    escrow = balance(token, restricted.address)
    block(p, blocked.address, restore)

    EXITS[exit_path](p)

    assert restricted.channel(p.cid).status == OnChainStatus.CLOSED
    assert balance(token, other.address) == due[other.address]
    assert balance(token, blocked.address) == 0
    assert restricted.owed(blocked.address) == due[blocked.address]
    assert restricted.owed(other.address) == 0
    assert balance(token, restricted.address) == escrow - due[other.address]
    # The blocked party names another address of its own and takes what it is owed.
    elsewhere = fresh_account(asc_chain)
    restricted.withdraw(blocked, elsewhere.address)
    assert balance(token, elsewhere.address) == due[blocked.address]
    assert restricted.owed(blocked.address) == 0
    assert balance(token, restricted.address) == escrow - DEPOSIT


def test_a_blocklisted_pool_vault_does_not_hold_back_any_providers_earnings(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str]
) -> None:
    """A vault that is its channels' client (``createASC`` with client == vault, which the
    contract still allows). Blocklisting it credits its refunds; every provider in the batch is
    still paid. (``a402 vault``'s pool channels are opened from clients' on-chain pool
    balances instead, see test_pool.py.)"""
    vault = fresh_account(asc_chain)
    transact(asc_chain, asc_chain.accounts[0], token.functions.mint(vault.address, 3 * DEPOSIT))
    transact(asc_chain, vault, token.functions.approve(restricted.address, 3 * DEPOSIT))
    providers = [make_parties(asc_chain, token, restricted, DEPOSIT, client_funds=0)
                 for _ in range(3)]
    channels = [
        Parties(asc_chain, token, restricted, vault, vault, q.provider, q.schnorr,
                ChannelTerms(client=vault.address, vault=vault.address,
                             provider=q.provider.address, provider_key=q.schnorr.public_key,
                             deposit=DEPOSIT, salt=q.terms.salt))
        for q in providers
    ]
    restricted.create_batch(vault, [c.terms for c in channels])
    block(channels[0], vault.address, restore)
    receipt = restricted.close_batch(vault, [(c.terms, final_state(c)) for c in channels])
    assert restricted.skipped(receipt) == {}
    assert [balance(token, c.provider.address) for c in channels] == [PAID] * 3
    assert restricted.owed(vault.address) == 3 * (DEPOSIT - PAID)


@pytest.mark.parametrize("exit_path", EXITS)
def test_a_paused_token_credits_both_and_both_withdraw_once_it_resumes(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str], exit_path: str
) -> None:
    p = opened(asc_chain, token, restricted)
    pause(p)
    EXITS[exit_path](p)
    assert restricted.channel(p.cid).status == OnChainStatus.CLOSED
    assert (restricted.owed(p.client.address), restricted.owed(p.provider.address)) == (
        DEPOSIT - PAID, PAID)
    with pytest.raises(TransactionFailed, match="paused"):
        restricted.withdraw(p.provider, p.provider.address)  # still paused: still owed
    assert restricted.owed(p.provider.address) == PAID
    pause(p, False)
    restricted.withdraw(p.client, p.client.address)
    restricted.withdraw(p.provider, p.provider.address)
    assert p.payouts() == (DEPOSIT - PAID, PAID)
    assert (restricted.owed(p.client.address), restricted.owed(p.provider.address)) == (0, 0)


def test_a_signed_withdrawal_order_is_carried_out_once_by_anyone(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str]
) -> None:
    p = opened(asc_chain, token, restricted)
    block(p, p.provider.address, restore)
    cooperative(p)
    relayer, elsewhere = fresh_account(asc_chain), fresh_account(asc_chain)
    deadline = int(asc_chain.w3.eth.get_block("latest")["timestamp"]) + 3_600
    order = restricted.withdrawal_order(p.provider, elsewhere.address, PAID, deadline)
    with reverts_with("BadSignature(address)"):  # not to the address it names
        restricted.withdraw_for(relayer, p.provider.address, relayer.address, PAID, deadline,
                                order)
    with reverts_with("BadSignature(address)"):  # not more than it names
        restricted.withdraw_for(relayer, p.provider.address, elsewhere.address, PAID + 1,
                                deadline, order)
    restricted.withdraw_for(relayer, p.provider.address, elsewhere.address, PAID, deadline,
                            order)
    assert balance(token, elsewhere.address) == PAID
    assert restricted.owed(p.provider.address) == 0
    with reverts_with("BadSignature(address)"):  # used: its nonce has passed
        restricted.withdraw_for(relayer, p.provider.address, elsewhere.address, PAID, deadline,
                                order)


def test_a_withdrawal_takes_only_what_is_owed(
    asc_chain: Chain, token: Any, restricted: ASCManager, restore: list[str]
) -> None:
    p = opened(asc_chain, token, restricted)
    with reverts_with("NothingOwed()"):
        restricted.withdraw(p.client, p.client.address)
    block(p, p.client.address, restore)
    cooperative(p)
    past = int(asc_chain.w3.eth.get_block("latest")["timestamp"]) - 1
    order = restricted.withdrawal_order(p.client, p.vault.address, 1, past)
    with reverts_with("OrderExpired(uint256)"):
        restricted.withdraw_for(p.vault, p.client.address, p.vault.address, 1, past, order)
    later = past + 7_200
    too_much = restricted.withdrawal_order(p.client, p.vault.address, DEPOSIT, later)
    with reverts_with("NothingOwed()"):
        restricted.withdraw_for(p.vault, p.client.address, p.vault.address, DEPOSIT, later,
                                too_much)
    restricted.withdraw(p.client, p.vault.address)
    with reverts_with("NothingOwed()"):
        restricted.withdraw(p.client, p.vault.address)
    assert balance(token, p.vault.address) == DEPOSIT - PAID


def test_a_fee_on_transfer_token_is_refused_at_open(asc_chain: Chain) -> None:
    fee_token = deploy_contract(asc_chain, asc_chain.accounts[0], "FeeOnTransferToken")
    manager = ASCManager.deploy(asc_chain, asc_chain.accounts[0], fee_token.address,
                                DISPUTE_WINDOW)
    p = make_parties(asc_chain, fee_token, manager, DEPOSIT)
    with reverts_with("DepositNotReceived(uint256,uint256)"):
        p.open()
    assert balance(fee_token, p.client.address) == DEPOSIT
    assert manager.channel(p.cid).status == OnChainStatus.NONE
    consent = sign_channel_open(p.client_signer, manager.domain, p.terms)
    with reverts_with("DepositNotReceived(uint256,uint256)"):
        manager.create_batch(p.vault, [p.terms], [consent])
    assert balance(fee_token, manager.address) == 0
