"""A402Vault's escape hatch: force-settle with a signed balance statement, challenges,
the double-pay rule between settlements and statements (both orders), and a provider's
claim of a pending payment while the vault is dark, composed with the client's exit.

The rule under test (``contracts/A402Vault.sol``): a statement is usable only if
lastPaidEpoch[p] ≤ statement.epoch ≤ lastEpoch; a force-settle freezes the account and
later settlements withhold its payouts, which count toward the force-settle iff the
recorded statement is net of them; a claim draws δ from the client's ``locked`` as seen
by every statement whose nonce ≤ the pending record's client nonce.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.crypto import (
    EVM,
    EcdsaSigner,
    answer_hash,
    generate_adaptor,
    payment_message,
    result_hash,
)
from a402.crypto.authorization import sign_authorization
from a402.crypto.vault_messages import (
    VaultChannelTerms,
    claim_key,
    fold_claim,
    pack_payouts,
    pending_digest,
    settlement_digest,
    statement_digest,
    vault_channel_id,
)
from a402.vault_contract import A402Vault, AccountStatus, PendingClaim

from .helpers import (
    SETTLE_WINDOW,
    balance,
    fund_pool,
    funded,
    increase_time,
    index_of,
    leave,
    new_vault_key,
    now,
    reverts_with,
    settle,
    statement,
)

pytestmark = pytest.mark.anvil


def test_a_participant_force_settles_with_its_statement_after_the_window_and_is_frozen(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    p = funded(vault_chain, usdc, eth=0)  # the participant never sends: anyone does for it
    st, sig = statement(vault_key, vault, p.address, 4_000, nonce=3)
    receipt = leave(vault, gas_payer, st, sig)
    (event,) = vault.events("ForceSettleInitiated", receipt)
    assert event["deadline"] == now(vault_chain) + SETTLE_WINDOW
    assert vault.status(p.address) is AccountStatus.SETTLING
    with reverts_with("DisputeWindowOpen(uint256)"):
        vault.final_force_settle(gas_payer, p.address)
    with reverts_with("WrongStatus(address,uint8)"):  # one force-settle at a time
        leave(vault, gas_payer, st, sig)
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, p.address)
    assert balance(usdc, p.address) == 4_000
    assert balance(usdc, vault.address) == 6_000
    assert vault.status(p.address) is AccountStatus.SETTLED
    with reverts_with("WrongStatus(address,uint8)"):
        vault.final_force_settle(gas_payer, p.address)
    with reverts_with("WrongStatus(address,uint8)"):
        leave(vault, gas_payer, *statement(vault_key, vault, p.address, 4_000, nonce=9))
    # A settled account takes no deposit: nothing could ever pay it out again.
    depositor = funded(vault_chain, usdc, 10)
    transact(vault_chain, depositor, usdc.functions.approve(vault.address, 10))
    with reverts_with("WrongStatus(address,uint8)"):
        vault.deposit(depositor, p.address, 10)


def test_a_statement_not_signed_by_the_vault_key_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount
) -> None:
    fund_pool(vault_chain, usdc, vault, 1_000)
    p = funded(vault_chain, usdc, eth=0)
    with reverts_with("BadSignature(address)"):
        leave(vault, gas_payer, *statement(new_vault_key(), vault, p.address, 1_000))
    assert vault.status(p.address) is AccountStatus.ACTIVE


def test_a_stale_statement_loses_to_a_newer_one_inside_the_window(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    client = funded(vault_chain, usdc)
    old = statement(vault_key, vault, client.address, 5_000, nonce=4)   # before it spent
    new = statement(vault_key, vault, client.address, 3_500, nonce=6)   # after
    leave(vault, client, *old)
    watchtower = funded(vault_chain, usdc)
    with reverts_with("NotNewer(uint64,uint64)"):
        vault.challenge_force_settle(watchtower, *old)
    vault.challenge_force_settle(watchtower, *new)
    with reverts_with("NotNewer(uint64,uint64)"):  # the client cannot go back to the old one
        vault.challenge_force_settle(client, *statement(vault_key, vault, client.address, 5_000,
                                                        nonce=5))
    assert vault.force_settle(client.address).balance == 3_500
    increase_time(vault_chain, SETTLE_WINDOW)
    with reverts_with("DisputeWindowClosed(uint256)"):
        vault.challenge_force_settle(watchtower, *statement(vault_key, vault, client.address, 1,
                                                            nonce=7))
    vault.final_force_settle(watchtower, client.address)
    assert balance(usdc, client.address) == 3_500
    assert balance(usdc, vault.address) == 6_500


# ------------------------------------------------- settle ↔ force-settle


def test_settled_then_force_settled_with_a_statement_from_before_the_settlement_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """Double pay, settlement first: p's 2,000 is settled in epoch 1; its statement of
    epoch 0 still counts the 2,000. Refused; the statement of epoch 1 (net) is accepted."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    p = funded(vault_chain, usdc, eth=0)
    before = statement(vault_key, vault, p.address, 2_000, epoch=0, nonce=1)
    settle(vault_key, vault, gas_payer, [(p.address, 2_000)])
    assert balance(usdc, p.address) == 2_000
    with reverts_with("StaleStatement(uint64,uint64,uint64)"):
        leave(vault, gas_payer, *before)
    # Ahead of the chain (epoch 2 never landed): refused too.
    with reverts_with("StaleStatement(uint64,uint64,uint64)"):
        leave(vault, gas_payer, *statement(vault_key, vault, p.address, 0, epoch=2,
                                                      nonce=3))
    after = statement(vault_key, vault, p.address, 0, epoch=1, nonce=2)
    leave(vault, gas_payer, *after)
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, p.address)
    assert balance(usdc, p.address) == 2_000  # paid once
    assert balance(usdc, vault.address) == 8_000


