"""A402 channels on Bitcoin: every closing path spent and validated by the node-free ledger."""

from __future__ import annotations

import dataclasses

import pytest
from bitcointx.core import CTransaction

from a402.bitcoin.channel import ExchangeError, Reply, client_refund
from a402.bitcoin.transactions import weight
from a402.bitcoin.validate import Refused

from ._setup import FEE_RATE, FUNDING_HEIGHT, REFUND_DELAY, open_channel, outputs, pay


def test_cooperative_close_pays_the_credited_balance_and_the_client_the_rest_less_fee() -> None:
    s = open_channel()
    for i in range(3):
        assert pay(s, 1_000, b"result %d" % i) == b"result %d" % i
    assert s.vault.provider_balance == s.provider.provider_balance == 3_000
    raw = s.vault.cooperative_finish(s.provider.cooperative_answer(s.vault.cooperative_proposal()))
    assert len(CTransaction.deserialize(raw).wit.vtxinwit[0].scriptWitness.stack) == 1  # key path
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 5)
    assert accepted.vsize == 154
    paid = outputs(raw)
    assert paid[s.params.provider_payout] == 3_000
    assert accepted.fee == accepted.vsize * FEE_RATE
    assert paid[s.params.client_payout] == s.params.funding.amount - 3_000 - accepted.fee
    assert s.ledger.coin(accepted.txid, 0) is not None
    assert s.ledger.coin(s.params.funding.txid, 0) is None


def test_a_cooperative_close_with_a_forged_partial_signature_or_stale_state_is_refused() -> None:
    s = open_channel()
    pay(s, 1_000, b"a")
    proposal = s.vault.cooperative_proposal()
    answer = s.provider.cooperative_answer(proposal)
    bad = bytes([answer.partial_signature[0] ^ 1]) + answer.partial_signature[1:]
    with pytest.raises(ExchangeError) as refused:
        s.vault.cooperative_finish(dataclasses.replace(answer, partial_signature=bad))
    assert refused.value.reason == "bad-partial-signature"
    # A proposal paying the provider less than its newest claim is not partially signed.
    stale = bytes(s.params.cooperative_close(500).serialize())
    with pytest.raises(ExchangeError) as wrong:
        s.provider.cooperative_answer(dataclasses.replace(proposal, unsigned=stale))
    assert wrong.value.reason == "wrong-state"
    raw = s.vault.cooperative_finish(answer)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 1_000


def test_provider_force_close_reveals_t_and_the_vault_opens_the_result_from_the_witness() -> None:
    s = open_channel()
    pay(s, 2_000, b"first")
    # The REVEAL of the second request never reaches the vault: the provider closes on-chain.
    assert pay(s, 5_000, b"the withheld result", reveal=False) is None
    assert s.vault.provider_balance == 2_000
    raw = s.provider.force_close()
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)  # no timelock on the payment leaf
    assert s.vault.on_chain_close(raw) == b"the withheld result"
    assert s.vault.provider_balance == 7_000
    assert outputs(raw)[s.params.provider_payout] == 7_000


def test_the_completed_signatures_in_the_witness_differ_from_the_pre_signatures_by_t() -> None:
    s = open_channel()
    pay(s, 1_000, b"r", reveal=False)
    claim = s.provider.claim
    assert claim is not None
    stack = CTransaction.deserialize(s.provider.force_close()).wit.vtxinwit[0].scriptWitness.stack
    from a402.crypto import BIP340, adaptor_point

    big_t = adaptor_point(claim.t)
    assert BIP340.extract(claim.vault_pre, bytes(stack[1]), big_t) == claim.t
    assert BIP340.extract(claim.provider_pre, bytes(stack[0]), big_t) == claim.t


