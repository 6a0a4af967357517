"""A402Vault: deposits, aggregated settlement by a gas payer, owed payouts.

The vault enclave's key never sends a transaction (it holds no ETH): a gas payer
submits what it signed. Every test asserts token balances, not only statuses.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import (
    BalanceStatement,
    VaultChannelTerms,
    pack_confirms,
    pack_payouts,
    pending_digest,
    settlement_digest,
    statement_digest,
    unpack_payouts,
    vault_channel_id,
)
from a402.vault_contract import A402Vault

from .helpers import (
    SETTLE_WINDOW,
    balance,
    fund_pool,
    funded,
    index_of,
    new_vault_key,
    now,
    reverts_with,
    selector,
    settle,
    sign_settlement,
)

pytestmark = pytest.mark.anvil


# ------------------------------------------------------------------ encoders


def test_the_pure_encoders_give_the_contracts_own_digests(vault: A402Vault) -> None:
    a, b = funded(vault.chain, None, eth=0).address, funded(vault.chain, None, eth=0).address
    packed = pack_payouts([(a, 7, 1), (b, 2**32 - 1, 2**96 - 1)])
    assert len(packed) == 72
    assert unpack_payouts(packed) == [(bytes.fromhex(a[2:]), 7, 1),
                                      (bytes.fromhex(b[2:]), 2**32 - 1, 2**96 - 1)]
    for epoch, deposits in ((1, 0), (7, 5 << 224 | 12345), (2**31 - 1, 2**256 - 1)):
        ours = settlement_digest(vault.domain, epoch, packed, deposits)
        assert ours == vault.settlement_digest(epoch, packed, deposits)
        assert settlement_digest(vault.domain, epoch, b"", deposits) == vault.settlement_digest(
            epoch, b"", deposits)
        assert settlement_digest(vault.domain, epoch, packed, deposits, 2**64 - 1) == (
            vault.settlement_digest(epoch, packed, deposits, 2**64 - 1))
        anchor = (2**64 - 1, os.urandom(32))
        assert settlement_digest(vault.domain, epoch, packed, deposits, anchor=anchor[0],
                                 anchor_hash=anchor[1]) == vault.settlement_digest(
            epoch, packed, deposits, anchor=anchor[0], anchor_hash=anchor[1])
    for st in (BalanceStatement(a, 99, 123, 45, 6, 7),
               BalanceStatement(a, 99, 123, 45, 6, 7, 8, 9, 10, 2**128 - 1)):
        assert statement_digest(vault.domain, st) == vault.statement_digest(st)
    terms = VaultChannelTerms(a, b, os.urandom(32), 10**6, os.urandom(32))
    cid = vault_channel_id(vault.domain, terms)
    assert cid == vault.channel_id(terms)
    assert pending_digest(vault.domain, cid, 9, 3, 4, 1_700_000_000) == vault.pending_digest(
        cid, 9, 3, 4, 1_700_000_000)
    for bad in ([(a, 1, 2**96)], [(a, 2**32, 1)]):
        with pytest.raises(ValueError):
            pack_payouts(bad)
    with pytest.raises(ValueError):
        unpack_payouts(packed[:40])


# ------------------------------------------------------------------ deposits


def test_anyone_deposits_for_a_participant_and_the_pool_grows_by_exactly_that(
    vault_chain: Chain, usdc: Any, vault: A402Vault
) -> None:
    funder, provider = funded(vault_chain, usdc, 700), funded(vault_chain, usdc, eth=0)
    transact(vault_chain, funder, usdc.functions.approve(vault.address, 700))
    r1 = vault.deposit(funder, funder.address, 500)
    r2 = vault.deposit(funder, provider.address, 200)  # funds a provider's account
    assert vault.events("Deposited", r1) == [
        {"participant": funder.address, "amount": 500, "deposited": 500}]
    assert vault.events("Deposited", r2) == [
        {"participant": provider.address, "amount": 200, "deposited": 200}]
    assert (vault.deposited(funder.address), vault.deposited(provider.address)) == (500, 200)
    assert vault.claim_state() == 0  # deposits fold no chain: nothing to front-run
    assert balance(usdc, funder.address) == 0
    assert balance(usdc, vault.address) == 700 == vault.available()
    with reverts_with("InvalidTerms()"):
        vault.deposit(funder, funder.address, 0)


def test_a_deposit_that_does_not_arrive_whole_is_refused(
    vault_chain: Chain, vault_key: EcdsaSigner
) -> None:
    deployer = vault_chain.accounts[0]
    fee_token = deploy_contract(vault_chain, deployer, "FeeOnTransferToken")
    fee_vault = A402Vault.deploy(vault_chain, deployer, fee_token.address,
                                 "0x" + vault_key.address.hex(), SETTLE_WINDOW)
    funder = funded(vault_chain, fee_token, 1_000)
    transact(vault_chain, funder, fee_token.functions.approve(fee_vault.address, 1_000))
    with reverts_with("DepositNotReceived(uint256,uint256)"):
        fee_vault.deposit(funder, funder.address, 1_000)
    assert balance(fee_token, funder.address) == 1_000
    assert balance(fee_token, fee_vault.address) == 0


# ---------------------------------------------------------------- settlement


def test_a_gas_payer_settles_many_payees_in_one_transaction_with_the_vaults_signature(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000_000)
    payees = [funded(vault_chain, usdc, eth=0) for _ in range(40)]
    amounts = [1_000 + 17 * i for i in range(40)]
    gas_payer = funded(vault_chain, usdc)
    receipt = settle(vault_key, vault, gas_payer, list(zip((p.address for p in payees), amounts,
                                                           strict=True)))
    assert [balance(usdc, p.address) for p in payees] == amounts
    assert balance(usdc, vault.address) == 10_000_000 - sum(amounts)
    assert vault.events("Settled", receipt) == [{"epoch": 1, "count": 40, "total": sum(amounts)}]
    # One event of the vault's own; the rest are the token's Transfer logs.
    own = [log for log in receipt["logs"] if log["address"] == vault.address]
    assert len(own) == 1
    assert vault.last_epoch() == 1
    assert all(vault.lane(index_of(p.address)).last_paid_epoch == 1 for p in payees)


def test_a_settlement_not_signed_by_the_vault_key_replayed_or_out_of_order_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    fund_pool(vault_chain, usdc, vault, 1_000_000)
    payee, gas_payer = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc)
    payouts = [(payee.address, 1_000)]
    packed, signature = sign_settlement(vault_key, vault, 1, payouts)
    _, other_key = sign_settlement(new_vault_key(), vault, 1, payouts)
    tampered = pack_payouts([(payee.address, index_of(payee.address), 100_000)])
    with reverts_with("BadSignature(address)"):
        vault.settle(gas_payer, packed, 1, vault.claim_state(), other_key)
    with reverts_with("BadSignature(address)"):
        vault.settle(gas_payer, tampered, 1, vault.claim_state(), signature)
    # Skipping an epoch is refused: a signed settlement can never be jumped over.
    packed3, signature3 = sign_settlement(vault_key, vault, 3, payouts)
    with reverts_with("WrongEpoch(uint64,uint64)"):
        vault.settle(gas_payer, packed3, 3, vault.claim_state(), signature3)
    vault.settle(gas_payer, packed, 1, vault.claim_state(), signature)
    with reverts_with("WrongEpoch(uint64,uint64)"):
        vault.settle(gas_payer, packed, 1, vault.claim_state(), signature)  # replay
    with reverts_with("MalformedPayouts()"):
        vault.settle(gas_payer, packed[:35], 2, vault.claim_state(), vault_key.sign_digest(
            settlement_digest(vault.domain, 2, packed[:35], vault.claim_state())))
    assert balance(usdc, payee.address) == 1_000


def test_a_settlement_cannot_pay_more_than_the_pool_holds(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    fund_pool(vault_chain, usdc, vault, 5_000)
    a, b = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc, eth=0)
    with reverts_with("InsufficientFunds(uint256,uint256)"):
        settle(vault_key, vault, funded(vault_chain, usdc),
               [(a.address, 3_000), (b.address, 2_001)])
    assert balance(usdc, vault.address) == 5_000
    assert vault.last_epoch() == 0


def test_a_refused_transfer_is_credited_to_owed_and_the_others_are_paid(
    vault_chain: Chain, vault_key: EcdsaSigner
) -> None:
    deployer = vault_chain.accounts[0]
    token = deploy_contract(vault_chain, deployer, "RestrictedToken")
    rvault = A402Vault.deploy(vault_chain, deployer, token.address,
                              "0x" + vault_key.address.hex(), SETTLE_WINDOW)
    fund_pool(vault_chain, token, rvault, 10_000)
    blocked, fine = funded(vault_chain, token), funded(vault_chain, token, eth=0)
    transact(vault_chain, deployer, token.functions.setBlocklisted(blocked.address, True))
    receipt = settle(vault_key, rvault, funded(vault_chain, token),
                     [(blocked.address, 3_000), (fine.address, 2_000)])
    assert balance(token, fine.address) == 2_000
    assert balance(token, blocked.address) == 0
    assert rvault.owed(blocked.address) == 3_000
    assert rvault.events("PayoutCredited", receipt) == [
        {"account": blocked.address, "amount": 3_000}]
    # Owed money is backed: it is not available to pay anything else.
    assert rvault.available() == 10_000 - 2_000 - 3_000
    elsewhere = funded(vault_chain, token, eth=0)
    deadline = now(vault_chain) + 600
    order = rvault.withdrawal_order(blocked, elsewhere.address, 1_000, deadline)
    rvault.withdraw_for(funded(vault_chain, token), blocked.address, elsewhere.address, 1_000,
                        deadline, order)
    rvault.withdraw(blocked, elsewhere.address)
    assert balance(token, elsewhere.address) == 3_000
    assert rvault.owed(blocked.address) == 0
    assert rvault.available() == balance(token, rvault.address) == 5_000
    with reverts_with("NothingOwed()"):
        rvault.withdraw(blocked, elsewhere.address)


def test_deployment_refuses_a_missing_vault_key_or_window(
    vault_chain: Chain, usdc: Any, vault_key: EcdsaSigner
) -> None:
    deployer: LocalAccount = vault_chain.accounts[0]
    for signer, window in (("0x" + "00" * 20, SETTLE_WINDOW), ("0x" + vault_key.address.hex(), 0)):
        with pytest.raises(TransactionFailed):
            A402Vault.deploy(vault_chain, deployer, usdc.address, signer, window)


def test_payouts_in_any_index_order_record_every_payees_epoch_in_its_lane(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """Eight lanes share a storage word; the settlement keeps one word in hand and writes it
    back when an index leaves it. Interleaved indices (words 0, 5, 0, 5, 1) must lose no
    lane, and neighbours not paid must keep theirs."""
    fund_pool(vault_chain, usdc, vault, 100_000)
    gas_payer = funded(vault_chain, usdc)
    payees = [funded(vault_chain, usdc, eth=0).address for _ in range(6)]
    indices = [1, 41, 2, 42, 9, 3]
    packed = pack_payouts([(p, i, 1_000) for p, i in zip(payees, indices, strict=True)])
    vault.settle(gas_payer, packed, 1, vault.claim_state(), vault_key.sign_digest(
        settlement_digest(vault.domain, 1, packed, vault.claim_state())))
    packed = pack_payouts([(payees[1], 41, 500), (payees[0], 1, 500)])
    vault.settle(gas_payer, packed, 2, vault.claim_state(), vault_key.sign_digest(
        settlement_digest(vault.domain, 2, packed, vault.claim_state())))
    assert [vault.lane(i).last_paid_epoch for i in indices] == [2, 2, 1, 1, 1, 1]
    assert [vault.lane(i).last_paid_epoch for i in (0, 4, 40, 43, 8)] == [0] * 5
    assert [balance(usdc, p) for p in payees] == [1_500, 1_500, 1_000, 1_000, 1_000, 1_000]
    assert not any(vault.lane(i).frozen for i in indices)


def test_a_token_that_calls_back_during_a_payout_cannot_settle_again(
    vault_chain: Chain, vault_key: EcdsaSigner
) -> None:
    deployer = vault_chain.accounts[0]
    token = deploy_contract(vault_chain, deployer, "ReentrantToken")
    rvault = A402Vault.deploy(vault_chain, deployer, token.address,
                              "0x" + vault_key.address.hex(), SETTLE_WINDOW)
    fund_pool(vault_chain, token, rvault, 10_000)
    payee, gas_payer = funded(vault_chain, token, eth=0), funded(vault_chain, token)
    # The hook replays a valid settlement of the next epoch from inside the first's payout.
    packed2, signature2 = sign_settlement(vault_key, rvault, 2, [(payee.address, 4_000)])
    header = (1, 2, rvault.claim_state(), 0, bytes(16), 0, bytes(32))
    data = rvault.contract.encode_abi("settle", [header, packed2, b"", (b"", b"", b""), b"",
                                                 signature2])
    transact(vault_chain, deployer, token.functions.arm(rvault.address, data))
    settle(vault_key, rvault, gas_payer, [(payee.address, 4_000)])
    assert token.functions.attempted().call()
    assert not token.functions.reentrySucceeded().call()
    assert bytes(token.functions.reentryResult().call())[:4].hex() == selector(
        "ReentrancyGuardReentrantCall()")
    assert balance(token, payee.address) == 4_000
    assert rvault.last_epoch() == 1


# ------------------------------------------------------------ deposit confirmations


def test_a_settlement_confirming_a_deposit_the_chain_never_saw_is_refused_and_pays_nobody(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """A host that reports an invented deposit has the enclave confirm a total the chain
    does not hold for that participant: the settlement cannot land, so the invented money is
    paid to nobody."""
    honest = fund_pool(vault_chain, usdc, vault, 5_000)
    thief, gas_payer = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc)
    packed = pack_payouts([(thief.address, index_of(thief.address), 5_000)])
    for forged in ([(thief.address, 5_000)],                       # invented
                   [(honest.address, 5_001)],                      # inflated
                   [(honest.address, 5_000), (thief.address, 1)]):
        confirms = pack_confirms(forged)
        signature = vault_key.sign_digest(settlement_digest(
            vault.domain, 1, packed, 0, packed_confirms=confirms))
        with reverts_with("DepositsNotMade(address,uint256,uint256)"):
            vault.settle(gas_payer, packed, 1, 0, signature, packed_confirms=confirms)
    assert balance(usdc, thief.address) == 0
    assert balance(usdc, vault.address) == 5_000 and vault.last_epoch() == 0


def test_deposits_mined_after_a_settlement_was_signed_cannot_stop_it(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """Review F7: the confirmation is a lower bound on each participant's deposits, which
    only grow, so dust deposits put in front of a settlement (for anyone, the confirmed
    participant included) change nothing it checks."""
    honest = fund_pool(vault_chain, usdc, vault, 3_000)
    payee, gas_payer = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc)
    confirms = pack_confirms([(honest.address, 3_000)])
    packed = pack_payouts([(payee.address, index_of(payee.address), 1_000)])
    signature = vault_key.sign_digest(settlement_digest(vault.domain, 1, packed, 0,
                                                        packed_confirms=confirms))
    griefer = funded(vault_chain, usdc, 2)
    transact(vault_chain, griefer, usdc.functions.approve(vault.address, 2))
    vault.deposit(griefer, honest.address, 1)
    vault.deposit(griefer, griefer.address, 1)
    vault.settle(gas_payer, packed, 1, 0, signature, packed_confirms=confirms)
    assert balance(usdc, payee.address) == 1_000
    assert balance(usdc, vault.address) == 2_002 and vault.last_epoch() == 1


def test_a_deposit_beyond_uint96_in_all_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault
) -> None:
    funder = funded(vault_chain, usdc, 2**96)
    transact(vault_chain, funder, usdc.functions.approve(vault.address, 2**96))
    with reverts_with("InvalidTerms()"):
        vault.deposit(funder, funder.address, 2**96)
    vault.deposit(funder, funder.address, 2**96 - 1)
    with reverts_with("InvalidTerms()"):  # the participant's total must fit too
        vault.deposit(funder, funder.address, 1)
    assert balance(usdc, vault.address) == 2**96 - 1 == vault.deposited(funder.address)