def test_force_settled_then_a_settlement_paying_the_participant_withholds_its_payout(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """Double pay, force-settle first: p starts its exit with 2,000 (epoch 0), then a
    settlement the enclave signed before learning of it pays p 2,000 and q 500. p's payout
    is withheld (its statement counts it), q is paid; p leaves with 2,000, once."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    p, q = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc, eth=0)
    leave(vault, gas_payer, *statement(vault_key, vault, p.address, 2_000, nonce=1))
    receipt = settle(vault_key, vault, gas_payer, [(p.address, 2_000), (q.address, 500)])
    assert vault.events("PayoutWithheld", receipt) == [
        {"participant": p.address, "epoch": 1, "amount": 2_000}]
    assert vault.events("Settled", receipt) == [{"epoch": 1, "count": 1, "total": 500}]
    assert (balance(usdc, p.address), balance(usdc, q.address)) == (0, 500)
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, p.address)
    assert balance(usdc, p.address) == 2_000
    # After the exit, settlements keep withholding: nothing reaches p again.
    settle(vault_key, vault, gas_payer, [(p.address, 2_000)])
    assert balance(usdc, p.address) == 2_000
    assert balance(usdc, vault.address) == 10_000 - 500 - 2_000


def test_a_withheld_payout_counts_when_the_winning_statement_is_net_of_it(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """p starts with its epoch-0 statement (3,000); settlement 1 pays p 1,000 (withheld);
    the watchtower answers with the enclave's newer statement of epoch 1 (2,000 left, net
    of that payout). p must get 2,000 + the withheld 1,000 = 3,000: never more, never less."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    p = funded(vault_chain, usdc, eth=0)
    leave(vault, gas_payer, *statement(vault_key, vault, p.address, 3_000, nonce=1))
    settle(vault_key, vault, gas_payer, [(p.address, 1_000)])
    vault.challenge_force_settle(gas_payer, *statement(vault_key, vault, p.address, 2_000,
                                                       epoch=1, nonce=2))
    assert vault.settlement_of(p.address) == 3_000
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, p.address)
    assert balance(usdc, p.address) == 3_000
    assert balance(usdc, vault.address) == 7_000


# ------------------------------------------------------ the provider's claim


class Channel:
    """A vault-mode channel with one pending payment, as the enclave left it when it went
    dark: σ_U and the pending record signed, the provider holding t."""

    def __init__(self, chain: Chain, token: Any, vault: A402Vault, key: EcdsaSigner, *,
                 amount: int, client_nonce: int, deadline: int, epoch: int = 0) -> None:
        self.client = funded(chain, token, eth=0)
        self.provider = funded(chain, token, eth=0)
        self.schnorr = EVM.generate_key()
        self.terms = VaultChannelTerms(self.client.address, self.provider.address,
                                       self.schnorr.public_key, 10_000, os.urandom(32))
        self.cid = vault_channel_id(vault.domain, self.terms)
        self.vault, self.key = vault, key
        self.amount, self.client_nonce, self.deadline = amount, client_nonce, deadline
        self.epoch = epoch

    def claim(self, request_id: int = 0, *, authorizer: EcdsaSigner | None = None) -> PendingClaim:
        domain = self.vault.domain
        h = answer_hash(b"the request", result_hash(b"the result"))  # the h of m
        m = payment_message(domain, self.cid, request_id, self.amount, h)
        t, big_t = generate_adaptor()
        presig = EVM.pre_sign(self.schnorr, m, big_t)
        sigma_u = sign_authorization(authorizer or self.key, domain, m, self.amount, presig.r)
        signature = EVM.adapt(presig, t)
        pending = self.key.sign_digest(pending_digest(
            domain, self.cid, request_id, self.client_nonce, self.epoch, self.deadline))
        return PendingClaim(request_id, self.amount, h, signature[:32],
                            int.from_bytes(signature[32:], "big"), self.client_nonce,
                            self.epoch, self.deadline, sigma_u, pending)


