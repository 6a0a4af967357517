"""What the provider answers when it does not simply serve: 402s, 502/503s, receipts.

Every refusal carries a machine-readable ``error`` (a reason code) and a human
``message``, in the body *and*, for 402s, in the ``PAYMENT-REQUIRED`` header,
because x402 clients and their users complained that failures arrived as an
empty ``{}`` (x402 issues #804, #3223, #3224).

The 402 body is an x402 **v1** ``PaymentRequired`` (``x402Version: 1``,
``accepts`` with ``maxAmountRequired``) so v1-only clients can pay, while v2
clients read the header. Extra keys in the body (``message``, ``transaction``)
are ignored by v1 parsers.

Some answers deliberately offer *no* new payment (no ``PAYMENT-REQUIRED``, no
``accepts``): ``settlement_pending``, a lost settle answer, and a payment that
another request is using right now. There the payer's money may already be
moving; the right move is to resend the same payment header later, and a
client that re-signed on seeing a fresh offer would pay twice (x402 issue #808).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.types import Send

from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    encode_header,
)
from a402.wire.x402 import (
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
)

# Reason codes the provider adds to the x402 ones (a402 additions).
PAYMENT_REQUIRED_REASON: Final = "payment_required"
NO_MATCHING_REQUIREMENTS: Final = "no_matching_payment_requirements"
PAYMENT_ALREADY_USED: Final = "payment_already_used"
PAYMENT_TERMS_MISMATCH: Final = "payment_terms_mismatch"
FACILITATOR_UNAVAILABLE: Final = "facilitator_unavailable"
FACILITATOR_ERROR: Final = "facilitator_error"

EXPOSED_HEADERS: Final = f"{PAYMENT_REQUIRED}, {PAYMENT_RESPONSE}, {X_PAYMENT_RESPONSE}"


@dataclass(frozen=True)
class Offer:
    """What one paid request costs, in both protocol versions."""

    requirements: PaymentRequirements
    resource: ResourceInfo
    requirements_v1: PaymentRequirementsV1
    #: Further ways to pay, listed after ``requirements`` (e.g. ``a402``).
    alternatives: tuple[PaymentRequirements, ...] = ()
    alternatives_v1: tuple[PaymentRequirementsV1, ...] = ()
    #: False: the x402 requirement cannot be offered now (an ``upto`` route whose
    #: facilitator did not answer); only the alternatives are listed.
    x402: bool = True

    def payment_required(self, error: str) -> PaymentRequired:
        return PaymentRequired(error=error, resource=self.resource, accepts=[
            *([self.requirements] if self.x402 else []), *self.alternatives])


@dataclass
class Reply:
    """A complete response the middleware sends instead of (or after) the app's."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        raw.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _common(extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        ("access-control-expose-headers", EXPOSED_HEADERS),
        *extra,
    ]


def receipt_header(settlement: SettleResponse, version: int) -> tuple[str, str]:
    """``PAYMENT-RESPONSE`` for a v2 payer, ``X-PAYMENT-RESPONSE`` for a v1 payer."""
    name = PAYMENT_RESPONSE if version == 2 else X_PAYMENT_RESPONSE
    return name, encode_header(settlement)


def payment_required(
    offer: Offer,
    error: str,
    message: str,
    *,
    settlement: SettleResponse | None = None,
    version: int = 2,
    **details: Any,
) -> Reply:
    """402 with a fresh offer: header (v2) and body (v1), both naming ``error``."""
    body: dict[str, Any] = {
        "x402Version": 1,
        "error": error,
        "message": message,
        "accepts": [*([offer.requirements_v1.to_wire()] if offer.x402 else []),
                    *(a.to_wire() for a in offer.alternatives_v1)],
        **{k: v for k, v in details.items() if v is not None},
    }
    headers = [(PAYMENT_REQUIRED, encode_header(offer.payment_required(error)))]
    if settlement is not None:
        headers.append(receipt_header(settlement, version))
    return Reply(402, _json(body), _common(headers))


def settlement_pending(settlement: SettleResponse, version: int, retry_after: int) -> Reply:
    """402 without a new offer: the same payment header must be sent again."""
    body = {
        "error": settlement.error_reason or "settlement_pending",
        "message": (
            "the payment was submitted on-chain but is not confirmed yet; nothing was served. "
            "Send the same request again with the SAME payment header (do not sign a new "
            "payment); it will be served once the transfer is confirmed"
        ),
        "transaction": settlement.transaction,
        "network": settlement.network,
        "retrySamePayment": True,
    }
    headers = [receipt_header(settlement, version), ("retry-after", str(retry_after))]
    return Reply(402, _json(body), _common(headers))


def payment_in_use(message: str, retry_after: int) -> Reply:
    """402 without a new offer: this authorization is busy (in flight or pending)."""
    body = {"error": PAYMENT_ALREADY_USED, "message": message, "retrySamePayment": True}
    return Reply(402, _json(body), _common([("retry-after", str(retry_after))]))


def facilitator_failed(
    status: int, error: str, message: str, *, retry_after: int, settle_attempted: bool
) -> Reply:
    """502/503: we could not get a verdict; nothing was charged that we know of."""
    body: dict[str, Any] = {
        "error": error,
        "message": message,
        "retrySamePayment": True,
        "settlementAttempted": settle_attempted,
    }
    if settle_attempted:
        body["message"] = (
            f"{message}. The settlement may or may not have gone through: send the same request "
            "again with the SAME payment header (do not sign a new payment); you will be "
            "charged at most once"
        )
    return Reply(status, _json(body), _common([("retry-after", str(retry_after))]))
