"""The fast Keccak-256 gives the digests the EVM and eth-hash give."""

from __future__ import annotations

import sys

import pytest
from Crypto.Hash import keccak as cryptodome_keccak

from a402.evm.keccak import keccak256


def reference(data: bytes) -> bytes:
    return cryptodome_keccak.new(digest_bits=256, data=data).digest()


#: keccak256("") as every EVM tool prints it (the code hash of an account without code).
EMPTY = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_the_empty_input_hashes_to_the_evm_constant() -> None:
    assert keccak256(b"").hex() == EMPTY


@pytest.mark.parametrize("length", [1, 31, 32, 33, 135, 136, 137, 271, 272, 1000, 65_537])
def test_every_length_around_the_rate_matches_the_reference(length: int) -> None:
    data = bytes((i * 31 + length) % 256 for i in range(length))
    assert keccak256(data) == reference(data)


def test_buffers_other_than_bytes_are_hashed_by_content() -> None:
    data = b"a402 channel state"
    assert keccak256(bytearray(data)) == keccak256(memoryview(data)) == reference(data)


@pytest.mark.skipif(sys.platform != "linux", reason="safe-pysha3 is a Linux-only dependency")
def test_linux_gets_the_c_implementation() -> None:
    assert keccak256.__module__ == "a402.evm.keccak"
