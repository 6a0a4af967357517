"""``a402 demo``: one complete x402 ``exact`` payment path, in one process.

Everything is real except the network: an in-process EVM chain (py-evm), the
TestUSDC contract, a facilitator and a paid API behind real HTTP on loopback,
and a client that pays with EIP-3009 signatures. The summary shows what a
provider and an agent builder would want to see: what was paid, where it
settled, how long it took, and that no unit of money appeared or vanished.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain, embedded_chain
from a402.demos.common import PRICE, PaidCall, format_usdc, pay_weather, weather_api
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.observe import PAID_LOGGER
from a402.provider.middleware import PaymentMiddleware

ACTS = ("all", "exact", "channels", "agents", "mandates", "bitcoin")


def run_demo(requests: int = 5, out: TextIO = sys.stdout, act: str = "all",
             channel_requests: int = 100) -> int:
    """Run the acts asked for (``all``, ``exact``, ``channels``, ``agents``, ``mandates``),
    each on its own fresh chain, so each stands alone; 0 only if every act ran and checked
    out."""
    if act not in ACTS:
        raise ValueError(f"unknown act {act!r}")
    with _quiet_paid_log():
        return _run_acts(requests, out, act, channel_requests)


@contextlib.contextmanager
def _quiet_paid_log() -> Iterator[None]:
    """The demo prints its own table of what was paid; the services' one JSON line per
    paid request on stderr (``a402.paid``, for operators' log collectors) would bury it
    (hundreds of lines with the channel act), so it is off while the demo runs."""
    # A filter, not ``logger.disabled``: each uvicorn start re-enables existing loggers
    # (``dictConfig(disable_existing_loggers=False)``), and leaves filters alone.
    def drop(_record: logging.LogRecord) -> bool:
        return False

    logger = logging.getLogger(PAID_LOGGER)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _run_acts(requests: int, out: TextIO, act: str, channel_requests: int) -> int:
    status = 0
    if act in ("all", "exact"):
        status |= run_exact_act(requests, out)
    if act in ("all", "channels"):
        from a402.demos.channels import run_channels_act

        if act == "all":
            print(file=out)
        status |= run_channels_act(channel_requests, out)
    if act in ("all", "agents"):
        from a402.demos.agents import run_agents_act

        if act == "all":
            print(file=out)
        status |= run_agents_act(out)
    if act in ("all", "mandates"):
        from a402.demos.mandates import run_mandates_act

        if act == "all":
            print(file=out)
        status |= run_mandates_act(out)
    if act == "bitcoin":  # not in "all": no EVM chain, its own walkthrough
        from a402.demos.bitcoin import run_bitcoin_act

        status |= run_bitcoin_act(channel_requests, out)
    return status


def run_exact_act(requests: int = 5, out: TextIO = sys.stdout) -> int:
    """Act 1: a client pays a paid HTTP API ``requests`` times (x402 exact)."""
    say = lambda line="": print(line, file=out, flush=True)  # noqa: E731
    say("a402 demo: x402 `exact` payments on an embedded EVM chain\n")
    started = time.perf_counter()
    chain = embedded_chain()
    manifest = deploy_dev_stack(chain)
    say(f"chain      {manifest.network} (in-process py-evm), TestUSDC at {manifest.token.address}")
    provider, client = manifest.account("provider"), manifest.account("client")
    watched = {"client": client.address, "provider": provider.address}
    before = _balances(chain, manifest, watched)

    with tempfile.TemporaryDirectory() as tmp:
        store = SettlementStore(f"sqlite:///{Path(tmp) / 'journal.db'}")
        facilitator = Facilitator(chain, chain.accounts[1], store)
        with serve_in_thread(create_app(facilitator)) as facilitator_url:
            api = PaymentMiddleware(
                weather_api(), routes={"GET /weather/*": PRICE}, pay_to=provider.address,
                token=manifest.token, network=manifest.network, facilitator=facilitator_url,
            )
            with serve_in_thread(api) as api_url:
                say(f"facilitator {facilitator_url}   paid API {api_url}/weather/<city> "
                    f"({PRICE} USDC per call)\n")
                calls = pay_weather(chain, api_url, client.private_key, requests)
        store.close()

    after = _balances(chain, manifest, watched)
    _summary(say, manifest, calls, before, after, time.perf_counter() - started)
    conserved = sum(before.values()) == sum(after.values())
    paid = sum(c.amount for c in calls)
    ok = (conserved and len(calls) == requests and all(c.status == 200 for c in calls)
          and before["client"] - after["client"] == paid)
    say("\nresult     " + ("OK: every request paid once, balances conserved" if ok else "FAILED"))
    return 0 if ok else 1


def _balances(chain: Chain, manifest: Manifest, who: dict[str, str]) -> dict[str, int]:
    return {name: token_balance(chain, manifest.token.address, a) for name, a in who.items()}


def _summary(
    say: Callable[..., None], manifest: Manifest, calls: list[PaidCall],
    before: dict[str, int], after: dict[str, int], elapsed: float,
) -> None:
    say(f"{'#':>2}  {'request':<22}{'status':>6}  {'paid (USDC)':>12}  {'gas':>7}  "
        f"{'latency':>9}  transaction")
    for i, c in enumerate(calls, 1):
        say(f"{i:>2}  GET /weather/{c.city:<9}{c.status:>6}  {format_usdc(c.amount):>12}  "
            f"{c.gas:>7,}  {c.latency_ms:>7.1f}ms  {c.transaction}")
    latencies = [c.latency_ms for c in calls]
    if latencies:
        say(f"\nlatency    p50 {statistics.median(latencies):.1f} ms, "
            f"max {max(latencies):.1f} ms per paid request (402, sign, verify, serve, settle)")
    say(f"on-chain   {sum(1 for c in calls if c.transaction)} transactions, "
        f"{sum(c.gas for c in calls):,} gas in all (one transferWithAuthorization each)")
    say(f"\n{'balances (USDC)':<18}{'before':>16}{'after':>16}{'change':>16}")
    for name in before:
        change = after[name] - before[name]
        say(f"{name:<18}{format_usdc(before[name]):>16}{format_usdc(after[name]):>16}"
            f"{change / 1e6:>+16,.6f}")
    say(f"{'total':<18}{format_usdc(sum(before.values())):>16}"
        f"{format_usdc(sum(after.values())):>16}"
        f"{(sum(after.values()) - sum(before.values())) / 1e6:>+16,.6f}")
    say(f"\nran in {elapsed:.1f} s on {manifest.network}")
