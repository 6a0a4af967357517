"""A participant in debt does not stall everybody's settlement (session 11).

A debt: a settlement credited a provider a pending payment, the provider spent it, then its
own claim of the same payment landed on-chain (its ACK was withheld), voiding that
settlement; the enclave debits the credit, down to a debt taken from the provider's next
money. The enclave refuses a whole settlement if one payout in it exceeds its payee's free
balance less its debt, and the host used to check payouts against free + unconfirmed only:
the indebted provider's withdrawal of a fresh deposit passed the host's check, the enclave
refused the batch, the scheduler put it back, and the next round built the same batch —
nobody in it was ever paid. Now the host filters a batch with the enclave's own check
(``payable``) at the signing's ``now`` under the same lock: the indebted payout is dropped
with ``debt_outstanding``, the others are paid; a withdrawal asked while in debt is refused
(402 ``debt_outstanding``). On anvil, balances asserted on-chain and in the enclave."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from a402.asc import ForceCloseDue
from a402.chain.node import Chain
from a402.crypto.vault_messages import VaultChannelTerms
from a402.vault.mode import VaultModeError
from a402.vault.settlement_schedule import SchedulePolicy
from a402.vault_accounts import CLAIM_WINDOW
from a402.vault_contract import PendingClaim

from .accounts_setup import PRICE
from .helpers import balance, funded, increase_time, now
from .test_service import Harness, _now

pytestmark = pytest.mark.anvil


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def _conserved(h: Harness) -> None:
    """Everything signed landed, and the pool holds exactly what the accounts count."""
    t = h.service.accounts.totals()
    assert h.contract.last_epoch() == h.service.accounts.epoch
    assert t["debt"] == 0
    assert balance(h.usdc, h.contract.address) == (
        t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


def _indebted_provider(h: Harness) -> tuple[Any, Any, Any, PendingClaim]:
    """Alice pays the provider PRICE; the vault gets the REVEAL, the provider never gets
    its ACK. A settlement (signed, not landed yet) credits the provider PRICE, which it
    spends on a channel of its own; it deposits 3,000 more. Returns alice, bob, the
    provider and its claim (not sent yet)."""
    alice, bob = Account.create(), Account.create()
    provider, other = h.vm.provider(), h.vm.provider()
    h.deposit(alice.address, 20_000)
    h.deposit(bob.address, 5_000)
    h.service.tick()  # epoch 1 confirms both deposits and lands
    cid, side, _ = h.open(alice, provider, 5 * PRICE)
    call = h.vm.call(alice, key="never-acked")
    t0 = _now()
    exec_ = h.service.request(cid, call, PRICE, t0)
    side.receive(exec_, now=t0)
    authorized = h.service.receive(cid, side.reply(exec_.request_id, b"result"), t0)
    reveal = side.receive(authorized.step.send[0], now=t0).send[0]
    h.service.receive(cid, reveal, t0)  # revealed: the vault will credit the provider
    (due,) = side.poll(now=t0 + 31).events  # the ACK never came
    assert isinstance(due, ForceCloseDue)
    pending = authorized.pending
    assert pending is not None
    increase_time(h.chain, CLAIM_WINDOW + 2)
    # Epoch 2 credits the provider PRICE (signed and stored; not landed yet).
    h.service.change(lambda: h.service.accounts.settle([], now=now(h.chain)))
    assert h.service.balance(provider.address)["free"] == str(PRICE)
    h.service.open_channel(provider.address, other.address, other.schnorr.public_key, PRICE)
    assert h.service.balance(provider.address)["free"] == "0"  # spent
    h.deposit(provider.address, 3_000)
    h.service.observe_deposits()
    c = due.claim
    t = h.service.accounts.terms(cid)
    claim = PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s,
                         pending.client_nonce, pending.epoch, pending.deadline,
                         c.authorization, pending.signature)
    terms = VaultChannelTerms("0x" + t.client.hex(), "0x" + t.provider.hex(), t.provider_key,
                              t.deposit, t.salt)
    return alice, bob, provider, (terms, claim)


def _claim(h: Harness, provider: Any, claim: Any) -> None:
    h.contract.claim_payment(funded(h.chain, h.usdc), *claim)  # epoch 2 can never land now
    assert balance(h.usdc, provider.address) == PRICE


def _rounds(h: Harness, n: int = 3) -> None:
    """The worker's rounds (a round that fails is logged by the worker; so here)."""
    for _ in range(n):
        with contextlib.suppress(VaultModeError):
            h.service.tick()


