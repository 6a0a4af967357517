"""The x402 A2A extension as data (pure): URIs, metadata keys, statuses, error codes, terms.

Both sides of a paid A2A task speak through ``message.metadata`` (reference
§2.3, §2.4): the agent's status message carries ``x402.payment.status`` and the
offer or the receipts, the client's message carries the status and its signed
payload. This module owns those names and the small conversions around them so
that the provider and the client cannot drift apart; it imports no A2A SDK.

Payloads are x402 version 2 (``amount``, CAIP-2 networks), as in the x402 A2A
transport (``x402-foundation/x402`` ``specs/transports-v2/a2a.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from a402.evm.address import address_key
from a402.exact.eip3009 import SCHEME_EXACT
from a402.wire import errors as wire_errors
from a402.wire.errors import WireError
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)

# ------------------------------------------------------------------- extension URIs

X402_EXTENSION_URI: Final = "https://github.com/google-a2a/a2a-x402/v0.1"
"""The URI we advertise: the one the x402 v2 A2A transport names, whose payloads
(x402Version 2) are the ones we send and accept."""
X402_EXTENSION_URI_V02: Final = "https://github.com/google-agentic-commerce/a2a-x402/blob/main/spec/v0.2"
"""The a2a-x402 spec v0.2 URI: same keys and statuses, accepted on input."""
X402_EXTENSION_URIS: Final = (X402_EXTENSION_URI, X402_EXTENSION_URI_V02)
"""Every URI that activates the extension here (reference §2.2: one declared, all accepted)."""

EXTENSION_HEADERS: Final = ("A2A-Extensions", "X-A2A-Extensions")
"""The headers that activate an extension: A2A 1.0's name, and the ``X-`` name of
A2A 0.3 that the x402 A2A transport tells clients to send. The agent reads both
on either wire; the paying client sends both, so an agent that reads only one
of them still sees the activation."""

# -------------------------------------------------------------------- metadata keys

STATUS_KEY: Final = "x402.payment.status"
REQUIRED_KEY: Final = "x402.payment.required"
PAYLOAD_KEY: Final = "x402.payment.payload"
RECEIPTS_KEY: Final = "x402.payment.receipts"
ERROR_KEY: Final = "x402.payment.error"

# ------------------------------------------------------------------------- statuses

PAYMENT_REQUIRED: Final = "payment-required"
PAYMENT_SUBMITTED: Final = "payment-submitted"
PAYMENT_VERIFIED: Final = "payment-verified"
PAYMENT_REJECTED: Final = "payment-rejected"
PAYMENT_COMPLETED: Final = "payment-completed"
PAYMENT_FAILED: Final = "payment-failed"

# ---------------------------------------------------------------------- error codes
# ``x402.payment.error`` carries the a2a-x402 spec's code when one fits; the exact
# x402 reason (the facilitator's invalidReason / errorReason) always goes into the
# failure receipt's ``errorReason``, so nothing is lost by the coarser code.

INSUFFICIENT_FUNDS: Final = "INSUFFICIENT_FUNDS"
INVALID_SIGNATURE: Final = "INVALID_SIGNATURE"
EXPIRED_PAYMENT: Final = "EXPIRED_PAYMENT"
DUPLICATE_NONCE: Final = "DUPLICATE_NONCE"
NETWORK_MISMATCH: Final = "NETWORK_MISMATCH"
INVALID_AMOUNT: Final = "INVALID_AMOUNT"
SETTLEMENT_FAILED: Final = "SETTLEMENT_FAILED"

# a402 reasons with no x402 spelling (snake_case, like the x402 codes).
PAYMENT_ALREADY_USED: Final = "payment_already_used"
"""The authorization already bought a result (or is being used right now), in any task."""
NO_MATCHING_REQUIREMENTS: Final = "no_matching_payment_requirements"
"""The payload answers terms this agent did not offer."""
FACILITATOR_UNAVAILABLE: Final = "facilitator_unavailable"
"""No verdict from the facilitator; retryable with the same payload."""
SERVICE_FAILED: Final = "service_failed"
"""The paid function failed after verification; nothing was settled."""
PAYMENT_REJECTED_BY_CLIENT: Final = "payment_rejected_by_client"

RETRYABLE_ERRORS: Final = frozenset({FACILITATOR_UNAVAILABLE, wire_errors.SETTLEMENT_PENDING})
"""Errors that leave the task in ``input-required``: the client must resend the
*same* payload (never a new one: the old one may still settle)."""

_SPEC_CODES: Final[Mapping[str, str]] = {
    wire_errors.INSUFFICIENT_BALANCE: INSUFFICIENT_FUNDS,
    wire_errors.INVALID_SIGNATURE: INVALID_SIGNATURE,
    wire_errors.FAILED_TO_VERIFY_SIGNATURE: INVALID_SIGNATURE,
    wire_errors.VALID_BEFORE_EXPIRED: EXPIRED_PAYMENT,
    wire_errors.NONCE_ALREADY_USED: DUPLICATE_NONCE,
    PAYMENT_ALREADY_USED: DUPLICATE_NONCE,
    wire_errors.NETWORK_MISMATCH: NETWORK_MISMATCH,
    wire_errors.INVALID_NETWORK: NETWORK_MISMATCH,
    wire_errors.AUTHORIZATION_VALUE_MISMATCH: INVALID_AMOUNT,
    wire_errors.TRANSACTION_FAILED: SETTLEMENT_FAILED,
    wire_errors.UNEXPECTED_SETTLE_ERROR: SETTLEMENT_FAILED,
}


def error_code(reason: str) -> str:
    """The ``x402.payment.error`` value for an x402/a402 reason: the spec code, else the reason."""
    return _SPEC_CODES.get(reason, reason)


# ----------------------------------------------------------------------- the terms


@dataclass(frozen=True)
class PaymentTerms:
    """What one task costs, as the AgentCard (and so the chain) states it.

    These are the extension's ``params`` on the card. A client compares every
    offer it receives against the terms of the card it verified on-chain, so a
    served offer cannot raise the price or redirect the money.
    """

    network: str
    asset: str
    amount: int
    pay_to: str
    scheme: str = SCHEME_EXACT

    def to_params(self) -> dict[str, str]:
        """Card ``params``; all strings, because a protobuf Struct turns numbers into doubles."""
        return {
            "scheme": self.scheme,
            "network": self.network,
            "asset": self.asset,
            "amount": str(self.amount),
            "payTo": self.pay_to,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PaymentTerms:
        """Parse card ``params``; WireError(invalid_payment_requirements) if incomplete."""
        fields = {}
        for key in ("scheme", "network", "asset", "amount", "payTo"):
            value = params.get(key)
            if not isinstance(value, str) or not value:
                raise WireError(wire_errors.INVALID_PAYMENT_REQUIREMENTS,
                                f"card terms lack {key!r}")
            fields[key] = value
        amount = fields["amount"]
        if not amount.isascii() or not amount.isdigit():
            raise WireError(wire_errors.INVALID_PAYMENT_REQUIREMENTS,
                            "card amount is not a decimal integer")
        return cls(
            network=fields["network"], asset=fields["asset"], amount=int(amount),
            pay_to=fields["payTo"], scheme=fields["scheme"],
        )

    def admits(self, req: PaymentRequirements) -> bool:
        """Does ``req`` ask for exactly these terms (addresses compared case-insensitively)?"""
        try:
            amount = req.amount_int
        except WireError:
            return False
        return (
            req.scheme == self.scheme
            and req.network == self.network
            and amount == self.amount
            and address_key(req.asset) == address_key(self.asset)
            and address_key(req.pay_to) == address_key(self.pay_to)
        )


# ---------------------------------------------------------------- metadata values


def from_struct(value: Any) -> Any:
    """Undo protobuf's number widening in metadata read off an A2A message.

    A2A 1.0 metadata is a ``google.protobuf.Struct``, whose only number type is
    a double: ``x402Version: 2`` arrives as ``2.0`` and ``maxTimeoutSeconds: 60``
    as ``60.0`` whatever the sender wrote, which strict x402 models rightly
    refuse. This is the one place a reader of A2A metadata (the agent and the
    paying client both) relaxes that, and only strictly: an integral double in
    the exactly representable range (``|x| <= 2**53``) becomes an int
    (``2.0`` -> ``2``); any other number stays a float, so ``2.5`` (or ``1e300``)
    is then refused by the strict wire models as before. Money is never affected
    because x402 carries amounts as decimal strings (a number there stays refused).
    """
    if isinstance(value, float) and value.is_integer() and math.fabs(value) <= 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {k: from_struct(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [from_struct(v) for v in value]
    return value


def status_of(metadata: Mapping[str, Any]) -> str | None:
    status = metadata.get(STATUS_KEY)
    return status if isinstance(status, str) else None


def receipts_of(metadata: Mapping[str, Any]) -> list[SettleResponse]:
    """The receipts in ``metadata`` (oldest first); malformed entries are skipped, not trusted."""
    raw = metadata.get(RECEIPTS_KEY)
    out: list[SettleResponse] = []
    if isinstance(raw, list):
        for item in from_struct(raw):
            try:
                out.append(SettleResponse.from_wire(item, reason=wire_errors.INVALID_PAYLOAD))
            except WireError:
                continue
    return out


def payment_required_metadata(
    required: PaymentRequired,
    *,
    error: str | None = None,
    receipts: Iterable[SettleResponse] = (),
) -> dict[str, Any]:
    meta: dict[str, Any] = {STATUS_KEY: PAYMENT_REQUIRED, REQUIRED_KEY: required.to_wire()}
    if error is not None:
        meta[ERROR_KEY] = error
    receipts = list(receipts)
    if receipts:
        meta[RECEIPTS_KEY] = [r.to_wire() for r in receipts]
    return meta


def submitted_metadata(payload: PaymentPayload) -> dict[str, Any]:
    return {STATUS_KEY: PAYMENT_SUBMITTED, PAYLOAD_KEY: payload.to_wire()}


def rejected_metadata() -> dict[str, Any]:
    return {STATUS_KEY: PAYMENT_REJECTED}


def verified_metadata() -> dict[str, Any]:
    return {STATUS_KEY: PAYMENT_VERIFIED}


def completed_metadata(receipts: Iterable[SettleResponse]) -> dict[str, Any]:
    return {STATUS_KEY: PAYMENT_COMPLETED, RECEIPTS_KEY: [r.to_wire() for r in receipts]}


def failed_metadata(
    reason: str, receipts: Iterable[SettleResponse], *, status: str = PAYMENT_FAILED
) -> dict[str, Any]:
    return {
        STATUS_KEY: status,
        ERROR_KEY: error_code(reason),
        RECEIPTS_KEY: [r.to_wire() for r in receipts],
    }


def failure_receipt(
    reason: str, message: str, *, network: str, payer: str | None = None,
    transaction: str = "",
) -> SettleResponse:
    """A ``success: false`` receipt, the form the spec asks for on every failure."""
    return SettleResponse(
        success=False, error_reason=reason, error_message=message or None,
        transaction=transaction, network=network, payer=payer,
    )
