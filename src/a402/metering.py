"""Usage-based prices: a metering rule, its parser, and the charge it puts on a response (pure).

A metered route has a maximum δ (what the payer authorises, what an A402 EXEC locks)
and a rate per unit of the response; the charge is ``min(⌊units × rate⌋, δ)`` in the
token's atomic units. The units are one of:

==============================  ===========================================================
``per-byte:RATE``               the response body's length, as sent (compressed, if the
                                handler compressed it)
``per-second:RATE``             the seconds the request ran (from EXEC to the response, on
                                the provider's clock)
``per-unit:RATE``               the count the handler reports in the ``A402-Units`` response
                                header (``header=NAME`` names another header)
``per-field:PATH:RATE``         an integer field of the JSON response body, by dotted path
                                (``per-field:usage.total_tokens:0.00002``)
``per-event:RATE``              the server-sent events in the body (a ``text/event-stream``
                                group: each event with a ``data`` line counts one)
==============================  ===========================================================

``per-field`` and ``per-event`` read the body *decoded*: a handler (or the upstream a
gateway forwards, asked by the payer's ``Accept-Encoding``) that answers with
``Content-Encoding: gzip`` or ``deflate`` is measured on what the payer reads once its
client has decoded it, as it would be uncompressed. Measured on the compressed bytes, an
event stream counted no events (delivered for nothing) and a JSON field was never found.
A coding the rule cannot decode (``br``, ``zstd``, …), a body that is not what its
coding says, or one that decodes larger than the rule reads (a compression bomb) is
unreadable (below).

and every rule ends with ``,max=MAX``: δ. ``RATE`` and ``MAX`` are in token units
(``0.000001`` USDC is one atomic unit); a rate may be finer than one atomic unit
per unit (the product is rounded *down*: the payer never pays for a fraction of an
atomic unit), the maximum must be a whole number of atomic units. On the command
line a rule follows its route: ``'GET /api/*=per-byte:0.000001,max=0.01'``
(:func:`parse_meter_spec`).

Safety. The charge never exceeds δ: a report above δ is **capped** at δ (the
response is delivered and δ charged; the payer authorised δ for this request, and
the provider's handler over-reporting cannot move more). A report that cannot be
read (no header, not a non-negative integer, a body that is not JSON or lacks the
field) is :class:`UsageUnreadable`: the caller charges nothing for that response
(the A402 provider enclave refuses the request, and nothing is signed). In A402
this code runs in the provider's enclave (:mod:`a402.provider_enclave`) on the
result it seals, and the charge is the amount of the payment message ``m`` with
the result hash (:mod:`a402.crypto.message`), so neither host can change it
afterwards; the vault enclave refuses a charge above the δ it locked. What the
provider's host still chooses is what it always chose: the response it reports
(the enclave charges for exactly the bytes it seals) and, for ``per-second``, the
clock (never beyond δ).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from typing import Final

from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimits, loads_object

#: The response header a handler reports its units in, unless the rule names another.
UNITS_HEADER: Final = "a402-units"
#: The largest JSON body a ``per-field`` rule parses (larger: unreadable, nothing charged).
MAX_JSON_BODY: Final = 4 * 1024 * 1024
#: The largest an encoded (``Content-Encoding``) event stream is decoded to for counting
#: (larger: unreadable, nothing charged); an unencoded one is counted whatever its size.
MAX_DECODED_EVENTS: Final = 64 * 1024 * 1024
#: The codings a rule decodes (``identity``: none); any other is unreadable.
_DECODERS: Final = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                    "deflate": zlib.MAX_WBITS}
#: Reports and counts above this are refused as nonsense (and rates can't overflow uint128).
MAX_UNITS: Final = 10**30
_U128: Final = 1 << 128
_JSON_LIMITS: Final = JsonLimits(max_bytes=MAX_JSON_BODY)
_DECIMAL: Final = re.compile(r"\$?([0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_FIELD: Final = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_HEADER: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_INTEGER: Final = re.compile(r"[0-9]{1,31}")


class MeterError(ValueError):
    """A metering rule the provider wrote cannot be used as given."""


class UsageUnreadable(ValueError):
    """The response does not carry the usage its rule reads: nothing is charged for it."""


class Unit(StrEnum):
    BYTE = "per-byte"
    SECOND = "per-second"
    UNIT = "per-unit"
    FIELD = "per-field"
    EVENT = "per-event"


@dataclass(frozen=True, slots=True)
class MeterRule:
    """One route's metering: ``unit`` × ``rate`` (atomic units per unit, exact), capped at
    ``maximum`` (δ, atomic). ``source``: the header (``per-unit``) or dotted JSON path
    (``per-field``) the units are read from."""

    unit: Unit
    rate: Fraction
    maximum: int
    source: str = ""
    #: The rule as written (for logs and the offer's description).
    text: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.maximum < _U128:
            raise MeterError("the maximum must be positive and fit in uint128")
        if self.rate < 0:
            raise MeterError("the rate cannot be negative")

    def units(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes,
              seconds: float) -> Fraction:
        """The units this response used, by the rule; :class:`UsageUnreadable` if it does
        not say. ``status`` is unused today (only successful responses are charged)."""
        del status
        if self.unit is Unit.BYTE:
            return Fraction(len(body))
        if self.unit is Unit.SECOND:
            if not 0 <= seconds < math.inf:  # also NaN (and ∞, which Fraction refuses)
                raise UsageUnreadable("the elapsed time is not a finite non-negative number")
            return Fraction(seconds)
        if self.unit is Unit.EVENT:
            return Fraction(count_events(decoded(headers, body, MAX_DECODED_EVENTS)))
        if self.unit is Unit.UNIT:
            return Fraction(_reported(headers, self.source))
        return Fraction(_field(decoded(headers, body, MAX_JSON_BODY), self.source))

    def charge(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes,
               seconds: float = 0.0) -> int:
        """``min(⌊units × rate⌋, maximum)``: what this response costs, never above δ."""
        units = self.units(status, headers, body, seconds)
        if units > MAX_UNITS:
            return self.maximum  # capped: a nonsense report moves δ at most
        return min(int(units * self.rate), self.maximum)


def count_events(body: bytes) -> int:
    """The server-sent events in ``body`` that carry data (a blank line ends each one)."""
    count = 0
    has_data = False
    for line in body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line:
            count += has_data
            has_data = False
        elif line == b"data" or line.startswith(b"data:"):
            has_data = True
    return count + has_data


def decoded(headers: Sequence[tuple[bytes, bytes]], body: bytes, limit: int) -> bytes:
    """``body`` undone of its ``Content-Encoding`` (the codings listed, last applied
    first), decoded to at most ``limit`` bytes; :class:`UsageUnreadable` for a coding
    not in :data:`_DECODERS`, a body that is not what its coding says, or one that
    decodes larger than ``limit`` (decoding stops there: a bomb costs ``limit``)."""
    codings = [c.strip().lower() for k, v in headers if k.lower() == b"content-encoding"
               for c in v.decode("latin-1").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in _DECODERS:
            raise UsageUnreadable(f"the body is encoded as {coding!r}, which the metering "
                                  "rule cannot decode (gzip and deflate it can)")
        body = _decode(coding, body, limit)
    return body


def readable_request(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A request's headers with its ``Accept-Encoding`` narrowed to the codings a rule
    decodes (``identity`` when it names none of them, or has none: an HTTP client such
    as the gateway's proxy adds its own default, ``br`` included where brotli is
    installed; ``*`` is dropped, it would admit any), so the handler a metered request
    runs against never answers in one the rule cannot read (``br``, ``zstd``:
    unreadable, withheld, nothing charged)."""
    offered = [part.strip() for k, v in headers if k.lower() == b"accept-encoding"
               for part in v.decode("latin-1").split(",") if part.strip()]
    kept = [part for part in offered
            if part.split(";", 1)[0].strip().lower() in (*_DECODERS, "identity")]
    narrowed = ", ".join(kept) if kept else "identity"
    return [*((k, v) for k, v in headers if k.lower() != b"accept-encoding"),
            (b"accept-encoding", narrowed.encode("latin-1"))]


