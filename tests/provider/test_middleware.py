"""PaymentMiddleware end to end: a FastAPI app, our facilitator over HTTP, anvil, real signatures.

Every test that pays checks the money on chain (exact deltas on a fresh
payee); every refusal checks that nothing moved and that the handler did
not run.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.exact.eip3009 import (
    ExactEvmPayload,
    build_payment_payload,
    build_payment_payload_v1,
    sign_authorization,
)
from a402.facilitator.client import FacilitatorClient
from a402.facilitator.core import Facilitator
from a402.provider import PaymentMiddleware
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from a402.wire.x402 import PaymentPayload, PaymentRequirements
from tests.facilitator_faults import AnswerLostToAnErrorOnce
from tests.provider.support import (
    ITEM_PRICE_ATOMIC,
    PRICE,
    PRICE_ATOMIC,
    Balances,
    Calls,
    asgi_client,
    assert_mined_transfer,
    closed_port_url,
    offer,
    paid_app,
    payload_header,
    v1_header,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

Payer = Callable[..., LocalAccount]


# ----------------------------------------------------------------------- the offer


async def test_unpaid_request_gets_a_v2_header_and_a_v1_body(
    dev_stack: Manifest, facilitator_url: str, pay_to: str
) -> None:
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    async with asgi_client(app) as client:
        response = await client.get("/weather?city=Berlin")

    assert response.status_code == 402
    assert calls["weather"] == 0
    required = decode_payment_required(response.headers[PAYMENT_REQUIRED])
    assert required.to_wire() == {
        "x402Version": 2,
        "error": "payment_required",
        "resource": {"url": "http://provider.test/weather?city=Berlin", "description": "",
                     "mimeType": ""},
        "accepts": [{
            "scheme": "exact", "network": dev_stack.network, "amount": str(PRICE_ATOMIC),
            "asset": dev_stack.token.address, "payTo": pay_to, "maxTimeoutSeconds": 60,
            "extra": {"name": dev_stack.token.name, "version": dev_stack.token.version},
        }],
    }
    body = response.json()
    assert body["x402Version"] == 1 and body["error"] == "payment_required"
    assert body["message"]
    # anvil's chain 31337 has no legacy v1 name: v1 clients get the CAIP-2 id.
    assert body["accepts"] == [{
        "scheme": "exact", "network": dev_stack.network,
        "maxAmountRequired": str(PRICE_ATOMIC),
        "resource": "http://provider.test/weather?city=Berlin", "description": "",
        "mimeType": "", "payTo": pay_to, "maxTimeoutSeconds": 60,
        "asset": dev_stack.token.address,
        "extra": {"name": dev_stack.token.name, "version": dev_stack.token.version},
    }]
    assert PAYMENT_REQUIRED in response.headers["access-control-expose-headers"]


async def test_free_routes_pass_through_untouched(
    dev_stack: Manifest, facilitator_url: str, pay_to: str
) -> None:
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=closed_port_url())
    async with asgi_client(app) as client:
        response = await client.get("/free")
        preflight = await client.options("/weather")
    assert response.status_code == 200 and response.json() == {"free": True}
    assert PAYMENT_RESPONSE not in response.headers
    assert preflight.status_code != 402  # CORS preflights carry no payment


# ------------------------------------------------------------------------- paying


async def test_v2_payment_buys_the_response_and_moves_exactly_the_price(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        response = await client.get("/weather", headers=v2_header(required, payer))

    assert response.status_code == 200, response.text
    assert response.json() == {"weather": "sunny", "temperature": 21}
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert receipt.success is True and receipt.network == dev_stack.network
    assert receipt.payer == payer.address
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert PAYMENT_RESPONSE in response.headers["access-control-expose-headers"]
    assert response.headers["cache-control"] == "private"
    assert X_PAYMENT_RESPONSE not in response.headers
    assert calls["weather"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_v1_payment_in_x_payment_works_too(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url)
    async with asgi_client(app) as client:
        _, required_v1 = await offer(client, "/items/42")
        response = await client.get("/items/42", headers=v1_header(required_v1, payer))

    assert response.status_code == 200, response.text
    assert response.json() == {"item": "42"}
    receipt = decode_settle_response(response.headers[X_PAYMENT_RESPONSE])
    assert receipt.success is True and receipt.payer == payer.address
    assert PAYMENT_RESPONSE not in response.headers
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert balances.delta(payer.address) == -ITEM_PRICE_ATOMIC
    assert balances.delta(pay_to) == ITEM_PRICE_ATOMIC


async def test_payment_works_over_real_http_with_a_client_we_pass_in(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    facilitator = FacilitatorClient(facilitator_url)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator)
    try:
        with serve_in_thread(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                required, _ = await offer(client, "/weather")
                assert required.resource is not None
                assert required.resource.url == f"{url}/weather"
                response = await client.get("/weather", headers=v2_header(required, payer))
    finally:
        await facilitator.aclose()
    assert response.status_code == 200, response.text
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


# ---------------------------------------------------------------------- bad input


def _one_unit_short_accepted(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    """The client claims (and signs) a price one unit below the offer."""
    cheaper = req.model_copy(update={"amount": str(req.amount_int - 1)})
    return build_payment_payload(cheaper, payer)


def _one_unit_short_signed(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    """``accepted`` echoes the offer, but the signed authorization is for one unit less."""
    cheaper = req.model_copy(update={"amount": str(req.amount_int - 1)})
    signed = sign_authorization(payer, cheaper)
    return PaymentPayload(accepted=req, payload=signed.to_wire())


def _forged(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    """An attacker signs an authorization that claims to come from the payer."""
    signed = sign_authorization(Account.create(), req)
    auth = signed.authorization.model_copy(update={"from_address": payer.address})
    forged = ExactEvmPayload(signature=signed.signature, authorization=auth)
    return PaymentPayload(accepted=req, payload=forged.to_wire())


def _unknown_scheme(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    payload = build_payment_payload(req, payer)
    return payload.model_copy(update={"accepted": req.model_copy(update={"scheme": "upto"})})


def _unknown_network(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    return build_payment_payload(req.model_copy(update={"network": "eip155:8453"}), payer)


def _other_payee(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    return build_payment_payload(
        req.model_copy(update={"pay_to": Account.create().address}), payer
    )


def _expired(req: PaymentRequirements, payer: LocalAccount) -> PaymentPayload:
    return build_payment_payload(req, payer, valid_for=-1)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_one_unit_short_accepted, "no_matching_payment_requirements"),
        (_one_unit_short_signed, "invalid_exact_evm_payload_authorization_value_mismatch"),
        (_forged, "invalid_exact_evm_payload_signature"),
        (_unknown_scheme, "unsupported_scheme"),
        (_unknown_network, "invalid_network"),
        (_other_payee, "no_matching_payment_requirements"),
        (_expired, "invalid_exact_evm_payload_authorization_valid_before"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
async def test_bad_payments_are_refused_with_a_reason_and_nothing_moves(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Payer, build: Callable[[PaymentRequirements, LocalAccount], PaymentPayload],
    reason: str,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        response = await client.get(
            "/weather", headers=payload_header(build(required.accepts[0], payer))
        )

    assert response.status_code == 402, response.text
    assert response.json()["error"] == reason
    assert response.json()["message"]
    assert decode_payment_required(response.headers[PAYMENT_REQUIRED]).error == reason
    assert PAYMENT_RESPONSE not in response.headers
    assert calls["weather"] == 0
    assert balances.unchanged()


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        (PAYMENT_SIGNATURE, "%%% not base64 %%%", "invalid_payload"),
        (PAYMENT_SIGNATURE, base64.b64encode(b'{"x402Version": 2, "accepted":').decode(),
         "invalid_payload"),
        (PAYMENT_SIGNATURE, base64.b64encode(b"[1, 2]").decode(), "invalid_payload"),
        (PAYMENT_SIGNATURE, base64.b64encode(b'{"x402Version": 3}').decode(),
         "invalid_x402_version"),
        (PAYMENT_SIGNATURE, base64.b64encode(b'{"x402Version": 2}').decode(), "invalid_payload"),
        (X_PAYMENT, "", "invalid_payload"),
        (X_PAYMENT, base64.b64encode(b"\xff\xfe not utf-8").decode(), "invalid_payload"),
    ],
)
async def test_undecodable_payment_headers_get_a_machine_reason(
    dev_stack: Manifest, facilitator_url: str, pay_to: str, header: str, value: str, reason: str,
) -> None:
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    async with asgi_client(app) as client:
        response = await client.get("/weather", headers={header: value})
    assert response.status_code == 402
    assert response.json()["error"] == reason
    assert decode_payment_required(response.headers[PAYMENT_REQUIRED]).error == reason
    assert calls["weather"] == 0


async def test_a_payload_whose_inner_payment_is_malformed_never_reaches_the_facilitator(
    dev_stack: Manifest, pay_to: str, new_payer: Payer,
) -> None:
    # The facilitator URL is dead: a 402 (not a 503) proves we refused it ourselves.
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=closed_port_url())
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        payload = build_payment_payload(required.accepts[0], new_payer(0))
        broken = payload.model_copy(update={"payload": {"signature": "0x00"}})
        response = await client.get("/weather", headers=payload_header(broken))
    assert response.status_code == 402
    assert response.json()["error"] == "invalid_payload"


# ---------------------------------------------------------------------- replays


async def test_same_payload_in_parallel_buys_exactly_one_response(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls,
                   extra_prices={"GET /held": PRICE})
    release = threading.Event()

    @app.get("/held")
    async def held() -> dict[str, bool]:
        # The winner stays in flight until the losers have their answers, so every one of
        # them meets the payment in use, however the scheduler orders the requests.
        calls.hit("held")
        deadline = time.monotonic() + 30
        while not release.is_set() and time.monotonic() < deadline:
            await anyio.sleep(0.01)
        return {"held": True}

    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            required, _ = await offer(client, "/held")
            headers = v2_header(required, payer)
            responses: list[httpx.Response] = []

            async def attempt() -> None:
                responses.append(await client.get("/held", headers=headers))
                if sum(r.status_code == 402 for r in responses) == 4:
                    release.set()

            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(attempt)
            finally:
                release.set()
            later = await client.get("/held", headers=headers)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 402, 402, 402, 402]
    refused = [r for r in responses if r.status_code == 402]
    assert [r.json()["error"] for r in refused] == ["payment_already_used"] * 4
    # While the first request is still paying, the others are not offered a new
    # payment (an honest client retrying its own request would pay twice).
    assert all(PAYMENT_REQUIRED not in r.headers for r in refused)
    assert all(r.json()["retrySamePayment"] is True for r in refused)
    assert calls["held"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC
    # A later identical resend gets the response it bought again (kept in the ledger),
    # with the same receipt: the handler does not run again and nothing more is charged.
    paid = next(r for r in responses if r.status_code == 200)
    tx = decode_settle_response(paid.headers[PAYMENT_RESPONSE]).transaction
    assert later.status_code == 200 and later.content == paid.content
    assert decode_settle_response(later.headers[PAYMENT_RESPONSE]).transaction == tx
    assert calls["held"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC


async def test_a_replay_on_another_paid_route_is_refused_too(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        headers = v2_header(required, payer)
        assert (await client.get("/weather", headers=headers)).status_code == 200
        # /boom has the same price, so the payload matches its offer as well.
        again = await client.get("/boom", headers=headers)
    assert again.status_code == 402 and again.json()["error"] == "payment_already_used"
    assert balances.delta(payer.address) == -PRICE_ATOMIC


# ------------------------------------------------------------------ handler errors


async def test_a_failing_handler_is_not_charged_and_the_payment_stays_usable(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/boom")
        headers = v2_header(required, payer)
        failed = await client.get("/boom", headers=headers)
        assert failed.status_code == 500 and failed.json() == {"error": "kaput"}
        assert PAYMENT_RESPONSE not in failed.headers
        assert balances.unchanged()
        # Nothing was spent, so the same authorization can still buy something.
        served = await client.get("/weather", headers=headers)
    assert served.status_code == 200
    assert calls["boom"] == 1 and calls["weather"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC


# ----------------------------------------------------------- settle before serving


async def test_settle_before_serve_charges_first_then_serves(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls,
                   settle_before_serve=True)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        bad = await client.get("/weather", headers=payload_header(
            _one_unit_short_signed(required.accepts[0], payer)))
        assert bad.status_code == 402 and calls["weather"] == 0
        response = await client.get("/weather", headers=v2_header(required, payer))
        # Settle-first means the payer, not the provider, carries a handler failure.
        boom_required, _ = await offer(client, "/boom")
        boom = await client.get("/boom", headers=v2_header(boom_required, payer))

    assert response.status_code == 200 and calls["weather"] == 1
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert boom.status_code == 500
    assert decode_settle_response(boom.headers[PAYMENT_RESPONSE]).success is True
    assert balances.delta(payer.address) == -2 * PRICE_ATOMIC
    assert balances.delta(pay_to) == 2 * PRICE_ATOMIC


# -------------------------------------------------------------- settle failures


async def test_settle_failure_is_a_402_with_the_reason_in_header_and_body(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, facilitator: Facilitator,
    pay_to: str, new_payer: Payer,
) -> None:
    """The payer drains its balance between verify and settle (x402 issue #1169)."""
    payer = new_payer(PRICE_ATOMIC)
    sink = Account.create().address
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to, sink)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls,
                   extra_prices={"GET /drain": "0.001"})

    @app.get("/drain")
    def drain() -> dict[str, bool]:
        # While the paid handler runs, the payer spends everything elsewhere.
        req = PaymentRequirements(
            scheme="exact", network=dev_stack.network, amount=str(PRICE_ATOMIC),
            asset=dev_stack.token.address, pay_to=sink, max_timeout_seconds=60,
            extra=dev_stack.token.eip712_extra())
        other = build_payment_payload(req, payer)
        result = facilitator.settle({"x402Version": 2, "paymentPayload": other.to_wire(),
                                     "paymentRequirements": req.to_wire()})
        assert result.success, result
        return {"served": True}

    async with asgi_client(app) as client:
        required, _ = await offer(client, "/drain")
        response = await client.get("/drain", headers=v2_header(required, payer))

    assert response.status_code == 402, response.text
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert receipt.success is False
    assert receipt.error_reason == "invalid_exact_evm_insufficient_balance"
    body = response.json()
    assert body["error"] == receipt.error_reason  # machine-readable: the facilitator's
    # The payer reads the money truth first, then the facilitator's reason.
    assert body["message"].startswith("nothing was charged: "), body["message"]
    assert body["accepts"]  # nothing was charged: a new payment may be made
    assert balances.delta(pay_to) == 0
    assert balances.delta(sink) == PRICE_ATOMIC


