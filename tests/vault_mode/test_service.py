"""Vault mode's host on anvil (:mod:`a402.vault.mode`, :mod:`a402.vault.mode_app`): deposits
read from the chain, paid requests with no transaction, settlement by the scheduler in the
worker's round, statements handed out and served over HTTP, a restart from the sealed
ledger, and the escape hatch with the vault stopped."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import ProviderChannel
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.vault.mode import (
    JOURNAL_PREFIX,
    LEDGER_KEY,
    VaultModeConfig,
    VaultModeError,
    VaultModeService,
)
from a402.vault.mode_app import create_mode_app
from a402.vault.settlement_schedule import SchedulePolicy
from a402.vault.store import VaultStore
from a402.vault_accounts import SignedStatement
from a402.vault_contract import A402Vault, AccountStatus
from a402.wire import vault_api as api

from .accounts_setup import PRICE, VaultMode, enclave_address, launch
from .helpers import SETTLE_WINDOW, balance, funded, increase_time

pytestmark = pytest.mark.anvil


class Harness:
    """A deployed A402Vault, its enclave, and the vault-mode service over a SQLite store."""

    def __init__(self, chain: Chain, usdc: Any, tmp: Path,
                 schedule: SchedulePolicy | None = None, *, confirmations: int | None = 0
                 ) -> None:
        self.chain, self.usdc, self.tmp = chain, usdc, tmp
        self.confirmations = confirmations  # 0: records at the head (nothing reorganises)
        self.schedule = schedule or SchedulePolicy(window=0, jitter=0, min_participants=2,
                                                   max_per_tx=10)
        self.platform, self.enclave = launch()
        self.contract = A402Vault.deploy(chain, chain.accounts[0], usdc.address,
                                         enclave_address(self.enclave), SETTLE_WINDOW)
        self.operator = funded(chain, usdc)
        self.url = f"sqlite:///{tmp / 'vault-mode.db'}"
        self.service = self.start()
        # the provider side of the exchange, driven by its machine (accounts_setup)
        self.vm = VaultMode(self.platform, self.enclave, self.service.accounts,
                            self.contract.domain)

    def start(self) -> VaultModeService:
        return VaultModeService(VaultModeConfig(
            chain=self.chain, account=self.operator, contract=self.contract.address,
            contract_salt=self.contract.salt, store=VaultStore(self.url), enclave=self.enclave,
            schedule=self.schedule, confirmations=self.confirmations,
            rng=random.Random(7), poll_interval=0.2))

    def deposit(self, participant: str, amount: int) -> None:
        depositor = funded(self.chain, self.usdc, amount)
        transact(self.chain, depositor, self.usdc.functions.approve(self.contract.address,
                                                                    amount))
        self.contract.deposit(depositor, participant, amount)

    def open(self, client: LocalAccount, provider: Any, capacity: int
             ) -> tuple[bytes, ProviderChannel, tuple[SignedStatement, ...]]:
        cid, statements = self.service.open_channel(client.address, provider.address,
                                                    provider.schnorr.public_key, capacity)
        self.service.bind_tunnel(provider.tunnel, cid)
        self.vm.payees[client.address.lower()] = provider.address
        terms = self.service.accounts.terms(cid)
        return cid, ProviderChannel(terms, self.contract.domain, provider.signer,
                                    provider.schnorr, ack_timeout=30.0, lock_timeout=10.0
                                    ), statements

    def pay(self, cid: bytes, provider: ProviderChannel, client: LocalAccount, key: str
            ) -> list[SignedStatement]:
        """One paid request through the service (EXEC, REPLY, AUTH, REVEAL, ACK)."""
        call = self.vm.call(client, key=key)
        exec_ = self.service.request(cid, call, PRICE)
        provider.receive(exec_, now=_now())
        authorized = self.service.receive(cid, provider.reply(exec_.request_id, b"result"))
        reveal = provider.receive(authorized.step.send[0], now=_now()).send[0]
        acked = self.service.receive(cid, reveal)
        provider.receive(acked.step.send[0], now=_now())
        return [*authorized.statements, *acked.statements]

    def paid_to(self, who: str) -> int:
        return balance(self.usdc, who) + self.contract.owed(who)


def conserved(h: Harness) -> None:
    """Every landed unit is in an account: on-chain funds = Σ free + locked + pending +
    unconfirmed, once the enclave's settlements have all landed."""
    t = h.service.accounts.totals()
    assert h.contract.last_epoch() == h.service.accounts.epoch
    assert balance(h.usdc, h.contract.address) == (
        t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


def _now() -> float:
    import time
    return time.time()


def verifies(h: Harness, signed: SignedStatement) -> bool:
    """The statement's signature recovers to the contract's vault signer, over the digest
    the contract computes itself."""
    digest = h.contract.statement_digest(signed.statement)
    signer = Account._recover_hash(digest, signature=signed.signature)
    return str(signer).lower() == h.contract.vault_signer.lower()


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def test_a_client_pays_a_provider_five_times_with_no_transaction_and_settlement_pays_the_provider(
    h: Harness, vault_chain: Chain
) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()  # reads the deposit, confirms it in a settlement, lands it
    assert h.service.balance(client.address)["free"] == "10000"
    assert h.contract.last_epoch() == 1

    cid, provider_channel, opened = h.open(client, provider, 5 * PRICE)
    assert [s.statement.balance for s in opened] == [5_000]
    assert [s.statement.locked for s in opened] == [5_000]
    block = vault_chain.w3.eth.block_number
    handed: list[SignedStatement] = list(opened)
    for i in range(5):
        handed += h.pay(cid, provider_channel, client, f"call-{i}")
    _, closed = h.service.close(cid)
    handed += closed
    # zero chain transactions for the open, five paid calls and the close
    assert vault_chain.w3.eth.block_number == block
    conserved(h)
    assert all(verifies(h, s) for s in handed)
    nonces = [s.statement.nonce for s in handed if s.statement.participant == client.address]
    assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
    assert h.service.balance(client.address)["free"] == "5000"
    # the provider's earnings are pending until their claim window passes
    assert h.service.balance(provider.address)["free"] == "0"
    with pytest.raises(VaultModeError) as refused:
        h.service.withdraw(provider.address, 5_000)
    assert refused.value.reason == "insufficient_balance"

    increase_time(vault_chain, 3_601)
    h.service.tick()  # resolves the five payments to the provider in settlement 2
    assert h.contract.last_epoch() == 2
    assert h.service.balance(provider.address)["free"] == "5000"
    conserved(h)
    latest = h.service.statement(provider.address)
    assert latest.statement.balance == 5_000 and verifies(h, latest)

    h.service.withdraw(provider.address, 5_000)
    h.service.withdraw(client.address, 2_000)
    landed = h.service.tick()  # the scheduler's batch of two
    assert [x.payees for x in landed] == [2]
    assert h.paid_to(provider.address) == 5_000
    assert h.paid_to(client.address) == 2_000
    assert balance(h.usdc, h.contract.address) == 3_000
    conserved(h)
    assert h.service.balance(client.address)["free"] == "3000"
    totals = h.service.accounts.totals()
    assert totals["free"] + totals["locked"] + totals["pending"] == 3_000
    status = h.service.status()
    assert status["lastSettlement"]["epoch"] == 3 and status["pendingPayouts"] == []

    # A restart from the store: the same balances, the same statements (sealed at rest).
    stored = h.service.store.get_meta("vault-mode/ledger")
    assert stored is not None and client.address[2:].lower().encode() not in stored.lower()
    again = h.start()
    assert again.balance(client.address)["free"] == "3000"
    assert again.statement(client.address) == h.service.statement(client.address)


def test_the_http_api_serves_a_signed_statement_to_its_participant_only(h: Harness) -> None:
    client = Account.create()
    h.deposit(client.address, 4_000)
    h.service.tick()
    app = create_mode_app(h.service, worker=False)
    vault = api.vault_account(h.chain.network, h.service.address)
    life = h.service.accounts.life_id

    async def run() -> list[httpx.Response]:
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://vault") as http:
            for path, who in (("/v1/vault/statement", client),
                              ("/v1/vault/balance", client),
                              ("/v1/vault/status", client),
                              ("/v1/vault/status", h.operator)):
                headers = api.sign_request(who, vault, "GET", path, b"", life=life)
                out.append(await http.get(path, headers=headers))
            out.append(await http.get("/v1/vault/statement"))  # unsigned
            body = b'{"amount": "9000"}'
            headers = api.sign_request(client, vault, "POST", "/v1/vault/withdraw", body,
                                       life=life)
            out.append(await http.post("/v1/vault/withdraw", content=body, headers=headers))
        return out

    statement, bal, not_operator, status, unsigned, too_much = asyncio.run(run())
    assert statement.status_code == 200
    got = statement.json()
    assert got == {**got, "participant": client.address, "balance": "4000", "locked": "0"}
    assert got["signature"] == "0x" + h.service.statement(client.address).signature.hex()
    assert verifies(h, h.service.statement(client.address))
    assert bal.json()["free"] == "4000"
    assert not_operator.status_code == 403 and not_operator.json()["error"] == "not_operator"
    assert status.status_code == 200 and status.json()["totals"]["free"] == "4000"
    assert unsigned.status_code == 401
    assert too_much.status_code == 402 and too_much.json()["error"] == "insufficient_balance"


def test_with_the_vault_stopped_client_and_provider_force_settle_and_get_exactly_their_money(
    h: Harness, vault_chain: Chain, usdc: Any
) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    cid, provider_channel, _ = h.open(client, provider, 4 * PRICE)
    for i in range(3):
        h.pay(cid, provider_channel, client, f"k{i}")
    h.service.close(cid)
    increase_time(vault_chain, 3_601)
    h.service.tick()  # the payments resolve to the provider's account (settlement 2)
    client_st = h.service.statement(client.address)
    provider_st = h.service.statement(provider.address)
    assert (client_st.statement.balance, provider_st.statement.balance) == (7_000, 3_000)
    del h.service  # the vault stops answering: the participants hold their statements
    gas = funded(vault_chain, usdc)
    for who, signed in ((client, client_st), (provider.signer, provider_st)):
        order = h.contract.exit_order(who, signed.statement)  # the participant's own order
        h.contract.init_force_settle(gas, signed.statement, signed.signature, order)
    increase_time(vault_chain, SETTLE_WINDOW)
    for who in (client.address, provider.address):
        h.contract.final_force_settle(gas, who)
        assert h.contract.status(who) is AccountStatus.SETTLED
    assert h.paid_to(client.address) == 7_000
    assert h.paid_to(provider.address) == 3_000
    assert balance(usdc, h.contract.address) == 0


def test_the_worker_answers_a_stale_force_settle_and_each_side_gets_exactly_its_money(
    h: Harness, vault_chain: Chain, usdc: Any
) -> None:
    client = funded(vault_chain, usdc)
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    stale = h.service.statement(client.address)  # 10 000 free, before it spent
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    for i in range(2):
        h.pay(cid, side, client, f"s{i}")
    h.service.close(cid)
    assert h.service.balance(client.address)["free"] == "8000"
    # The client tries to leave with the statement from before it paid.
    h.contract.init_force_settle(client, stale.statement, stale.signature)
    h.service.tick()  # the watchtower, in the worker's round, answers with the latest
    (answer,) = h.service.answers
    assert answer.answered_nonce == h.service.statement(client.address).statement.nonce
    assert h.contract.force_settle(client.address).balance == 8_000
    with pytest.raises(VaultModeError) as refused:  # nothing moves an exiting account
        h.service.open_channel(client.address, provider.address,
                               provider.schnorr.public_key, 1_000)
    assert refused.value.reason == "participant_exiting"
    increase_time(vault_chain, max(SETTLE_WINDOW, 3_601))
    h.contract.final_force_settle(client, client.address)
    assert h.paid_to(client.address) == 8_000
    h.service.tick()  # the provider's two payments resolve to its account
    h.service.withdraw(provider.address, 2_000)
    (landed,) = h.service.settle_now()  # the operator's override: a batch of one
    assert landed.payees == 1
    assert h.paid_to(provider.address) == 2_000
    assert balance(usdc, h.contract.address) == 0


def test_a_change_whose_ledger_cannot_be_stored_is_not_acknowledged_and_a_restart_forgets_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 3_000)
    h.service.tick()

    def disk_full(*_: Any, **__: Any) -> bytes:
        raise OSError("disk full")
    monkeypatch.setattr(h.service.store, "put_meta", disk_full)
    monkeypatch.setattr(h.service.store, "put_metas", disk_full)
    with pytest.raises(OSError):  # no channel id, no statement handed out
        h.service.open_channel(client.address, provider.address,
                               provider.schnorr.public_key, 1_000)
    with pytest.raises(VaultModeError) as broken:
        h.service.open_channel(client.address, provider.address,
                               provider.schnorr.public_key, 1_000)
    assert broken.value.status == 503 and broken.value.reason == "vault_broken"
    monkeypatch.undo()
    again = h.start()  # from what was stored: the open never happened
    assert again.balance(client.address)["free"] == "3000"
    assert again.balance(client.address)["locked"] == "0"


