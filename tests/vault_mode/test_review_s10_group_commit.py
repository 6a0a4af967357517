"""Review of vault mode's group commit (session 10): nothing the enclave signed leaves the
process before a stored ledger holds it, even when another thread acts meanwhile.

Each test makes one ledger write hang (a slow disk), has another thread act during it, then
"kills" the process (the write fails and the service is restarted from what was stored)
and checks on anvil that the chain holds nothing the restored ledger does not know."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from a402.chain.node import Chain
from a402.vault.mode import JOURNAL_PREFIX, LEDGER_KEY

from .accounts_setup import PRICE
from .helpers import SETTLE_WINDOW, balance, funded, increase_time
from .test_service import Harness

pytestmark = pytest.mark.anvil


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def test_a_settlement_being_stored_is_not_landed_by_another_thread_before_it_is_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Account.create(), Account.create()
    for who in (alice, bob):
        h.deposit(who.address, 5_000)
    h.service.tick()  # deposits confirmed (epoch 1, landed)
    h.service.withdraw(alice.address, 4_000)
    h.service.withdraw(bob.address, 1_000)
    epoch = h.contract.last_epoch()
    in_write, lander_done = threading.Event(), threading.Event()

    def killed_in_write(values: dict[str, bytes], **_: Any) -> None:
        in_write.set()  # the settlement is signed; its ledger is being written
        lander_done.wait(3)
        raise OSError("killed -9 before the write committed")
    monkeypatch.setattr(h.service.store, "put_metas", killed_in_write)
    signer = threading.Thread(target=lambda: _quietly(h.service.settle_now))
    signer.start()
    assert in_write.wait(10)
    # settle-now from the operator (or the worker's round) lands meanwhile
    lander = threading.Thread(target=lambda: _quietly(h.service.land))
    lander.start()
    lander.join(2)
    lander_done.set()
    signer.join(10)
    lander.join(10)
    monkeypatch.undo()
    again = h.start()  # restarted from what was stored
    assert again.accounts.epoch >= h.contract.last_epoch() == epoch  # nothing unstored landed
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (0, 0)
    assert again.balance(alice.address)["free"] == "5000"
    assert again.balance(alice.address)["payoutRequested"] == "4000"
    landed = again.settle_now()  # the restored queue is paid, once
    assert [x.payees for x in landed] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (4_000, 1_000)
    assert balance(h.usdc, h.contract.address) == 5_000


def test_the_watchtower_answers_a_force_settle_only_with_a_statement_already_stored(
    h: Harness, vault_chain: Chain, usdc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = funded(vault_chain, usdc)
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    stale = h.service.statement(client.address)  # 10 000 free
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    # a paid call up to the provider's REPLY: the vault's σ_U is what the write guards
    exec_ = h.service.request(cid, h.vm.call(client, key="k1"), PRICE)
    side.receive(exec_, now=time.time())
    reply = side.reply(exec_.request_id, b"result")
    h.contract.init_force_settle(client, stale.statement, stale.signature)
    in_write, watched = threading.Event(), threading.Event()
    real = h.service.store.put_metas

    def slow_then_killed(values: dict[str, bytes], **kw: Any) -> Any:
        if any(k == LEDGER_KEY or k.startswith(JOURNAL_PREFIX) for k in values):
            in_write.set()  # σ_U and the client's statement are exported, being written
            watched.wait(3)
            raise OSError("killed -9 before the write committed")
        return real(values, **kw)
    monkeypatch.setattr(h.service.store, "put_metas", slow_then_killed)
    payer = threading.Thread(target=lambda: _quietly(lambda: h.service.receive(cid, reply)))
    payer.start()
    assert in_write.wait(10)
    watcher = threading.Thread(target=lambda: _quietly(
        lambda: h.service.change(h.service._watch)))
    watcher.start()
    watcher.join(2)
    watched.set()
    payer.join(10)
    watcher.join(10)
    monkeypatch.undo()
    again = h.start()  # σ_U never left: the provider holds no claim on the client's δ
    known = again.statement(client.address).statement
    recorded = h.contract.force_settle(client.address)
    assert recorded.nonce <= known.nonce  # the chain names no statement the ledger lost
    assert recorded.balance + recorded.locked == 10_000  # nothing of the client's was spent
    again.tick()  # the restarted watchtower: nothing newer to answer with, or answered
    increase_time(vault_chain, max(SETTLE_WINDOW, 3_601))
    h.contract.final_force_settle(client, client.address)
    # the client leaves with all it has: the restored ledger holds no payment of its δ
    assert again.balance(client.address)["locked"] == str(5 * PRICE)
    assert h.paid_to(client.address) == 10_000


def _quietly(fn: Any) -> None:
    with contextlib.suppress(Exception):  # the killed write: the call is not acknowledged
        fn()


def test_a_first_statement_handed_out_is_stored_so_no_restart_signs_another_of_its_nonce(
    h: Harness
) -> None:
    alice = Account.create()
    h.deposit(alice.address, 3_000)
    h.service.observe_deposits()  # credited, unconfirmed: no statement signed yet
    first = h.service.statement(alice.address)  # the enclave signs one now, handed out
    again = h.start()  # killed right after the answer left: restarted from the store
    again.tick()  # the deposit confirmed: the enclave signs alice's next statement
    latest = again.statement(alice.address)
    # one nonce, one statement: the restored ledger knows the one alice holds
    assert latest.statement.nonce > first.statement.nonce
    assert h.contract.last_epoch() == again.accounts.epoch
    assert again.balance(alice.address)["free"] == "3000"
    assert balance(h.usdc, h.contract.address) == 3_000
