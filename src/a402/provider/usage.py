"""How much an ``upto`` response used: the one hook between a handler and the charge (pure).

A route sold with x402 ``upto`` offers a maximum; the payer signs for at most that;
after the handler answers, the provider charges what the response actually used. The
handler (or a gateway's metering rule) reports that amount in one of two ways, read by
:func:`actual_amount`:

- the response header ``Settlement-Overrides: {"amount": "1234"}``, as the official
  x402 SDK's middlewares read it (``set_settlement_overrides``): atomic units, or a
  percentage of the maximum (``"50%"``, ``"12.5%"``, rounded down);
- the response header ``X-A402-Usage: 1234`` (atomic units);
- or, when neither header is present, a :data:`Meter` given to the middleware
  (``PaymentMiddleware(..., meter=...)``): a pure function of the buffered response
  (status, headers, body) and the maximum, e.g. a gateway's per-byte or per-token rule.

With none of them, the charge is the maximum (as the SDK does). Both headers are
removed from the response the payer receives.

Safety: the amount is the provider's word, bounded by the payer's signature. It is
never raised here: an amount above the maximum is passed on, and the facilitator (and
the upto proxy on-chain) refuse it, so nothing moves and nothing is delivered. An
unreadable report is an error (:class:`UsageError`): the response is withheld and
nothing is charged, rather than a guess in either party's disfavour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

SETTLEMENT_OVERRIDES: Final = "settlement-overrides"
"""The SDK's response header (``{"amount": ...}``)."""
USAGE_HEADER: Final = "x-a402-usage"
"""a402's plain form: the amount in atomic units."""
REPORT_HEADERS: Final = (SETTLEMENT_OVERRIDES.encode(), USAGE_HEADER.encode())
_MAX_REPORT: Final = 1024
_ATOMIC: Final = re.compile(r"[0-9]{1,78}")
_PERCENT: Final = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,2}))?%")


class UsageError(ValueError):
    """The response's usage report cannot be read: nothing may be charged on a guess."""


@dataclass(frozen=True)
class MeteredResponse:
    """What a :data:`Meter` sees: the handler's complete (buffered) response."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    maximum: int


Meter: TypeAlias = Callable[[MeteredResponse], int]
"""A metering rule: the amount (atomic units) a response used."""


def actual_amount(headers: list[tuple[bytes, bytes]], maximum: int) -> int | None:
    """The amount the response reports having used; None if it reports nothing."""
    reports = [(k.lower(), v) for k, v in headers if k.lower() in REPORT_HEADERS]
    if not reports:
        return None
    if len(reports) > 1:
        raise UsageError("the response reports its usage more than once")
    name, raw = reports[0]
    if len(raw) > _MAX_REPORT:
        raise UsageError("the usage report is too long")
    text = raw.decode("latin-1").strip()
    if name == USAGE_HEADER.encode():
        return _atomic(text)
    try:
        overrides = json.loads(text)
    except ValueError:
        raise UsageError("Settlement-Overrides is not JSON") from None
    if not isinstance(overrides, dict) or "amount" not in overrides:
        raise UsageError('Settlement-Overrides must be an object with an "amount"')
    amount = overrides["amount"]
    if isinstance(amount, int) and not isinstance(amount, bool):
        amount = str(amount)
    if not isinstance(amount, str):
        raise UsageError("the settlement amount must be a string")
    if percent := _PERCENT.fullmatch(amount):
        hundredths = int(percent[1]) * 100 + int((percent[2] or "").ljust(2, "0"))
        return maximum * hundredths // 10_000
    return _atomic(amount)


def _atomic(text: str) -> int:
    if not _ATOMIC.fullmatch(text):
        raise UsageError(f"the usage {text[:80]!r} is not a whole number of atomic units")
    value = int(text)
    if value >= 2**256:
        raise UsageError("the usage does not fit in a uint256")
    return value


def charge_for(response: MeteredResponse, meter: Meter | None) -> int:
    """The amount to settle for an upto response: its report, else ``meter``'s, else the
    maximum. Raises :class:`UsageError` for an unreadable report or a meter's failure."""
    reported = actual_amount(response.headers, response.maximum)
    if reported is not None:
        return reported
    if meter is None:
        return response.maximum
    try:
        metered = meter(response)
    except Exception as exc:
        raise UsageError(f"the metering rule failed: {exc}") from exc
    if isinstance(metered, bool) or not isinstance(metered, int) or metered < 0:
        raise UsageError(f"the metering rule gave {metered!r}, not an amount")
    return metered


def without_reports(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers the payer receives: the usage report is between the handler
    and the middleware."""
    return [(k, v) for k, v in headers if k.lower() not in REPORT_HEADERS]


__all__ = [
    "SETTLEMENT_OVERRIDES",
    "USAGE_HEADER",
    "Meter",
    "MeteredResponse",
    "UsageError",
    "actual_amount",
    "charge_for",
    "without_reports",
]
