"""The independent validator's own parts, against the official vectors.

The ledger (a402.bitcoin.validate) runs every spend through buidl's interpreter, so buidl's
BIP-340 verifier and BIP-341 sighash are checked here against the BIPs' vectors (sources as in
test_bip341_vectors.py and tests/crypto/test_bip340_vectors.py), together with
python-bitcointx's verifier (which runs on coincurve's libsecp256k1 in this package).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import buidl.script
import buidl.tx
import pytest
from bitcointx.core.key import XOnlyPubKey
from buidl.pecc import S256Point, SchnorrSignature

import a402.bitcoin._backend  # noqa: F401  (bitcointx on coincurve's libsecp256k1)

DATA = Path(__file__).resolve().parents[1] / "data"
with (DATA / "bip340-test-vectors.csv").open(newline="") as f:
    BIP340_ROWS = list(csv.DictReader(f))
BIP341 = json.loads((DATA / "bip341-wallet-test-vectors.json").read_text())


def _buidl_verifies(pk: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        return bool(S256Point.parse_bip340(pk).verify_schnorr(msg, SchnorrSignature.parse(sig)))
    except ValueError:  # the interpreter turns this into a failed input
        return False


@pytest.mark.parametrize("row", BIP340_ROWS, ids=lambda r: r["index"])
def test_both_verifiers_agree_with_every_bip340_vector(row: dict[str, str]) -> None:
    pk, msg, sig = (bytes.fromhex(row[k]) for k in ("public key", "message", "signature"))
    want = row["verification result"] == "TRUE"
    assert _buidl_verifies(pk, msg, sig) is want
    key = XOnlyPubKey(pk)
    assert (key.is_fullyvalid() and key.verify_schnorr(msg, sig)) is want


@pytest.mark.parametrize(
    "spend", BIP341["keyPathSpending"][0]["inputSpending"],
    ids=lambda s: str(s["given"]["txinIndex"]),
)
def test_the_interpreters_sighash_matches_every_bip341_key_path_vector(
    spend: dict[str, Any],
) -> None:
    given = BIP341["keyPathSpending"][0]["given"]
    tx = buidl.tx.Tx.parse(io.BytesIO(bytes.fromhex(given["rawUnsignedTx"])), network="regtest")
    for txin, utxo in zip(tx.tx_ins, given["utxosSpent"], strict=True):
        script = bytes.fromhex(utxo["scriptPubKey"])
        txin._value = utxo["amountSats"]
        txin._script_pubkey = buidl.script.Script.parse(io.BytesIO(bytes([len(script)]) + script))
    index, hash_type = spend["given"]["txinIndex"], spend["given"]["hashType"]
    digest = tx.sig_hash_bip341(index, hash_type=hash_type)
    assert digest.hex() == spend["intermediary"]["sigHash"]
