"""What happened to the payer's money, in one of three words, from what the server said.

``a402 pay`` (and any caller) must say first whether money moved. A signed
authorization is only a promise; what the server answers tells which of three
states the payment is in:

``not_paid``
    the server refused the payment or did not settle it, and said so: a 402 with a
    fresh offer (invalid, insufficient funds, settlement failed: the transfer did not
    happen), a 502/503 with ``settlementAttempted: false`` (the facilitator was not
    reached before settling), or an error from the upstream API (>= 400, no receipt:
    the gateway settles only what it served);
``pending``
    money may be moving: a ``settlement_pending`` 402 (a transaction is submitted), a
    502/503 with ``settlementAttempted: true``, an authorization "in use", no answer
    at all, or a served response without a receipt. The authorization can still be
    settled until its ``validBefore``: resend the same payment header, do not sign a
    new one;
``settled``
    a receipt with ``success: true`` for this payer.

Safety: ``not_paid`` rests on the server's word (only the chain proves a signed
authorization unused), so it is only given where the server's answer states that no
transfer was made or attempted; anything ambiguous is ``pending``, never ``not_paid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from a402.client.records import Payment, PaymentStatus
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object

MoneyState = Literal["not_paid", "pending", "settled"]

NOT_PAID: Final = "not_paid"
PENDING: Final = "pending"
SETTLED: Final = "settled"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The money state of one payment, its machine-readable reason, and the first line a
    user reads (the money state first)."""

    state: MoneyState
    reason: str
    headline: str


def outcome_of(payment: Payment, response: httpx.Response | None) -> Outcome:
    """Classify ``payment`` from the ``response`` it got (None: no answer at all)."""
    amount = f"{payment.amount} atomic units of {payment.asset} to {payment.pay_to}"
    expiry = (f"it may still settle until {payment.valid_before} (unix time): resend the "
              "same payment, do not sign a new one")
    if response is None or payment.status in (PaymentStatus.SENT, PaymentStatus.UNKNOWN):
        return Outcome(PENDING, payment.reason or "no_answer",
                       f"payment sent, no answer: {expiry}")
    if payment.status == PaymentStatus.SETTLED:
        tx = payment.transaction or "no transaction named"
        return Outcome(SETTLED, "settled", f"paid and settled: {amount} (transaction {tx})")
    body = _json_body(response)
    reason = str(body.get("error") or payment.reason or "unknown")
    retry_same = body.get("retrySamePayment") is True
    attempted = body.get("settlementAttempted")
    receipt = payment.receipt
    if receipt is not None and receipt.error_reason == "settlement_pending":
        return Outcome(PENDING, "settlement_pending",
                       f"paid, settlement pending (transaction {receipt.transaction}); {expiry}")
    if payment.status == PaymentStatus.REJECTED:
        if retry_same:  # no fresh offer: the authorization is in use or pending
            return Outcome(PENDING, reason, f"payment may be settling ({reason}); {expiry}")
        return Outcome(NOT_PAID, reason,
                       f"nothing was paid: the server refused the payment ({reason}"
                       f"{_message(body)}); no transfer was made")
    # UNCONFIRMED: answered, without a successful receipt.
    if attempted is False:
        return Outcome(NOT_PAID, reason,
                       f"nothing was paid: HTTP {response.status_code} ({reason}) before any "
                       "settlement was attempted")
    if attempted is True:
        return Outcome(PENDING, reason,
                       f"paid, settlement pending: HTTP {response.status_code} ({reason}) "
                       f"while settling; {expiry}")
    if response.status_code >= 400 and receipt is None:
        return Outcome(NOT_PAID, "upstream_error",
                       f"nothing was paid: the service answered HTTP {response.status_code} "
                       "and settled nothing (a gateway settles only what it served)")
    if receipt is not None and not receipt.success:
        return Outcome(NOT_PAID, reason,
                       f"nothing was paid: the settlement failed ({reason}); "
                       "no transfer was made")
    return Outcome(PENDING, payment.reason or "no_receipt",
                   f"paid, settlement not confirmed ({payment.reason or 'no receipt'}); "
                   f"{expiry}")


def _json_body(response: httpx.Response) -> dict[str, Any]:
    """The server's JSON object, or ``{}``: decoded within the bounds of
    :mod:`a402.wire.jsonstrict`, so a hostile server's answer (nested 100,000 deep, a
    number 10,000 digits long) is an unreadable answer, not a RecursionError, or a
    crash, in the payer's process after its money may have moved."""
    try:
        return loads_object(response.content)
    except WireError:
        return {}


def _message(body: dict[str, Any]) -> str:
    message = body.get("message")
    return f": {message}" if isinstance(message, str) and message else ""
