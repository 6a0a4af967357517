"""MuSig2 (BIP-327) through libsecp256k1's musig module: the official vectors, and use.

Sources: ``bip-0327/vectors/key_agg_vectors.json`` and ``sig_agg_vectors.json`` of the public
repository bitcoin/bips at commit 7fe0b034ec967b52a5a28276419117326df93263, committed verbatim
as ``tests/data/bip327-key-agg-vectors.json`` and ``tests/data/bip327-sig-agg-vectors.json``.
(The signing vectors fix secret nonces, which libsecp256k1 cannot import by design; signing is
checked end to end instead: the aggregate verifies under BIP-340 and spends on the ledger.)
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import pytest

from a402.bitcoin import musig
from a402.crypto import BIP340

DATA = Path(__file__).resolve().parents[1] / "data"
KEY_AGG = json.loads((DATA / "bip327-key-agg-vectors.json").read_text())
SIG_AGG = json.loads((DATA / "bip327-sig-agg-vectors.json").read_text())


@pytest.mark.parametrize("case", KEY_AGG["valid_test_cases"], ids=lambda c: str(c["key_indices"]))
def test_key_aggregation_matches_every_valid_bip327_vector(case: dict[str, Any]) -> None:
    keys = [bytes.fromhex(KEY_AGG["pubkeys"][i]) for i in case["key_indices"]]
    assert musig.KeyAgg.of(keys).xonly().hex() == case["expected"].lower()


@pytest.mark.parametrize("case", KEY_AGG["error_test_cases"], ids=lambda c: c["comment"])
def test_key_aggregation_refuses_every_bip327_error_vector(case: dict[str, Any]) -> None:
    with pytest.raises(musig.MusigError):
        agg = musig.KeyAgg.of([bytes.fromhex(KEY_AGG["pubkeys"][i]) for i in case["key_indices"]])
        for i, xonly in zip(case["tweak_indices"], case["is_xonly"], strict=True):
            agg.tweak(bytes.fromhex(KEY_AGG["tweaks"][i]), xonly=xonly)


def _sig_agg(case: dict[str, Any]) -> bytes:
    agg = musig.KeyAgg.of([bytes.fromhex(SIG_AGG["pubkeys"][i]) for i in case["key_indices"]])
    for i, xonly in zip(case["tweak_indices"], case["is_xonly"], strict=True):
        agg.tweak(bytes.fromhex(SIG_AGG["tweaks"][i]), xonly=xonly)
    pubnonces = [bytes.fromhex(SIG_AGG["pnonces"][i]) for i in case["nonce_indices"]]
    aggnonce = musig.nonce_agg(pubnonces)
    assert aggnonce.hex() == case["aggnonce"].lower()
    psigs = [bytes.fromhex(SIG_AGG["psigs"][i]) for i in case["psig_indices"]]
    return musig.partial_sig_agg(psigs, aggnonce, bytes.fromhex(SIG_AGG["msg"]), agg)


@pytest.mark.parametrize("case", SIG_AGG["valid_test_cases"], ids=lambda c: str(c["psig_indices"]))
def test_signature_aggregation_matches_every_valid_bip327_vector(case: dict[str, Any]) -> None:
    assert _sig_agg(case).hex() == case["expected"].lower()


@pytest.mark.parametrize("case", SIG_AGG["error_test_cases"], ids=lambda c: c["comment"])
def test_signature_aggregation_refuses_every_bip327_error_vector(case: dict[str, Any]) -> None:
    with pytest.raises(musig.MusigError):
        _sig_agg(case)


def test_two_signers_make_one_bip340_signature_by_the_tweaked_aggregate() -> None:
    a, b = BIP340.generate_key(), BIP340.generate_key()
    keys = [b"\x02" + a.public_key, b"\x02" + b.public_key]
    agg = musig.KeyAgg.of(keys)
    agg.taproot_tweak(bytes(32))
    message = bytes(range(32))
    (sa, pa), (sb, pb) = musig.nonce_gen(a, agg, message), musig.nonce_gen(b, agg, message)
    aggnonce = musig.nonce_agg([pa, pb])
    psa = musig.partial_sign(a, sa, aggnonce, message, agg)
    psb = musig.partial_sign(b, sb, aggnonce, message, agg)
    assert musig.partial_verify(psa, pa, keys[0], aggnonce, message, agg)
    assert not musig.partial_verify(psa, pb, keys[1], aggnonce, message, agg)
    signature = musig.partial_sig_agg([psa, psb], aggnonce, message, agg)
    assert BIP340.verify(agg.xonly(), message, signature)
    with pytest.raises(musig.MusigError):  # a secret nonce signs once
        musig.partial_sign(a, sa, aggnonce, message, agg)
    # Even past the Python guard, libsecp256k1 refuses a consumed (zeroed) nonce without
    # aborting the process.
    with pytest.raises(musig.MusigError):
        musig.partial_sign(a, musig.SecretNonce(ctypes.create_string_buffer(132)), aggnonce,
                           message, agg)


def test_buffers_shorter_than_the_library_reads_are_refused_before_any_call() -> None:
    """Regression: libsecp256k1 reads fixed lengths (32-byte message and tweak, 66-byte nonces,
    32-byte partial signatures) from the pointers it is given; a shorter Python bytes was read
    past its end (here the terminating NUL made a 31-byte message or a 65-byte nonce "work").
    A provider's CoopAnswer reaches these calls, so its lengths are checked first."""
    key = BIP340.generate_key()
    other = BIP340.generate_key()
    agg = musig.KeyAgg.of([b"\x02" + key.public_key, b"\x02" + other.public_key])
    with pytest.raises(musig.MusigError, match="32 bytes"):
        musig.nonce_gen(key, agg, b"\x01" * 31)
    with pytest.raises(musig.MusigError, match="32 bytes"):
        agg.tweak(b"\x01" * 31, xonly=True)
    _, own = musig.nonce_gen(key, agg, b"\x01" * 32)
    while True:  # a public nonce whose last byte is 0x00, then cut to 65 bytes
        _, theirs = musig.nonce_gen(other, agg, b"\x01" * 32)
        if theirs[-1] == 0:
            break
    with pytest.raises(musig.MusigError, match="66 bytes"):
        musig.nonce_agg([own, theirs[:65]])
    aggnonce = musig.nonce_agg([own, theirs])
    assert not musig.partial_verify(
        b"\x01" * 31, theirs, b"\x02" + other.public_key, aggnonce, b"\x01" * 32, agg
    )
    with pytest.raises(musig.MusigError, match="32 bytes"):
        musig.partial_sig_agg([b"\x01" * 32, b"\x01" * 31], aggnonce, b"\x01" * 32, agg)
