"""Liquidity Vault mode against issue 13's targets, every figure from one run on one anvil.

Three measurements, each the one of a narrower script (run here together so that the ratios
compare figures of the same run; see each script's docstring for its method):

* **gas** (``bench/vault_gas.py``): ``A402Vault.settle`` per participant as the batch grows
  (1, 10, 100, 500 payees), a participant's whole lifecycle (its first deposit plus its
  share of the settlement that confirms it) against the A402 paper's 51,336, x402 ``exact``'s
  gas per request, and the total on-chain gas for 10,000 and 100,000 paid requests among
  100 participants (``exact``: one transfer per request; vault mode: the 100 deposits and
  the settlement; a paid request itself sends no transaction), and the same with deposits
  pulled inside the settlements (``deposit --pull``: EIP-3009, no transaction of the
  participant's);
* **off-chain throughput** (``bench/vault_mode_http.py``): paid calls per second over real
  HTTP through a standard vault and through a vault in vault mode, same clients, same
  provider code, same machine, in alternating rounds (``--throughput-rounds`` of each): the
  figure is the median of the per-pair ratios, with its spread and the CPU per call;
* **fail-over** (``bench/failover.py --mode vault``): two ``a402 vault --mode vault``
  replicas over one PostgreSQL, the active one SIGKILLed under load each round, the time
  from the kill to the first call the standby answers (only with a PostgreSQL URL in
  ``A402_BENCH_POSTGRES_URL`` or ``A402_TEST_POSTGRES_URL``; skipped, and said so, without).

Usage: ``PYTHONPATH=src python bench/vault.py [--calls N] [--clients K] [--rounds R]
[--throughput-rounds T] [--only-throughput]`` —
prints the tables and a summary against the targets, writes ``bench/results/vault.json``.
Needs anvil (``npm ci``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from tests.vault.helpers import drop_created_schemas, fresh_schema

import failover
import vault_gas
import vault_mode_http
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract
from machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "vault.json"

#: Issue 13's targets.
TARGETS = {
    "settlement gas per participant, batch of 100": ("<=", 15_000),
    "lifecycle gas per participant (plain transfer + settlement share)":
        ("<", vault_gas.PAPER["lifecycle"]),
    "lifecycle gas per participant (first deposit + settlement share)":
        ("<", vault_gas.PAPER["lifecycle"]),
    "lifecycle gas per participant (pulled deposit + settlement shares)":
        ("<", vault_gas.PAPER["lifecycle"]),
    "10,000 paid requests, 100 participants: exact gas / vault gas": (">=", 100),
    "10,000 paid requests, plain transfers": (">=", 100),
    "10,000 paid requests, pulled deposits": (">=", 100),
    "100,000 paid requests, 100 participants: exact gas / vault gas": (">=", 800),
    "100,000 paid requests, plain transfers": (">=", 800),
    "100,000 paid requests, pulled deposits": (">=", 800),
    "off-chain throughput, vault mode / standard mode": (">=", 1.0),
    "fail-over, kill -9 to first answered call (max, s)": ("<=", failover.TARGET_FIRST_ANSWER_S),
}


def summary(gas: dict[str, Any], http: dict[str, Any], fail: dict[str, Any] | None
            ) -> list[dict[str, Any]]:
    """Each target, what this run measured, and whether it is met."""
    at_100 = next(r for r in gas["settlement"] if r["payees"] == 100)
    totals = gas["totals_100_participants"]
    firsts = [r["first_answer_s"] for r in (fail or {}).get("rounds", [])
              if r["first_answer_s"] is not None]
    measured: dict[str, Any] = {
        "settlement gas per participant, batch of 100":
            max(at_100["first_per_payee"], at_100["later_per_payee"]),
        "lifecycle gas per participant (plain transfer + settlement share)":
            gas["transfer_lifecycle_measured"]["lifecycle"],
        "10,000 paid requests, plain transfers": totals["10000"]["ratio_transfers"],
        "100,000 paid requests, plain transfers": totals["100000"]["ratio_transfers"],
        "lifecycle gas per participant (first deposit + settlement share)":
            gas["lifecycle_measured"]["lifecycle"],
        "lifecycle gas per participant (pulled deposit + settlement shares)":
            gas["pulled_lifecycle_measured"]["lifecycle"],
        "10,000 paid requests, 100 participants: exact gas / vault gas":
            totals["10000"]["ratio"],
        "10,000 paid requests, pulled deposits": totals["10000"]["ratio_pulls"],
        "100,000 paid requests, 100 participants: exact gas / vault gas":
            totals["100000"]["ratio"],
        "100,000 paid requests, pulled deposits": totals["100000"]["ratio_pulls"],
        "off-chain throughput, vault mode / standard mode": round(http["throughput_ratio"], 2),
        "fail-over, kill -9 to first answered call (max, s)":
            round(max(firsts), 2) if firsts else None,
    }
    rows = []
    for name, (op, target) in TARGETS.items():
        value = measured[name]
        met = None if value is None else {"<=": value <= target, "<": value < target,
                                          ">=": value >= target}[op]
        rows.append({"figure": name, "measured": value, "target": f"{op} {target:,}",
                     "met": met})
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'issue 13 target':<66} {'measured':>10} {'target':>10}  met", "-" * 95]
    for r in rows:
        value = "-" if r["measured"] is None else f"{r['measured']:,}"
        met = "not run" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"{r['figure']:<66} {value:>10} {r['target']:>10}  {met}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="paid calls per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="fail-over rounds")
    parser.add_argument("--throughput-rounds", type=int, default=5,
                        help="off-chain throughput: rounds of each mode, alternating")
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--only-throughput", action="store_true",
                        help="measure only the off-chain throughput (no gas, no fail-over; "
                             "writes no results file)")
    args = parser.parse_args()
    pg = os.environ.get("A402_BENCH_POSTGRES_URL") or os.environ.get("A402_TEST_POSTGRES_URL")
    with start_anvil(accounts=4) as chain, tempfile.TemporaryDirectory() as tmp:
        d = chain.accounts[0]
        usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
        (Path(tmp) / "http").mkdir()
        http = vault_mode_http.measure(chain, usdc, Path(tmp) / "http", calls=args.calls,
                                       clients=args.clients, rounds=args.throughput_rounds)
        if args.only_throughput:
            print(vault_mode_http.table(http))
            spread = http["throughput_ratio_spread"]
            print(f"\noff-chain throughput, vault mode / standard mode (median of "
                  f"{http['rounds']} alternating pairs): {http['throughput_ratio']:.2f} "
                  f"(spread {spread['min']:.2f}..{spread['max']:.2f}; target >= 1.0)")
            return 0
        fail: dict[str, Any] | None = None
        fail_error = None if pg else "not run: set A402_TEST_POSTGRES_URL"
        if pg:
            (Path(tmp) / "failover").mkdir()
            try:
                fail = failover.measure_vault_mode(chain, usdc, fresh_schema(pg),
                                                   Path(tmp) / "failover", rounds=args.rounds,
                                                   clients_n=args.clients, ttl=args.lease_ttl)
            except (TimeoutError, RuntimeError) as e:  # reported, the other figures kept
                fail_error = f"{type(e).__name__}: {str(e)[:300]}"
            finally:
                drop_created_schemas()  # the replicas are stopped: leave no schema behind
        gas = vault_gas.measure(chain)  # last: it moves the chain's clock (dispute windows)
    rows = summary(gas, http, fail)
    print(vault_gas.tables(gas))
    print()
    print(vault_mode_http.table(http))
    print()
    print(failover.vault_mode_table(fail) if fail is not None else
          f"fail-over: {fail_error}")
    print()
    print(summary_table(rows))
    firsts = [r["first_answer_s"] for r in (fail or {}).get("rounds", [])
              if r["first_answer_s"] is not None]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "vault", "machine": machine(), "summary": rows, "gas": gas,
        "paper_table_1_vault_mode": vault_gas.PAPER, "http": http,
        "failover_error": fail_error,
        "failover": None if fail is None else {
            **fail, "lease_ttl_s": args.lease_ttl,
            "first_answer_median_s": statistics.median(firsts) if firsts else None,
            "first_answer_max_s": max(firsts) if firsts else None},
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
