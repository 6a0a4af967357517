"""A FastMCP server behind :func:`a402.mcp.protect`, its SDK app in :func:`bounded_app`: hostile
calls (deep or huge JSON, payments of the wrong shape) get clear answers, the server keeps
serving, and nothing runs or is charged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from mcp.server.fastmcp import FastMCP

from a402.chain.deploy import Manifest
from a402.mcp import ToolPaywall, bounded_app, protect
from a402.mcp.wire import PAYMENT_META_KEY
from tests.paid_mcp.helpers import PRICE, mcp_session
from tests.servers import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def protected(dev_stack: Manifest, facilitator_url: str) -> Iterator[tuple[str, list[str]]]:
    mcp = FastMCP("protected")
    ran: list[str] = []

    @mcp.tool()
    def forecast(city: str) -> str:
        ran.append(city)
        return "sunny"

    protect(mcp, ToolPaywall({"forecast": PRICE}, pay_to=str(Account.create().address),
                             token=dev_stack.token, network=dev_stack.network,
                             facilitator=facilitator_url))
    with serve(bounded_app(mcp.streamable_http_app())) as base:
        yield base + "/mcp", ran


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


async def test_deep_and_huge_payments_in_meta_are_refused_and_the_server_keeps_serving(
        protected: tuple[str, list[str]]) -> None:
    url, ran = protected
    async with mcp_session(url) as session:
        answers = [await session.call_tool("forecast", {"city": "Paris"},
                                           meta={PAYMENT_META_KEY: meta})
                   for meta in (_deep(60), {"blob": "y" * 200_000}, [1, 2, 3])]
        protect_still_offers = await session.call_tool("forecast", {"city": "Paris"})
    reasons = [a.structuredContent["error"] for a in answers if a.structuredContent]
    assert reasons == ["json_too_deep", "request_too_large", "malformed_payment"]
    assert protect_still_offers.structuredContent is not None
    assert protect_still_offers.structuredContent["error"] == "payment_required"
    assert ran == []


async def test_a_body_nested_100000_deep_is_refused_before_the_sdk_decodes_it(
        protected: tuple[str, list[str]]) -> None:
    url, ran = protected
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json"}
    body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"forecast",'
            b'"arguments":{"city":"x"},"_meta":{"x402/payment":' + b"[" * 100_000
            + b"]" * 100_000 + b"}}}")
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(url, content=body, headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (400, "json_too_deep")
    async with mcp_session(url) as session:
        assert (await session.call_tool("forecast", {"city": "Paris"})).isError  # an offer
    assert ran == []
