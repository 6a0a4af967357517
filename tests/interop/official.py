"""The official x402 Python SDK's three roles, wired to our anvil chain.

The SDK (PyPI ``x402``) is our interop oracle: a test that swaps one of these
roles for a402's component proves wire compatibility against the reference
implementation rather than against our own reading of the spec. Everything
here is configuration of the SDK, nothing is reimplemented, so that a failure
points at a real incompatibility and not at this harness.

- ``official_facilitator`` / ``official_facilitator_app``: the SDK's
  ``x402Facilitator`` with the exact EVM scheme, settling on anvil; the app
  puts it behind ``POST /verify``, ``POST /settle`` and ``GET /supported``
  (the SDK ships the facilitator logic but no HTTP service for it).
- ``official_paid_app``: a FastAPI resource protected by the SDK's payment
  middleware, priced in the dev stack's token.
- ``official_client`` / ``official_client_sync``: the SDK's paying HTTP
  clients (httpx, async; requests, sync).
- ``official_mcp_paywall``: the SDK's MCP payment wrapper (``x402.mcp``) for a tool.

Serve the apps with ``tests.servers.serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from x402 import SpendControls, x402Client, x402ClientSync, x402Facilitator, x402ResourceServer
from x402.http import (
    FacilitatorConfig,
    HTTPFacilitatorClient,
    PaymentOption,
    RouteConfig,
    x402HTTPResourceServer,
)
from x402.http.clients.httpx import x402HttpxClient
from x402.http.clients.requests import x402_requests
from x402.http.middleware.fastapi import payment_middleware
from x402.mcp import create_payment_wrapper
from x402.mechanisms.evm import EthAccountSigner, FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import (
    register_exact_evm_client,
    register_exact_evm_facilitator,
    register_exact_evm_server,
)
from x402.schemas import (
    AssetAmount,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SchemeNotFoundError,
    parse_payment_payload,
    parse_payment_requirements,
)

from a402.chain.deploy import Manifest
from a402.chain.node import Chain

EXACT = "exact"
DEFAULT_MAX_TIMEOUT_SECONDS = 60
"""``maxTimeoutSeconds`` we advertise; the SDK client signs ``validBefore = now + this``."""
CONFIRMATION_TIMEOUT_SECONDS = 30.0
"""Bound on the SDK facilitator's receipt wait (its default, 120 s, is a long hang in a test)."""

Key = str | bytes | LocalAccount


def _account(key: Key) -> LocalAccount:
    return key if isinstance(key, LocalAccount) else Account.from_key(key)


# ---------------------------------------------------------------------------
# Facilitator
# ---------------------------------------------------------------------------


def official_facilitator(
    chain: Chain,
    manifest: Manifest,
    key: Key,
    *,
    simulate_in_settle: bool = False,
    confirmation_timeout_seconds: float = CONFIRMATION_TIMEOUT_SECONDS,
) -> x402Facilitator:
    """The SDK's async facilitator, exact EVM scheme, paying gas from ``key`` on ``chain``.

    The scheme is registered for ``manifest.network`` only (plus the SDK's
    automatic v1 registration for its legacy network names, which never match
    anvil). ``verify`` and ``settle`` are coroutines, but they run the SDK's
    blocking web3 calls inline: awaiting them blocks the event loop for the
    RPC round trips, which a benchmark should know.
    """
    if chain.rpc_url is None:
        raise ValueError("the SDK's facilitator signer needs a JSON-RPC URL (use anvil)")
    if manifest.chain_id != chain.chain_id:
        raise ValueError(
            f"manifest is for chain {manifest.chain_id} but the node is {chain.chain_id}"
        )
    signer = FacilitatorWeb3Signer(
        private_key=_account(key).key.to_0x_hex(),
        rpc_url=chain.rpc_url,
        confirmation_timeout_seconds=confirmation_timeout_seconds,
    )
    facilitator = x402Facilitator()
    register_exact_evm_facilitator(
        facilitator, signer, networks=manifest.network, simulate_in_settle=simulate_in_settle
    )
    return facilitator


def official_facilitator_app(chain: Chain, manifest: Manifest, key: Key) -> FastAPI:
    """An HTTP facilitator backed by ``official_facilitator(chain, manifest, key)``."""
    return facilitator_http_app(official_facilitator(chain, manifest, key))


