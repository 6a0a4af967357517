"""Adversarial review of vault mode (session 8, rev3): each test plays one attack or
failure on anvil against the real ``A402Vault`` and the enclave's accounts, and asserts
what a participant should get. They were strict xfails (F1–F8, the review report); each
now passes with the fix named in its section (``contracts/A402Vault.sol`` docs).

Every scenario keeps the host honest unless it says otherwise: the point of most of them
is that the vault going dark, or one provider, is enough."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import ForceCloseDue
from a402.chain.tx import transact
from a402.crypto.vault_messages import VaultChannelTerms, unpack_payouts
from a402.tee import EnclaveError
from a402.vault.watchtower import VaultWatchtower
from a402.vault_accounts import CLAIM_WINDOW, PendingRecord
from a402.vault_contract import AccountStatus, PendingClaim

from .accounts_setup import PRICE, Host, VaultMode, client
from .helpers import SETTLE_WINDOW, balance, funded, increase_time, leave, now, reverts_with

pytestmark = pytest.mark.anvil


def _terms(vm: VaultMode, cid: bytes) -> VaultChannelTerms:
    t = vm.vault.terms(cid)
    return VaultChannelTerms("0x" + t.client.hex(), "0x" + t.provider.hex(), t.provider_key,
                             t.deposit, t.salt)


def _confirmed(host: Host, who: str, amount: int) -> None:
    host.deposit(who, amount)
    host.report_deposits()
    host.submit(host.vm.vault.settle([], now=now(host.chain)).settlement)


def _pay_ack_lost(host: Host, alice: LocalAccount, provider: Any, capacity: int = 5 * PRICE,
                  key: str = "k") -> tuple[bytes, PendingRecord, PendingClaim, bytes]:
    """Alice pays the provider one PRICE; the enclave gets the REVEAL (it will credit the
    provider at the deadline) but its ACK is lost: the provider's machine says to claim.
    Returns the channel, the pending record, the claim (not sent) and ``e ‖ s``."""
    vm = host.vm
    cid, side = vm.open(alice, provider, capacity)
    t0 = now(host.chain)
    exec_ = vm.vault.request(cid, vm.call(alice, key=key, ts=t0), PRICE, t0)
    side.receive(exec_, now=t0)
    authorized = vm.vault.receive(cid, side.reply(exec_.request_id, b"the result"), t0)
    reveal = side.receive(authorized.step.send[0], now=t0).send[0]
    vm.vault.receive(cid, reveal, t0)  # the ACK is dropped
    (due,) = side.poll(now=t0 + 31).events
    assert isinstance(due, ForceCloseDue)
    p = authorized.pending
    assert p is not None
    c = due.claim
    return cid, p, PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s,
                                p.client_nonce, p.epoch, p.deadline, c.authorization,
                                p.signature), c.signature


def _leave(host: Host, sender: LocalAccount, participant: str) -> None:
    increase_time(host.chain, SETTLE_WINDOW + 1)
    host.vault.final_force_settle(sender, participant)


# ------------------------------------------- F1: a claim voids a settlement, which is replaced


def test_a_providers_claim_in_the_last_second_of_its_window_does_not_kill_settlement(
    host: Host,
) -> None:
    """Honest host, honest enclave, one provider whose ACK was lost and which claims at
    the last second of its window (it was offline; or it means harm). The host's clock
    reads one second later, the claim's block is not reported yet (a host that waits for
    one confirmation), and the scheduler asks for a settlement: the enclave credits the
    revealed payment to the provider and confirms Carol's deposit. That settlement can
    never land (ClaimInTail). Told of the claim, the enclave signs its replacement (it
    follows epoch 1; epoch 2 is void): Carol's deposit is confirmed, the provider is not
    credited twice, not even by a challenge with its epoch-2 statement after it froze
    its own lane, and Carol leaves with her new statement."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, carol = client(), client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    cid, pending, claim, sig = _pay_ack_lost(host, alice, provider)
    empty = vm.vault.statement(provider.address)  # nothing credited yet
    host.deposit(carol.address, 30_000)
    host.report_deposits()
    # The provider's claim lands in the block stamped exactly at its deadline.
    gas_payer = funded(host.chain, usdc)
    host.chain.w3.provider.make_request("evm_setNextBlockTimestamp", [pending.deadline])
    vault.claim_payment(gas_payer, _terms(vm, cid), claim)
    assert balance(usdc, provider.address) == PRICE
    # One second later, before the host has reported that block, a settlement is due.
    signed = vm.vault.settle([], now=pending.deadline + 1)
    assert signed.settlement.not_before == pending.deadline
    credited = vm.vault.statement(provider.address)  # counts the claimed payment
    carol_v1 = vm.vault.statement(carol.address)
    assert (credited.statement.balance, credited.statement.epoch) == (PRICE, 2)
    increase_time(host.chain, 12)  # it may land from the next block on
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(signed.settlement)
    host.report_claim(cid, pending.request_id, sig)
    # The provider freezes its lane first (its empty statement), hoping to challenge later.
    leave(vault, host.gas, empty.statement, empty.signature)
    replacement = vm.vault.settle([], now=now(host.chain) + 10).settlement
    assert (replacement.prev, replacement.epoch) == (1, 3)
    host.submit(replacement)
    assert vault.last_epoch() == 3 and vault.is_voided(2) and not vault.is_voided(3)
    with reverts_with("VoidedEpoch(uint64)"):
        vault.challenge_force_settle(host.gas, credited.statement, credited.signature)
    with reverts_with("VoidedEpoch(uint64)"):
        leave(vault, host.gas, carol_v1.statement, carol_v1.signature)
    # Carol's new statement names the replacement.
    st = vm.vault.statement(carol.address)
    assert (st.statement.balance, st.statement.epoch) == (30_000, 3)
    leave(vault, host.gas, st.statement, st.signature)
    theirs = vm.vault.statement(provider.address)
    assert (theirs.statement.balance, theirs.statement.epoch) == (0, 3)
    vault.challenge_force_settle(host.gas, theirs.statement, theirs.signature)
    _leave(host, host.gas, carol.address)
    vault.final_force_settle(host.gas, provider.address)
    assert balance(usdc, carol.address) == 30_000
    assert balance(usdc, provider.address) == PRICE  # once
    assert balance(usdc, vault.address) == 20_000 - PRICE  # Alice's, nothing else


