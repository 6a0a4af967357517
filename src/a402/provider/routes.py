"""Which requests cost what: route patterns, exact prices, and the lookup table (pure).

A route is written the way people say it: ``"GET /weather"``, ``"GET /api/*"``,
``"/items/:id"`` (no method = any method). Prices are either token units as a
decimal string (``"0.001"`` or ``"$0.001"``) or an ``int`` of atomic units.

Money is never a float here: a decimal string goes through ``Decimal`` and
must convert to a whole number of atomic units with the token's decimals, so
``"0.0000001"`` for a 6-decimal token is refused instead of being rounded to
something the provider did not write.

Matching is done on a normalised path (duplicate slashes collapsed, ``.`` and
``..`` resolved, trailing slash ignored) so that a reverse proxy cannot be
walked around with ``/free/../paid`` or ``//paid``: when our reading of a path
differs from the upstream's, ours must be the one that charges. For the same
reason ``HEAD`` is priced like ``GET`` (most frameworks answer a HEAD with
the GET handler) and a trailing ``*`` also covers the bare prefix
(``/api/*`` charges ``/api``). ``OPTIONS`` is free unless a route names it:
browsers send CORS preflights without payment headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from types import MappingProxyType
from typing import Final, TypeAlias

from a402.memo import keeps
from a402.metering import MeterError, MeterRule, parse_rule

Price: TypeAlias = str | int | Decimal
"""A price: token units as a decimal string (``"0.01"``, ``"$0.01"``), or atomic units as an int."""

HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_PRICE = re.compile(r"\$?([0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_PARAM = re.compile(r":[A-Za-z_][A-Za-z0-9_]*")
_MAX_DECIMALS: Final = 77  # a uint256 has 78 digits; no real token goes near it
_UINT256_MAX: Final = 2**256 - 1
# Decimal's default context keeps 28 digits and *rounds* beyond that; a price
# converts in a context wide enough for any uint256 that traps any rounding.
#: How many request lines :meth:`RouteTable.match` remembers the match of.
_MATCH_CACHE: Final = 1024
_EXACT: Final = Context(prec=200, traps=[InvalidOperation, Inexact, Rounded])


class RouteError(ValueError):
    """A route pattern or price the provider wrote cannot be used as given."""


# ----------------------------------------------------------------------------- prices


def to_atomic(price: Price, decimals: int) -> int:
    """Convert a price to atomic token units, exactly, or raise RouteError.

    ``int`` prices are already atomic. Strings are token units and may carry a
    leading ``$`` (x402 examples price USDC that way); more fractional digits
    than the token has is an error, never a rounding.
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise RouteError(f"token decimals must be an int, got {decimals!r}")
    if not 0 <= decimals <= _MAX_DECIMALS:
        raise RouteError(f"token decimals out of range: {decimals}")
    if isinstance(price, bool):
        raise RouteError("a price cannot be a bool")
    if isinstance(price, int):
        atomic = price
    elif isinstance(price, Decimal):
        atomic = _scale(price, decimals, str(price))
    elif isinstance(price, str):
        text = price.strip()
        match = _PRICE.fullmatch(text)
        if match is None:
            raise RouteError(f"price {price!r} is not a plain decimal number like '0.001'")
        atomic = _scale(Decimal(match.group(1)), decimals, price)
    else:
        raise RouteError(f"price must be str, int or Decimal, got {type(price).__name__}")
    if atomic <= 0:
        raise RouteError(f"price {price!r} must be positive (leave free routes out of the table)")
    if atomic > _UINT256_MAX:
        raise RouteError(f"price {price!r} does not fit in uint256")
    return atomic


def _scale(value: Decimal, decimals: int, shown: str) -> int:
    if not value.is_finite():
        raise RouteError(f"price {shown!r} is not a finite number")
    try:
        scaled = value.scaleb(decimals, context=_EXACT)
        integral = scaled.to_integral_value(context=_EXACT)
    except (InvalidOperation, Inexact, Rounded) as exc:
        raise RouteError(f"price {shown!r} cannot be converted exactly") from exc
    if scaled != integral:
        raise RouteError(
            f"price {shown!r} has more precision than the token's {decimals} decimals"
        )
    return int(integral)