def _claim_unacked(h: Harness, vault_chain: Chain, usdc: Any, client: Any, cid: Any,
                   side: Any) -> None:
    """One more call of PRICE whose result the provider reveals and the vault never ACKs, then
    the provider's claim of it on-chain once its force-close is due."""
    from a402.asc import ForceCloseDue
    from a402.crypto.vault_messages import VaultChannelTerms
    from a402.vault_contract import PendingClaim

    call = h.vm.call(client, key="never-acked")
    t0 = _now()
    exec_ = h.service.request(cid, call, PRICE, t0)
    side.receive(exec_, now=t0)
    authorized = h.service.receive(cid, side.reply(exec_.request_id, b"result"), t0)
    side.receive(authorized.step.send[0], now=t0)  # the provider reveals; no ACK comes back
    pending = authorized.pending
    assert pending is not None
    (due,) = side.poll(now=t0 + 31).events
    assert isinstance(due, ForceCloseDue)
    c = due.claim
    t = h.service.accounts.terms(cid)
    h.contract.claim_payment(
        funded(vault_chain, usdc),
        VaultChannelTerms("0x" + t.client.hex(), "0x" + t.provider.hex(), t.provider_key,
                          t.deposit, t.salt),
        PendingClaim(c.request_id, c.amount, c.result_hash, c.e, c.s, pending.client_nonce,
                     pending.epoch, pending.deadline, c.authorization, pending.signature))


