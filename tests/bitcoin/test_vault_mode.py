"""Vault mode on Bitcoin: the aggregated settlement and a participant's force-settle."""

from __future__ import annotations

import pytest

from a402.bitcoin.channel import Deposit, force_settle, funding_transaction, vault_settlement
from a402.bitcoin.scripts import VaultDepositKeys, payout_script_pubkey
from a402.bitcoin.transactions import Output, Utxo
from a402.bitcoin.validate import Ledger, Refused
from a402.crypto import BIP340

from ._setup import outputs

LONG_DELAY = 4_320  # about 30 days of blocks


def _deposits(n: int) -> tuple[Ledger, list[Deposit], list, object]:
    vault = BIP340.generate_key()
    ledger = Ledger()
    deposits, participants = [], []
    for i in range(n):
        participant, wallet = BIP340.generate_key(), BIP340.generate_key()
        keys = VaultDepositKeys(vault.public_key, participant.public_key, LONG_DELAY)
        spk = payout_script_pubkey(wallet.public_key)
        coin = Utxo(f"{i + 1:02x}" * 32, 0, 300_000, spk)
        ledger.credit(coin, 10)
        raw = funding_transaction(coin, wallet, keys.output().script_pubkey, 200_000, spk, 10)
        txid = ledger.apply(raw, 20).txid
        deposits.append(Deposit(Utxo(txid, 0, 200_000, keys.output().script_pubkey), keys))
        participants.append(participant)
    return ledger, deposits, participants, vault


def test_the_vault_settles_many_deposits_in_one_transaction_by_key_path() -> None:
    ledger, deposits, participants, vault = _deposits(3)
    provider = payout_script_pubkey(BIP340.generate_key().public_key)
    refunds = [payout_script_pubkey(p.public_key) for p in participants]
    payouts = [Output(provider, 150_000)] + [Output(r, 140_000) for r in refunds]
    change = payout_script_pubkey(vault.public_key)
    raw = vault_settlement(deposits, payouts, vault, change, 10)
    accepted = ledger.apply(raw, 25)
    paid = outputs(raw)
    assert paid[provider] == 150_000
    assert all(paid[r] == 140_000 for r in refunds)
    assert accepted.fee == accepted.vsize * 10
    assert paid[change] == 600_000 - 150_000 - 3 * 140_000 - accepted.fee
    assert all(ledger.coin(d.utxo.txid, 0) is None for d in deposits)


def test_a_settlement_paying_more_than_the_deposits_is_refused() -> None:
    _, deposits, _, vault = _deposits(1)
    spk = payout_script_pubkey(vault.public_key)
    with pytest.raises(ValueError):
        vault_settlement(deposits, [Output(spk, 200_000)], vault, spk, 10)


def test_a_participant_force_settles_only_after_the_long_timelock() -> None:
    ledger, deposits, participants, _ = _deposits(1)
    out = payout_script_pubkey(participants[0].public_key)
    raw = force_settle(deposits[0], participants[0], out, 10)
    with pytest.raises(Refused) as early:
        ledger.apply(raw, 20 + LONG_DELAY - 1)
    assert early.value.reason == "non-BIP68-final"
    accepted = ledger.apply(raw, 20 + LONG_DELAY)
    assert outputs(raw) == {out: 200_000 - accepted.fee}


def test_someone_else_cannot_force_settle_a_participants_deposit() -> None:
    ledger, deposits, _, _ = _deposits(1)
    thief = BIP340.generate_key()
    raw = force_settle(deposits[0], thief, payout_script_pubkey(thief.public_key), 10)
    with pytest.raises(Refused) as refused:
        ledger.apply(raw, 20 + LONG_DELAY)
    assert refused.value.reason == "script-failed"


def test_a_settlement_re_deposits_the_remainder_and_the_exit_takes_only_that() -> None:
    ledger, deposits, participants, vault = _deposits(1)
    provider = payout_script_pubkey(BIP340.generate_key().public_key)
    again = VaultDepositKeys(vault.public_key, participants[0].public_key, LONG_DELAY)
    payouts = [Output(provider, 120_000), Output(again.output().script_pubkey, 78_000)]
    raw = vault_settlement(deposits, payouts, vault, provider, 10)
    settled = ledger.apply(raw, 30)
    remainder = Deposit(Utxo(settled.txid, 1, 78_000, again.output().script_pubkey), again)
    home = payout_script_pubkey(participants[0].public_key)
    exit_ = force_settle(remainder, participants[0], home, 10)
    with pytest.raises(Refused) as early:  # Δ_long restarts at the settlement's height
        ledger.apply(exit_, 20 + LONG_DELAY)
    assert early.value.reason == "non-BIP68-final"
    accepted = ledger.apply(exit_, 30 + LONG_DELAY)
    assert sum(outputs(exit_).values()) == 78_000 - accepted.fee
    # The settled deposit itself is gone: an exit built on it is a double spend.
    with pytest.raises(Refused) as spent:
        ledger.apply(force_settle(deposits[0], participants[0], provider, 10), 20 + LONG_DELAY)
    assert spent.value.reason == "missing-or-spent"
