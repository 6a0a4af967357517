"""An adversarial review of the Bitcoin channel: what a provider, vault or client could try.

Each test names one attempt; those marked "regression" failed before the fix of the same
session (the ledger accepted what Bitcoin Core rejects, or a party signed a state the
protocol does not allow).
"""

from __future__ import annotations

import dataclasses
import io

import buidl.script
import buidl.tx
import pytest
from bitcointx.core import CMutableTransaction, CTransaction

from a402.asc import (
    Exec,
    LocalProtocolError,
    Reason,
    RemoteProtocolError,
    ResultDelivered,
    SnapshotError,
    Status,
)
from a402.bitcoin.channel import ExchangeError, client_refund
from a402.bitcoin.exchange import (
    CooperativeClose,
    Watchtower,
    cooperative_answer,
    on_chain_close,
    payment_leaf_close,
    restore_provider,
    restore_vault,
)
from a402.bitcoin.scripts import PAYMENT_LEAF
from a402.bitcoin.transactions import P2TR_DUST, Utxo, set_witness
from a402.bitcoin.validate import Refused
from a402.crypto import BIP340, generate_adaptor

from ._setup import (
    FUNDING_HEIGHT,
    REFUND_DELAY,
    Setup,
    agree_final,
    open_channel,
    outputs,
    pay,
)


def _force_close(s: Setup) -> bytes:
    """The provider's close of its newest co-signed state (the machine's)."""
    return payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)


def _opened(s: Setup, raw: bytes) -> bytes | None:
    """What the vault opens from ``raw`` on-chain (None if nothing was in flight)."""
    for event in on_chain_close(s.vault, s.params, raw).events:
        if isinstance(event, ResultDelivered):
            return event.result
    return None


def _restack(raw: bytes, stack: list[bytes]) -> bytes:
    tx = CMutableTransaction.from_tx(CTransaction.deserialize(raw))
    set_witness(tx, 0, stack)
    return bytes(tx.serialize())


def _stack(raw: bytes) -> list[bytes]:
    return [bytes(x) for x in CTransaction.deserialize(raw).wit.vtxinwit[0].scriptWitness.stack]


def _buidl_sighash(raw: bytes, spent: Utxo, hash_type: int) -> bytes:
    """Input 0's tapscript sighash by buidl (annex and hash type as the witness has them)."""
    tx = buidl.tx.Tx.parse(io.BytesIO(raw), network="regtest")
    tx.tx_ins[0]._value = spent.amount
    spk = spent.script_pubkey
    tx.tx_ins[0]._script_pubkey = buidl.script.Script.parse(io.BytesIO(bytes([len(spk)]) + spk))
    return bytes(tx.sig_hash_bip341(0, ext_flag=1, hash_type=hash_type))


def test_a_force_close_whose_signature_carries_an_explicit_default_hash_type_is_refused() -> None:
    """Regression: BIP-341 makes a 65-byte signature with hash type 0x00 invalid; buidl
    accepted it (it hashes as SIGHASH_DEFAULT), and the vault could not extract t from it."""
    s = open_channel()
    pay(s, 2_000, b"r", reveal=False)
    raw = _force_close(s)
    provider_sig, vault_sig, leaf, control = _stack(raw)
    padded = _restack(raw, [provider_sig, vault_sig + b"\x00", leaf, control])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(padded, FUNDING_HEIGHT + 1)
    assert refused.value.reason == "script-failed"
    assert s.ledger.coin(s.params.funding.txid, 0) is not None  # unchanged
    # The vault's own close of the same state is still accepted, and t comes out of it.
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert _opened(s, raw) == b"r"


def test_an_undefined_sighash_type_on_the_providers_own_signature_is_refused() -> None:
    """Regression: hash types other than 0x00-0x03 and 0x81-0x83 are invalid (BIP-341); buidl
    hashed 0x04 as if it were a type and accepted a signature made over that hash."""
    s = open_channel()
    pay(s, 2_000, b"r", reveal=False)
    raw = _force_close(s)
    provider_sig, vault_sig, leaf, control = _stack(raw)
    odd = _restack(raw, [provider_sig + b"\x04", vault_sig, leaf, control])
    resigned = BIP340.sign(s.provider_key, _buidl_sighash(odd, s.params.funding, 0x04))
    odd = _restack(raw, [resigned + b"\x04", vault_sig, leaf, control])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(odd, FUNDING_HEIGHT + 1)
    assert refused.value.reason == "script-failed"


