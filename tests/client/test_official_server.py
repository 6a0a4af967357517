"""Our client against the official x402 SDK's FastAPI middleware (the interop oracle).

The SDK server verifies and settles through our facilitator on anvil; if our
payload, header or echo of ``accepted`` differed from what the SDK expects,
it would answer 402 and no money would move.
"""

from __future__ import annotations

import pytest

from a402.client import PaymentStatus, async_paying_client, paying_client, payment_of, receipt_of
from tests.client.conftest import Stack
from tests.interop.official import official_paid_app
from tests.servers import serve

PRICE = 2_500

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def official_url(stack: Stack):
    app = official_paid_app(stack.facilitator_url, stack.pay_to, stack.manifest, PRICE)
    with serve(app) as url:
        yield f"{url}/weather"


def test_sync_client_pays_the_official_server(stack: Stack, official_url: str) -> None:
    payer = stack.new_payer(PRICE * 3)
    before = stack.balance(stack.pay_to)
    with paying_client(payer, max_per_request=PRICE, networks=[stack.manifest.network],
                       assets=[stack.token]) as http:
        response = http.get(official_url)
    assert response.status_code == 200, response.headers
    assert response.json()["report"]["weather"] == "sunny"
    assert payment_of(response).status == PaymentStatus.SETTLED
    receipt = receipt_of(response)
    assert receipt.success and receipt.network == stack.manifest.network
    assert stack.chain.w3.eth.get_transaction_receipt(receipt.transaction)["status"] == 1
    assert stack.balance(payer.address) == PRICE * 2
    assert stack.balance(stack.pay_to) - before == PRICE


@pytest.mark.anyio
async def test_async_client_pays_the_official_server(stack: Stack, official_url: str) -> None:
    payer = stack.new_payer(PRICE)
    async with async_paying_client(payer, max_per_request=PRICE) as http:
        response = await http.get(official_url)
    assert response.status_code == 200
    assert payment_of(response).status == PaymentStatus.SETTLED
    assert stack.balance(payer.address) == 0
