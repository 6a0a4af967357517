"""Benchmark of paid requests through the Liquidity Vault and A402 channels, against x402 exact.

Measures, in one run, on one anvil:

1. paid requests per second and latency p50/p99 through the vault over
   loopback HTTP (client → vault → provider's A402 endpoint: EXEC, REPLY, AUTH,
   REVEAL, ACK inside an attested tunnel) with a zero-cost service, for 1
   channel (one client, one request in flight, as the protocol allows) and for
   50 channels (50 clients, one request in flight each);
2. the same zero-cost service paid with x402 ``exact`` through the facilitator,
   50 clients at once, with anvil mining a block every 2 s (Base's block time);
3. on-chain transactions and gas per request as the number of requests grows
   (1, 10, 100, 1000): for the channel, every transaction mined between the
   client's deposit and the channel's close, counted from the blocks; for
   ``exact``, one ``transferWithAuthorization`` per request at the gas measured
   in (2).

Every counted paid request is a full vault exchange with the provider; the
channel's open (``createASCFromPool``, on the first request of each channel) is left
out of the timed window only because it is a one-time cost already counted in
(3). The channel phases run with anvil auto-mining (blocks matter there only at
deposit, open and close, which are not timed); the ``exact`` phase switches the
same anvil to a block every 2 s, because there the block time *is* the cost.

The facilitator, the provider (the paid API behind the payment middleware),
the vault and the bare service each run in a process of their own
(:mod:`roles`), as they would on separate machines; the load generator is this
process. All of them share this machine's cores, so the figures include the
load generator's own cost; absolute numbers depend on the machine (recorded in
the JSON). That is why the timed requests are sent by a lean load generator
(:mod:`loadgen`): a raw HTTP/1.1 client speaking the vault's API itself, each call
signed and shaped as :class:`~a402.client.vault.AsyncVaultClient` sends it, at
a fraction of the CPU the httpx-based client spends per request (CPU that would
otherwise be taken from the vault and the provider being measured). Deposits,
channel opens, account queries and closes, which are not timed, go through the
client library.

The vault runs as ``--vault-shards`` processes (default two), each a vault of its
own serving a share of the clients, as vaults scale out (shard by client). A
vault process is single-threaded, so one of them is bound by one core; the
figures add the shards' CPU together. ``--vault-shards 1`` measures one process.

Prints a table of targets and writes ``bench/results/asc.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import uvloop
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3.types import RPCEndpoint

import crypto
import loadgen
import roles
from a402.chain.deploy import Manifest, deploy_dev_stack
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import contract_at, transact
from a402.client import Budget, async_paying_client, receipt_of
from a402.client.vault import AsyncVaultClient, VaultClient
from a402.tee import SimulatedPlatform
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
PRICE = roles.PRICE
SIZES = (1, 10, 100, 1000)
PROVIDER_CODE = hashlib.sha384(b"a402 bench provider enclave").digest()
VAULT_CODE = hashlib.sha384(b"a402 bench vault enclave").digest()
BLOCK_TIME = 2.0
PAPER_LIFECYCLE_GAS = 83_687
TARGETS = {"throughput_50_channels_rps": 500, "overhead_p50_ms": 5.0,
           "lifecycle_gas": PAPER_LIFECYCLE_GAS, "throughput_ratio_vs_exact": 100}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class Stack:
    chain: Chain
    manifest: Manifest
    api_url: str
    vault_urls: list[str]  # one per shard: each client is served by one of them
    service_url: str
    processes: dict[str, list[roles.Running]]
    profile: Path | None = None  # --profile: where the timed window's profiles go

    @property
    def vault_url(self) -> str:
        return self.vault_urls[0]

    def vault_for(self, i: int) -> str:
        """The shard serving client ``i`` (vaults shard by client)."""
        return self.vault_urls[i % len(self.vault_urls)]

    def manager(self) -> Any:
        return contract_at(self.chain, "ASCManager", self.manifest.contracts["ASCManager"])

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the vault (all shards), the provider and this load
        generator."""
        used = {name: sum(p.cpu_seconds() for p in ps) for name, ps in self.processes.items()}
        return {**used, "load generator": time.process_time()}

    @contextlib.contextmanager
    def profiled(self) -> Iterator[None]:
        """With ``--profile``: cProfile every role (this load generator included) for the
        duration of the block, each writing ``<role>-<pid>.prof`` in the directory."""
        if self.profile is None:
            yield
            return
        import cProfile
        import signal

        from sampler import Sampler

        everyone = [p for ps in self.processes.values() for p in ps]
        sampling = os.environ.get(roles.PROFILE_MODE_ENV) == "sample"
        profiler: cProfile.Profile | Sampler = (
            Sampler() if sampling else cProfile.Profile(time.thread_time))
        threads_before = [p.thread_cpu_seconds() for p in everyone]
        for p in everyone:
            p.signal(signal.SIGUSR1)
        profiler.start() if isinstance(profiler, Sampler) else profiler.enable()
        try:
            yield
        finally:
            profiler.stop() if isinstance(profiler, Sampler) else profiler.disable()
            for p in everyone:
                p.signal(signal.SIGUSR2)
            threads = {  # (user, system) seconds of each thread, during the block
                f"{p.pid}": {t: [round(u - before.get(t, (0.0, 0.0))[0], 3),
                                 round(s - before.get(t, (0.0, 0.0))[1], 3)]
                             for t, (u, s) in p.thread_cpu_seconds().items()}
                for p, before in zip(everyone, threads_before, strict=True)}
            (self.profile / "threads.json").parent.mkdir(parents=True, exist_ok=True)
            (self.profile / "threads.json").write_text(json.dumps(threads, indent=1))
            self.profile.mkdir(parents=True, exist_ok=True)
            if isinstance(profiler, Sampler):
                profiler.dump(self.profile / "loadgen.folded")
            else:
                profiler.dump_stats(self.profile / "loadgen.prof")


