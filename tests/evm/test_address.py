"""One address parse, checksum and comparison."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from a402.evm.address import address_bytes, address_key, is_address, same_address, to_checksum

RAW = bytes.fromhex("ab" * 10 + "cd" * 10)


@given(st.binary(min_size=20, max_size=20))
def test_the_checksum_is_eip55(raw: bytes) -> None:
    expected = to_checksum_address(raw)
    assert to_checksum(raw) == expected
    assert to_checksum("0x" + raw.hex()) == expected
    assert to_checksum(expected.lower()) == expected


@pytest.mark.parametrize("bad", ["ab" * 20, "0x" + "ab" * 19, "0xzz" + "ab" * 19, "0X" + "ab" * 20])
def test_a_checksum_needs_0x_and_40_hex_digits(bad: str) -> None:
    assert not is_address(bad)
    with pytest.raises(ValueError):
        to_checksum(bad)


def test_address_bytes_takes_any_case_and_prefix_or_bytes() -> None:
    text = "0x" + RAW.hex()
    assert address_bytes(text) == address_bytes(text.upper()[2:]) == address_bytes(RAW) == RAW
    assert address_bytes("0X" + RAW.hex()) == RAW
    for bad in ("0x" + "ab" * 19, "0xnothex", RAW + b"\x00"):
        with pytest.raises(ValueError):
            address_bytes(bad)


def test_addresses_compare_by_their_bytes() -> None:
    checksum = to_checksum(RAW)
    assert same_address(checksum, checksum.lower())
    assert not same_address(checksum, to_checksum(bytes(20)))
    assert not same_address("not an address", "not an address")
    assert address_key(checksum) == checksum.lower() == address_key(checksum.lower())
