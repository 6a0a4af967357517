"""Adversarial review, session 15: deposits pulled inside the aggregated settlement.

Each test plays one attack on anvil against the real ``A402Vault`` and the vault enclave's
ledger and asserts token balances: what the honest participant should end with. Each
failed before its fix (named in its section); the fixes are in ``vault_accounts`` and the
contract's "Pulled deposits"."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.crypto.authorization import recover_signer
from a402.crypto.vault_messages import statement_digest
from a402.vault_accounts import SignedStatement

from .accounts_setup import CODE, Host, VaultMode, client, enclave_address, vault_mode
from .helpers import balance, funded, increase_time, leave, now, reverts_with
from .test_pulled_deposits_ledger import _holding
from .test_review_rev3 import _confirmed, _leave, _pay_ack_lost, _terms

pytestmark = pytest.mark.anvil

HOUR = 3_600


def _ask(host: Host, vm: VaultMode, who: LocalAccount, amount: int, deadline: int,
         *, clock: int | None = None) -> tuple[int, SignedStatement]:
    """``who`` asks ``vm`` for a pull, checks the statement as ``a402 vault deposit --pull``
    does (the enclave key's, for this participant, pull and amount, in the ledger life the
    vault's /info names), then signs its intent and hands it to the host."""
    pull, signed = vm.vault.prepare_pull(who.address, amount, deadline,
                                         now=now(host.chain) if clock is None else clock)
    st = signed.statement
    signer = recover_signer(statement_digest(host.vault.domain, st, vm.vault.ledger),
                            signed.signature)
    assert (st.participant.lower(), st.pull, st.pulling) == (who.address.lower(), pull, amount)
    assert signer is not None and "0x" + signer.hex() == enclave_address(vm.enclave).lower()
    host.intents[pull] = host.vault.sign_pull(who, who.address, amount, pull, deadline,
                                              vm.vault.ledger)
    return pull, signed


# ------------------------------------------- S15-1: free pulls make a settlement unlandable


def test_many_pulls_from_empty_wallets_hold_up_no_settlement_and_no_honest_payout(
    host: Host,
) -> None:
    """Keys with nothing (no token, no ETH: the calls are off-chain) ask for 1-unit pulls
    and sign their authorizations, hundreds of times. Each is skipped on-chain (no money) but
    costs the settlement gas; with no cap, enough of them put it over the block gas limit,
    and every later settlement follows it. The enclave makes at most ``MAX_PULLS`` a
    settlement, oldest first (the host also refuses a pull its wallet cannot fund: the
    service tests); the settlement lands and Alice is paid."""
    from a402.vault_accounts import MAX_PULLS

    vm = host.vm
    alice = client()
    _confirmed(host, alice.address, 10_000)
    deadline = now(host.chain) + HOUR
    for _ in range(MAX_PULLS + 50):
        sybil = Account.create()
        pull, _ = vm.vault.prepare_pull(sybil.address, 1, deadline, now=now(host.chain))
        host.intents[pull] = host.vault.sign_pull(sybil, sybil.address, 1, pull, deadline,
                                                  vm.vault.ledger)
        vm.vault.pull_authorized(pull)
    settled = vm.vault.settle([(alice.address, 10_000)], now=now(host.chain)).settlement
    assert len(settled.pulls) == MAX_PULLS * 48
    host.submit(settled)
    assert balance(host.token, alice.address) == 10_000


# --------------------------- S15-2: a replacement voids the statement the pull was signed on


def test_a_claim_voiding_the_epoch_of_the_pull_statement_strands_the_pulled_money(
    host: Host,
) -> None:
    """Victor's first pull is made; the settlement that checks it (and credits it) also
    resolves a payment whose provider claims it on-chain first (the host delays that
    settlement; its own provider, or any provider whose ACK was lost). Victor asks for a
    second pull right after: the statement counting it names that settlement's epoch; he
    checks it and signs. The claim voids the epoch; the replacement carries the second pull
    and lands it: 20,000 leave Victor's wallet. The host withholds his renamed statement
    (the one naming the replacement). The statement he signed his intent on names a void
    epoch (unusable), and his earlier one does not count the second pull: he gets 10,000 of
    his 30,000 back; the rest stays in the pool, his only in statements the host holds."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    provider = vm.provider()
    _confirmed(host, alice.address, 20_000)  # epoch 1
    cid, pending, claim, sig = _pay_ack_lost(host, alice, provider)
    victor = _holding(host, 50_000)
    _, first = _ask(host, vm, victor, 10_000, now(host.chain) + 3 * HOUR)
    vm.vault.pull_authorized(first.statement.pull)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # epoch 2: pull made
    host.report_pulls()
    assert balance(usdc, victor.address) == 40_000
    # The provider's claim lands at its deadline, before the settlement resolving it.
    host.chain.w3.provider.make_request("evm_setNextBlockTimestamp", [pending.deadline])
    vault.claim_payment(funded(host.chain, usdc), _terms(vm, cid), claim)
    checked = vm.vault.settle([], now=pending.deadline + 1).settlement  # epoch 3
    _, second = _ask(host, vm, victor, 20_000, pending.deadline + 2 * HOUR,
                     clock=pending.deadline + 1)
    assert second.statement.epoch == checked.epoch  # names epoch 3
    vm.vault.pull_authorized(second.statement.pull)
    increase_time(host.chain, 12)
    with reverts_with("ClaimInTail(uint64,uint64)"):
        host.submit(checked)
    host.report_claim(cid, pending.request_id, sig)
    replacement = vm.vault.settle([], now=now(host.chain) + 10).settlement
    host.submit(replacement)  # drops the second pull: its statement names a void epoch
    assert vault.is_voided(3) and balance(usdc, victor.address) == 40_000
    assert not vault.pulled(second.statement.pull)
    # The host withholds everything since. Victor exits with the statements he holds.
    with reverts_with("VoidedEpoch(uint64)"):
        leave(vault, host.gas, second.statement, second.signature)
    leave(vault, host.gas, first.statement, first.signature)
    _leave(host, host.gas, victor.address)
    assert balance(usdc, victor.address) == 50_000, "his second pull is stranded"


# ---------------------------- S15-3: an intent names no ledger life: another life's statement


def test_an_intent_signed_on_a_statement_of_a_wiped_life_is_pulled_by_the_pinned_life(
    host: Host,
) -> None:
    """The host runs the pinned ledger (life L1) and, from a wiped copy under the same key,
    a second life L2, and aligns their pull ids (both start at 1). Victor asks for a pull;
    the host asks both lives for the same (participant, amount, deadline), hands Victor
    L2's statement and names L2 in /info (the client checks the statement against the
    ledger /info names). Victor's intent A402VaultPull(victor, amount, 1, deadline) names
    no life, so L1's settlement makes the pull with it. The statement Victor holds does not
    verify on-chain (another life): his 20,000 are gone from his wallet and no statement in
    his hands counts them."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    _confirmed(host, alice.address, 5_000)  # L1 is pinned
    # A second instance of the same enclave (its sealed identity: same key), on a first boot.
    twin = vm.platform.restore(CODE, vm.enclave.export_sealed())
    assert enclave_address(twin) == enclave_address(vm.enclave)
    wiped: VaultMode = vault_mode(vault.domain, (vm.platform, twin), played=False)
    assert wiped.vault.ledger != vm.vault.ledger == vault.ledger()
    victor = _holding(host, 20_000)
    deadline = now(host.chain) + HOUR
    pull, withheld = vm.vault.prepare_pull(victor.address, 20_000, deadline,
                                           now=now(host.chain))
    assert pull == 1
    mine, handed = _ask(host, wiped, victor, 20_000, deadline)  # what Victor sees
    assert mine == pull
    vm.vault.pull_authorized(pull)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    # His intent names L2, the life of the statement he holds: L1's settlement skips it.
    assert not vault.pulled(pull) and balance(usdc, victor.address) == 20_000
    with reverts_with("BadSignature(address)"):
        leave(vault, host.gas, handed.statement, handed.signature)
    del withheld