def mined(chain: Chain, contracts: list[Any], first: int, last: int
          ) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(transactions, gas, count by function, gas by function) of blocks first..last."""
    names: dict[str, int] = {}
    gas_of: dict[str, int] = {}
    txs = gas = 0
    for number in range(first, last + 1):
        block = chain.w3.eth.get_block(number, full_transactions=True)
        for tx in cast(list[dict[str, Any]], block["transactions"]):  # full: dicts, not hashes
            used = int(chain.w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
            txs, gas = txs + 1, gas + used
            name = "other"
            for contract in contracts:
                if tx.get("to") == contract.address:
                    with contextlib.suppress(ValueError):  # not one of its functions
                        name = contract.decode_function_input(tx["input"])[0].fn_name
            names[name] = names.get(name, 0) + 1
            gas_of[name] = gas_of.get(name, 0) + used
    return txs, gas, names, gas_of


async def _timed_requests(stack: Stack, client: LocalAccount, count: int,
                          latencies: list[float]) -> float:
    """``count`` paid requests in turn from one lean client (:mod:`loadgen`), each checked;
    their latencies (ms) are appended to ``latencies``; returns the seconds they took."""
    async with loadgen.LeanVaultClient(stack.vault_url, client) as lean:
        await lean.info()  # learns the vault's address and opens the connection (not timed)
        start = time.perf_counter()
        await _paid_in_turn(lean, f"{stack.api_url}/data", count, latencies)
        return time.perf_counter() - start


async def _paid_in_turn(lean: loadgen.LeanVaultClient, url: str, count: int,
                        latencies: list[float]) -> None:
    """``count`` paid calls of ``url``, one after the other, each checked and timed (ms)."""
    for _ in range(count):
        t0 = time.perf_counter()
        status, data = await lean.invoke(url, max_price=PRICE)
        latencies.append((time.perf_counter() - t0) * 1000)
        if loadgen.paid_of(status, data) != (200, "paid", 200, PRICE):
            raise RuntimeError(f"paid request failed: {status} {data}")


def channel_run(stack: Stack, client: LocalAccount, count: int) -> dict[str, Any]:
    """One client: deposit, ``count`` paid requests through one channel, cooperative close.

    Returns the transactions and gas mined from deposit to close, and the timed
    window's figures (requests 2..count; the first one opens the channel)."""
    chain = stack.chain
    first = chain.w3.eth.block_number + 1
    latencies: list[float] = []
    with VaultClient(stack.vault_url, client, trust_on_first_use=True) as vault:
        if vault.deposit(count * PRICE).get("state") != "credited":
            raise RuntimeError("deposit not credited")
        # The call allows the whole run's channel: without ``deposit`` the enclave caps a
        # pool channel at 100 times the call's price.
        opened = vault.invoke(f"{stack.api_url}/data", max_price=PRICE, deposit=count * PRICE)
        if (opened.outcome, opened.status) != ("paid", 200):
            raise RuntimeError(f"first paid request failed: {opened}")
        cpu_before = stack.cpu_seconds()
        elapsed = uvloop.run(_timed_requests(stack, client, count - 1, latencies))
        cpu_after = stack.cpu_seconds()
        [channel] = vault.account_info()["channels"]
        closed = vault.close_channel(channel["channelId"])
        if closed["phase"] != "settled" or int(closed["providerPayout"]) != count * PRICE:
            raise RuntimeError(f"close failed: {closed}")
    contracts = [contract_at(chain, "TestUSDC", stack.manifest.token.address),
                 contract_at(chain, "ASCManager", stack.manifest.contracts["ASCManager"])]
    txs, gas, names, gas_of = mined(chain, contracts, first, chain.w3.eth.block_number)
    return {"requests": count, "transactions": txs, "gas": gas, "by_function": names,
            "gas_by_function": gas_of,
            "lifecycle_gas": (gas_of.get("createASC", 0) + gas_of.get("createASCFromPool", 0)
                              + gas_of.get("closeASC", 0)),
            "timed_requests": len(latencies),
            "cpu_ms_per_request": {name: (cpu_after[name] - cpu_before[name]) * 1000
                                   / max(1, len(latencies)) for name in cpu_after},
            "per_second": len(latencies) / elapsed if latencies else None,
            "latency_ms_p50": statistics.median(latencies) if latencies else None,
            "latency_ms_p99": percentile(latencies, 0.99) if latencies else None}


