"""Vault mode end to end on anvil: the enclave's accounts (:mod:`a402.vault_accounts`)
against the real ``A402Vault``, and the watchtower (:mod:`a402.vault.watchtower`).

The host's part is played here in a few lines: it reads ``Deposited`` events and reports
them, submits the settlements the enclave signs (with the deposits mined since as their
tail), and hands statements and pending records to the participants. Every test asserts
token balances."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import ForceCloseDue
from a402.chain.tx import transact
from a402.crypto.vault_messages import VaultChannelTerms, unpack_payouts
from a402.vault.watchtower import VaultWatchtower
from a402.vault_accounts import CLAIM_WINDOW
from a402.vault_contract import AccountStatus, PendingClaim

from .accounts_setup import PRICE, Host, VaultMode, client
from .helpers import SETTLE_WINDOW, balance, funded, increase_time, leave, now, reverts_with

pytestmark = pytest.mark.anvil


def test_deposits_payments_and_a_payout_land_as_the_enclave_signed_them(host: Host) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 50_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # confirms the deposit
    cid, side = vm.open(alice, provider)
    t0 = now(host.chain)
    for key in ("a", "b", "c"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    # A deposit mined after the next settlement was signed rides in its tail. (That
    # settlement credits the provider: it lands only once the payments' claim window shut.)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    signed = vm.vault.settle([], now=now(host.chain)).settlement
    assert signed.not_before == t0 + CLAIM_WINDOW
    host.deposit(alice.address, 7_000)
    host.submit(signed)
    host.report_deposits()
    paid = vm.vault.settle([(provider.address, 3 * PRICE)], now=now(host.chain))
    host.submit(paid.settlement)
    assert balance(usdc, provider.address) == 3 * PRICE
    assert balance(usdc, vault.address) == 57_000 - 3 * PRICE
    assert vault.last_epoch() == 3
    # Alice leaves with her latest statement and gets exactly what she did not spend.
    st = vm.vault.statement(alice.address)
    assert (st.statement.balance, st.statement.locked) == (47_000, 7 * PRICE)
    leave(vault, host.gas, st.statement, st.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    assert balance(usdc, alice.address) == 54_000
    assert balance(usdc, vault.address) == 0


def test_a_deposit_the_host_invented_pays_nobody_on_chain(host: Host) -> None:
    """The host reports a deposit that was never made (it computes the chain link itself):
    the enclave counts it once confirmed, but the settlement naming it cannot land, so the
    statements and pending records that rely on it are unusable and nothing is paid."""
    vm, vault, usdc = host.vm, host.vault, host.token
    honest, thief = client(), client()
    host.deposit(honest.address, 10_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    vm.vault.credit_deposit(thief.address, 10_000, 10_000)
    forked = vm.vault.settle([(thief.address, 10_000)], now=now(host.chain))
    s = forked.settlement
    with reverts_with("DepositsNotMade(address,uint256,uint256)"):
        host.submit(s)
    # The thief's statements name epoch 2, which never landed.
    st = vm.vault.statement(thief.address)
    assert st.statement.epoch == 2
    with reverts_with("StaleStatement(uint64,uint64,uint64)"):
        leave(vault, host.gas, st.statement, st.signature)
    assert balance(usdc, thief.address) == 0
    assert balance(usdc, vault.address) == 10_000
    # The honest participant still leaves whole with its last usable statement.
    mine = vm.vault.statement(honest.address)
    leave(vault, host.gas, mine.statement, mine.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, honest.address)
    assert balance(usdc, honest.address) == 10_000
    assert balance(usdc, vault.address) == 0


def test_a_provider_claims_its_pending_payment_with_the_enclaves_record_while_the_vault_is_dark(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    authorized = vm.pay(cid, side, vm.call(alice, key="k", ts=t0), reveal=False, now=t0)
    pending = authorized.pending
    assert pending is not None
    # The vault goes dark before its ACK: the provider completes its signature and claims.
    (due,) = side.poll(now=t0 + 31).events
    assert isinstance(due, ForceCloseDue)
    c = due.claim
    claim = PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s, pending.client_nonce,
                         pending.epoch, pending.deadline, c.authorization, pending.signature)
    gas_payer = funded(host.chain, usdc)
    vault.claim_payment(gas_payer, _terms(vm, cid), claim)
    assert balance(usdc, provider.address) == PRICE
    # The host reports the claim; the enclave pays nobody again, the client keeps the rest.
    changed = host.report_claim(cid, pending.request_id, c.signature)
    st = changed.statements[0]
    assert (st.statement.balance, st.statement.locked) == (19_000, 0)
    leave(vault, gas_payer, st.statement, st.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(gas_payer, alice.address)
    assert balance(usdc, alice.address) == 19_000
    assert balance(usdc, vault.address) == 0


def _terms(vm: VaultMode, cid: bytes) -> VaultChannelTerms:
    t = vm.vault.terms(cid)
    return VaultChannelTerms("0x" + t.client.hex(), "0x" + t.provider.hex(), t.provider_key,
                             t.deposit, t.salt)


def test_a_stale_force_settle_loses_to_the_watchtower_and_the_client_gets_only_what_is_left(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    stale = vm.vault.statement(alice.address)  # 20,000 free, before she paid anything
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    for key in ("a", "b"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    # Her payments are credited to the provider, and 1,000 paid out to her, in a settlement
    # signed but not yet sent: her latest statement is net of it and names it.
    increase_time(host.chain, CLAIM_WINDOW + 1)
    vm.vault.settle([(alice.address, 1_000)], now=now(host.chain))
    latest = vm.vault.statement(alice.address)
    assert (latest.statement.balance, latest.statement.locked) == (14_000, 3 * PRICE)
    assert latest.statement.epoch == 2 > vault.last_epoch()

    cheater: LocalAccount = funded(host.chain, usdc)
    leave(vault, cheater, stale.statement, stale.signature)
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    (answer,) = tower.poll()
    assert answer.refused is None, answer.refused
    assert (answer.recorded_nonce, answer.answered_nonce) == (1, latest.statement.nonce)
    assert answer.landed == (2,)  # it landed the settlement the statement names, first
    assert vault.force_settle(alice.address).nonce == latest.statement.nonce
    # Its own challenge, seen at the next poll, needs no answer.
    assert [(a.answered_nonce, a.refused) for a in tower.poll()] == [(None, None)]
    assert tower.poll() == []
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(cheater, alice.address)
    # 14,000 free + 3,000 left in her channel + the 1,000 payout withheld from her frozen
    # account, which her statement is net of: exactly what she did not spend.
    assert balance(usdc, alice.address) == 18_000
    assert vault.status(alice.address) is AccountStatus.SETTLED
    # The provider's earnings are still there for it (the pool kept exactly them).
    assert balance(usdc, vault.address) == 2 * PRICE
    prov = vm.vault.statement(provider.address)
    assert prov.statement.balance == 2 * PRICE
    leave(vault, cheater, prov.statement, prov.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(cheater, provider.address)
    assert balance(usdc, provider.address) == 2 * PRICE
    assert balance(usdc, vault.address) == 0


def test_a_force_settle_with_the_latest_statement_is_left_alone(host: Host) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    host.deposit(alice.address, 4_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    latest = vm.vault.statement(alice.address)
    leave(vault, host.gas, latest.statement, latest.signature)
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    (answer,) = tower.poll()
    assert (answer.answered_nonce, answer.tx_hash, answer.refused) == (None, None, None)
    # The enclave knows she is leaving: nothing moves her money any more.
    with pytest.raises(Exception, match="participant_exiting"):
        vm.vault.settle([(alice.address, 1)], now=now(host.chain))
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    assert balance(usdc, alice.address) == 4_000
    assert balance(usdc, vault.address) == 0


def _revealed_but_not_acknowledged(host: Host, alice: LocalAccount, provider: Any
                                   ) -> tuple[bytes, Any, ForceCloseDue, int]:
    """Alice pays the provider; the enclave gets the REVEAL (so it means to credit the
    provider) but the ACK never reaches the provider, which claims on-chain."""
    vm = host.vm
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    exec_ = vm.vault.request(cid, vm.call(alice, key="k", ts=t0), PRICE, t0)
    side.receive(exec_, now=t0)
    authorized = vm.vault.receive(cid, side.reply(exec_.request_id, b"the result"), t0)
    reveal = side.receive(authorized.step.send[0], now=t0).send[0]
    vm.vault.receive(cid, reveal, t0)  # the ACK it answers with is dropped
    (due,) = side.poll(now=t0 + 31).events
    assert isinstance(due, ForceCloseDue)
    p = authorized.pending
    c = due.claim
    claim = PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s, p.client_nonce,
                         p.epoch, p.deadline, c.authorization, p.signature)
    host.vault.claim_payment(funded(host.chain, host.token), _terms(vm, cid), claim)
    assert balance(host.token, provider.address) == PRICE
    return cid, authorized.pending, due, t0


def test_a_claim_the_host_hides_makes_the_settlement_crediting_it_unlandable(host: Host) -> None:
    """The host hides the provider's claim and has the enclave credit the same payment
    off-chain: the settlement that would pay it cannot land, nor can the provider's
    statement that counts it. The provider is paid once."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    cid, pending, due, _ = _revealed_but_not_acknowledged(host, alice, provider)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    double = vm.vault.settle([(provider.address, PRICE)], now=now(host.chain))
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(double.settlement)
    st = vm.vault.statement(provider.address)
    with reverts_with("StaleStatement(uint64,uint64,uint64)"):
        leave(vault, host.gas, st.statement, st.signature)
    assert balance(usdc, provider.address) == PRICE
    assert balance(usdc, vault.address) == 20_000 - PRICE
    # Told of the claim at last, the enclave replaces the settlement that can never land:
    # it follows epoch 1, and pays the provider nothing (the claim paid it), only moving its
    # lane past the statements that counted the payment twice.
    host.report_claim(cid, pending.request_id, due.claim.signature)
    replacement = vm.vault.settle([], now=now(host.chain)).settlement
    assert (replacement.prev, replacement.epoch) == (1, 3)
    assert unpack_payouts(replacement.payouts) == [
        (bytes.fromhex(provider.address[2:]), vm.vault.index_of(provider.address), 0)]
    host.submit(replacement)
    assert vault.lane(vm.vault.index_of(provider.address)).last_paid_epoch == 3
    with reverts_with("StaleStatement(uint64,uint64,uint64)"):
        leave(vault, host.gas, st.statement, st.signature)
    assert balance(usdc, provider.address) == PRICE
    # Alice leaves with her latest statement: what she did not spend; the provider with its
    # own: nothing more.
    mine = vm.vault.statement(alice.address)
    assert mine.statement.balance + mine.statement.locked == 19_000
    theirs = vm.vault.statement(provider.address)
    assert (theirs.statement.balance, theirs.statement.epoch) == (0, 3)
    leave(vault, host.gas, mine.statement, mine.signature)
    leave(vault, host.gas, theirs.statement, theirs.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    vault.final_force_settle(host.gas, provider.address)
    assert balance(usdc, alice.address) == 19_000
    assert balance(usdc, provider.address) == PRICE
    assert balance(usdc, vault.address) == 0


def test_a_time_reported_ahead_of_the_chain_cannot_land_a_credit_before_the_claims_close(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    vm.pay(cid, side, vm.call(alice, key="k", ts=t0), now=t0)  # revealed, acknowledged
    early = vm.vault.settle([(provider.address, PRICE)], now=t0 + CLAIM_WINDOW + 1)
    assert early.settlement.not_before == t0 + CLAIM_WINDOW
    with reverts_with("TooEarly(uint64)"):
        host.submit(early.settlement)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(early.settlement)  # the claim window shut: now it lands, and pays once
    assert balance(usdc, provider.address) == PRICE
    assert balance(usdc, vault.address) == 20_000 - PRICE


def test_a_replacement_carries_the_plain_transfers_of_the_settlement_it_replaces_anchored(
    host: Host,
) -> None:
    """A settlement that confirms a plain transfer and that a claim makes unlandable is
    replaced by one anchored at the enclave's last header (a later one of the same chain):
    it lands, the transfer is confirmed once, and the sender's statement counts it."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    host.deposit(alice.address, 20_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    cid, pending, due, _ = _revealed_but_not_acknowledged(host, alice, provider)
    sender = funded(host.chain, usdc, 500)
    sent = transact(host.chain, sender, usdc.functions.transfer(vault.address, 500))
    host.chain.w3.provider.make_request("evm_mine", [])
    assert host.report_transfers(sent) == 1
    increase_time(host.chain, CLAIM_WINDOW + 1)
    double = vm.vault.settle([(provider.address, PRICE)], now=now(host.chain)).settlement
    assert double.anchor_hash != bytes(32)
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(double)
    host.report_claim(cid, pending.request_id, due.claim.signature)
    host.chain.w3.provider.make_request("evm_mine", [])
    assert host.report_transfers() == 0  # the chain goes on: a later last header
    replacement = vm.vault.settle([], now=now(host.chain)).settlement
    assert replacement.anchor > double.anchor and replacement.anchor_hash != bytes(32)
    host.submit(replacement)
    assert vault.last_epoch() == replacement.epoch
    mine = vm.vault.statement(sender.address)
    assert (mine.statement.balance, mine.statement.transferred) == (500, 500)
    assert vm.vault.totals()["transferred"] == 500
    assert balance(usdc, vault.address) == 20_000 - PRICE + 500