def _decode(coding: str, body: bytes, limit: int) -> bytes:
    attempts = [_DECODERS[coding]] + ([-zlib.MAX_WBITS] if coding == "deflate" else [])
    for wbits in attempts:  # deflate: zlib-wrapped, as specified, or raw, as some send
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise UsageUnreadable(f"the {coding} body decodes larger than the "
                                  f"{limit} bytes the metering rule reads")
        if not inflater.eof or inflater.unused_data:
            break
        return out
    raise UsageUnreadable(f"the body is not the {coding} its Content-Encoding says")


def _reported(headers: Sequence[tuple[bytes, bytes]], name: str) -> int:
    wanted = name.lower().encode()
    values = [v for k, v in headers if k.lower() == wanted]
    if len(values) != 1:
        raise UsageUnreadable(f"the handler reported no single {name} header")
    text = values[0].strip().decode("latin-1")
    if _INTEGER.fullmatch(text) is None:
        raise UsageUnreadable(f"{name} is not a non-negative integer")
    return int(text)


def _field(body: bytes, path: str) -> int:
    # Bounded before parsing (size, depth, number length: a body of brackets must not
    # overflow the C stack) and strict (a duplicated key is ambiguous: refused).
    try:
        value: object = loads_object(body, limits=_JSON_LIMITS)
    except WireError as e:
        raise UsageUnreadable(f"the body is not a JSON object within limits: {e}") from None
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise UsageUnreadable(f"the body has no {path}")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNITS:
        raise UsageUnreadable(f"{path} is not a non-negative integer")
    return value


