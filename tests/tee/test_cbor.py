"""The strict CBOR decoder that parses untrusted evidence."""

from __future__ import annotations

import pytest

from a402.tee import _cbor


@pytest.mark.parametrize(
    ("hex_input", "why"),
    [
        ("c074323031332d30332d32315432303a30343a30305a", "tag 0: date string"),
        ("c11a514b67b0", "tag 1: epoch date"),
        ("c249010000000000000000", "tag 2: bignum"),
        ("d82361612a", "tag 35: regular expression"),
        ("d9010281 01", "tag 258: set"),
        ("d81c8101", "tag 28: shareable"),
        ("d8184101", "tag 24: embedded CBOR"),
        ("d2820102", "tag 18: COSE_Sign1 (the caller strips it)"),
        ("d9d9f701", "tag 55799: self-described CBOR"),
        ("9f01ff", "indefinite-length array"),
        ("a201010102", "duplicate map key"),
        ("0102", "trailing bytes"),
        ("81" * 20 + "01", "nesting too deep"),
        ("5a00010000", "truncated byte string"),
        ("", "empty"),
    ],
)
def test_strict_decoder_refuses(hex_input, why):
    with pytest.raises(ValueError):
        _cbor.decode(bytes.fromhex(hex_input.replace(" ", "")), max_size=1024)


def test_size_limit_and_canonical_check():
    with pytest.raises(ValueError):
        _cbor.decode(_cbor.encode(b"x" * 100), max_size=50)
    assert _cbor.decode_canonical(_cbor.encode({"b": 1, "a": [b"x", 2]}), max_size=64) == {
        "a": [b"x", 2], "b": 1,
    }
    with pytest.raises(ValueError, match="canonical"):
        _cbor.decode_canonical(bytes.fromhex("1817"), max_size=64)  # 23 in a two-byte form
