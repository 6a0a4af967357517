"""Adversarial review of vault mode (session 9, rev1), after the host wiring merged: each
test plays one attack or failure on anvil against the real ``A402Vault`` and the
enclave's accounts, and asserts what each participant ends up with on-chain. Each was a
strict xfail failing at the assertion that states the property; all eight are fixed now
(the fixes at their own interfaces: ``test_review_s9_fixes.py``), and each test's
docstring says what happened before its fix.

Not repeated here: rev3's F1-F8 (``test_review_rev3.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import LocalProtocolError
from a402.chain.tx import TransactionFailed
from a402.tee import EnclaveError
from a402.vault.mode_app import create_mode_app
from a402.vault.watchtower import VaultWatchtower
from a402.vault_accounts import CLAIM_WINDOW
from a402.vault_contract import AccountStatus
from a402.wire import vault_api as api

from .accounts_setup import PRICE, Host, VaultMode, client, vault_mode
from .helpers import SETTLE_WINDOW, balance, funded, increase_time, leave, now
from .test_service import Harness

pytestmark = pytest.mark.anvil


def _confirmed(host: Host, who: str, amount: int) -> None:
    host.deposit(who, amount)
    host.report_deposits()
    host.submit(host.vm.vault.settle([], now=now(host.chain)).settlement)


def _exit(host: Host, who: LocalAccount | Any) -> None:
    st = host.vm.vault.statement(who.address)
    leave(host.vault, host.gas, st.statement, st.signature)  # its signed exit order


# ------------------------------------- S9-1: σ_U after the client's exit was reported


def test_a_request_in_flight_when_its_client_exits_is_not_paid_twice(host: Host) -> None:
    """Alice (20,000) signs a call; the EXEC is out. She then starts her exit with her
    latest statement (it counts the channel's 5,000 as locked); the watchtower sees it,
    marks her exiting in the enclave and, her statement being the latest, does nothing.
    The provider's REPLY arrives: the enclave still signs σ_U (``receive`` never asks
    whether the client is exiting), takes δ from Alice's ledger, and at the deadline
    credits it to the provider, who is paid out. Alice's recorded statement still counts
    δ (the provider had no reason to claim): she leaves with 20,000, the provider with
    1,000, and Bob's 10,000 are short by 1,000."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    provider = vm.provider()
    host.deposit(bob.address, 10_000)
    _confirmed(host, alice.address, 20_000)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    exec_ = vm.vault.request(cid, vm.call(alice, key="in-flight", ts=t0), PRICE, t0)
    side.receive(exec_, now=t0)
    _exit(host, alice)  # her latest statement: 15,000 free + 5,000 locked
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    (answer,) = tower.poll()
    assert answer.refused is None and answer.answered_nonce is None  # nothing to answer
    try:
        authorized = vm.vault.receive(cid, side.reply(exec_.request_id, b"result"), t0)
    except (EnclaveError, LocalProtocolError):
        authorized = None  # the property: nothing moves an exiting client's money
    if authorized is not None:
        reveal = side.receive(authorized.step.send[0], now=t0).send[0]
        vm.vault.receive(cid, reveal, t0)
        increase_time(host.chain, CLAIM_WINDOW + 1)
        # The next settlement resolves the payment to the provider and pays it out.
        host.submit(vm.vault.settle([(provider.address, PRICE)],
                                    now=now(host.chain)).settlement)
    tower.poll()  # nothing new to answer
    _exit(host, bob)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    paid = balance(usdc, alice.address) + balance(usdc, provider.address)
    assert paid == 20_000, f"Alice's 20,000 paid out as {paid}"
    vault.final_force_settle(host.gas, bob.address)
    assert balance(usdc, bob.address) == 10_000


# ------------------------------------------ S9-2: the watchtower answers a force-settle once


