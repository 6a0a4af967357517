"""One payment header sent to two gateways at once buys one response (issue 10, finding 2).

Two gateways paid to the same ``payTo`` through the same facilitator, in front of an
upstream slow enough that both are still working when the other is asked: each verifies
the header as valid, and the facilitator answers the second ``/settle`` of the one
authorization with the first receipt. What stops the second response is a replay ledger
both gateways share: a SQLite file for two gateways in one process, a PostgreSQL
database for two gateway processes. Every test asserts the chain: exactly one transfer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.provider import create_gateway
from a402.provider.ledger import SqlLedger
from a402.wire.headers import PAYMENT_RESPONSE, decode_settle_response
from tests.provider.support import Balances, assert_mined_transfer, offer, v2_header
from tests.servers import reserved_port

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

ROUTE = "GET /paid/*=0.0015"
PRICE_ATOMIC = 1_500
UPSTREAM_SECONDS = 1.5
SRC = str(Path(__file__).resolve().parents[2] / "src")


class SlowUpstream:
    """An unchanged API whose paid answer takes ``UPSTREAM_SECONDS``; counts its answers."""

    def __init__(self) -> None:
        self.served = 0
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def report(_: Request) -> JSONResponse:
            await asyncio.sleep(UPSTREAM_SECONDS)
            with self._lock:
                self.served += 1
            return JSONResponse({"report": "the numbers"})

        async def free(_: Request) -> JSONResponse:
            return JSONResponse({"free": True})

        return Starlette(routes=[Route("/paid/report", report), Route("/free", free)])


@pytest.fixture
def upstream() -> Iterator[tuple[SlowUpstream, str]]:
    slow = SlowUpstream()
    with serve_in_thread(slow.app()) as url:
        yield slow, url


async def _same_header_to_both(
    gateways: tuple[str, str], payer: LocalAccount,
) -> tuple[httpx.Response, httpx.Response]:
    """The offer from the first gateway, signed once, sent to both at the same moment."""
    async with httpx.AsyncClient(timeout=30) as client:
        required, _ = await offer(client, f"{gateways[0]}/paid/report")
        headers = v2_header(required, payer)
        first, second = await asyncio.gather(
            *(client.get(f"{g}/paid/report", headers=headers) for g in gateways))
    return first, second


def _exactly_one_served(
    responses: tuple[httpx.Response, httpx.Response], chain: Chain, balances: Balances,
    payer: LocalAccount, pay_to: str,
) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 402], [r.text for r in responses]
    served = next(r for r in responses if r.status_code == 200)
    refused = next(r for r in responses if r.status_code == 402)
    assert served.json() == {"report": "the numbers"}
    assert_mined_transfer(chain, decode_settle_response(served.headers[PAYMENT_RESPONSE])
                          .transaction)
    assert PAYMENT_RESPONSE not in refused.headers or not decode_settle_response(
        refused.headers[PAYMENT_RESPONSE]).success
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_two_gateways_sharing_a_sqlite_ledger_sell_one_payment_once(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], upstream: tuple[SlowUpstream, str], tmp_path: Path,
) -> None:
    slow, upstream_url = upstream
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledgers = [SqlLedger(url), SqlLedger(url)]  # two ledgers on one file, as two processes
    apps = [create_gateway(upstream_url, [ROUTE], pay_to=pay_to, token=dev_stack.token,
                           network=dev_stack.network, facilitator_url=facilitator_url,
                           ledger=ledger) for ledger in ledgers]
    try:
        with serve_in_thread(apps[0]) as a, serve_in_thread(apps[1]) as b:
            responses = await _same_header_to_both((a, b), payer)
    finally:
        for ledger in ledgers:
            ledger.close()
    _exactly_one_served(responses, anvil_chain, balances, payer, pay_to)
    refused = next(r for r in responses if r.status_code == 402)
    assert refused.json()["error"] == "payment_already_used"
    assert slow.served == 1  # the refused request never reached the upstream


def _gateway_process(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "a402.cli", "gateway", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_serving(proc: subprocess.Popen[str], url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited: {proc.communicate()[1]}")
        try:
            if httpx.get(f"{url}/free", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the gateway at {url} did not come up")


async def test_two_gateway_processes_sharing_a_postgres_ledger_sell_one_payment_once(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], upstream: tuple[SlowUpstream, str],
    postgres_url: str, tmp_path: Path,
) -> None:
    slow, upstream_url = upstream
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())
    SqlLedger(postgres_url).close()  # the table exists before two processes race to make it
    procs: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for _ in range(2):
            with reserved_port() as port:
                procs.append(_gateway_process([
                    "--upstream", upstream_url, "--route", ROUTE, "--manifest", str(manifest),
                    "--pay-to", pay_to, "--facilitator", facilitator_url,
                    "--ledger-db", postgres_url, "--port", str(port)]))
                urls.append(f"http://127.0.0.1:{port}")
                _wait_serving(procs[-1], urls[-1])
        responses = await _same_header_to_both((urls[0], urls[1]), payer)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    _exactly_one_served(responses, anvil_chain, balances, payer, pay_to)
    assert slow.served == 1


async def test_gateways_with_separate_ledgers_and_own_public_urls_are_not_both_paid_by_one_settle(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], upstream: tuple[SlowUpstream, str],
) -> None:
    """No shared ledger: the facilitator's refusal to hand one settlement to a second
    resource is what keeps the second gateway from serving, and only because each names
    its own resource from its ``public_url``. The payer sends both the same Host header:
    without ``public_url`` both would name ``http://shop.example/paid/report``, the
    facilitator would answer the second settle with the first receipt, and both would
    serve (one transfer, two responses): a Host-derived resource is the payer's choice."""
    _, upstream_url = upstream
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    apps = [create_gateway(upstream_url, [ROUTE], pay_to=pay_to, token=dev_stack.token,
                           network=dev_stack.network, facilitator_url=facilitator_url,
                           public_url=f"https://{name}.example")
            for name in ("weather", "news")]
    with serve_in_thread(apps[0]) as a, serve_in_thread(apps[1]) as b:
        async with httpx.AsyncClient(timeout=30) as client:
            required, _ = await offer(client, f"{a}/paid/report")
            headers = {**v2_header(required, payer), "host": "shop.example"}
            responses = await asyncio.gather(
                *(client.get(f"{g}/paid/report", headers=headers) for g in (a, b)))
    _exactly_one_served((responses[0], responses[1]), anvil_chain, balances, payer, pay_to)