async def many_channels(stack: Stack, clients: list[LocalAccount], each: int, rounds: int
                        ) -> dict[str, Any]:
    """``len(clients)`` channels at once, one request in flight per channel, for ``rounds``
    timed rounds of ``each`` requests per channel (a round's rate is one sample: the
    median round is the figure, so that one slow moment of a shared host does not make it)."""
    vaults = [AsyncVaultClient(stack.vault_for(i), c, http=httpx.AsyncClient(
        timeout=120, trust_env=False, limits=httpx.Limits(max_connections=4)),
        trust_on_first_use=True)  # the bench's own vaults, started just now
        for i, c in enumerate(clients)]
    leans = [loadgen.LeanVaultClient(stack.vault_for(i), c) for i, c in enumerate(clients)]
    url = f"{stack.api_url}/data"
    latencies: list[float] = []

    async def one(vault: AsyncVaultClient) -> None:  # the channel for the whole run
        result = await vault.invoke(url, max_price=PRICE, deposit=(each * rounds + 1) * PRICE)
        if (result.outcome, result.status, result.amount) != ("paid", 200, PRICE):
            raise RuntimeError(f"paid request failed: {result}")

    try:
        for vault in vaults:
            if (await vault.deposit((each * rounds + 1) * PRICE)).get("state") != "credited":
                raise RuntimeError("deposit not credited")
        chain = stack.chain
        first = chain.w3.eth.block_number + 1
        await asyncio.gather(*(one(v) for v in vaults))  # opens every channel (not timed)
        await asyncio.gather(*(lean.info() for lean in leans))  # connects (not timed)
        with stack.profiled():
            cpu_before, start = stack.cpu_seconds(), time.perf_counter()
            per_round: list[float] = []
            for _ in range(rounds):
                began = time.perf_counter()
                await asyncio.gather(*(_paid_in_turn(lean, url, each, latencies)
                                       for lean in leans))
                per_round.append(each * len(leans) / (time.perf_counter() - began))
            elapsed = time.perf_counter() - start
            cpu_after = stack.cpu_seconds()
        channels = [(await v.account_info())["channels"] for v in vaults]
        if [len(c) for c in channels] != [1] * len(vaults):
            raise RuntimeError(f"expected one channel per client, found {channels}")
        # Every client closes at once: the vault aggregates the closes as it did the opens.
        closed = await asyncio.gather(*(v.close_channel(c[0]["channelId"])
                                        for v, c in zip(vaults, channels, strict=True)))
        if any(c["phase"] != "settled" for c in closed):
            raise RuntimeError(f"not every channel settled: {closed}")
        _, _, calls, gas_of = mined(chain, [stack.manager()], first, chain.w3.eth.block_number)
    finally:
        for v in vaults:
            await v.aclose()
        for lean in leans:
            await lean.aclose()
    lifecycle = sum(gas_of.get(f, 0) for f in
                    ("createASC", "createASCBatch", "createASCFromPool",
                     "createASCFromPoolBatch", "closeASC", "closeASCBatch"))
    return {"channels": len(clients), "requests": len(latencies), "seconds": elapsed,
            "lifecycle_transactions": calls, "lifecycle_gas_by_function": gas_of,
            "lifecycle_gas_per_channel": lifecycle / len(clients),
            "per_second": statistics.median(per_round), "per_second_by_round": per_round,
            "cpu_ms_per_request": {name: (cpu_after[name] - cpu_before[name]) * 1000
                                   / len(latencies) for name in cpu_after},
            "latency_ms_p50": statistics.median(latencies),
            "latency_ms_p99": percentile(latencies, 0.99)}


