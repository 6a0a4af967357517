"""The paying MCP client at the edges, on anvil with balances: an offer sent as a JSON-RPC
402 error (the other form the SDK reads), and a paid call whose answer never comes (it
may have settled: the same payload is resent, never a second one, and gets the output)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.records import PaymentStatus
from a402.exact.replay import PaymentKey
from a402.mcp import MCPPaymentUnresolved, PayingMCPSession, ToolPaywall
from a402.mcp.wire import PAYMENT_REQUIRED_CODE
from tests.paid_mcp.helpers import PRICE, balance, text_of

pytestmark = pytest.mark.anyio


def _server(paywall: ToolPaywall, *, offer_as_error: bool, delay: float = 0.0
            ) -> tuple[Server[Any, Any], list[str]]:
    """A low-level server whose one tool is behind ``paywall``; with ``offer_as_error`` the
    offer goes out as a JSON-RPC error 402 (data: the PaymentRequired) instead of a result."""
    server: Server[Any, Any] = Server("edges")
    ran: list[str] = []

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [types.Tool(name="forecast", inputSchema={"type": "object"})]

    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        async def run() -> types.CallToolResult:
            await anyio.sleep(delay)
            ran.append(name)
            return types.CallToolResult(content=[types.TextContent(type="text", text="sunny")])

        request = server.request_context
        meta = request.meta.model_extra if request.meta is not None else None
        return await paywall.call(name, meta, run, arguments)

    inner = server.request_handlers[types.CallToolRequest]

    async def offering_as_error(request: types.CallToolRequest) -> types.ServerResult:
        answer = await inner(request)
        result = answer.root
        if offer_as_error and isinstance(result, types.CallToolResult) and result.isError \
                and result.structuredContent is not None \
                and "accepts" in result.structuredContent:
            ran.append("offered as error 402")
            raise McpError(types.ErrorData(code=PAYMENT_REQUIRED_CODE,
                                           message="Payment required",
                                           data=result.structuredContent))
        return answer

    server.request_handlers[types.CallToolRequest] = offering_as_error
    return server, ran


def _paywall(manifest: Manifest, pay_to: str, facilitator: str) -> ToolPaywall:
    return ToolPaywall({"forecast": PRICE}, pay_to=pay_to, token=manifest.token,
                       network=manifest.network, facilitator=facilitator)


async def kept_for_a_resend(paywall: ToolPaywall, manifest: Manifest, payer: str, nonce: str,
                            timeout: float = 60.0) -> None:
    """Wait until ``paywall`` has kept the output a payment bought (what its identical
    resend is answered from): the call was run, settled and recorded."""
    key = PaymentKey.of(manifest.network, manifest.token.address, payer, nonce)
    deadline = time.monotonic() + timeout
    while await paywall.deliveries.delivery(key) is None:
        assert time.monotonic() < deadline, "the paid call's output was never kept"
        await anyio.sleep(0.05)


async def test_an_offer_sent_as_a_json_rpc_402_error_is_paid_once(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    pay_to, payer = str(Account.create().address), new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    paywall = _paywall(dev_stack, pay_to, facilitator_url)
    server, ran = _server(paywall, offer_as_error=True)
    async with create_connected_server_and_client_session(server) as session:
        answer = await PayingMCPSession(session, payer, max_per_request=PRICE).call_tool(
            "forecast", {"city": "Paris"})
    await paywall.aclose()
    assert answer.paid and text_of(answer.result) == "sunny"
    assert ran == ["offered as error 402", "forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a_paid_call_whose_answer_was_lost_is_resent_and_gets_the_output_it_paid_for(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    pay_to, payer = str(Account.create().address), new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    paywall = _paywall(dev_stack, pay_to, facilitator_url)
    server, ran = _server(paywall, offer_as_error=False, delay=1.5)
    async with create_connected_server_and_client_session(server) as session:
        client = PayingMCPSession(session, payer, max_per_request=PRICE)
        with pytest.raises(MCPPaymentUnresolved) as unresolved:
            await client.call_tool("forecast", {"city": "Paris"},
                                   read_timeout_seconds=timedelta(seconds=0.5))
        assert unresolved.value.payment.status == PaymentStatus.UNKNOWN
        # The server finished: ran the tool, settled, kept the output for a resend (a fixed
        # 3 s sleep left a loaded host ~2 s for the settle and the ledger: a resend still
        # in flight is refused payment_in_use).
        await kept_for_a_resend(paywall, dev_stack, unresolved.value.payment.payer,
                                unresolved.value.payment.nonce)
        again = await client.call_tool("forecast", {"city": "Paris"})
    await paywall.aclose()
    # The same authorization was resent (one signature in all); it had already bought the
    # call whose answer was lost, so it gets that answer again (kept in the paywall's
    # ledger): the tool does not run again and nothing more is charged.
    assert len(client.payments) == 1
    assert again.payment is unresolved.value.payment
    assert again.payment.status == PaymentStatus.SETTLED
    assert again.paid and text_of(again.result) == "sunny"
    assert ran == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a_sold_payment_resent_with_other_arguments_runs_nothing_and_charges_nothing(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    pay_to, payer = str(Account.create().address), new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    paywall = _paywall(dev_stack, pay_to, facilitator_url)
    server, ran = _server(paywall, offer_as_error=False)
    async with create_connected_server_and_client_session(server) as session:
        first = await PayingMCPSession(session, payer, max_per_request=PRICE).call_tool(
            "forecast", {"city": "Paris"})
        assert first.paid and first.payment is not None
        meta = {"x402/payment": json.loads(first.payment.header_value)}
        same = await session.call_tool("forecast", {"city": "Paris"}, meta=meta)
        other = await session.call_tool("forecast", {"city": "Oslo"}, meta=meta)
    await paywall.aclose()
    # The very call resent gets what it bought (no run); other arguments get nothing.
    assert not same.isError and text_of(same) == "sunny"
    assert same.meta == first.result.meta  # the same receipt
    assert other.isError and other.structuredContent is not None
    assert other.structuredContent["error"] == "payment_already_used"
    assert ran == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