def facilitator_http_app(facilitator: x402Facilitator) -> FastAPI:
    """Expose any SDK facilitator over the x402 facilitator HTTP API.

    The request body is ``{x402Version, paymentPayload, paymentRequirements}``;
    the payload's own ``x402Version`` decides how both are parsed, as the
    SDK's HTTP client builds the top-level one from it. Negative answers are
    HTTP 200 with ``isValid``/``success`` false; a body we cannot parse, or a
    scheme/network nobody registered, is 400; anything else is 500.
    """
    app = FastAPI(title="official x402 facilitator (SDK)")

    @app.get("/supported")
    async def supported() -> JSONResponse:
        return _json(facilitator.get_supported())

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        parsed = await _parse_facilitator_request(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        try:
            return _json(await facilitator.verify(*parsed))
        except SchemeNotFoundError as e:
            return _error(400, str(e))

    @app.post("/settle")
    async def settle(request: Request) -> JSONResponse:
        parsed = await _parse_facilitator_request(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        try:
            return _json(await facilitator.settle(*parsed))
        except SchemeNotFoundError as e:
            return _error(400, str(e))

    return app


AnyPayload = PaymentPayload | PaymentPayloadV1
AnyRequirements = PaymentRequirements | PaymentRequirementsV1


async def _parse_facilitator_request(
    request: Request,
) -> tuple[AnyPayload, AnyRequirements] | JSONResponse:
    try:
        body = await request.json()
        payload = parse_payment_payload(body["paymentPayload"])
        requirements = parse_payment_requirements(
            payload.x402_version, body["paymentRequirements"]
        )
    except (ValueError, KeyError, TypeError, ValidationError) as e:
        return _error(400, f"malformed facilitator request: {e}")
    return payload, requirements


def _json(model: Any) -> JSONResponse:
    """Wire form as the SDK emits it: camelCase, absent fields omitted (never null)."""
    return JSONResponse(model.model_dump(mode="json", by_alias=True, exclude_none=True))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# ---------------------------------------------------------------------------
# Resource server
# ---------------------------------------------------------------------------


def official_price(manifest: Manifest, price_atomic: int) -> AssetAmount:
    """A price in the dev token, with the EIP-712 domain clients must sign over.

    The SDK server fills ``extra.name``/``version`` only for tokens in its own
    default-asset table, which our token on eip155:31337 is not, so without
    this ``extra`` the SDK client refuses to sign and the SDK facilitator
    answers ``missing_eip712_domain``.
    """
    return AssetAmount(
        amount=str(price_atomic),
        asset=manifest.token.address,
        extra=manifest.token.eip712_extra(),
    )


def official_paid_app(
    facilitator_url: str,
    pay_to: str,
    manifest: Manifest,
    price_atomic: int,
    path: str = "/weather",
    *,
    max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
) -> FastAPI:
    """A FastAPI app whose ``GET {path}`` costs ``price_atomic`` token units.

    Payment is handled by the SDK's FastAPI middleware, which asks the
    facilitator at ``facilitator_url`` to verify before the handler runs and
    to settle after it succeeds.

    The facilitator must be reachable when this is called: the SDK server's
    ``initialize`` fetches ``GET /supported`` (synchronously) here, and the
    route is accepted only if that lists ``(x402Version 2, "exact",
    manifest.network)`` literally. We initialize it ourselves rather than
    letting the middleware do it, because on a configuration error the
    middleware calls ``os._exit(1)``, which would kill the whole test run;
    here it raises instead.
    """
    facilitator_client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    server = x402ResourceServer(facilitator_client)
    register_exact_evm_server(server, manifest.network)
    routes = {
        f"GET {path}": RouteConfig(
            accepts=PaymentOption(
                scheme=EXACT,
                pay_to=pay_to,
                price=official_price(manifest, price_atomic),
                network=manifest.network,
                max_timeout_seconds=max_timeout_seconds,
            ),
            description="Weather report (official SDK server)",
            mime_type="application/json",
        )
    }
    x402HTTPResourceServer(server, routes).initialize()  # raises on a bad /supported

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Its async httpx client lives in this server's event loop: close it there.
        await facilitator_client.aclose()

    app = FastAPI(title="official x402 resource server (SDK)", lifespan=lifespan)
    # The server is initialized, so the middleware need not (and cannot exit).
    app.middleware("http")(payment_middleware(routes, server, sync_facilitator_on_start=False))

    @app.get(path)
    async def weather() -> dict[str, Any]:
        return {"report": {"weather": "sunny", "temperature": 21}}

    return app


# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------


def official_mcp_paywall(manifest: Manifest, facilitator_url: str, pay_to: str,
                         price_atomic: int) -> Callable[..., Any]:
    """The SDK's MCP paywall (``x402.mcp.create_payment_wrapper``) selling a tool for
    ``price_atomic`` with the exact EVM scheme, settled by the facilitator at
    ``facilitator_url``: put it under a FastMCP tool's decorator."""
    resource_server = x402ResourceServer(
        HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    register_exact_evm_server(resource_server, manifest.network)
    resource_server.initialize()
    return create_payment_wrapper(
        resource_server, accepts=[official_requirements(manifest, pay_to, price_atomic)])


ClientT = TypeVar("ClientT", x402Client, x402ClientSync)


def _registered(
    client: ClientT, key: Key, spend_controls: SpendControls | Literal[False]
) -> ClientT:
    register_exact_evm_client(client, EthAccountSigner(_account(key)))  # v2: "eip155:*"
    client.set_spend_controls(spend_controls)
    return client


def official_client(
    private_key: Key,
    *,
    spend_controls: SpendControls | Literal[False] = False,
    **httpx_kwargs: Any,
) -> x402HttpxClient:
    """The SDK's paying ``httpx.AsyncClient``: on a 402 it signs and retries once.

    If the retry is answered 402 again, that response is returned, not raised;
    if it cannot build a payment at all (no PAYMENT-REQUIRED header, nothing
    it can pay in ``accepts``) it raises ``x402.http.clients.PaymentError``.

    Spend controls are off by default: the SDK client otherwise pays only
    tokens in its own default-asset table (capped at $1), so it would refuse
    our dev token outright ("rejected by spend_controls"). Pass a
    ``SpendControls`` to exercise them. Use as ``async with``.
    """
    httpx_kwargs.setdefault("timeout", 30.0)
    return x402HttpxClient(_registered(x402Client(), private_key, spend_controls), **httpx_kwargs)


def official_client_sync(
    private_key: Key, *, spend_controls: SpendControls | Literal[False] = False
) -> requests.Session:
    """The SDK's sync paying client: a ``requests.Session`` (the SDK has no sync httpx one).

    Unlike the httpx client it marks its paid retry on the wire with a
    ``Payment-Retry: 1`` header, which servers must tolerate.
    """
    return x402_requests(_registered(x402ClientSync(), private_key, spend_controls))


def official_sdk_client(
    private_key: Key, *, spend_controls: SpendControls | Literal[False] = False
) -> x402Client:
    """The SDK's transport-free payer, for building payloads without HTTP (benchmarks)."""
    return _registered(x402Client(), private_key, spend_controls)


# ---------------------------------------------------------------------------
# Building payloads without HTTP
# ---------------------------------------------------------------------------


def official_requirements(
    manifest: Manifest,
    pay_to: str,
    price_atomic: int,
    *,
    max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
) -> PaymentRequirements:
    """The requirement ``official_paid_app`` advertises, built directly."""
    price = official_price(manifest, price_atomic)
    return PaymentRequirements(
        scheme=EXACT,
        network=manifest.network,
        asset=price.asset,
        amount=price.amount,
        pay_to=pay_to,
        max_timeout_seconds=max_timeout_seconds,
        extra=dict(price.extra or {}),
    )


async def official_payload(
    private_key: Key,
    requirements: PaymentRequirements,
    resource_url: str = "http://127.0.0.1/weather",
) -> PaymentPayload:
    """A v2 payment payload signed by the SDK client for ``requirements``."""
    required = PaymentRequired(
        x402_version=2, resource=ResourceInfo(url=resource_url), accepts=[requirements]
    )
    payload = await official_sdk_client(private_key).create_payment_payload(required)
    if not isinstance(payload, PaymentPayload):
        raise TypeError(f"expected a v2 payload, got {type(payload).__name__}")
    return payload
