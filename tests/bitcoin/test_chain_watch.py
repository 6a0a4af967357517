"""The vault's chain watch trusts no transaction its host feeds it (``on_chain_close``).

A spend is acted on only once it spends this channel's funding outpoint by one of its paths
with every signature valid (BIP-340 over the BIP-341 sighash of that very transaction); a
forged or re-targeted one is refused with a reason and leaves the vault byte-for-byte as it
was (its snapshot). Every verdict is also compared with the node-free ledger's, whose script
interpreter (buidl) shares no code with the check.
"""

from __future__ import annotations

import pytest
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxInWitness,
    COutPoint,
    CTransaction,
)
from bitcointx.core.script import SIGHASH_ALL, SignatureHashSchnorr

from a402.asc import ResultDelivered, Status
from a402.bitcoin.channel import ExchangeError, client_refund
from a402.bitcoin.exchange import (
    CooperativeClose,
    Watchtower,
    cooperative_answer,
    on_chain_close,
    payment_leaf_close,
)
from a402.bitcoin.scripts import PAYMENT_LEAF, REFUND_LEAF, payout_script_pubkey
from a402.bitcoin.signing import sign_key_path, sign_script_path
from a402.bitcoin.spend import MAX_TX_BYTES, REASONS, verify_channel_spend
from a402.bitcoin.transactions import Utxo, set_witness
from a402.bitcoin.validate import Refused
from a402.crypto import BIP340

from ._setup import FUNDING_HEIGHT, REFUND_DELAY, Setup, agree_final, open_channel, outputs, pay

_MINED = FUNDING_HEIGHT + 1


def _force_close(s: Setup) -> bytes:
    return payment_leaf_close(s.params, s.provider.latest_state(), s.provider_key)


def _stack(raw: bytes) -> list[bytes]:
    return [bytes(x) for x in CTransaction.deserialize(raw).wit.vtxinwit[0].scriptWitness.stack]


def _mutable(raw: bytes) -> CMutableTransaction:
    return CMutableTransaction.from_tx(CTransaction.deserialize(raw))


def _restack(raw: bytes, stack: list[bytes]) -> bytes:
    tx = _mutable(raw)
    set_witness(tx, 0, stack)
    return bytes(tx.serialize())


def _refused_and_unchanged(s: Setup, raw: bytes, reason: str) -> None:
    """``raw`` is refused with ``reason``, the vault's snapshot is the same bytes, and the
    independent ledger refuses it too."""
    before = s.vault.snapshot()
    with pytest.raises(ExchangeError) as refused:
        on_chain_close(s.vault, s.params, raw)
    assert refused.value.reason == reason and reason in REASONS
    assert s.vault.snapshot() == before
    with pytest.raises(Refused):
        s.ledger.check(raw, FUNDING_HEIGHT + REFUND_DELAY - 1)


def _in_flight(s: Setup) -> None:
    pay(s, 1_000, b"first")
    assert pay(s, 2_000, b"withheld", reveal=False) is None
    assert s.vault.status is Status.PENDING and s.vault.locked == 2_000


def _delivers_withheld(s: Setup) -> None:
    """The genuine force close still settles the request: the refusals changed nothing."""
    raw = _force_close(s)
    accepted = s.ledger.apply(raw, _MINED)
    (delivered,) = on_chain_close(s.vault, s.params, raw).events
    assert isinstance(delivered, ResultDelivered) and delivered.result == b"withheld"
    assert s.vault.status is Status.CLOSED
    paid = outputs(raw)
    assert paid[s.params.provider_payout] == 3_000
    assert paid[s.params.client_payout] == s.params.funding.amount - 3_000 - accepted.fee


def test_a_forged_provider_close_from_the_host_is_refused_and_the_request_stays_in_flight() -> None:
    """The host builds the payment-leaf close paying the provider and fills its witness with
    signatures it can make: random bytes, its own key's, empty ones. None verifies, so the
    vault neither closes nor settles; the provider's genuine close then delivers."""
    s = open_channel()
    _in_flight(s)
    genuine = _force_close(s)
    provider_sig, vault_sig, leaf, control = _stack(genuine)
    tx = s.params.payment_close(3_000)
    host = BIP340.generate_key()
    host_sig = BIP340.sign(host, s.params.sighash(tx, PAYMENT_LEAF))
    for forged in (
        [bytes(range(64)), bytes(range(64, 128))],
        [provider_sig, host_sig],  # the vault's signature forged, the provider's genuine
        [host_sig, vault_sig],  # the provider's forged
        [b"", vault_sig],
        [provider_sig, b""],
        [provider_sig, vault_sig + b"\x00"],  # SIGHASH_DEFAULT spelt out: invalid (BIP-341)
        [provider_sig],
    ):
        _refused_and_unchanged(s, _restack(genuine, [*forged, leaf, control]), "bad-signature")
    _delivers_withheld(s)


