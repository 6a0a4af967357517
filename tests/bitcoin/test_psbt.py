"""The cooperative close as a PSBT (BIP-174/371) passed between the vault and the provider."""

from __future__ import annotations

import pytest
from bitcointx.core.psbt import PartiallySignedTransaction

from a402.bitcoin import psbt, signing
from a402.bitcoin.channel import ExchangeError
from a402.bitcoin.scripts import PAYMENT_LEAF, REFUND_LEAF

from ._setup import FUNDING_HEIGHT, open_channel, outputs, pay


def test_a_cooperative_close_signed_through_a_psbt_is_accepted_by_the_ledger() -> None:
    s = open_channel()
    pay(s, 2_500, b"r")
    close = s.vault.close()  # the machine's CLOSE: the vault's signature on the final state
    vault_sig = close.signature[:64]
    tx = s.params.payment_close(close.state.provider_balance)
    unsigned = bytes(tx.serialize())
    encoded = psbt.to_psbt(s.params, tx, PAYMENT_LEAF, {s.params.keys.vault: vault_sig})
    # A second library reads the same PSBT (its unsigned transaction, its spent output).
    other = PartiallySignedTransaction.from_base64(encoded)
    assert bytes(other.unsigned_tx.serialize()) == unsigned
    with pytest.raises(ExchangeError):  # the provider's signature is missing
        psbt.finalize(s.params, encoded)
    raw_tx, found = psbt.signatures(s.params, encoded, PAYMENT_LEAF)
    assert raw_tx == unsigned
    assert found == {s.params.keys.vault: vault_sig}
    own = signing.sign_script_path(s.provider_key, s.params.sighash(tx, PAYMENT_LEAF))
    both = psbt.to_psbt(s.params, tx, PAYMENT_LEAF, {**found, s.params.keys.provider: own})
    raw = psbt.finalize(s.params, both)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 2_500


def test_a_psbt_with_a_forged_signature_or_another_leaf_is_refused() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    close = s.vault.close()  # the machine's CLOSE: the vault's signature on the final state
    vault_sig = close.signature[:64]
    tx = s.params.payment_close(close.state.provider_balance)
    forged = bytes([vault_sig[0] ^ 1]) + vault_sig[1:]
    for encoded, leaf in (
        (psbt.to_psbt(s.params, tx, PAYMENT_LEAF, {s.params.keys.vault: forged}), PAYMENT_LEAF),
        (psbt.to_psbt(s.params, tx, REFUND_LEAF, {}), PAYMENT_LEAF),
        ("cHNidP8BAA==", PAYMENT_LEAF),
    ):
        with pytest.raises(ExchangeError) as refused:
            psbt.signatures(s.params, encoded, leaf)
        assert refused.value.reason == "bad-psbt"
