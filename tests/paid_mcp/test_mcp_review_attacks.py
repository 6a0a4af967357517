"""Attacks on paid MCP tools found in review, each on anvil with balances asserted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import types
from mcp.server.fastmcp import FastMCP
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.records import PaymentStatus
from a402.client.wallet import Wallet
from a402.mcp import MCPPaymentUnresolved, PayingMCPSession, ToolPaywall, bounded_app, protect
from a402.mcp.wire import PAYMENT_META_KEY, required_of
from tests.paid_mcp.helpers import PRICE, balance, mcp_session, text_of
from tests.paid_mcp.test_mcp_client_edges import _server as edge_server
from tests.paid_mcp.test_mcp_client_edges import kept_for_a_resend
from tests.servers import serve

pytestmark = pytest.mark.anyio


def _slow_server(ran: list[str], paywall: ToolPaywall) -> FastMCP:
    """A paid tool that takes a moment, as a real one does (a search, a model call)."""
    mcp = FastMCP("slow")

    @mcp.tool()
    async def search(query: str) -> str:
        await asyncio.sleep(1.0)
        ran.append(query)
        return f"results for {query}"

    protect(mcp, paywall)
    return mcp


async def test_one_payment_raced_to_two_paywalls_with_their_own_ledgers_buys_one_output(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    """Two paywalls with their own ledgers (``protect()`` in two stdio processes) both
    verify a payment raced to them before either settles and both run the tool; a402's
    facilitator answers a repeated ``/settle`` of one payload and resource with the first
    success, so each paywall names itself in the resource it settles for: the second
    settle is refused and its output withheld."""
    payer = new_payer()
    pay_to = str(Account.create().address)
    before = balance(anvil_chain, dev_stack, payer.address)
    ran: list[str] = []
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(bounded_app(_slow_server(ran, ToolPaywall(
            {"search": PRICE}, pay_to=pay_to, token=dev_stack.token,
            network=dev_stack.network, facilitator=facilitator_url)).streamable_http_app())))
            + "/mcp" for _ in range(2)]
        async with mcp_session(urls[0]) as one, mcp_session(urls[1]) as two:
            probe = await one.call_tool("search", {"query": "q"})
            required = required_of(probe)
            assert required is not None
            payload = Wallet(payer).sign(required.accepts[0], resource=required.resource,
                                         valid_for=60)
            meta = {PAYMENT_META_KEY: payload.to_wire()}
            results = await asyncio.gather(
                one.call_tool("search", {"query": "q"}, meta=meta),
                two.call_tool("search", {"query": "q"}, meta=meta))
    delivered = [r for r in results if not r.isError and text_of(r) == "results for q"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
    assert len(delivered) == 1, [json.dumps(r.structuredContent) for r in results]
    [withheld] = [r for r in results if r not in delivered]
    assert withheld.isError and withheld.structuredContent is not None
    assert withheld.structuredContent["accepts"]  # answered as payment-required, no output
    # A refused settle (a verdict): the payer reads the money truth first.
    assert withheld.structuredContent["message"].startswith("nothing was charged: ")
    assert "results for q" not in text_of(withheld)
    assert sorted(ran) == ["q", "q"]  # both ran (settle after success); one was sold


def _settle_answers_lost(facilitator: str, lost: int, delay: float = 0.0) -> Any:
    """A facilitator front that forwards everything to ``facilitator`` and answers the
    first ``lost`` ``/settle`` calls 503 after forwarding them (the money moved, the
    answer did not come back: a slow chain or a flaky facilitator look the same)."""
    settles: list[int] = []

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=60) as http:
            upstream = await http.request(request.method, facilitator + request.url.path,
                                          content=await request.body(),
                                          headers={"content-type": "application/json"})
        if request.url.path == "/settle":
            settles.append(upstream.status_code)
            await asyncio.sleep(delay)
            if len(settles) <= lost:
                return Response(b'{"error":"facilitator_error"}', status_code=503,
                                media_type="application/json")
        return Response(upstream.content, status_code=upstream.status_code,
                        media_type="application/json")

    app = Starlette(routes=[Route(p, forward, methods=["GET", "POST"])
                            for p in ("/verify", "/settle", "/supported")])
    app.state.settles = settles
    return app


async def test_a_payment_unsettled_after_the_retries_is_resent_by_the_next_call_not_paid_twice(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    payer = new_payer()
    pay_to = str(Account.create().address)
    before = balance(anvil_chain, dev_stack, payer.address)
    ran: list[str] = []
    front = _settle_answers_lost(facilitator_url, lost=2)
    with serve(front) as flaky:
        paywall = ToolPaywall({"search": PRICE}, pay_to=pay_to, token=dev_stack.token,
                              network=dev_stack.network, facilitator=flaky)
        with serve(bounded_app(_slow_server(ran, paywall).streamable_http_app())) as base:
            async with mcp_session(base + "/mcp") as session:
                client = PayingMCPSession(session, payer, max_per_request=PRICE,
                                          retries=1, retry_delay=0.05)
                with pytest.raises(MCPPaymentUnresolved) as unresolved:
                    await client.call_tool("search", {"query": "q"})
                assert unresolved.value.payment.status == PaymentStatus.UNKNOWN
                assert unresolved.value.payment.reason == "facilitator_unavailable"
                answer = await client.call_tool("search", {"query": "q"})
    assert answer.paid and text_of(answer.result) == "results for q"
    assert len(client.payments) == 1  # one signature for the one output
    assert front.state.settles == [200, 200, 200]
    assert ran == ["q"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a_call_cancelled_while_settling_is_recorded_and_its_resend_gets_the_output(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, tmp_path: Path,
        new_payer: Callable[..., LocalAccount]) -> None:
    """The payer cancels (``notifications/cancelled``, or its stdio transport closes) while
    the paywall settles: the money moves all the same, so the settlement is seen through
    and recorded, and the same payment resent gets the output it bought, run once."""
    payer = new_payer()
    pay_to = str(Account.create().address)
    before = balance(anvil_chain, dev_stack, payer.address)
    front = _settle_answers_lost(facilitator_url, lost=0, delay=1.5)
    with serve(front) as slow:
        paywall = ToolPaywall({"forecast": PRICE}, pay_to=pay_to, token=dev_stack.token,
                              network=dev_stack.network, facilitator=slow,
                              ledger=f"sqlite:///{tmp_path / 'ledger.db'}")
        server, ran = edge_server(paywall, offer_as_error=False)
        async with create_connected_server_and_client_session(server) as session:
            probe = await session.call_tool("forecast", {"city": "Paris"})
            required = required_of(probe)
            assert required is not None
            payload = Wallet(payer).sign(required.accepts[0], resource=required.resource,
                                         valid_for=120)
            meta = {PAYMENT_META_KEY: payload.to_wire()}
            request_id = session._request_id  # the id the next request is sent with
            cancelled: list[BaseException] = []

            async def paid_call() -> None:
                try:
                    await session.call_tool("forecast", {"city": "Paris"}, meta=meta)
                except McpError as e:
                    cancelled.append(e)

            async with anyio.create_task_group() as tg:
                tg.start_soon(paid_call)
                while not front.state.settles:  # the settle went out: money is moving
                    await anyio.sleep(0.05)
                await session.send_notification(types.ClientNotification(
                    types.CancelledNotification(params=types.CancelledNotificationParams(
                        requestId=request_id))))
            # the paywall finished what it could: settled and kept the output (a fixed
            # 2.5 s sleep left a loaded host 1 s for two ledger writes after the 1.5 s
            # delayed settle answer; a resend still in flight is refused payment_in_use)
            await kept_for_a_resend(paywall, dev_stack, payer.address,
                                    payload.payload["authorization"]["nonce"])
            again = await session.call_tool("forecast", {"city": "Paris"}, meta=meta)
        await paywall.aclose()
    assert cancelled  # the first answer never came
    assert not again.isError and text_of(again) == "sunny"
    assert again.meta is not None and again.meta["x402/payment-response"]["success"]
    assert ran == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
