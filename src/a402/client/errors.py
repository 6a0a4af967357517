"""Why the paying client would not (or could not) pay, as machine-readable reasons.

An agent that hits a paywall has to decide what to do next without a human:
raise the limit, top up, try another provider, or give up. That decision needs
a stable code, not prose, plus what the server offered. Every refusal here is
raised *before* anything is signed, so a ``PaymentRefused`` always means no
authorization left this process and no money can move because of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from a402.wire.errors import MALFORMED_PAYMENT_REQUIRED as MALFORMED_PAYMENT_REQUIRED
from a402.wire.x402 import AnyPaymentRequirements

# --- why a whole 402 was refused (PaymentRefused.reason) ----------------------------
PRICE_ABOVE_MAXIMUM: Final = "price_above_maximum"
"""Some requirement was acceptable except that it costs more than the per-request maximum."""
BUDGET_EXHAUSTED: Final = "budget_exhausted"
"""Some requirement was acceptable and within the maximum, but the total budget cannot cover it."""
# MALFORMED_PAYMENT_REQUIRED (imported above from a402.wire.errors, shared with the
# vault): a 402 without a decodable x402 PaymentRequired (header or v1 body).
NO_ACCEPTABLE_REQUIREMENT: Final = "no_acceptable_requirement"
"""Nothing offered is something this client can or may sign (scheme, network, asset...)."""
MANDATE_SPEND_UNAVAILABLE: Final = "mandate_spend_unavailable"
"""A mandate-bound client could not read or write its spend store (or its registry
check failed unexpectedly): it refuses rather than pay unrecorded. Nothing was signed."""
SIGNING_FAILED: Final = "signing_failed"
"""The chosen requirement could not be signed; the budget reservation was released."""

# --- why one requirement was set aside (Rejection.reason) ---------------------------
UNSUPPORTED_SCHEME: Final = "unsupported_scheme"
NETWORK_NOT_ALLOWED: Final = "network_not_allowed"
ASSET_NOT_ALLOWED: Final = "asset_not_allowed"
UNSUPPORTED_TRANSFER_METHOD: Final = "unsupported_transfer_method"
UNSUPPORTED_PAYMENT_FLOW: Final = "unsupported_payment_flow"
MISSING_EIP712_DOMAIN: Final = "missing_eip712_domain"
INVALID_REQUIREMENTS: Final = "invalid_requirements"
# ... and PRICE_ABOVE_MAXIMUM / BUDGET_EXHAUSTED, which also apply per requirement.


@dataclass(frozen=True)
class Rejection:
    """One offered requirement the client set aside, and why."""

    index: int
    """Position in the server's ``accepts``."""
    requirements: AnyPaymentRequirements
    reason: str
    detail: str = ""


class PaymentError(Exception):
    """Base of the paying client's errors; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


class PaymentRefused(PaymentError):
    """The client decided not to pay this 402. Nothing was signed.

    ``offered`` is the server's ``accepts`` as received and ``rejections`` says
    why each was set aside, so a caller can, e.g., raise its limit only when
    the reason is ``price_above_maximum``.
    """

    def __init__(
        self,
        reason: str,
        message: str = "",
        *,
        url: str | None = None,
        offered: Sequence[AnyPaymentRequirements] = (),
        rejections: Sequence[Rejection] = (),
    ) -> None:
        super().__init__(reason, message)
        self.url = url
        self.offered = tuple(offered)
        self.rejections = tuple(rejections)


class BudgetExceeded(PaymentError):
    """A reservation would take an asset's spending past its limit."""

    def __init__(self, asset: str, amount: int, remaining: int) -> None:
        super().__init__(
            BUDGET_EXHAUSTED, f"{amount} units of {asset} requested, {remaining} remaining"
        )
        self.asset = asset
        self.amount = amount
        self.remaining = remaining
