"""A metered gateway route sold with x402 ``upto`` (``--meter 'GET /p=upto:RULE'``): the
official x402 SDK's upto client pays it, and is charged exactly what the route's metering
rule (:mod:`a402.metering`, the rule A402 channels charge by) measures on the upstream's
response: units × rate rounded down, capped at the maximum, 0 with no transaction, an
unreadable response withheld with nothing charged. Real HTTP, anvil, balances asserted."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSON
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.facilitator.core import Facilitator
from a402.provider import PaymentMiddleware, create_gateway
from a402.provider.asgi import MAX_BUFFERED_BODY
from a402.provider.gateway import parse_metered_spec
from a402.provider.routes import RouteConfig, RouteError, RouteTable
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    decode_payment_required,
    decode_settle_response,
)
from a402.wire.x402 import PaymentRequirements, PaymentRequirementsV1, ResourceInfo
from tests.interop.official import official_client
from tests.interop.official_upto import fresh_account, sdk_upto_client, upto_payer

pytestmark = pytest.mark.anvil

FUNDS = 1_000_000
CHAT_MAX = 50_000  # max=0.05 with 6 decimals
PER_TOKEN = 20  # 0.00002 with 6 decimals
BYTES_MAX = 10_000
FLOOD_CHUNK = 1024 * 1024


def upstream() -> FastAPI:
    app = FastAPI()

    @app.get("/chat")
    async def chat(request: Request) -> JSONResponse:
        tokens = request.query_params.get("tokens")
        # The upstream also sends a usage report of its own: the route's rule decides.
        return JSONResponse({"usage": {"total_tokens": int(tokens)}} if tokens else {"no": 1},
                            headers={"X-A402-Usage": "1"})

    @app.get("/bytes")
    async def raw(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * int(request.query_params["n"]))

    @app.get("/flood")
    @app.get("/flood-exact")
    async def flood() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:  # 3 × the limit, no length announced
            for _ in range(3 * MAX_BUFFERED_BODY // FLOOD_CHUNK):
                yield b"x" * FLOOD_CHUNK

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


def _balances(chain: Chain, manifest: Manifest, *who: str) -> list[int]:
    return [token_balance(chain, manifest.token.address, w) for w in who]


def _sent(chain: Chain, address: str) -> int:
    return int(chain.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_sdk_pays_a_metered_upto_route_what_the_rule_measures(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator: Facilitator, facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    gas = facilitator.signer.address
    with serve_in_thread(upstream()) as origin:
        gateway = create_gateway(
            origin, [], meters=[
                "GET /chat=upto:per-field:usage.total_tokens:0.00002,max=0.05",
                "GET /bytes=upto:per-byte:0.0000005,max=0.01",  # half an atomic unit a byte
            ], pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
            facilitator_url=facilitator_url)
        with serve_in_thread(gateway) as base:
            async with sdk_upto_client(payer) as client:
                paid = await client.get(f"{base}/chat", params={"tokens": "123"})
                assert paid.status_code == 200, paid.text
                assert paid.json() == {"usage": {"total_tokens": 123}}
                assert "x-a402-usage" not in paid.headers
                receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
                assert receipt.success and receipt.amount == str(123 * PER_TOKEN)
                assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                    FUNDS - 2_460, 2_460]

                counted = await client.get(f"{base}/bytes", params={"n": "777"})
                assert counted.status_code == 200 and len(counted.text) == 777
                assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                    FUNDS - 2_460 - 388, 2_460 + 388]  # ⌊777 / 2⌋: never a fraction
                spent = 2_460 + 388

                # Over the maximum's worth: delivered, charged the maximum, never more.
                over = await client.get(f"{base}/chat", params={"tokens": "1000000"})
                assert over.status_code == 200, over.text
                assert decode_settle_response(over.headers[PAYMENT_RESPONSE]).amount == \
                    str(CHAT_MAX)
                spent += CHAT_MAX
                assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                    FUNDS - spent, spent]

                # Nothing used: delivered, no transaction, nothing moves.
                sent = _sent(anvil_chain, gas)
                free = await client.get(f"{base}/chat", params={"tokens": "0"})
                assert free.status_code == 200 and free.json()["usage"]["total_tokens"] == 0
                assert decode_settle_response(free.headers[PAYMENT_RESPONSE]).transaction == ""
                empty = await client.get(f"{base}/bytes", params={"n": "1"})  # ⌊1/2⌋ = 0
                assert empty.status_code == 200 and empty.text == "x"
                assert _sent(anvil_chain, gas) == sent
                assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                    FUNDS - spent, spent]

                # The rule cannot read the response: withheld, nothing charged.
                unreadable = await client.get(f"{base}/chat")
                assert unreadable.status_code == 502
                assert unreadable.json()["error"] == "usage_unreadable"
                assert unreadable.json()["charged"] is False
                assert _sent(anvil_chain, gas) == sent
                assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                    FUNDS - spent, spent]

            # What is offered: upto, for the rule's maximum.
            required = decode_payment_required(
                httpx.get(f"{base}/chat").headers[PAYMENT_REQUIRED])
            (accepted,) = required.accepts
            assert accepted.scheme == "upto" and accepted.amount == str(CHAT_MAX)


@pytest.mark.anyio
async def test_an_answer_over_the_buffering_limit_is_withheld_and_nothing_is_charged(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator: Facilitator, facilitator_url: str,
) -> None:
    """An upstream streaming 3 × MAX_BUFFERED_BODY to an upto route (and to a buffered
    ``exact`` one): cut off at the limit, 502 ``upstream_too_large`` saying first that
    nothing was charged, no settle, no balance moves; the gateway answers the next one."""
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    exact_payer = new_payer(FUNDS)
    pay_to = fresh_account()
    gas = facilitator.signer.address
    with serve_in_thread(upstream()) as origin:
        gateway = create_gateway(
            origin, ["GET /flood-exact=0.001"], meters=[
                "GET /flood=upto:per-byte:0.0000005,max=0.01",
                "GET /bytes=upto:per-byte:0.0000005,max=0.01",
            ], pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
            facilitator_url=facilitator_url)
        with serve_in_thread(gateway) as base:
            sent = _sent(anvil_chain, gas)
            async with sdk_upto_client(payer) as client:
                flooded = await client.get(f"{base}/flood")
                assert flooded.status_code == 502, flooded.text[:200]
                answer = flooded.json()
                assert answer["error"] == "upstream_too_large"
                assert answer["charged"] is False and answer["settled"] is False
                assert answer["message"].startswith("nothing was charged")
                assert PAYMENT_RESPONSE not in flooded.headers
            async with official_client(exact_payer) as client:
                exact = await client.get(f"{base}/flood-exact")
                assert exact.status_code == 502, exact.text[:200]
                assert exact.json()["error"] == "upstream_too_large"
            assert _sent(anvil_chain, gas) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, exact_payer.address,
                             pay_to) == [FUNDS, FUNDS, 0]
            # Alive, and the next request is served and charged as usual.
            async with sdk_upto_client(payer) as client:
                after = await client.get(f"{base}/bytes", params={"n": "100"})
                assert after.status_code == 200 and after.text == "x" * 100
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 50, 50]


@pytest.mark.anyio
async def test_the_middleware_takes_a_metering_rule_for_an_upto_route(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()

    async def units(request: StarletteRequest) -> StarletteJSON:
        return StarletteJSON({"ok": True}, headers={"A402-Units": request.query_params["n"]})

    async def slow(request: StarletteRequest) -> StarletteJSON:
        await anyio.sleep(0.3)
        return StarletteJSON({"ok": True})

    app = Starlette(routes=[Route("/work", units), Route("/slow", slow)], middleware=[
        Middleware(PaymentMiddleware, token=dev_stack.token, network=dev_stack.network,
                   pay_to=pay_to, facilitator=facilitator_url, routes={
                       "GET /work": RouteConfig(price="0.001", scheme="upto",
                                                meter="per-unit:0.00001,max=0.001"),
                       # 1,000 atomic units a second the handler runs, at most 10,000.
                       "GET /slow": RouteConfig(price="0.01", scheme="upto",
                                                meter="per-second:0.001,max=0.01")})])
    with serve_in_thread(app) as base:
        async with sdk_upto_client(payer) as client:
            paid = await client.get(f"{base}/work", params={"n": "37"})
            assert paid.status_code == 200, paid.text
            capped = await client.get(f"{base}/work", params={"n": "1000"})  # 10 × 1000
            assert capped.status_code == 200, capped.text
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 370 - 1_000, 370 + 1_000]
            asked = time.monotonic()
            timed = await client.get(f"{base}/slow")
            waited = time.monotonic() - asked
            assert timed.status_code == 200, timed.text
            seconds = int(decode_settle_response(timed.headers[PAYMENT_RESPONSE]).amount or 0)
    # The 0.3 s it ran, at 1,000 a second (the event loop may wake a hair early: 299), and
    # no more than the client waited for it (not a fixed 2 s: a loaded host may stretch it).
    assert 290 <= seconds <= waited * 1_000
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
        FUNDS - 1_370 - seconds, 1_370 + seconds]


class _Channels:
    """A stand-in alternative scheme (an A402 offer): only its presence matters here."""

    def requirement(self, amount: int, base_url: str, *, max_timeout_seconds: int
                    ) -> PaymentRequirements:
        return PaymentRequirements(scheme="a402", network="eip155:1", amount=str(amount),
                                   asset="0x" + "11" * 20, pay_to="0x" + "22" * 20,
                                   max_timeout_seconds=max_timeout_seconds)

    def requirement_v1(self, amount: int, base_url: str, *, network_v1: str,
                       resource: ResourceInfo, max_timeout_seconds: int
                       ) -> PaymentRequirementsV1:
        return PaymentRequirementsV1(
            scheme="a402", network=network_v1, max_amount_required=str(amount),
            resource=resource.url, description=resource.description,
            mime_type=resource.mime_type, pay_to="0x" + "22" * 20,
            max_timeout_seconds=max_timeout_seconds, asset="0x" + "11" * 20)


def _connections(listening: socket.socket) -> int:
    """How many connections reached ``listening`` since last asked (none was accepted: a
    client that gave up and closed is still in the accept queue)."""
    listening.setblocking(False)
    count = 0
    try:
        while True:
            try:
                conn, _ = listening.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1
    finally:
        listening.setblocking(True)


def test_a_down_facilitator_costs_one_timeout_per_period_not_per_request(
    dev_stack: Manifest,
) -> None:
    """The facilitator accepts connections and never answers: the first 402 of an upto
    route waits out its timeout, the next ones (within UPTO_LOOKUP_RETRY_SECONDS) answer
    at once with the same a402-only offer (or 503 without alternatives)."""
    timeout = 1.0
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes the handshakes; nobody ever answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"

    async def work(request: StarletteRequest) -> StarletteJSON:
        return StarletteJSON({"ok": True})

    def app(alternatives: bool) -> PaymentMiddleware:
        middleware = PaymentMiddleware(
            Starlette(routes=[Route("/work", work)]), token=dev_stack.token,
            network=dev_stack.network, pay_to=fresh_account(), facilitator=url,
            facilitator_timeout=timeout, routes={"GET /work": RouteConfig(
                price="0.001", scheme="upto", meter="per-unit:0.00001,max=0.001")})
        if alternatives:
            middleware.offer_also(_Channels())
        return middleware

    try:
        for alternatives, status in ((True, 402), (False, 503)):
            with serve_in_thread(app(alternatives)) as base:
                answers = [httpx.get(f"{base}/work", timeout=30) for _ in range(5)]
            assert [a.status_code for a in answers] == [status] * 5
            if alternatives:
                for answer in answers:
                    (offered,) = decode_payment_required(
                        answer.headers[PAYMENT_REQUIRED]).accepts
                    assert offered.scheme == "a402"
            # One timeout, not five: the facilitator was asked once (counted as the
            # connections it got, not timed: a loaded host stretches the quick answers).
            assert _connections(silent) == 1
    finally:
        silent.close()


def test_metered_specs_and_configs() -> None:
    pattern, rule, scheme = parse_metered_spec(
        "POST /v1/chat=upto:per-field:usage.total_tokens:0.00002,max=0.05", 6)
    assert (pattern, rule.maximum, rule.rate, scheme) == ("POST /v1/chat", 50_000, 20, "upto")
    assert parse_metered_spec("GET /a=per-byte:0.000001,max=0.01", 6)[2] == "exact"
    with pytest.raises(RouteError, match="max"):
        parse_metered_spec("GET /a=upto:per-byte:0.000001", 6)
    with pytest.raises(RouteError, match="unknown metering unit"):
        parse_metered_spec("GET /a=upto:0.05", 6)
    table = RouteTable.build({"GET /w": RouteConfig(
        price="0.001", scheme="upto", meter="per-unit:0.00001,max=0.001")}, decimals=6)
    route = table.routes[0]
    assert route.meter is not None and route.meter.maximum == route.amount == 1_000
    with pytest.raises(RouteError, match="not its metering rule's max"):
        RouteTable.build({"GET /w": RouteConfig(
            price="0.002", scheme="upto", meter="per-unit:0.00001,max=0.001")}, decimals=6)
    with pytest.raises(RouteError, match="per-unit"):
        RouteTable.build({"GET /w": RouteConfig(price="0.001", meter="per-unit")},
                         decimals=6)
