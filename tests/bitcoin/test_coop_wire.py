"""The MuSig2 cooperative close on the wire (a402.bitcoin.coop_wire): round trips, and
hostile bytes refused with a machine-readable reason, never a crash and never a spent nonce.
"""

from __future__ import annotations

import dataclasses
import random
from typing import NamedTuple

import pytest

from a402.asc import SignedState, Status
from a402.bitcoin import coop_wire
from a402.bitcoin.channel import ExchangeError
from a402.bitcoin.coop_wire import (
    MAX_MESSAGE,
    WIRE_REASONS,
    CoopAnswer,
    CoopProposal,
    CoopWireError,
    decode,
    decode_answer,
    decode_proposal,
)
from a402.bitcoin.exchange import CooperativeClose, cooperative_answer, on_chain_close

from ._setup import FEE_RATE, FUNDING_HEIGHT, Setup, agree_final, open_channel, outputs, pay

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HEADER = len(coop_wire.HEADER) + 1


class _Closing(NamedTuple):
    vault: CooperativeClose  # the vault's MuSig2 round, open on the final state
    proposal: bytes  # its COOP_PROPOSAL's bytes
    answer: bytes  # the provider's COOP_ANSWER's bytes
    final: SignedState  # the final state as the provider co-signed it


def _closing(s: Setup) -> _Closing:
    pay(s, 1_200, b"a")
    pay(s, 800, b"b")
    vault_final, provider_final = agree_final(s)
    musig_close = CooperativeClose(s.params, s.vault_key, vault_final)
    proposal = musig_close.proposal().encode()
    answer = cooperative_answer(s.params, s.provider_key, provider_final, decode_proposal(proposal))
    return _Closing(musig_close, proposal, answer.encode(), provider_final)


def _refused(data: object, reason: str) -> None:
    with pytest.raises(CoopWireError) as refused:
        decode(data)  # type: ignore[arg-type]
    assert refused.value.reason == reason and reason in WIRE_REASONS


def test_both_musig2_messages_round_trip_through_their_bytes_and_close_the_channel() -> None:
    s = open_channel()
    musig_close, proposal, answer, _ = _closing(s)
    assert decode(proposal).encode() == proposal and decode(answer).encode() == answer
    assert len(answer) == _HEADER + 32 + 66 + 32 and len(proposal) <= MAX_MESSAGE
    assert decode_proposal(proposal) == musig_close.proposal()
    raw = musig_close.finish(decode_answer(answer))
    accepted = s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert accepted.vsize == 154 and accepted.fee == 154 * FEE_RATE
    paid = outputs(raw)
    assert paid[s.params.provider_payout] == 2_000
    assert paid[s.params.client_payout] == s.params.funding.amount - 2_000 - accepted.fee
    assert on_chain_close(s.vault, s.params, raw).events == ()
    assert s.vault.status is Status.CLOSED


def test_truncated_oversize_and_mislabelled_messages_are_refused_with_reasons() -> None:
    s = open_channel()
    _, proposal, answer, _ = _closing(s)
    for valid in (proposal, answer):
        for cut in range(len(valid)):
            with pytest.raises(CoopWireError) as refused:
                decode(valid[:cut])
            assert refused.value.reason in {"truncated", "not-a-coop-message"}
        _refused(valid + b"\x00", "wrong-length")
        _refused(valid + bytes(MAX_MESSAGE), "too-large")
    _refused(bytes(50 * 1024 * 1024), "too-large")
    _refused(b"[" * 100_000, "too-large")  # "deep" nesting is only bytes to this format
    _refused(b"[" * 200, "not-a-coop-message")
    _refused(b"A402/ASC" + answer[8:], "not-a-coop-message")
    _refused(answer[:8] + b"\x02" + answer[9:], "unsupported-version")
    _refused(answer[:9] + b"\x07" + answer[10:], "unknown-type")
    for kind in (b"\x00", b"\xff"):
        _refused(answer[:9] + kind + answer[10:], "unknown-type")
    with pytest.raises(CoopWireError) as swapped:
        decode_proposal(answer)
    assert swapped.value.reason == "unexpected-type"
    with pytest.raises(CoopWireError) as swapped:
        decode_answer(proposal)
    assert swapped.value.reason == "unexpected-type"
    for not_bytes in ("text", None, 7, [1, 2], {"a": 1}):
        _refused(not_bytes, "malformed")
    # The proposal's length field: zero, beyond the bound, or larger than what follows.
    length_at = _HEADER + 32 + 66
    for size, reason in ((0, "bad-transaction"), (coop_wire.MAX_UNSIGNED_TX + 1,
                                                  "bad-transaction"),
                         (len(proposal) - length_at - 2 + 1, "truncated"),
                         (len(proposal) - length_at - 2 - 1, "wrong-length")):
        _refused(proposal[:length_at] + size.to_bytes(2, "big") + proposal[length_at + 2:],
                 reason)
    # An unsigned close that is no transaction, or carries a witness.
    junk = b"\x02" * 60
    _refused(proposal[:length_at] + len(junk).to_bytes(2, "big") + junk, "bad-transaction")
    signed = _witnessed_close(s)
    _refused(proposal[:length_at] + len(signed).to_bytes(2, "big") + signed, "bad-transaction")


