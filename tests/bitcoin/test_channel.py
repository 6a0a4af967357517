"""A402 channels on Bitcoin, driven by the ASC state machine: every closing path spent and
validated by the node-free ledger."""

from __future__ import annotations

import dataclasses

import pytest
from bitcointx.core import CTransaction

from a402.asc import (
    Ack,
    Auth,
    ExecuteRequest,
    PaymentAcknowledged,
    PaymentAuthorized,
    Reason,
    RemoteProtocolError,
    Reply,
    Reveal,
    Status,
    decode,
)
from a402.bitcoin.channel import ExchangeError, client_refund
from a402.bitcoin.exchange import (
    CooperativeClose,
    Watchtower,
    cooperative_answer,
    on_chain_close,
    payment_leaf_close,
    reply_digest,
    restore_provider,
    restore_vault,
)
from a402.bitcoin.scripts import PAYMENT_LEAF
from a402.bitcoin.transactions import weight
from a402.bitcoin.validate import Refused
from a402.crypto import BIP340, adaptor_point

from ._setup import (
    FEE_RATE,
    FUNDING_HEIGHT,
    REFUND_DELAY,
    Setup,
    agree_final,
    open_channel,
    outputs,
    pay,
)


def _up_to_auth(s: Setup, amount: int, result: bytes) -> tuple[Reply, Auth]:
    exec_ = s.vault.request(b"GET /x", amount, now=0.0)
    (run,) = s.provider.receive(decode(exec_.encode()), now=0.0).events
    assert isinstance(run, ExecuteRequest)
    reply = s.provider.reply(run.request_id, result)
    step = s.vault.receive(decode(reply.encode()), now=0.0)
    (auth,) = step.send
    assert isinstance(auth, Auth)
    assert step.events == (PaymentAuthorized(run.request_id, amount),)
    return reply, auth


def test_the_machine_pays_a_bitcoin_channel_with_no_ack_and_both_sides_hold_one_state() -> None:
    s = open_channel()
    with pytest.raises(AttributeError):  # the EVM terms: a Bitcoin channel has none
        _ = s.vault.terms
    assert s.vault.channel_id == s.provider.channel_id == s.params.channel_id
    reply, auth = _up_to_auth(s, 1_000, b"result 0")
    assert len(reply.presignature) == 64 and len(auth.authorization) == 65  # the ASC widths
    assert s.vault.status is Status.PENDING and s.vault.locked == 1_000
    step = s.provider.receive(decode(auth.encode()), now=0.0)
    (reveal,) = step.send
    assert isinstance(reveal, Reveal)
    # The completed σ_U is the vault's signature: the provider's state is co-signed at AUTH.
    assert s.provider.status is Status.OPEN and s.provider.state.provider_balance == 1_000
    assert isinstance(step.events[0], PaymentAcknowledged)
    done = s.vault.receive(decode(reveal.encode()), now=0.0)
    assert done.send == ()  # no ACK on Bitcoin
    assert not any(isinstance(m, Ack) for m in done.send)
    assert done.events[0].result == b"result 0"  # type: ignore[union-attr]
    for i in range(1, 3):
        assert pay(s, 1_000, b"result %d" % i) == b"result %d" % i
    assert s.vault.latest_state() == s.provider.latest_state()
    state = s.vault.state
    assert (state.version, state.provider_balance) == (3, 3_000)
    assert state.client_balance == s.params.funding.amount - 3_000
    assert s.vault.free == state.client_balance and s.vault.locked == 0
    # The vault's copy is not a close on its own (the provider's signature in it is off-chain);
    # the provider closes it with its key and σ_U, which verifies on this state's close.
    with pytest.raises(ExchangeError):
        payment_leaf_close(s.params, s.vault.latest_state())
    raw = payment_leaf_close(s.params, s.vault.latest_state(), s.provider_key)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 3_000


