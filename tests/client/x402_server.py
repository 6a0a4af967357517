"""A small, honest x402 resource server for the client tests (v2 and v1).

It does what every x402 server does (reference/x402-wire.md §0.9): no payment
→ 402 with the requirements; a payment → the facilitator's ``/verify``, the
handler, the facilitator's ``/settle``, then 200 with the receipt (or 402 with
a failed receipt). The facilitator is a real one over real HTTP, settling on a
real chain, so a test passes only if our client's payload is one a facilitator
accepts and the money really moves.

Knobs a test may turn: ``idempotent`` remembers the response per authorization
nonce, as a server answering x402 #808 would; ``slow_paid`` delays that many
paid responses *after* settling, to make the client time out with its money
already gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from a402.wire.convert import requirements_v2_to_v1
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_payment_payload,
    encode_header,
)
from a402.wire.networks import to_caip2
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    ResourceInfo,
)


def requirement(
    *, network: str, asset: str, pay_to: str, amount: int, extra: dict[str, Any] | None = None,
    scheme: str = "exact", max_timeout_seconds: int = 60,
) -> PaymentRequirements:
    return PaymentRequirements(
        scheme=scheme, network=network, asset=asset, pay_to=pay_to, amount=str(amount),
        max_timeout_seconds=max_timeout_seconds,
        extra=extra if extra is not None else {"name": "USD Coin", "version": "2"},
    )


@dataclass
class PaidServer:
    """``GET|POST /paid`` costs one of ``accepts``; everything else is free."""

    facilitator_url: str
    accepts: list[PaymentRequirements]
    version: Literal[1, 2] = 2
    extensions: dict[str, Any] | None = None
    idempotent: bool = False
    slow_paid: int = 0
    slow_seconds: float = 3.0
    unpaid_requests: int = 0
    payloads: list[dict[str, Any]] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)
    _memo: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)

    # --- what the server asks for

    def _required_v2(self, url: str, error: str) -> PaymentRequired:
        return PaymentRequired(error=error, resource=ResourceInfo(url=url, description="test"),
                               accepts=self.accepts, extensions=self.extensions)

    def _required_v1(self, url: str, error: str) -> PaymentRequiredV1:
        resource = ResourceInfo(url=url, description="test", mime_type="application/json")
        return PaymentRequiredV1(
            error=error, accepts=[requirements_v2_to_v1(r, resource) for r in self.accepts]
        )

    def _ask(self, request: Request, error: str) -> Response:
        url = str(request.url)
        if self.version == 1:
            return JSONResponse(self._required_v1(url, error).to_wire(), status_code=402)
        return JSONResponse({}, status_code=402, headers={
            PAYMENT_REQUIRED: encode_header(self._required_v2(url, error))})

    # --- the route

    async def paid(self, request: Request) -> Response:
        header = request.headers.get(PAYMENT_SIGNATURE if self.version == 2 else X_PAYMENT)
        if not header:
            self.unpaid_requests += 1
            return self._ask(request, "payment required")
        try:
            payload = decode_payment_payload(header)
        except Exception:
            return self._ask(request, "undecodable payment")
        self.payloads.append(payload.to_wire())
        nonce = str(payload.payload.get("authorization", {}).get("nonce"))
        if self.idempotent and nonce in self._memo:
            status, body, headers = self._memo[nonce]
            return Response(body, status_code=status, headers=headers)
        wanted = self._match(payload, str(request.url))
        if wanted is None:
            return self._ask(request, "No matching payment requirements")
        body = {"x402Version": payload.x402_version, "paymentPayload": payload.to_wire(),
                "paymentRequirements": wanted}
        async with httpx.AsyncClient(base_url=self.facilitator_url, timeout=60) as fac:
            verdict = (await fac.post("/verify", json=body)).json()
            if not verdict.get("isValid"):
                return self._ask(request, verdict.get("invalidReason", "invalid"))
            result = {"paid": True, "method": request.method,
                      "echo": (await request.body()).decode()}
            receipt = (await fac.post("/settle", json=body)).json()
        receipt_header = PAYMENT_RESPONSE if self.version == 2 else X_PAYMENT_RESPONSE
        headers = {receipt_header: encode_header(receipt)}
        if not receipt.get("success"):
            return JSONResponse({}, status_code=402, headers=headers)
        self.settled.append(receipt)
        response = JSONResponse(result, headers=headers)
        if self.idempotent:
            self._memo[nonce] = (200, bytes(response.body), headers)
        if self.slow_paid > 0:
            self.slow_paid -= 1
            await asyncio.sleep(self.slow_seconds)
        return response

    def _match(self, payload: Any, url: str) -> dict[str, Any] | None:
        """The offered requirement the payment answers, in the payload's version."""
        for req in self.accepts:
            if isinstance(payload, PaymentPayload):
                a = payload.accepted
                if (a.scheme, a.network, a.amount, a.asset.lower(), a.pay_to.lower()) == (
                    req.scheme, req.network, req.amount, req.asset.lower(), req.pay_to.lower()
                ):
                    return req.to_wire()
            elif (payload.scheme, to_caip2(payload.network)) == (req.scheme, req.network):
                return requirements_v2_to_v1(req, ResourceInfo(url=url)).to_wire()
        return None

    @property
    def paid_attempts(self) -> int:
        return len(self.payloads)

    def app(self) -> Starlette:
        async def free(_: Request) -> Response:
            return JSONResponse({"free": True})

        return Starlette(routes=[
            Route("/paid", self.paid, methods=["GET", "POST"]),
            Route("/free", free),
        ])
