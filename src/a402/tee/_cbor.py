"""Strict CBOR decoding for untrusted input, and canonical encoding.

Attestation evidence arrives from the network and is parsed before anything
about it is authenticated (a Nitro document carries the certificate that
verifies it). The decoder is therefore locked down: one data item with no
trailing bytes, definite lengths only, no duplicate map keys, bounded nesting
and size, and no CBOR tags at all (tag handlers in cbor2 build datetimes,
regexes, sets, shared references…; nothing here needs any of them). The one
tag a COSE_Sign1 may carry (18) is stripped by the caller before decoding.
"""

from __future__ import annotations

import io
from typing import Any, NoReturn

import cbor2

#: Nesting never needs to be deeper than this for the structures parsed here.
MAX_DEPTH = 8

# Tags that cbor2 decodes with a built-in handler; unknown tags reach the tag hook.
_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 259,
                 260, 261, 1004, 55799)


def _reject(*_args: object) -> NoReturn:
    raise ValueError("CBOR tags are not accepted here")


_NO_TAGS = dict.fromkeys(_BUILTIN_TAGS, _reject)


def decode(data: bytes, *, max_size: int) -> Any:
    """Decode exactly one CBOR item from ``data``; :class:`ValueError` on anything odd."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("CBOR input must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise ValueError(f"CBOR input longer than {max_size} bytes")
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        # One read of the whole input: cbor2 6.1.0 corrupted byte strings that
        # crossed its read buffer, and a single buffer sidesteps that code path.
        read_size=max(len(data), 1),
        tag_hook=_reject,
        semantic_decoders=_NO_TAGS,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        item = decoder.decode()
    except Exception as e:  # cbor2 raises several types on malformed input
        raise ValueError(f"malformed CBOR: {e}") from None
    if stream.tell() != len(data):
        raise ValueError("trailing bytes after the CBOR item")
    return item


def encode(item: Any) -> bytes:
    """Canonical (deterministic) CBOR: shortest forms, sorted map keys."""
    return cbor2.dumps(item, canonical=True)


def decode_canonical(data: bytes, *, max_size: int) -> Any:
    """Decode, and insist that ``data`` is the canonical encoding of what it holds.

    Signed a402 structures have exactly one encoding, so a signature covers one
    meaning and two byte strings never describe the same quote.
    """
    item = decode(data, max_size=max_size)
    if encode(item) != bytes(data):
        raise ValueError("CBOR is not in canonical form")
    return item