def test_a_provider_is_paid_its_pending_payment_while_the_vault_is_dark(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=now(vault_chain) + 3_600)
    claim = ch.claim()
    receipt = vault.claim_payment(gas_payer, ch.terms, claim)
    assert balance(usdc, ch.provider.address) == 700
    assert balance(usdc, vault.address) == 9_300
    (event,) = vault.events("PaymentClaimed", receipt)
    # The vault reads (e, s) back and extracts t = s − ŝ to open the result.
    assert (event["channelId"], event["e"], event["s"]) == (ch.cid, claim.e, claim.s)
    with reverts_with("AlreadyClaimed(bytes32,uint256)"):
        vault.claim_payment(gas_payer, ch.terms, claim)
    assert balance(usdc, ch.provider.address) == 700


def test_a_claim_without_the_vaults_authorization_or_a_valid_signature_or_once_resolved_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=now(vault_chain) + 100)
    with reverts_with("BadSignature(address)"):
        vault.claim_payment(gas_payer, ch.terms, ch.claim(authorizer=new_vault_key()))
    good = ch.claim(1)
    with reverts_with("InvalidPaymentSignature()"):
        vault.claim_payment(gas_payer, ch.terms, dataclasses.replace(good, s=good.s + 1))
    with reverts_with("InvalidPaymentSignature()"):  # more than the provider signed for
        vault.claim_payment(gas_payer, ch.terms, dataclasses.replace(good, amount=701))
    with reverts_with("BadSignature(address)"):  # a later client nonce than the enclave's
        vault.claim_payment(gas_payer, ch.terms, dataclasses.replace(good, client_nonce=9))
    other = dataclasses.replace(ch.terms, provider=gas_payer.address)  # redirected
    with reverts_with("InvalidPaymentSignature()"):
        vault.claim_payment(gas_payer, other, good)
    # Past its deadline on the chain's clock but resolved by no landed settlement: still
    # claimable (review F5). Once a settlement resolving it (notBefore ≥ deadline) landed: no.
    increase_time(vault_chain, 200)
    packed, signature = b"", vault_key.sign_digest(settlement_digest(
        vault.domain, 1, b"", vault.claim_state(), ch.deadline))
    vault.settle(gas_payer, packed, 1, vault.claim_state(), signature, b"", ch.deadline)
    assert vault.resolved_until() == ch.deadline
    with reverts_with("ClaimResolved(uint64,uint64)"):
        vault.claim_payment(gas_payer, ch.terms, good)
    assert balance(usdc, ch.provider.address) == 0
    assert balance(usdc, vault.address) == 10_000


def test_the_client_cannot_force_settle_the_money_the_provider_claims(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """Pending δ = 700 was authorized at client nonce 5. The client's statement of nonce 5
    still counts it in `locked`; its statement of nonce 6 does not. Whichever statement the
    client's exit ends on, δ is paid once: to the provider."""
    fund_pool(vault_chain, usdc, vault, 30_000)
    deadline = now(vault_chain) + 3 * SETTLE_WINDOW
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=deadline)
    counting = statement(vault_key, vault, ch.client.address, 1_000, locked=10_000, nonce=5)
    leave(vault, gas_payer, *counting)
    vault.claim_payment(gas_payer, ch.terms, ch.claim())
    assert vault.settlement_of(ch.client.address) == 1_000 + 10_000 - 700
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, ch.client.address)
    assert balance(usdc, ch.client.address) == 10_300
    assert balance(usdc, ch.provider.address) == 700

    # Same, the client's exit on a statement that already excludes δ: nothing deducted.
    ch2 = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                  deadline=deadline)
    excluding = statement(vault_key, vault, ch2.client.address, 1_000, locked=9_300, nonce=6)
    leave(vault, gas_payer, *excluding)
    vault.claim_payment(gas_payer, ch2.terms, ch2.claim())
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, ch2.client.address)
    assert balance(usdc, ch2.client.address) == 10_300
    assert balance(usdc, ch2.provider.address) == 700
    assert balance(usdc, vault.address) == 30_000 - 2 * 11_000


