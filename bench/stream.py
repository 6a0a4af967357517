"""A paid stream through the vault, group by group, against the same stream unpaid.

A 10,000-token ``text/event-stream`` (one event a token) from an upstream that streams
as fast as it can, and from one paced at 200 tokens/s, read:

* unpaid, straight from the service (httpx streaming over loopback HTTP);
* paid through the vault in groups of 1, 10 and 100 tokens
  (:func:`a402.client.vault_stream.paid_stream`: each group is one signed call of the
  client and one exchange of the channel: EXEC, REPLY, AUTH, REVEAL, its ACK riding on
  the next EXEC). The route is metered per event (one atomic unit a token);
* and, flat out, as ordinary paid calls of the same route that each answer one group's
  worth of tokens (``?tokens=N``, no stream; at most 1,000 calls): the floor a group
  cannot go below, since each group *is* one such call and one such exchange.

For each paid row, the CPU each part spent per group (``cpu_ms_per_group``: the client,
the vault's event loop and its store's writer thread, the provider's event loop and its
store's writer thread), read from ``/proc`` (Linux): where the time of a group goes.
What is not CPU is mostly waiting for the commits: an ordinary paid call (the plain rows)
makes five durable commits in a row (the vault's LOCKED, AUTHORIZED and DELIVERED
checkpoints, the provider's state after its REPLY and after its REVEAL), each an fsync
before the next message may leave; a stream's group four, since the vault writes a group's
DELIVERED with the next group's LOCKED, in one commit (:mod:`a402.vault.call`, step 5).
The channel is opened (on-chain) by one paid call before anything is timed.
The provider's watcher and the vault's watchtower poll the chain at their deployment
default (every second), not at the tests' 0.1 s (which steals this one process's GIL).

Real parts: anvil, the ASCManager, the provider (``A402Payments`` and the payment
middleware in front of the service, uvicorn in a thread), the vault service (its
enclave, SQLite store, uvicorn in a thread) and the client — all in this one process
(so one GIL: a deployment runs them on three machines). One channel carries every
group of a run.

    PYTHONPATH=src python bench/stream.py [--tokens 10000] [--groups 1,10,100] [--pace 200]

(``--pace 0``: flat out only.) The plain rows make at most 1,000 calls each.

Prints a table and writes ``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from starlette.types import Receive, Scope, Send
from tests.a402_exchange.helpers import World
from tests.vault.helpers import client_of, running_vault

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract
from a402.client.vault_stream import StreamEnd, paid_stream
from a402.metering import parse_rule
from a402.provider.routes import RouteConfig
from a402.serving import freeze_startup_objects
from a402.tee import SimulatedPlatform, SimulatedVerifier


def token_stream(tokens: int) -> Any:
    """``POST /stream/<group>?pace=R``: ``tokens`` events, at R a second (0: flat out)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
        pace = float(query.get("pace", "0"))
        count = int(query.get("tokens", tokens))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        start = time.monotonic()
        for i in range(count):
            if pace:
                delay = start + i / pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": b"data: t%d\n\n" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def unpaid(url: str) -> tuple[float, int]:
    """Seconds to read the whole stream straight from the service, and its events."""
    t0 = time.perf_counter()
    events = 0
    with httpx.Client(timeout=600) as http, http.stream("POST", url) as response:
        for chunk in response.iter_bytes():
            events += chunk.count(b"\n\n")
    return time.perf_counter() - t0, events