def test_genuine_signatures_moved_onto_another_transaction_are_refused() -> None:
    """The signatures are over the sighash of the close they were made for: the same witness
    on a close paying the provider more, or with another locktime, verifies nothing."""
    s = open_channel()
    _in_flight(s)
    genuine = _force_close(s)
    witness = _stack(genuine)
    richer = s.params.payment_close(9_000)
    set_witness(richer, 0, witness)
    locked = _mutable(genuine)
    locked.nLockTime = 1
    sequenced = _mutable(genuine)
    sequenced.vin[0].nSequence = 0xFFFFFFFF
    for raw in (bytes(richer.serialize()), bytes(locked.serialize()),
                bytes(sequenced.serialize())):
        _refused_and_unchanged(s, raw, "bad-signature")
    _delivers_withheld(s)


def test_a_spend_of_another_outpoint_is_refused_and_changes_nothing() -> None:
    """The genuine close re-targeted at another output of the funding transaction, and a
    genuine close of another channel: neither spends this channel."""
    s = open_channel()
    other = open_channel()
    pay(other, 1_000, b"elsewhere")
    _in_flight(s)
    retargeted = _mutable(_force_close(s))
    funding = s.params.funding
    retargeted.vin[0].prevout = COutPoint(bytes.fromhex(funding.txid)[::-1], funding.vout + 1)
    for raw in (bytes(retargeted.serialize()), _force_close(other)):
        _refused_and_unchanged(s, raw, "not-this-channel")
    _delivers_withheld(s)


def test_a_close_with_an_extra_input_needs_its_coins_and_then_fails_its_signatures() -> None:
    """A second input changes the sighash (it commits to every input): without the coins the
    vault cannot check it; with them, the signatures made for the one-input close fail."""
    s = open_channel()
    _in_flight(s)
    genuine = _force_close(s)
    tx = _mutable(genuine)
    extra = Utxo("cd" * 32, 0, 50_000, payout_script_pubkey(BIP340.generate_key().public_key))
    tx.vin.append(CMutableTxIn(extra.outpoint(), nSequence=0xFFFFFFFD))
    tx.wit.vtxinwit.append(CMutableTxInWitness())
    raw = bytes(tx.serialize())
    _refused_and_unchanged(s, raw, "coins-needed")
    before = s.vault.snapshot()
    with pytest.raises(ExchangeError) as lying:
        on_chain_close(s.vault, s.params, raw, [extra, s.params.funding])  # wrong order
    assert lying.value.reason == "coin-mismatch"
    with pytest.raises(ExchangeError) as forged:
        on_chain_close(s.vault, s.params, raw, [s.params.funding, extra])
    assert forged.value.reason == "bad-signature"
    assert s.vault.snapshot() == before
    _delivers_withheld(s)


def test_a_witness_outside_the_channels_paths_is_refused() -> None:
    """The payment leaf with a control block of the wrong parity, another script, an annex,
    no witness, and bytes that are no transaction or too many of them."""
    s = open_channel()
    _in_flight(s)
    genuine = _force_close(s)
    provider_sig, vault_sig, leaf, control = _stack(genuine)
    flipped = bytes([control[0] ^ 1]) + control[1:]
    for stack, reason in (
        ([provider_sig, vault_sig, leaf, flipped], "unknown-path"),
        ([provider_sig, vault_sig, leaf + b"\x51", control], "unknown-path"),
        ([provider_sig, vault_sig, leaf, control, b"\x50annex"], "annex"),
        ([], "no-witness"),
    ):
        _refused_and_unchanged(s, _restack(genuine, stack), reason)
    _refused_and_unchanged(s, genuine + b"\x00", "malformed")
    _refused_and_unchanged(s, genuine[:-1], "malformed")
    before = s.vault.snapshot()
    with pytest.raises(ExchangeError) as huge:
        on_chain_close(s.vault, s.params, bytes(MAX_TX_BYTES + 1))
    assert huge.value.reason == "too-large" and s.vault.snapshot() == before
    _delivers_withheld(s)


def test_a_forged_cooperative_close_is_refused_and_the_genuine_musig2_close_closes() -> None:
    s = open_channel()
    pay(s, 1_000, b"a")
    vault_final, provider_final = agree_final(s)
    tx = s.params.cooperative_close(1_000)
    # A key-path signature by the vault's key alone (tweaked as a single-key output would be)
    # is no signature by the MuSig2 output key.
    lone = sign_key_path(s.vault_key, s.params.output.merkle_root, s.params.key_path_sighash(tx))
    set_witness(tx, 0, [lone])
    _refused_and_unchanged(s, bytes(tx.serialize()), "bad-signature")
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    raw = musig_close.finish(
        cooperative_answer(s.params, s.provider_key, provider_final, musig_close.proposal())
    )
    assert verify_channel_spend(s.params, raw).path == "key"
    s.ledger.apply(raw, _MINED)
    assert on_chain_close(s.vault, s.params, raw).events == ()
    assert s.vault.status is Status.CLOSED
    assert outputs(raw)[s.params.provider_payout] == 1_000


