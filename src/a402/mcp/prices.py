"""What each tool costs: ``--tool 'name=0.001'`` specs and their parsed form (pure).

A price names its scheme:

- ``name=0.001`` or ``name=exact:0.001``: x402 ``exact``, one EIP-3009 authorization of
  exactly the price, settled after the tool succeeded.
- ``name=upto:0.01`` or ``name=upto:0.01/0.0001``: x402 ``upto``, the payer signs a
  Permit2 authorization of at most the maximum (``0.01``), and after the tool succeeded
  the paywall settles what it used: the units the tool reports
  (:mod:`a402.mcp.usage`) times the unit price (``0.0001``; without ``/UNIT`` one unit
  is one atomic unit of the token), capped at the maximum, never above it. A tool that
  reports nothing is charged the maximum (as the x402 SDKs do); a charge of 0 sends no
  transaction.
- ``name=a402:0.001``: paid inside an Atomic Service Channel through the payer's vault,
  at the tool's own endpoint (:mod:`a402.mcp.channels`): the enclave seals the result
  and releases it against the payment, atomically. A paywall with such a tool needs
  :class:`~a402.mcp.channels.ToolChannels` (the provider's A402 side: ``a402 mcp serve
  --a402``, or ``proxy_app(a402=...)``); without it the tool answers
  ``a402_unavailable`` and never runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from a402.exact.eip3009 import SCHEME_EXACT
from a402.exact.upto import SCHEME_UPTO
from a402.provider.routes import Price, RouteError, to_atomic
from a402.wire.a402 import SCHEME_A402

SCHEMES: Final = (SCHEME_EXACT, SCHEME_UPTO, SCHEME_A402)
MAX_TOOL_NAME: Final = 128
"""MCP tool names are short identifiers; a longer one is a typo or an attack."""


class PriceError(ValueError):
    """A tool price the operator wrote cannot be used as given."""


@dataclass(frozen=True)
class ToolPrice:
    """One paid tool: its name, scheme and price in atomic units of the paywall's token.

    ``amount`` is the price (``exact``) or the maximum a call may cost (``upto``);
    ``unit`` (``upto`` only) is what one unit the tool reports using costs."""

    tool: str
    amount: int
    scheme: str = SCHEME_EXACT
    description: str | None = None
    unit: int = 1

    def __post_init__(self) -> None:
        if not self.tool or len(self.tool) > MAX_TOOL_NAME:
            raise PriceError(f"tool name must be 1..{MAX_TOOL_NAME} characters")
        if self.scheme not in SCHEMES:
            raise PriceError(f"tool {self.tool!r}: unknown scheme {self.scheme!r}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise PriceError(f"tool {self.tool!r}: the price must be a positive amount "
                             "(a free tool is simply not listed)")
        if self.scheme == SCHEME_A402 and (quote(self.tool, safe="") != self.tool
                                           or self.tool.strip(".") == ""):
            # Its endpoint, ``/mcp/a402/<name>`` (:mod:`a402.mcp.channels`), is matched as
            # the server decodes the path: a name that needs quoting (a space, '/', '%')
            # would name a path never matched (unreachable), a dot segment another path.
            raise PriceError(f"tool {self.tool!r} cannot be priced 'a402': its endpoint's "
                             "name must be letters, digits, '_', '-', '.' or '~'")
        if isinstance(self.unit, bool) or not isinstance(self.unit, int) or self.unit <= 0:
            raise PriceError(f"tool {self.tool!r}: the unit price must be a positive amount")
        if self.scheme != SCHEME_UPTO and self.unit != 1:
            raise PriceError(f"tool {self.tool!r}: a unit price is for 'upto' prices only")
        if self.unit > self.amount:
            raise PriceError(f"tool {self.tool!r}: the unit price exceeds the maximum")

    def charge(self, units: int) -> int:
        """``upto``: what ``units`` used cost, capped at the maximum (never above it)."""
        return min(units * self.unit, self.amount)


def parse_tool_spec(spec: str, decimals: int) -> ToolPrice:
    """``"name=0.001"``, ``"name=exact:0.001"``, ``"name=upto:0.01"`` or
    ``"name=upto:0.01/0.0001"`` (token units, a leading ``$`` allowed) →
    :class:`ToolPrice`; PriceError if malformed. The last ``=`` separates the price."""
    name, sep, price = spec.rpartition("=")
    name, price = name.strip(), price.strip()
    if not sep or not name or not price:
        raise PriceError(f"tool spec {spec!r} is not 'NAME=PRICE'")
    scheme = SCHEME_EXACT
    if ":" in price:
        scheme, _, price = price.partition(":")
        scheme, price = scheme.strip(), price.strip()
    unit_text: str | None = None
    if "/" in price:
        if scheme != SCHEME_UPTO:
            raise PriceError(f"tool {name!r}: a unit price ('/UNIT') is for 'upto' prices only")
        price, _, unit_text = price.partition("/")
        price, unit_text = price.strip(), unit_text.strip()
    try:
        amount = to_atomic(price, decimals)
        unit = 1 if unit_text is None else to_atomic(unit_text, decimals)
    except RouteError as e:
        raise PriceError(f"tool {name!r}: {e}") from e
    return ToolPrice(name, amount, scheme, unit=unit)


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
