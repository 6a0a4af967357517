"""Talking to any x402 facilitator (ours or another) over HTTP.

A negative verdict comes back as a value; only a facilitator that cannot give
one (unreachable, 5xx, a body that is not a verdict) raises, so callers can
tell "the payment is bad" (402 to the payer) from "we could not check it"
(a 502/503 the payer may retry, with nothing charged).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from a402.exact.serve import NoVerdict
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)


class FacilitatorError(Exception):
    """The facilitator gave no usable verdict."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status

    def no_verdict(self) -> NoVerdict:
        """This failure as the server-side ``exact`` flow takes it (:mod:`a402.exact.serve`)."""
        return NoVerdict(self.reason, self.message,
                         unavailable=isinstance(self, FacilitatorUnavailable), status=self.status)


class FacilitatorUnavailable(FacilitatorError):
    """Unreachable, timed out, or said it could not decide now (5xx): retry later."""


class FacilitatorClient:
    def __init__(
        self, url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers,
                                       transport=transport)

    async def verify(
        self, payload: AnyPaymentPayload, requirements: AnyPaymentRequirements
    ) -> VerifyResponse:
        data = await self._post("/verify", payload, requirements)
        return self._parse(VerifyResponse, data)

    async def settle(
        self, payload: AnyPaymentPayload, requirements: AnyPaymentRequirements
    ) -> SettleResponse:
        data = await self._post("/settle", payload, requirements)
        return self._parse(SettleResponse, data)

    async def supported(self) -> SupportedResponse:
        return self._parse(SupportedResponse, await self._request("GET", "/supported"))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(
        self, path: str, payload: AnyPaymentPayload, requirements: AnyPaymentRequirements
    ) -> Any:
        body = {
            "x402Version": payload.x402_version,
            "paymentPayload": payload.to_wire(),
            "paymentRequirements": requirements.to_wire(),
        }
        return await self._request("POST", path, json=body)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise FacilitatorUnavailable("facilitator_unreachable",
                                         f"{self.url}{path}: {e!r}") from e
        try:  # bounded, like every peer's JSON (a402.wire.jsonstrict)
            data: Any = loads_object(response.content)
        except WireError:
            data = None
        if response.status_code >= 500:
            reason = data.get("error") if isinstance(data, dict) else None
            raise FacilitatorUnavailable(reason or "facilitator_error",
                                         response.text[:300], response.status_code)
        if response.status_code != 200 and not (
            isinstance(data, dict) and ("isValid" in data or "success" in data)
        ):
            reason = data.get("error") if isinstance(data, dict) else None
            raise FacilitatorError(reason or "facilitator_rejected_request",
                                   response.text[:300], response.status_code)
        return data

    @staticmethod
    def _parse(model: type[Any], data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise FacilitatorError("facilitator_bad_response",
                                   f"not a {model.__name__}: {e.error_count()} errors") from e