def test_a_voided_settlement_strands_none_of_the_other_providers_payments_it_resolved(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    attacker, honest = vm.provider(), vm.provider()
    _confirmed(host, alice.address, 20_000)
    cid, pending, claim, sig = _pay_ack_lost(host, alice, attacker)
    # Alice also pays an honest provider, normally (REVEAL and ACK), in the same minute.
    hcid, side = vm.open(alice, honest, 5 * PRICE)
    t0 = now(host.chain)
    vm.pay(hcid, side, vm.call(alice, key="honest", ts=t0), now=t0)
    gas_payer = funded(host.chain, usdc)
    host.chain.w3.provider.make_request("evm_setNextBlockTimestamp", [pending.deadline])
    vault.claim_payment(gas_payer, _terms(vm, cid), claim)
    signed = vm.vault.settle([], now=pending.deadline + 30)  # resolves both payments
    increase_time(host.chain, 60)
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(signed.settlement)
    host.report_claim(cid, pending.request_id, sig)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # the replacement
    # The honest provider's statement counting its 1,000 names the replacement.
    mine = vm.vault.statement(alice.address)
    assert mine.statement.balance + mine.statement.locked == 18_000
    st = vm.vault.statement(honest.address)
    assert st.statement.balance == PRICE and st.statement.epoch == 3 == vault.last_epoch()
    leave(vault, host.gas, st.statement, st.signature)
    leave(vault, host.gas, mine.statement, mine.signature)
    _leave(host, host.gas, honest.address)
    vault.final_force_settle(host.gas, alice.address)
    assert balance(usdc, honest.address) == PRICE
    assert balance(usdc, attacker.address) == PRICE
    assert balance(usdc, alice.address) == 18_000
    assert balance(usdc, vault.address) == 0


def test_a_replacement_settlement_does_not_pay_a_deposit_the_host_invented(host: Host) -> None:
    """A cheating host (review s14-rev12): it reports a deposit for a key of its own that
    was never made, and has the enclave sign a settlement that confirms it and pays it
    out, after a claim landed on a payment that settlement resolves (its own provider's,
    whose ACK it withheld). That settlement cannot land. Told of the claim, the enclave
    signs the replacement, which carries the voided settlement's payouts: it must carry
    its confirmations too, or the invented deposit is paid out of Alice's money."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, thief = client(), client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    cid, pending, claim, sig = _pay_ack_lost(host, alice, provider)
    gas_payer = funded(host.chain, usdc)
    host.chain.w3.provider.make_request("evm_setNextBlockTimestamp", [pending.deadline])
    vault.claim_payment(gas_payer, _terms(vm, cid), claim)
    # Not reported yet: the host invents a deposit and has it confirmed and paid out.
    vm.vault.credit_deposit(thief.address, 10_000, 10_000)
    forked = vm.vault.settle([(thief.address, 10_000)], now=pending.deadline + 1).settlement
    increase_time(host.chain, 12)
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(forked)
    host.report_claim(cid, pending.request_id, sig)
    replacement = vm.vault.settle([], now=now(host.chain) + 10).settlement
    # It carries the payout (debited when first signed) and so must carry the confirmation.
    assert (bytes.fromhex(thief.address[2:]), 10_000) in [
        (payee, amount) for payee, _, amount in unpack_payouts(replacement.payouts)]
    with reverts_with("DepositsNotMade(address,uint256,uint256)"):
        host.submit(replacement)
    assert balance(usdc, thief.address) == 0
    assert balance(usdc, provider.address) == PRICE  # its claim
    assert balance(usdc, vault.address) == 20_000 - PRICE  # Alice's, all of it


def test_a_client_pays_nothing_with_money_a_settlement_the_host_withholds_confirmed(
    host: Host,
) -> None:
    """A cheating host colluding with Alice (review s14-rev12). Bob's settlement landed
    (the ledger life is pinned). Alice deposits; the host has the enclave sign the
    settlement confirming it and keeps it. A pending record of a payment of hers would name
    that epoch, which no claim can use until it lands, while Alice could leave with the
    empty statement she got before: served, and the provider unpaid. So the enclave takes
    no call of hers until its host reports that settlement landed (what a lying host
    reports instead meets the provider's own check: ``test_invoke_http``); she leaves with
    her deposit, and nobody was paid anything."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    provider = vm.provider()
    _confirmed(host, bob.address, 5_000)
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    empty = vm.vault.statement(alice.address)
    assert (empty.statement.balance, empty.statement.deposited) == (0, 0)
    withheld = vm.vault.settle([], now=now(host.chain)).settlement
    assert withheld.epoch == 2 > vault.last_epoch() == 1
    cid, _ = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    with pytest.raises(EnclaveError, match="funds_settling"):
        vm.vault.request(cid, vm.call(alice, key="k", ts=t0), PRICE, t0)
    leave(vault, host.gas, empty.statement, empty.signature)
    _leave(host, host.gas, alice.address)
    assert balance(usdc, alice.address) == 20_000
    assert balance(usdc, provider.address) == 0


def test_a_client_pays_once_the_settlement_confirming_its_money_has_landed(host: Host) -> None:
    """The same settlement, landed a little later by an honest host: the call it refused
    before is paid, and the pending record names an epoch the chain has."""
    vm, vault = host.vm, host.vault
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    signed = vm.vault.settle([], now=now(host.chain)).settlement
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    with pytest.raises(EnclaveError, match="funds_settling"):
        vm.vault.request(cid, vm.call(alice, key="k", ts=t0), PRICE, t0)
    host.submit(signed)
    paid = vm.pay(cid, side, vm.call(alice, key="k", ts=t0), now=t0)
    assert paid.pending is not None and paid.pending.epoch == vault.last_epoch() == 1


def test_a_call_whose_client_a_settlement_touched_while_it_ran_is_refused_before_sigma_u(
    host: Host,
) -> None:
    """Review s15-5. Alice's EXEC is out; meanwhile a settlement confirming her top-up is
    signed (not landed). σ_U's pending record would name it, and the provider reveals only
    once it landed: the REPLY is refused instead (``funds_settling``), the price goes back,
    nothing is paid; once it landed her next call pays."""
    vm, vault = host.vm, host.vault
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    exec_ = vm.vault.request(cid, vm.call(alice, key="k", ts=t0), PRICE, t0)
    side.receive(exec_, now=t0)
    host.deposit(alice.address, 5_000)
    host.report_deposits()
    signed = vm.vault.settle([], now=t0).settlement  # touches Alice; not landed yet
    with pytest.raises(EnclaveError, match="funds_settling"):
        vm.vault.receive(cid, side.reply(exec_.request_id, b"r"), t0)
    vm.vault.abandon(cid)
    free, locked, _ = vm.vault.balance(alice.address)
    assert free + locked == 25_000 and vm.vault.totals()["pending"] == 0  # nothing paid
    host.submit(signed)
    t1 = t0 + 120  # past the provider's lock on the request it answered
    paid = vm.pay(cid, side, vm.call(alice, key="again", ts=t1), now=t1)
    assert paid.pending is not None and paid.pending.epoch == vault.last_epoch() == 2


# ------------------------------------------------------ F2: unconfirmed deposit, dark vault


def test_a_deposit_made_just_before_the_vault_goes_dark_can_be_taken_back(host: Host) -> None:
    """Dave deposits; the host reports it; then the vault goes dark before any settlement
    confirms it. His statement counts none of it (deposited 0), and the contract pays a
    force-settle every deposit its statement does not count: 40,000 back."""
    vm, vault, usdc = host.vm, host.vault, host.token
    dave = client()
    host.deposit(dave.address, 40_000)
    host.report_deposits()
    assert vm.vault.balance(dave.address) == (0, 0, 40_000)
    # The vault is dark from here on. What could Dave force-settle with?
    st = vm.vault.statement(dave.address)  # signed on demand: nothing confirmed, nothing owed
    assert (st.statement.balance, st.statement.deposited) == (0, 0)
    leave(vault, host.gas, st.statement, st.signature)
    _leave(host, host.gas, dave.address)
    assert balance(usdc, dave.address) == 40_000


def test_a_top_up_made_just_before_the_vault_goes_dark_is_paid_by_the_force_settle(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    erin = client()
    _confirmed(host, erin.address, 10_000)
    host.deposit(erin.address, 5_000)  # the vault goes dark before confirming it
    st = vm.vault.statement(erin.address)
    leave(vault, host.gas, st.statement, st.signature)
    _leave(host, host.gas, erin.address)
    assert balance(usdc, vault.address) == 0, "5,000 stranded in the pool"
    assert balance(usdc, erin.address) == 15_000


# ----------------------------------------------- F3: stale statement with the vault dark


def test_with_the_vault_dark_the_provider_answers_a_stale_client_statement_with_its_evidence(
    host: Host,
) -> None:
    """Alice pays a provider 2,000; a landed settlement credits them to the provider.
    The vault goes dark (host and its watchtower with it). Alice force-settles with her
    first statement (20,000 free): lastPaidEpoch of her lane is 0, so it is usable; no
    one else holds her newer statements. The provider holds its own evidence of each
    payment (its completed adaptor signature, σ_U, the pending record): it contests, each
    payment comes off Alice's exit, and the pool pays the provider its statement."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    stale = vm.vault.statement(alice.address)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    evidence = []
    for key in ("a", "b"):
        exec_ = vm.vault.request(cid, vm.call(alice, key=key, ts=t0), PRICE, t0)
        side.receive(exec_, now=t0)
        authorized = vm.vault.receive(cid, side.reply(exec_.request_id, b"the result"), t0)
        reveal = side.receive(authorized.step.send[0], now=t0).send[0]
        c, p = side.claim(), authorized.pending  # what the provider keeps
        assert p is not None
        evidence.append(PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s,
                                     p.client_nonce, p.epoch, p.deadline, c.authorization,
                                     p.signature))
        side.receive(vm.vault.receive(cid, reveal, t0).step.send[0], now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # credits the provider
    theirs = vm.vault.statement(provider.address)
    assert theirs.statement.balance == 2 * PRICE and vault.last_epoch() == 2
    # Resolved off-chain: no longer claimable (the pool pays it through the statement).
    with reverts_with("ClaimResolved(uint64,uint64)"):
        vault.claim_payment(host.gas, _terms(vm, cid), evidence[0])
    # Dark. Alice and the provider each start their exit; the provider contests Alice's.
    leave(vault, host.gas, stale.statement, stale.signature)
    leave(vault, host.gas, theirs.statement, theirs.signature)
    tower = funded(host.chain, usdc)
    for claim in evidence:
        vault.contest_force_settle(tower, _terms(vm, cid), claim)
    with reverts_with("AlreadyClaimed(bytes32,uint256)"):
        vault.contest_force_settle(tower, _terms(vm, cid), evidence[0])
    assert vault.force_settle(alice.address).deducted == 2 * PRICE
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    assert balance(usdc, alice.address) == 20_000 - 2 * PRICE  # what she did not spend
    vault.final_force_settle(host.gas, provider.address)
    assert balance(usdc, provider.address) == 2 * PRICE
    assert balance(usdc, vault.address) == 0


# ------------------------------------------- F4: a claim against a statement counting it free


def test_a_landed_claim_is_deducted_from_a_stale_statement_that_counts_it_as_free(
    host: Host,
) -> None:
    """The contract's own double-pay rule for claims: a force-settle with a statement
    that still counts δ (clientNonce ≥ its nonce) is paid less δ. It used to deduct from
    ``locked`` only (capped at it): Alice's statement from before she opened the channel
    counts δ as free, so she was paid δ and so was the provider, out of Bob's money. The
    claims now come off ``balance + locked``."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    provider = vm.provider()
    host.deposit(bob.address, 10_000)
    _confirmed(host, alice.address, 20_000)
    before_channel = vm.vault.statement(alice.address)
    assert (before_channel.statement.balance, before_channel.statement.locked) == (20_000, 0)
    cid, pending, claim, _ = _pay_ack_lost(host, alice, provider)
    assert pending.client_nonce >= before_channel.statement.nonce  # it counts δ
    vault.claim_payment(funded(host.chain, usdc), _terms(vm, cid), claim)
    assert balance(usdc, provider.address) == PRICE
    # Dark; Alice leaves with the statement from before her channel, Bob with his latest.
    leave(vault, host.gas, before_channel.statement, before_channel.signature)
    assert vault.settlement_of(alice.address) == 20_000 - PRICE
    his = vm.vault.statement(bob.address)
    leave(vault, host.gas, his.statement, his.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    vault.final_force_settle(host.gas, bob.address)
    assert balance(usdc, alice.address) == 20_000 - PRICE
    assert balance(usdc, bob.address) == 10_000
    assert balance(usdc, vault.address) == 0


# --------------------------------------------------- F5: a pending record the host can void


def test_a_provider_can_claim_when_the_host_withholds_the_settlement_its_record_names(
    host: Host,
) -> None:
    """The enclave signs settlement 2 (it only confirms someone else's deposit); the host
    keeps it. Pending records used to name the last epoch signed (2), so the provider's
    claim was refused (EpochNotSettled) for good, while Alice's last usable statement
    counted the payment: the provider delivered and was paid nothing. Now statements and
    records name the account's own epoch (the last settlement that changed its money):
    Alice's is 1, landed, and the claim pays."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, frank = client(), client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    host.deposit(frank.address, 1)
    host.report_deposits()
    vm.vault.settle([], now=now(host.chain))  # signed, withheld by the host
    cid, pending, claim, sig = _pay_ack_lost(host, alice, provider)
    assert pending.epoch == 1 == vault.last_epoch()
    vault.claim_payment(funded(host.chain, usdc), _terms(vm, cid), claim)
    assert balance(usdc, provider.address) == PRICE
    # Alice leaves with her latest statement (usable: epoch 1), less what she paid.
    changed = host.report_claim(cid, pending.request_id, sig)
    mine = changed.statements[0] if changed.statements else vm.vault.statement(alice.address)
    assert mine.statement.epoch == 1
    leave(vault, host.gas, mine.statement, mine.signature)
    _leave(host, host.gas, alice.address)
    assert balance(usdc, alice.address) == 20_000 - PRICE
    assert balance(usdc, vault.address) == 1  # Frank's, unconfirmed (F2)


def test_a_provider_can_claim_when_the_hosts_clock_lags_the_chain(host: Host) -> None:
    """The record's deadline comes from the host's clock, so it can be in the chain's past
    when handed out. The claim window is the chain's: a claim is refused only once a landed
    settlement resolved the payment (deadline ≤ resolvedUntil), so this one pays."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    # The host's clock is an hour and a half behind the chain (the enclave's clock only
    # ever moves forward with what the host says; it has no other source).
    increase_time(host.chain, CLAIM_WINDOW + 1_800)
    lagging = now(host.chain) - CLAIM_WINDOW - 1_800
    cid, side = vm.open(alice, provider, 5 * PRICE)
    exec_ = vm.vault.request(cid, vm.call(alice, key="k", ts=lagging), PRICE, lagging)
    side.receive(exec_, now=lagging)
    authorized = vm.vault.receive(cid, side.reply(exec_.request_id, b"r"), lagging)
    p = authorized.pending
    assert p is not None and p.deadline < now(host.chain)  # expired when handed out
    side.receive(authorized.step.send[0], now=lagging)  # the provider reveals: nothing checks
    (due,) = side.poll(now=lagging + 31).events
    assert isinstance(due, ForceCloseDue)
    c = due.claim
    vault.claim_payment(funded(host.chain, usdc), _terms(vm, cid),
                        PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s,
                                     p.client_nonce, p.epoch, p.deadline, c.authorization,
                                     p.signature))
    assert balance(usdc, provider.address) == PRICE
    assert vault.resolved_until() == 0 < p.deadline


# ------------------------------------------------- F6: anyone starts someone else's exit


def test_only_the_participant_can_start_its_own_force_settle(host: Host) -> None:
    """The host (it sees every statement pass) tries to force-settle a provider with its
    first statement (2,000 of its 5,000; had it worked while the provider was away, 3,000
    would have stayed in the pool and the address been barred for good). Only the provider,
    or its order signed for that very statement, can start its exit."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    for key in ("a", "b"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    first = vm.vault.statement(provider.address)
    t1 = now(host.chain)
    for key in ("c", "d", "e"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t1), now=t1)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    assert vm.vault.statement(provider.address).statement.balance == 5 * PRICE
    latest = vm.vault.statement(provider.address)
    mallory = funded(host.chain, usdc)
    with reverts_with("BadSignature(address)"):
        vault.init_force_settle(mallory, first.statement, first.signature)
    with reverts_with("BadSignature(address)"):  # the provider's order names another one
        vault.init_force_settle(mallory, first.statement, first.signature,
                                vault.exit_order(provider.signer, latest.statement))
    with reverts_with("BadSignature(address)"):  # an order Mallory signed herself
        vault.init_force_settle(mallory, first.statement, first.signature,
                                vault.exit_order(mallory, first.statement))
    assert vault.status(provider.address) is AccountStatus.ACTIVE
    # The provider's own order (anyone may carry it) with its latest statement: all of it.
    leave(vault, mallory, latest.statement, latest.signature)
    _leave(host, mallory, provider.address)
    assert balance(usdc, provider.address) == 5 * PRICE
    assert vault.status(provider.address) is AccountStatus.SETTLED


# ------------------------------------------ F7: dust deposits front-run every settlement


def test_dust_deposits_in_front_of_every_settlement_cannot_stop_the_watchtowers_answer(
    host: Host,
) -> None:
    """Alice pays 2,000 and her latest statement names settlement 2, signed, not landed
    yet (as in the watchtower's own test). She force-settles with her first statement;
    the watchtower must land settlement 2 before it can challenge. A griefer (Alice
    herself) watches the mempool and puts 1-unit deposits in front of each settle (for
    itself and for the provider the settlement credits). Deposits fold no chain a
    settlement must match, and a settlement's confirmations are lower bounds: the
    watchtower lands and answers."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)
    stale = vm.vault.statement(alice.address)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    for key in ("a", "b"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    # Signed (it credits the provider and pays Alice 1,000); the scheduler has not sent it.
    vm.vault.settle([(alice.address, 1_000)], now=now(host.chain))
    assert vm.vault.statement(alice.address).statement.epoch == 2 > vault.last_epoch()
    leave(vault, host.gas, stale.statement, stale.signature)

    griefer = funded(host.chain, usdc, 100)
    transact(host.chain, griefer, usdc.functions.approve(vault.address, 100))
    honest_settle = vault.settle

    def front_run(*args: Any, **kwargs: Any) -> Any:
        vault.deposit(griefer, griefer.address, 1)  # mined first
        vault.deposit(griefer, provider.address, 1)  # a participant the settlement pays
        return honest_settle(*args, **kwargs)

    vault.settle = front_run  # type: ignore[method-assign]
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    refusals = []
    for _ in range(3):  # it polls, say, three times within the window
        refusals += [a.refused for a in tower.poll() if a.refused]
        increase_time(host.chain, SETTLE_WINDOW // 4)
        tower.from_block = 0  # look at the same force-settle again
    vault.settle = honest_settle  # type: ignore[method-assign]
    increase_time(host.chain, SETTLE_WINDOW)
    vault.final_force_settle(host.gas, alice.address)
    assert refusals == []
    assert tower.answered[alice.address] == vm.vault.statement(alice.address).statement.nonce
    # 20,000 less the 2,000 she spent: 1,000 paid out to her (withheld while she exits,
    # added back) and 17,000 by her latest statement.
    assert balance(usdc, alice.address) == 18_000


# ---------------------------------------- F8: the claims list grows with every claim, for good


def test_a_clients_exit_costs_the_same_however_many_claims_its_providers_made(
    host: Host,
) -> None:
    """A provider that claims every payment on-chain used to grow the client's claim list
    by one per request, read in full at every exit (~2,460 gas each: ~12,200 claims and
    the exit no longer fit in a block). Claims now keep a running sum and nonce range per
    client: the exit reads a fixed number of words."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    provider = vm.provider()
    host.deposit(bob.address, 1_000)
    _confirmed(host, alice.address, 40_000)
    gas_payer = funded(host.chain, usdc)
    n = 12
    for i in range(n):
        cid, _, claim, sig = _pay_ack_lost(host, alice, provider, PRICE, key=f"k{i}")
        vault.claim_payment(gas_payer, _terms(vm, cid), claim)
        host.report_claim(cid, claim.request_id, sig)
    assert balance(usdc, provider.address) == n * PRICE
    for who in (alice, bob):
        st = vm.vault.statement(who.address)
        leave(vault, host.gas, st.statement, st.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    fn = vault.contract.functions.finalForceSettle
    base = fn(bob.address).estimate_gas({"from": host.gas.address})
    heavy = fn(alice.address).estimate_gas({"from": host.gas.address})
    per_claim = (heavy - base) / n
    print(f"finalForceSettle: {base} gas with no claim, {heavy} with {n}: "
          f"{per_claim:.0f} per claim")
    assert per_claim < 100, f"{per_claim:.0f} gas per claim ever made, at every exit"