async def exact_run(stack: Stack, keys: list[str], each: int) -> dict[str, Any]:
    """x402 exact, ``len(keys)`` clients at once, each paying ``each`` requests in turn."""
    latencies: list[float] = []
    transactions: list[str] = []

    async def loop(key: str) -> None:
        async with async_paying_client(key, max_per_request=PRICE,
                                       budget=Budget(PRICE * each), timeout=120) as http:
            for _ in range(each):
                t0 = time.perf_counter()
                response = await http.get(f"{stack.api_url}/data")
                latencies.append((time.perf_counter() - t0) * 1000)
                receipt = receipt_of(response)
                if response.status_code != 200 or receipt is None or not receipt.success:
                    raise RuntimeError(f"exact payment failed: {response.status_code}")
                transactions.append(receipt.transaction)

    start = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in keys))
    elapsed = time.perf_counter() - start
    receipts = [stack.chain.w3.eth.get_transaction_receipt(HexStr(t)) for t in transactions]
    gas = [int(r["gasUsed"]) for r in receipts]
    blocks = sorted({int(r["blockNumber"]) for r in receipts})
    stamps = [int(stack.chain.w3.eth.get_block(b)["timestamp"]) for b in blocks]
    return {"clients": len(keys), "requests": len(latencies), "seconds": elapsed,
            "per_second": len(latencies) / elapsed,
            "latency_ms_p50": statistics.median(latencies),
            "latency_ms_p99": percentile(latencies, 0.99),
            "transactions": len(set(transactions)),
            "gas_per_payment_median": statistics.median(gas),
            "blocks": len(blocks),
            "block_interval_s_median": statistics.median(
                [b - a for a, b in itertools.pairwise(stamps)]) if len(stamps) > 1
            else None}