def test_a_client_refund_with_a_short_relative_lock_is_refused_and_a_valid_one_closes() -> None:
    """The refund leaf's OP_CHECKSEQUENCEVERIFY is checked on the input's nSequence (a refund
    signed with a lock under Δ is invalid at any height); an explicit SIGHASH_ALL byte is a
    valid signature form and verifies."""
    s = open_channel()
    pay(s, 1_000, b"a")
    short = s.params.refund()
    short.vin[0].nSequence = REFUND_DELAY - 1
    signature = sign_script_path(s.client_key, s.params.sighash(short, REFUND_LEAF))
    _refused_and_unchanged(s, s.params.witness(short, REFUND_LEAF, [signature]), "timelock")
    impostor = client_refund(s.params, BIP340.generate_key())
    _refused_and_unchanged(s, impostor, "bad-signature")

    tx = s.params.refund()
    leaf, _ = s.params.output.leaf(REFUND_LEAF)
    digest = bytes(leaf.sighash_schnorr(tx, 0, [s.params.funding.txout()], hashtype=SIGHASH_ALL))
    raw = s.params.witness(tx, REFUND_LEAF, [BIP340.sign(s.client_key, digest) + b"\x01"])
    assert verify_channel_spend(s.params, raw).path == "refund"
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY)
    assert on_chain_close(s.vault, s.params, raw).events == ()
    assert s.vault.status is Status.CLOSED
    assert outputs(raw)[s.params.client_payout] == s.params.funding.amount - accepted.fee


def test_the_valid_provider_close_is_verified_then_settles_the_request() -> None:
    s = open_channel()
    _in_flight(s)
    spend = verify_channel_spend(s.params, _force_close(s))
    assert spend.path == "payment" and spend.vault_signature == _stack(_force_close(s))[1]
    _delivers_withheld(s)


def test_the_providers_watchtower_is_not_stopped_by_a_forged_spend() -> None:
    """A host that made the watchtower believe the channel spent would let the client's
    refund take the provider's earnings after Δ: a forged spend is refused and the tower
    still closes; the genuine close stops it."""
    s = open_channel()
    pay(s, 4_000, b"a")
    tower = Watchtower(s.provider, s.params, FUNDING_HEIGHT, margin=12, key=s.provider_key)
    height = FUNDING_HEIGHT + REFUND_DELAY - 12
    close = tower.poll(height)
    assert close is not None
    provider_sig, _, leaf, control = _stack(close)
    forged = _restack(close, [provider_sig, bytes(64), leaf, control])
    with pytest.raises(ExchangeError) as refused:
        tower.channel_spent(forged)
    assert refused.value.reason == "bad-signature"
    assert s.provider.status is Status.OPEN and tower.poll(height) is not None
    s.ledger.apply(close, height)
    assert tower.channel_spent(close).path == "payment"
    assert s.provider.status is Status.CLOSED and tower.poll(height + 1) is None
    assert outputs(close)[s.params.provider_payout] == 4_000


def test_a_refund_that_brings_its_own_fee_input_is_verified_with_the_coins_given() -> None:
    """The client may add an input of its own to pay the fee (it signs with
    SIGHASH_DEFAULT over both coins): given both coins in order, the vault verifies the
    refund and closes; the ledger accepts the same bytes."""
    s = open_channel()
    wallet = BIP340.generate_key()
    fee_coin = Utxo("ef" * 32, 0, 20_000, payout_script_pubkey(wallet.public_key))
    s.ledger.credit(fee_coin, FUNDING_HEIGHT)
    tx = s.params.refund()
    tx.vin.append(CMutableTxIn(fee_coin.outpoint(), nSequence=0xFFFFFFFD))
    tx.vout[0].nValue = s.params.funding.amount + fee_coin.amount - 5_000
    coins = [s.params.funding, fee_coin]
    txouts = [coin.txout() for coin in coins]
    leaf, control = s.params.output.leaf(REFUND_LEAF)
    client_sig = BIP340.sign(s.client_key, bytes(leaf.sighash_schnorr(tx, 0, txouts)))
    tx.wit.vtxinwit.append(CMutableTxInWitness())
    set_witness(tx, 0, [client_sig, bytes(leaf), control])
    set_witness(tx, 1, [sign_key_path(wallet, b"", bytes(SignatureHashSchnorr(tx, 1, txouts)))])
    raw = bytes(tx.serialize())
    _refused_and_unchanged(s, raw, "coins-needed")  # (the ledger: not yet at Δ)
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + REFUND_DELAY)
    assert on_chain_close(s.vault, s.params, raw, coins).events == ()
    assert s.vault.status is Status.CLOSED
    assert accepted.fee == 5_000
    assert outputs(raw)[s.params.client_payout] == s.params.funding.amount + 15_000
