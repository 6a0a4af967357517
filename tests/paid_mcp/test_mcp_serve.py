"""``a402 mcp serve``'s proxy in front of an ordinary MCP server, on anvil, balances asserted.

The upstream (``weather_server``) knows nothing of payments. The proxy prices two of its
tools; every paid call settles through a402's facilitator on anvil exactly once, after
the upstream succeeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import Budget
from a402.client.audit import audit
from a402.client.errors import PaymentRefused
from a402.client.mandate_command import stored_mandates
from a402.client.records import PaymentStatus
from a402.client.wallet import Wallet
from a402.crypto import EcdsaSigner
from a402.exact.replay import LedgerState, PaymentKey
from a402.facilitator.client import FacilitatorClient
from a402.mandate import Domain, Mandate, MandateGuard, sign_mandate
from a402.mandate.evidence import EvidenceLog
from a402.mandate.registry import RevocationCheck
from a402.mandate.spend import SpendStore
from a402.mcp import MCPPaymentUnresolved, PayingMCPSession, ToolPaywall
from a402.mcp.proxy import Upstream, proxy_app
from a402.mcp.wire import PAYMENT_META_KEY, PAYMENT_RESPONSE_META_KEY, required_of
from a402.provider.ledger import SqlLedger
from tests.facilitator_faults import AnswerLostToAnErrorOnce
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import PRICE, PRICE_TEXT, balance, mcp_session, text_of
from tests.servers import dead_url, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """How often each upstream tool really ran (the upstream appends to this file)."""
    path = tmp_path / "runs.txt"
    monkeypatch.setenv("WEATHER_RUNS", str(path))
    return lambda: path.read_text().split() if path.exists() else []


@pytest.fixture
def upstream_url() -> Iterator[str]:
    with serve(weather_server.app()) as base:
        yield base + "/mcp"


@pytest.fixture
def pay_to() -> str:
    return str(Account.create().address)


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mcp-ledger.db'}"


def paywall(manifest: Manifest, pay_to: str, facilitator: str | FacilitatorClient, ledger: str
            ) -> ToolPaywall:
    return ToolPaywall({"forecast": PRICE_TEXT, "broken": PRICE_TEXT}, pay_to=pay_to,
                       token=manifest.token, network=manifest.network,
                       facilitator=facilitator, ledger=ledger)


@pytest.fixture
def proxy_url(upstream_url: str, dev_stack: Manifest, facilitator_url: str, pay_to: str,
              ledger_url: str) -> Iterator[str]:
    app = proxy_app(Upstream.http(upstream_url),
                    paywall(dev_stack, pay_to, facilitator_url, ledger_url))
    with serve(app) as base:
        yield base + "/mcp"


def paying(session: Any, payer: LocalAccount, **kwargs: Any) -> PayingMCPSession:
    kwargs.setdefault("max_per_request", 10 * PRICE)
    return PayingMCPSession(session, payer, **kwargs)


async def test_an_unpaid_call_of_a_priced_tool_gets_the_x402_offer_and_the_tool_never_runs(
        proxy_url: str, dev_stack: Manifest, pay_to: str,
        runs: Callable[[], list[str]]) -> None:
    async with mcp_session(proxy_url) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("forecast", {"city": "Paris"})
        free = await session.call_tool("echo", {"text": "hello"})
    assert tools == {"forecast", "broken", "echo", "sneaky", "forged", "summarize"}
    assert result.isError
    offer = result.structuredContent
    assert offer is not None and offer["x402Version"] == 2
    assert offer["error"] == "payment_required"
    assert offer["resource"]["url"] == "mcp://tool/forecast"
    [accept] = offer["accepts"]
    assert (accept["scheme"], accept["amount"], accept["payTo"], accept["network"]) == (
        "exact", str(PRICE), pay_to, dev_stack.network)
    assert json.loads(text_of(result)) == offer  # the SDK's fallback reads the text
    assert not free.isError and text_of(free) == "hello"
    assert runs() == ["echo"]


async def test_a_paid_call_settles_once_and_moves_exactly_the_price(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]],
        ledger_url: str) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    budget = Budget(5 * PRICE)
    async with mcp_session(proxy_url) as session:
        answer = await paying(session, payer, budget=budget).call_tool(
            "forecast", {"city": "Paris"})
    assert not answer.result.isError
    assert text_of(answer.result) == "sunny in Paris, 21 C"
    assert answer.paid and answer.payment is not None
    assert answer.payment.status == PaymentStatus.SETTLED
    receipt = answer.receipt
    assert receipt is not None and receipt.success and receipt.payer == payer.address
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)  # type: ignore[arg-type]
    assert mined["status"] == 1
    assert answer.result.meta is not None and PAYMENT_RESPONSE_META_KEY in answer.result.meta
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
    assert budget.remaining(dev_stack.token.address) == 4 * PRICE
    assert runs() == ["forecast"]
    key = PaymentKey.of(dev_stack.network, dev_stack.token.address, payer.address,
                        answer.payment.nonce)
    ledger = SqlLedger(ledger_url)
    try:
        assert ledger.state_of(key) == LedgerState.SETTLED
    finally:
        ledger.close()


async def test_a_replayed_payment_buys_nothing_more(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(proxy_url) as session:
        answer = await paying(session, payer).call_tool("forecast", {"city": "Paris"})
        assert answer.paid and answer.payment is not None
        payload = json.loads(answer.payment.header_value)
        again = await session.call_tool("forecast", {"city": "Oslo"},
                                        meta={PAYMENT_META_KEY: payload})
        elsewhere = await session.call_tool("broken", {"city": "Oslo"},
                                            meta={PAYMENT_META_KEY: payload})
    assert again.isError and again.structuredContent is not None
    assert again.structuredContent["error"] == "payment_already_used"
    # Offered at the same price, the same authorization for another tool is refused too.
    assert elsewhere.isError and elsewhere.structuredContent is not None
    assert elsewhere.structuredContent["error"] in ("payment_already_used",
                                                    "payment_terms_mismatch")
    assert runs() == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a_tool_the_upstream_fails_is_not_charged(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]],
        ledger_url: str) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(proxy_url) as session:
        answer = await paying(session, payer).call_tool("broken", {"city": "Paris"})
    assert answer.result.isError
    assert "down" in text_of(answer.result)
    assert answer.payment is not None and not answer.paid
    assert answer.payment.status == PaymentStatus.UNCONFIRMED
    assert answer.payment.reason == "tool_error_not_charged"
    assert answer.receipt is None
    assert runs() == ["broken"]
    assert balance(anvil_chain, dev_stack, payer.address) == before
    assert balance(anvil_chain, dev_stack, pay_to) == 0
    key = PaymentKey.of(dev_stack.network, dev_stack.token.address, payer.address,
                        answer.payment.nonce)
    ledger = SqlLedger(ledger_url)
    try:
        assert ledger.state_of(key) is None  # released: nothing moved, nothing owed
    finally:
        ledger.close()


async def test_the_client_refuses_a_price_above_its_maximum_and_signs_nothing(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(proxy_url) as session:
        client = paying(session, payer, max_per_request=PRICE - 1)
        with pytest.raises(PaymentRefused) as refused:
            await client.call_tool("forecast", {"city": "Paris"})
        assert client.payments == []
        budgeted = paying(session, payer, budget=Budget(PRICE - 1))
        with pytest.raises(PaymentRefused) as over_budget:
            await budgeted.call_tool("forecast", {"city": "Paris"})
    assert refused.value.reason == "price_above_maximum"
    assert over_budget.value.reason == "budget_exhausted"
    assert runs() == []
    assert balance(anvil_chain, dev_stack, payer.address) == before


async def test_no_facilitator_means_no_tool_run_and_no_charge(
        upstream_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        ledger_url: str, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    app = proxy_app(Upstream.http(upstream_url),
                    paywall(dev_stack, pay_to, dead_url(), ledger_url))
    with serve(app) as base:
        async with mcp_session(base + "/mcp") as session:
            with pytest.raises(MCPPaymentUnresolved) as unresolved:
                await paying(session, payer, retries=1, retry_delay=0.05).call_tool(
                    "forecast", {"city": "Paris"})
    # "Resend the same payment" after every retry: kept for the next call, never re-signed
    # (the client cannot tell a /verify from a /settle that went unanswered).
    assert unresolved.value.payment.status == PaymentStatus.UNKNOWN
    assert unresolved.value.payment.reason == "facilitator_unavailable"
    assert runs() == []
    assert balance(anvil_chain, dev_stack, payer.address) == before


# ------------------------------------------------------------------ hostile input


async def test_hostile_bodies_get_clear_refusals_and_the_proxy_keeps_serving(
        proxy_url: str) -> None:
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json"}
    deep = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + b"[" * 5000 \
        + b"]" * 5000 + b"}"
    huge = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (2 << 20) \
        + b'"}}'
    long_number = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + b"9" * 5000 \
        + b"}}"
    async with httpx.AsyncClient(timeout=30) as http:
        too_deep = await http.post(proxy_url, content=deep, headers=headers)
        too_large = await http.post(proxy_url, content=huge, headers=headers)
        too_long = await http.post(proxy_url, content=long_number, headers=headers)
        garbage = await http.post(proxy_url, content=b"\xff\xfe{{{", headers=headers)
    assert (too_deep.status_code, too_deep.json()["error"]) == (400, "json_too_deep")
    assert (too_large.status_code, too_large.json()["error"]) == (413, "request_too_large")
    assert (too_long.status_code, too_long.json()["error"]) == (400, "json_number_too_long")
    assert 400 <= garbage.status_code < 500
    async with mcp_session(proxy_url) as session:  # still serving
        assert not (await session.call_tool("echo", {"text": "ok"})).isError


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("meta", "reason"), [
    (_nested(40), "json_too_deep"),
    ("x" * 100_000, "request_too_large"),
    ({"x402Version": 2, "accepted": {"amount": 10**80}, "payload": {}}, "invalid_payload"),
    (12, "malformed_payment"),
    ("{not json", "malformed_payment"),
    ({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}},
     "invalid_x402_version"),
    ({"x402Version": 2, "accepted": {"scheme": "exact"}, "payload": {}}, "invalid_payload"),
])
async def test_a_malformed_payment_in_meta_is_refused_with_its_reason_and_runs_nothing(
        proxy_url: str, runs: Callable[[], list[str]], meta: Any, reason: str) -> None:
    async with mcp_session(proxy_url) as session:
        result = await session.call_tool("forecast", {"city": "Paris"},
                                         meta={PAYMENT_META_KEY: meta})
        assert not (await session.call_tool("echo", {"text": "ok"})).isError
    assert result.isError and result.structuredContent is not None
    assert result.structuredContent["error"] == reason, result.structuredContent
    assert result.structuredContent["accepts"]  # a fresh offer comes with the refusal
    assert runs() == ["echo"]


async def test_one_payment_sent_to_two_replicas_at_once_buys_one_call(
        upstream_url: str, postgres_url: str, anvil_chain: Chain, dev_stack: Manifest,
        pay_to: str, facilitator_url: str, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    """Two proxies (as two processes: each its own ledger connection) share one PostgreSQL
    ledger; the same signed payment raced to both buys exactly one tool call."""
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    replicas = [proxy_app(Upstream.http(upstream_url),
                          paywall(dev_stack, pay_to, facilitator_url, postgres_url))
                for _ in range(2)]
    with serve(replicas[0]) as first, serve(replicas[1]) as second:
        async with mcp_session(first + "/mcp") as one, mcp_session(second + "/mcp") as two:
            probe = await one.call_tool("forecast", {"city": "Bern"})
            required = required_of(probe)
            assert required is not None
            payload = Wallet(payer).sign(required.accepts[0], resource=required.resource,
                                         valid_for=60)
            meta = {PAYMENT_META_KEY: payload.to_wire()}
            results = await asyncio.gather(
                one.call_tool("forecast", {"city": "Bern"}, meta=meta),
                two.call_tool("forecast", {"city": "Bern"}, meta=meta))
    served = [r for r in results if not r.isError]
    refused = [r for r in results if r.isError]
    assert len(served) == 1 and len(refused) == 1
    assert refused[0].structuredContent is not None
    assert refused[0].structuredContent["error"] in ("payment_in_use", "payment_already_used")
    assert runs() == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


def _guard(payer: LocalAccount, manifest: Manifest, chain: Chain, store: SpendStore,
           cap: int) -> MandateGuard:
    owner = Account.create()
    now = int(time.time())
    mandate = Mandate(owner=owner.address, agent=payer.address, max_per_payment=cap,
                      budget=10 * PRICE, valid_after=now - 60, valid_before=now + 3600,
                      nonce=os.urandom(32), networks=(manifest.network,),
                      assets=(manifest.token.address,), schemes=("exact",))
    domain = Domain(manifest.chain_id, manifest.contracts["MandateRegistry"])
    signed = sign_mandate(mandate, domain, EcdsaSigner(bytes(owner.key)).sign_digest)
    return MandateGuard(signed, agent=payer.address, store=store,
                        revocation=RevocationCheck.for_mandate(chain, signed))


async def test_under_an_owners_mandate_the_client_pays_inside_it_and_records_the_call(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]],
        tmp_path: Path) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    store = SpendStore(f"sqlite:///{tmp_path}/spend.db")
    narrow = _guard(payer, dev_stack, anvil_chain, store, cap=PRICE - 1)
    wide = _guard(payer, dev_stack, anvil_chain, store, cap=PRICE)
    async with mcp_session(proxy_url) as session:
        with pytest.raises(PaymentRefused) as refused:
            await PayingMCPSession(session, payer, mandate=narrow).call_tool(
                "forecast", {"city": "Paris"})
        answer = await PayingMCPSession(session, payer, mandate=wide).call_tool(
            "forecast", {"city": "Paris"})
    assert refused.value.reason == "mandate_cap_exceeded"
    assert "nothing was signed" in str(refused.value)
    assert store.spent(narrow.signed_mandate).total == 0
    assert answer.paid and answer.receipt is not None
    assert store.spent(wide.signed_mandate).total == PRICE
    assert runs() == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE
    wide.flush()  # the outcome is written with the next payment's commit, or now
    lines = audit(EvidenceLog(store.engine).rows(), stored_mandates(store.engine))
    assert [line.problems for line in lines] == [[], []]
    line, outcome = lines
    assert line.record["mandate"] == wide.mandate_hash
    assert line.record["request"]["tool"] == "forecast"
    assert line.record["request"]["url"] == "mcp://tool/forecast"
    assert line.record["status"] == "sending"  # committed before the payload left
    assert outcome.record["kind"] == "outcome" and outcome.record["of"] == line.seq
    assert outcome.record["settlement"]["transaction"] == answer.receipt.transaction
    assert outcome.record["status"] == "settled"
    store.close()


def _settle_fails_first(facilitator: str) -> Any:
    """A facilitator front that forwards everything to ``facilitator`` except the first
    ``/settle``, which it forwards too and then answers 503: the money moved, the answer
    was lost (what a crash or a cut connection after settling looks like)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    settles: list[int] = []

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=60) as http:
            upstream = await http.request(request.method, facilitator + request.url.path,
                                          content=await request.body(),
                                          headers={"content-type": "application/json"})
        if request.url.path == "/settle":
            settles.append(upstream.status_code)
            if len(settles) == 1:
                return Response(b'{"error":"facilitator_error"}', status_code=503,
                                media_type="application/json")
        return Response(upstream.content, status_code=upstream.status_code,
                        media_type="application/json")

    app = Starlette(routes=[Route(p, forward, methods=["GET", "POST"])
                            for p in ("/verify", "/settle", "/supported")])
    app.state.settles = settles
    return app