def test_a_provider_claims_while_the_vault_withholds_its_ack_and_the_worker_pays_nobody_twice(
    h: Harness, vault_chain: Chain, usdc: Any
) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 20_000)
    h.service.tick()
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    h.pay(cid, side, client, "paid-and-acked")
    _claim_unacked(h, vault_chain, usdc, client, cid, side)
    assert balance(usdc, provider.address) == PRICE  # paid on-chain for the claimed request
    h.service.tick()  # the worker reports the claim: the channel ends, the rest goes back
    assert h.service.balance(client.address) == {
        **h.service.balance(client.address), "free": str(20_000 - 2 * PRICE), "locked": "0"}
    increase_time(vault_chain, 3_601)
    h.service.tick()  # the acked payment resolves to the provider's account, only that one
    assert h.service.balance(provider.address)["free"] == str(PRICE)
    h.service.withdraw(provider.address, PRICE)
    h.service.withdraw(client.address, 20_000 - 2 * PRICE)
    h.service.tick()
    assert h.paid_to(provider.address) == 2 * PRICE
    assert h.paid_to(client.address) == 20_000 - 2 * PRICE
    assert balance(usdc, h.contract.address) == 0


def test_a_claim_seen_by_the_worker_and_a_settle_now_at_once_is_reported_once_and_refuses_nothing(
    h: Harness, vault_chain: Chain, usdc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (found by the conservation test under a stalled host: the worker's tick and the
    # operator's settle-now both read the claim count, then both reported the same
    # PaymentClaimed; the second was refused "deposit_out_of_order", so settle-now answered
    # 400 and the round's settlement was not made)
    import threading

    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 20_000)
    h.service.tick()
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    _claim_unacked(h, vault_chain, usdc, client, cid, side)
    # Two readers of the chain at once (the worker's tick, the operator's settle-now): each
    # waits for the other after it starts reading (a descheduled thread), unless the other
    # cannot start before it is done.
    both = threading.Barrier(2)
    reported_head = h.service._reported_head

    def meet_then_read_head() -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait(timeout=5)
        return reported_head()

    monkeypatch.setattr(h.service, "_reported_head", meet_then_read_head)
    new: list[int] = []
    errors: list[BaseException] = []

    def observe() -> None:
        try:
            new.append(h.service.observe_deposits())
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=observe) for _ in range(2)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(120)
    assert not errors, errors
    assert sorted(new) == [0, 1]  # the claim, reported once
    monkeypatch.undo()
    # the channel ended once: what the client did not spend is free again
    assert h.service.balance(client.address)["free"] == str(20_000 - PRICE)
    assert h.service.balance(client.address)["locked"] == "0"
    h.service.withdraw(client.address, 20_000 - PRICE)
    h.service.settle_now()
    assert h.paid_to(client.address) == 20_000 - PRICE
    assert balance(usdc, provider.address) == PRICE  # paid on-chain, once


