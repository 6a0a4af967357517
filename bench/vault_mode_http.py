"""Paid calls over real HTTP on anvil, both funding modes in one run: ``VaultClient.invoke``
through a standard vault (an ASCManager channel per client, deposit 1000x the price) and
through a vault in vault mode (each client's A402Vault account, a channel of 1000x the price
opened inside the enclave), with ``--clients`` clients calling concurrently (each its own
channel, its calls one after another; every channel already open).

Both modes' calls name that deposit (``deposit=1000 * PRICE``): a standard call that names
none gets a channel of at most ``POOL_DEPOSIT_MULTIPLE`` (100) × its ``maxPrice`` whatever
the vault's ``deposit_multiple`` (the enclave's cap, :func:`a402.vault_enclave.
pool_deposit_cap`), so standard mode's channels ran dry every 100 calls and were closed and
opened again on-chain during the rounds (two blocks in a round, a slow round: the ratio then
counted standard mode's channel renewals against vault mode's calls). With the same
capacity, no channel of either mode renews within ``--calls`` × ``--rounds`` < 1000 calls.

The host may be shared (other processes take the cores in bursts), so one back-to-back pair
of figures says little: both modes are set up once (warmed: every channel open, both
served for the whole run) and their rounds alternate, ``standard, vault mode, vault mode,
standard, standard, ...`` (``--rounds`` of each; each pair in the other order than the one
before; ``--calls`` per client in every round). Each round gives
the calls per second of the round, the mean wall time of one call, the blocks mined (vault
mode: none) and the **CPU per call**: the process CPU time (user + system, every thread:
clients, vaults, providers, all in this process) the round took, per call, which the other
processes' load moves less than the wall clock. Both modes' servers stay up throughout, so
each round's CPU also holds the other mode's idle background (its pollers): the same in
both modes' rounds, measured on its own (``idle_cpu_ms_per_s``, a pause with no calls);
``cpu_ms_per_call_net`` is the round's CPU less that rate over its wall time (the ratio of
CPU per call compares these: a slower round holds more of the background). The comparison
is the **median of the per-pair ratios** (round ``i`` of vault mode over round ``i`` of
standard: the two rounds of a pair are adjacent in time, so they share the host's load as
closely as this process can make them), with its spread (min, max); the median calls/s
and CPU per call of each mode too.

    PYTHONPATH=src python bench/vault_mode_http.py [--calls N] [--clients K] [--rounds R]
        [--profile DIR]

``--profile DIR``: the CPU sampler of ``bench/sampler.py`` (every thread of this one process:
clients, vault, provider) during each mode's rounds, written to ``DIR/standard.folded`` and
``DIR/vault_mode.folded``; read them with ``python bench/sampler.py FILE``.

Prints the figures and writes ``bench/results/vault_mode_http.json``. ``bench/vault.py``
runs the same measurement (:func:`measure`) with the gas and fail-over figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from tests.a402_exchange.helpers import PRICE, World
from tests.vault.helpers import client_of, running_vault
from tests.vault_mode import test_invoke_http as t

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract
from a402.client.vault import ExpectedVault, VaultClient
from a402.tee import SimulatedPlatform, SimulatedVerifier

RESULTS = Path(__file__).resolve().parent / "results" / "vault_mode_http.json"

#: The modes, in the order each pair of rounds runs them.
MODES = ("standard", "vault_mode")


@dataclass
class Mode:
    """One mode set up and warmed: a call per client (each on its own open channel)."""

    name: str
    calls: list[Callable[[], Any]]
    sampler: Any = None  # bench/sampler.py's, with --profile: every round of this mode


def _drive(chain: Chain, mode: Mode, n: int, idle: float) -> dict[str, Any]:
    """Each of ``mode.calls`` run ``n`` times in its own thread, all at once: calls per
    second of the round, the mean wall time of one call, the process CPU per call (and net
    of ``idle``, the background's CPU ms per second), the blocks mined meanwhile."""
    spent: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(call: Callable[[], Any]) -> None:
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                with lock:
                    spent.append(time.perf_counter() - t0)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in mode.calls]
    b0 = chain.w3.eth.block_number
    if mode.sampler is not None:
        mode.sampler.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():  # short joins: the sampler's signal is handled between them
            th.join(0.002 if mode.sampler is not None else None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if mode.sampler is not None:
        mode.sampler.stop()
    if errors:
        raise errors[0]
    return {"calls": len(spent), "wall_s": round(wall, 4),
            "calls_per_s": round(len(spent) / wall, 2),
            "ms_per_call": round(1000 * sum(spent) / len(spent), 2),
            "cpu_ms_per_call": round(1000 * cpu / len(spent), 2),
            "cpu_ms_per_call_net": round((1000 * cpu - idle * wall) / len(spent), 2),
            "blocks": chain.w3.eth.block_number - b0}


@contextlib.contextmanager
def standard_mode(chain: Chain, usdc: Any, tmp: Path, *, clients: int) -> Iterator[Mode]:
    """A standard vault (ASCManager channels) and one provider on loopback."""
    d = chain.accounts[0]
    manager = ASCManager.deploy(chain, d, usdc.address, 600)
    platform = SimulatedPlatform.generate()
    world = World(chain, usdc, TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6), manager,
                  platform, SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                  tmp)
    provider = world.provider()
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=1000) as vault:
        vcs = [client_of(world, vault, funds=10**7, deposit=10**7)[1] for _ in range(clients)]
        for vc in vcs:
            vc.invoke(f"{site}/weather", max_price=PRICE, deposit=1000 * PRICE)  # opens it
        try:
            yield Mode("standard", [partial(vc.invoke, f"{site}/weather", max_price=PRICE,
                                            deposit=1000 * PRICE) for vc in vcs])
        finally:
            for vc in vcs:
                vc.close()