def thread_cpu() -> dict[str, float]:
    """CPU seconds each thread of this process has used, by thread name (Linux ``/proc``;
    empty elsewhere)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        tick = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                name = names.get(int(tid), "other")
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_by_part(before: dict[str, float], after: dict[str, float], parts: dict[str, str],
                groups: int) -> dict[str, float]:
    """Milliseconds of CPU a group, by part (``parts``: thread name → part)."""
    spent: dict[str, float] = {}
    for name, seconds in after.items():
        part = parts.get(name, "other")
        spent[part] = spent.get(part, 0.0) + seconds - before.get(name, 0.0)
    return {k: round(1000 * v / groups, 2) for k, v in sorted(spent.items())}


def plain(client: Any, url: str, group: int, calls: int) -> tuple[float, int, int]:
    """Seconds for ``calls`` ordinary paid calls (no stream), each answering ``group``
    tokens; events and paid."""
    events = paid_total = 0
    t0 = time.perf_counter()
    for _ in range(calls):
        result = client.invoke(url, method="POST", max_price=group, deposit=100_000)
        events += result.content.count(b"\n\n")
        paid_total += result.amount
    return time.perf_counter() - t0, events, paid_total


def paid(client: Any, url: str, group: int) -> tuple[float, int, int, int]:
    """Seconds for the whole stream bought group by group; events, groups, paid."""
    end = StreamEnd()
    events = 0
    t0 = time.perf_counter()
    for g in paid_stream(client, url, method="POST", group=group, max_price=group,
                         end=end, deposit=100_000):
        events += g.content.count(b"\n\n")
    return time.perf_counter() - t0, events, end.groups, end.paid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--groups", default="1,10,100")
    parser.add_argument("--pace", type=float, default=200.0)
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    routes = {f"POST /stream/{g}": RouteConfig(price=g, meter=parse_rule(
        f"per-event:0.000001,max={g / 10**6:.6f}", 6)) for g in groups}
    rows: list[dict[str, Any]] = []
    with start_anvil(accounts=2) as chain, tempfile.TemporaryDirectory() as tmp:
        d = chain.accounts[0]
        usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
        manager = ASCManager.deploy(chain, d, usdc.address, 600)
        platform = SimulatedPlatform.generate()
        world = World(chain, usdc, TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6),
                      manager, platform,
                      SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                      Path(tmp))
        service = token_stream(args.tokens)
        provider = world.provider(routes=routes, service=service, poll_interval=1.0)
        with serve_in_thread(service) as upstream, serve_in_thread(provider.app) as site, \
                running_vault(world, deposit_multiple=100_000, poll_interval=1.0) as vault:
            _, client = client_of(world, vault, funds=10**6, deposit=10**6)
            parts = {f"asgi-{site.rsplit(':', 1)[1]}": "provider",
                     f"asgi-{vault.url.rsplit(':', 1)[1]}": "vault",
                     "provider-channels": "provider_store", "vault-store": "vault_store",
                     "MainThread": "client"}
            # the channel opens (createASC on-chain) before anything is timed
            warm = client.invoke(f"{site}/stream/{groups[0]}?tokens=1", method="POST",
                                 max_price=groups[0], deposit=100_000)
            assert warm.outcome == "paid", warm
            # What a402.serving.run does before a service serves (here after all three
            # started, since they share this process).
            freeze_startup_objects()
            for pace in (0.0, args.pace) if args.pace else (0.0,):
                query = f"?pace={pace:g}" if pace else ""
                base, events = unpaid(f"{upstream}/stream/1{query}")
                assert events == args.tokens, events
                rows.append({"upstream": f"{pace:g}/s" if pace else "flat out", "group": "-",
                             "seconds": base, "tokens_per_s": events / base, "vs_unpaid": 1.0,
                             "groups": 0, "paid": 0})
                label = f"{pace:g}/s" if pace else "flat out"
                for g in groups:
                    cpu0 = thread_cpu()
                    seconds, got, n, cost = paid(client, f"{site}/stream/{g}{query}", g)
                    cpu = cpu_by_part(cpu0, thread_cpu(), parts, n)
                    assert got == args.tokens and cost == args.tokens, (got, cost)
                    rows.append({"upstream": label, "group": g,
                                 "seconds": seconds, "tokens_per_s": got / seconds,
                                 "vs_unpaid": seconds / base, "groups": n, "paid": cost,
                                 "ms_per_group": 1000 * seconds / n, "cpu_ms_per_group": cpu})
                    print(f"  {label:>9} group {g:>4}: {seconds:8.2f} s  cpu ms/group {cpu}",
                          file=sys.stderr, flush=True)
                if pace:
                    continue
                for g in groups:  # the floor: one ordinary paid call a group, same channel
                    calls = min(args.tokens // g, 1_000)
                    cpu0 = thread_cpu()
                    seconds, got, cost = plain(client, f"{site}/stream/{g}?tokens={g}", g,
                                               calls)
                    cpu = cpu_by_part(cpu0, thread_cpu(), parts, calls)
                    assert got == cost == calls * g, (got, cost)
                    rows.append({"upstream": "plain", "group": g, "seconds": seconds,
                                 "tokens_per_s": got / seconds,
                                 "vs_unpaid": seconds / (base * got / args.tokens),
                                 "groups": calls, "paid": cost,
                                 "ms_per_group": 1000 * seconds / calls,
                                 "cpu_ms_per_group": cpu})
                    print(f"  {'plain':>9} group {g:>4}: {seconds:8.2f} s  cpu ms/group {cpu}",
                          file=sys.stderr, flush=True)
            client.close()
    print(f"\n{args.tokens} tokens through the vault, one channel "
          "(paid: one call and one exchange a group; plain: ordinary paid calls of a "
          "group's tokens each, no stream)\n")
    print(f"{'upstream':>10} {'group':>6} {'seconds':>9} {'tokens/s':>10} {'× unpaid':>9} "
          f"{'ms/group':>9}")
    for r in rows:
        per = f"{r['ms_per_group']:9.2f}" if "ms_per_group" in r else f"{'-':>9}"
        print(f"{r['upstream']:>10} {r['group']!s:>6} {r['seconds']:9.2f} "
              f"{r['tokens_per_s']:10.0f} {r['vs_unpaid']:9.3f} {per}")
    out = Path(__file__).resolve().parent / "results" / "stream.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"tokens": args.tokens, "pace": args.pace, "rows": rows},
                              indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