def test_a_tapscript_spend_that_leaves_extra_items_on_the_stack_is_refused() -> None:
    """Regression: BIP-342 requires a clean stack (exactly one true item at the end); buidl
    only looked at the top item, so an extra witness item below the signatures passed."""
    s = open_channel()
    pay(s, 2_000, b"r", reveal=False)
    raw = _force_close(s)
    dirty = _restack(raw, [b"\x01", *_stack(raw)])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(dirty, FUNDING_HEIGHT + 1)
    assert refused.value.reason == "script-failed"
    refund = client_refund(s.params, s.client_key)
    with pytest.raises(Refused):
        s.ledger.apply(_restack(refund, [b"", *_stack(refund)]), FUNDING_HEIGHT + REFUND_DELAY)
    accepted = s.ledger.apply(refund, FUNDING_HEIGHT + REFUND_DELAY)
    assert outputs(refund)[s.params.client_payout] == s.params.funding.amount - accepted.fee


def test_a_witness_with_an_annex_is_refused_as_nonstandard() -> None:
    """Regression: an annex (last item starting 0x50) is non-standard in Bitcoin Core; buidl
    stripped it and went on (the client signs over the annex here, so only policy refuses)."""
    s = open_channel()
    refund = client_refund(s.params, s.client_key)
    _sig, leaf, control = _stack(refund)
    annexed = _restack(refund, [bytes(64), leaf, control, b"\x50"])
    resigned = BIP340.sign(s.client_key, _buidl_sighash(annexed, s.params.funding, 0))
    annexed = _restack(refund, [resigned, leaf, control, b"\x50"])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(annexed, FUNDING_HEIGHT + REFUND_DELAY)
    assert refused.value.reason == "script-failed"


def test_the_provider_refuses_an_exec_that_would_lower_or_not_raise_its_claim() -> None:
    """Regression: the provider pre-signed (and, on AUTH, adopted as its newest claim) a state
    paying it less than the one it holds, for an EXEC with a zero or negative amount. The
    machine refuses them now (a negative amount cannot even be encoded)."""
    s = open_channel()
    pay(s, 2_000, b"first")
    with pytest.raises(RemoteProtocolError) as refused:
        s.provider.receive(Exec(s.provider.channel_id, 7, 1, 0, b"GET /"), now=0.0)
    assert refused.value.reason == Reason.INVALID_AMOUNT
    with pytest.raises(ValueError):
        Exec(s.provider.channel_id, 7, 1, -1_000, b"GET /").encode()
    assert s.provider.state.provider_balance == 2_000 and s.provider.status is Status.OPEN
    assert outputs(_force_close(s))[s.params.provider_payout] == 2_000


def test_the_provider_refuses_an_exec_beyond_the_channel_with_a_clear_reason() -> None:
    """Regression: an EXEC over capacity escaped as a bare TransactionError or a wrong one.
    (Within the client's balance but over what a close can pay after its fee and dust.)"""
    s = open_channel()
    over = s.params.capacity() + 1
    with pytest.raises(RemoteProtocolError) as refused:
        s.provider.receive(Exec(s.provider.channel_id, 0, 0, over, b"GET /"), now=0.0)
    assert refused.value.reason == Reason.INSUFFICIENT_BALANCE
    assert "over-capacity" in refused.value.detail
    assert s.provider.status is Status.OPEN and s.provider.next_request_id == 0


def test_a_first_payment_below_the_dust_limit_is_refused_before_exec() -> None:
    """Regression: a provider balance below P2TR dust (330 sat) cannot be an output; the vault
    sent the EXEC anyway and then failed in on_reply with a TransactionError."""
    s = open_channel()
    with pytest.raises(LocalProtocolError) as refused:
        s.vault.request(b"GET /", P2TR_DUST - 1, now=0.0)
    assert refused.value.reason == Reason.INVALID_AMOUNT
    assert "below-dust" in refused.value.detail
    assert s.vault.status is Status.OPEN and s.vault.next_request_id == 0
    with pytest.raises(RemoteProtocolError) as provider_refused:
        s.provider.receive(Exec(s.provider.channel_id, 0, 0, P2TR_DUST - 1, b"GET /"), now=0.0)
    assert provider_refused.value.reason == Reason.INVALID_AMOUNT
    assert pay(s, P2TR_DUST, b"ok") == b"ok"
    assert pay(s, 1, b"one more sat") == b"one more sat"  # above dust, any amount
    assert s.vault.provider_balance == P2TR_DUST + 1


