"""JSON encoding for the paid-request path: orjson where it is exact, the standard library
where it is not.

Every paid request writes a few JSON documents (answers, vault mode's ledger, the
API's documents), and the standard encoder costs about fifteen times more CPU than orjson.
But orjson writes no integer past 64 bits, and token amounts can be larger: such a
document falls back to :func:`json.dumps`, so no amount is ever rounded. Decoding
stays with :func:`json.loads` everywhere: orjson would read a large integer as a float.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON (no spaces), keys sorted if asked."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:  # an integer past 64 bits, or a key orjson will not write
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()
