"""Fail-over of the vault on PostgreSQL: kill -9 the active replica under load, time the take-over.

Two real ``a402 vault`` processes (the command line, as an operator runs it) share one
PostgreSQL schema; one holds the lease (:mod:`a402.vault.lease`, TTL ``--lease-ttl``,
default 3 s). Clients (``--clients``, each its own channel to one provider) send paid
calls in a loop with :class:`~a402.client.vault.VaultClient` given both replicas' URLs.
Each round SIGKILLs the active replica mid-load and measures, from the kill:

* **take-over**: until the standby's ``/healthz`` says ``active`` (polled every 50 ms);
* **first answer** (the issue's figure, target ≤ 5 s): until the first paid call is
  answered by the new active;

then restarts the killed process as a standby for the next round (which kills the other
one). After the last round every call's record is read back: each must be answered once,
paid once (the provider's counter covers each call exactly once), and the store's
conservation terms must hold. The take-over cannot be faster than the lease's expiry
(up to ``ttl`` after the last renewal) plus the standby's poll (250 ms) plus its
recovery pass.

It also measures what fencing costs the active: write transactions per second (one
inserted row each, 8 threads, on the store's PostgreSQL write path) without and with
the lease's fencing check (one ``SELECT … FOR SHARE`` of the lease row first in each),
alternated ``--fence-runs`` times (medians; a shared host is noisy).

Usage: ``A402_TEST_POSTGRES_URL=postgresql+psycopg://… python bench/failover.py``
(``--rounds``, ``--clients``, ``--lease-ttl``) — prints a table and writes
``bench/results/failover.json``. Needs anvil (``npm ci``) and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from tests.a402_exchange.helpers import DISPUTE_WINDOW, World, fresh_account
from tests.vault.crash import VaultProcess
from tests.vault.helpers import fresh_schema

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract
from a402.client.vault import VaultClient
from a402.tee import SimulatedPlatform, SimulatedVerifier
from a402.vault.lease import Lease
from a402.vault.store import VaultStore, _nonce
from a402.wire import vault_api as api
from machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"
TARGET_FIRST_ANSWER_S = 5.0
PRICE = 1_000
FUNDS = 10_000_000


def measure(world: World, db: str, workdir: Path, *, rounds: int, clients_n: int,
            ttl: float) -> dict[str, Any]:
    provider = world.provider()
    account = fresh_account(world.chain)
    flags = ("--lease-ttl", str(ttl), "--deposit-multiple", "1000")
    procs = [VaultProcess(world, account, workdir / f"replica{i}", *flags, db=db)
             for i in range(2)]
    results: list[dict[str, Any]] = []
    answered: list[tuple[float, str]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with serve_in_thread(provider.app) as site:
        procs[0].start()
        procs[1].start(standby=True)
        clients = []
        for _ in range(clients_n):
            client = VaultClient([p.url for p in procs], world.client(FUNDS),
                                 failover_wait=60, trust_on_first_use=True)
            assert client.deposit(FUNDS)["state"] == "credited"
            clients.append(client)

        def load(index: int, client: VaultClient) -> None:
            i = 0
            while not stop.is_set():
                key = f"c{index}-{i}"
                try:
                    result = client.invoke(f"{site}/weather", max_price=PRICE,
                                           idempotency_key=key)
                    if (result.outcome, result.amount) != (api.PAID, PRICE):
                        failures.append(f"{key}: {result.outcome}")
                except Exception as e:
                    failures.append(f"{key}: {type(e).__name__}: {e}")
                    return
                with lock:
                    answered.append((time.monotonic(), key))
                i += 1

        threads = [threading.Thread(target=load, args=(i, c), daemon=True)
                   for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        active, standby = procs
        try:
            for round_ in range(rounds):
                time.sleep(2.0)  # load on the active replica
                before = len(answered)
                killed_at = time.monotonic()
                active.kill()
                takeover = None
                while time.monotonic() - killed_at < 60:
                    if standby.health().get("role") == "active":
                        takeover = time.monotonic() - killed_at
                        break
                    time.sleep(0.05)
                while time.monotonic() - killed_at < 60:
                    after = [at for at, _ in answered[before:] if at > killed_at]
                    if after:
                        break
                    time.sleep(0.01)
                first = min(after) - killed_at if after else None
                results.append({"round": round_ + 1, "takeover_s": takeover,
                                "first_answer_s": first})
                print(f"round {round_ + 1}: take-over {takeover:.2f} s, first answer "
                      f"{first:.2f} s" if takeover and first else f"round {round_ + 1}: "
                      f"{takeover} {first}", file=sys.stderr)
                active.start(standby=True)  # the killed one comes back as a standby
                active, standby = standby, active
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
            store = procs[0].store()
            keys = [key for _, key in answered]
            records = [store.request(f"{c.address.lower()}:{key}")
                       for c, key in ((clients[int(k[1:].split("-")[0])], k) for k in keys)]
            totals = store.totals()
            store.close()
            for p in procs:
                p.stop()
    paid_once = all(r is not None and r.outcome == api.PAID for r in records)
    return {
        "rounds": results, "calls_answered": len(answered),
        "calls_answered_twice": len(keys) - len(set(keys)),
        "provider_service_runs": provider.calls["weather"],
        "every_call_paid_once": paid_once and provider.calls["weather"] == len(set(keys)),
        "conserved": totals.conserved, "failures": failures[:10],
    }


def measure_vault_mode(chain: Any, token: Any, db: str, workdir: Path, *, rounds: int,
                       clients_n: int, ttl: float) -> dict[str, Any]:
    """Vault mode (``a402 vault --mode vault``): the same rounds, with participants' signed
    ``withdraw`` calls (a stored, fenced write each) as the load; each participant's
    caller is given both replicas' URLs. After the last round the new active settles
    every queued payout; the chain must hold exactly what the ledger owes and each
    participant's payouts plus free balance must equal its deposit."""
    from tests.vault_mode.helpers import balance, funded
    from tests.vault_mode.replicas import FailoverCaller, two_replicas

    from a402.chain.tx import transact

    deposit, payout = 1_000_000, 1
    results: list[dict[str, Any]] = []
    answered: list[tuple[float, str, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with two_replicas(chain, token, db, workdir, ttl=ttl) as (gas, vault, procs):
        people = [funded(chain, token, deposit) for _ in range(clients_n)]
        for p in people:
            transact(chain, p, token.functions.approve(vault.address, deposit))
            vault.deposit(p, p.address, deposit)
        urls = [r.url for r in procs]
        callers = [FailoverCaller(urls, p) for p in people]
        deadline = time.monotonic() + 60
        while any(int(c.call("GET", "/v1/vault/balance").body["free"]) != deposit
                  for c in callers):
            assert time.monotonic() < deadline, "deposits not confirmed"
            time.sleep(0.2)

        def load(index: int, caller: FailoverCaller) -> None:
            n = 0
            while not stop.is_set():
                n += 1  # one idempotency key per withdrawal: a retry after a lost answer
                try:   # reuses it (queued once)
                    got = caller.call("POST", "/v1/vault/withdraw",
                                      {"amount": str(payout), "idempotencyKey": f"w{n}"})
                except Exception as e:
                    failures.append(f"p{index}: {type(e).__name__}: {e}")
                    return
                if got.status != 202:
                    failures.append(f"p{index}: {got.status} {got.body}")
                with lock:
                    answered.append((time.monotonic(), f"p{index}", got.status))

        threads = [threading.Thread(target=load, args=(i, c), daemon=True)
                   for i, c in enumerate(callers)]
        for t in threads:
            t.start()
        active, standby = procs
        try:
            for round_ in range(rounds):
                time.sleep(2.0)
                before = len(answered)
                killed_at = time.monotonic()
                assert active.proc is not None
                active.proc.kill()
                active.proc.wait(10)
                standby.wait_role("active", 60)
                takeover = time.monotonic() - killed_at
                after: list[float] = []
                while time.monotonic() - killed_at < 60:
                    after = [at for at, _, _ in answered[before:] if at > killed_at]
                    if after:
                        break
                    time.sleep(0.01)
                first = min(after) - killed_at if after else None
                results.append({"round": round_ + 1, "takeover_s": takeover,
                                "first_answer_s": first})
                print(f"vault mode round {round_ + 1}: take-over {takeover:.2f} s, first "
                      f"answer {_s(first)} s", file=sys.stderr)
                active.start("standby")
                active, standby = standby, active
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        operator = FailoverCaller([standby.url, active.url], gas)
        operator.call("POST", "/v1/vault/settle-now")
        deadline = time.monotonic() + 60
        st = operator.call("GET", "/v1/vault/status").body
        while (st["pendingPayouts"] or st["unlanded"]) and time.monotonic() < deadline:
            time.sleep(0.2)
            st = operator.call("GET", "/v1/vault/status").body
        totals = {k: int(v) for k, v in st["totals"].items()}
        on_chain = balance(token, vault.address)
        free = {a["participant"].lower(): int(a["free"]) for a in st["accounts"]}
        each = all(balance(token, p.address) + free[p.address.lower()] == deposit
                   for p in people)
    return {
        "rounds": results, "calls_answered": len(answered),
        "calls_answered_202": sum(1 for *_, status in answered if status == 202),
        "conserved": on_chain == totals["free"] + totals["locked"] + totals["pending"]
        + totals["unconfirmed"] and each,
        "on_chain": on_chain, "totals": totals, "failures": failures[:10],
    }


def _rounds_table(result: dict[str, Any]) -> list[str]:
    """The rounds' take-over and kill-to-first-answer times, their median, max, target."""
    lines = [f"{'round':<8} {'take-over (s)':>14} {'kill → first answered call (s)':>32}",
             "-" * 56]
    for row in result["rounds"]:
        lines.append(f"{row['round']:<8} {_s(row['takeover_s']):>14} "
                     f"{_s(row['first_answer_s']):>32}")
    firsts = [r["first_answer_s"] for r in result["rounds"] if r["first_answer_s"] is not None]
    if firsts:
        lines.append(f"{'median':<8} {'':>14} {statistics.median(firsts):>32.2f}")
        lines.append(f"{'max':<8} {'':>14} {max(firsts):>32.2f}")
    lines.append(f"{'target':<8} {'':>14} {'≤ ' + str(TARGET_FIRST_ANSWER_S):>32}")
    return lines


def vault_mode_table(result: dict[str, Any]) -> str:
    lines = _rounds_table(result)
    lines += ["", f"withdraw calls answered {result['calls_answered']} (202: "
              f"{result['calls_answered_202']}), conserved on-chain and per participant: "
              f"{result['conserved']}"]
    if result["failures"]:
        lines.append(f"failures: {result['failures']}")
    return "\n".join(lines)


def fence_cost(db: str, runs: int, threads: int = 8, per_thread: int = 400
               ) -> dict[str, Any]:
    """Write transactions per second on ``db`` without and with the fencing check."""
    rates: dict[str, list[float]] = {"plain": [], "fenced": []}
    for _ in range(runs):
        for mode in rates:
            store = VaultStore(db)
            if mode == "fenced":
                lease = Lease(store, holder=f"bench-{uuid.uuid4().hex[:6]}", ttl=60,
                              renew_every=10)
                with store.engine.begin() as c:  # the previous run's holder is gone
                    c.exec_driver_sql("UPDATE a402_vault_lease SET expires_at = 0")
                assert lease.try_acquire()
                lease.fence_store()

            def work(store: VaultStore = store) -> None:
                for _ in range(per_thread):
                    store._writes.submit([_nonce("0x" + "11" * 20, uuid.uuid4().hex,
                                                 time.time())]).result()

            workers = [threading.Thread(target=work) for _ in range(threads)]
            started = time.perf_counter()
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            rates[mode].append(threads * per_thread / (time.perf_counter() - started))
            store.close()
    plain, fenced = statistics.median(rates["plain"]), statistics.median(rates["fenced"])
    return {"threads": threads, "plain_per_s": round(plain), "fenced_per_s": round(fenced),
            "cost_pct": round(100 * (1 - fenced / plain), 1), "runs": rates}


def tables(result: dict[str, Any]) -> str:
    lines = _rounds_table(result)
    lines += ["", f"calls answered {result['calls_answered']}, answered twice "
              f"{result['calls_answered_twice']}, provider's service ran "
              f"{result['provider_service_runs']} times, every call paid once: "
              f"{result['every_call_paid_once']}, conserved: {result['conserved']}"]
    if result["failures"]:
        lines.append(f"failures: {result['failures']}")
    fence = result.get("fence")
    if fence:
        lines += ["", f"{'write transactions/s (' + str(fence['threads']) + ' threads)':<36}"
                  f" {'plain':>8} {'fenced':>8} {'cost':>7}", "-" * 62,
                  f"{'one row each, PostgreSQL':<36} {fence['plain_per_s']:>8,}"
                  f" {fence['fenced_per_s']:>8,} {fence['cost_pct']:>6}%"]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--fence-runs", type=int, default=3)
    parser.add_argument("--mode", choices=("standard", "vault"), default="standard",
                        help="vault: the vault-mode replicas (withdraw calls as the load)")
    args = parser.parse_args()
    url = os.environ.get("A402_BENCH_POSTGRES_URL") or os.environ.get("A402_TEST_POSTGRES_URL")
    if not url:
        print("set A402_TEST_POSTGRES_URL (or A402_BENCH_POSTGRES_URL)", file=sys.stderr)
        return 2
    if args.mode == "vault":
        return _main_vault_mode(args, url)
    with start_anvil(accounts=2) as chain, tempfile.TemporaryDirectory() as tmp:
        deployer = chain.accounts[0]
        token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                                deployer.address)
        manager = ASCManager.deploy(chain, deployer, token.address, DISPUTE_WINDOW)
        platform = SimulatedPlatform.generate()
        world = World(chain, token, TokenInfo(token.address, "USD Coin", "USDC", "2", 6),
                      manager, platform,
                      SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                      Path(tmp))
        result = measure(world, fresh_schema(url), Path(tmp), rounds=args.rounds,
                         clients_n=args.clients, ttl=args.lease_ttl)
    result["fence"] = fence_cost(fresh_schema(url), args.fence_runs)
    print(tables(result))
    firsts = [r["first_answer_s"] for r in result["rounds"] if r["first_answer_s"] is not None]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "failover",
        "scenario": f"2 vault replicas over one PostgreSQL, {args.clients} clients calling in "
                    "a loop, the active replica SIGKILLed each round",
        "lease_ttl_s": args.lease_ttl, "machine": machine(), **result,
        "first_answer_median_s": statistics.median(firsts) if firsts else None,
        "first_answer_max_s": max(firsts) if firsts else None,
        "target_first_answer_s": TARGET_FIRST_ANSWER_S,
    }, indent=2) + "\n")
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown}")
    return 0


def _main_vault_mode(args: argparse.Namespace, url: str) -> int:
    with start_anvil(accounts=2) as chain, tempfile.TemporaryDirectory() as tmp:
        deployer = chain.accounts[0]
        token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                                deployer.address)
        result = measure_vault_mode(chain, token, fresh_schema(url), Path(tmp),
                                    rounds=args.rounds, clients_n=args.clients,
                                    ttl=args.lease_ttl)
    print(vault_mode_table(result))
    firsts = [r["first_answer_s"] for r in result["rounds"] if r["first_answer_s"] is not None]
    out = RESULTS.with_name("failover_vault_mode.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "failover (vault mode)",
        "scenario": f"2 vault-mode replicas over one PostgreSQL, {args.clients} participants "
                    "sending signed withdraw calls in a loop, the active replica SIGKILLed "
                    "each round", "lease_ttl_s": args.lease_ttl, "machine": machine(),
        **result,
        "first_answer_median_s": statistics.median(firsts) if firsts else None,
        "first_answer_max_s": max(firsts) if firsts else None,
        "target_first_answer_s": TARGET_FIRST_ANSWER_S,
    }, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
