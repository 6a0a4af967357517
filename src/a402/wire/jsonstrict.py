"""Strict JSON decoding for everything a peer sends us.

Two parsers can disagree on the same bytes; in a payment flow that disagreement
is an attack (the middleware reads one ``value``, the facilitator another). So
we reject the ambiguous inputs outright: duplicate object keys, and the
non-standard ``NaN`` / ``Infinity`` literals Python's ``json`` accepts by default.
"""

from __future__ import annotations

import json
from typing import Any

from a402.wire.errors import INVALID_PAYLOAD, WireError


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def loads_object(data: str | bytes, *, reason: str = INVALID_PAYLOAD) -> dict[str, Any]:
    """Decode a JSON document that must be an object; anything else is a WireError."""
    try:
        if isinstance(data, bytes | bytearray):
            data = bytes(data).decode("utf-8")
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        raise WireError(reason, f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WireError(reason, f"expected a JSON object, got {type(value).__name__}")
    return value