def test_a_watchtower_whose_first_answer_failed_answers_at_its_next_poll(host: Host) -> None:
    """Alice spends 2,000 and asks for 1,000; settlement 2 (crediting the provider, paying
    her) is signed, not landed yet. She force-settles with her first statement (20,000).
    The watchtower must land settlement 2 before it can challenge; its settle fails once
    (an RPC error: the node drops the connection): ``refused``. Settlement 2 then lands
    (the worker's next round). The watchtower polls again and again within the window:
    it never looks at Alice's force-settle again (``from_block`` moved past it), and she
    leaves with 20,000."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    provider = vm.provider()
    host.deposit(bob.address, 10_000)
    _confirmed(host, alice.address, 20_000)
    stale = vm.vault.statement(alice.address)
    cid, side = vm.open(alice, provider, 5 * PRICE)
    t0 = now(host.chain)
    for key in ("a", "b"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    second = vm.vault.settle([(alice.address, 1_000)], now=now(host.chain)).settlement
    assert vm.vault.statement(alice.address).statement.epoch == 2 > vault.last_epoch()
    leave(vault, host.gas, stale.statement, stale.signature)

    honest_settle = vault.settle
    raced: list[bool] = []

    def one_race(*args: Any, **kwargs: Any) -> Any:
        if not raced:  # the RPC node drops the watchtower's settle once (a deposit racing
            raced.append(True)  # it no longer can: the contract checks deposits monotonically)
            raise TransactionFailed("connection reset by peer")
        return honest_settle(*args, **kwargs)

    vault.settle = one_race  # type: ignore[method-assign]
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    (first,) = tower.poll()
    vault.settle = honest_settle  # type: ignore[method-assign]
    assert first.refused is not None and first.answered_nonce is None  # the RPC error
    host.submit(second)  # the worker's next round lands it: nothing stands in the way now
    answers = []
    for _ in range(3):  # three more polls inside the window
        increase_time(host.chain, SETTLE_WINDOW // 5)
        answers += tower.poll()
    increase_time(host.chain, SETTLE_WINDOW)
    vault.final_force_settle(host.gas, alice.address)
    # Her latest statement: 14,000 free + 3,000 locked, plus the 1,000 payout withheld.
    assert balance(usdc, alice.address) == 17_000 + 1_000, (
        f"Alice left with {balance(usdc, alice.address)}; answers after the failure: {answers}")


# ------------------------------------ S9-3: the host sends a client's call to its own provider


def test_the_host_cannot_spend_a_clients_signed_call_at_a_provider_of_its_own(
    host: Host,
) -> None:
    """Alice signs a call for https://api.example/weather (max 1,000), meant for the
    provider that serves it. The host (it relays every call) opens a channel from
    Alice's balance to Mallory, a provider of its own (Alice signed nothing for it: the
    enclave's ``open_channel`` takes the host's word), spends the call there at the
    maximum, Mallory answers anything and reveals: Alice pays 1,000 for a result of
    Mallory's choosing, and her real call is consumed (the honest provider can never be
    paid for it)."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    honest, mallory = vm.provider(), vm.provider()
    _confirmed(host, alice.address, 20_000)
    vm.open(alice, honest, 5 * PRICE)  # the channel Alice's client asked for
    t0 = now(host.chain)
    call = vm.call(alice, key="weather", max_price=PRICE, ts=t0)
    cid, side = _host_opens(vm, alice, mallory)
    # The property: a call pays only the provider it was signed for (refused here).
    with contextlib.suppress(EnclaveError, LocalProtocolError):
        vm.pay(cid, side, call, PRICE, now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    with contextlib.suppress(EnclaveError):  # nothing_to_settle once the call was refused
        host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    theirs = vm.vault.statement(mallory.address) if vm.vault.balance(
        mallory.address)[0] else None
    if theirs is not None:
        leave(vault, host.gas, theirs.statement, theirs.signature)
        increase_time(host.chain, SETTLE_WINDOW + 1)
        vault.final_force_settle(host.gas, mallory.address)
        assert vault.status(mallory.address) is AccountStatus.SETTLED
    assert balance(usdc, mallory.address) == 0, "Mallory paid with Alice's money for her call"


def _host_opens(vm: VaultMode, alice: LocalAccount, provider: Any) -> tuple[bytes, Any]:
    return vm.open(alice, provider, 5 * PRICE)


# ------------------------------------------ S9-4: hostile JSON to the vault-mode API: a 500


def test_a_withdraw_with_a_body_that_is_not_strict_json_gets_a_400_with_its_reason(
    vault_chain: Any, usdc: Any, tmp_path: Path,
) -> None:
    h = Harness(vault_chain, usdc, tmp_path)
    alice = client()
    h.deposit(alice.address, 1_000)
    h.service.tick()
    app = create_mode_app(h.service, worker=False)
    vault = api.vault_account(h.chain.network, h.service.address)
    bodies = [b'{"amount": NaN}', b'{"amount": "1", "amount": "900"}', b'\xff\xfe',
              b'["amount", "5"]', '{"amount": "\u0661\u0662"}'.encode()]  # Arabic-Indic 12

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://vault") as http:
            out = []
            for body in bodies:
                headers = api.sign_request(alice, vault, "POST", "/v1/vault/withdraw", body,
                                           life=h.service.accounts.life_id)
                out.append(await http.post("/v1/vault/withdraw", content=body,
                                           headers=headers))
            return out

    answers = asyncio.run(run())
    assert h.service.balance(alice.address)["payoutRequested"] == "0"  # nothing queued
    got = [(r.status_code, r.json()["error"]) for r in answers]
    assert all(status == 400 and reason != "internal_error" for status, reason in got), got


# --------------------------- S9-5: a wiped store makes a fresh ledger under the same key


def test_a_host_that_wipes_the_stored_ledger_cannot_give_a_client_its_spent_deposit_again(
    host: Host,
) -> None:
    """Alice (the host's own client key) deposits 10,000 and pays Mallory (the host's
    provider) 2,000, which Mallory takes out in settlement 2; Bob deposits 10,000. The host
    deletes the ``vault-mode/ledger`` row and restarts: the service sees no ledger, the
    enclave code starts on a first boot (same enclave, same key: it cannot tell), the
    host reports the chain's deposits from the start, and the enclave signs a settlement
    "epoch 1" confirming them (it never lands: the chain is at epoch 2) and a statement of
    Alice's: 10,000, epoch 1. Her lane was never paid (lastPaidEpoch 0 ≤ 1 ≤ lastEpoch 2):
    the contract takes it, nobody holds a newer one to answer with, she leaves with
    10,000, and Bob is 2,000 short."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice, bob = client(), client()
    mallory = vm.provider()
    host.deposit(bob.address, 10_000)
    _confirmed(host, alice.address, 10_000)
    cid, side = vm.open(alice, mallory, 5 * PRICE)
    t0 = now(host.chain)
    for key in ("a", "b"):
        vm.pay(cid, side, vm.call(alice, key=key, ts=t0), now=t0)
    vm.vault.close_channel(cid)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([(mallory.address, 2 * PRICE)],
                                now=now(host.chain)).settlement)
    assert balance(usdc, mallory.address) == 2 * PRICE and vault.last_epoch() == 2
    hers = vm.vault.statement(alice.address)
    assert hers.statement.balance + hers.statement.locked == 8_000
    # The wipe: a first boot of the vault-mode code in the same enclave.
    fresh = vault_mode(vault.domain, (vm.platform, vm.enclave), played=False)
    host.vm = fresh
    host.report_deposits()
    fresh.vault.settle([], now=now(host.chain))  # "epoch 1": never lands
    forged = fresh.vault.statement(alice.address)
    assert forged.statement.balance == 10_000 and forged.statement.epoch == 1
    # The property: a statement of another ledger life does not verify (S9-5's fix: the
    # first landed settlement pinned the old life; the fresh one is another).
    with pytest.raises(TransactionFailed):
        leave(vault, host.gas, forged.statement, forged.signature)
    leave(vault, host.gas, hers.statement, hers.signature)
    his = vm.vault.statement(bob.address)
    leave(vault, host.gas, his.statement, his.signature)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    assert balance(usdc, alice.address) == 8_000, "Alice spent 2,000 and leaves with 10,000"
    vault.final_force_settle(host.gas, bob.address)
    assert balance(usdc, bob.address) == 10_000


# ---------------- S9-6: money the enclave credits to an exiting account after the answer


def test_a_provider_that_exits_with_a_payment_pending_is_paid_that_payment(host: Host) -> None:
    """Pat, an honest provider, has 1,000 settled and a second 1,000 pending
    (delivered, REVEAL and ACK done, claim window open) when she leaves the vault with her
    latest statement (1,000: a provider's statement never counts a pending payment). The
    watchtower marks her exiting; her statement is the latest, nothing to answer. Before
    S9-6's fix, at the deadline the enclave credited the pending 1,000 to her frozen account
    and signed a newer statement nobody posted: she left with 1,000 of her 2,000. Now the
    settlement that resolves it pays it to her as an exit credit."""
    vm, vault, usdc = host.vm, host.vault, host.token
    alice = client()
    pat = vm.provider()
    _confirmed(host, alice.address, 10_000)
    cid, side = vm.open(alice, pat, 5 * PRICE)
    t0 = now(host.chain)
    vm.pay(cid, side, vm.call(alice, key="a", ts=t0), now=t0)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # credits Pat 1,000
    t1 = now(host.chain)
    vm.pay(cid, side, vm.call(alice, key="b", ts=t1), now=t1)  # pending until t1 + window
    _exit(host, pat)
    tower = VaultWatchtower(vault, vm.vault, funded(host.chain, usdc))
    (answer,) = tower.poll()
    assert answer.refused is None and answer.answered_nonce is None
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # resolves "b" to Pat
    # S9-6's fix: "b" is paid to her at once as an exit credit (her statements never count
    # it, her lane does not move); her account keeps the 1,000 her recorded statement has.
    assert balance(usdc, pat.address) == PRICE
    assert vm.vault.balance(pat.address)[0] == PRICE
    tower.poll()
    _exit(host, alice)
    increase_time(host.chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(host.gas, alice.address)
    vault.final_force_settle(host.gas, pat.address)
    assert balance(usdc, alice.address) == 8_000
    assert balance(usdc, pat.address) == 2 * PRICE, (
        f"Pat paid {balance(usdc, pat.address)}; {balance(usdc, vault.address)} left in the pool")


# ------------------------------- S9-7: deposits reported at 0 confirmations, then a reorg


def test_a_reorg_that_drops_a_reported_deposit_does_not_stop_settlement_for_good(
    vault_chain: Any, usdc: Any, tmp_path: Path,
) -> None:
    """Alice's 10,000 are confirmed (epoch 1). Bob's 5,000 deposit is mined and the worker
    looks at once; a one-block reorg then drops it (its transaction is not mined again).
    Carol deposits 7,000. Before S9-7's fix the worker reported Bob's deposit at 0
    confirmations and the enclave, which folded it, refused Carol's report and signed only
    settlements naming deposits the contract never had: nothing landed again. The service
    runs with its default (records are reported once in the ``finalized`` block; anvil
    finalizes two blocks behind its head), so Bob's deposit was never reported: Carol's is
    confirmed by the next settlement and counted by her statement."""
    h = Harness(vault_chain, usdc, tmp_path, confirmations=None)  # the safe default

    def blocks_go_by(n: int = 2) -> None:
        for _ in range(n):
            vault_chain.w3.provider.make_request("evm_mine", [])

    alice, bob, carol = client(), client(), client()
    h.deposit(alice.address, 10_000)
    h.service.tick()
    assert h.contract.last_epoch() == 0  # not final yet: not reported, nothing to confirm
    blocks_go_by()
    h.service.tick()
    assert h.contract.last_epoch() == 1
    snapshot = vault_chain.w3.provider.make_request("evm_snapshot", [])["result"]
    h.deposit(bob.address, 5_000)
    h.service.observe_deposits()  # the worker's round sees it in the latest block only
    assert bob.address not in h.service.accounts.participants()  # not reported
    vault_chain.w3.provider.make_request("evm_revert", [snapshot])  # the reorg
    h.deposit(carol.address, 7_000)
    blocks_go_by()
    for _ in range(3):  # the worker's next rounds (it logs and goes on)
        with contextlib.suppress(Exception):
            h.service.tick()
    assert balance(usdc, h.contract.address) == 17_000  # Bob's deposit is gone
    assert h.contract.last_epoch() == 2, "no settlement lands any more"
    assert h.service.statement(carol.address).statement.balance == 7_000


# ------------------------------ S9-8: a provider that never answers locks a channel for good


def test_a_client_closes_its_channel_after_a_provider_never_answered_its_request(
    vault_chain: Any, usdc: Any, tmp_path: Path,
) -> None:
    """Alice opens a 5,000 channel through the service and signs a call; the EXEC goes to
    the provider, which never replies. Well past the lock timeout (30 s) Alice closes the
    channel. Before S9-8's fix: refused, ``channel_busy``, for good (nothing in the
    service, the worker or the API called the machine's poll); now the worker's round
    expires the request (no σ_U was signed) and the close gives her all 10,000 back."""
    h = Harness(vault_chain, usdc, tmp_path)
    alice = client()
    silent = h.vm.provider()
    h.deposit(alice.address, 10_000)
    h.service.tick()
    cid, _, _ = h.open(alice, silent, 5 * PRICE)
    t0 = now(vault_chain)
    h.service.request(cid, h.vm.call(alice, key="k", ts=t0), PRICE, now=t0)
    increase_time(vault_chain, 3_600)
    h.service.tick(now=t0 + 3_600)  # the worker's rounds go by (its clock an hour on)
    h.service.close(cid)  # was channel_busy (LOCKED) for good before S9-8's fix
    assert h.service.balance(alice.address)["free"] == "10000"
    assert h.service.balance(alice.address)["locked"] == "0"
