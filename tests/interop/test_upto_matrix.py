"""The x402 ``upto`` interop matrix over HTTP, on anvil, balances asserted.

client × server × facilitator:

- the SDK's upto client → a402's middleware → a402's facilitator;
- a402's paying client → the SDK's middleware → a402's facilitator;
- a402's paying client → the SDK's middleware → the SDK's upto facilitator;
- a402's paying client → a402's middleware → a402's facilitator.

Each server charges what the handler reports (the SDK's ``Settlement-Overrides``
header, or a402's ``X-A402-Usage``): a partial charge, a zero charge (no
transaction, balances unchanged) and a charge above the authorised maximum
(refused, nothing moves, nothing delivered).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from x402.schemas import PaymentRequirements as SdkRequirements

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.client import paying_client
from a402.client.records import PaymentStatus, payment_of
from a402.facilitator.core import Facilitator
from a402.provider import PaymentMiddleware
from a402.provider.routes import RouteConfig
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from tests.interop.official import facilitator_http_app
from tests.interop.official_upto import (
    fresh_account,
    sdk_upto_client,
    sdk_upto_facilitator,
    sdk_upto_paid_app,
    sdk_upto_payload,
    upto_payer,
)
from tests.servers import serve

pytestmark = pytest.mark.anvil

MAXIMUM = 40_000
FUNDS = 1_000_000


def _usage(request: Request) -> int:
    return int(request.query_params.get("used", "0"))


def a402_upto_app(pay_to: str, manifest: Manifest, facilitator_url: str,
                  header: str = "settlement-overrides") -> Starlette:
    """A Starlette app selling ``GET /usage`` by usage through a402's middleware; the
    handler reports ``?used=N`` in ``header``."""
    async def metered(request: Request) -> JSONResponse:
        used = _usage(request)
        value = json.dumps({"amount": str(used)}) if header == "settlement-overrides" \
            else str(used)
        return JSONResponse({"used": used}, headers={header: value})

    return Starlette(routes=[Route("/usage", metered)], middleware=[Middleware(
        PaymentMiddleware, routes={"GET /usage": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=pay_to, token=manifest.token, network=manifest.network,
        facilitator=facilitator_url)])


@contextmanager
def server(app: Starlette) -> Iterator[str]:
    with serve(app) as base:
        yield base + "/usage"


def _balances(chain: Chain, manifest: Manifest, *who: str) -> list[int]:
    return [token_balance(chain, manifest.token.address, w) for w in who]


def _sent(chain: Chain, address: str) -> int:
    return int(chain.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


# ---------------------------------------------------- SDK client → a402 server


@pytest.mark.anyio
async def test_sdk_client_pays_a402_server_what_the_handler_reports(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url)) as url:
        async with sdk_upto_client(payer) as client:
            paid = await client.get(url, params={"used": "7000"})
            assert paid.status_code == 200, paid.text
            assert paid.json() == {"used": 7000}
            assert "settlement-overrides" not in paid.headers  # between handler and middleware
            receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == "7000"
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]

            sent = _sent(anvil_chain, facilitator.signer.address)
            free = await client.get(url, params={"used": "0"})
            assert free.status_code == 200 and free.json() == {"used": 0}
            assert decode_settle_response(free.headers[PAYMENT_RESPONSE]).transaction == ""
            assert _sent(anvil_chain, facilitator.signer.address) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]

            over = await client.get(url, params={"used": str(MAXIMUM + 1)})
            assert over.status_code == 402
            assert "\"used\":" not in over.text  # the response was withheld
            assert _sent(anvil_chain, facilitator.signer.address) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]


@pytest.mark.anyio
async def test_one_upto_authorization_buys_one_response(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url, "x-a402-usage")) as url:
        async with httpx.AsyncClient(timeout=30) as plain:
            offer = await plain.get(url)
            required = decode_payment_required(offer.headers[PAYMENT_REQUIRED])
            accepted = SdkRequirements.model_validate(required.accepts[0].to_wire())
            payload = await sdk_upto_payload(payer, accepted, url)
            header = encode_header(payload.model_dump(mode="json", by_alias=True,
                                                      exclude_none=True))
            paid = await plain.get(url, params={"used": "100"},
                                   headers={PAYMENT_SIGNATURE: header})
            assert paid.status_code == 200 and paid.json() == {"used": 100}
            replay = await plain.get(url, params={"used": "200"},
                                     headers={PAYMENT_SIGNATURE: header})
            assert replay.status_code == 402
            assert '"used":' not in replay.text
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [FUNDS - 100, 100]


# ------------------------------------------------------ a402 client → SDK server


@pytest.mark.parametrize("facilitator_kind", ["a402", "sdk"])
def test_a402_client_pays_sdk_server_within_its_maximum(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, facilitator_kind: str,
    official_facilitator_account: LocalAccount,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with _facilitator(anvil_chain, dev_stack, facilitator_url, facilitator_kind,
                      official_facilitator_account) as (url_of_facilitator, gas_payer):
        app = sdk_upto_paid_app(url_of_facilitator, pay_to, dev_stack, MAXIMUM, _usage)
        with serve(app) as base, paying_client(payer, max_per_request=MAXIMUM) as client:
            paid = client.get(base + "/usage", params={"used": "2500"})
            assert paid.status_code == 200, paid.text
            payment = payment_of(paid)
            assert payment is not None and payment.status == PaymentStatus.SETTLED
            assert payment.amount == MAXIMUM  # what was authorised (and counted)
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 2500, 2500]

            sent = _sent(anvil_chain, gas_payer)
            free = client.get(base + "/usage", params={"used": "0"})
            assert free.status_code == 200
            assert _sent(anvil_chain, gas_payer) == sent
            over = client.get(base + "/usage", params={"used": str(MAXIMUM + 1)})
            assert over.status_code == 402
            assert _sent(anvil_chain, gas_payer) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 2500, 2500]


def test_a402_client_refuses_a_maximum_above_its_cap(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    app = sdk_upto_paid_app(facilitator_url, pay_to, dev_stack, MAXIMUM, _usage)
    with serve(app) as base, paying_client(payer, max_per_request=MAXIMUM - 1) as client:
        from a402.client.errors import PaymentRefused
        with pytest.raises(PaymentRefused) as refused:
            client.get(base + "/usage", params={"used": "1"})
        assert refused.value.reason == "price_above_maximum"
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [FUNDS, 0]


def test_a402_client_pays_a402_server_by_usage(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url, "x-a402-usage")) as url, \
            paying_client(payer, max_per_request=MAXIMUM) as client:
        for used in (1, 39_999, 0):
            paid = client.get(url, params={"used": str(used)})
            assert paid.status_code == 200 and paid.json() == {"used": used}
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
        FUNDS - 40_000, 40_000]


@contextmanager
def _facilitator(chain: Chain, manifest: Manifest, ours: str, kind: str,
                 sdk_key: LocalAccount) -> Iterator[tuple[str, str]]:
    if kind == "a402":
        yield ours, chain.accounts[1].address
        return
    with serve(facilitator_http_app(sdk_upto_facilitator(chain, manifest, sdk_key))) as url:
        yield url, sdk_key.address
