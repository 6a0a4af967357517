"""A settled payment whose response was lost on the way gets it again, charged once.

The payment settles, the provider releases the response, and the network loses it (a
proxy in front drops it, as a cut connection would). The payer resends the *same*
payment header for the same request: the provider answers with the response it kept in
its replay ledger, with the same settlement receipt; nothing is settled again and the
handler does not run again. The same payment for another request is still refused, and
a response too large to keep is answered with the truth: paid and settled, not kept.
Every test asserts the chain: exactly one transfer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.exact.eip3009 import build_payment_payload
from a402.provider import create_gateway
from a402.provider.deliveries import MAX_KEPT_BODY, RESPONSE_NOT_KEPT
from a402.provider.ledger import SqlLedger
from a402.wire.headers import (
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_payment_payload,
    decode_settle_response,
)
from tests.provider.support import (
    ITEM_PRICE_ATOMIC,
    PRICE_ATOMIC,
    Balances,
    Calls,
    assert_mined_transfer,
    offer,
    paid_app,
    paying,
    payload_header,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

Payer = Callable[..., LocalAccount]
BIG_PRICE_ATOMIC = 1_000


class LosesFirstPaidResponse:
    """The network between the provider and the payer: it loses the whole response to the
    first request that carries a payment (the provider sent it; the payer never gets it)
    and answers 502 in its place, as a proxy whose upstream connection dropped would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lost: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        paid = scope["type"] == "http" and any(
            k == PAYMENT_SIGNATURE.lower().encode() for k, _ in scope.get("headers", ()))
        if not paid or self.lost:
            await self.app(scope, receive, send)
            return

        async def into_the_void(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.lost.append(int(message["status"]))

        await self.app(scope, receive, into_the_void)
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"upstream connection lost"})


class LossyShop(NamedTuple):
    """The paid app behind a network that loses its first paid response, its payer (10,000
    units), and what the tests count: the handlers' runs and the balances."""

    app: LosesFirstPaidResponse
    payer: LocalAccount
    calls: Calls
    balances: Balances


@pytest.fixture
def lossy_shop(anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
               new_payer: Payer, tmp_path: Path) -> Callable[..., LossyShop]:
    """Opens the shop (``options``: the gateway's, e.g. ``settle_before_serve``) on a
    SQLite replay ledger of its own."""

    def open_shop(**options: Any) -> LossyShop:
        payer = new_payer(10_000)
        balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
        calls = Calls()
        app = _app(pay_to, dev_stack, facilitator_url, calls, f"sqlite:///{tmp_path}/l.db",
                   **options)
        return LossyShop(app, payer, calls, balances)

    return open_shop


def _app(pay_to: str, manifest: Manifest, facilitator: str, calls: Calls,
         ledger: str, **options: Any) -> LosesFirstPaidResponse:
    app: FastAPI = paid_app(pay_to=pay_to, manifest=manifest, facilitator=facilitator,
                            calls=calls, ledger=ledger,
                            extra_prices={"GET /big": BIG_PRICE_ATOMIC,
                                          "GET /stream": BIG_PRICE_ATOMIC}, **options)

    @app.get("/big")
    async def big() -> Response:
        calls.hit("big")
        return Response(b"x" * (MAX_KEPT_BODY + 1), media_type="application/octet-stream")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        calls.hit("stream")

        async def events() -> Any:
            for n in range(3):
                yield f"data: {n}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return LosesFirstPaidResponse(app)


@pytest.mark.parametrize("settle_before_serve", [False, True])
async def test_a_response_lost_after_settling_is_sent_again_for_the_same_payment_charged_once(
    anvil_chain: Chain, pay_to: str, lossy_shop: Callable[..., LossyShop],
    settle_before_serve: bool,
) -> None:
    app, payer, calls, balances = lossy_shop(settle_before_serve=settle_before_serve)
    async with paying(app, "/weather", payer) as (client, _, headers):
        lost = await client.get("/weather", headers=headers)
        again = await client.get("/weather", headers=headers)
        once_more = await client.get("/weather", headers=headers)

    assert app.lost == [200] and lost.status_code == 502  # sent, settled, never received
    assert again.status_code == 200, again.text
    assert again.json() == {"weather": "sunny", "temperature": 21}
    assert again.headers["cache-control"] == "private"
    receipt = decode_settle_response(again.headers[PAYMENT_RESPONSE])
    assert receipt.success and receipt.payer == payer.address
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert once_more.status_code == 200 and once_more.content == again.content
    assert decode_settle_response(once_more.headers[PAYMENT_RESPONSE]).transaction == \
        receipt.transaction
    assert calls["weather"] == 1  # the handler ran once
    assert balances.delta(payer.address) == -PRICE_ATOMIC  # one settlement
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_the_settled_payment_resent_for_another_path_or_query_buys_nothing(
    pay_to: str, lossy_shop: Callable[..., LossyShop],
) -> None:
    app, payer, calls, balances = lossy_shop()
    async with paying(app, "/items/1", payer) as (client, required, headers):
        lost = await client.get("/items/1", headers=headers)
        other_path = await client.get("/items/2", headers=headers)
        other_query = await client.get("/items/1?x=1", headers=headers)
        nonce = decode_payment_payload(headers[PAYMENT_SIGNATURE]).payload["authorization"][
            "nonce"]
        resigned = build_payment_payload(required.accepts[0], payer, resource=required.resource,
                                         nonce=nonce, valid_for=120)  # same nonce, new signature
        other_signature = await client.get("/items/1", headers=payload_header(resigned))
        same = await client.get("/items/1", headers=headers)

    assert lost.status_code == 502
    for refused in (other_path, other_query):
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"] == "payment_already_used"
        assert "\"item\":" not in refused.text
    assert other_signature.status_code == 402, other_signature.text
    assert other_signature.json()["error"] == "payment_already_used"
    assert same.status_code == 200 and same.json() == {"item": "1"}
    assert calls["item"] == 1
    assert balances.delta(payer.address) == -ITEM_PRICE_ATOMIC
    assert balances.delta(pay_to) == ITEM_PRICE_ATOMIC