async def test_a_lost_settle_answer_is_resolved_by_resending_the_same_payment_paid_once(
        upstream_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        facilitator_url: str, ledger_url: str, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    front = _settle_fails_first(facilitator_url)
    with serve(front) as flaky:
        app = proxy_app(Upstream.http(upstream_url),
                        paywall(dev_stack, pay_to, flaky, ledger_url))
        with serve(app) as base:
            async with mcp_session(base + "/mcp") as session:
                client = paying(session, payer, retries=2, retry_delay=0.1)
                answer = await client.call_tool("forecast", {"city": "Turin"})
    assert answer.paid and text_of(answer.result) == "sunny in Turin, 21 C"
    assert len(client.payments) == 1  # the same payload was resent, never a second one
    assert front.state.settles == [200, 200]  # settled on the first try, answered on the 2nd
    assert runs() == ["forecast"]  # the output computed for the payment was held, not rerun
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_a_settle_answer_lost_to_an_unexpected_error_is_resolved_by_resending_it(
        upstream_url: str, anvil_chain: Chain, dev_stack: Manifest, pay_to: str,
        facilitator_url: str, ledger_url: str, new_payer: Callable[..., LocalAccount],
        runs: Callable[[], list[str]]) -> None:
    """The money moved, then the settle call failed with an error that is no facilitator
    error. Before, that error escaped the paywall (the payer got the SDK's bare tool
    error, not told its payment may have settled); now the payer is asked to resend the
    same payment, which gets the output held for it, charged once, the tool run once."""
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    lost = AnswerLostToAnErrorOnce(facilitator_url)
    app = proxy_app(Upstream.http(upstream_url), paywall(dev_stack, pay_to, lost, ledger_url))
    with serve(app) as base:
        async with mcp_session(base + "/mcp") as session:
            client = paying(session, payer, retries=2, retry_delay=0.1)
            answer = await client.call_tool("forecast", {"city": "Turin"})
    assert answer.paid and text_of(answer.result) == "sunny in Turin, 21 C"
    assert len(client.payments) == 1  # the same payload was resent, never a second one
    assert lost.settles == [str(PRICE)] * 2
    assert runs() == ["forecast"]  # the output computed for the payment was held, not rerun
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_only_the_paywall_speaks_for_payments_not_the_upstream(
        proxy_url: str, anvil_chain: Chain, dev_stack: Manifest,
        new_payer: Callable[..., LocalAccount], runs: Callable[[], list[str]]) -> None:
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    async with mcp_session(proxy_url) as session:
        client = paying(session, payer)
        sneaky = await client.call_tool("sneaky", {"city": "Paris"})
        forged = await client.call_tool("forged", {"city": "Paris"})
    # The upstream's own "offer" is not passed on as one: nothing is signed for it.
    assert sneaky.payment is None and client.payments == []
    assert sneaky.result.isError and sneaky.result.structuredContent is not None
    assert sneaky.result.structuredContent["error"] == "upstream_asked_for_payment"
    # Its forged receipt is dropped; the rest of its meta is kept.
    assert forged.payment is None and not forged.paid
    assert text_of(forged.result) == "cloudy in Paris"
    assert forged.result.meta == {"kept": 1}
    assert runs() == ["sneaky", "forged"]
    assert balance(anvil_chain, dev_stack, payer.address) == before