def test_a_stale_client_close_loses_to_the_newer_state() -> None:
    s = open_channel()
    pay(s, 1_000, b"a")
    stale = client_refund(s.params, s.client_key, provider_balance=1_000)  # state 1
    pay(s, 4_000, b"b")  # state 2: 5,000 sat to the provider
    with pytest.raises(Refused) as early:
        s.ledger.apply(stale, FUNDING_HEIGHT + 10)
    assert early.value.reason == "non-BIP68-final"
    # The provider's watchtower closes with the newest state before the refund matures.
    assert s.provider.poll(FUNDING_HEIGHT + 10, FUNDING_HEIGHT, margin=12) is None
    answer = s.provider.poll(FUNDING_HEIGHT + REFUND_DELAY - 12, FUNDING_HEIGHT, margin=12)
    assert answer is not None
    s.ledger.apply(answer, FUNDING_HEIGHT + REFUND_DELAY - 12)
    s.provider.closed_on_chain()
    assert s.provider.poll(FUNDING_HEIGHT + REFUND_DELAY, FUNDING_HEIGHT, margin=12) is None
    with pytest.raises(Refused) as late:
        s.ledger.apply(stale, FUNDING_HEIGHT + REFUND_DELAY + 1)
    assert late.value.reason == "missing-or-spent"
    assert outputs(answer)[s.params.provider_payout] == 5_000


def test_the_client_refund_is_refused_one_block_early_and_accepted_at_its_timelock() -> None:
    s = open_channel()
    raw = client_refund(s.params, s.client_key)
    with pytest.raises(Refused) as early:
        s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY - 1)
    assert early.value.reason == "non-BIP68-final"
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY)
    assert outputs(raw) == {s.params.client_payout: s.params.funding.amount - accepted.fee}


def test_a_refund_whose_nsequence_is_below_the_scripts_delay_fails_in_the_interpreter() -> None:
    s = open_channel()
    from a402.bitcoin import signing
    from a402.bitcoin import transactions as txs
    from a402.bitcoin.scripts import REFUND_LEAF

    tx = s.params.refund()
    tx.vin[0].nSequence = REFUND_DELAY - 1  # BIP-68 satisfied at any later height; CSV is not
    sig = signing.sign_script_path(s.client_key, s.params.sighash(tx, REFUND_LEAF))
    raw = s.params.witness(tx, REFUND_LEAF, [sig])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(raw, FUNDING_HEIGHT + 1_000)
    assert refused.value.reason == "script-failed"
    assert txs.txid(tx)  # unchanged ledger: the channel output is still there
    assert s.ledger.coin(s.params.funding.txid, 0) is not None


def test_a_tampered_provider_pre_signature_is_refused_before_the_vault_signs_anything() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000)
    reply = s.provider.on_exec(exec_, b"r")
    bad_s = bytearray(reply.presignature)
    bad_s[-1] ^= 1
    wrong_state = s.provider.on_exec(dataclasses.replace(exec_, amount=1_001), b"r")
    for forged in (
        dataclasses.replace(reply, presignature=bytes(bad_s)),
        dataclasses.replace(reply, adaptor=wrong_state.adaptor),  # another T
        dataclasses.replace(reply, presignature=wrong_state.presignature,
                            adaptor=wrong_state.adaptor),  # pre-signs another balance
        Reply(reply.request_id, reply.adaptor, b"\x00" * 65, reply.sealed),
    ):
        with pytest.raises(ExchangeError) as refused:
            s.vault.on_reply(forged)
        assert refused.value.reason == "bad-presignature"
        assert s.vault.pending is not None and s.vault.pending.vault_pre is None
    assert s.vault.provider_balance == 0


def test_a_tampered_vault_pre_signature_is_refused_by_the_provider() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000)
    auth = s.vault.on_reply(s.provider.on_exec(exec_, b"r"))
    bad = bytearray(auth.presignature)
    bad[40] ^= 1
    with pytest.raises(ExchangeError) as refused:
        s.provider.on_auth(dataclasses.replace(auth, presignature=bytes(bad)))
    assert refused.value.reason == "bad-presignature"
    assert s.provider.claim is None


def test_a_forged_signature_in_the_force_close_witness_is_refused_by_the_interpreter() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    tx = CTransaction.deserialize(s.provider.force_close())
    stack = [bytes(x) for x in tx.wit.vtxinwit[0].scriptWitness.stack]
    stack[1] = stack[1][:63] + bytes([stack[1][63] ^ 1])
    from a402.bitcoin import transactions as txs

    forged = tx.to_mutable()
    txs.set_witness(forged, 0, stack)
    with pytest.raises(Refused) as refused:
        s.ledger.apply(bytes(forged.serialize()), FUNDING_HEIGHT + 1)
    assert refused.value.reason == "script-failed"