# --------------------------------------------------------- facilitator trouble


async def test_unreachable_facilitator_is_a_503_and_nothing_is_charged(
    anvil_chain: Chain, dev_stack: Manifest, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=closed_port_url(), calls=calls)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        response = await client.get("/weather", headers=v2_header(required, payer))

    assert response.status_code == 503
    assert response.json()["error"] == "facilitator_unavailable"
    assert response.json()["settlementAttempted"] is False
    assert int(response.headers["retry-after"]) > 0
    assert calls["weather"] == 0
    assert balances.unchanged()


class LoseSettleAnswers(httpx.AsyncBaseTransport):
    """The network between middleware and facilitator drops the next ``n`` /settle answers.

    The request still reaches the real facilitator, which settles on chain:
    this is the "wallet debited, no data returned" case of x402 issue #1062.
    """

    def __init__(self, n: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.remaining = n

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/settle") and self.remaining > 0:
            self.remaining -= 1
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("the settle answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_lost_settle_answer_is_recovered_by_resending_the_same_header(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    facilitator = FacilitatorClient(facilitator_url, transport=LoseSettleAnswers(1))
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator, calls=calls)
    try:
        async with asgi_client(app) as client:
            required, _ = await offer(client, "/weather")
            headers = v2_header(required, payer)
            lost = await client.get("/weather", headers=headers)
            assert lost.status_code == 503
            assert lost.json()["error"] == "facilitator_unavailable"
            assert lost.json()["settlementAttempted"] is True
            assert PAYMENT_REQUIRED not in lost.headers  # do not invite a second payment
            # The money moved although the answer was lost...
            assert balances.delta(payer.address) == -PRICE_ATOMIC
            # ...and the same header, sent again, gets the response it paid for.
            retried = await client.get("/weather", headers=headers)
            third = await client.get("/weather", headers=headers)
    finally:
        await facilitator.aclose()

    assert retried.status_code == 200, retried.text
    receipt = decode_settle_response(retried.headers[PAYMENT_RESPONSE])
    assert receipt.success is True
    assert_mined_transfer(anvil_chain, receipt.transaction)
    # Once more: the response it bought, kept in the ledger, nothing charged or run again.
    assert third.status_code == 200 and third.content == retried.content
    assert decode_settle_response(third.headers[PAYMENT_RESPONSE]).transaction == \
        receipt.transaction
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC
    # Serve-then-settle ran the handler for the lost attempt; the retry delivered the
    # response held in the ledger for it, without running the handler again.
    assert calls["weather"] == 1


async def test_a_settle_answer_lost_to_an_unexpected_error_is_resolved_by_the_same_header(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    """The money moved, then the settle call failed with an error that is no facilitator
    error: the outcome is unknown, so the payer is told what it is told for a lost answer
    (the payment may be settled: resend the same header), not a bare 500; the response
    is held for that resend, which gets it, charged once, the handler run once."""
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    facilitator = AnswerLostToAnErrorOnce(facilitator_url)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator, calls=calls)
    try:
        async with asgi_client(app) as client:
            required, _ = await offer(client, "/weather")
            headers = v2_header(required, payer)
            lost = await client.get("/weather", headers=headers)
            assert balances.delta(payer.address) == -PRICE_ATOMIC  # it did move
            retried = await client.get("/weather", headers=headers)
    finally:
        await facilitator.aclose()

    assert lost.status_code == 502, lost.text
    body = lost.json()
    assert body["error"] == "facilitator_error" and "unexpected_settle_error" in body["message"]
    assert body["settlementAttempted"] is True and body["retrySamePayment"] is True
    assert PAYMENT_REQUIRED not in lost.headers  # do not invite a second payment
    assert retried.status_code == 200, retried.text
    receipt = decode_settle_response(retried.headers[PAYMENT_RESPONSE])
    assert receipt.success is True
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert facilitator.settles == [str(PRICE_ATOMIC)] * 2
    assert calls["weather"] == 1  # the held response, not a second run
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_multiple_payment_headers_are_ambiguous(
    dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        one = v2_header(required, new_payer(0))[PAYMENT_SIGNATURE]
        two = v2_header(required, new_payer(0))[PAYMENT_SIGNATURE]
        response = await client.get(
            "/weather", headers=[(PAYMENT_SIGNATURE, one), (PAYMENT_SIGNATURE, two)]
        )
    assert response.status_code == 402 and response.json()["error"] == "invalid_payload"


async def test_a_v1_payload_for_another_chain_is_refused_by_name(
    dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    """A v1 payload for the wrong chain is refused by name, before any facilitator call."""
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url)
    async with asgi_client(app) as client:
        _, required_v1 = await offer(client, "/weather")
        wrong = required_v1.accepts[0].model_copy(update={"network": "base-sepolia"})
        payload = build_payment_payload_v1(wrong, new_payer(0))
        response = await client.get("/weather", headers={X_PAYMENT: encode_header(payload)})
    assert response.status_code == 402 and response.json()["error"] == "invalid_network"


async def test_a_raising_handler_is_not_charged_either(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url,
                   extra_prices={"GET /crash": "0.001"})

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("handler bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider.test") as client:
        required, _ = await offer(client, "/crash")
        headers = v2_header(required, payer)
        crashed = await client.get("/crash", headers=headers)
        served = await client.get("/weather", headers=headers)  # the payment was released
    assert crashed.status_code == 500
    assert PAYMENT_RESPONSE not in crashed.headers
    assert served.status_code == 200
    assert balances.delta(payer.address) == -PRICE_ATOMIC


async def test_plain_starlette_apps_work_too(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)

    async def report(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"report for {request.path_params['name']}")

    app = Starlette(
        routes=[Route("/reports/{name}", report)],
        middleware=[Middleware(
            PaymentMiddleware, routes={"GET /reports/:name": "0.001"}, pay_to=pay_to,
            token=dev_stack.token, network=dev_stack.network, facilitator=facilitator_url,
        )],
    )
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/reports/q3")
        response = await client.get("/reports/q3", headers=v2_header(required, payer))
    assert response.status_code == 200 and response.text == "report for q3"
    assert decode_settle_response(response.headers[PAYMENT_RESPONSE]).success is True
    assert balances.delta(pay_to) == PRICE_ATOMIC


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pay_to": "not-an-address"}, "pay_to"),
        ({"network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"}, "eip155"),
        ({"network": "eip155:0x1"}, "chain id"),
        ({"max_timeout_seconds": 0}, "max_timeout_seconds"),
        ({"routes": {"GET /x": "0.0000001"}}, "precision"),
    ],
)
def test_misconfiguration_fails_at_construction(
    dev_stack: Manifest, change: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {
        "routes": {"GET /x": "1"}, "pay_to": "0x" + "11" * 20, "token": dev_stack.token,
        "network": dev_stack.network, "facilitator": "http://127.0.0.1:1", **change,
    }
    with pytest.raises(ValueError, match=message):
        PaymentMiddleware(PlainTextResponse("x"), **options)  # type: ignore[arg-type]


async def test_a_facilitator_that_answers_nonsense_is_a_502_and_nothing_is_charged(
    anvil_chain: Chain, dev_stack: Manifest, pay_to: str, new_payer: Payer,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    with serve_in_thread(Starlette()) as not_a_facilitator:  # every path is a 404
        facilitator = FacilitatorClient(not_a_facilitator)
        app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator, calls=calls)
        try:
            async with asgi_client(app) as client:
                required, _ = await offer(client, "/weather")
                response = await client.get("/weather", headers=v2_header(required, payer))
        finally:
            await facilitator.aclose()  # or the server waits for the idle connection
    assert response.status_code == 502
    assert response.json()["error"] == "facilitator_error"
    assert calls["weather"] == 0
    assert balances.unchanged()


class RecordFacilitatorCalls(httpx.AsyncBaseTransport):
    """Passes every call through to the real facilitator, keeping each request's JSON."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: dict[str, list[dict[str, Any]]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            path = request.url.path.rsplit("/", 1)[-1]
            self.bodies.setdefault(path, []).append(json.loads(request.content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_facilitator_is_told_the_providers_resource_not_the_clients(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str, new_payer: Payer,
) -> None:
    """A facilitator that binds a settlement to one resource must hear the provider's own
    name for it: the client's copy in a v2 payload is unsigned and may name anything."""
    payer, payer_v1 = new_payer(10_000), new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, payer_v1.address, pay_to)
    recorder = RecordFacilitatorCalls()
    facilitator = FacilitatorClient(facilitator_url, transport=recorder)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator)
    try:
        async with asgi_client(app) as client:
            required, _ = await offer(client, "/weather")
            elsewhere = required.resource.model_copy(update={"url": "https://other.example/x"})
            payload = build_payment_payload(required.accepts[0], payer, resource=elsewhere)
            v2 = await client.get("/weather", headers=payload_header(payload))
            _, required_v1 = await offer(client, "/items/7")
            v1 = await client.get("/items/7", headers=v1_header(required_v1, payer_v1))
    finally:
        await facilitator.aclose()

    assert v2.status_code == 200, v2.text
    assert v1.status_code == 200, v1.text
    v2_calls = [b for call in ("verify", "settle") for b in recorder.bodies[call]
                if b["x402Version"] == 2]
    v1_calls = [b for call in ("verify", "settle") for b in recorder.bodies[call]
                if b["x402Version"] == 1]
    assert len(v2_calls) == len(v1_calls) == 2
    for body in v2_calls:
        assert body["paymentPayload"]["resource"] == required.resource.to_wire()
    assert required.resource.url == "http://provider.test/weather"
    for body in v1_calls:
        assert body["paymentRequirements"]["resource"] == "http://provider.test/items/7"
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(payer_v1.address) == -ITEM_PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC + ITEM_PRICE_ATOMIC