@contextlib.contextmanager
def vault_mode(chain: Chain, usdc: Any, tmp: Path, *, clients: int) -> Iterator[Mode]:
    """A vault in vault mode (its A402Vault) and one provider admitting its channels."""
    with t.running(chain, usdc, tmp) as (s, site, url):
        accounts = [Account.create() for _ in range(clients)]
        for a in accounts:
            s.deposit(a.address, 10**7)
        s.service.tick()  # reads the deposits and confirms them in a settlement
        expect = ExpectedVault(s.service.address, s.contract.address, usdc.address)
        vcs = [VaultClient(url, a, expect=expect) for a in accounts]
        payee = s.provider.address  # the provider's payTo, signed into each call

        def one(vc: VaultClient) -> Any:
            return vc.invoke(f"{site}/weather", max_price=PRICE, pay_to=payee,
                             deposit=1000 * PRICE)

        for vc in vcs:
            one(vc)  # opens the channel (in the enclave)
        try:
            yield Mode("vault_mode", [partial(one, vc) for vc in vcs])
        finally:
            for vc in vcs:
                vc.close()


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def measure(chain: Chain, usdc: Any, tmp: Path, *, calls: int, clients: int,
            rounds: int = 5, profile: Path | None = None) -> dict[str, Any]:
    """Both modes set up, then ``rounds`` pairs of rounds (standard and vault mode, each
    first in turn), each round ``calls`` calls per client: per round figures, per pair
    ratios, their median and spread (module docstring)."""
    if rounds < 1 or calls < 1 or clients < 1:
        raise ValueError("--rounds, --calls and --clients must be at least 1")
    (tmp / "standard").mkdir(exist_ok=True)
    (tmp / "vault_mode").mkdir(exist_ok=True)
    with standard_mode(chain, usdc, tmp / "standard", clients=clients) as std, \
            vault_mode(chain, usdc, tmp / "vault_mode", clients=clients) as vm:
        modes = {"standard": std, "vault_mode": vm}
        if profile is not None:
            from sampler import Sampler

            for mode in modes.values():
                mode.sampler = Sampler()
        # both set up and idle: the background CPU each round also holds
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(2.0)
        idle = 1000 * (time.process_time() - cpu0) / (time.perf_counter() - t0)
        per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in MODES}
        for i in range(rounds):
            # each pair in the other order than the one before (standard first, then vault
            # mode first, ...): a load that rises or falls during the run, or what one round
            # leaves behind for the next, weighs on both modes alike
            for name in MODES if i % 2 == 0 else MODES[::-1]:
                per_round[name].append(_drive(chain, modes[name], calls, idle))
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for name, mode in modes.items():
                mode.sampler.dump(profile / f"{name}.folded")
    ratios = [v["calls_per_s"] / s["calls_per_s"]
              for s, v in zip(per_round["standard"], per_round["vault_mode"], strict=True)]
    cpu_ratios = [v["cpu_ms_per_call_net"] / s["cpu_ms_per_call_net"]
                  for s, v in zip(per_round["standard"], per_round["vault_mode"], strict=True)]
    summary = {name: {
        "calls_per_s": _spread([r["calls_per_s"] for r in per_round[name]]),
        "ms_per_call": _spread([r["ms_per_call"] for r in per_round[name]]),
        "cpu_ms_per_call": _spread([r["cpu_ms_per_call"] for r in per_round[name]]),
        "cpu_ms_per_call_net": _spread([r["cpu_ms_per_call_net"] for r in per_round[name]]),
        "blocks": sum(r["blocks"] for r in per_round[name])} for name in MODES}
    return {"clients": clients, "calls_per_client": calls, "rounds": rounds,
            "order": "alternating pairs: standard, vault mode, vault mode, standard, ...",
            "idle_cpu_ms_per_s": round(idle, 2), "per_round": per_round,
            **summary, "ratios": [round(r, 3) for r in ratios],
            "throughput_ratio": statistics.median(ratios),
            "throughput_ratio_spread": _spread(ratios),
            "cpu_per_call_ratio": statistics.median(cpu_ratios),
            "cpu_per_call_ratio_spread": _spread(cpu_ratios)}