def test_a_replayed_signed_call_to_the_vault_mode_api_is_refused(h: Harness) -> None:
    client = Account.create()
    h.deposit(client.address, 1_000)
    h.service.tick()
    app = create_mode_app(h.service, worker=False)
    vault = api.vault_account(h.chain.network, h.service.address)
    body = b'{"amount": "400"}'
    headers = api.sign_request(client, vault, "POST", "/v1/vault/withdraw", body,
                               life=h.service.accounts.life_id)

    async def twice() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://vault") as http:
            return [await http.post("/v1/vault/withdraw", content=body, headers=headers)
                    for _ in range(2)]

    first, again = asyncio.run(twice())
    assert first.status_code == 202 and first.json()["queued"] == "400"
    assert again.status_code == 401 and again.json()["error"] == api.REPLAYED_REQUEST
    assert h.service.balance(client.address)["payoutRequested"] == "400"  # queued once


def test_a_paid_calls_nonce_is_known_in_memory_to_this_and_the_next_process(
    h: Harness,
) -> None:
    """A paid call's nonce is checked in the service's memory, with no read of the store:
    held while its call runs, known (and recorded in the store) once it answers, known to a
    service started later on the same store (loaded once, when it starts serving), and
    forgotten only once it was seen longer ago than nonces are kept, as the store forgets
    it: a request carrying it is past the auth window by then, refused as stale before its
    nonce is looked at."""
    client = Account.create().address
    keep = 2 * h.service.config.auth_window
    now = time.time()
    hold = h.service.hold_nonce(client, "n1", now)
    assert hold is not None
    assert h.service.hold_nonce(client, "n1", now) is None  # its call is in flight
    asyncio.run(h.service.release_nonce(hold, keep))  # its call answers: recorded
    assert h.service.hold_nonce(client, "n1", now + 1) is None
    assert h.service.store.nonce_seen(client, "n1")
    again = h.start()  # the next process, on the same store
    assert again.hold_nonce(client, "n1", now + 2) is None
    assert again.hold_nonce(client.lower(), "n1", now + 2) is None  # any spelling
    later = again.hold_nonce(client, "n2", now + keep + 1)
    assert later is not None
    asyncio.run(again.release_nonce(later, keep))  # answered long after n1 was seen
    assert again.hold_nonce(client, "n1", now + keep + 2) is not None  # forgotten