def service_time(url: str, count: int = 200) -> float:
    """p50 of an unpaid GET of the zero-cost service over loopback HTTP: the part of a
    paid request's latency that is not the payment protocol."""
    with httpx.Client(trust_env=False) as http:
        for _ in range(20):
            http.get(url)
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            if http.get(url).status_code != 200:
                raise RuntimeError("service failed")
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--per-channel", type=int, default=40,
                        help="timed requests per channel per round in the many-channel run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds of the many-channel run; its rate is the median")
    parser.add_argument("--exact-per-client", type=int, default=2,
                        help="exact payments per client (one client per channel)")
    parser.add_argument("--tunnels", type=int, default=None,
                        help="attested tunnels the vault keeps per provider (default: one "
                             "per channel; a tunnel carries one exchange at a time)")
    parser.add_argument("--db-dir", default=None,
                        help="where the vault's, provider's and facilitator's SQLite files go "
                             "(default: the system temp dir; /dev/shm shows what fsync costs)")
    parser.add_argument("--batch-window", type=float, default=1.0,
                        help="seconds the vault holds an open or a close to aggregate it with "
                             "others (its batch_window)")
    parser.add_argument("--vault-shards", type=int, default=2,
                        help="vault processes, each its own vault serving a share of the "
                             "clients (vaults shard by client): one process is bound by one "
                             "core, and this machine has two; the 1-channel runs use the "
                             "first")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="requests per single channel for the on-chain growth table; "
                             "the 1-channel rate and latency come from the largest")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "asc.json"))
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="profile every role during the many-channel run's timed window "
                             "and write <role>-<pid>.prof files in DIR (cProfile: the figures "
                             "are then the profiler's, not the code's)")
    parser.add_argument("--sample", action="store_true",
                        help="with --profile: a CPU sampler (bench/sampler.py) instead of "
                             "cProfile, little overhead; writes <role>-<pid>.folded files")
    args = parser.parse_args()
    if args.profile:
        os.environ[roles.PROFILE_ENV] = str(Path(args.profile).resolve())
        if args.sample:
            os.environ[roles.PROFILE_MODE_ENV] = "sample"
    sizes = [int(s) for s in args.sizes.split(",")]
    if max(sizes) < 100:
        parser.error("the largest of --sizes times the 1-channel run: give one of 100 or more")

    with start_anvil(accounts=args.channels + len(sizes) + 4) as chain, \
            tempfile.TemporaryDirectory(dir=args.db_dir) as tmp:
        manifest = deploy_dev_stack(chain, asc_manager=True)
        platform = SimulatedPlatform.generate()
        operator = Account.create()
        vault_accounts = [Account.create() for _ in range(args.vault_shards)]
        for a in (operator, *vault_accounts):
            transact(chain, chain.accounts[0], {"to": a.address}, value=10**18)
        assert chain.rpc_url is not None  # anvil listens on a URL
        shared = roles.Shared(
            rpc_url=chain.rpc_url, manifest_json=manifest.to_json(),
            platform_root=platform.root.private_bytes(), platform_secret=platform.seal_secret,
            provider_code=PROVIDER_CODE, vault_code=VAULT_CODE, db_dir=tmp)
        clients = [Account.from_key(manifest.account("client", i).private_key)
                   for i in range(args.channels + len(sizes))]
        deposit_multiple = max([*sizes, args.per_channel * args.rounds + 1])
        with contextlib.ExitStack() as running:
            facilitator = running.enter_context(roles.running(
                roles.facilitator, shared, "0x" + bytes(chain.accounts[1].key).hex()))
            provider = running.enter_context(roles.running(
                roles.provider, shared, "0x" + bytes(operator.key).hex(), facilitator.url))
            vaults = [running.enter_context(roles.running(
                roles.vault, shared, "0x" + bytes(a.key).hex(), args.tunnels or args.channels,
                deposit_multiple, args.batch_window)) for a in vault_accounts]
            service = running.enter_context(roles.running(roles.service, shared))
            stack = Stack(chain, manifest, provider.url, [v.url for v in vaults], service.url,
                          {"vault": vaults, "provider": [provider]},
                          Path(args.profile).resolve() if args.profile else None)
            print("service time ...", file=sys.stderr)
            base = service_time(f"{service.url}/data")
            growth = []
            for i, n in enumerate(sizes):
                print(f"one channel, {n} requests ...", file=sys.stderr)
                growth.append(channel_run(stack, clients[args.channels + i], n))
            print(f"{args.channels} channels ...", file=sys.stderr)
            many = uvloop.run(many_channels(stack, clients[:args.channels], args.per_channel,
                                            args.rounds))
            print(f"x402 exact, a block every {BLOCK_TIME:g} s ...", file=sys.stderr)
            chain.w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
            chain.w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"),
                                           [int(BLOCK_TIME)])
            exact = uvloop.run(exact_run(
                stack, [manifest.account("client", i).private_key
                        for i in range(args.channels)], args.exact_per_client))

    # The protocol's own cryptography for one paid request (bench/crypto.py's figure),
    # measured here, in the same run and on the same loaded host, as the CPU above.
    print("the protocol's cryptography per paid request ...", file=sys.stderr)
    crypto_us = crypto.paid_request(number=200, repeat=5)["total"][0]
    # ...which counts the adaptor exchange alone: not the signatures the protocol also
    # requires per paid request (the client's call signature and its recovery, both
    # sides' state signatures and their checks, the provider's check of σ_U).
    signatures_us = crypto.signatures(number=200, repeat=5)["total"][0]
    one = max(growth, key=lambda g: g["requests"])
    exact_gas = exact["gas_per_payment_median"]
    results = {
        "machine": machine(),
        "service_time_ms_p50": base,
        "one_channel": one,
        "many_channels": many,
        "tunnels_per_provider": args.tunnels or args.channels,
        "vault_shards": args.vault_shards,
        "vault_batch_window_s": args.batch_window,
        "db_dir": args.db_dir or tempfile.gettempdir(),
        "exact": exact,
        "growth": [{"requests": g["requests"], "a402_transactions": g["transactions"],
                    "a402_gas": g["gas"], "a402_gas_per_request": g["gas"] / g["requests"],
                    "a402_by_function": g["by_function"],
                    "exact_transactions": g["requests"],
                    "exact_gas": exact_gas * g["requests"],
                    "exact_gas_per_request": exact_gas} for g in growth],
        "channel_lifecycle_gas_alone": one["lifecycle_gas"],
        "channel_lifecycle_gas_by_function": one["gas_by_function"],
        "channel_lifecycle_gas_aggregated": many["lifecycle_gas_per_channel"],
        "overhead_ms_p50": one["latency_ms_p50"] - base,
        "protocol_crypto_us_per_request": crypto_us,
        # CPU of the three roles (vault, provider, paying clients) per paid request over
        # the protocol's own cryptography: the cost of everything around the protocol.
        "cpu_per_request_over_crypto": sum(many["cpu_ms_per_request"].values()) * 1000
        / crypto_us,
        # The same CPU over all the cryptography a paid request requires: the figure above
        # plus the signatures it leaves out (bench/crypto.py's ``signatures``).
        "protocol_signatures_us_per_request": signatures_us,
        "cpu_per_request_over_crypto_with_signatures":
            sum(many["cpu_ms_per_request"].values()) * 1000 / (crypto_us + signatures_us),
        "throughput_ratio_vs_exact": many["per_second"] / exact["per_second"],
        "throughput_ratio_1_channel_vs_exact": one["per_second"] / exact["per_second"],
        # The most exact can do with these clients: each pays at most once a block (its
        # settlement waits for the block); a short run stays below it (first payments
        # discover the price, and late arrivals miss a block), so report both.
        "exact_bound_per_second": exact["clients"] / BLOCK_TIME,
        "throughput_ratio_vs_exact_bound": many["per_second"] * BLOCK_TIME / exact["clients"],
        "targets": TARGETS,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["met"] = report(results)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


def report(r: dict[str, Any]) -> dict[str, bool]:
    """Print the tables and the targets; which targets were met."""
    m = r["machine"]
    print(f"A402 channels through the vault, against x402 exact — {m['cpu_model']}, "
          f"{m['usable_cores']} cores, Python {m['python']}, load {m['load_average_1m']:.2f}\n")
    one, many, exact = r["one_channel"], r["many_channels"], r["exact"]
    print(f"{'paid requests, zero-cost service':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'  A402, 1 channel (' + str(one['timed_requests']) + ' requests)':<44}"
          f"{one['per_second']:>9.1f}{one['latency_ms_p50']:>9.1f}{one['latency_ms_p99']:>9.1f}")
    label = (f"  A402, {many['channels']} channels, {r['vault_shards']} vault "
             f"process{'es' if r['vault_shards'] > 1 else ''} ({many['requests']})")
    print(f"{label:<44}{many['per_second']:>9.1f}{many['latency_ms_p50']:>9.1f}"
          f"{many['latency_ms_p99']:>9.1f}")
    label = f"  x402 exact, {exact['clients']} clients ({exact['requests']})"
    print(f"{label:<44}"
          f"{exact['per_second']:>9.1f}{exact['latency_ms_p50']:>9.1f}"
          f"{exact['latency_ms_p99']:>9.1f}")
    rounds = ", ".join(f"{rate:.0f}" for rate in many["per_second_by_round"])
    print(f"  ({many['channels']} channels: req/s by round {rounds}; the median is the figure)")
    for run in (one, many):
        cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in run["cpu_ms_per_request"].items())
        print(f"  (CPU ms per paid request, {run.get('channels', 1)} channel(s): {cpu})")
    print(f"  (CPU per paid request, {many['channels']} channels, the three roles together / "
          f"the protocol's cryptography ({r['protocol_crypto_us_per_request']:.0f} µs, "
          f"bench/crypto.py's figure measured in this run): "
          f"{r['cpu_per_request_over_crypto']:.1f}x)")
    if "cpu_per_request_over_crypto_with_signatures" in r:
        print(f"  (the same over all the cryptography a paid request requires: that figure + "
              f"the call's and the states' signatures and their checks "
              f"({r['protocol_signatures_us_per_request']:.0f} µs, bench/crypto.py's "
              f"signatures(), this run): {r['cpu_per_request_over_crypto_with_signatures']:.1f}x)")
    print(f"  (exact: blocks every {exact['block_interval_s_median']} s measured, "
          f"{exact['blocks']} blocks; service alone p50 {r['service_time_ms_p50']:.2f} ms)")
    print(f"\n{'on-chain, by requests':<16}{'A402 txs':>10}{'A402 gas':>12}{'gas/req':>10}"
          f"{'exact txs':>11}{'exact gas':>13}{'gas/req':>10}")
    for g in r["growth"]:
        print(f"{g['requests']:<16}{g['a402_transactions']:>10}{g['a402_gas']:>12,}"
              f"{g['a402_gas_per_request']:>10,.0f}{g['exact_transactions']:>11}"
              f"{g['exact_gas']:>13,.0f}{g['exact_gas_per_request']:>10,.0f}")
    print("  A402: every transaction mined from the deposit to the close (deposit, "
          "createASCFromPool, closeASC); exact: one transferWithAuthorization per request at "
          "the gas measured above")
    print(f"\nchannel lifecycle (open + close) gas per channel: alone "
          f"{r['channel_lifecycle_gas_alone']:,}; {many['channels']} channels aggregated by the "
          f"vault {r['channel_lifecycle_gas_aggregated']:,.0f} "
          f"({many['lifecycle_transactions']}); paper {PAPER_LIFECYCLE_GAS:,}")
    t = r["targets"]
    checks = [
        ("paid requests/s, 50 channels", f"{many['per_second']:.0f}",
         f">= {t['throughput_50_channels_rps']}",
         many["per_second"] >= t["throughput_50_channels_rps"]),
        ("protocol overhead p50 (1 channel)", f"{r['overhead_ms_p50']:.1f} ms",
         f"<= {t['overhead_p50_ms']:g} ms", r["overhead_ms_p50"] <= t["overhead_p50_ms"]),
        (f"lifecycle gas/channel, {many['channels']} aggregated",
         f"{r['channel_lifecycle_gas_aggregated']:,.0f}", f"<= {t['lifecycle_gas']:,}",
         r["channel_lifecycle_gas_aggregated"] <= t["lifecycle_gas"]),
        ("throughput 50 channels / exact", f"{r['throughput_ratio_vs_exact']:.1f}x",
         f">= {t['throughput_ratio_vs_exact']}x",
         r["throughput_ratio_vs_exact"] >= t["throughput_ratio_vs_exact"]),
    ]
    print(f"\n{'target':<38}{'measured':>14}{'target':>14}  met")
    for name, value, target, met in checks:
        print(f"{name:<38}{value:>14}{target:>14}  {'yes' if met else 'NO'}")
    print(f"\nratios: 50 channels / exact {r['throughput_ratio_vs_exact']:.1f}x, "
          f"1 channel / exact {r['throughput_ratio_1_channel_vs_exact']:.1f}x; 50 channels / "
          f"the most exact can do with {exact['clients']} clients (one payment each per "
          f"block, {r['exact_bound_per_second']:.0f}/s) "
          f"{r['throughput_ratio_vs_exact_bound']:.1f}x")
    return {name: met for name, _, _, met in checks}


if __name__ == "__main__":
    main()
