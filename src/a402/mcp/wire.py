"""The x402 MCP transport as data: where an offer, a payment and a receipt travel.

As the official ``x402.mcp`` (x402 Python SDK 2.25) puts them on the wire, which is
what both sides here speak so that either side can be the SDK's:

- **Payment required**: the ``tools/call`` *result* (not a JSON-RPC error) with
  ``isError: true``, ``structuredContent`` the x402 v2 ``PaymentRequired``
  (``x402Version``, ``accepts``, ``error``, ``resource``) and ``content[0]`` a text
  block holding the same object as JSON (clients read ``structuredContent`` first,
  then the text). The SDK client also understands a JSON-RPC error with code
  :data:`PAYMENT_REQUIRED_CODE` whose ``data`` is the ``PaymentRequired``; we read it
  and never send it.
- **Payment**: the ``tools/call`` *request*'s ``params._meta["x402/payment"]``, the v2
  ``PaymentPayload`` as a JSON object.
- **Receipt**: the result's ``_meta["x402/payment-response"]``, the facilitator's
  ``SettleResponse``. A failed settlement answers like payment required, with the
  failed receipt (``success: false``) also under ``"x402/payment-response"`` inside
  ``structuredContent``; the tool's own output is withheld.

Everything the peer sends is bounded before it is parsed (:func:`check_value`):
a payment meta deeper or larger than any real payload is refused with a reason,
never walked recursively.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Final

from mcp import types

from a402.wire import errors as wire_errors
from a402.wire.errors import WireError
from a402.wire.jsonstrict import DEFAULT_LIMITS, JsonLimitError, JsonLimits, loads_object
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    SettleResponse,
    parse_payment_payload,
)

PAYMENT_META_KEY: Final = "x402/payment"
PAYMENT_RESPONSE_META_KEY: Final = "x402/payment-response"
PAYMENT_REQUIRED_CODE: Final = 402
MCP_URL: Final = "mcpUrl"
"""An ``a402`` offer's ``extra`` key naming the tool's own HTTP endpoint, which the payer's
vault invokes (:mod:`a402.mcp.channels`); a402's own, not x402's."""
"""The JSON-RPC error code the SDK's client also takes as "payment required"."""

META_LIMITS: Final = JsonLimits(max_bytes=64 * 1024, max_depth=16)
"""A payment meta is a v2 payload (five levels, well under 4 KiB): anything beyond these
is not a payment, and is refused before it is parsed."""

MALFORMED_PAYMENT: Final = "malformed_payment"
"""Reason: ``_meta["x402/payment"]`` is not a v2 x402 payment payload."""


def check_value(value: Any, limits: JsonLimits = META_LIMITS) -> None:
    """Refuse a decoded JSON value deeper, larger or with longer numbers than ``limits``.

    Iterative (an explicit stack), so a hostile value cannot exhaust the interpreter's
    stack here; raises :class:`JsonLimitError` naming the limit.
    """
    budget = limits.max_bytes
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limits.max_depth:
            raise JsonLimitError(wire_errors.JSON_TOO_DEEP,
                                 f"deeper than {limits.max_depth} levels", 400)
        if isinstance(item, Mapping):
            budget -= 2 + len(item)
            for key, child in item.items():
                budget -= len(str(key)) + 3
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            budget -= 2 + len(item)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, bool) or item is None:
            budget -= 5
        elif isinstance(item, int | float):
            digits = (len(repr(item)) if isinstance(item, float)
                      else _int_chars(item, limits))
            if digits > limits.max_number_chars:
                raise JsonLimitError(wire_errors.JSON_NUMBER_TOO_LONG,
                                     f"a number longer than {limits.max_number_chars} "
                                     "characters", 400)
            budget -= digits
        else:
            budget -= 8
        if budget < 0:
            raise JsonLimitError(wire_errors.REQUEST_TOO_LARGE,
                                 f"larger than {limits.max_bytes} bytes", 413)


def _int_chars(value: int, limits: JsonLimits) -> int:
    """Characters of ``str(value)``, without building the string of a huge int."""
    if value.bit_length() > limits.max_number_chars * 4:
        return limits.max_number_chars + 1
    return len(str(value))


# ------------------------------------------------------------------ server side


