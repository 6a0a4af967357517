"""Per-request maximums, and exact conversion from token units to atomic units.

A maximum is a function of the requirement because atomic units mean nothing
without the token: 10_000 units are one cent of USDC (6 decimals) and a
rounding error of an 18-decimal token. Money never goes through ``float``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from a402.client.budget import asset_key
from a402.wire.x402 import PaymentRequirements

MaxAmount = Callable[[PaymentRequirements], int | None]
"""The most a single request may pay for this requirement, in atomic units;
None when the asset may not be paid at all."""

DEFAULT_DECIMALS = 6
"""USDC and the other x402 default stablecoins (reference/x402-wire.md §2.3)."""
MAX_DECIMALS = 36


def parse_token_amount(text: str | Decimal) -> Decimal:
    """A non-negative, finite decimal amount of tokens (``"0.01"``); never a float."""
    if isinstance(text, float):
        raise TypeError("token amounts must be str or Decimal, never float")
    try:
        value = Decimal(text.strip()) if isinstance(text, str) else Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"amount must be a finite, non-negative number: {text!r}")
    return value


def to_atomic(amount: str | Decimal, decimals: int) -> int:
    """``floor(amount × 10**decimals)``, exactly.

    Flooring is the safe direction for a limit: a cap of 0.0000015 USDC means
    1 unit, never 2. (Prices going the other way are never rounded here: the
    server states them in atomic units already.)
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise TypeError("decimals must be an int")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals out of range: {decimals}")
    value = parse_token_amount(amount).scaleb(decimals)
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def to_atomic_exact(amount: str | Decimal, decimals: int) -> int:
    """``amount × 10**decimals``, refused (ValueError) unless it is a whole number of atomic
    units: an amount a user types with more decimals than the token has is a mistake, and
    flooring it would turn ``0.0000001`` of a 6-decimal token into a silent 0."""
    value = parse_token_amount(amount)
    atomic = to_atomic(value, decimals)
    if Decimal(atomic) != value.scaleb(decimals):
        raise ValueError(f"{str(amount).strip()!r} has more than {decimals} decimals "
                         f"(the token's); the smallest amount is {Decimal(1).scaleb(-decimals)}")
    return atomic


def _atomic(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"maximum must be a non-negative int of atomic units, got {value!r}")
    return value


def fixed_max(atomic: int) -> MaxAmount:
    """The same atomic cap for every asset (pair it with an asset allow-list)."""
    cap = _atomic(atomic)
    return lambda _req: cap


def per_asset_max(caps: Mapping[str, int]) -> MaxAmount:
    """Atomic caps by asset address; an asset not listed may not be paid."""
    table = {asset_key(a): _atomic(v) for a, v in caps.items()}
    return lambda req: table.get(asset_key(req.asset))


def token_units_max(amount: str | Decimal, decimals: int = DEFAULT_DECIMALS) -> MaxAmount:
    """A cap in token units (``"0.01"``), converted per requirement.

    ``decimals`` is what the caller believes the token has (6 by default). A
    requirement may claim fewer in ``extra.decimals`` and then that is used;
    a claim of *more* is ignored. The server is the party being limited and
    ``extra`` is its own unauthenticated word: honouring "18" for a 6-decimal
    token would lift a one-cent cap to ten billion dollars, whereas honouring
    a smaller claim can only make the cap stricter. A caller paying an
    18-decimal token must say so (``decimals=18``).
    """
    parse_token_amount(amount)
    to_atomic(amount, decimals)  # validate eagerly, not on the first 402

    def cap(req: PaymentRequirements) -> int:
        claimed = (req.extra or {}).get("decimals")
        effective = decimals
        if type(claimed) is int and 0 <= claimed < decimals:
            effective = claimed
        return to_atomic(amount, effective)

    return cap


def as_max_amount(value: int | Mapping[str, int] | MaxAmount) -> MaxAmount:
    """Accept an atomic int, a per-asset mapping, or a ready ``MaxAmount``."""
    if isinstance(value, float | Decimal):
        raise TypeError(
            "max_per_request is in atomic units (int); use token_units_max('0.01') for token units"
        )
    if isinstance(value, int):
        return fixed_max(value)
    if isinstance(value, Mapping):
        return per_asset_max(value)
    if callable(value):
        return value
    raise TypeError(f"unsupported max_per_request: {type(value).__name__}")
