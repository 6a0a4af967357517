"""x402 ``upto`` paid MCP tools against the official x402 SDK's MCP transport, both ways,
on anvil with real Permit2 signatures and balances asserted.

``x402.mcp`` (SDK 2.25) is scheme-agnostic: it carries any registered scheme's offer,
payload and receipt in the same places as ``exact``. Its paywall settles an ``upto``
payment for the offered amount (it has no usage report for MCP tools, unlike its HTTP
middlewares' ``Settlement-Overrides``), so an SDK upto tool charges its maximum; an
a402 upto tool charges what the tool reports (:mod:`a402.mcp.usage`).

- the SDK's MCP client (``x402MCPSession`` with the SDK's ``UptoEvmClientScheme``) pays an
  a402 upto tool behind ``a402 mcp serve``: charged the units used, not the maximum;
- a402's :class:`~a402.mcp.PayingMCPSession` pays an SDK upto tool
  (``create_payment_wrapper`` with the SDK's ``UptoEvmServerScheme``), settled by a402's
  facilitator: charged the maximum the SDK's paywall settles, within the client's cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp.server.fastmcp import FastMCP
from x402 import x402Client, x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.mcp import create_payment_wrapper, x402MCPSession
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.upto import UptoEvmClientScheme, UptoEvmServerScheme
from x402.schemas import SettleResponse as SdkSettleResponse

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.errors import PaymentRefused
from a402.client.records import PaymentStatus
from a402.client.wallet import Wallet
from a402.facilitator.core import Facilitator
from a402.mcp import PayingMCPSession, ToolPaywall, ToolPrice
from a402.mcp.proxy import Upstream, proxy_app
from tests.interop.official_upto import upto_payer, upto_requirements
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import balance, mcp_session, text_of
from tests.servers import serve

pytestmark = pytest.mark.anyio

MAXIMUM = 40_000
UNIT = 100
FUNDS = 1_000_000


def sdk_upto_payer(payer: LocalAccount) -> x402Client:
    client = x402Client()
    client.register("eip155:*", UptoEvmClientScheme(EthAccountSigner(payer)))
    client.set_spend_controls(False)
    return client


async def test_the_sdk_mcp_client_pays_an_a402_upto_tool_what_it_used(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        facilitator: Facilitator, tmp_path: Path,
        new_payer: Callable[..., LocalAccount]) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = str(Account.create().address)
    fees = balance(anvil_chain, dev_stack, facilitator.signer.address)
    paywall = ToolPaywall([ToolPrice("summarize", MAXIMUM, "upto", unit=UNIT)],
                          pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
                          facilitator=facilitator_url,
                          ledger=f"sqlite:///{tmp_path / 'ledger.db'}")
    with serve(weather_server.app()) as upstream, \
            serve(proxy_app(Upstream.http(upstream + "/mcp"), paywall)) as base:
        async with mcp_session(base + "/mcp") as session:
            sdk = x402MCPSession(session, sdk_upto_payer(payer))
            result = await sdk.call_tool("summarize", {"text": "a", "used": "33"})
            sent = anvil_chain.w3.eth.get_transaction_count(facilitator.signer.address)
            nothing = await sdk.call_tool("summarize", {"text": "b", "used": "0"})
            assert anvil_chain.w3.eth.get_transaction_count(facilitator.signer.address) == sent
    assert not result.is_error and result.payment_made
    assert "summary of 'a'" in "".join(getattr(b, "text", "") for b in result.content)
    receipt = result.payment_response
    assert isinstance(receipt, SdkSettleResponse) and receipt.success
    assert receipt.amount == "3300"
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)  # type: ignore[arg-type]
    assert mined["status"] == 1
    assert not nothing.is_error and isinstance(nothing.payment_response, SdkSettleResponse)
    assert nothing.payment_response.success and nothing.payment_response.transaction == ""
    assert [balance(anvil_chain, dev_stack, a)
            for a in (payer.address, pay_to, facilitator.signer.address)] == [
        FUNDS - 3_300, 3_300, fees]


@pytest.fixture
def sdk_upto_tool(dev_stack: Manifest, facilitator_url: str, facilitator: Facilitator
                  ) -> Iterator[tuple[str, str]]:
    """The SDK's MCP paywall selling ``summarize`` with upto, settled by a402's facilitator."""
    pay_to = str(Account.create().address)
    resource_server = x402ResourceServer(
        HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    resource_server.register(dev_stack.network, UptoEvmServerScheme())
    resource_server.initialize()
    paid = create_payment_wrapper(resource_server, accepts=[upto_requirements(
        dev_stack, pay_to, MAXIMUM, facilitator.signer.address)])
    mcp = FastMCP("sdk-upto")

    @mcp.tool(name="summarize", description="Summaries by use (x402 SDK upto paywall)")
    @paid
    async def summarize(text: str) -> str:
        return f"sdk summary of {text}"

    with serve(mcp.streamable_http_app()) as base:
        yield base + "/mcp", pay_to


async def test_a402s_mcp_client_pays_an_sdk_upto_tool_within_its_cap(
        sdk_upto_tool: tuple[str, str], anvil_chain: Chain, dev_stack: Manifest,
        facilitator: Facilitator, new_payer: Callable[..., LocalAccount]) -> None:
    url, pay_to = sdk_upto_tool
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    wallet = Wallet(payer, assets=[dev_stack.token.address])
    fees = balance(anvil_chain, dev_stack, facilitator.signer.address)
    async with mcp_session(url) as session:
        with pytest.raises(PaymentRefused) as capped:
            await PayingMCPSession(session, wallet, max_per_request=MAXIMUM - 1).call_tool(
                "summarize", {"text": "x"})
        answer = await PayingMCPSession(session, wallet, max_per_request=MAXIMUM).call_tool(
            "summarize", {"text": "Brest"})
    assert capped.value.reason == "price_above_maximum"
    assert not answer.result.isError and text_of(answer.result) == "sdk summary of Brest"
    assert answer.paid and answer.payment is not None
    assert answer.payment.status == PaymentStatus.SETTLED
    assert answer.payment.amount == MAXIMUM and answer.payment.charged == MAXIMUM
    assert answer.receipt is not None and answer.receipt.transaction
    assert [balance(anvil_chain, dev_stack, a)
            for a in (payer.address, pay_to, facilitator.signer.address)] == [
        FUNDS - MAXIMUM, MAXIMUM, fees]
