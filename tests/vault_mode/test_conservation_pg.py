"""Vault mode, everything at once, on anvil and PostgreSQL: clients and providers making random
deposits, paid calls, withdrawals and settlements against two real ``a402 vault --mode vault``
replicas, while the active replica is killed (-9) at random moments and the standby takes the
lease; then everything is settled and the money is counted on the chain.

What holds at the end, exactly (no tolerance):

* the tokens of every participant plus the contract's are what was minted to them (nothing
  leaves the system, nothing appears);
* after every round and at the end, the contract holds exactly what the enclave's ledger owes
  (free + locked + pending + unconfirmed, every payout landed);
* each participant: wallet now + vault account now = wallet at start − spent + earned, where
  what a client spent and a provider earned are whole numbers of paid calls, at least the calls
  the client saw answered as paid and at most those plus the calls whose answer it lost; the
  calls spent by all clients are the calls earned by all providers (none paid twice, none lost);
* every withdrawal the vault accepted was paid exactly once (a retry of its key, after the kill
  took its answer, queued nothing more), and no other money left the contract than those
  withdrawals and the providers' own on-chain claims.

The run is seeded; the seed is printed and ``A402_VAULT_CONSERVATION_SEED`` replays it.
``A402_VAULT_CONSERVATION_ROUNDS`` makes the run longer (default 5 rounds; each round every
participant makes a few random operations concurrently, and about half the rounds kill the
active replica).

Needs anvil and ``A402_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.client.vault import ExpectedVault, VaultCallError, VaultClient
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_store import SqlChannelStore
from a402.provider.middleware import PaymentMiddleware
from a402.provider.settings import ChannelTimeouts, Watching
from a402.tee import PROVIDER_PURPOSES, AttestationPolicy, SimulatedVerifier
from a402.tee.identity import load_platform
from a402.vault_accounts import CLAIM_WINDOW
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import (
    PRICES,
    PROVIDER_CODE,
    PROVIDER_LOCK,
    UNUSED_FACILITATOR,
    Calls,
    service_app,
)

from ..vault.helpers import fresh_schema
from .helpers import balance, funded, increase_time
from .replicas import FailoverCaller, Replica, two_replicas

pytestmark = pytest.mark.anvil

PRICE = PRICES["GET /weather"]
CLIENTS = 4
PROVIDERS = 2
WALLET = 1_000_000  # tokens minted to each participant at the start
ROUNDS = int(os.environ.get("A402_VAULT_CONSERVATION_ROUNDS", "5"))
OPS_PER_ROUND = 4  # per participant
ACK_TIMEOUT = 2.0  # a provider denied its ACK claims on-chain this soon
OPERATOR_TOKEN = "conservation-operator-token"


@pytest.fixture
def db(postgres_url: str) -> str:
    return fresh_schema(postgres_url)


@dataclass
class Participant:
    """One participant's key and what the test did with its money, as the test saw it."""

    key: LocalAccount
    provider: bool
    deposited: int = 0
    withdrawn: int = 0  # accepted withdrawals (each key once)
    paid: int = 0  # clients: calls answered as paid
    unsure: dict[str, str] = field(default_factory=dict)  # clients: lost answers' key: payee
    withdraw_keys: dict[str, int] = field(default_factory=dict)
    caller: FailoverCaller | None = None
    client: VaultClient | None = None

    @property
    def address(self) -> str:
        return str(self.key.address)


@contextlib.contextmanager
def provider_gateway(chain: Chain, usdc: Any, platform_file: Path, measurement: bytes,
                     contract: str, tmp: Path) -> Iterator[tuple[LocalAccount, str]]:
    """A provider's gateway admitting the A402Vault's channels (its enclave on the replicas'
    simulated platform, trusting the replicas' vault code), served on loopback."""
    platform = load_platform(platform_file)
    verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    operator = funded(chain, usdc, WALLET)
    manager = ASCManager.deploy(chain, chain.accounts[0], usdc.address, 600)
    config = A402Config(
        enclave=platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES),
        operator=operator, chain=chain, manager=manager.address,
        vault_policy=AttestationPolicy(frozenset({measurement})), verifiers=[verifier],
        store=SqlChannelStore(f"sqlite:///{tmp / f'provider-{operator.address}.db'}"),
        timeouts=ChannelTimeouts(ack_timeout=ACK_TIMEOUT, lock_timeout=PROVIDER_LOCK),
        watching=Watching(poll_interval=0.1), vault_contract=contract)
    payments = PaymentMiddleware(
        service_app(Calls()), routes=dict(PRICES), pay_to=operator.address,
        token=TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6), network=chain.network,
        facilitator=UNUSED_FACILITATOR)
    with serve_in_thread(A402Payments(payments, config)) as site:
        yield operator, site


