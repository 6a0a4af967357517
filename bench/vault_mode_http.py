"""Paid calls over real HTTP on anvil, both funding modes in one run: ``VaultClient.invoke``
through a standard vault (an ASCManager channel per client, deposit 1000x the price) and
through a vault in vault mode (each client's A402Vault account, a channel of 1000x the price
opened inside the enclave), with ``--clients`` clients calling concurrently (each its own
channel, its calls one after another; every channel already open): the calls per second of
the whole run, the mean wall time of one call, and the blocks mined during the calls (vault
mode: none).

    PYTHONPATH=src python bench/vault_mode_http.py [--calls N] [--clients K] [--profile DIR]

``--profile DIR``: the CPU sampler of ``bench/sampler.py`` (every thread of this one process:
clients, vault, provider) during each mode's calls, written to ``DIR/standard.folded`` and
``DIR/vault_mode.folded``; read them with ``python bench/sampler.py FILE``.

Prints the figures and writes ``bench/results/vault_mode_http.json``. ``bench/vault.py``
runs the same measurement (:func:`measure`) with the gas and fail-over figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


def _drive(calls: list[Callable[[], Any]], n: int, profile: Path | None = None
           ) -> dict[str, Any]:
    """Each of ``calls`` run ``n`` times in its own thread, all at once: calls per second
    of the whole run and the mean wall time of one call. ``profile``: the CPU samples of
    the run, folded, written there."""
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

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    sampler = None
    if profile is not None:
        from sampler import Sampler

        sampler = Sampler()
        sampler.start()
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():  # short joins: the sampler's signal is handled between them
            th.join(0.002 if sampler is not None else None)
    wall = time.perf_counter() - t0
    if sampler is not None and profile is not None:
        sampler.stop()
        profile.parent.mkdir(parents=True, exist_ok=True)
        sampler.dump(profile)
    if errors:
        raise errors[0]
    return {"calls": len(spent), "wall_s": wall, "calls_per_s": len(spent) / wall,
            "ms_per_call": 1000 * sum(spent) / len(spent)}


def standard_mode(chain: Chain, usdc: Any, tmp: Path, *, calls: int, clients: int,
                  profile: Path | None = None) -> dict[str, Any]:
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
            vc.invoke(f"{site}/weather", max_price=PRICE)  # opens the channel
        b0 = chain.w3.eth.block_number
        got = _drive([partial(vc.invoke, f"{site}/weather", max_price=PRICE) for vc in vcs],
                     calls, None if profile is None else profile / "standard.folded")
        got["blocks"] = chain.w3.eth.block_number - b0
        for vc in vcs:
            vc.close()
    return got


def vault_mode(chain: Chain, usdc: Any, tmp: Path, *, calls: int, clients: int,
               profile: Path | None = None) -> dict[str, Any]:
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
        b0 = chain.w3.eth.block_number
        got = _drive([partial(one, vc) for vc in vcs], calls,
                     None if profile is None else profile / "vault_mode.folded")
        got["blocks"] = chain.w3.eth.block_number - b0
        for vc in vcs:
            vc.close()
    return got


def measure(chain: Chain, usdc: Any, tmp: Path, *, calls: int, clients: int,
            profile: Path | None = None) -> dict[str, Any]:
    std = standard_mode(chain, usdc, tmp, calls=calls, clients=clients, profile=profile)
    vm = vault_mode(chain, usdc, tmp, calls=calls, clients=clients, profile=profile)
    return {"clients": clients, "calls_per_client": calls, "standard": std, "vault_mode": vm,
            "throughput_ratio": vm["calls_per_s"] / std["calls_per_s"]}


def table(result: dict[str, Any]) -> str:
    lines = [f"paid calls over HTTP, {result['clients']} clients x "
             f"{result['calls_per_client']} calls", f"{'mode':<12} {'calls/s':>9} "
             f"{'ms/call':>9} {'blocks':>7}", "-" * 40]
    for name, key in (("standard", "standard"), ("vault mode", "vault_mode")):
        r = result[key]
        lines.append(f"{name:<12} {r['calls_per_s']:>9.1f} {r['ms_per_call']:>9.1f}"
                     f" {r['blocks']:>7}")
    lines.append(f"vault mode / standard throughput: {result['throughput_ratio']:.2f}"
                 " (target >= 1)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="CPU samples of each mode's calls, folded, in DIR")
    args = parser.parse_args()
    with start_anvil(accounts=4) as chain, tempfile.TemporaryDirectory() as tmp:
        d = chain.accounts[0]
        usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
        result = measure(chain, usdc, Path(tmp), calls=args.calls, clients=args.clients,
                         profile=args.profile)
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
