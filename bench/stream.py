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

Two layouts (``--layout``):

* ``processes`` (the default), as deployed: the vault (its enclave, SQLite store,
  watchtower), the provider (``A402Payments`` and the payment middleware in front of the
  token stream, its channel store and watcher) and the unpaid service each run in a
  process of their own (:mod:`roles`, served by :func:`a402.serving.run` as ``a402 ...``
  serves them, every setting at its deployment default), the client in this process.
  What it measures: the protocol's cost when each party has its own interpreter, but
  all of them, anvil included, share this machine's cores (a deployment has three
  machines): a group's time is the CPU of the parties on its critical path plus the
  commits' fsyncs, and a party's CPU can still wait for a core.
* ``threads``: every role a thread of this one process (uvicorn in threads; the
  provider's watcher and the vault's watchtower polling every second, their deployment
  default). What it measures: the same exchange under one GIL, where a thread ready to
  run may wait for another holding it (Python's switch interval is 5 ms): the GIL's
  toll on top of the protocol's, not a deployment.

For each paid row, the CPU each part spent per group (``cpu_ms_per_group``), read from
``/proc`` (Linux) per thread: ``processes``: ``client`` (this process's main thread),
``vault`` and ``provider`` (each process's main thread: its event loop) and
``vault_threads``, ``provider_threads`` (their other threads: the store's writer
chiefly); ``threads``: the client, the vault's and the provider's event loops and
their stores' writer threads. Where the time of a group goes.
What is not CPU is mostly waiting for the commits: an ordinary paid call (the plain rows)
makes five durable commits in a row (the vault's LOCKED, AUTHORIZED and DELIVERED
checkpoints, the provider's state after its REPLY and after its REVEAL), each an fsync
before the next message may leave; a stream's group four, since the vault writes a group's
DELIVERED with the next group's LOCKED, in one commit (:mod:`a402.vault.call`, step 5).
The channel is opened (on-chain) by one paid call before anything is timed; then this
process freezes its startup objects out of the garbage collector, as the served roles
do (so that the layouts differ only in where the roles run). Real parts in both: anvil,
the ASCManager, the provider middleware, the vault service with its store, the client.
One channel carries every group of a run.

    PYTHONPATH=src python bench/stream.py [--tokens 10000] [--groups 1,10,100] [--pace 200]
                                          [--layout processes|threads] [--no-plain]

(``--pace 0``: flat out only.) The plain rows make at most 1,000 calls each.

Prints a table and writes ``bench/results/stream.json`` (``stream-threads.json`` for
the threads layout).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from tests.a402_exchange.helpers import World
from tests.vault.helpers import client_of, running_vault

import roles
from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo, deploy_dev_stack
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract, transact
from a402.client.vault import VaultClient
from a402.client.vault_stream import StreamEnd, paid_stream
from a402.serving import freeze_startup_objects
from a402.tee import SimulatedPlatform, SimulatedVerifier
from machine import machine

PROVIDER_CODE = hashlib.sha384(b"a402 bench provider enclave").digest()
VAULT_CODE = hashlib.sha384(b"a402 bench vault enclave").digest()


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


def measure(client: Any, site: str, upstream: str, args: argparse.Namespace,
            groups: list[int], cpu: Callable[[], dict[str, float]]) -> list[dict[str, Any]]:
    """The rows: the unpaid stream, then each group paid, flat out (with the plain rows)
    and paced. ``cpu()``: CPU seconds used so far, by part."""
    rows: list[dict[str, Any]] = []
    for pace in (0.0, args.pace) if args.pace else (0.0,):
        query = f"?pace={pace:g}" if pace else ""
        base, events = unpaid(f"{upstream}/stream/1{query}")
        assert events == args.tokens, events
        rows.append({"upstream": f"{pace:g}/s" if pace else "flat out", "group": "-",
                     "seconds": base, "tokens_per_s": events / base, "vs_unpaid": 1.0,
                     "groups": 0, "paid": 0})
        label = f"{pace:g}/s" if pace else "flat out"
        for g in groups:
            cpu0 = cpu()
            seconds, got, n, cost = paid(client, f"{site}/stream/{g}{query}", g)
            spent = per_group(cpu0, cpu(), n)
            assert got == args.tokens and cost == args.tokens, (got, cost)
            rows.append({"upstream": label, "group": g,
                         "seconds": seconds, "tokens_per_s": got / seconds,
                         "vs_unpaid": seconds / base, "groups": n, "paid": cost,
                         "ms_per_group": 1000 * seconds / n, "cpu_ms_per_group": spent})
            print(f"  {label:>9} group {g:>4}: {seconds:8.2f} s  cpu ms/group {spent}",
                  file=sys.stderr, flush=True)
        if pace or args.no_plain:
            continue
        for g in groups:  # the floor: one ordinary paid call a group, same channel
            calls = min(args.tokens // g, 1_000)
            cpu0 = cpu()
            seconds, got, cost = plain(client, f"{site}/stream/{g}?tokens={g}", g, calls)
            spent = per_group(cpu0, cpu(), calls)
            assert got == cost == calls * g, (got, cost)
            rows.append({"upstream": "plain", "group": g, "seconds": seconds,
                         "tokens_per_s": got / seconds,
                         "vs_unpaid": seconds / (base * got / args.tokens),
                         "groups": calls, "paid": cost,
                         "ms_per_group": 1000 * seconds / calls, "cpu_ms_per_group": spent})
            print(f"  {'plain':>9} group {g:>4}: {seconds:8.2f} s  cpu ms/group {spent}",
                  file=sys.stderr, flush=True)
    return rows


def per_group(before: dict[str, float], after: dict[str, float], groups: int
              ) -> dict[str, float]:
    """Milliseconds of CPU a group, by part."""
    return {k: round(1000 * (after[k] - before.get(k, 0.0)) / groups, 2)
            for k in sorted(after)}


def in_threads(args: argparse.Namespace, groups: list[int]) -> list[dict[str, Any]]:
    """Every role a thread of this process (the old layout: one GIL)."""
    with start_anvil(accounts=2) as chain, tempfile.TemporaryDirectory() as tmp:
        d = chain.accounts[0]
        usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
        manager = ASCManager.deploy(chain, d, usdc.address, 600)
        platform = SimulatedPlatform.generate()
        world = World(chain, usdc, TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6),
                      manager, platform,
                      SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                      Path(tmp))
        service = roles.token_stream(args.tokens)
        provider = world.provider(routes=roles.stream_routes(args.groups), service=service,
                                  poll_interval=1.0)
        with serve_in_thread(service) as upstream, serve_in_thread(provider.app) as site, \
                running_vault(world, deposit_multiple=100_000, poll_interval=1.0) as vault:
            _, client = client_of(world, vault, funds=10**6, deposit=10**6)
            parts = {f"asgi-{site.rsplit(':', 1)[1]}": "provider",
                     f"asgi-{vault.url.rsplit(':', 1)[1]}": "vault",
                     "provider-channels": "provider_store", "vault-store": "vault_store",
                     "MainThread": "client"}

            def cpu() -> dict[str, float]:
                spent: dict[str, float] = {}
                for name, seconds in thread_cpu().items():
                    part = parts.get(name, "other")
                    spent[part] = spent.get(part, 0.0) + seconds
                return spent

            # the channel opens (createASC on-chain) before anything is timed
            warm = client.invoke(f"{site}/stream/{groups[0]}?tokens=1", method="POST",
                                 max_price=groups[0], deposit=100_000)
            assert warm.outcome == "paid", warm
            # What a402.serving.run does before a service serves (here after all three
            # started, since they share this process).
            freeze_startup_objects()
            rows = measure(client, site, upstream, args, groups, cpu)
            client.close()
    return rows


def in_processes(args: argparse.Namespace, groups: list[int]) -> list[dict[str, Any]]:
    """The vault, the provider and the unpaid service each a process of its own
    (:mod:`roles`); the client is this process."""
    with start_anvil(accounts=4) as chain, tempfile.TemporaryDirectory() as tmp:
        manifest = deploy_dev_stack(chain, asc_manager=True)
        platform = SimulatedPlatform.generate()
        operator, vault_account = Account.create(), Account.create()
        for a in (operator, vault_account):
            transact(chain, chain.accounts[0], {"to": a.address}, value=10**18)
        assert chain.rpc_url is not None
        shared = roles.Shared(
            rpc_url=chain.rpc_url, manifest_json=manifest.to_json(),
            platform_root=platform.root.private_bytes(), platform_secret=platform.seal_secret,
            provider_code=PROVIDER_CODE, vault_code=VAULT_CODE, db_dir=tmp)
        key = "0x{}".format
        with roles.running(roles.stream_service, shared, args.tokens) as upstream, \
                roles.running(roles.stream_provider, shared, key(bytes(operator.key).hex()),
                              args.tokens, args.groups) as site, \
                roles.running(roles.stream_vault, shared, key(bytes(vault_account.key).hex()),
                              100_000) as vault:
            account = Account.from_key(manifest.account("client", 0).private_key)
            # the bench's own vault, started just now: its info names its enclave's key
            client = VaultClient(vault.url, account, trust_on_first_use=True)
            assert client.deposit(10**6)["state"] == "credited"
            me = os.getpid()

            def cpu() -> dict[str, float]:
                spent: dict[str, float] = {}
                for part, process in (("vault", vault), ("provider", site)):
                    for thread, (user, system) in process.thread_cpu_seconds().items():
                        name = part if thread == "main" else f"{part}_threads"
                        spent[name] = spent.get(name, 0.0) + user + system
                for name, seconds in thread_cpu().items():
                    part = "client" if name == "MainThread" else "client_threads"
                    spent[part] = spent.get(part, 0.0) + seconds
                assert me == os.getpid()
                return spent

            warm = client.invoke(f"{site.url}/stream/{groups[0]}?tokens=1", method="POST",
                                 max_price=groups[0], deposit=100_000)
            assert warm.outcome == "paid", warm
            freeze_startup_objects()  # as in the threads layout: only where roles run differs
            rows = measure(client, site.url, upstream.url, args, groups, cpu)
            client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--groups", default="1,10,100")
    parser.add_argument("--pace", type=float, default=200.0)
    parser.add_argument("--layout", choices=("processes", "threads"), default="processes",
                        help="processes (default): the vault, the provider and the service "
                             "each a process of its own, as deployed; threads: every role "
                             "a thread of this one process (one GIL)")
    parser.add_argument("--no-plain", action="store_true",
                        help="leave out the plain rows (ordinary paid calls)")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    rows = (in_processes if args.layout == "processes" else in_threads)(args, groups)
    print(f"\n{args.tokens} tokens through the vault, one channel, roles in {args.layout} "
          "(paid: one call and one exchange a group; plain: ordinary paid calls of a "
          "group's tokens each, no stream)\n")
    print(f"{'upstream':>10} {'group':>6} {'seconds':>9} {'tokens/s':>10} {'× unpaid':>9} "
          f"{'ms/group':>9}  cpu ms/group")
    for r in rows:
        per = f"{r['ms_per_group']:9.2f}" if "ms_per_group" in r else f"{'-':>9}"
        spent = r.get("cpu_ms_per_group", "")
        print(f"{r['upstream']:>10} {r['group']!s:>6} {r['seconds']:9.2f} "
              f"{r['tokens_per_s']:10.0f} {r['vs_unpaid']:9.3f} {per}  {spent}")
    name = "stream.json" if args.layout == "processes" else "stream-threads.json"
    out = Path(__file__).resolve().parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"tokens": args.tokens, "pace": args.pace,
                               "layout": args.layout, "machine": machine(), "rows": rows},
                              indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
