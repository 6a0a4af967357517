"""Deposits pulled inside settlements, as the vault enclave's ledger runs them, on anvil.

A participant asks for a pull (:meth:`~a402.vault_accounts.VaultAccountsCode.prepare_pull`),
gets a statement counting it, signs its intent; the next settlement makes the pull, the one
after proves the chain's word on it (a pull check) and credits it. Every scenario asserts
token balances: the pool always covers what the participants can take out, and nobody's
money moves without a statement counting it.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.tee import EnclaveError
from a402.vault_accounts import SignedStatement

from .accounts_setup import PRICE, Host, VaultMode, client
from .helpers import balance, funded, leave, now, reverts_with
from .test_pulled_deposits import _cancel
from .test_review_rev3 import _leave

pytestmark = pytest.mark.anvil

HOUR = 3_600


def _holding(host: Host, tokens: int) -> LocalAccount:
    """A participant with ``tokens`` in its wallet and no ETH: a pull needs no transaction
    (no approval) of its own."""
    return funded(host.chain, host.token, tokens, eth=0)


def _ask(host: Host, who: LocalAccount, amount: int, *, sign: bool = True
         ) -> tuple[int, SignedStatement]:
    """``who`` asks for a pull, checks the statement counting it, then signs its intent."""
    deadline = now(host.chain) + HOUR
    pull, statement = host.vm.vault.prepare_pull(who.address, amount, deadline,
                                                 now=now(host.chain))
    st = statement.statement
    assert (st.pull, st.pulling) == (pull, amount) and st.balance >= amount
    if sign:
        host.intents[pull] = host.vault.sign_pull(who, who.address, amount, pull, deadline,
                                                  host.vm.vault.ledger)
        host.vm.vault.pull_authorized(pull)
    return pull, statement


def _settle(host: Host) -> Any:
    settled = host.vm.vault.settle([], now=now(host.chain))
    host.submit(settled.settlement)
    host.report_pulls()
    return settled


def _pool_covers(host: Host) -> None:
    """Conservation, every pull checked: the pool holds exactly what the ledger owes."""
    t = host.vm.vault.totals()
    assert t["pulling"] == 0
    owed = t["free"] + t["locked"] + t["unconfirmed"] + t["pending"] - t["debt"]
    assert owed == balance(host.token, host.vault.address)


def test_a_pulled_deposit_is_made_by_one_settlement_and_spendable_after_the_next(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = _holding(host, 20_000)
    pull, _ = _ask(host, alice, 20_000)
    assert vm.vault.balance(alice.address) == (0, 0, 0)  # counted in its statement only
    _settle(host)  # makes the pull
    assert vault.pulled(pull) and balance(usdc, alice.address) == 0
    assert balance(usdc, vault.address) == 20_000
    assert vm.vault.balance(alice.address)[0] == 0, "not spendable before it is checked"
    settled = _settle(host)  # proves it made, credits it
    (mine,) = [s for s in settled.statements if s.statement.participant == alice.address]
    assert (mine.statement.balance, mine.statement.pull, mine.statement.pulling) == (
        20_000, 0, 0)
    assert vm.vault.balance(alice.address)[0] == 20_000
    assert vm.vault.totals()["pulled"] == 20_000
    provider = vm.provider()
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    vm.pay(cid, side, vm.call(alice, key="k", ts=t0), now=t0)
    _pool_covers(host)


def test_a_pull_whose_authorization_was_cancelled_is_skipped_then_dropped_and_credits_nothing(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = _holding(host, 20_000)
    pull, counting = _ask(host, alice, 20_000)
    _cancel(host.chain, usdc, alice, pull, vm.vault.ledger)
    _settle(host)  # the pull is skipped; the settlement lands
    assert not vault.pulled(pull) and balance(usdc, alice.address) == 20_000
    settled = _settle(host)  # proves it not made
    (mine,) = [s for s in settled.statements if s.statement.participant == alice.address]
    assert (mine.statement.balance, mine.statement.pull) == (0, 0)
    assert vm.vault.balance(alice.address) == (0, 0, 0)
    # The statement that counted it pays nothing of it: the pull was not made.
    leave(vault, host.gas, counting.statement, counting.signature)
    _leave(host, host.gas, alice.address)
    assert balance(usdc, alice.address) == 20_000 and balance(usdc, vault.address) == 0


def test_with_the_vault_dark_after_a_pull_the_participant_leaves_with_the_statement_it_got_first(
    host: Host,
) -> None:
    """The pull is made; then the host withholds everything (no later statement reaches
    Alice, the vault goes dark). The statement she held before signing her intent counts
    the pull, and the pull was made: her exit pays it."""
    vault, usdc = host.vault, host.token
    alice = _holding(host, 20_000)
    _, counting = _ask(host, alice, 20_000)
    _settle(host)
    assert balance(usdc, vault.address) == 20_000
    leave(vault, host.gas, counting.statement, counting.signature)
    _leave(host, host.gas, alice.address)
    assert balance(usdc, alice.address) == 20_000 and balance(usdc, vault.address) == 0


def test_a_host_that_reports_a_skipped_pull_as_made_lands_no_settlement_crediting_it(
    host: Host,
) -> None:
    vm, vault = host.vm, host.vault
    alice = _holding(host, 20_000)
    pull, _ = _ask(host, alice, 20_000, sign=False)
    vm.vault.pull_authorized(pull)  # the host says it holds an intent; it sends none
    settled = vm.vault.settle([], now=now(host.chain))
    host.submit(settled.settlement)
    assert not vault.pulled(pull)
    vm.vault.pull_landed(pull, True)  # the lie
    credited = vm.vault.settle([], now=now(host.chain)).settlement
    assert vm.vault.balance(alice.address)[0] == 20_000  # in the enclave, on the lie
    with reverts_with("PullNotMade(uint32)"):
        host.submit(credited)
    assert vault.last_epoch() == 1
    # Alice's statements naming that epoch are unusable, and she has no money in the pool.
    with pytest.raises(EnclaveError, match="funds_settling"):
        cid, _ = vm.open(alice, vm.provider(), 5 * PRICE)
        vm.vault.request(cid, vm.call(alice, key="k", ts=now(host.chain)), PRICE,
                         now(host.chain))


def test_a_second_pull_waits_until_the_first_is_checked_and_an_unsent_one_is_replaced(
    host: Host,
) -> None:
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = _holding(host, 30_000)
    first, _ = _ask(host, alice, 5_000, sign=False)
    second, _ = _ask(host, alice, 10_000)  # replaces the first, never sent
    _settle(host)
    assert not vault.pulled(first) and vault.pulled(second)
    with pytest.raises(EnclaveError, match="pull_outstanding"):
        _ask(host, alice, 1_000)
    _settle(host)
    third, _ = _ask(host, alice, 1_000)
    _settle(host)
    _settle(host)
    assert vm.vault.balance(alice.address)[0] == 11_000
    assert balance(usdc, vault.address) == 11_000 == vm.vault.totals()["pulled"]
    assert third > second > first


def test_a_pull_deadline_too_close_for_a_settlement_is_refused_and_nothing_is_kept(
    host: Host,
) -> None:
    """The enclave signs no statement for a pull whose authorization would expire before a
    settlement can carry it."""
    from a402.vault_accounts import PULL_MARGIN

    vm = host.vm
    alice = _holding(host, 5_000)
    t = now(host.chain)
    with pytest.raises(EnclaveError, match="bad_deadline"):
        vm.vault.prepare_pull(alice.address, 5_000, t + PULL_MARGIN - 1, now=t)
    assert vm.vault.pulling(alice.address) == (0, 0) and not vm.vault.pulls_due
    pull, _ = vm.vault.prepare_pull(alice.address, 5_000, t + PULL_MARGIN, now=t)
    assert vm.vault.pulling(alice.address) == (pull, 5_000)


def test_a_wiped_ledger_cannot_pay_a_pull_statement_of_its_own_for_an_id_the_old_life_made(
    host: Host,
) -> None:
    """The host wipes the sealed ledger and starts the same enclave afresh: the new life
    numbers its pulls from 1 again. Mallory's statement from it counts "pull 1" — which the
    old life made for Alice. It names the new life (a statement counting a pull always
    names its life), so the contract does not take it."""
    from .accounts_setup import vault_mode
    vault = host.vault
    alice = _holding(host, 20_000)
    _ask(host, alice, 20_000)
    _settle(host)
    assert vault.pulled(1)
    fresh: VaultMode = vault_mode(vault.domain, (host.vm.platform, host.vm.enclave),
                                  played=False)
    mallory = client()
    pull, forged = fresh.vault.prepare_pull(mallory.address, 20_000, now(host.chain) + HOUR,
                                            now=now(host.chain))
    assert pull == 1 and forged.statement.epoch == 0
    with reverts_with("BadSignature(address)"):
        leave(vault, host.gas, forged.statement, forged.signature)