# --------------------------------------------------------------------------- patterns


def normalize_path(path: str) -> str:
    """The path as a matcher should see it: ``//a/./b/../c/`` → ``/a/c``.

    ``..`` above the root stays at the root, as HTTP servers resolve it.
    """
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


@dataclass(frozen=True)
class RoutePattern:
    """A parsed ``"[METHOD ]/path"`` pattern.

    Segments: a literal, ``:name`` (exactly one segment), ``*`` (exactly one
    segment, or, as the last segment, everything below including nothing).
    """

    text: str
    method: str | None
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RoutePattern:
        if not isinstance(text, str):
            raise RouteError(f"route pattern must be a string, got {type(text).__name__}")
        parts = text.split()
        if len(parts) == 1:
            method, path = None, parts[0]
        elif len(parts) == 2:
            method, path = parts[0].upper(), parts[1]
            if method == "*":
                method = None
            elif method not in HTTP_METHODS:
                raise RouteError(f"unknown HTTP method {parts[0]!r} in route {text!r}")
        else:
            raise RouteError(f"route {text!r} is not '[METHOD] /path'")
        if not path.startswith("/"):
            raise RouteError(f"route path must start with '/': {text!r}")
        if "?" in path or "#" in path:
            raise RouteError(f"route path cannot carry a query or fragment: {text!r}")
        segments = tuple(s for s in normalize_path(path).split("/") if s)
        for seg in segments:
            if seg.startswith(":") and _PARAM.fullmatch(seg) is None:
                raise RouteError(f"bad parameter {seg!r} in route {text!r}")
            if "*" in seg and seg != "*":
                raise RouteError(f"'*' must be a whole segment in route {text!r}")
        return cls(text=text, method=method, segments=segments)

    @property
    def specificity(self) -> tuple[int, int, int, int, int]:
        """Sort key, larger = more specific: the most specific matching route wins.

        No trailing wildcard beats one; then more literal segments, more
        parameters, more segments overall, and a named method over any method.
        """
        literals = sum(1 for s in self.segments if s != "*" and not s.startswith(":"))
        params = sum(1 for s in self.segments if s.startswith(":"))
        tail_wildcard = bool(self.segments) and self.segments[-1] == "*"
        return (
            0 if tail_wildcard else 1,
            literals,
            params,
            len(self.segments),
            1 if self.method else 0,
        )

    def matches_method(self, method: str) -> bool:
        method = method.upper()
        if self.method is None:
            return method != "OPTIONS"
        return self.method == method or (self.method == "GET" and method == "HEAD")

    def match_path(self, path: str) -> dict[str, str] | None:
        """Parameters captured from an already-normalised path, or None."""
        parts = [s for s in path.split("/") if s]
        segs = self.segments
        if segs and segs[-1] == "*":
            head = segs[:-1]
            if len(parts) < len(head):
                return None
        else:
            head = segs
            if len(parts) != len(head):
                return None
        params: dict[str, str] = {}
        for seg, part in zip(head, parts, strict=False):
            if seg == "*":
                continue
            if seg.startswith(":"):
                params[seg[1:]] = part
            elif seg != part:
                return None
        return params


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class RouteConfig:
    """A price with the optional text x402 puts in ``resource`` for clients and catalogs."""

    price: Price
    description: str = ""
    mime_type: str = ""
    scheme: str = "exact"
    """``"exact"``: the price is charged; ``"upto"``: the price is a maximum, and the
    response's usage is charged (:mod:`a402.provider.usage`)."""
    #: A usage-based price (:mod:`a402.metering`): a rule, or its text
    #: (``"per-field:usage.total_tokens:0.00002,max=0.05"``, read with the token's
    #: decimals); ``price`` must then be its maximum δ. An A402 channel charges by it;
    #: with ``scheme="upto"`` an x402 payment settles what it measures too (at most δ);
    #: with ``"exact"`` an x402 payment pays δ.
    meter: MeterRule | str | None = None


