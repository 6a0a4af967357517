"""Vault mode inside the enclave (:mod:`a402.vault_accounts`), as scenarios, no chain:
deposits count only once a settlement confirms them, channels open and close against
accounts, a paid request moves δ from the client's statements to a pending record and then
to the provider, and every change hands out a statement the contract would accept."""

from __future__ import annotations

import os

import pytest

from a402.asc import Status
from a402.asc.errors import ASCError
from a402.crypto import PaymentDomain
from a402.crypto.vault_messages import (
    EXIT_CREDIT,
    VaultChannelTerms,
    pack_confirms,
    pending_digest,
    settlement_digest,
    statement_digest,
    unpack_payouts,
    vault_channel_id,
)
from a402.evm.ecdsa import OPENZEPPELIN, recover_address
from a402.tee import EnclaveError
from a402.vault_accounts import CLAIM_WINDOW, SignedStatement, VaultAccountsCode

from .accounts_setup import PRICE, VaultMode, client, clock, vault_mode

DOMAIN = PaymentDomain(31337, bytes.fromhex("a16e02e87b7454126e5e10d957a927a7f5b5d2be"))


@pytest.fixture
def vm() -> VaultMode:
    return vault_mode(DOMAIN)


def signed_by_vault(vm: VaultMode, digest: bytes, signature: bytes) -> bool:
    return recover_address(digest, signature, policy=OPENZEPPELIN) == vm.vault.address


def check_statement(vm: VaultMode, signed: SignedStatement) -> None:
    assert signed_by_vault(vm, statement_digest(DOMAIN, signed.statement, vm.vault.ledger),
                           signed.signature)


def conserved(vm: VaultMode, deposited: int) -> None:
    t = vm.vault.totals()
    assert (t["free"] + t["locked"] + t["pending"] + t["paid_out"] + t["unconfirmed"]
            - t["debt"]) == deposited


def test_a_reported_deposit_counts_nowhere_until_a_settlement_confirms_it(vm: VaultMode) -> None:
    alice = client()
    total = vm.deposit(alice.address, 5_000)
    assert vm.vault.balance(alice.address) == (0, 0, 5_000)
    with pytest.raises(EnclaveError, match="no statement"):
        vm.vault.statement(client().address)
    with pytest.raises(EnclaveError, match=r"capacity 1000 > free 0"):
        vm.vault.open_channel(alice.address, vm.provider().address, os.urandom(32), 1_000,
                              lock_timeout=10.0)
    settled = vm.vault.settle([], now=clock())
    s = settled.settlement
    confirms = pack_confirms([(alice.address, total)])
    assert (s.epoch, s.prev, s.payouts, s.claims, s.confirms) == (1, 0, b"", 0, confirms)
    assert signed_by_vault(vm, settlement_digest(DOMAIN, 1, b"", 0, packed_confirms=confirms,
                                                 ledger=vm.vault.ledger),
                           s.signature)
    (st,) = settled.statements
    assert st.statement.as_tuple() == (alice.address, 0, 5_000, 0, 1, 1, 5_000, 0, 0, 0)
    check_statement(vm, st)
    assert vm.vault.statement(alice.address) == st
    assert vm.vault.balance(alice.address) == (5_000, 0, 0)
    conserved(vm, 5_000)


def test_a_deposit_reported_out_of_order_or_altered_is_refused_and_changes_nothing(
    vm: VaultMode,
) -> None:
    alice, bob = client(), client()
    first = vm.deposit(alice.address, 1_000)
    with pytest.raises(EnclaveError, match="deposit_out_of_order"):
        vm.vault.credit_deposit(bob.address, 2_001, 2_000)  # altered amount
    with pytest.raises(EnclaveError, match="deposit_out_of_order"):
        vm.vault.credit_deposit(alice.address, 2_000, 4_000)  # one of 1,000 skipped
    with pytest.raises(EnclaveError, match="deposit_out_of_order"):  # skipped one
        vm.vault.credit_deposit(bob.address, 5, 2_005)
    assert vm.vault.credit_deposit(alice.address, 1_000, first) is False  # reported again
    assert vm.vault.deposited(alice.address) == first
    assert vm.vault.balance(bob.address) == (0, 0, 0)
    assert vm.vault.balance(alice.address) == (0, 0, 1_000)