def test_cooperative_close_pays_the_final_state_and_the_client_the_rest_less_fee() -> None:
    s = open_channel()
    for i in range(3):
        assert pay(s, 1_000, b"result %d" % i) == b"result %d" % i
    vault_final, provider_final = agree_final(s)
    assert vault_final.state.is_final and vault_final.state.provider_balance == 3_000
    assert s.vault.status is Status.CLOSED and s.provider.status is Status.CLOSED
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    raw = musig_close.finish(
        cooperative_answer(s.params, s.provider_key, provider_final, musig_close.proposal())
    )
    assert len(CTransaction.deserialize(raw).wit.vtxinwit[0].scriptWitness.stack) == 1  # key path
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 5)
    assert accepted.vsize == 154
    paid = outputs(raw)
    assert paid[s.params.provider_payout] == 3_000
    assert accepted.fee == accepted.vsize * FEE_RATE
    assert paid[s.params.client_payout] == s.params.funding.amount - 3_000 - accepted.fee
    assert s.ledger.coin(s.params.funding.txid, 0) is None
    # The same final state closes by the payment leaf's two signatures too (204 vB).
    assert payment_leaf_close(s.params, vault_final) == payment_leaf_close(s.params, provider_final)


def test_a_cooperative_close_with_a_forged_partial_signature_or_stale_state_is_refused() -> None:
    s = open_channel()
    pay(s, 1_000, b"a")
    vault_final, provider_final = agree_final(s)
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    proposal = musig_close.proposal()
    answer = cooperative_answer(s.params, s.provider_key, provider_final, proposal)
    bad = bytes([answer.partial_signature[0] ^ 1]) + answer.partial_signature[1:]
    with pytest.raises(ExchangeError) as refused:
        musig_close.finish(dataclasses.replace(answer, partial_signature=bad))
    assert refused.value.reason == "bad-partial-signature"
    # A proposal paying the provider less than the final state is not partially signed.
    stale = bytes(s.params.cooperative_close(500).serialize())
    with pytest.raises(ExchangeError) as wrong:
        cooperative_answer(
            s.params, s.provider_key, provider_final, dataclasses.replace(proposal, unsigned=stale)
        )
    assert wrong.value.reason == "wrong-state"
    # Nor is a state that is not the agreed final one.
    with pytest.raises(ExchangeError) as not_final:
        CooperativeClose(s.params, s.vault_key, s.vault.latest_state())
    assert not_final.value.reason == "not-final"
    raw = musig_close.finish(answer)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 1_000


def test_provider_force_close_from_the_machine_state_reveals_t_to_the_vault() -> None:
    s = open_channel()
    pay(s, 2_000, b"first")
    # The REVEAL of the second request never reaches the vault: the provider closes on-chain
    # with the state the machine co-signed at AUTH.
    assert pay(s, 5_000, b"the withheld result", reveal=False) is None
    assert s.vault.status is Status.PENDING and s.vault.provider_balance == 2_000
    raw = payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 1)  # no timelock on the payment leaf
    step = on_chain_close(s.vault, s.params, raw)  # the witness alone
    (delivered,) = step.events
    assert delivered.result == b"the withheld result"  # type: ignore[union-attr]
    assert delivered.on_chain and delivered.amount == 5_000  # type: ignore[union-attr]
    assert s.vault.status is Status.CLOSED
    paid = outputs(raw)
    assert paid[s.params.provider_payout] == 7_000
    assert paid[s.params.client_payout] == s.params.funding.amount - 7_000 - accepted.fee


def test_the_vaults_witness_signature_completes_its_pre_signature_by_t() -> None:
    s = open_channel()
    reply, auth = _up_to_auth(s, 1_000, b"r")
    (reveal,) = s.provider.receive(auth, now=0.0).send
    assert isinstance(reveal, Reveal)
    stack = CTransaction.deserialize(
        payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    ).wit.vtxinwit[0].scriptWitness.stack
    vault_pre = BIP340.presignature_from_bytes(auth.authorization)
    big_t = adaptor_point(reveal.adaptor_secret)
    assert big_t == reply.adaptor_point
    assert BIP340.extract(vault_pre, bytes(stack[1]), big_t) == reveal.adaptor_secret


def test_a_stale_client_close_loses_to_the_newer_state_through_the_watchtower() -> None:
    s = open_channel()
    pay(s, 1_000, b"a")
    stale = client_refund(s.params, s.client_key, provider_balance=1_000)  # state 1
    pay(s, 4_000, b"b")  # state 2: 5,000 sat to the provider
    with pytest.raises(Refused) as early:
        s.ledger.apply(stale, FUNDING_HEIGHT + 10)
    assert early.value.reason == "non-BIP68-final"
    # The provider's watchtower closes with the newest state before the refund matures.
    tower = Watchtower(s.provider, s.params, FUNDING_HEIGHT, margin=12, key=s.provider_key)
    assert tower.poll(FUNDING_HEIGHT + 10) is None
    answer = tower.poll(FUNDING_HEIGHT + REFUND_DELAY - 12)
    assert answer is not None
    s.ledger.apply(answer, FUNDING_HEIGHT + REFUND_DELAY - 12)
    tower.channel_spent(answer)
    assert s.provider.status is Status.CLOSED
    assert tower.poll(FUNDING_HEIGHT + REFUND_DELAY) is None
    with pytest.raises(Refused) as late:
        s.ledger.apply(stale, FUNDING_HEIGHT + REFUND_DELAY + 1)
    assert late.value.reason == "missing-or-spent"
    assert outputs(answer)[s.params.provider_payout] == 5_000
    # The vault sees a close of the state it already credited: nothing in flight to open.
    assert on_chain_close(s.vault, s.params, answer).events == ()
    assert s.vault.status is Status.CLOSED and s.vault.provider_balance == 5_000