# ----------------------------------------------------------------------------- parsing


def _amount(text: str, decimals: int, what: str) -> Fraction:
    match = _DECIMAL.fullmatch(text.strip())
    if match is None:
        raise MeterError(f"{what} {text!r} is not a plain decimal number like '0.001'")
    try:
        value = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise MeterError(f"{what} {text!r} is not a number") from None
    return Fraction(value) * 10**decimals


def parse_rule(text: str, decimals: int) -> MeterRule:
    """``KIND[:PATH]:RATE,max=MAX[,header=NAME]`` → :class:`MeterRule` (see the module)."""
    if not isinstance(decimals, int) or not 0 <= decimals <= 36:
        raise MeterError(f"token decimals out of range: {decimals!r}")
    head, *options = [part.strip() for part in text.strip().split(",")]
    kind, _, rest = head.partition(":")
    try:
        unit = Unit(kind.strip().lower())
    except ValueError:
        raise MeterError(f"unknown metering unit {kind!r}: one of "
                         f"{', '.join(u.value for u in Unit)}") from None
    source = ""
    if unit is Unit.FIELD:
        path, _, rest = rest.partition(":")
        if _FIELD.fullmatch(path.strip()) is None:
            raise MeterError(f"{text!r}: per-field needs a dotted JSON path, e.g. "
                             "per-field:usage.total_tokens:0.00002")
        source = path.strip()
    if unit is Unit.UNIT:
        source = UNITS_HEADER
    if not rest:
        raise MeterError(f"{text!r} has no rate: '{unit.value}:RATE,max=MAX'")
    rate = _amount(rest, decimals, "rate")
    maximum: Fraction | None = None
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().lower()
        if not sep:
            raise MeterError(f"option {option!r} is not KEY=VALUE")
        if key == "max" and maximum is None:
            maximum = _amount(value, decimals, "maximum")
        elif key == "header" and unit is Unit.UNIT and _HEADER.fullmatch(value.strip()):
            source = value.strip().lower()
        else:
            raise MeterError(f"option {option!r} is unknown, repeated or malformed here")
    if maximum is None:
        raise MeterError(f"{text!r} has no max=MAX: a metered price needs its maximum δ")
    if maximum.denominator != 1:
        raise MeterError(f"the maximum in {text!r} has more precision than the token's "
                         f"{decimals} decimals")
    if maximum <= 0:
        raise MeterError(f"the maximum in {text!r} must be positive")
    return MeterRule(unit, rate, int(maximum), source, text.strip())


def parse_meter_spec(spec: str, decimals: int) -> tuple[str, MeterRule]:
    """``'METHOD /path=RULE'`` → ``(route pattern, rule)``: the first ``=`` separates
    (route patterns never hold one; a rule's ``max=`` does)."""
    pattern, sep, rule = spec.partition("=")
    if not sep or not pattern.strip() or not rule.strip():
        raise MeterError(f"meter spec {spec!r} is not 'METHOD /path=KIND:RATE,max=MAX'")
    return pattern.strip(), parse_rule(rule, decimals)


__all__ = [
    "MAX_JSON_BODY",
    "UNITS_HEADER",
    "MeterError",
    "MeterRule",
    "Unit",
    "UsageUnreadable",
    "count_events",
    "decoded",
    "parse_meter_spec",
    "parse_rule",
    "readable_request",
]
