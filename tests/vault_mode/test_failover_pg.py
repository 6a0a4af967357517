"""Vault mode on PostgreSQL: two real ``a402 vault --mode vault`` replicas under the lease,
the active one killed (-9) under load, the standby restores the sealed ledger and payout
queue from PostgreSQL and carries on; the money is checked on the chain and in the ledger.

Needs anvil and ``A402_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.chain.tx import transact

from ..vault.helpers import fresh_schema
from .helpers import balance, funded
from .replicas import FailoverCaller, Outcome, two_replicas

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000
PAYOUT = 10
CALLS = 30  # withdrawals per participant


@pytest.fixture
def db(postgres_url: str) -> str:
    """A fresh schema on the test PostgreSQL (CI requires it: no skip there)."""
    return fresh_schema(postgres_url)


def test_killing_the_active_vault_mode_replica_under_load_the_standby_restores_the_ledger_and_pays_everyone_once(  # noqa: E501
    vault_chain: Chain, usdc: Any, db: str, tmp_path: Path,
) -> None:
    with two_replicas(vault_chain, usdc, db, tmp_path) as (gas, vault, replicas):
        active, standby = replicas
        people = [funded(vault_chain, usdc, DEPOSIT) for _ in range(4)]
        for p in people:
            transact(vault_chain, p, usdc.functions.approve(vault.address, DEPOSIT))
            vault.deposit(p, p.address, DEPOSIT)
        urls = [active.url, standby.url]
        callers = {p.address: FailoverCaller(urls, p) for p in people}

        def free(p: LocalAccount) -> int:
            got = callers[p.address].call("GET", "/v1/vault/balance")
            assert got.status == 200, got.body
            return int(got.body["free"])

        deadline = time.monotonic() + 60
        while any(free(p) != DEPOSIT for p in people):
            assert time.monotonic() < deadline, "deposits not confirmed in time"
            time.sleep(0.2)

        # the standby answers nothing itself: 503 vault_standby naming the active replica
        r = httpx.get(standby.url + "/v1/info")
        assert r.status_code == 503 and r.json()["active"] == active.url

        outcomes: dict[str, list[Outcome]] = {p.address: [] for p in people}
        errors: list[BaseException] = []
        half = threading.Barrier(len(people) + 1)

        def load(p: LocalAccount) -> None:
            try:
                for n in range(CALLS):
                    if n == CALLS // 3:
                        half.wait(60)
                    # one key per withdrawal: its retries after a lost answer reuse it
                    outcomes[p.address].append(callers[p.address].call(
                        "POST", "/v1/vault/withdraw",
                        {"amount": str(PAYOUT), "idempotencyKey": f"w{n}"}))
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=load, args=(p,)) for p in people]
        for t in threads:
            t.start()
        half.wait(60)  # every participant a third of the way through: kill the active now
        time.sleep(0.05)
        assert active.proc is not None
        active.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        standby.wait_role("active", 30)
        took_over = time.monotonic() - killed_at
        active.proc.wait(10)
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert active.proc.returncode == -signal.SIGKILL
        assert took_over < 25  # a few lease TTLs (3 s), not a hang; generous for a loaded host

        # every call answered once, by one replica or the other; none refused
        for p in people:
            got = outcomes[p.address]
            assert len(got) == CALLS
            assert all(o.status == 202 for o in got), [o.body for o in got if o.status != 202]
        assert any(o.standby or o.lost for got in outcomes.values() for o in got)

        # the new active settles everything queued (the restored queue too) and lands it
        operator = FailoverCaller([standby.url, active.url], gas)
        settled = operator.call("POST", "/v1/vault/settle-now")
        assert settled.status == 200, settled.body

        def status() -> dict[str, Any]:
            got = operator.call("GET", "/v1/vault/status")
            assert got.status == 200, got.body
            return got.body

        deadline = time.monotonic() + 60
        st = status()
        while st["pendingPayouts"] or st["unlanded"]:
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
            st = status()

        # balances conserved: the chain holds exactly what the ledger owes
        totals = {k: int(v) for k, v in st["totals"].items()}
        on_chain = balance(usdc, vault.address)
        assert on_chain == (totals["free"] + totals["locked"] + totals["pending"]
                            + totals["unconfirmed"])
        accounts = {a["participant"].lower(): a for a in st["accounts"]}
        for p in people:
            paid = balance(usdc, p.address)
            left = int(accounts[p.address.lower()]["free"])
            assert paid + left == DEPOSIT, (p.address, paid, left)
            # each withdrawal paid exactly once, also one whose answer the kill lost (its
            # retry, same key, on the new active: the first answer, nothing queued again)
            assert paid == PAYOUT * CALLS, (p.address, paid, st["droppedPayouts"])
            keys = {o.body["idempotencyKey"] for o in outcomes[p.address]}
            assert keys == {f"w{n}" for n in range(CALLS)}


def test_a_paused_active_vault_mode_replica_resumed_after_the_take_over_answers_nothing_and_exits(
    vault_chain: Chain, usdc: Any, db: str, tmp_path: Path,
) -> None:
    with two_replicas(vault_chain, usdc, db, tmp_path) as (gas, vault, replicas):
        old, new = replicas
        alice = funded(vault_chain, usdc, DEPOSIT)
        transact(vault_chain, alice, usdc.functions.approve(vault.address, DEPOSIT))
        vault.deposit(alice, alice.address, DEPOSIT)
        caller = FailoverCaller([old.url, new.url], alice)
        deadline = time.monotonic() + 60
        while int(caller.call("GET", "/v1/vault/balance").body["free"]) != DEPOSIT:
            assert time.monotonic() < deadline, "deposit not confirmed in time"
            time.sleep(0.2)
        assert old.proc is not None
        old.proc.send_signal(signal.SIGSTOP)  # its sockets stay open, its lease lapses
        new.wait_role("active", 30)
        got = caller.call("POST", "/v1/vault/withdraw", {"amount": "300", "idempotencyKey": "a"})
        assert got.status == 202, got.body
        old.proc.send_signal(signal.SIGCONT)
        # the resumed one finds another token on the lease row: it exits 75, answering nothing
        assert old.proc.wait(60) == 75
        assert "lease lost" in old.log.read_text()
        again = FailoverCaller([new.url], alice).call("GET", "/v1/vault/balance")
        # queued (1000 free, 300 asked), or already settled by the new active's worker
        assert (again.body["free"], again.body["payoutRequested"]) in (("1000", "300"),
                                                                       ("700", "0"))
        operator = FailoverCaller([new.url], gas)
        assert operator.call("POST", "/v1/vault/settle-now").status == 200
        deadline = time.monotonic() + 60
        while balance(usdc, alice.address) != 300:
            assert time.monotonic() < deadline, "payout not landed"
            time.sleep(0.2)
        assert balance(usdc, vault.address) == DEPOSIT - 300
        # the same withdrawal retried after it was paid, on the new active: answered, not paid
        late = FailoverCaller([new.url], alice).call(
            "POST", "/v1/vault/withdraw", {"amount": "300", "idempotencyKey": "a"})
        assert late.status == 202 and late.body["replayed"] is True, late.body
        assert operator.call("POST", "/v1/vault/settle-now").status == 200
        assert balance(usdc, alice.address) == 300
        assert balance(usdc, vault.address) == DEPOSIT - 300