def test_a_channel_cannot_lock_money_its_client_asked_to_withdraw_and_every_queued_payout_is_paid(
    h: Harness
) -> None:
    # (found by the randomized conservation test: a channel opened after a withdrawal was
    # acknowledged took its money, and the queued payout was dropped unpaid)
    alice, bob = Account.create(), Account.create()
    provider = h.vm.provider()
    for who in (alice, bob):
        h.deposit(who.address, 5_000)
    h.service.tick()
    h.service.withdraw(alice.address, 4_000)
    h.service.withdraw(bob.address, 1_000)
    assert h.service.spare(alice.address) == 1_000
    with pytest.raises(VaultModeError) as refused:  # nothing locked
        h.open(alice, provider, 3_000)
    assert (refused.value.status, refused.value.reason) == (402, "insufficient_balance")
    assert h.service.balance(alice.address)["locked"] == "0"
    h.open(alice, provider, 1_000)  # what the payout leaves
    landed = h.service.tick()
    assert [x.payees for x in landed] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (4_000, 1_000)
    assert h.service.status()["droppedPayouts"] == []
    assert h.service.balance(alice.address) | {"owedOnChain": "0"} == {
        "participant": alice.address, "free": "0", "locked": "1000", "unconfirmed": "0",
        "pulling": "0", "pull": 0, "payoutRequested": "0", "debt": "0", "payoutsDropped": [],
        "owedOnChain": "0"}
    t = h.service.accounts.totals()
    assert balance(h.usdc, h.contract.address) == (
        t["free"] + t["locked"] + t["pending"] + t["unconfirmed"]) == 1_000 + 4_000


