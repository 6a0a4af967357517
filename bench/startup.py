"""Start-up cost of the ``a402`` command: ``a402 pay`` end to end against a local gateway,
next to ``python -c "import httpx"``, measured in the same run.

An agent that shells out to ``a402 pay`` once per request pays the interpreter's start
and the imports every time; the payment itself (a 402, a signature, a facilitator's
verify and settle on anvil) is tens of milliseconds. The target (issue 15) is ``a402
pay`` <= 4x ``import httpx``: no more than a few imports' worth above the HTTP client
the command needs anyway.

Real everything: anvil with the dev token, our facilitator and a ``PaymentMiddleware``
in front of a trivial handler, each served by uvicorn in a thread of this process; each
measured command is a fresh ``python`` process (the same interpreter as this one), run
alternately so that both see the same machine load; the CPU time (user + system) of
each is reported too, steadier than wall time on a shared machine. Every ``a402 pay``
pays and settles on-chain (the bench checks the payer's balance at the end).

    PYTHONPATH=src python bench/startup.py [--runs 15]

Prints a table and writes ``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import deploy_dev_stack, token_balance
from a402.chain.node import start_anvil
from a402.chain.tx import contract_at, transact
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.provider import PaymentMiddleware

PRICE_ATOMIC = 1_000  # 0.001 of a 6-decimal token
SRC = str(Path(__file__).resolve().parents[1] / "src")
RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv[2:]} failed ({done.returncode}): {done.stderr.decode()[-800:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def _hello(_: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp, start_anvil() as chain:
        manifest = deploy_dev_stack(chain)
        facilitator = Facilitator(chain, chain.accounts[1],
                                  SettlementStore(f"sqlite:///{tmp}/journal.db"))
        payer = chain.accounts[5]
        token = contract_at(chain, "TestUSDC", manifest.token.address)
        transact(chain, chain.accounts[0], token.functions.mint(
            payer.address, PRICE_ATOMIC * (args.runs + 1)))
        key = Path(tmp) / "payer.key"
        key.write_text(payer.key.hex())
        key.chmod(0o600)
        with serve_in_thread(create_app(facilitator)) as facilitator_url:
            api = Starlette(routes=[Route("/hello", _hello)])
            api.add_middleware(PaymentMiddleware, routes={"GET /hello": PRICE_ATOMIC},
                               pay_to=manifest.account("provider").address,
                               token=manifest.token, network=manifest.network,
                               facilitator=facilitator_url)
            with serve_in_thread(api) as gateway:
                before = token_balance(chain, manifest.token.address, payer.address)
                commands = {
                    "python -c 'import httpx'": [python, "-c", "import httpx"],
                    "a402 --help": [python, "-m", "a402.cli", "--help"],
                    "a402 pay (pays, settles)": [python, "-m", "a402.cli", "pay",
                                                 f"{gateway}/hello", "--key-file", str(key),
                                                 "--max", "0.001"],
                }
                for argv in commands.values():  # warm the OS file cache once
                    _timed(argv, env)
                times: dict[str, list[float]] = {name: [] for name in commands}
                cpu: dict[str, list[float]] = {name: [] for name in commands}
                for _ in range(args.runs):
                    for name, argv in commands.items():
                        wall, used = _timed(argv, env)
                        times[name].append(wall)
                        cpu[name].append(used)
                after = token_balance(chain, manifest.token.address, payer.address)
        paid = (before - after) // PRICE_ATOMIC
        if paid != args.runs + 1:
            raise SystemExit(f"expected {args.runs + 1} settled payments, the chain shows {paid}")

    httpx_name = "python -c 'import httpx'"
    base = statistics.median(times[httpx_name])
    base_cpu = statistics.median(cpu[httpx_name])
    rows: list[dict[str, Any]] = []
    for name, samples in times.items():
        median = statistics.median(samples)
        median_cpu = statistics.median(cpu[name])
        rows.append({"command": name, "median_ms": round(median * 1000, 1),
                     "min_ms": round(min(samples) * 1000, 1),
                     "max_ms": round(max(samples) * 1000, 1),
                     "ratio_to_import_httpx": round(median / base, 2),
                     "cpu_median_ms": round(median_cpu * 1000, 1),
                     "cpu_ratio_to_import_httpx": round(median_cpu / base_cpu, 2)})
    print(f"{'command':<28} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'x httpx':>8} "
          f"{'cpu ms':>8} {'cpu x':>6}")
    for row in rows:
        print(f"{row['command']:<28} {row['median_ms']:>10} {row['min_ms']:>8} "
              f"{row['max_ms']:>8} {row['ratio_to_import_httpx']:>8} "
              f"{row['cpu_median_ms']:>8} {row['cpu_ratio_to_import_httpx']:>6}")
    pay_ratio = rows[-1]["ratio_to_import_httpx"]
    print(f"\na402 pay / import httpx = {pay_ratio} wall, "
          f"{rows[-1]['cpu_ratio_to_import_httpx']} CPU (target <= 4), {args.runs} runs each, "
          f"{args.runs + 1} payments settled on anvil")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "runs": args.runs, "target_ratio": 4.0, "pay_ratio": pay_ratio, "rows": rows,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