def test_a_paid_request_moves_the_price_from_the_client_to_the_provider_after_its_deadline(
    vm: VaultMode,
) -> None:
    alice = client()
    vm.deposit(alice.address, 50_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, provider_side = vm.open(alice, provider, 10 * PRICE)
    # The channel id is the one the contract's claimPayment recomputes.
    terms = vm.vault.terms(cid)
    assert cid == vault_channel_id(DOMAIN, VaultChannelTerms(
        alice.address, provider.address, terms.provider_key, 10 * PRICE, terms.salt))
    assert vm.vault.statement(alice.address).statement.as_tuple()[2:6] == (40_000, 10_000, 1, 2)

    now = clock()
    authorized = vm.pay(cid, provider_side, vm.call(alice, key="first"), now=now)
    # σ_U is out: δ is in none of the client's newer statements, and a pending record names
    # the last one that counted it.
    (st,) = authorized.statements
    check_statement(vm, st)
    assert st.statement.as_tuple()[2:6] == (40_000, 9_000, 1, 3)
    pending = authorized.pending
    assert pending is not None
    assert (pending.amount, pending.client_nonce, pending.epoch) == (PRICE, 2, 1)
    assert pending.deadline == now + CLAIM_WINDOW
    assert signed_by_vault(vm, pending_digest(DOMAIN, cid, pending.request_id, 2, 1,
                                              pending.deadline, vm.vault.ledger),
                           pending.signature)
    # Revealed and acknowledged, but not yet credited: the provider could still claim it.
    assert vm.vault.balance(provider.address) == (0, 0, 0)
    conserved(vm, 50_000)
    with pytest.raises(EnclaveError, match="nothing_to_settle"):
        vm.vault.settle([], now=now + CLAIM_WINDOW)
    settled = vm.vault.settle([], now=now + CLAIM_WINDOW + 1)
    (credited,) = settled.statements
    assert credited.statement.as_tuple() == (provider.address, 1, PRICE, 0, 2, 1, 0, 0, 0, 0)
    check_statement(vm, credited)
    conserved(vm, 50_000)

    # The provider's earnings are paid out to its own address, in a signed settlement.
    paid = vm.vault.settle([(provider.address, PRICE)], now=now + CLAIM_WINDOW + 2)
    assert unpack_payouts(paid.settlement.payouts) == [
        (bytes.fromhex(provider.address[2:]), 1, PRICE)]
    assert paid.statements[0].statement.as_tuple()[2:6] == (0, 0, 3, 2)
    conserved(vm, 50_000)
    assert vm.vault.totals()["paid_out"] == PRICE

    # Closing the channel gives the client what it did not spend, with no transaction.
    close, (closed,) = vm.vault.close_channel(cid)
    assert close.state.client_balance == 9 * PRICE
    # It names settlement 1, the last that changed Alice's money (2 and 3 did not touch
    # her): a withheld or dead later settlement voids none of her statements.
    assert closed.statement.as_tuple()[2:6] == (49_000, 0, 1, 4)
    with pytest.raises(EnclaveError, match="unknown_channel"):
        vm.vault.request(cid, vm.call(alice, key="after"), PRICE, clock())
    conserved(vm, 50_000)


def test_a_payment_never_revealed_goes_back_to_the_client_at_its_deadline_and_ends_the_channel(
    vm: VaultMode,
) -> None:
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, provider_side = vm.open(alice, provider, 5 * PRICE)
    now = clock()
    authorized = vm.pay(cid, provider_side, vm.call(alice, key="k"), reveal=False, now=now)
    assert vm.vault.channel_status(cid) is Status.PENDING
    assert authorized.statements[0].statement.locked == 4 * PRICE
    with pytest.raises(EnclaveError, match="channel_busy"):
        vm.vault.close_channel(cid)
    settled = vm.vault.settle([], now=now + CLAIM_WINDOW + 1)
    (st,) = settled.statements
    assert st.statement.as_tuple()[1:] == (0, 20_000, 0, 2, 4, 20_000, 0, 0, 0)
    assert vm.vault.balance(provider.address) == (0, 0, 0)
    with pytest.raises(EnclaveError, match="unknown_channel"):
        vm.vault.channel_status(cid)
    conserved(vm, 20_000)


def test_a_claim_that_landed_pays_the_provider_on_chain_and_nobody_off_chain(
    vm: VaultMode,
) -> None:
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, provider_side = vm.open(alice, provider, 5 * PRICE)
    now = clock()
    authorized = vm.pay(cid, provider_side, vm.call(alice, key="k"), reveal=False, now=now)
    assert authorized.pending is not None
    # The provider completes its signature and claims on-chain (the vault went dark).
    (due,) = provider_side.poll(now=now + 31).events
    claimed = vm.claim(cid, authorized.pending.request_id,
                       due.claim.signature,  # type: ignore[attr-defined]
                       authorized.pending.deadline)
    (delivered,) = claimed.step.events
    assert delivered.result == b"the result"  # type: ignore[attr-defined]
    (st,) = claimed.statements
    assert st.statement.as_tuple()[2:6] == (19_000, 0, 1, 4)
    t = vm.vault.totals()
    assert (t["pending"], t["paid_out"]) == (0, PRICE)
    with pytest.raises(EnclaveError, match="nothing_to_settle"):
        vm.vault.settle([], now=now + CLAIM_WINDOW + 1)  # nothing credited twice
    assert vm.vault.balance(provider.address) == (0, 0, 0)
    conserved(vm, 20_000)


def test_a_claim_of_a_payment_a_signed_settlement_credited_voids_it_and_the_replacement_pays_once(
    vm: VaultMode,
) -> None:
    """The provider's claim lands after the enclave signed the settlements that credited
    the payment to it (epoch 2) and paid it out (epoch 3); neither can land now. The next
    settlement replaces both: it follows epoch 1, carries epoch 3's payout less what the
    claim paid (nothing is left: a zero payout, which moves the provider's lane), and the
    books balance at every step."""
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, side = vm.open(alice, provider, 5 * PRICE)
    now = clock()
    authorized = vm.pay(cid, side, vm.call(alice, key="k"), now=now)
    pending = authorized.pending
    assert pending is not None
    credited = vm.vault.settle([], now=now + CLAIM_WINDOW + 1).settlement
    paid = vm.vault.settle([(provider.address, PRICE)], now=now + CLAIM_WINDOW + 2).settlement
    assert (credited.epoch, paid.epoch, paid.prev) == (2, 3, 2)
    conserved(vm, 20_000)
    vm.claim(cid, pending.request_id, b"", pending.deadline)
    assert vm.vault.totals()["debt"] == PRICE  # credited, paid out, and claimed
    conserved(vm, 20_000)
    # The void and what it owes survive a restart (sealed with the ledger).
    blob = vm.vault.export_ledger()
    again = VaultAccountsCode.start(vm.enclave, domain=DOMAIN, network="eip155:31337")
    again.restore_ledger(blob)
    vm.vault = again
    replacement = vm.vault.settle([], now=now + CLAIM_WINDOW + 3)
    s = replacement.settlement
    assert (s.prev, s.epoch, s.not_before) == (1, 4, pending.deadline)
    assert unpack_payouts(s.payouts) == [
        (bytes.fromhex(provider.address[2:]), vm.vault.index_of(provider.address), 0)]
    assert vm.vault.totals()["debt"] == 0 and vm.vault.totals()["paid_out"] == PRICE
    conserved(vm, 20_000)
    theirs = vm.vault.statement(provider.address).statement
    assert (theirs.balance, theirs.epoch) == (0, 4)
    assert signed_by_vault(vm, settlement_digest(DOMAIN, 4, s.payouts, s.claims, s.not_before,
                                                 prev_epoch=1, packed_confirms=s.confirms,
                                                 ledger=vm.vault.ledger),
                           s.signature)
    assert vm.vault.settlement_after(1) == s  # what a watchtower lands after epoch 1
    # The next one follows the replacement.
    vm.deposit(alice.address, 1)
    assert vm.vault.settle([], now=now + CLAIM_WINDOW + 4).settlement.prev == 4


def test_the_host_cannot_pay_without_the_clients_signed_call_nor_twice_with_one(
    vm: VaultMode,
) -> None:
    alice, mallory = client(), client()
    vm.deposit(alice.address, 20_000)
    vm.deposit(mallory.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, provider_side = vm.open(alice, provider)
    with pytest.raises(EnclaveError, match="not_your_channel"):
        vm.vault.request(cid, vm.call(mallory, key="x"), PRICE, clock())
    with pytest.raises(EnclaveError, match="price_above_maximum"):
        vm.vault.request(cid, vm.call(alice, key="x", max_price=PRICE - 1), PRICE, clock())
    with pytest.raises(EnclaveError, match="stale"):
        vm.vault.request(cid, vm.call(alice, key="x", ts=clock() - 3_600), PRICE, clock())
    # A call signed for another life of the vault (which paid who knows what) pays nothing.
    other = vault_mode(DOMAIN).vault.life_id
    with pytest.raises(EnclaveError, match="wrong_life"):
        vm.vault.request(cid, vm.call(alice, key="x", life=other), PRICE, clock())
    once = vm.call(alice, key="once")
    vm.pay(cid, provider_side, once)
    with pytest.raises(EnclaveError, match="replayed_call"):
        vm.vault.request(cid, once, PRICE, clock())
    with pytest.raises(EnclaveError, match="replayed_call"):  # a new signature, the same key
        vm.vault.request(cid, vm.call(alice, key="once"), PRICE, clock())
    assert vm.vault.statement(alice.address).statement.locked == 9 * PRICE
    conserved(vm, 40_000)


def test_a_reply_before_the_provider_key_was_seen_attested_gets_no_authorization(
    vm: VaultMode,
) -> None:
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, _ = vm.vault.open_channel(alice.address, provider.address,
                                   provider.schnorr.public_key, 5_000, lock_timeout=10.0)
    from a402.asc import ProviderChannel  # the provider's side, never bound to a tunnel
    side = ProviderChannel(vm.vault.terms(cid), DOMAIN, provider.signer, provider.schnorr,
                           ack_timeout=30.0, lock_timeout=10.0)
    now = clock()
    exec_ = vm.vault.request(cid, vm.call(alice, key="k", pay_to=provider.address), PRICE, now)
    side.receive(exec_, now=now)
    with pytest.raises(ASCError, match="attested"):
        vm.vault.receive(cid, side.reply(exec_.request_id, b"r"), now)
    assert vm.vault.totals()["pending"] == 0


def test_a_request_marks_no_change_of_the_sealed_ledger_so_its_exec_waits_for_no_write(
    vm: VaultMode,
) -> None:
    # The host sends EXEC without waiting for the store (VaultModeService.arequest): sound
    # only while the enclave's request step changes nothing a write must hold first.
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, _ = vm.vault.open_channel(alice.address, provider.address,
                                   provider.schnorr.public_key, 5_000, lock_timeout=10.0)
    vm.vault.export_changes()  # everything so far is stored
    version = vm.vault.ledger_version
    exec_ = vm.vault.request(cid, vm.call(alice, key="k", pay_to=provider.address), PRICE,
                             clock())
    assert exec_.amount == PRICE and exec_.channel_id == cid
    assert vm.vault.ledger_version == version  # nothing new to store: σ_U's write is next
    assert vm.vault.balance(alice.address) == (15_000, 5_000, 0)


def test_a_payout_beyond_the_free_balance_or_to_an_exiting_participant_is_refused_whole(
    vm: VaultMode,
) -> None:
    alice, bob = client(), client()
    vm.deposit(alice.address, 3_000)
    vm.deposit(bob.address, 1_000)
    vm.vault.settle([], now=clock())
    with pytest.raises(EnclaveError, match="insufficient_balance"):
        vm.vault.settle([(alice.address, 2_000), (bob.address, 1_001)], now=clock())
    with pytest.raises(EnclaveError, match="unknown_participant"):
        vm.vault.settle([(client().address, 1)], now=clock())
    latest = vm.vault.exiting(bob.address)
    assert latest is not None and latest.statement.balance == 1_000
    with pytest.raises(EnclaveError, match="participant_exiting"):
        vm.vault.settle([(bob.address, 1_000)], now=clock())
    assert vm.vault.epoch == 1
    assert vm.vault.balance(alice.address) == (3_000, 0, 0)
    # A deposit can be paid out by the settlement that confirms it (it lands atomically).
    vm.deposit(alice.address, 500)
    paid = vm.vault.settle([(alice.address, 3_500)], now=clock())
    assert paid.statements[0].statement.as_tuple()[2:6] == (0, 0, 2, 2)
    conserved(vm, 4_500)


def test_the_sealed_ledger_comes_back_whole_and_an_older_one_is_refused(vm: VaultMode) -> None:
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    provider = vm.provider()
    cid, provider_side = vm.open(alice, provider)
    vm.pay(cid, provider_side, vm.call(alice, key="k1"))
    old = vm.vault.export_ledger()
    vm.pay(cid, provider_side, vm.call(alice, key="k2"))
    blob = vm.vault.export_ledger()

    again = VaultAccountsCode.start(vm.enclave, domain=DOMAIN, network="eip155:31337")
    with pytest.raises(EnclaveError, match="ledger_needed"):
        again.settle([], now=clock())
    again.restore_ledger(blob)
    assert again.statement(alice.address) == vm.vault.statement(alice.address)
    assert again.totals() == vm.vault.totals()
    with pytest.raises(EnclaveError, match="stale_ledger"):
        again.restore_ledger(old)
    # The restored machine runs on once its host says what landed (it does when it starts):
    # the next call pays, the consumed ones stay consumed.
    again.chain_epoch(1)
    with pytest.raises(EnclaveError, match="replayed_call"):
        again.request(cid, vm.call(alice, key="k2"), PRICE, clock())
    vm.vault = again
    vm.pay(cid, provider_side, vm.call(alice, key="k3"))
    assert again.statement(alice.address).statement.locked == 7 * PRICE
    conserved(vm, 20_000)


def test_the_host_gets_no_signing_call_and_no_key(vm: VaultMode) -> None:
    with pytest.raises(AttributeError):
        vm.vault._kernel  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        vm.vault._sign_statements  # type: ignore[attr-defined]  # noqa: B018
    assert not [n for n in ("sign", "sign_digest", "kernel") if hasattr(vm.vault, n)]


def test_vault_mode_terms_keep_their_mode_in_a_snapshot_and_standard_ones_are_unchanged() -> None:
    from a402.asc import ChannelTerms
    from a402.asc import snapshot as snap
    args = (os.urandom(20), os.urandom(20), os.urandom(20),
            bytes.fromhex("11" * 32), 5_000, os.urandom(32))
    pooled = ChannelTerms(*args, vault_mode=True)
    standard = ChannelTerms(*args)
    assert snap.terms_from_json(snap.terms_to_json(pooled)) == pooled
    assert "vaultMode" not in snap.terms_to_json(standard)
    assert snap.terms_from_json(snap.terms_to_json(standard)) == standard
    # The two modes never share an id: the contract hashes different types.
    assert pooled.channel_id(DOMAIN) != standard.channel_id(DOMAIN)
    assert pooled.channel_id(DOMAIN) == vault_channel_id(DOMAIN, VaultChannelTerms(
        "0x" + args[0].hex(), "0x" + args[2].hex(), args[3], 5_000, args[5]))


def test_a_payment_resolved_to_an_exiting_provider_is_an_exit_credit_and_a_claim_voids_it(
    vm: VaultMode,
) -> None:
    """Pat has a revealed payment pending when her exit is reported. The settlement past
    its deadline pays it to her as an exit credit (index | EXIT_CREDIT: paid at once, no
    lane, no statement) and credits her account nothing. She claims it on-chain before
    that settlement lands: the replacement carries no credit for it (paid once, by the
    claim), and the books balance at every step, across a restart."""
    alice = client()
    vm.deposit(alice.address, 20_000)
    vm.vault.settle([], now=clock())
    pat = vm.provider()
    cid, side = vm.open(alice, pat, 5 * PRICE)
    now = clock()
    pending = vm.pay(cid, side, vm.call(alice, key="k"), now=now).pending
    assert pending is not None
    before = vm.vault.statement(pat.address).statement
    vm.vault.exiting(pat.address)
    settled = vm.vault.settle([], now=now + CLAIM_WINDOW + 1)
    index = vm.vault.index_of(pat.address)
    assert unpack_payouts(settled.settlement.payouts) == [
        (bytes.fromhex(pat.address[2:]), index | EXIT_CREDIT, PRICE)]
    assert vm.vault.balance(pat.address)[0] == 0
    assert vm.vault.statement(pat.address).statement == before  # nothing signed for her
    conserved(vm, 20_000)
    vm.claim(cid, pending.request_id, b"", pending.deadline)
    conserved(vm, 20_000)  # the claim paid δ; the voided credit is owed back by the cut
    blob = vm.vault.export_ledger()
    again = VaultAccountsCode.start(vm.enclave, domain=DOMAIN, network="eip155:31337")
    again.restore_ledger(blob)
    vm.vault = again
    replacement = vm.vault.settle([], now=now + CLAIM_WINDOW + 2).settlement
    assert (replacement.prev, replacement.epoch) == (1, 3)
    assert all(i & EXIT_CREDIT == 0 for _, i, _ in unpack_payouts(replacement.payouts))
    assert vm.vault.totals()["paid_out"] == PRICE
    conserved(vm, 20_000)