def test_a_wrong_control_block_is_refused_by_the_interpreter() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    tx = CTransaction.deserialize(s.provider.force_close())
    stack = [bytes(x) for x in tx.wit.vtxinwit[0].scriptWitness.stack]
    stack[3] = stack[3][:-1] + bytes([stack[3][-1] ^ 1])  # the sibling hash
    from a402.bitcoin import transactions as txs

    forged = tx.to_mutable()
    txs.set_witness(forged, 0, stack)
    with pytest.raises(Refused) as refused:
        s.ledger.apply(bytes(forged.serialize()), FUNDING_HEIGHT + 1)
    assert refused.value.reason == "script-failed"


def test_a_payment_beyond_capacity_is_refused_and_the_channel_is_unchanged() -> None:
    s = open_channel(deposit=20_000)
    with pytest.raises(ExchangeError) as refused:
        s.vault.request(b"GET /x", s.params.capacity() + 1)
    assert refused.value.reason == "over-capacity"
    assert s.vault.pending is None
    pay(s, s.params.capacity(), b"all of it")
    raw = s.provider.force_close()
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.client_payout] == 330
    assert weight(CTransaction.deserialize(raw).to_mutable()) <= accepted.vsize * 4


def test_a_malformed_or_oversized_sealed_result_is_refused_before_the_vault_signs() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000)
    reply = s.provider.on_exec(exec_, b"r")
    from a402.bitcoin.channel import MAX_SEALED

    for sealed, reason in ((b"\x07junk", "bad-result"), (b"\x01" * (MAX_SEALED + 1), "too-large")):
        with pytest.raises(ExchangeError) as refused:
            s.vault.on_reply(dataclasses.replace(reply, sealed=sealed))
        assert refused.value.reason == reason
        assert s.vault.pending is not None and s.vault.pending.vault_pre is None
    assert s.vault.on_reveal(s.provider.on_auth(s.vault.on_reply(reply))) == b"r"


def test_malformed_or_oversized_transactions_are_refused_and_the_ledger_is_unchanged() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    good = s.provider.force_close()
    for raw, reason in (
        (b"", "malformed"),
        (b"\x02\x00\x00\x00\x00\x01", "malformed"),
        (good[:-3], "malformed"),
        (good + b"\x00", "malformed"),
        (b"\x00" * 400_001, "too-large"),
    ):
        with pytest.raises(Refused) as refused:
            s.ledger.apply(raw, FUNDING_HEIGHT + 1)
        assert refused.value.reason == reason
    assert s.ledger.coin(s.params.funding.txid, 0) is not None
    s.ledger.apply(good, FUNDING_HEIGHT + 1)


def test_a_retransmitted_auth_and_reveal_are_answered_again_and_credit_once() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000)
    auth = s.vault.on_reply(s.provider.on_exec(exec_, b"once"))
    reveal = s.provider.on_auth(auth)
    assert s.provider.on_auth(auth) == reveal
    assert s.vault.on_reveal(reveal) == b"once"
    assert s.vault.on_reveal(reveal) == b"once"
    assert s.vault.provider_balance == s.provider.provider_balance == 1_000
    pay(s, 500, b"next")
    assert s.vault.provider_balance == s.provider.provider_balance == 1_500
    with pytest.raises(ExchangeError):  # an old REVEAL after a newer request: refused
        s.vault.on_reveal(reveal)


def test_a_vault_restored_after_auth_still_recovers_t_from_the_providers_close() -> None:
    from a402.bitcoin.channel import ProviderChannel, VaultChannel

    s = open_channel()
    pay(s, 1_000, b"first")
    pay(s, 2_000, b"withheld", reveal=False)
    vault = VaultChannel.restore(s.vault.snapshot(), s.params, s.vault_key)  # the vault restarts
    provider = ProviderChannel.restore(s.provider.snapshot(), s.params, s.provider_key)
    assert provider.provider_balance == 3_000
    raw = provider.force_close()
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert vault.on_chain_close(raw) == b"withheld"
    assert vault.provider_balance == 3_000
    assert outputs(raw)[s.params.provider_payout] == 3_000