def test_the_client_refund_is_refused_one_block_early_and_accepted_at_its_timelock() -> None:
    s = open_channel()
    raw = client_refund(s.params, s.client_key)
    with pytest.raises(Refused) as early:
        s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY - 1)
    assert early.value.reason == "non-BIP68-final"
    assert s.ledger.coin(s.params.funding.txid, 0) is not None
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY)
    assert outputs(raw) == {s.params.client_payout: s.params.funding.amount - accepted.fee}


def test_a_refund_whose_nsequence_is_below_the_scripts_delay_fails_in_the_interpreter() -> None:
    s = open_channel()
    from a402.bitcoin import signing
    from a402.bitcoin.scripts import REFUND_LEAF

    tx = s.params.refund()
    tx.vin[0].nSequence = REFUND_DELAY - 1  # BIP-68 satisfied at any later height; CSV is not
    sig = signing.sign_script_path(s.client_key, s.params.sighash(tx, REFUND_LEAF))
    raw = s.params.witness(tx, REFUND_LEAF, [sig])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(raw, FUNDING_HEIGHT + 1_000)
    assert refused.value.reason == "script-failed"
    assert s.ledger.coin(s.params.funding.txid, 0) is not None


def test_a_tampered_provider_pre_signature_is_refused_before_the_vault_signs_anything() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000, now=0.0)
    (run,) = s.provider.receive(exec_, now=0.0).events
    assert isinstance(run, ExecuteRequest)
    reply = s.provider.reply(run.request_id, b"r")
    # A REPLY honestly pre-signing another balance (another provider channel, same keys).
    from a402.bitcoin.exchange import provider_channel

    other = provider_channel(s.params, s.provider_key, s.provider_key)
    other.receive(dataclasses.replace(exec_, amount=1_001), now=0.0)
    wrong_state = other.reply(run.request_id, b"r")
    bad_s = bytearray(reply.presignature)
    bad_s[-1] ^= 1
    snapshot = s.vault.snapshot()
    for forged in (
        dataclasses.replace(reply, presignature=bytes(bad_s)),
        dataclasses.replace(reply, adaptor_point=wrong_state.adaptor_point),  # another T
        dataclasses.replace(reply, presignature=wrong_state.presignature,
                            adaptor_point=wrong_state.adaptor_point),  # pre-signs 1,001 sat
        dataclasses.replace(reply, presignature=bytes(64)),
    ):
        with pytest.raises(RemoteProtocolError) as refused:
            s.vault.receive(decode(forged.encode()), now=0.0)
        assert refused.value.reason in (Reason.BAD_PRESIGNATURE, Reason.MALFORMED)
        assert s.vault.status is Status.LOCKED and s.vault.pending_auth() is None
        assert s.vault.snapshot() == snapshot  # nothing signed, nothing changed
    assert s.vault.provider_balance == 0 and s.vault.locked == 1_000
    (auth,) = s.vault.receive(reply, now=0.0).send  # the genuine REPLY still goes through
    assert isinstance(auth, Auth)


def test_a_tampered_vault_pre_signature_is_refused_by_the_provider() -> None:
    s = open_channel()
    _, auth = _up_to_auth(s, 1_000, b"r")
    bad = bytearray(auth.authorization)
    bad[40] ^= 1
    with pytest.raises(RemoteProtocolError) as refused:
        s.provider.receive(dataclasses.replace(auth, authorization=bytes(bad)), now=0.0)
    assert refused.value.reason == Reason.BAD_AUTHORIZATION
    assert s.provider.status is Status.LOCKED and s.provider.state.provider_balance == 0


