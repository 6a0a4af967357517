"""x402 HTTP header names and the base64-JSON codec their values use.

We *emit* exactly what every SDK emits: RFC 4648 standard base64, with padding,
of compact UTF-8 JSON. We *accept* a little more: surrounding or folded
whitespace, the URL-safe alphabet and missing padding. That leniency is safe
because the header is only a transport: what it decodes to is validated as a
model and, for payments, authenticated by the EIP-712 signature, so two
spellings of the same bytes cannot change what is paid. (Anything that must be
idempotent therefore keys on the authorization nonce, never on the header
string.) What we refuse: mixed alphabets, stray characters, impossible
lengths, invalid UTF-8, non-object JSON, duplicate keys, oversize values.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

from a402.wire.errors import INVALID_PAYLOAD, WireError
from a402.wire.jsonstrict import JsonLimitError, loads_object
from a402.wire.model import WireModel
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequired,
    SettleResponse,
    parse_payment_payload,
    parse_payment_required,
)

PAYMENT_REQUIRED: Final = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE: Final = "PAYMENT-RESPONSE"
X_PAYMENT: Final = "X-PAYMENT"  # v1 request
X_PAYMENT_RESPONSE: Final = "X-PAYMENT-RESPONSE"  # v1 response

# Far above any real x402 header (a few KB), far below what would hurt to decode.
MAX_HEADER_CHARS: Final = 64 * 1024

_WHITESPACE = re.compile(r"[ \t\r\n]+")
_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def encode_header(value: WireModel | dict[str, Any]) -> str:
    """Encode a model (omitting absent fields) or a plain dict (as given)."""
    if isinstance(value, WireModel):
        text = value.to_json()
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_header(value: str | bytes, *, reason: str = INVALID_PAYLOAD) -> dict[str, Any]:
    """Decode a header value to a JSON object, or raise WireError(reason).

    The JSON is bounded like a body (:mod:`a402.wire.jsonstrict`); a header over a
    limit is refused with the caller's ``reason`` (x402 peers know that spelling),
    the limit named in the message.
    """
    try:
        return loads_object(_b64decode(value, reason), reason=reason)
    except JsonLimitError as exc:
        raise WireError(reason, exc.message) from exc


def _b64decode(value: str | bytes, reason: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise WireError(reason, "header is not ASCII") from None
    if not isinstance(value, str):
        raise WireError(reason, f"header must be a string, got {type(value).__name__}")
    if len(value) > MAX_HEADER_CHARS:
        raise WireError(reason, f"header longer than {MAX_HEADER_CHARS} characters")
    text = _WHITESPACE.sub("", value)
    if not text:
        raise WireError(reason, "empty header")
    if _STD.fullmatch(text) is None:
        if _URLSAFE.fullmatch(text) is None:
            raise WireError(reason, "header is not base64")
        text = text.translate(str.maketrans("-_", "+/"))
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise WireError(reason, "impossible base64 length")
    padded = body + "=" * (-len(body) % 4)
    if len(text) != len(body) and text != padded:
        raise WireError(reason, "wrong base64 padding")
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(reason, f"bad base64: {exc}") from exc


def decode_payment_required(value: str | bytes) -> AnyPaymentRequired:
    return parse_payment_required(decode_header(value))


def decode_payment_payload(value: str | bytes) -> AnyPaymentPayload:
    return parse_payment_payload(decode_header(value))


def decode_settle_response(value: str | bytes) -> SettleResponse:
    return SettleResponse.from_wire(decode_header(value), reason=INVALID_PAYLOAD)
