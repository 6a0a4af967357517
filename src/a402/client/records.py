"""What the paying client records about a payment, and how it reads x402 responses.

A ``Payment`` is attached to the response it bought (``payment_of``) and kept
on the ``X402Auth`` (``payments``). Its status is what the *server said*; the
budget ignores it on purpose (see ``budget.py``): only the chain can prove a
signed authorization did not move money.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from a402.client import errors
from a402.client.budget import Reservation
from a402.client.choose import Offer
from a402.client.errors import PaymentRefused
from a402.evm.address import address_key
from a402.wire.errors import WireError
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    decode_settle_response,
)
from a402.wire.required import read_payment_required
from a402.wire.x402 import AnyPaymentRequired, SettleResponse

PAYMENT_EXTENSION: Final = "a402.payment"
"""Key of the ``Payment`` record in ``response.extensions``."""

# ------------------------------------------------------------------------ records


class PaymentStatus:
    SENT: Final = "sent"
    """Signed and on its way; no answer yet."""
    SETTLED: Final = "settled"
    """The server answered with a receipt saying ``success: true``."""
    REJECTED: Final = "rejected"
    """The server answered the paid attempt with another 402."""
    UNCONFIRMED: Final = "unconfirmed"
    """Answered, but with no successful receipt (missing, failed, or pending)."""
    UNKNOWN: Final = "unknown"
    """No answer at all (timeout, connection lost): it may still be settled."""


@dataclass
class Payment:
    """One signed payment and what became of it. Its amount stays in the budget."""

    method: str
    url: str
    offer: Offer
    payer: str
    nonce: str
    valid_before: int
    header_name: str
    header_value: str = field(repr=False)
    reservation: Reservation | None = field(default=None, repr=False)
    mandate_reservation: Any = field(default=None, repr=False)
    """The mandate's committed payment (``a402.mandate.guard.Committed``: its reservation,
    marked signed, and its evidence record's number), if any."""
    status: str = PaymentStatus.SENT
    receipt: SettleResponse | None = None
    reason: str | None = None

    @property
    def amount(self) -> int:
        """What was signed: the price (``exact``) or the maximum (``upto``); what the
        budget and the mandate count."""
        return self.offer.amount

    @property
    def charged(self) -> int | None:
        """``upto``: the amount the receipt says was settled (None until a receipt says);
        ``exact``: the price once settled."""
        if self.receipt is None or not self.receipt.success:
            return None
        if self.offer.view.scheme == "upto":
            amount = self.receipt.amount
            # ASCII digits only: the receipt is the server's word, and str.isdigit() also
            # takes '²' (which int() refuses) and other scripts' digits.
            return (int(amount) if amount is not None and amount.isascii()
                    and amount.isdigit() and len(amount) <= 78 else None)
        return self.amount

    @property
    def asset(self) -> str:
        return self.offer.asset

    @property
    def network(self) -> str:
        return self.offer.network

    @property
    def pay_to(self) -> str:
        return self.offer.pay_to

    @property
    def transaction(self) -> str | None:
        return (self.receipt.transaction or None) if self.receipt else None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what ``a402 pay`` prints)."""
        out: dict[str, Any] = {
            "success": self.status == PaymentStatus.SETTLED,
            "status": self.status,
            "transaction": self.transaction,
            "network": self.network,
            "payer": self.payer,
            "payTo": self.pay_to,
            "asset": self.asset,
            "amount": str(self.amount),
            "x402Version": self.offer.version,
        }
        if self.offer.view.scheme != "exact":
            out["scheme"] = self.offer.view.scheme
            if (charged := self.charged) is not None:
                out["charged"] = str(charged)
        if self.reason:
            out["reason"] = self.reason
        return out


# ------------------------------------------------------------------ wire helpers


def payment_required_of(response: httpx.Response) -> AnyPaymentRequired:
    """The PaymentRequired of a 402: the ``PAYMENT-REQUIRED`` header, else a JSON body.

    The body form is x402 v1; a v2 body is accepted too (some servers send
    both); see :func:`a402.wire.required.read_payment_required`. Anything else
    raises ``PaymentRefused(malformed_payment_required)``.
    """
    try:
        return read_payment_required(response.headers.get(PAYMENT_REQUIRED), response.content)
    except WireError as e:
        raise PaymentRefused(errors.MALFORMED_PAYMENT_REQUIRED, e.message,
                             url=_url_of(response)) from e


def _url_of(response: httpx.Response) -> str | None:
    try:
        return str(response.request.url)
    except RuntimeError:  # a Response built by hand has no request
        return None


def receipt_header(headers: httpx.Headers) -> str | None:
    return headers.get(PAYMENT_RESPONSE) or headers.get(X_PAYMENT_RESPONSE)


def receipt_of(response: httpx.Response) -> SettleResponse | None:
    """The decoded settlement receipt of a response, or None if it carries none.

    A receipt is the server's claim, not proof; ``transaction`` can be checked
    on-chain by anyone with an RPC endpoint.
    """
    payment = payment_of(response)
    if payment is not None:
        return payment.receipt
    value = receipt_header(response.headers)
    if not value:
        return None
    try:
        return decode_settle_response(value)
    except WireError:
        return None


def payment_of(response: httpx.Response) -> Payment | None:
    """The payment this client made to obtain ``response`` (None if it paid nothing)."""
    payment = response.extensions.get(PAYMENT_EXTENSION)
    return payment if isinstance(payment, Payment) else None


def conclude(payment: Payment, response: httpx.Response) -> None:
    """Record what the server said about the payment; the budget is left alone."""
    value = receipt_header(response.headers)
    receipt: SettleResponse | None = None
    if value:
        try:
            receipt = decode_settle_response(value)
        except WireError:
            payment.reason = "malformed_payment_response"
    payment.receipt = receipt
    if response.status_code == 402:
        payment.status = PaymentStatus.REJECTED
        payment.reason = (receipt.error_reason if receipt else None) or _error_of_402(response)
    elif receipt is not None and receipt.success:
        if receipt.payer and address_key(receipt.payer) != address_key(payment.payer):
            payment.status = PaymentStatus.UNCONFIRMED
            payment.reason = "receipt_payer_mismatch"
        else:
            payment.status = PaymentStatus.SETTLED
    else:
        payment.status = PaymentStatus.UNCONFIRMED
        if receipt is not None:
            payment.reason = receipt.error_reason or "settlement_failed"
        elif payment.reason is None:
            payment.reason = "no_receipt"


def _error_of_402(response: httpx.Response) -> str:
    try:
        return payment_required_of(response).error or "payment_rejected"
    except PaymentRefused:
        return "payment_rejected"