def table(result: dict[str, Any]) -> str:
    lines = [f"paid calls over HTTP, {result['clients']} clients x "
             f"{result['calls_per_client']} calls a round, {result['rounds']} rounds of each "
             "mode, alternating", f"{'round':<6} {'mode':<11} {'calls/s':>9} {'ms/call':>9} "
             f"{'CPU ms/call':>12} {'net':>6} {'blocks':>7} {'vault/std':>10}", "-" * 77]
    for i, ratio in enumerate(result["ratios"]):
        for name, label in (("standard", "standard"), ("vault_mode", "vault mode")):
            r = result["per_round"][name][i]
            lines.append(f"{i + 1:<6} {label:<11} {r['calls_per_s']:>9.1f} "
                         f"{r['ms_per_call']:>9.1f} {r['cpu_ms_per_call']:>12.2f} "
                         f"{r['cpu_ms_per_call_net']:>6.2f} "
                         f"{r['blocks']:>7}" + (f" {ratio:>10.2f}" if name != "standard"
                                                 else ""))
    lines.append("-" * 77)
    for name, label in (("standard", "standard"), ("vault_mode", "vault mode")):
        r = result[name]
        lines.append(f"{'median':<6} {label:<11} {r['calls_per_s']['median']:>9.1f} "
                     f"{r['ms_per_call']['median']:>9.1f} "
                     f"{r['cpu_ms_per_call']['median']:>12.2f} "
                     f"{r['cpu_ms_per_call_net']['median']:>6.2f} {r['blocks']:>7}")
    spread = result["throughput_ratio_spread"]
    cpu = result["cpu_per_call_ratio_spread"]
    lines.append(f"vault mode / standard throughput, median of the per-pair ratios: "
                 f"{result['throughput_ratio']:.2f} (spread {spread['min']:.2f}.."
                 f"{spread['max']:.2f}; target >= 1)")
    lines.append(f"vault mode / standard CPU per call (net), median of the per-pair ratios: "
                 f"{result['cpu_per_call_ratio']:.2f} (spread {cpu['min']:.2f}.."
                 f"{cpu['max']:.2f}); idle background of both (net: less it): "
                 f"{result['idle_cpu_ms_per_s']:.1f} ms CPU/s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each mode")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="CPU samples of each mode's calls, folded, in DIR")
    args = parser.parse_args()
    with start_anvil(accounts=4) as chain, tempfile.TemporaryDirectory() as tmp:
        d = chain.accounts[0]
        usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
        result = measure(chain, usdc, Path(tmp), calls=args.calls, clients=args.clients,
                         rounds=args.rounds, profile=args.profile)
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