def _witnessed_close(s: Setup) -> bytes:
    tx = s.params.payment_close(2_000)
    return s.params.witness(tx, "payment", [bytes(64), bytes(64)])


def test_nonces_off_the_curve_and_partial_signatures_out_of_range_are_refused() -> None:
    s = open_channel()
    _, proposal, answer, _ = _closing(s)
    nonce_at = _HEADER + 32
    nonce = answer[nonce_at:nonce_at + 66]
    off_curve = next(  # an x coordinate with no point on the curve
        b"\x02" + x.to_bytes(32, "big") for x in range(1, 100) if not _on_curve(x)
    )
    for bad in (bytes(66), b"\x04" + nonce[1:], off_curve + nonce[33:], nonce[:33] + off_curve,
                b"\x02" + b"\xff" * 32 + nonce[33:], b"\x00" + nonce[1:]):
        for valid in (proposal, answer):
            _refused(valid[:nonce_at] + bad + valid[nonce_at + 66:], "bad-nonce")
    sig_at = nonce_at + 66
    for scalar in (_N, _N + 1, 2**256 - 1):
        _refused(answer[:sig_at] + scalar.to_bytes(32, "big"), "bad-partial-signature")
    with pytest.raises(ValueError):
        dataclasses.replace(decode_answer(answer), pubnonce=nonce[:65]).encode()


def _on_curve(x: int) -> bool:
    p = 2**256 - 2**32 - 977
    y2 = (pow(x, 3, p) + 7) % p
    return pow(y2, (p - 1) // 2, p) == 1


def test_answers_for_another_channel_or_forged_never_spend_the_vaults_nonce() -> None:
    s = open_channel()
    musig_close, _, answer, _ = _closing(s)
    genuine = decode_answer(answer)
    for forged, reason in (
        (dataclasses.replace(genuine, channel_id=bytes(32)), "wrong-channel"),
        (dataclasses.replace(genuine, partial_signature=(1).to_bytes(32, "big")),
         "bad-partial-signature"),
        (dataclasses.replace(genuine, pubnonce=decode_proposal(
            musig_close.proposal().encode()).pubnonce), "bad-partial-signature"),
    ):
        with pytest.raises(ExchangeError) as refused:
            musig_close.finish(decode_answer(forged.encode()))
        assert refused.value.reason == reason
    raw = musig_close.finish(genuine)  # the vault's nonce is still unspent
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 2_000


def test_a_proposal_for_another_channel_is_not_partially_signed() -> None:
    s = open_channel()
    _, proposal, _, final = _closing(s)
    other = dataclasses.replace(decode_proposal(proposal), channel_id=bytes(32))
    with pytest.raises(ExchangeError) as refused:
        cooperative_answer(s.params, s.provider_key, final,
                           decode_proposal(other.encode()))
    assert refused.value.reason == "wrong-channel"


def test_fuzzed_messages_are_refused_with_a_reason_or_decode_canonically() -> None:
    """Seeded mutations of both valid messages (byte flips, insertions, deletions, splices)
    and random garbage: decode raises CoopWireError with a listed reason or returns a message
    that re-encodes to the same bytes; a decoded answer either is the genuine one or the
    vault refuses it without spending its nonce; a decoded proposal is partially signed only
    if it names this channel and its final close."""
    s = open_channel()
    musig_close, proposal, answer, final = _closing(s)
    rng = random.Random(17)
    reasons: set[str] = set()
    decoded = 0
    for i in range(1_500):
        base = (proposal, answer)[i % 2]
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0 and at < len(data):
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[at:at] = rng.randbytes(rng.randint(1, 40))
            elif op == 2:
                del data[at:at + rng.randint(1, 40)]
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 700)))
        try:
            message = decode(bytes(data))
        except CoopWireError as refused:
            reasons.add(refused.reason)
            assert refused.reason in WIRE_REASONS
            continue
        decoded += 1
        assert message.encode() == bytes(data)
        if isinstance(message, CoopAnswer):
            if message.encode() == answer:
                continue
            with pytest.raises(ExchangeError):
                musig_close.finish(message)
        else:
            assert isinstance(message, CoopProposal)
            try:
                cooperative_answer(s.params, s.provider_key, final, message)
            except ExchangeError as refused:
                assert refused.reason in {"wrong-channel", "wrong-state", "bad-nonce"}
            else:
                assert message.channel_id == s.params.channel_id
                assert message.unsigned == decode_proposal(proposal).unsigned
    assert decoded > 0 and {"truncated", "bad-nonce", "not-a-coop-message"} <= reasons
    raw = musig_close.finish(decode_answer(answer))
    s.ledger.apply(raw, FUNDING_HEIGHT + 1)
    assert outputs(raw)[s.params.provider_payout] == 2_000
