"""Every channel spend's sighash and size, recomputed by a second library (embit)."""

from __future__ import annotations

from bitcointx.core import CTransaction
from embit.script import Script as EmbitScript
from embit.transaction import Transaction as EmbitTransaction

from a402.bitcoin import transactions as txs
from a402.bitcoin.channel import client_refund
from a402.bitcoin.exchange import payment_leaf_close
from a402.bitcoin.scripts import PAYMENT_LEAF, REFUND_LEAF

from ._setup import open_channel, pay


def _embit_sighash(raw: bytes, spent: txs.Utxo, leaf: bytes | None) -> bytes:
    tx = EmbitTransaction.parse(raw)
    script = EmbitScript(leaf) if leaf is not None else None
    return bytes(
        tx.sighash_taproot(
            0, [EmbitScript(spent.script_pubkey)], [spent.amount],
            ext_flag=1 if leaf is not None else 0, script=script,
        )
    )


def test_payment_and_refund_sighashes_agree_between_bitcointx_and_embit() -> None:
    s = open_channel()
    pay(s, 1_234, b"r")
    for raw, name in (
        (payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key), PAYMENT_LEAF),
        (client_refund(s.params, s.client_key), REFUND_LEAF),
    ):
        tx = CTransaction.deserialize(raw).to_mutable()
        leaf, _ = s.params.output.leaf(name)
        ours = s.params.sighash(tx, name)
        assert ours == _embit_sighash(raw, s.params.funding, bytes(leaf))
        assert EmbitTransaction.parse(raw).serialize() == raw


def test_sizes_are_computed_from_the_serialised_transaction() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    raw = payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    tx = CTransaction.deserialize(raw)
    stripped = len(tx.serialize(include_witness=False))
    weight = 3 * stripped + len(raw)
    assert txs.weight(tx.to_mutable()) == weight
    assert txs.vsize(tx.to_mutable()) == -(-weight // 4)


def test_the_channel_output_key_is_the_same_by_bitcointx_embit_and_libsecp256k1s_musig() -> None:
    from embit.ec import PublicKey as EmbitPublicKey

    s = open_channel()
    out = s.params.output
    embit_key = EmbitPublicKey.from_xonly(out.internal_key).taproot_tweak(out.merkle_root)
    assert embit_key.xonly() == out.output_key
    assert s.params.cooperative_key().xonly() == out.output_key
    assert out.script_pubkey == b"\x51\x20" + out.output_key