def test_a_queued_payout_survives_a_restart_sealed_and_is_paid_once(h: Harness) -> None:
    alice, bob = Account.create(), Account.create()
    for who in (alice, bob):
        h.deposit(who.address, 2_000)
    h.service.tick()
    h.service.withdraw(alice.address, 700)  # acknowledged: stored before the answer
    stored = h.service.store.get_meta("vault-mode/payouts")
    assert stored is not None and alice.address[2:].lower().encode() not in stored.lower()
    again = h.start()  # the first process is gone
    assert again.balance(alice.address)["payoutRequested"] == "700"
    again.withdraw(bob.address, 300)
    assert [x.payees for x in again.tick()] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    assert again.tick() == [] and h.start().balance(alice.address)["payoutRequested"] == "0"


def test_changes_made_at_once_share_ledger_writes_and_every_acknowledged_one_is_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    clients = [Account.create() for _ in range(8)]
    provider = h.vm.provider()
    for c in clients:
        h.deposit(c.address, 2_000)
    h.service.tick()
    writes: list[int] = []
    real = h.service.store.put_metas

    def slow_write(values: dict[str, bytes], **kw: Any) -> Any:
        if any(k == LEDGER_KEY or k.startswith(JOURNAL_PREFIX) for k in values):
            writes.append(h.service.accounts.ledger_version)
            time.sleep(0.2)  # a slow disk: the changes made meanwhile wait for one write
        return real(values, **kw)
    monkeypatch.setattr(h.service.store, "put_metas", slow_write)
    acknowledged: list[str] = []
    go = threading.Barrier(len(clients))

    def close_one(c: Any, cid: bytes) -> None:
        go.wait(10)
        h.service.close(cid)  # returns once a ledger with this close is stored
        acknowledged.append(c.address)

    cids = [h.service.open_channel(c.address, provider.address, provider.schnorr.public_key,
                                   1_500)[0] for c in clients]
    before = len(writes)
    threads = [threading.Thread(target=close_one, args=(c, cid))
               for c, cid in zip(clients, cids, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(acknowledged) == len(clients)
    assert len(writes) - before < len(clients)  # grouped: fewer writes than changes
    monkeypatch.undo()
    again = h.start()  # only what was stored: every acknowledged close is in it
    for c in clients:
        assert again.balance(c.address)["free"] == "2000"
        assert again.balance(c.address)["locked"] == "0"


def test_a_vault_mode_service_refuses_a_simulated_enclave_on_a_public_chain(tmp_path: Path
                                                                           ) -> None:
    """As the standard vault and the provider runtime do (review s14-rev12): a simulated
    enclave proves nothing, so vault mode does not run one on Base's chain id, whatever
    builds the service (not only the command line)."""
    from a402.chain.node import start_anvil
    from a402.tee import AttestationError

    _, enclave = launch()
    with (start_anvil(chain_id=8453, accounts=2) as base,
          pytest.raises(AttestationError) as refused):
        VaultModeService(VaultModeConfig(
            chain=base, account=base.accounts[0],
            contract="0x" + "11" * 20, store=VaultStore(f"sqlite:///{tmp_path / 'v.db'}"),
            enclave=enclave))
    assert refused.value.reason == "simulated_on_public_chain"


def test_coroutines_and_threads_waiting_at_once_share_ledger_writes_and_each_is_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``achange`` (a paid call's steps) awaits the store on the event loop: the lead
    submits its write and the store's writer reports its end. Coroutines and a thread
    changing the enclave at once, on a slow disk, share writes (fewer than changes), each
    returns only once its change is stored, and a restart has every one of them."""
    import asyncio
    import threading
    from concurrent.futures import Future

    clients = [Account.create() for _ in range(7)]
    provider = h.vm.provider()
    for c in clients:
        h.deposit(c.address, 2_000)
    h.service.tick()
    cids = [h.service.open_channel(c.address, provider.address, provider.schnorr.public_key,
                                   1_500)[0] for c in clients]
    writes: list[int] = []
    real = h.service.store.submit_metas

    def slow_write(values: dict[str, bytes], **kw: Any) -> Future[list[int]] | None:
        writes.append(h.service.accounts.ledger_version)
        done, late = real(values, **kw), Future[list[int]]()
        assert done is not None

        def later() -> None:  # a slow disk: the changes made meanwhile wait for one write
            try:
                late.set_result(done.result())
            except BaseException as e:
                late.set_exception(e)
        threading.Timer(0.2, later).start()
        return late
    monkeypatch.setattr(h.service.store, "submit_metas", slow_write)
    stored: list[bytes] = []

    async def close(cid: bytes) -> None:
        await h.service.achange(lambda: h.service.accounts.close_channel(cid))
        stored.append(cid)

    async def all_of_them() -> None:
        thread = asyncio.create_task(asyncio.to_thread(h.service.close, cids[0]))
        await asyncio.gather(*(close(cid) for cid in cids[1:]))
        await thread
        stored.append(cids[0])
    asyncio.run(all_of_them())
    assert sorted(stored) == sorted(cids)
    assert 0 < len(writes) < len(cids) - 1  # grouped: fewer writes than changes
    monkeypatch.undo()
    again = h.start()  # only what was stored: every acknowledged close is in it
    for c in clients:
        assert again.balance(c.address)["free"] == "2000"
        assert again.balance(c.address)["locked"] == "0"


def test_pulls_wait_for_the_scheduler_window_then_ride_one_settlement_and_so_do_their_checks(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """Three participants ask for pulls over the window: nothing is signed until the first
    has waited the whole window; then one settlement makes all three. Their checks (what
    credits them) wait a window again and ride one settlement too."""
    h = Harness(vault_chain, usdc, tmp_path,
                SchedulePolicy(window=60, jitter=0, min_participants=1, max_per_tx=10))
    people = [funded(vault_chain, usdc, 1_000, eth=0) for _ in range(3)]
    t0 = time.time()
    pulls = []
    for i, who in enumerate(people):
        asked = h.service.prepare_pull(who.address, 1_000)
        pull = int(asked["pull"])
        h.service.authorize_pull(who.address, pull, h.contract.sign_pull(
            who, who.address, 1_000, pull, int(asked["deadline"]), h.service.accounts.ledger))
        pulls.append(pull)
        assert h.service.tick(now=t0 + 20 * i) == []  # inside the window: nothing signed
    assert h.contract.last_epoch() == 0 and balance(usdc, h.contract.address) == 0
    assert len(h.service.tick(now=t0 + 60)) == 1
    assert all(h.contract.pulled(p) for p in pulls)
    assert balance(usdc, h.contract.address) == 3_000
    assert h.service.tick(now=t0 + 61) == []  # the checks wait a window of their own
    assert {h.service.balance(w.address)["free"] for w in people} == {"0"}
    assert len(h.service.tick(now=t0 + 121)) == 1
    assert {h.service.balance(w.address)["free"] for w in people} == {"1000"}
    assert h.contract.last_epoch() == 2
