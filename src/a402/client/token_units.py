"""A token as a person reads it: its symbol and its decimals, read from the token itself.

Amounts a user types are converted exactly (``Decimal``) and refused if they have more
decimals than the token (``0.0000001`` USDC is not an amount, and must not become 0);
amounts shown are written with every decimal, so ``0.300000 USDC`` is never rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from a402.chain.node import Chain
from a402.chain.rpc import node_errors
from a402.chain.tx import contract_at
from a402.client.limits import parse_token_amount, to_atomic


@dataclass(frozen=True)
class TokenUnits:
    address: str
    symbol: str
    decimals: int

    @classmethod
    def read(cls, chain: Chain, address: str) -> TokenUnits:
        """``symbol()`` and ``decimals()`` of the ERC-20 at ``address`` (any ERC-20)."""
        token = contract_at(chain, "TestUSDC", address)  # its ABI has both ERC-20 getters
        with node_errors("reading the token"):
            return cls(token.address, str(token.functions.symbol().call()),
                       int(token.functions.decimals().call()))

    def show(self, atomic: int) -> str:
        """``atomic`` units as ``1.500000 USDC``: every decimal, never rounded."""
        return f"{self.plain(atomic)} {self.symbol}"

    def plain(self, atomic: int) -> str:
        """``atomic`` units as ``1.500000`` (what the JSON output carries)."""
        value = Decimal(atomic).scaleb(-self.decimals)
        return f"{value:.{self.decimals}f}"

    def atomic(self, text: str) -> int:
        """A typed amount in token units, exactly; ValueError if it has too many decimals."""
        value = parse_token_amount(text)
        if value.scaleb(self.decimals) != value.scaleb(self.decimals).to_integral_value():
            raise ValueError(f"{text!r} has more decimals than {self.symbol} ({self.decimals})")
        return to_atomic(value, self.decimals)

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "symbol": self.symbol, "decimals": self.decimals}
