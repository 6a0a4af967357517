"""Wire compatibility with the official x402 SDK, on both sides of the middleware.

- the SDK's paying httpx client pays our middleware (it must understand our
  ``PAYMENT-REQUIRED`` and accept our ``PAYMENT-RESPONSE``);
- our middleware verifies and settles through the SDK's facilitator.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.wire.headers import PAYMENT_RESPONSE, decode_settle_response
from tests.interop.official import official_client
from tests.provider.support import (
    PRICE_ATOMIC,
    Balances,
    Calls,
    asgi_client,
    assert_mined_transfer,
    offer,
    paid_app,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


async def test_the_official_client_pays_our_middleware(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    with serve_in_thread(app) as url:
        async with official_client(payer) as client:
            response = await client.get(f"{url}/weather")

    assert response.status_code == 200, response.text
    assert response.json() == {"weather": "sunny", "temperature": 21}
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert receipt.success is True and receipt.payer == payer.address
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert calls["weather"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_our_middleware_settles_through_the_official_facilitator(
    anvil_chain: Chain, dev_stack: Manifest, official_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=official_facilitator_url)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        headers = v2_header(required, payer)
        response = await client.get("/weather", headers=headers)
        replay = await client.get("/weather", headers=headers)
        short = await client.get("/weather", headers=v2_header(
            required.model_copy(update={"accepts": [required.accepts[0].model_copy(
                update={"amount": str(PRICE_ATOMIC - 1)})]}), payer))

    assert response.status_code == 200, response.text
    assert decode_settle_response(response.headers[PAYMENT_RESPONSE]).success is True
    # The identical resend gets the response it bought again, charged once (redelivery).
    assert replay.status_code == 200 and replay.content == response.content
    assert replay.headers[PAYMENT_RESPONSE] == response.headers[PAYMENT_RESPONSE]
    assert short.status_code == 402
    assert short.json()["error"] == "no_matching_payment_requirements"
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_official_facilitator_reasons_reach_the_payer(
    anvil_chain: Chain, dev_stack: Manifest, official_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(PRICE_ATOMIC - 1)  # one unit short of the price
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=official_facilitator_url)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        response = await client.get("/weather", headers=v2_header(required, payer))
    assert response.status_code == 402
    assert response.json()["error"] == "invalid_exact_evm_insufficient_balance"
    assert balances.unchanged()