def test_a_metered_charge_below_dust_is_refused_by_the_provider_before_it_pre_signs() -> None:
    """The machine's metered charge δ' ≤ δ must still leave the provider's output above dust:
    the provider's machine refuses to reply with it (and the vault would refuse the REPLY)."""
    s = open_channel()
    exec_ = s.vault.request(b"GET /", 1_000, now=0.0)
    s.provider.receive(exec_, now=0.0)
    with pytest.raises(LocalProtocolError) as refused:
        s.provider.reply(exec_.request_id, b"x", charge=P2TR_DUST - 1)
    assert refused.value.reason == Reason.INVALID_AMOUNT
    reply = s.provider.reply(exec_.request_id, b"x", charge=400)
    (auth,) = s.vault.receive(reply, now=0.0).send
    (reveal,) = s.provider.receive(auth, now=0.0).send
    s.vault.receive(reveal, now=0.0)
    assert s.vault.provider_balance == s.provider.state.provider_balance == 400
    assert s.vault.free == s.params.funding.amount - 400


def test_the_vaults_signatures_on_one_state_never_share_a_nonce() -> None:
    """Check (passes as built): the vault pre-signs a state under T (AUTH), then signs the
    same state's close plainly (CLOSE); a provider replays the same sighash under another T.
    A shared nonce in any two of these would reveal the vault's key; they all differ (the
    same REPLY signed again gives the same bytes, which reveals nothing)."""
    s = open_channel()
    exec_ = s.vault.request(b"GET /", 2_000, now=0.0)
    s.provider.receive(exec_, now=0.0)
    reply = s.provider.reply(exec_.request_id, b"r")
    (auth,) = s.vault.receive(reply, now=0.0).send
    (reveal,) = s.provider.receive(auth, now=0.0).send
    s.vault.receive(reveal, now=0.0)
    pre = BIP340.presignature_from_bytes(auth.authorization)
    vault_final, _ = agree_final(s)
    plain = vault_final.vault_signature[:64]
    message = s.params.sighash(s.params.payment_close(2_000), PAYMENT_LEAF)

    _, other_t = generate_adaptor()
    again = BIP340.pre_sign(s.vault_key, message, other_t, aux_rand=bytes(32))
    fixed = BIP340.pre_sign(s.vault_key, message, reply.adaptor_point, aux_rand=bytes(32))
    assert fixed == pre  # σ̂_U is deterministic in (m, T): the one reuse is the same ŝ
    nonces = {pre.to_bytes()[1:33], plain[:32], again.to_bytes()[1:33]}
    assert len(nonces) == 3
    assert BIP340.verify(s.params.keys.vault, message, plain)


@pytest.mark.parametrize("margin", [0, -1, REFUND_DELAY])
def test_the_watchtower_refuses_a_margin_that_would_race_or_precede_the_refund(margin: int) -> None:
    """Regression: margin 0 made poll() broadcast at the very height the client's refund
    becomes valid (a race the provider can lose); margin ≥ Δ closed at once."""
    s = open_channel()
    pay(s, 2_000, b"r")
    with pytest.raises(ValueError):
        Watchtower(s.provider, s.params, FUNDING_HEIGHT, margin, key=s.provider_key)


def test_garbage_in_a_cooperative_proposal_or_answer_is_refused_with_a_reason() -> None:
    """Regression: bytes that are no transaction escaped the provider as a parser exception;
    a short nonce or partial signature reaches libsecp256k1 only after a length check."""
    s = open_channel()
    pay(s, 2_000, b"r")
    vault_final, provider_final = agree_final(s)
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    proposal = musig_close.proposal()
    with pytest.raises(ExchangeError) as refused:
        cooperative_answer(s.params, s.provider_key, provider_final,
                           dataclasses.replace(proposal, unsigned=b"\x02\x00"))
    assert refused.value.reason == "wrong-state"
    with pytest.raises(ExchangeError) as short_nonce:
        cooperative_answer(s.params, s.provider_key, provider_final,
                           dataclasses.replace(proposal, pubnonce=b"\x02" * 3))
    assert short_nonce.value.reason == "bad-nonce"
    answer = cooperative_answer(s.params, s.provider_key, provider_final, proposal)
    with pytest.raises(ExchangeError) as short:
        musig_close.finish(dataclasses.replace(answer, partial_signature=b"\x01" * 31))
    assert short.value.reason == "bad-partial-signature"
    raw = musig_close.finish(answer)  # the nonce was not spent by the refusals
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 2_000


