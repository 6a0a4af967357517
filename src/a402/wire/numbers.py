"""Decimal-string integers, the way x402 carries amounts and timestamps.

Python's ``int()`` is far too lenient for money: it accepts ``" 10"``,
``"1_000"``, ``"+5"`` and non-ASCII digits such as ``"١٠"``. A peer in another
language would read those differently or not at all, so on the wire we accept
only ASCII digits and keep the value inside uint256, the type the token
contract will finally see.
"""

from __future__ import annotations

import re
from typing import Final

from a402.wire.errors import WireError

UINT256_MAX: Final = 2**256 - 1
_DIGITS = re.compile(r"[0-9]{1,78}")  # 78 digits is enough for 2**256 - 1


def parse_uint256(value: object, *, reason: str, what: str) -> int:
    """Parse an unsigned decimal string into an int, or raise WireError(reason)."""
    if not isinstance(value, str) or _DIGITS.fullmatch(value) is None:
        raise WireError(reason, f"{what} must be a decimal string of digits, got {value!r:.80}")
    number = int(value)
    if number > UINT256_MAX:
        raise WireError(reason, f"{what} does not fit in uint256")
    return number
