"""``a402 gateway`` selling a route by usage (x402 ``upto``): the upstream, unchanged
but for one header, or a metering rule, says what a response used; the payer signs for
the route's maximum and is charged that. Real HTTP servers, anvil, balances asserted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.client import paying_client
from a402.provider import create_gateway
from a402.provider.usage import MeteredResponse
from tests.interop.official_upto import fresh_account, upto_payer

pytestmark = pytest.mark.anvil

FUNDS = 1_000_000


def upstream() -> FastAPI:
    app = FastAPI()

    @app.get("/llm")
    async def llm(request: Request) -> JSONResponse:
        tokens = int(request.query_params["tokens"])
        return JSONResponse({"usage": {"total_tokens": tokens}},
                            headers={"X-A402-Usage": str(tokens * 10)})

    @app.get("/bytes")
    async def raw(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * int(request.query_params["n"]))

    return app


def per_byte(response: MeteredResponse) -> int:
    return len(response.body)


def test_the_gateway_charges_what_the_upstream_reports_or_the_meter_counts(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with serve_in_thread(upstream()) as origin:
        gateway = create_gateway(
            origin, ["GET /llm=upto:0.05", "GET /bytes=upto:0.01"], pay_to=pay_to,
            token=dev_stack.token, network=dev_stack.network, facilitator_url=facilitator_url,
            meter=per_byte)
        with serve_in_thread(gateway) as base, \
                paying_client(payer, max_per_request=50_000,
                              assets=[dev_stack.token.address]) as client:
            llm = client.get(f"{base}/llm", params={"tokens": "123"})
            assert llm.status_code == 200 and llm.json()["usage"]["total_tokens"] == 123
            assert "x-a402-usage" not in llm.headers
            counted = client.get(f"{base}/bytes", params={"n": "777"})
            assert counted.status_code == 200 and len(counted.text) == 777
            over = client.get(f"{base}/bytes", params={"n": "10001"})  # above 0.01
            assert over.status_code == 402
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 1_230 + 777
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == \
        FUNDS - 1_230 - 777
