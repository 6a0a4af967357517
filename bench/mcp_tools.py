"""Benchmark: what a paid MCP tool call costs, against the same call unpaid, in one run.

On a real anvil node with a402's facilitator (SQLite journal), an ordinary MCP server
(``examples/mcp_server.py``'s tools over streamable HTTP) and ``a402 mcp serve``'s proxy
in front of it (``forecast`` priced, ``echo`` free), interleaved call by call so each
kind sees the same node and machine:

- ``direct``: ``forecast`` called on the upstream itself (no proxy);
- ``proxied free``: ``echo`` through the proxy (what the proxy hop costs);
- ``paid``: ``forecast`` through the proxy by :class:`~a402.mcp.PayingMCPSession`: the
  unpaid probe answered with the offer, signing, then the paid call (ledger, ``/verify``,
  the tool, ``/settle`` with its transaction mined on anvil).

Prints a table (p50/p99 latency per kind, the paid call's multiple of the direct one) and
writes ``bench/results/mcp_tools.json``. Run from the repository root:
``PYTHONPATH=src python bench/mcp_tools.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from eth_account import Account
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from a402.background import serve_in_thread
from a402.chain.deploy import deploy_dev_stack
from a402.chain.node import start_anvil
from a402.chain.tx import contract_at, transact
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.mcp import PayingMCPSession, ToolPaywall
from a402.mcp.proxy import Upstream, proxy_app
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
PRICE = 1_000


@asynccontextmanager
async def session_at(url: str) -> AsyncIterator[ClientSession]:
    async with (streamable_http_client(url) as (read, write, _),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append(time.perf_counter() - started)
    return result


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


async def measure(direct_url: str, proxy_url: str, payer_key: bytes, rounds: int
                  ) -> dict[str, list[float]]:
    kinds: dict[str, list[float]] = {"direct": [], "proxied free": [], "paid": []}
    async with session_at(direct_url) as direct, session_at(proxy_url) as proxied:
        paying = PayingMCPSession(proxied, payer_key, max_per_request=PRICE)
        for i in range(rounds):
            await timed(kinds["direct"], lambda: direct.call_tool("forecast", {"city": "Paris"}))
            await timed(kinds["proxied free"],
                        lambda: proxied.call_tool("echo", {"text": "hello"}))
            city = f"c{i}"

            async def paid(city: str = city) -> Any:
                return await paying.call_tool("forecast", {"city": city})

            answer = await timed(kinds["paid"], paid)
            if not answer.paid:
                raise RuntimeError(f"paid call {i} was not settled: {answer}")
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mcp_tools.json"))
    args = parser.parse_args()
    mcp_server = importlib.import_module("mcp_server")  # examples/mcp_server.py

    with start_anvil() as chain, tempfile.TemporaryDirectory() as tmp:
        manifest = deploy_dev_stack(chain)
        facilitator = Facilitator(chain, chain.accounts[1],
                                  SettlementStore(f"sqlite:///{tmp}/journal.db"))
        payer = Account.create()
        token = contract_at(chain, "TestUSDC", manifest.token.address)
        transact(chain, chain.accounts[0], token.functions.mint(payer.address, 10**12))
        pay_to = str(Account.create().address)
        with serve_in_thread(create_app(facilitator)) as facilitator_url, \
                serve_in_thread(mcp_server.mcp.streamable_http_app()) as upstream:
            paywall = ToolPaywall({"forecast": PRICE}, pay_to=pay_to, token=manifest.token,
                                  network=manifest.network, facilitator=facilitator_url,
                                  ledger=f"sqlite:///{tmp}/ledger.db")
            with serve_in_thread(proxy_app(Upstream.http(upstream + "/mcp"),
                                           paywall)) as proxy:
                kinds = asyncio.run(measure(upstream + "/mcp", proxy + "/mcp",
                                            bytes(payer.key), args.rounds))
        paid_total = int(token.functions.balanceOf(pay_to).call())
    results = {"machine": machine(), "rounds": args.rounds, "price": PRICE,
               "settled_to_payee": paid_total,
               "kinds": {kind: summary(samples) for kind, samples in kinds.items()}}
    results["paid_over_direct_p50"] = (results["kinds"]["paid"]["p50_ms"]
                                       / results["kinds"]["direct"]["p50_ms"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"{'kind':<14}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}")
    for kind, row in results["kinds"].items():
        print(f"{kind:<14}{row['n']:>5}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}")
    print(f"paid p50 / direct p50: {results['paid_over_direct_p50']:.1f}x; settled to the "
          f"payee: {paid_total} (= {args.rounds} x {PRICE}: "
          f"{paid_total == args.rounds * PRICE})")


if __name__ == "__main__":
    main()