def test_the_vault_extracts_t_even_when_the_provider_signs_its_own_half_afresh() -> None:
    """Check (passes as built): the provider need not publish its adapted pre-signature; the
    vault reads t from its own completed signature, which every valid close must carry."""
    s = open_channel()
    pay(s, 2_000, b"first")
    pay(s, 3_000, b"withheld", reveal=False)
    raw = _force_close(s)
    _provider_sig, vault_sig, leaf, control = _stack(raw)
    tx = CTransaction.deserialize(raw)
    fresh = BIP340.sign(s.provider_key, s.params.sighash(CMutableTransaction.from_tx(tx),
                                                         PAYMENT_LEAF))
    republished = _restack(raw, [fresh, vault_sig, leaf, control])
    s.ledger.apply(republished, FUNDING_HEIGHT + 1)
    assert _opened(s, republished) == b"withheld"
    assert outputs(republished)[s.params.provider_payout] == 5_000


def test_a_provider_restarted_between_reply_and_auth_still_completes_the_request() -> None:
    """Regression: the provider's snapshot dropped the request in flight (its t), but once the
    vault has sent AUTH it can neither abandon the request nor close cooperatively; a provider
    restarted before AUTH refused it, and the channel stayed stuck until Δ."""
    s = open_channel()
    pay(s, 2_000, b"first")
    exec_ = s.vault.request(b"GET /weather", 3_000, now=0.0)
    s.provider.receive(exec_, now=0.0)
    reply = s.provider.reply(exec_.request_id, b"second")
    stored = s.provider.snapshot()  # durable before the REPLY is sent
    (auth,) = s.vault.receive(reply, now=0.0).send
    restarted = restore_provider(stored, s.params, s.provider_key)
    (reveal,) = restarted.receive(auth, now=0.0).send
    (delivered,) = s.vault.receive(reveal, now=0.0).events
    assert delivered.result == b"second"  # type: ignore[union-attr]
    assert s.vault.provider_balance == restarted.state.provider_balance == 5_000
    s.provider = restarted
    vault_final, provider_final = agree_final(s)
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    raw = musig_close.finish(
        cooperative_answer(s.params, s.provider_key, provider_final, musig_close.proposal())
    )
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 5_000


def test_a_refund_with_a_future_locktime_is_refused_until_that_height() -> None:
    """Regression: the ledger did not check nLockTime (BIP-113 finality); a client's refund
    signed with a locktime in the future was accepted at once."""
    from a402.bitcoin.scripts import REFUND_LEAF
    from a402.bitcoin.signing import sign_script_path

    s = open_channel()
    height = FUNDING_HEIGHT + REFUND_DELAY
    tx = s.params.refund()
    tx.nLockTime = height + 50
    signature = sign_script_path(s.client_key, s.params.sighash(tx, REFUND_LEAF))
    raw = s.params.witness(tx, REFUND_LEAF, [signature])
    with pytest.raises(Refused) as refused:
        s.ledger.apply(raw, height)
    assert refused.value.reason == "non-final"
    assert s.ledger.coin(s.params.funding.txid, 0) is not None
    accepted = s.ledger.apply(raw, height + 51)
    assert outputs(raw)[s.params.client_payout] == s.params.funding.amount - accepted.fee


def test_bytes_that_are_no_transaction_are_refused_by_the_vaults_chain_watch() -> None:
    """Regression: on_chain_close let a parser exception escape for bytes that are no
    transaction; it refuses them with a reason and the request stays in flight."""
    s = open_channel()
    pay(s, 2_000, b"withheld", reveal=False)
    for garbage in (b"\x02\x00\x00", b""):
        with pytest.raises(ExchangeError) as refused:
            on_chain_close(s.vault, s.params, garbage)
        assert refused.value.reason == "malformed"
    assert s.vault.status is Status.PENDING and s.vault.provider_balance == 0
    assert _opened(s, _force_close(s)) == b"withheld"


def test_a_transaction_that_does_not_spend_the_channel_leaves_the_vault_unchanged() -> None:
    """The vault's chain watch refuses a spend of another output (here: another channel's
    provider close): it must not close this channel or settle its request."""
    s = open_channel()
    other = open_channel()
    pay(other, 1_000, b"elsewhere")
    pay(s, 2_000, b"withheld", reveal=False)
    with pytest.raises(ExchangeError) as refused:
        on_chain_close(s.vault, s.params, _force_close(other))
    assert refused.value.reason == "not-this-channel"
    assert s.vault.status is Status.PENDING and s.vault.locked == 2_000
    assert _opened(s, _force_close(s)) == b"withheld"


def test_a_close_of_an_older_state_closes_the_channel_with_nothing_to_open() -> None:
    """The provider closes with the state before the request in flight (paying itself less):
    the vault's pre-signature is not completed in it, so there is no t, and the channel is
    CLOSED with the older split on-chain."""
    s = open_channel()
    pay(s, 1_000, b"first")
    older = s.provider.latest_state()
    pay(s, 2_000, b"withheld", reveal=False)
    raw = payment_leaf_close(s.params, older, s.provider_key)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert on_chain_close(s.vault, s.params, raw).events == ()
    assert s.vault.status is Status.CLOSED
    assert outputs(raw)[s.params.provider_payout] == 1_000


