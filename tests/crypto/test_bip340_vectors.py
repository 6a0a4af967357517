"""The official BIP-340 test vectors.

Source: ``bip-0340/test-vectors.csv`` of the public repository bitcoin/bips,
as stored at commit 7e8b5dfc304c0e3cd646b54bc49e23fad692d11e, committed
verbatim (CRLF line endings) as ``tests/data/bip340-test-vectors.csv``. That
stored copy has vectors 0-14; later upstream revisions add vectors 15-18
(messages of length 0, 1, 17 and 100), which could not be fetched here.
Variable-length messages are instead checked against libsecp256k1's own
BIP-340 verifier in ``test_adaptor.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from a402.crypto import BIP340

VECTORS = Path(__file__).resolve().parents[1] / "data" / "bip340-test-vectors.csv"


def load() -> list[dict[str, str]]:
    with VECTORS.open(newline="") as f:
        return list(csv.DictReader(f))


ROWS = load()


def test_the_vector_file_is_complete() -> None:
    assert [int(row["index"]) for row in ROWS] == list(range(15))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"vector-{row['index']}")
def test_verification_matches_the_expected_result(row: dict[str, str]) -> None:
    expected = row["verification result"] == "TRUE"
    valid = BIP340.verify(
        bytes.fromhex(row["public key"]),
        bytes.fromhex(row["message"]),
        bytes.fromhex(row["signature"]),
    )
    assert valid is expected, row["comment"]


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r["secret key"]], ids=lambda row: f"vector-{row['index']}"
)
def test_signing_reproduces_the_vector(row: dict[str, str]) -> None:
    secret = bytes.fromhex(row["secret key"])
    assert BIP340.public_key(secret) == bytes.fromhex(row["public key"])
    signature = BIP340.sign(
        secret, bytes.fromhex(row["message"]), aux_rand=bytes.fromhex(row["aux_rand"])
    )
    assert signature == bytes.fromhex(row["signature"])