def test_a_payout_of_a_participant_that_fell_into_debt_is_dropped_and_the_batch_is_paid(
    h: Harness,
) -> None:
    alice, bob, provider, claim = _indebted_provider(h)
    # Both withdrawals are acknowledged while the provider owes nothing.
    assert h.service.withdraw(provider.address, 3_000)["queued"] == "3000"
    assert h.service.withdraw(bob.address, 1_000)["queued"] == "1000"
    _claim(h, provider, claim)
    _rounds(h)  # the claim is reported: the provider owes PRICE; the batch is due
    # Bob is paid in the settlement replacing the voided one; the provider's payout is not.
    assert h.paid_to(bob.address) == 1_000
    assert h.paid_to(provider.address) == PRICE  # its claim only
    mine = h.service.balance(provider.address)
    assert (mine["free"], mine["debt"], mine["payoutRequested"]) == (
        str(3_000 - PRICE), "0", "0")  # the debt taken from its confirmed deposit
    (dropped,) = mine["payoutsDropped"]
    assert (dropped["error"], dropped["amount"]) == ("debt_outstanding", "3000")
    assert h.service.status()["droppedPayouts"] == [dropped]
    assert h.service.balance(bob.address)["free"] == "4000"
    _conserved(h)
    # Nothing is stuck: what the provider has is paid with the next batch.
    h.service.withdraw(provider.address, 3_000 - PRICE)
    h.service.withdraw(alice.address, 1_000)
    _rounds(h, 1)
    assert h.paid_to(provider.address) == 3_000
    assert h.paid_to(alice.address) == 1_000
    _conserved(h)


def test_a_withdrawal_asked_while_in_debt_is_refused_and_the_others_are_paid(
    h: Harness,
) -> None:
    _, bob, provider, claim = _indebted_provider(h)
    _claim(h, provider, claim)
    h.service.observe_deposits()  # the claim reported: PRICE owed, 3,000 unconfirmed
    with pytest.raises(VaultModeError) as refused:
        h.service.withdraw(provider.address, 3_000)
    assert h.service.balance(provider.address)["debt"] == str(PRICE)
    assert (refused.value.status, refused.value.reason) == (402, "debt_outstanding")
    assert refused.value.detail.startswith("nothing was queued: you owe 1000")
    assert h.service.balance(provider.address)["payoutRequested"] == "0"
    h.service.withdraw(provider.address, 3_000 - PRICE)  # what the debt leaves
    h.service.withdraw(bob.address, 1_000)
    _rounds(h)
    assert h.paid_to(bob.address) == 1_000
    assert h.paid_to(provider.address) == 3_000
    assert h.service.balance(provider.address)["free"] == "0"
    assert h.service.status()["droppedPayouts"] == []
    _conserved(h)


def test_a_dropped_payout_is_still_shown_after_a_restart_and_its_money_is_still_there(
    h: Harness,
) -> None:
    """Review S11: the drop was kept in this process only. After a restart (or on the
    replica that took over) the participant saw its acknowledged withdrawal neither queued,
    nor paid, nor dropped: nothing told it why. The drop is sealed with the payout queue in
    the very write that removes the request from it."""
    _, bob, provider, claim = _indebted_provider(h)
    assert h.service.withdraw(provider.address, 3_000)["queued"] == "3000"
    assert h.service.withdraw(bob.address, 1_000)["queued"] == "1000"
    _claim(h, provider, claim)
    _rounds(h)
    (dropped,) = h.service.balance(provider.address)["payoutsDropped"]
    again = h.start()  # the first process is gone
    mine = again.balance(provider.address)
    assert mine["payoutsDropped"] == [dropped]
    assert (dropped["error"], dropped["amount"]) == ("debt_outstanding", "3000")
    assert again.status()["droppedPayouts"] == [dropped]
    # what the user reads is true: nothing paid for it, its money still in its account
    assert (mine["free"], mine["payoutRequested"], mine["debt"]) == (
        str(3_000 - PRICE), "0", "0")
    assert h.paid_to(provider.address) == PRICE  # its claim only
    assert h.paid_to(bob.address) == 1_000
    h.service = again
    _conserved(h)