def payment_of(meta: Mapping[str, Any] | None) -> PaymentPayload | None:
    """The payment in a request's ``_meta``; None if there is none; WireError if it is
    there but is no bounded v2 payload (a JSON string holding one is taken too, as the
    SDK's server does)."""
    if not meta or PAYMENT_META_KEY not in meta:
        return None
    raw = meta[PAYMENT_META_KEY]
    if isinstance(raw, str):
        if len(raw) > META_LIMITS.max_bytes:
            raise JsonLimitError(wire_errors.REQUEST_TOO_LARGE,
                                 f"larger than {META_LIMITS.max_bytes} bytes", 413)
        raw = loads_object(raw, reason=MALFORMED_PAYMENT, limits=META_LIMITS)
    check_value(raw)
    if not isinstance(raw, Mapping):
        raise WireError(MALFORMED_PAYMENT, "_meta['x402/payment'] is not a JSON object")
    payload = parse_payment_payload(dict(raw))
    if not isinstance(payload, PaymentPayload):
        raise WireError(wire_errors.INVALID_X402_VERSION,
                        "MCP payments are x402Version 2 payloads")
    return payload


def _text(value: Mapping[str, Any]) -> types.TextContent:
    return types.TextContent(type="text", text=json.dumps(value, separators=(",", ":")))


def payment_required_result(required: PaymentRequired,
                            receipt: SettleResponse | None = None) -> types.CallToolResult:
    """The tool result that asks for a payment (or says a settlement failed: ``receipt``)."""
    body = required.to_wire()
    if receipt is not None:
        body[PAYMENT_RESPONSE_META_KEY] = receipt.to_wire()
    return types.CallToolResult(content=[_text(body)], structuredContent=body, isError=True)


def with_receipt(result: types.CallToolResult, receipt: SettleResponse) -> types.CallToolResult:
    """``result`` carrying ``receipt`` in its ``_meta`` (a copy; other meta kept)."""
    meta = dict(result.meta or {})
    meta[PAYMENT_RESPONSE_META_KEY] = receipt.to_wire()
    return result.model_copy(update={"meta": meta})


def error_result(reason: str, message: str) -> types.CallToolResult:
    """A tool error that is not about payment (a bad request, an upstream failure)."""
    body = {"error": reason, "message": message}
    return types.CallToolResult(content=[_text(body)], structuredContent=body, isError=True)


# ------------------------------------------------------------------ client side


def required_of(result: types.CallToolResult) -> PaymentRequired | None:
    """The ``PaymentRequired`` a tool result asks for; None if it asks for none.

    Read as the SDK reads it: only an error result; ``structuredContent`` first, then
    the first text block as JSON; a v2 object with a non-empty ``accepts``. A malformed
    offer is no offer (None): the result is then returned to the caller as it is.
    """
    if not result.isError:
        return None
    candidates: list[Any] = []
    if isinstance(result.structuredContent, dict):
        candidates.append(result.structuredContent)
    for block in result.content[:1]:
        if isinstance(block, types.TextContent):
            with contextlib.suppress(WireError):
                candidates.append(loads_object(block.text, limits=DEFAULT_LIMITS))
    for candidate in candidates:
        offer = _offer_in(candidate)
        if offer is not None:
            return offer
    return None


def required_of_error(error: types.ErrorData) -> PaymentRequired | None:
    """The ``PaymentRequired`` of a JSON-RPC error with code :data:`PAYMENT_REQUIRED_CODE`
    (its ``data``), the other form the SDK's client reads; None for any other error."""
    if error.code != PAYMENT_REQUIRED_CODE:
        return None
    return _offer_in(error.data)


def _offer_in(candidate: Any) -> PaymentRequired | None:
    """A v2 ``PaymentRequired`` with a non-empty ``accepts``, bounded; else None."""
    if not (isinstance(candidate, dict) and candidate.get("x402Version") == 2
            and isinstance(candidate.get("accepts"), list) and candidate["accepts"]):
        return None
    try:
        check_value(candidate, DEFAULT_LIMITS)
        fields = {k: v for k, v in candidate.items() if k != PAYMENT_RESPONSE_META_KEY}
        return PaymentRequired.from_wire(fields, reason=wire_errors.MALFORMED_PAYMENT_REQUIRED)
    except WireError:
        return None


def failed_receipt_of(result: types.CallToolResult) -> SettleResponse | None:
    """The failed settlement a payment-required result reports, if any."""
    body = result.structuredContent
    raw = body.get(PAYMENT_RESPONSE_META_KEY) if isinstance(body, dict) else None
    return _receipt(raw)


def receipt_of(result: types.CallToolResult) -> SettleResponse | None:
    """The receipt in a result's ``_meta``; None if absent or malformed (not trusted)."""
    return _receipt((result.meta or {}).get(PAYMENT_RESPONSE_META_KEY))


def _receipt(raw: Any) -> SettleResponse | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        check_value(raw)
        return SettleResponse.from_wire(dict(raw), reason=wire_errors.INVALID_PAYLOAD)
    except WireError:
        return None


def payment_meta(payload: PaymentPayload) -> dict[str, Any]:
    """The request ``_meta`` that carries ``payload``."""
    return {PAYMENT_META_KEY: payload.to_wire()}