@dataclass(frozen=True)
class PaidRoute:
    pattern: RoutePattern
    amount: int
    """The price in atomic token units (for ``upto`` or a metered route, the maximum)."""
    description: str = ""
    mime_type: str = ""
    scheme: str = "exact"
    #: Set for a metered route: an A402 channel charges by it, at most ``amount``.
    meter: MeterRule | None = None


@dataclass(frozen=True)
class RouteMatch:
    """A request line's paid route and the parameters its path gave. Read-only: the table
    hands the same match to every request with that line."""

    route: PaidRoute
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def amount(self) -> int:
        return self.route.amount


RouteSpecs: TypeAlias = (
    "Mapping[str, Price | RouteConfig] | Iterable[tuple[str, Price | RouteConfig]]"
)


class RouteTable:
    """Paid routes; ``match`` picks the most specific one, ties going to the first declared."""

    def __init__(self, routes: Iterable[PaidRoute]) -> None:
        self.routes: tuple[PaidRoute, ...] = tuple(routes)
        seen: set[tuple[str | None, tuple[str, ...]]] = set()
        for route in self.routes:
            key = (route.pattern.method, route.pattern.segments)
            if key in seen:
                raise RouteError(f"route {route.pattern.text!r} is declared twice")
            seen.add(key)
        order = sorted(
            enumerate(self.routes), key=lambda item: (item[1].pattern.specificity, -item[0]),
            reverse=True,
        )
        self._ordered = tuple(route for _, route in order)
        #: ``(method, path)`` → its match, as last computed: a paid request's route is
        #: read several times (its price, its metering rule, the executor's), and the
        #: table never changes. Bounded: emptied when full (distinct paths are unbounded).
        self._matched: dict[tuple[str, str], RouteMatch | None] = {}

    @classmethod
    def build(cls, routes: RouteSpecs, *, decimals: int) -> RouteTable:
        """Build from ``{"GET /x": "0.01", ...}`` or ``[("GET /x", RouteConfig(...)), ...]``."""
        items = routes.items() if isinstance(routes, Mapping) else routes
        paid = []
        for pattern, spec in items:
            config = spec if isinstance(spec, RouteConfig) else RouteConfig(price=spec)
            if config.scheme not in ("exact", "upto"):
                raise RouteError(f"route {pattern!r}: scheme {config.scheme!r} is not "
                                 "'exact' or 'upto'")
            amount = to_atomic(config.price, decimals)
            rule = config.meter
            if isinstance(rule, str):
                try:
                    rule = parse_rule(rule, decimals)
                except MeterError as e:
                    raise RouteError(f"route {pattern!r}: {e}") from None
            if rule is not None and rule.maximum != amount:
                raise RouteError(f"route {pattern!r}: its price ({amount} atomic units) is "
                                 f"not its metering rule's max ({rule.maximum})")
            paid.append(
                PaidRoute(
                    pattern=RoutePattern.parse(pattern),
                    amount=amount,
                    description=config.description,
                    mime_type=config.mime_type,
                    scheme=config.scheme,
                    meter=rule,
                )
            )
        return cls(paid)

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The most specific route for ``method`` and ``path``, or None (free). The same
        :class:`RouteMatch` may be returned again for the same request line: read it,
        never change it."""
        key = (method, path)
        try:
            return self._matched[key]
        except KeyError:
            pass
        found = self._match(method, path)
        if not keeps(path):  # a peer's long (or non-ASCII) path is matched, never kept
            return found
        if len(self._matched) >= _MATCH_CACHE:
            self._matched.clear()
        self._matched[key] = found
        return found

    def _match(self, method: str, path: str) -> RouteMatch | None:
        normalised = normalize_path(path)
        for route in self._ordered:
            if not route.pattern.matches_method(method):
                continue
            params = route.pattern.match_path(normalised)
            if params is not None:
                return RouteMatch(route, MappingProxyType(params))
        return None

    def __len__(self) -> int:
        return len(self.routes)
