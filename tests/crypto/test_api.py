"""The package's front door: its example runs, and flavours are found by name."""

from __future__ import annotations

import doctest

import pytest

import a402.crypto
from a402.crypto import BIP340, EVM, scheme


def test_the_package_example_runs() -> None:
    result = doctest.testmod(a402.crypto)
    assert result.attempted > 0
    assert result.failed == 0


def test_flavours_are_found_by_name() -> None:
    assert scheme("evm") is EVM
    assert scheme("bip340") is BIP340
    with pytest.raises(ValueError, match="unknown"):
        scheme("ed25519")  # type: ignore[arg-type]