def active_of(replicas: list[Replica]) -> Replica | None:
    for r in replicas:
        if r.proc is not None and r.proc.poll() is None and r.health().get("role") == "active":
            return r
    return None


def test_random_deposits_calls_withdrawals_settlements_kills_and_fail_overs_conserve_every_unit(
    vault_chain: Chain, usdc: Any, db: str, tmp_path: Path,
) -> None:
    seed = int(os.environ.get("A402_VAULT_CONSERVATION_SEED", str(random.randrange(2**32))))
    print(f"\nvault-mode conservation: seed {seed} (A402_VAULT_CONSERVATION_SEED={seed} "
          f"replays it), {ROUNDS} rounds")
    rng = random.Random(seed)
    chain = vault_chain
    extra = ["--provider-measurement", PROVIDER_CODE.hex(), "--allow-private-targets",
             "--operator-token", OPERATOR_TOKEN]
    with two_replicas(chain, usdc, db, tmp_path, extra=extra) as (gas, vault, replicas), \
            contextlib.ExitStack() as stack:
        measurement = replicas[0].measurement
        gateways = [stack.enter_context(provider_gateway(
            chain, usdc, tmp_path / "platform.json", measurement, vault.address, tmp_path))
            for _ in range(PROVIDERS)]
        urls = [r.url for r in replicas]
        info = FailoverCaller(urls, gas).call("GET", "/v1/info").body
        expect = ExpectedVault(info["vault"], vault.address, usdc.address)
        people = [Participant(funded(chain, usdc, WALLET), provider=False)
                  for _ in range(CLIENTS)]
        people += [Participant(op, provider=True) for op, _ in gateways]
        sites = {op.address: site for op, site in gateways}
        for p in people:
            p.caller = FailoverCaller(urls, p.key)
            transact(chain, p.key, usdc.functions.approve(vault.address, WALLET))
            if not p.provider:
                p.client = VaultClient(urls, p.key, expect=expect, failover_wait=60)
        start_wallets = {p.address: balance(usdc, p.address) for p in people}
        assert all(v == WALLET for v in start_wallets.values())
        operator = FailoverCaller(urls, gas)
        keys = iter(range(10**9))
        errors: list[BaseException] = []
        counts = {"deposits": 0, "calls": 0, "withdrawals": 0, "refused": 0, "kills": 0,
                  "settle-now": 0}
        lock = threading.Lock()
        refusals: list[str] = []

        def count(what: str) -> None:
            with lock:
                counts[what] += 1

        def deposit(p: Participant, r: random.Random) -> None:
            amount = r.randrange(5, 60) * PRICE
            vault.deposit(p.key, p.address, amount)
            p.deposited += amount
            count("deposits")

        def pay(p: Participant, r: random.Random) -> None:
            assert p.client is not None
            payee = r.choice(gateways)[0].address
            key = f"call-{p.address[2:10]}-{next(keys)}"
            try:
                got = p.client.invoke(f"{sites[payee]}/weather", max_price=PRICE,
                                      pay_to=payee, idempotency_key=key)
            except VaultCallError as e:
                if e.reason in (api.PAYMENT_PENDING, api.REPLAYED_CALL):
                    p.unsure[key] = payee  # paid, or maybe: asked again at the end
                else:  # nothing paid (no confirmed free balance yet, ...)
                    count("refused")
                    refusals.append(f"{e.status} {e.reason}")
                return
            assert got.outcome == api.PAID, got
            p.paid += 1
            count("calls")

        def withdraw(p: Participant, r: random.Random) -> None:
            assert p.caller is not None
            now = p.caller.call("GET", "/v1/vault/balance")
            assert now.status == 200, now.body
            free = int(now.body["free"])
            if free == 0:
                return
            amount = r.randrange(1, free + 1)
            key = f"w{next(keys)}"
            got = p.caller.call("POST", "/v1/vault/withdraw",
                                {"amount": str(amount), "idempotencyKey": key})
            if got.status == 202:
                p.withdraw_keys[key] = amount
                p.withdrawn += amount
                count("withdrawals")
            else:  # refused (its balance moved since it read it): nothing queued
                assert got.status == 402, got.body  # insufficient_balance
                count("refused")

        def settle_now() -> None:
            got = operator.call("POST", "/v1/vault/settle-now")
            assert got.status == 200, got.body
            count("settle-now")

        def participant_round(p: Participant, r: random.Random) -> None:
            try:
                for _ in range(OPS_PER_ROUND):
                    choices = ["deposit", "withdraw"] + ([] if p.provider else ["pay"] * 4)
                    op = r.choice(choices)
                    if op == "deposit":
                        deposit(p, r)
                    elif op == "pay":
                        pay(p, r)
                    else:
                        withdraw(p, r)
            except BaseException as e:  # reported after the round
                errors.append(e)

        def status() -> dict[str, Any]:
            got = operator.call("GET", "/v1/vault/status")
            assert got.status == 200, got.body
            return got.body

        def owed(st: dict[str, Any]) -> int:
            t = {k: int(v) for k, v in st["totals"].items()}
            return t["free"] + t["locked"] + t["pending"] + t["unconfirmed"]

        def settled() -> dict[str, Any]:
            """settle-now until every queued payout has landed; the contract then holds
            exactly what the ledger owes.

            A provider's on-chain claim (its ACK withheld by a kill) may land at any moment,
            from a gateway thread: the contract pays it at once, the ledger drops it when
            the worker reads the chain next. So the count is polled until it holds (a
            ledger that really lost or made money never gets there: the deadline fails)."""
            settle_now()
            deadline = time.monotonic() + 120
            st = status()
            held = balance(usdc, vault.address)
            while st["pendingPayouts"] or st["unlanded"] or held != owed(st):
                assert not st["droppedPayouts"], (seed, st["droppedPayouts"])  # for good
                assert time.monotonic() < deadline, (seed, held, st)
                time.sleep(0.3)
                if st["pendingPayouts"] and not st["unlanded"]:
                    settle_now()
                st = status()
                held = balance(usdc, vault.address)
            # an accepted withdrawal is paid, never dropped (nobody here exits on-chain)
            assert not st["droppedPayouts"], (seed, st["droppedPayouts"])
            assert held == owed(st), (seed, st)
            return st

        # the first deposits, so that the first round has money to spend
        for p in people:
            deposit(p, rng)
        for rnd in range(ROUNDS):
            seeds = [rng.randrange(2**32) for _ in people]
            threads = [threading.Thread(target=participant_round, args=(p, random.Random(s)))
                       for p, s in zip(people, seeds, strict=True)]
            killed: list[Replica] = []
            killer: threading.Timer | None = None
            if rng.random() < 0.5:  # kill the active at a random moment of this round
                def kill(killed: list[Replica] = killed) -> None:
                    victim = active_of(replicas)
                    if victim is not None and victim.proc is not None:
                        victim.proc.send_signal(signal.SIGKILL)
                        killed.append(victim)
                        count("kills")
                killer = threading.Timer(rng.uniform(0.0, 2.0), kill)
            for t in threads:
                t.start()
            if killer is not None:
                killer.start()
            if rng.random() < 0.5:
                settle_now()
            for t in threads:
                t.join(300)
            if killer is not None:
                killer.join()
            assert not errors, (seed, errors)
            for victim in killed:
                assert victim.proc is not None
                assert victim.proc.wait(60) == -signal.SIGKILL
                other = replicas[1 - replicas.index(victim)]
                other.wait_role("active", 120)
                victim.start("standby")  # back as the standby: the next kill fails over
            settled()
            print(f"round {rnd}: {counts} {sorted(set(refusals))}")

        # Calls whose answer was lost: asked again with the same key (answered from the
        # record, never paid twice; or refused replayed_call: the count below decides).
        for p in people:
            for key, payee in sorted(p.unsure.items()):
                assert p.client is not None
                with contextlib.suppress(VaultCallError):  # still unsure: the count decides
                    got = p.client.invoke(f"{sites[payee]}/weather", max_price=PRICE,
                                          pay_to=payee, idempotency_key=key)
                    assert got.outcome == api.PAID, got
                    p.paid += 1
                    del p.unsure[key]
        # A provider denied an ACK by a kill claims on-chain after ACK_TIMEOUT; then the
        # claim window passes, the providers' earnings become free, and all is withdrawn.
        time.sleep(ACK_TIMEOUT + 3)
        settled()
        increase_time(chain, CLAIM_WINDOW + 1)
        deadline = time.monotonic() + 120
        while int(status()["totals"]["pending"]):
            assert time.monotonic() < deadline, "pending earnings never resolved"
            time.sleep(0.3)
        for p in people:
            assert p.caller is not None
            free = int(p.caller.call("GET", "/v1/vault/balance").body["free"])
            if free:
                got = p.caller.call("POST", "/v1/vault/withdraw",
                                    {"amount": str(free), "idempotencyKey": f"last-{p.address}"})
                assert got.status == 202, got.body
                p.withdraw_keys[f"last-{p.address}"] = free
                p.withdrawn += free
        st = settled()
        accounts = {a["participant"].lower(): a for a in st["accounts"]}

        # the operator API of the replica now active says the same; the standby says so
        active = active_of(replicas)
        assert active is not None
        auth = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        view = httpx.get(active.url + "/operator/vault", headers=auth).json()
        assert view["accounts"] == {"count": len(st["accounts"]), **st["totals"]}, view
        assert view["pendingSettlements"] == {"payouts": 0, "amount": "0",
                                              "signedNotLanded": 0}
        assert view["lastSettlement"]["epoch"] == vault.last_epoch() == view["landedEpoch"]
        standby = replicas[1 - replicas.index(active)]
        got = httpx.get(standby.url + "/operator/vault", headers=auth)
        assert got.status_code == 503, got.text
        assert got.json()["leaseHolder"] == view["leaseHolder"], (got.text, view)
        assert got.json()["active"] == active.url

        # 1. tokens are conserved: participants + contract = what was minted to them
        total = sum(balance(usdc, p.address) for p in people) + balance(usdc, vault.address)
        assert total == WALLET * len(people), seed
        assert int(st["totals"]["pending"]) == int(st["totals"]["unconfirmed"]) == 0

        # 2. what each participant holds now, and whole paid calls spent and earned
        claimed_on_chain = sum(int(ev["args"]["amount"]) for ev in
                               vault.contract.events.PaymentClaimed().get_logs(from_block=0))
        claimed = 0
        spent_calls = earned_calls = 0
        for p in people:
            a = accounts.get(p.address.lower(), {"free": "0", "locked": "0"})
            held = int(a["free"]) + int(a["locked"])
            wallet = balance(usdc, p.address)
            # the contract paid out exactly the accepted withdrawals (+ a provider's claims)
            extra_paid = wallet - (WALLET - p.deposited + p.withdrawn)
            if p.provider:
                assert extra_paid >= 0 and extra_paid % PRICE == 0, (seed, p.address, extra_paid)
                claimed += extra_paid
            else:
                assert extra_paid == 0, (seed, p.address, wallet, p.deposited, p.withdrawn)
            change = wallet + held - WALLET  # = earned - spent
            assert change % PRICE == 0, (seed, p.address, change)
            if p.provider:
                assert change >= 0, (seed, p.address, change)
                earned_calls += change // PRICE
            else:
                spent = -change // PRICE
                assert p.paid <= spent <= p.paid + len(p.unsure), (
                    seed, p.address, spent, p.paid, sorted(p.unsure))
                spent_calls += spent
        assert spent_calls == earned_calls, (seed, spent_calls, earned_calls)
        assert claimed == claimed_on_chain, (seed, claimed, claimed_on_chain)
        assert spent_calls >= counts["calls"] and counts["calls"] >= ROUNDS, (seed, counts)
        print(f"vault-mode conservation: seed {seed}: {counts}, {spent_calls} paid calls, "
              f"{sum(len(p.unsure) for p in people)} unsure, "
              f"{claimed // PRICE} claimed on-chain")
        for p in people:
            if p.client is not None:
                p.client.close()