def test_a_claim_on_a_client_that_already_left_with_the_money_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 20_000)
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=now(vault_chain) + 3 * SETTLE_WINDOW)
    leave(vault, gas_payer, *statement(vault_key, vault, ch.client.address, 0,
                                                  locked=10_000, nonce=4))
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, ch.client.address)  # took the 700 with its locked
    with reverts_with("ClientAlreadyPaid(address)"):
        vault.claim_payment(gas_payer, ch.terms, ch.claim())
    assert balance(usdc, ch.client.address) == 10_000
    assert balance(usdc, ch.provider.address) == 0


def test_a_frozen_lane_stops_a_second_participant_named_with_the_same_index(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """Indices are the enclave's word: if it ever gave two participants one index, their
    exits refuse each other rather than pay anything twice."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    p, q = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc, eth=0)
    st, sig = statement(vault_key, vault, p.address, 1_000)
    leave(vault, gas_payer, st, sig)
    assert vault.lane(st.index).frozen
    twin = dataclasses.replace(st, participant=q.address)
    with reverts_with("IndexFrozen(uint32)"):
        leave(vault, gas_payer, twin,
                                vault_key.sign_digest(statement_digest(vault.domain, twin)))
    with reverts_with("IndexFrozen(uint32)"):  # a challenge cannot move p's exit to another lane
        moved = dataclasses.replace(st, index=st.index + 1, nonce=2)
        vault.challenge_force_settle(gas_payer, moved,
                                     vault_key.sign_digest(statement_digest(vault.domain, moved)))


def test_a_pending_payment_signed_after_a_settlement_that_never_landed_is_not_claimable(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """The pending record names the last settlement the enclave had signed: the deposits
    that funded the payment are proven only once that settlement lands."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=now(vault_chain) + 3_600, epoch=1)
    with reverts_with("EpochNotSettled(uint64,uint64)"):
        vault.claim_payment(gas_payer, ch.terms, ch.claim())
    assert balance(usdc, ch.provider.address) == 0
    settle(vault_key, vault, gas_payer, [])  # settlement 1 lands (it only confirms deposits)
    vault.claim_payment(gas_payer, ch.terms, ch.claim(1))
    assert balance(usdc, ch.provider.address) == 700
    assert balance(usdc, vault.address) == 9_300


def test_a_claim_folds_the_claim_chain_and_rides_only_in_a_settlement_that_did_not_resolve_it(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """A settlement the vault signed before a claim landed may still land with the claim in
    its tail if its notBefore is earlier than the claim's deadline (it cannot have credited
    that payment off-chain); one whose notBefore reaches the deadline cannot."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    deadline = now(vault_chain) + 100
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=deadline)
    signed_at = vault.claim_state()
    payee = funded(vault_chain, usdc, eth=0)
    packed = pack_payouts([(payee.address, index_of(payee.address), 1_000)])

    def signed(not_before: int) -> bytes:
        return vault_key.sign_digest(settlement_digest(vault.domain, 1, packed, signed_at,
                                                       not_before))

    receipt = vault.claim_payment(gas_payer, ch.terms, ch.claim())
    after = fold_claim(signed_at, claim_key(ch.cid, 0), deadline)
    assert vault.claim_state() == after
    (event,) = vault.events("PaymentClaimed", receipt)
    assert (event["deadline"], event["claimState"]) == (deadline, after)
    with reverts_with("TooEarly(uint64)"):
        vault.settle(gas_payer, packed, 1, signed_at, signed(deadline),
                     vault.claims_since(signed_at), deadline)
    increase_time(vault_chain, 200)
    tail = vault.claims_since(signed_at)
    assert len(tail) == 64  # the claim: its key, then its deadline
    with reverts_with("ClaimInTail(uint64,uint64)"):
        vault.settle(gas_payer, packed, 1, signed_at, signed(deadline), tail, deadline)
    vault.settle(gas_payer, packed, 1, signed_at, signed(deadline - 1), tail, deadline - 1)
    assert balance(usdc, payee.address) == 1_000
    assert balance(usdc, ch.provider.address) == 700
    assert balance(usdc, vault.address) == 10_000 - 1_700
