"""Attacks on paid MCP tools found in review, each on anvil with balances asserted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import ExitStack

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp.server.fastmcp import FastMCP

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.wallet import Wallet
from a402.mcp import ToolPaywall, bounded_app, protect
from a402.mcp.wire import PAYMENT_META_KEY, required_of
from tests.paid_mcp.helpers import PRICE, balance, mcp_session, text_of
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
    assert "results for q" not in text_of(withheld)
    assert sorted(ran) == ["q", "q"]  # both ran (settle after success); one was sold
