"""x402 ``upto`` for MCP tools, on anvil with real Permit2 signatures, balances asserted.

A tool priced ``upto:MAX/UNIT`` is paid with one Permit2 authorization of the maximum;
the paywall settles what the tool reports having used (``_meta["a402/usage"]`` behind
``a402 mcp serve``, :func:`a402.mcp.report_usage` in-process), capped at the maximum.
Payer, payee and facilitator (its token balance and its sent transactions) are checked.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import CallToolResult

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import Budget
from a402.client.errors import PaymentRefused
from a402.client.records import PaymentStatus
from a402.client.wallet import Wallet
from a402.facilitator.client import FacilitatorClient
from a402.facilitator.core import Facilitator
from a402.mcp import PayingMCPSession, ToolPaywall, ToolPrice, protect, report_usage
from a402.mcp.prices import PriceError, parse_tool_spec
from a402.mcp.proxy import Upstream, proxy_app
from a402.mcp.usage import USAGE_META_KEY
from a402.mcp.wire import PAYMENT_META_KEY, required_of
from tests.facilitator_faults import PendingWithoutAmountOnce
from tests.interop.official_upto import upto_payer
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import balance, mcp_session, text_of
from tests.servers import serve

pytestmark = pytest.mark.anyio

MAXIMUM = 40_000  # 0.04 of the 6-decimal devnet token
UNIT = 100  # 0.0001 per unit used
FUNDS = 1_000_000


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    path = tmp_path / "runs.txt"
    monkeypatch.setenv("WEATHER_RUNS", str(path))
    return lambda: path.read_text().split() if path.exists() else []


@pytest.fixture
def pay_to() -> str:
    return str(Account.create().address)


@pytest.fixture
def proxy_url(dev_stack: Manifest, facilitator_url: str, pay_to: str, tmp_path: Path
              ) -> Iterator[str]:
    """``a402 mcp serve``'s proxy pricing the unchanged upstream's ``summarize`` by use."""
    price = parse_tool_spec("summarize=upto:0.04/0.0001", dev_stack.token.decimals)
    assert (price.amount, price.unit) == (MAXIMUM, UNIT)
    paywall = ToolPaywall([price], pay_to=pay_to, token=dev_stack.token,
                          network=dev_stack.network, facilitator=facilitator_url,
                          ledger=f"sqlite:///{tmp_path / 'ledger.db'}")
    with serve(weather_server.app()) as upstream, \
            serve(proxy_app(Upstream.http(upstream + "/mcp"), paywall)) as base:
        yield base + "/mcp"


@contextlib.contextmanager
def summarize_proxy(dev_stack: Manifest, pay_to: str, facilitator: str | FacilitatorClient,
                    tmp_path: Path) -> Iterator[str]:
    """The upstream's ``summarize`` behind a paywall charging it by use (upto), settling
    through ``facilitator``: its MCP URL."""
    with serve(weather_server.app()) as upstream:
        paywall = ToolPaywall([ToolPrice("summarize", MAXIMUM, "upto", unit=UNIT)],
                              pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
                              facilitator=facilitator, ledger=f"sqlite:///{tmp_path / 'l.db'}")
        with serve(proxy_app(Upstream.http(upstream + "/mcp"), paywall)) as base:
            yield base + "/mcp"


def payer_for(chain: Chain, manifest: Manifest, new_payer: Callable[..., LocalAccount]
              ) -> tuple[LocalAccount, Wallet]:
    payer = upto_payer(chain, manifest, new_payer, FUNDS)
    return payer, Wallet(payer, assets=[manifest.token.address])


def sent(chain: Chain, facilitator: Facilitator) -> int:
    return int(chain.w3.eth.get_transaction_count(facilitator.signer.address))


def money(chain: Chain, manifest: Manifest, facilitator: Facilitator, *who: str) -> list[int]:
    return [balance(chain, manifest, w) for w in (*who, facilitator.signer.address)]


async def test_an_upto_tool_is_offered_as_x402_upto_with_its_maximum(
        proxy_url: str, dev_stack: Manifest, pay_to: str, facilitator: Facilitator) -> None:
    async with mcp_session(proxy_url) as session:
        result = await session.call_tool("summarize", {"text": "x"})
    required = required_of(result)
    assert required is not None and required.error == "payment_required"
    [offer] = required.accepts
    assert (offer.scheme, offer.amount, offer.pay_to) == ("upto", str(MAXIMUM), pay_to)
    assert offer.extra is not None
    assert offer.extra["assetTransferMethod"] == "permit2"
    assert offer.extra["facilitatorAddress"] == facilitator.signer.address
    assert "100 atomic units" in (required.message or "")


async def test_the_tool_is_charged_what_it_used_and_nothing_above_the_maximum(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        facilitator: Facilitator, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    budget = Budget(10 * MAXIMUM)
    fee_before = money(anvil_chain, dev_stack, facilitator)[0]
    async with mcp_session(proxy_url) as session:
        paying = PayingMCPSession(session, wallet, max_per_request=MAXIMUM, budget=budget)

        # 25 units of 100: 2,500 charged, one transaction.
        txs = sent(anvil_chain, facilitator)
        answer = await paying.call_tool("summarize", {"text": "a", "used": "25"})
        assert not answer.result.isError and text_of(answer.result) == "summary of 'a'"
        assert USAGE_META_KEY not in (answer.result.meta or {})  # between tool and paywall
        assert answer.paid and answer.payment is not None
        assert answer.payment.amount == MAXIMUM and answer.payment.charged == 2_500
        assert answer.receipt is not None and answer.receipt.amount == "2500"
        mined = anvil_chain.w3.eth.get_transaction_receipt(answer.receipt.transaction)  # type: ignore[arg-type]
        assert mined["status"] == 1
        assert sent(anvil_chain, facilitator) == txs + 1
        assert money(anvil_chain, dev_stack, facilitator, payer.address, pay_to) == [
            FUNDS - 2_500, 2_500, fee_before]

        # 0 units: settled for nothing, with no transaction at all.
        txs = sent(anvil_chain, facilitator)
        free = await paying.call_tool("summarize", {"text": "b", "used": "0"})
        assert not free.result.isError and free.paid and free.payment is not None
        assert free.payment.status == PaymentStatus.SETTLED and free.payment.charged == 0
        assert free.receipt is not None and free.receipt.transaction == ""
        assert sent(anvil_chain, facilitator) == txs
        assert money(anvil_chain, dev_stack, facilitator, payer.address, pay_to) == [
            FUNDS - 2_500, 2_500, fee_before]

        # Over-reported (a million units): capped at the signed maximum, never above.
        over = await paying.call_tool("summarize", {"text": "c", "used": "1000000"})
        assert not over.result.isError and over.payment is not None
        assert over.payment.charged == MAXIMUM
        # No report at all: the maximum, as the x402 SDKs charge.
        silent = await paying.call_tool("summarize", {"text": "d"})
        assert silent.payment is not None and silent.payment.charged == MAXIMUM
    assert money(anvil_chain, dev_stack, facilitator, payer.address, pay_to) == [
        FUNDS - 2_500 - 2 * MAXIMUM, 2_500 + 2 * MAXIMUM, fee_before]
    # The budget counts what each signature risked: the whole maximum.
    assert budget.remaining(dev_stack.token.address) == 6 * MAXIMUM
    assert runs() == ["summarize"] * 4


@pytest.mark.parametrize("report", ['"lots"', "-1", "2.5", "true", json.dumps(str(2**256))])
async def test_an_unreadable_usage_report_withholds_the_output_and_charges_nothing(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        facilitator: Facilitator, new_payer: Callable[..., LocalAccount], report: str) -> None:
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    txs = sent(anvil_chain, facilitator)
    async with mcp_session(proxy_url) as session:
        answer = await PayingMCPSession(session, wallet, max_per_request=MAXIMUM).call_tool(
            "summarize", {"text": "secret", "used": report})
    assert answer.result.isError and "secret" not in text_of(answer.result)
    assert answer.result.structuredContent is not None
    assert answer.result.structuredContent["error"] == "usage_unreadable"
    assert answer.payment is not None and not answer.paid
    assert answer.payment.status == PaymentStatus.UNCONFIRMED
    assert sent(anvil_chain, facilitator) == txs
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [FUNDS, 0]


async def test_one_upto_authorization_buys_one_call_and_a_replay_is_refused(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        facilitator: Facilitator, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    async with mcp_session(proxy_url) as session:
        paying = PayingMCPSession(session, wallet, max_per_request=MAXIMUM)
        answer = await paying.call_tool("summarize", {"text": "a", "used": "7"})
        assert answer.paid and answer.payment is not None and answer.payment.charged == 700
        payload = json.loads(answer.payment.header_value)
        # The same authorization for another call (more units): refused, nothing runs.
        replay = await session.call_tool("summarize", {"text": "a", "used": "300"},
                                         meta={PAYMENT_META_KEY: payload})
        refused = required_of(replay)
        assert refused is not None and refused.error == "payment_already_used"
        # The identical resend: the kept result again, not run, not charged again.
        again = await session.call_tool("summarize", {"text": "a", "used": "7"},
                                        meta={PAYMENT_META_KEY: payload})
        assert not again.isError and text_of(again) == "summary of 'a'"
    assert runs() == ["summarize"]
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [
        FUNDS - 700, 700]


async def test_the_client_pays_upto_only_within_its_cap_and_in_a_named_token(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    async with mcp_session(proxy_url) as session:
        stingy = PayingMCPSession(session, wallet, max_per_request=MAXIMUM - 1)
        with pytest.raises(PaymentRefused) as capped:
            await stingy.call_tool("summarize", {"text": "a", "used": "1"})
        anywhere = PayingMCPSession(session, payer, max_per_request=MAXIMUM)  # no assets named
        with pytest.raises(PaymentRefused) as unnamed:
            await anywhere.call_tool("summarize", {"text": "a", "used": "1"})
    assert capped.value.reason == "price_above_maximum"
    assert unnamed.value.reason == "no_acceptable_requirement"
    assert "name the tokens to pay upto in" in str(unnamed.value)
    assert stingy.payments == [] and anywhere.payments == [] and runs() == []
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [FUNDS, 0]


async def test_protect_reads_the_usage_a_tool_reports_while_it_runs(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        facilitator: Facilitator, new_payer: Callable[..., LocalAccount]) -> None:
    pay_to = str(Account.create().address)
    mcp = FastMCP("metered")

    @mcp.tool()
    def count_words(text: str) -> str:
        """Counts words; billed per word."""
        for _ in text.split():
            report_usage(1)
        return str(len(text.split()))

    paywall = ToolPaywall([ToolPrice("count_words", MAXIMUM, "upto", unit=UNIT)],
                          pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
                          facilitator=facilitator_url)
    protect(mcp, paywall)
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    with serve(mcp.streamable_http_app()) as base:
        async with mcp_session(base + "/mcp") as session:
            answer = await PayingMCPSession(session, wallet, max_per_request=MAXIMUM
                                            ).call_tool("count_words", {"text": "one two three"})
    assert text_of(answer.result) == "3" and answer.payment is not None
    assert answer.payment.charged == 3 * UNIT
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [
        FUNDS - 3 * UNIT, 3 * UNIT]
    [line] = paywall.observer.recent
    assert (line["outcome"], line["amount"], line["scheme"]) == ("settled", "300", "upto")
    report_usage(5)  # outside a paid call: nothing to report to, nothing happens


@pytest.mark.parametrize("spec, error", [
    ("t=exact:0.01/0.001", "for 'upto' prices only"),
    ("t=upto:0.01/0.02", "exceeds the maximum"),
    ("t=upto:0.01/0", "positive"),
    ("t=a402:0.01/0.001", "for 'upto' prices only"),
    ("t=batch:0.01", "unknown scheme"),
])
def test_bad_upto_prices_are_refused_with_a_reason(spec: str, error: str) -> None:
    with pytest.raises(PriceError, match=error):
        parse_tool_spec(spec, 6)


def test_the_charge_is_units_times_the_unit_price_capped_at_the_maximum() -> None:
    price: Any = parse_tool_spec("t=upto:0.04/0.0001", 6)
    assert [price.charge(u) for u in (0, 1, 399, 400, 401, 10**30)] == [
        0, 100, 39_900, 40_000, 40_000, 40_000]
    assert parse_tool_spec("t=upto:0.04", 6).charge(123) == 123  # units are atomic units


async def test_a_lost_settle_answer_is_resumed_for_the_amount_recorded_before_it(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        facilitator: Facilitator, pay_to: str, tmp_path: Path,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    """The first ``/settle`` moves the money and its answer is lost: the charge noted in
    the ledger before it is what the resend settles (the facilitator's journal answers
    that one settlement), the output held for it is delivered, the tool ran once."""
    from tests.paid_mcp.test_mcp_serve import _settle_fails_first

    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    front = _settle_fails_first(facilitator_url)
    txs = sent(anvil_chain, facilitator)
    with serve(front) as flaky, summarize_proxy(dev_stack, pay_to, flaky, tmp_path) as url:
        async with mcp_session(url) as session:
            answer = await PayingMCPSession(
                session, wallet, max_per_request=MAXIMUM, retry_delay=0.1
            ).call_tool("summarize", {"text": "a", "used": "12"})
    assert front.state.settles[0] == 200 and len(front.state.settles) == 2
    assert not answer.result.isError and text_of(answer.result) == "summary of 'a'"
    assert answer.paid and answer.payment is not None and answer.payment.charged == 1_200
    assert sent(anvil_chain, facilitator) == txs + 1
    assert runs() == ["summarize"]
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [
        FUNDS - 1_200, 1_200]


async def test_a_resumed_payment_buys_only_the_call_it_was_charged_for(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        facilitator: Facilitator, pay_to: str, tmp_path: Path,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    """A lost settle answer leaves the payment pending with the charge of the call it was
    first sent with (12 units). Resending the same payment with other arguments (a call
    that uses 400 units) must not buy that other call for the first one's charge: it is
    refused, nothing runs, nothing more is charged; the identical resend gets its output."""
    from a402.mcp.client import MCPPaymentUnresolved
    from tests.paid_mcp.test_mcp_serve import _settle_fails_first

    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    front = _settle_fails_first(facilitator_url)
    with serve(front) as flaky, summarize_proxy(dev_stack, pay_to, flaky, tmp_path) as url:
        async with mcp_session(url) as session:
            paying = PayingMCPSession(session, wallet, max_per_request=MAXIMUM,
                                      retries=0, retry_delay=0.1)
            with pytest.raises(MCPPaymentUnresolved):  # the settle answer was lost
                await paying.call_tool("summarize", {"text": "small", "used": "12"})
            [payment] = paying.payments
            payload = json.loads(payment.header_value)
            other = await session.call_tool("summarize", {"text": "big", "used": "400"},
                                            meta={PAYMENT_META_KEY: payload})
            assert "summary of 'big'" not in text_of(other)
            assert runs() == ["summarize"]
            same = await session.call_tool("summarize", {"text": "small", "used": "12"},
                                           meta={PAYMENT_META_KEY: payload})
    assert "summary of 'big'" not in text_of(other)
    refused = required_of(other)
    assert refused is not None and refused.error == "payment_terms_mismatch"
    assert "1200" in (refused.message or "")
    assert not same.isError and text_of(same) == "summary of 'small'"
    assert runs() == ["summarize"]
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [
        FUNDS - 1_200, 1_200]


@pytest.mark.parametrize("amount", ["²", "٣", "1" * 100])
async def test_a_receipt_with_an_unreadable_amount_leaves_the_payment_unconfirmed(
        dev_stack: Manifest, amount: str) -> None:
    """A server's upto receipt whose amount is not ASCII digits ('²' passes str.isdigit()
    but not int()): the client says the charge is unconfirmed, rather than raising after
    it paid (or reading another script's digits as a charge)."""
    from a402.mcp.wire import payment_required_result
    from a402.wire.x402 import PaymentRequired, PaymentRequirements

    pay_to, payer = str(Account.create().address), Account.create()
    liar = FastMCP("liar")

    @liar.tool()
    def summarize(text: str, ctx: Context) -> CallToolResult:  # type: ignore[type-arg]
        """Asks for upto, then answers with a receipt whose amount is unreadable."""
        meta = ctx.request_context.meta
        if meta is None or PAYMENT_META_KEY not in (meta.model_extra or {}):
            return payment_required_result(PaymentRequired(error="payment_required", accepts=[
                PaymentRequirements(
                    scheme="upto", network=dev_stack.network, amount=str(MAXIMUM),
                    asset=dev_stack.token.address, pay_to=pay_to, max_timeout_seconds=60,
                    extra={**dev_stack.token.eip712_extra(), "assetTransferMethod": "permit2",
                           "facilitatorAddress": pay_to})]))
        return CallToolResult.model_validate({
            "content": [{"type": "text", "text": "ok"}],
            "_meta": {"x402/payment-response": {
                "success": True, "transaction": "0x" + "ab" * 32,
                "network": dev_stack.network, "payer": payer.address, "amount": amount}}})

    with serve(liar.streamable_http_app()) as base:
        async with mcp_session(base + "/mcp") as session:
            answer = await PayingMCPSession(
                session, Wallet(payer, assets=[dev_stack.token.address]),
                max_per_request=MAXIMUM).call_tool("summarize", {"text": "x"})
    assert answer.payment is not None and not answer.paid
    assert answer.payment.status == PaymentStatus.UNCONFIRMED
    assert answer.payment.reason == "receipt_without_amount"
    assert answer.payment.charged is None


async def test_a_pending_upto_settle_without_an_amount_is_resumed_for_the_recorded_charge(
        anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
        facilitator: Facilitator, pay_to: str, tmp_path: Path,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    """The MCP twin of ``tests/provider/test_upto_pending_amount.py``: the facilitator
    settles (mined) but first answers ``settlement_pending`` without ``amount`` (optional
    in x402). The pending entry must keep the charge noted before ``/settle``; before,
    the answer replaced it, the payer's resend was refused (``payment_terms_mismatch``)
    while its money had moved, and the output it paid for never reached it. Now the
    resend is settled again for exactly that charge and gets the output held for it."""
    payer, wallet = payer_for(anvil_chain, dev_stack, new_payer)
    client = PendingWithoutAmountOnce(facilitator_url)
    txs = sent(anvil_chain, facilitator)
    with summarize_proxy(dev_stack, pay_to, client, tmp_path) as url:
        async with mcp_session(url) as session:
            answer = await PayingMCPSession(
                session, wallet, max_per_request=MAXIMUM, retry_delay=0.1
            ).call_tool("summarize", {"text": "a", "used": "12"})
    assert client.settles == ["1200", "1200"]  # the resend asked the recorded charge again
    assert not answer.result.isError, answer.result
    assert text_of(answer.result) == "summary of 'a'"
    assert answer.paid and answer.payment is not None and answer.payment.charged == 1_200
    assert answer.receipt is not None and answer.receipt.amount == "1200"
    assert sent(anvil_chain, facilitator) == txs + 1
    assert runs() == ["summarize"]  # the output held for the payment, not a second run
    assert [balance(anvil_chain, dev_stack, a) for a in (payer.address, pay_to)] == [
        FUNDS - 1_200, 1_200]