@pytest.mark.parametrize("settle_before_serve", [False, True])
async def test_an_oversized_response_is_not_kept_and_the_resend_is_told_it_was_paid_and_settled(
    anvil_chain: Chain, pay_to: str, lossy_shop: Callable[..., LossyShop],
    settle_before_serve: bool,
) -> None:
    app, payer, calls, balances = lossy_shop(settle_before_serve=settle_before_serve)
    async with paying(app, "/big", payer) as (client, _, headers):
        lost = await client.get("/big", headers=headers)
        again = await client.get("/big", headers=headers)

    assert app.lost == [200] and lost.status_code == 502
    assert again.status_code == 410, again.text
    body = again.json()
    assert body["error"] == RESPONSE_NOT_KEPT
    assert body["settled"] is True and body["charged"] is True
    assert "paid and settled" in body["message"] and "not kept" in body["message"]
    receipt = decode_settle_response(again.headers[PAYMENT_RESPONSE])
    assert body["transaction"] == receipt.transaction
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert calls["big"] == 1
    assert balances.delta(payer.address) == -BIG_PRICE_ATOMIC
    assert balances.delta(pay_to) == BIG_PRICE_ATOMIC


async def test_a_response_lost_at_one_gateway_is_sent_again_by_another_sharing_a_postgres_ledger(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Payer, postgres_url: str,
) -> None:
    served: list[str] = []

    async def report(request: Request) -> JSONResponse:
        served.append(request.url.path)
        return JSONResponse({"report": "the numbers", "n": len(served)})

    upstream = Starlette(routes=[Route("/paid/report", report), Route("/paid/other", report)])
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    ledgers = [SqlLedger(postgres_url), SqlLedger(postgres_url)]  # as two processes
    try:
        with serve_in_thread(upstream) as upstream_url:
            gateways = [create_gateway(upstream_url, ["GET /paid/*=0.0015"], pay_to=pay_to,
                                       token=dev_stack.token, network=dev_stack.network,
                                       facilitator_url=facilitator_url, ledger=ledger,
                                       public_url="https://api.example")
                        for ledger in ledgers]
            first = LosesFirstPaidResponse(gateways[0])
            with serve_in_thread(first) as a, serve_in_thread(gateways[1]) as b:
                async with httpx.AsyncClient(timeout=30) as client:
                    required, _ = await offer(client, f"{a}/paid/report")
                    headers = v2_header(required, payer)
                    lost = await client.get(f"{a}/paid/report", headers=headers)
                    again = await client.get(f"{b}/paid/report", headers=headers)
                    other = await client.get(f"{b}/paid/other", headers=headers)
    finally:
        for ledger in ledgers:
            ledger.close()

    assert first.lost == [200] and lost.status_code == 502
    assert again.status_code == 200, again.text
    assert again.json() == {"report": "the numbers", "n": 1}
    receipt = decode_settle_response(again.headers[PAYMENT_RESPONSE])
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert other.status_code in (402, 409), other.text
    assert "the numbers" not in other.text
    assert served == ["/paid/report"]
    assert balances.delta(payer.address) == -1_500
    assert balances.delta(pay_to) == 1_500


async def test_a_streamed_response_settled_first_is_streamed_not_kept_and_its_resend_told_so(
    anvil_chain: Chain, pay_to: str, lossy_shop: Callable[..., LossyShop],
) -> None:
    """Settle-first streams the response (no length: never held back to be kept); the
    ledger records that it was delivered and not kept, so the resend hears the truth."""
    app, payer, calls, balances = lossy_shop(settle_before_serve=True)
    async with paying(app, "/stream", payer) as (client, _, headers):
        lost = await client.get("/stream", headers=headers)
        again = await client.get("/stream", headers=headers)

    assert app.lost == [200] and lost.status_code == 502
    assert again.status_code == 410, again.text
    assert again.json()["error"] == RESPONSE_NOT_KEPT and again.json()["settled"] is True
    assert "streamed" in again.json()["message"]
    assert_mined_transfer(anvil_chain, again.json()["transaction"])
    assert calls["stream"] == 1
    assert balances.delta(payer.address) == -BIG_PRICE_ATOMIC
    assert balances.delta(pay_to) == BIG_PRICE_ATOMIC