def test_a_batch_whose_signing_round_hits_a_node_error_is_paid_by_the_next_round(
    h: Harness,
) -> None:
    """Review S11: the round that takes a due batch out of the queue reads the chain (its
    time, the payees' force-settle status) before the signing; a node error there left the
    batch "in flight" in this process for ever: shown as requested, never in a batch again,
    never paid until a restart. The batch now waits again, and the next round pays it."""
    alice, bob = Account.create(), Account.create()
    h.deposit(alice.address, 2_000)
    h.deposit(bob.address, 2_000)
    h.service.tick()  # epoch 1 confirms both deposits and lands
    h.service.withdraw(alice.address, 700)
    h.service.withdraw(bob.address, 300)
    real = h.service.chain_time
    failures = iter([ConnectionError("the node hung up")])

    def flaky() -> int:
        for e in failures:
            raise e
        return real()

    h.service.chain_time = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        h.service.tick()  # the round that took the batch fails: nothing signed, nothing paid
    assert h.paid_to(alice.address) == 0
    assert h.service.balance(alice.address)["payoutRequested"] == "700"
    h.service.tick()  # the node is back
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    for who, left in ((alice, 1_300), (bob, 1_700)):
        mine = h.service.balance(who.address)
        assert (mine["free"], mine["payoutRequested"]) == (str(left), "0")
    _conserved(h)


def test_settle_now_that_fails_on_its_first_batch_leaves_no_batch_stranded(
    vault_chain: Chain, usdc: Any, tmp_path: Path,
) -> None:
    """Review S11: the operator's settle-now takes every request into batches at once; one
    failing signing left the batches after it in flight, never paid before a restart."""
    h = Harness(vault_chain, usdc, tmp_path, SchedulePolicy(
        window=0, jitter=0, min_participants=1, max_per_tx=1))
    alice, bob = Account.create(), Account.create()
    h.deposit(alice.address, 2_000)
    h.deposit(bob.address, 2_000)
    h.service.tick()
    h.service.withdraw(alice.address, 700)
    h.service.withdraw(bob.address, 300)
    real = h.service.chain_time
    failures = iter([ConnectionError("the node hung up")])

    def flaky() -> int:
        for e in failures:
            raise e
        return real()

    h.service.chain_time = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        h.service.settle_now()
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (0, 0)
    h.service.settle_now()  # the node is back: both batches
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    for who, left in ((alice, 1_300), (bob, 1_700)):
        mine = h.service.balance(who.address)
        assert (mine["free"], mine["payoutRequested"]) == (str(left), "0")
    _conserved(h)


def test_a_withdrawal_asked_again_after_its_payout_was_dropped_says_so_not_queued(
    h: Harness,
) -> None:
    """Review S11: a withdrawal asked again with its idempotency key answered what it first
    answered (``queued``) for ever, though its payout was dropped and nothing would be paid:
    the client believed its money was on its way. It now answers the drop (nothing paid,
    nothing queued again), after a restart too; a paid one answers as before."""
    _, bob, provider, claim = _indebted_provider(h)
    assert h.service.withdraw(provider.address, 3_000, "w-1")["queued"] == "3000"
    assert h.service.withdraw(bob.address, 1_000, "b-1")["queued"] == "1000"
    _claim(h, provider, claim)
    _rounds(h)
    assert h.paid_to(bob.address) == 1_000
    for service in (h.service, h.start()):  # and after a restart
        again = service.withdraw(provider.address, 3_000, "w-1")
        assert again["replayed"] is True
        assert again["payoutDropped"] == "debt_outstanding"
        assert again["message"].startswith("nothing was paid: 3000 asked")
        mine = service.balance(provider.address)
        assert (mine["free"], mine["payoutRequested"]) == (str(3_000 - PRICE), "0")
        paid = service.withdraw(bob.address, 1_000, "b-1")
        assert paid["replayed"] is True and "payoutDropped" not in paid
        assert service.balance(bob.address)["payoutRequested"] == "0"
    assert h.paid_to(provider.address) == PRICE  # its claim only
    assert h.paid_to(bob.address) == 1_000
