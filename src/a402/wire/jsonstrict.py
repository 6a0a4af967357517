"""Strict, bounded JSON decoding for everything a peer sends us.

Two parsers can disagree on the same bytes; in a payment flow that disagreement
is an attack (the middleware reads one ``value``, the facilitator another). So
we reject the ambiguous inputs outright: duplicate object keys, and the
non-standard ``NaN`` / ``Infinity`` literals Python's ``json`` accepts by default.

A document must also fit :class:`JsonLimits` (size, nesting depth, length of a
number) *before* it reaches a parser. The safety argument: py-evm and py_ecc
raise the interpreter's recursion limit to 100,000 on import, so the C decoder
(which recurses once per ``[``/``{``) overflows the C stack on a 200 KB body of
brackets and the process dies with SIGSEGV before any ``RecursionError`` could
be raised. :func:`check_bounds` measures depth and number length without
recursion (regular expressions and one running sum, all in C), so the refusal
does not depend on the recursion limit, and every document that passes is far
too shallow to hurt any recursive code after it (pydantic, protobuf, ours).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Final

from a402.wire.errors import (
    INVALID_PAYLOAD,
    JSON_NUMBER_TOO_LONG,
    JSON_TOO_DEEP,
    REQUEST_TOO_LARGE,
    WireError,
)


@dataclass(frozen=True)
class JsonLimits:
    """The largest document a service decodes.

    The defaults are far above anything the protocols send (an x402 payload is
    five levels deep and a uint256 is 78 digits) and far below what would cost
    a parser, or any code walking the result, real time or stack.
    """

    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_number_chars: int = 100


DEFAULT_LIMITS: Final = JsonLimits()


class JsonLimitError(WireError):
    """A document over a limit; ``status`` is the HTTP status that says so (413 for its
    size, 400 for its depth or a number's length) and ``reason`` names the limit."""

    def __init__(self, reason: str, message: str, status: int) -> None:
        super().__init__(reason, message)
        self.status = status


# A JSON string, unrolled so that matching it never backtracks.
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


@lru_cache(maxsize=16)
def _number_run(max_chars: int) -> re.Pattern[str]:
    """A run of more than ``max_chars`` characters a JSON number is made of."""
    return re.compile("[-+0-9.eE]{" + str(max_chars + 1) + ",}")


def check_bounds(data: str | bytes, limits: JsonLimits = DEFAULT_LIMITS) -> str:
    """The document as text if it is within ``limits``, else :class:`JsonLimitError`.

    Iterative by construction: strings are blanked by one regex substitution, so
    the brackets and digits that remain are structure; the depth is the maximum
    of the running sum of ``+1`` per opening and ``-1`` per closing bracket. A
    malformed document (unterminated string, unbalanced brackets) may pass; the
    strict parser that follows refuses it, and by then its depth is known to be
    bounded. Raises a plain :class:`WireError` (``invalid_payload``) for text
    that is not UTF-8.

    A document whose raw text already passes both measures (no more opening brackets
    than the depth limit, no run of number characters past the length limit) passes
    as it is, without the substitution: blanking strings only removes brackets and
    breaks runs (``""`` is no number character), so its structure passes them too.
    That is every call a client sends (a few brackets, short numbers).
    """
    size = len(data)
    if size > limits.max_bytes:
        raise JsonLimitError(REQUEST_TOO_LARGE, f"the JSON document is {size} bytes, "
                             f"more than {limits.max_bytes}", 413)
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(INVALID_PAYLOAD, f"malformed JSON: {exc}") from exc
    too_long = _number_run(limits.max_number_chars)
    if data.count("[") + data.count("{") <= limits.max_depth \
            and (len(data) <= limits.max_number_chars or too_long.search(data) is None):
        return data
    # Strings are blanked first, so the brackets and number characters left are
    # structure. The nesting depth is at most the number of opening brackets, so the
    # running sum is computed only for a document with more of them than the limit.
    structure = _STRING.sub('""', data)
    if structure.count("[") + structure.count("{") > limits.max_depth:
        brackets = _NOT_BRACKET.sub("", structure)
        depth = max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
        if depth > limits.max_depth:
            raise JsonLimitError(JSON_TOO_DEEP, f"JSON nested deeper than {limits.max_depth} "
                                 "levels", 400)
    if too_long.search(structure) is not None:
        raise JsonLimitError(JSON_NUMBER_TOO_LONG, f"a JSON number longer than "
                             f"{limits.max_number_chars} characters", 400)
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # a key came twice: name the first one that did
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


#: One strict decoder for every document (``json.loads`` with hooks makes one per call).
_STRICT: Final = json.JSONDecoder(object_pairs_hook=_no_duplicates,
                                  parse_constant=_no_constant)


def loads_object(data: str | bytes, *, reason: str = INVALID_PAYLOAD,
                 limits: JsonLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode a JSON document that must be an object within ``limits``.

    A document over a limit raises :class:`JsonLimitError` (its own reason and
    status); anything else that is not a strict JSON object raises
    ``WireError(reason)``.
    """
    try:
        text = check_bounds(data, limits)
    except JsonLimitError:
        raise
    except WireError as exc:
        raise WireError(reason, exc.message) from exc
    try:
        if text.startswith("\ufeff"):  # as json.loads says it (the decoder itself does not)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _STRICT.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        raise WireError(reason, f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WireError(reason, f"expected a JSON object, got {type(value).__name__}")
    return value