def test_a_forged_signature_in_the_force_close_witness_is_refused_by_the_interpreter() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    tx = CTransaction.deserialize(
        payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    )
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
    tx = CTransaction.deserialize(
        payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    )
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
    from a402.asc import LocalProtocolError

    with pytest.raises(LocalProtocolError) as refused:
        s.vault.request(b"GET /x", s.params.capacity() + 1, now=0.0)
    assert refused.value.reason == Reason.INSUFFICIENT_BALANCE
    assert "over-capacity" in refused.value.detail
    assert s.vault.status is Status.OPEN and s.vault.next_request_id == 0
    pay(s, s.params.capacity(), b"all of it")
    raw = payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.client_payout] == 330
    assert weight(CTransaction.deserialize(raw).to_mutable()) <= accepted.vsize * 4


def test_a_malformed_sealed_result_is_refused_before_the_vault_signs() -> None:
    s = open_channel()
    exec_ = s.vault.request(b"GET /x", 1_000, now=0.0)
    s.provider.receive(exec_, now=0.0)
    reply = s.provider.reply(exec_.request_id, b"r")
    with pytest.raises(RemoteProtocolError) as refused:
        s.vault.receive(dataclasses.replace(reply, sealed_result=b"\x07junk"), now=0.0)
    assert refused.value.reason == Reason.MALFORMED
    assert s.vault.status is Status.LOCKED and s.vault.pending_auth() is None
    (auth,) = s.vault.receive(reply, now=0.0).send
    (reveal,) = s.provider.receive(auth, now=0.0).send
    assert s.vault.receive(reveal, now=0.0).events[0].result == b"r"  # type: ignore[union-attr]


def test_malformed_or_oversized_transactions_are_refused_and_the_ledger_is_unchanged() -> None:
    s = open_channel()
    pay(s, 1_000, b"r")
    good = payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)
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
    _, auth = _up_to_auth(s, 1_000, b"once")
    (reveal,) = s.provider.receive(auth, now=0.0).send
    assert s.provider.receive(auth, now=0.0).send == (reveal,)  # the REVEAL was lost
    assert s.vault.receive(reveal, now=0.0).events[0].result == b"once"  # type: ignore[union-attr]
    assert s.vault.receive(reveal, now=0.0).events == ()  # a duplicate credits nothing
    assert s.vault.provider_balance == s.provider.state.provider_balance == 1_000
    pay(s, 500, b"next")
    assert s.vault.provider_balance == s.provider.state.provider_balance == 1_500
    with pytest.raises(RemoteProtocolError) as replayed:  # an old AUTH after a newer request
        s.provider.receive(auth, now=0.0)
    assert replayed.value.reason == Reason.REPLAYED
    assert s.provider.state.provider_balance == 1_500


def test_both_sides_restored_after_auth_still_settle_from_the_providers_close() -> None:
    s = open_channel()
    pay(s, 1_000, b"first")
    pay(s, 2_000, b"withheld", reveal=False)
    vault = restore_vault(s.vault.snapshot(), s.params, s.vault_key)  # the vault restarts
    provider = restore_provider(s.provider.snapshot(), s.params, s.provider_key)
    assert provider.state.provider_balance == 3_000 and vault.status is Status.PENDING
    raw = payment_leaf_close(s.params, provider.latest_state(), s.provider_key)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    (delivered,) = on_chain_close(vault, s.params, raw).events
    assert delivered.result == b"withheld"  # type: ignore[union-attr]
    assert outputs(raw)[s.params.provider_payout] == 3_000
    # A snapshot is bound to its channel: another channel's parameters are refused.
    other = open_channel()
    from a402.asc import SnapshotError

    with pytest.raises(SnapshotError):
        restore_vault(s.vault.snapshot(), other.params, s.vault_key)


def test_the_sighash_the_provider_pre_signs_is_the_close_of_the_new_state() -> None:
    """Tagged: the provider's pre-signature binds the new state's close, but completed with
    ``t`` it is no signature on that close (the vault must not hold one)."""
    s = open_channel()
    pay(s, 700, b"r")
    reply, _ = _up_to_auth(s, 800, b"s")
    tx = s.params.payment_close(1_500)
    m = s.params.sighash(tx, PAYMENT_LEAF)
    presig = BIP340.presignature_from_bytes(b"\x02" + reply.presignature)
    assert BIP340.pre_verify(s.params.keys.provider, reply_digest(m), reply.adaptor_point, presig)
    assert not BIP340.pre_verify(s.params.keys.provider, m, reply.adaptor_point, presig)
