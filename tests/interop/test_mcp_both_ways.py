"""Paid MCP tools against the official x402 SDK's MCP transport (``x402.mcp``), both ways,
on anvil with balances asserted.

- a402's paid tool (FastMCP + :func:`a402.mcp.protect`, settled by a402's facilitator)
  called by the SDK's MCP client (``x402MCPSession``, signing with the SDK's EVM scheme);
- the SDK's paid tool (FastMCP + ``x402.mcp.create_payment_wrapper``, settled by the
  SDK's facilitator) called by a402's :class:`~a402.mcp.PayingMCPSession`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp.server.fastmcp import FastMCP
from x402.mcp import x402MCPSession
from x402.schemas import SettleResponse as SdkSettleResponse

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.errors import PaymentRefused
from a402.client.records import PaymentStatus
from a402.mcp import PayingMCPSession, ToolPaywall, protect
from a402.mcp.proxy import Upstream, proxy_app
from tests.interop.official import official_mcp_paywall, official_sdk_client
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import PRICE, balance, mcp_session, text_of
from tests.servers import serve

pytestmark = pytest.mark.anyio


def _forecast_server() -> FastMCP:
    mcp = FastMCP("a402-weather")

    @mcp.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather."""
        return f"sunny in {city}"

    return mcp


@pytest.fixture
def a402_tool(dev_stack: Manifest, facilitator_url: str
              ) -> Iterator[tuple[str, str, ToolPaywall]]:
    pay_to = str(Account.create().address)
    mcp = _forecast_server()
    paywall = ToolPaywall({"forecast": PRICE}, pay_to=pay_to, token=dev_stack.token,
                          network=dev_stack.network, facilitator=facilitator_url)
    protect(mcp, paywall)
    with serve(mcp.streamable_http_app()) as base:
        yield base + "/mcp", pay_to, paywall


async def test_the_sdk_mcp_client_pays_an_a402_paid_tool(
        a402_tool: tuple[str, str, ToolPaywall], anvil_chain: Chain, dev_stack: Manifest,
        new_payer: Callable[..., LocalAccount]) -> None:
    url, pay_to, paywall = a402_tool
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(url) as session:
        sdk = x402MCPSession(session, official_sdk_client(payer))
        result = await sdk.call_tool("forecast", {"city": "Lyon"})
    assert not result.is_error and result.payment_made
    assert "sunny in Lyon" in "".join(getattr(b, "text", "") for b in result.content)
    receipt = result.payment_response
    assert isinstance(receipt, SdkSettleResponse) and receipt.success
    assert receipt.payer is not None and receipt.payer.lower() == payer.address.lower()
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)  # type: ignore[arg-type]
    assert mined["status"] == 1
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
    [line] = paywall.observer.recent  # the operator's line for the paid call
    assert (line["outcome"], line["amount"], line["tool"], line["transaction"]) == (
        "settled", str(PRICE), "forecast", receipt.transaction)


@pytest.fixture
def sdk_tools_url(dev_stack: Manifest, official_facilitator_url: str
                  ) -> Iterator[tuple[str, str]]:
    """The SDK's paywall (settled by the SDK's facilitator) on two tools: ``forecast``,
    which answers, and ``broken``, whose backend is down."""
    pay_to = str(Account.create().address)
    paid = official_mcp_paywall(dev_stack, official_facilitator_url, pay_to, PRICE)
    mcp = FastMCP("sdk-tools")

    @mcp.tool(name="forecast", description="Tomorrow's weather (x402 SDK paywall)")
    @paid
    async def forecast(city: str) -> str:
        return f"rainy in {city}"

    @mcp.tool(name="broken", description="Always fails")
    @paid
    async def broken(city: str) -> str:
        raise RuntimeError(f"no weather for {city}")

    with serve(mcp.streamable_http_app()) as base:
        yield base + "/mcp", pay_to


async def test_a402s_mcp_client_pays_an_sdk_paid_tool_within_its_limits(
        sdk_tools_url: tuple[str, str], anvil_chain: Chain, dev_stack: Manifest,
        new_payer: Callable[..., LocalAccount]) -> None:
    url, pay_to = sdk_tools_url
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(url) as session:
        paying = PayingMCPSession(session, payer, max_per_request=PRICE)
        answer = await paying.call_tool("forecast", {"city": "Brest"})
    assert not answer.result.isError
    assert text_of(answer.result) == "rainy in Brest"
    assert answer.paid and answer.payment is not None
    assert answer.payment.status == PaymentStatus.SETTLED
    assert answer.payment.amount == PRICE and answer.payment.pay_to.lower() == pay_to.lower()
    receipt = answer.receipt
    assert receipt is not None and receipt.success
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)  # type: ignore[arg-type]
    assert mined["status"] == 1
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a402s_client_refuses_an_sdk_price_above_its_cap_and_a_failed_sdk_tool_costs_nothing(
        sdk_tools_url: tuple[str, str], anvil_chain: Chain, dev_stack: Manifest,
        new_payer: Callable[..., LocalAccount]) -> None:
    url, pay_to = sdk_tools_url
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(url) as session:
        stingy = PayingMCPSession(session, payer, max_per_request=PRICE - 1)
        with pytest.raises(PaymentRefused) as refused:
            await stingy.call_tool("broken", {"city": "Brest"})
        assert stingy.payments == []
        answer = await PayingMCPSession(session, payer, max_per_request=PRICE).call_tool(
            "broken", {"city": "Brest"})
    assert refused.value.reason == "price_above_maximum"
    assert answer.result.isError and not answer.paid and answer.payment is not None
    assert answer.payment.status == PaymentStatus.UNCONFIRMED
    assert answer.payment.reason == "tool_error_not_charged"
    assert balance(anvil_chain, dev_stack, payer.address) == before
    assert balance(anvil_chain, dev_stack, pay_to) == 0


async def test_the_sdk_mcp_client_pays_through_a402_mcp_serve(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, tmp_path: Path,
        new_payer: Callable[..., LocalAccount]) -> None:
    pay_to = str(Account.create().address)
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    with serve(weather_server.app()) as upstream:
        proxy = proxy_app(Upstream.http(upstream + "/mcp"), ToolPaywall(
            {"forecast": PRICE}, pay_to=pay_to, token=dev_stack.token,
            network=dev_stack.network, facilitator=facilitator_url,
            ledger=f"sqlite:///{tmp_path / 'ledger.db'}"))
        with serve(proxy) as base:
            async with mcp_session(base + "/mcp") as session:
                sdk = x402MCPSession(session, official_sdk_client(payer))
                result = await sdk.call_tool("forecast", {"city": "Metz"})
                free = await sdk.call_tool("echo", {"text": "free"})
    assert not result.is_error and result.payment_made
    assert isinstance(result.payment_response, SdkSettleResponse)
    assert result.payment_response.success
    assert not free.is_error and not free.payment_made
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