def test_regression_the_vault_side_cannot_close_an_older_state_and_take_later_earnings() -> None:
    """Regression: the payment leaf has no timelock and nothing revokes a state, so whoever
    holds both parties' on-chain signatures on an older state's close can publish it and
    pay the provider less. The vault (or its host, which relays every message) must never
    hold the provider's on-chain signature on a non-final state: neither the REVEAL's state
    signature nor the REPLY's pre-signature completed with the revealed ``t`` may verify on
    a close. Only the provider, with its own key, can close a paid state."""
    s = open_channel()
    exec_ = s.vault.request(b"GET /weather", 1_000, now=0.0)
    (run,) = s.provider.receive(exec_, now=0.0).events
    reply = s.provider.reply(run.request_id, b"first")  # type: ignore[attr-defined]
    (auth,) = s.vault.receive(reply, now=0.0).send
    (reveal,) = s.provider.receive(auth, now=0.0).send
    s.vault.receive(reveal, now=0.0)
    older = s.vault.latest_state()  # what the vault (and its host) hold for state 1
    vault_sig = BIP340.adapt(BIP340.presignature_from_bytes(auth.authorization),
                             reveal.adaptor_secret)
    reply_sig = BIP340.adapt(BIP340.presignature_from_bytes(b"\x02" + reply.presignature),
                             reveal.adaptor_secret)
    assert pay(s, 5_000, b"second") == b"second"
    tx = s.params.payment_close(1_000)
    for provider_sig in (older.provider_signature[:64], reply_sig):
        stale = s.params.witness(tx, PAYMENT_LEAF, [provider_sig, vault_sig])
        with pytest.raises(Refused):
            s.ledger.check(stale, FUNDING_HEIGHT + 1)
    with pytest.raises(ExchangeError):
        payment_leaf_close(s.params, older)  # no provider key: not a closable state
    raw = _force_close(s)  # the provider's close of its newest state, with its key
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 6_000


def test_regression_a_vault_restarted_before_its_auth_was_stored_signs_the_same_auth() -> None:
    """Regression: the vault sends AUTH, dies before its PENDING snapshot is durable, and
    restarts LOCKED; the REPLY is delivered again. Its pre-signature on the same ``m`` under
    the same ``T`` must be the same bytes (as the EVM vault's RFC 6979 ECDSA ``σ_U`` is):
    otherwise the provider closes with the completion of the first one, whose nonce the
    restarted vault never saw, and the vault cannot extract ``t`` — paid, and no result."""
    s = open_channel()
    exec_ = s.vault.request(b"GET /weather", 3_000, now=0.0)
    locked = s.vault.snapshot()
    (run,) = s.provider.receive(exec_, now=0.0).events
    reply = s.provider.reply(run.request_id, b"the answer")  # type: ignore[attr-defined]
    (auth,) = s.vault.receive(reply, now=0.0).send
    s.provider.receive(auth, now=0.0)  # the provider's state is co-signed; REVEAL is lost
    restarted = restore_vault(locked, s.params, s.vault_key)
    (again,) = restarted.receive(reply, now=0.0).send
    assert again == auth
    raw = _force_close(s)
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    (delivered,) = on_chain_close(restarted, s.params, raw).events
    assert isinstance(delivered, ResultDelivered) and delivered.result == b"the answer"
    assert outputs(raw)[s.params.provider_payout] == 3_000


@pytest.mark.parametrize("field", ["client_payout", "fee_rate"])
def test_regression_a_snapshot_restored_with_other_parameters_is_refused(field: str) -> None:
    """Regression: a snapshot named only the funding outpoint, so a host restoring the vault
    with other parameters of the same outpoint (its own payout script for the client's
    share, a fee that burns it) had the vault sign closes of those transactions (CLOSE
    carries the vault's on-chain signature on the final close)."""
    s = open_channel()
    assert pay(s, 1_000, b"r") == b"r"
    other = dataclasses.replace(
        s.params, **{field: s.params.provider_payout if field == "client_payout" else 50}
    )
    for snapshot, restore, key in (
        (s.vault.snapshot(), restore_vault, s.vault_key),
        (s.provider.snapshot(), restore_provider, s.provider_key),
    ):
        with pytest.raises(SnapshotError):
            restore(snapshot, other, key)
        assert restore(snapshot, s.params, key).state.provider_balance == 1_000
