"""The gateway: an unchanged upstream service, charged for on one route, free on others.

Upstream, gateway and facilitator all run as real HTTP servers on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.provider import create_gateway
from a402.provider.routes import RouteError
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_settle_response,
)
from tests.interop.official import official_client
from tests.provider.support import (
    Balances,
    assert_mined_transfer,
    closed_port_url,
    offer,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

PAID_ATOMIC = 1_500  # "0.0015" with 6 decimals


def upstream_app() -> FastAPI:
    """An ordinary service that knows nothing about payments."""
    app = FastAPI()

    @app.get("/paid/report")
    async def report() -> dict[str, str]:
        return {"report": "the numbers"}

    @app.get("/paid/broken")
    async def broken() -> JSONResponse:
        return JSONResponse({"error": "upstream bug"}, status_code=500)

    @app.get("/free/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.api_route("/free/echo", methods=["GET", "POST", "PUT"])
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "body": (await request.body()).decode(),
                "headers": {k.lower(): v for k, v in request.headers.items()},
            },
            headers={"x-upstream": "yes", "set-cookie": "session=secret; Path=/"},
        )

    @app.get("/free/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_in_thread(upstream_app()) as url:
        yield url


@pytest.fixture
def gateway_url(
    upstream_url: str, dev_stack: Manifest, facilitator_url: str, pay_to: str
) -> Iterator[str]:
    app = create_gateway(
        upstream_url, ["GET /paid/*=0.0015"], pay_to=pay_to, token=dev_stack.token,
        network=dev_stack.network, facilitator_url=facilitator_url,
    )
    with serve_in_thread(app) as url:
        yield url


async def test_free_routes_are_proxied_faithfully(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        hello = await client.get("/free/hello")
        echo = await client.post(
            "/free/echo?a=1&b=%20x", content=b"payload bytes",
            headers={"x-custom": "kept", "connection": "keep-alive, x-hop",
                     "x-hop": "dropped", PAYMENT_SIGNATURE: "not for the upstream"},
        )
        streamed = await client.get("/free/stream")
        cookies_after = dict(client.cookies)

    assert hello.status_code == 200 and hello.json() == {"hello": "world"}
    seen = echo.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/free/echo", "a=1&b=%20x")
    assert seen["body"] == "payload bytes"
    assert seen["headers"]["x-custom"] == "kept"
    assert "x-hop" not in seen["headers"]
    assert PAYMENT_SIGNATURE.lower() not in seen["headers"]
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == gateway_url.removeprefix("http://")
    assert echo.headers["x-upstream"] == "yes"
    assert PAYMENT_RESPONSE not in echo.headers
    assert cookies_after == {"session": "secret"}  # passed to the client, not kept by us
    assert streamed.text == "".join(f"chunk {i}\n" for i in range(5))


async def test_the_gateway_keeps_no_cookies_between_users(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as first:
        await first.get("/free/echo")  # upstream sets a session cookie for this user
    async with httpx.AsyncClient(base_url=gateway_url) as second:
        seen = (await second.get("/free/echo")).json()
    assert "cookie" not in seen["headers"]


async def test_paid_route_through_the_gateway(
    anvil_chain: Chain, dev_stack: Manifest, gateway_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        required, _ = await offer(client, "/paid/report")
        assert required.accepts[0].amount == str(PAID_ATOMIC)
        assert required.resource is not None
        assert required.resource.url == f"{gateway_url}/paid/report"
        response = await client.get("/paid/report", headers=v2_header(required, payer))

    assert response.status_code == 200, response.text
    assert response.json() == {"report": "the numbers"}
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert balances.delta(payer.address) == -PAID_ATOMIC
    assert balances.delta(pay_to) == PAID_ATOMIC


async def test_an_upstream_failure_is_not_charged(
    anvil_chain: Chain, dev_stack: Manifest, gateway_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        required, _ = await offer(client, "/paid/broken")
        response = await client.get("/paid/broken", headers=v2_header(required, payer))
    assert response.status_code == 500
    assert response.json() == {"error": "upstream bug"}
    assert PAYMENT_RESPONSE not in response.headers
    assert balances.unchanged()


async def test_a_dead_upstream_is_a_502_and_not_charged(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = create_gateway(
        closed_port_url(), ["GET /paid/*=0.0015"], pay_to=pay_to, token=dev_stack.token,
        network=dev_stack.network, facilitator_url=facilitator_url,
    )
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            free = await client.get("/free/anything")
            required, _ = await offer(client, "/paid/report")
            paid = await client.get("/paid/report", headers=v2_header(required, payer))
    assert free.status_code == 502 and free.json()["error"] == "upstream_unavailable"
    assert paid.status_code == 502 and PAYMENT_RESPONSE not in paid.headers
    assert balances.unchanged()


async def test_settle_first_gateway_streams_the_paid_response(
    anvil_chain: Chain, dev_stack: Manifest, upstream_url: str, facilitator_url: str,
    pay_to: str, new_payer: Callable[..., LocalAccount],
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = create_gateway(
        upstream_url, ["GET /free/stream=$0.002"], pay_to=pay_to, token=dev_stack.token,
        network=dev_stack.network, facilitator_url=facilitator_url, settle_before_serve=True,
    )
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            required, _ = await offer(client, "/free/stream")
            async with client.stream(
                "GET", "/free/stream", headers=v2_header(required, payer)
            ) as response:
                chunks = [c async for c in response.aiter_text()]
    assert response.status_code == 200
    assert "".join(chunks) == "".join(f"chunk {i}\n" for i in range(5))
    assert decode_settle_response(response.headers[PAYMENT_RESPONSE]).success is True
    assert balances.delta(pay_to) == 2_000


def test_bad_route_specs_fail_before_serving(dev_stack: Manifest) -> None:
    with pytest.raises(RouteError):
        create_gateway("http://127.0.0.1:1", ["GET /x=0.0000001"], pay_to="0x" + "11" * 20,
                       token=dev_stack.token, network=dev_stack.network,
                       facilitator_url="http://127.0.0.1:2")
    with pytest.raises(ValueError):
        create_gateway("ftp://upstream", ["GET /x=1"], pay_to="0x" + "11" * 20,
                       token=dev_stack.token, network=dev_stack.network,
                       facilitator_url="http://127.0.0.1:2")


async def test_unpaid_gateway_request_never_reaches_the_upstream(
    gateway_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        response = await client.get("/paid/report")
    assert response.status_code == 402 and PAYMENT_REQUIRED in response.headers
    assert "the numbers" not in response.text


async def test_the_official_client_pays_through_the_gateway(
    anvil_chain: Chain, dev_stack: Manifest, gateway_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount],
) -> None:
    """The official x402 SDK's paying client, unmodified, against our reverse proxy."""
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    async with official_client(payer) as client:
        response = await client.get(f"{gateway_url}/paid/report")

    assert response.status_code == 200, response.text
    assert response.json() == {"report": "the numbers"}
    receipt = decode_settle_response(response.headers[PAYMENT_RESPONSE])
    assert receipt.success and receipt.payer == payer.address
    assert_mined_transfer(anvil_chain, receipt.transaction)
    assert balances.delta(payer.address) == -PAID_ATOMIC
    assert balances.delta(pay_to) == PAID_ATOMIC
