"""What each tool costs: ``--tool 'name=0.001'`` specs and their parsed form (pure).

A price names its scheme. ``exact`` (one EIP-3009 authorization of exactly the
price, settled after the tool succeeded) is what is built; ``upto`` (authorize a
maximum, settle what was used) and ``a402`` (paid inside an Atomic Service Channel)
are names a price may carry so that a paywall can grow them, and are refused today
with a clear error rather than served as ``exact``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from a402.exact.eip3009 import SCHEME_EXACT
from a402.provider.routes import Price, RouteError, to_atomic

SCHEMES_BUILT: Final = (SCHEME_EXACT,)
SCHEMES_PLANNED: Final = ("upto", "a402")
MAX_TOOL_NAME: Final = 128
"""MCP tool names are short identifiers; a longer one is a typo or an attack."""


class PriceError(ValueError):
    """A tool price the operator wrote cannot be used as given."""


@dataclass(frozen=True)
class ToolPrice:
    """One paid tool: its name, scheme and price in atomic units of the paywall's token."""

    tool: str
    amount: int
    scheme: str = SCHEME_EXACT
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.tool or len(self.tool) > MAX_TOOL_NAME:
            raise PriceError(f"tool name must be 1..{MAX_TOOL_NAME} characters")
        if self.scheme in SCHEMES_PLANNED:
            raise PriceError(f"tool {self.tool!r}: the {self.scheme!r} scheme is not built for "
                             "MCP tools yet; price it 'exact'")
        if self.scheme not in SCHEMES_BUILT:
            raise PriceError(f"tool {self.tool!r}: unknown scheme {self.scheme!r}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise PriceError(f"tool {self.tool!r}: the price must be a positive amount "
                             "(a free tool is simply not listed)")


def parse_tool_spec(spec: str, decimals: int) -> ToolPrice:
    """``"name=0.001"`` or ``"name=exact:0.001"`` (token units, a leading ``$`` allowed)
    → :class:`ToolPrice`; PriceError if malformed. The last ``=`` separates the price."""
    name, sep, price = spec.rpartition("=")
    name, price = name.strip(), price.strip()
    if not sep or not name or not price:
        raise PriceError(f"tool spec {spec!r} is not 'NAME=PRICE'")
    scheme = SCHEME_EXACT
    if ":" in price:
        scheme, _, price = price.partition(":")
        scheme, price = scheme.strip(), price.strip()
    try:
        amount = to_atomic(price, decimals)
    except RouteError as e:
        raise PriceError(f"tool {name!r}: {e}") from e
    return ToolPrice(name, amount, scheme)


def price_table(prices: Iterable[ToolPrice] | Mapping[str, Price], decimals: int
                ) -> dict[str, ToolPrice]:
    """Tool name → price, from :class:`ToolPrice` values or a ``{name: price}`` map (token
    units as strings, atomic units as ints); PriceError on a duplicate name."""
    items: Iterable[ToolPrice]
    if isinstance(prices, Mapping):
        try:
            items = [ToolPrice(name, to_atomic(price, decimals))
                     for name, price in prices.items()]
        except RouteError as e:
            raise PriceError(str(e)) from e
    else:
        items = prices
    table: dict[str, ToolPrice] = {}
    for item in items:
        if item.tool in table:
            raise PriceError(f"tool {item.tool!r} is priced twice")
        table[item.tool] = item
    return table
