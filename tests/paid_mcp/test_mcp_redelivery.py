"""A paid tool's result lost after settling is sent again for the same payment, once paid.

The paywall (transport-free, as the MCP server helper and the proxy call it) settles a
call on anvil through a402's facilitator; the result is then lost on the way (the test
drops it, as a cut connection would). The payer resends the same payment for the same
call and gets the result the payment bought, with its receipt, from the replay ledger:
the tool does not run again and nothing is settled again, also at another replica
sharing the PostgreSQL ledger. Another call with the payment buys nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import types

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.wallet import Wallet
from a402.mcp import ToolPaywall
from a402.mcp.wire import PAYMENT_META_KEY, receipt_of
from a402.provider.deliveries import MAX_KEPT_BODY, RESPONSE_NOT_KEPT
from tests.paid_mcp.helpers import PRICE, PRICE_TEXT, balance
from tests.paid_mcp.test_mcp_serve import _settle_fails_first

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pay_to() -> str:
    """A fresh payee, so balance assertions are exact."""
    return str(Account.create().address)


class Tools:
    """Tools that count their runs: a forecast, and one whose answer is too big to keep."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def forecast(self, city: str) -> Callable[[], Any]:
        async def run() -> types.CallToolResult:
            self.runs.append(f"forecast:{city}")
            return types.CallToolResult(content=[types.TextContent(
                type="text", text=f"sunny in {city}, run {len(self.runs)}")])
        return run

    def atlas(self) -> Callable[[], Any]:
        async def run() -> types.CallToolResult:
            self.runs.append("atlas")
            return types.CallToolResult(content=[types.TextContent(
                type="text", text="m" * (MAX_KEPT_BODY + 1))])
        return run


def _paywall(manifest: Manifest, pay_to: str, facilitator: str, ledger: str) -> ToolPaywall:
    return ToolPaywall({"forecast": PRICE_TEXT, "atlas": PRICE_TEXT}, pay_to=pay_to,
                       token=manifest.token, network=manifest.network,
                       facilitator=facilitator, ledger=ledger)


def _meta(paywall: ToolPaywall, tool: str, payer: LocalAccount) -> dict[str, Any]:
    required = paywall.payment_required(tool, "payment_required", "")
    payload = Wallet(payer).sign(required.accepts[0], resource=required.resource, valid_for=60)
    return {PAYMENT_META_KEY: payload.to_wire()}


def _text(result: types.CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def test_a_result_lost_after_settling_is_sent_again_at_another_replica_paid_once(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
        new_payer: Callable[..., LocalAccount], postgres_url: str) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    tools = Tools()
    one, two = (_paywall(dev_stack, pay_to, facilitator_url, postgres_url) for _ in range(2))
    try:
        meta = _meta(one, "forecast", payer)
        args = {"city": "Paris"}
        lost = await one.call("forecast", meta, tools.forecast("Paris"), arguments=args)
        again = await two.call("forecast", meta, tools.forecast("Paris"), arguments=args)
        other_args = await two.call("forecast", meta, tools.forecast("Oslo"),
                                    arguments={"city": "Oslo"})
        other_tool = await one.call("atlas", meta, tools.atlas(), arguments=args)
    finally:
        await one.aclose()
        await two.aclose()
    assert not lost.isError  # the paywall answered; the answer never reached the payer
    assert not again.isError and _text(again) == _text(lost) == "sunny in Paris, run 1"
    receipt = receipt_of(again)
    assert receipt is not None and receipt.success
    assert receipt.transaction == receipt_of(lost).transaction  # type: ignore[union-attr]
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)  # type: ignore[arg-type]
    assert mined["status"] == 1
    for refused in (other_args, other_tool):
        assert refused.isError and refused.structuredContent is not None
        assert refused.structuredContent["error"] in ("payment_already_used",
                                                      "payment_terms_mismatch")
        assert "sunny" not in _text(refused)
    assert tools.runs == ["forecast:Paris"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_an_oversized_result_is_not_kept_and_the_resend_hears_it_was_paid_and_settled(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
        new_payer: Callable[..., LocalAccount], tmp_path: Path) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    tools = Tools()
    paywall = _paywall(dev_stack, pay_to, facilitator_url, f"sqlite:///{tmp_path}/l.db")
    try:
        meta = _meta(paywall, "atlas", payer)
        lost = await paywall.call("atlas", meta, tools.atlas(), arguments={})
        again = await paywall.call("atlas", meta, tools.atlas(), arguments={})
    finally:
        await paywall.aclose()
    assert not lost.isError
    assert again.isError and again.structuredContent is not None
    assert again.structuredContent["error"] == RESPONSE_NOT_KEPT
    message = again.structuredContent["message"]
    assert "paid and settled" in message and "not kept" in message
    receipt = receipt_of(again)
    assert receipt is not None and receipt.success
    assert receipt.transaction == receipt_of(lost).transaction  # type: ignore[union-attr]
    assert tools.runs == ["atlas"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_the_output_held_for_a_pending_payment_is_delivered_by_another_replica(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
        new_payer: Callable[..., LocalAccount], postgres_url: str) -> None:
    """The settle answer is lost at the first replica (the money moved): the output it
    computed is kept in the shared ledger, and the second replica, resuming the same
    payment, delivers that output instead of running the tool again."""
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    tools = Tools()
    front = _settle_fails_first(facilitator_url)
    with serve_in_thread(front) as flaky:
        one = _paywall(dev_stack, pay_to, flaky, postgres_url)
        two = _paywall(dev_stack, pay_to, facilitator_url, postgres_url)
        try:
            meta = _meta(one, "forecast", payer)
            args = {"city": "Turin"}
            pending = await one.call("forecast", meta, tools.forecast("Turin"), arguments=args)
            done = await two.call("forecast", meta, tools.forecast("Turin"), arguments=args)
        finally:
            await one.aclose()
            await two.aclose()
    assert pending.isError and pending.structuredContent is not None
    assert pending.structuredContent["error"] == "facilitator_unavailable"
    assert not done.isError and _text(done) == "sunny in Turin, run 1"
    receipt = receipt_of(done)
    assert receipt is not None and receipt.success
    assert front.state.settles == [200]
    assert tools.runs == ["forecast:Turin"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
