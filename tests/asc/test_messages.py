"""The canonical message encoding and the channel terms/digests (pure)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.asc import (
    Ack,
    Auth,
    BalanceState,
    ChannelTerms,
    Close,
    CloseAck,
    Exec,
    Message,
    MessageError,
    Reason,
    Reply,
    Reveal,
    decode,
    encode,
)
from a402.asc.messages import DOMAIN_TAG, FORMAT_VERSION
from a402.asc.terms import MAX_DEPOSIT, MAX_VERSION
from a402.crypto import EVM, PaymentDomain, generate_adaptor
from a402.crypto._secp import HALF_N
from a402.evm.address import address_bytes

CID = bytes(range(32))
STATE = BalanceState(7, 600, 400)


def samples() -> list[Message]:
    _, point = generate_adaptor()
    return [
        Exec(CID, 3, 2, 250, b"GET /v1/answer?q=42"),
        Exec(CID, MAX_VERSION, MAX_VERSION, MAX_DEPOSIT, b""),
        Reply(CID, 3, 7, os.urandom(32), point, os.urandom(64), b"\x01" + os.urandom(40)),
        Auth(CID, 3, os.urandom(65)),
        Reveal(CID, 3, os.urandom(32), STATE, os.urandom(65)),
        Ack(CID, 3, STATE, os.urandom(65)),
        Close(CID, BalanceState(8, 600, 400, True), os.urandom(65)),
        CloseAck(CID, BalanceState(8, 600, 400, True), os.urandom(65)),
    ]


def _fresh(message: Message) -> bytes:
    """``message`` encoded anew (a copy: not the encoding a decoded message keeps)."""
    return encode(dataclasses.replace(message))


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_to_the_same_bytes(message: Message) -> None:
    data = encode(message)
    assert data[:8] == DOMAIN_TAG == b"A402/ASC"
    assert data[8] == FORMAT_VERSION == 2
    assert data[9] == message.TYPE
    decoded = decode(data)
    assert decoded == message
    assert encode(decoded) == data == _fresh(decoded)


def test_the_layout_is_pinned() -> None:
    """A golden encoding: any change to the format must change this test on purpose."""
    data = encode(Exec(b"\xcc" * 32, 1, 0, 5, b"hi"))
    assert data.hex() == (
        "413430322f415343"  # "A402/ASC"
        "02"  # format version
        "01"  # EXEC
        + "cc" * 32  # channel id
        + "0000000000000001"  # request id (u64)
        + "0000000000000000"  # version (u64)
        + "00000000000000000000000000000005"  # amount (u128)
        + "00000002"
        + "6869"  # request, u32 length-prefixed
    )
    state = encode(Ack(b"\x00" * 32, 0, BalanceState(1, 2, 3, True), b"\x11" * 65))
    assert state[10 + 32 + 8 :][: 8 + 16 + 16 + 1].hex() == (
        "0000000000000001" + "0" * 30 + "02" + "0" * 30 + "03" + "01"
    )


def test_malformed_bytes_are_rejected_with_a_reason() -> None:
    good = encode(Reveal(CID, 3, os.urandom(32), STATE, os.urandom(65)))
    reply = encode(Reply(CID, 1, 5, bytes(32), b"\x02" + bytes(32), bytes(64), b"x"))
    is_final_at = len(good) - 65 - 1
    point_at = 10 + 32 + 8 + 16 + 32
    cases = {
        "empty": b"",
        "other tag": b"A402/ASX" + good[8:],
        "other version": good[:8] + b"\x01" + good[9:],
        "unknown type": good[:9] + b"\x63" + good[10:],
        "trailing byte": good + b"\x00",
        "is_final 2": good[:is_final_at] + b"\x02" + good[is_final_at + 1 :],
        "uncompressed point prefix": reply[:point_at] + b"\x04" + reply[point_at + 1 :],
        "blob length past the end": reply[:-5] + b"\x00\x00\x00\x09x",
    }
    for what, data in cases.items():
        with pytest.raises(MessageError) as info:
            decode(data)
        assert info.value.reason is Reason.MALFORMED, what
    for cut in range(len(good)):
        with pytest.raises(MessageError):
            decode(good[:cut])


def test_blob_size_is_bounded() -> None:
    data = encode(Exec(CID, 0, 0, 1, bytes(1000)))
    assert decode(data, max_blob=1000).request == bytes(1000)
    with pytest.raises(MessageError, match="longer than 999"):
        decode(data, max_blob=999)


def test_encoding_refuses_values_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        encode(Exec(CID, MAX_VERSION + 1, 0, 1, b""))
    with pytest.raises(ValueError, match="128 bits"):
        encode(Exec(CID, 0, 0, MAX_DEPOSIT + 1, b""))
    with pytest.raises(ValueError, match="32 bytes"):
        encode(Auth(CID[:31], 0, bytes(65)))
    with pytest.raises(ValueError, match="65 bytes"):
        encode(Auth(CID, 0, bytes(64)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_message_error(data: bytes) -> None:
    for candidate in (data, DOMAIN_TAG + b"\x01" + data):
        try:
            message = decode(candidate)
        except MessageError:
            continue
        assert _fresh(message) == candidate  # whatever decodes is canonical
        assert encode(message) == candidate  # (and is what its encoding gives back)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, MAX_VERSION),
    st.integers(0, MAX_VERSION),
    st.integers(0, MAX_DEPOSIT),
    st.binary(max_size=64),
)
def test_exec_round_trips(rid: int, version: int, amount: int, request: bytes) -> None:
    message = Exec(CID, rid, version, amount, request)
    assert decode(encode(message)) == message


# -------------------------------------------------------------------- terms


def terms(**overrides: object) -> ChannelTerms:
    fields: dict[str, object] = {
        "client": "0x" + "11" * 20,
        "vault": "0x" + "22" * 20,
        "provider": "0x" + "33" * 20,
        "provider_key": EVM.generate_key().public_key,
        "deposit": 10**6,
        "salt": bytes(32),
    }
    fields.update(overrides)
    return ChannelTerms(**fields)  # type: ignore[arg-type]


def test_terms_are_validated_as_the_contract_does() -> None:
    assert terms().client == b"\x11" * 20
    bad = {
        "provider_key": [bytes(32), (HALF_N + 1).to_bytes(32, "big"), bytes(31)],
        "deposit": [0, MAX_DEPOSIT + 1],
        "salt": [bytes(31)],
        "provider": ["0x" + "11" * 20, "0x" + "22" * 20],
        "client": ["0x1234", "not hex"],
    }
    for field, values in bad.items():
        for value in values:
            with pytest.raises(ValueError):
                terms(**{field: value})
    assert address_bytes("0x" + "ab" * 20) == address_bytes(bytes.fromhex("ab" * 20))


def test_ids_and_digests_change_with_every_field_and_with_the_domain() -> None:
    base = terms()
    domain = PaymentDomain(31337, b"\x55" * 20)
    cid = base.channel_id(domain)
    others = [
        dataclasses.replace(base, client=b"\x44" * 20),
        dataclasses.replace(base, vault=b"\x44" * 20),
        dataclasses.replace(base, provider=b"\x44" * 20),
        dataclasses.replace(base, provider_key=EVM.generate_key().public_key),
        dataclasses.replace(base, deposit=base.deposit + 1),
        dataclasses.replace(base, salt=b"\x01" * 32),
    ]
    ids = {cid} | {t.channel_id(domain) for t in others}
    ids |= {base.channel_id(PaymentDomain(1, b"\x55" * 20))}
    ids |= {base.channel_id(PaymentDomain(31337, b"\x56" * 20))}
    assert len(ids) == 9

    state = BalanceState(3, 600, 400)
    digests = {
        state.digest(domain, cid),
        state.digest(domain, bytes(32)),
        state.digest(PaymentDomain(1, b"\x55" * 20), cid),
        BalanceState(4, 600, 400).digest(domain, cid),
        BalanceState(3, 601, 399).digest(domain, cid),
        BalanceState(3, 600, 400, True).digest(domain, cid),
    }
    assert len(digests) == 6


def test_balance_state_arithmetic() -> None:
    assert STATE.pay(100, 8) == BalanceState(8, 500, 500)
    with pytest.raises(ValueError):
        STATE.pay(601, 8)
    with pytest.raises(ValueError):
        BalanceState(MAX_VERSION + 1, 0, 0)
    with pytest.raises(ValueError):
        BalanceState(0, MAX_DEPOSIT + 1, 0)
    assert terms().opening_state() == BalanceState(0, 10**6, 0)
    assert STATE.as_tuple() == (7, 600, 400, False)


def _generic_decode(data: bytes) -> Message:
    """The generic field-by-field reader alone (what the compiled fast path must agree with)."""
    from a402.asc import messages as m

    cls = m._BY_TYPE[data[len(m.HEADER)]]
    reader = m._Reader(data, m.DEFAULT_MAX_BLOB)
    try:
        message = cls._read(reader)
    except ValueError as e:
        raise MessageError(str(e)) from None
    reader.end()
    return message


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(samples()), st.integers(0, 400), st.binary(max_size=3),
       st.sampled_from(["flip", "cut", "extend"]))
def test_the_compiled_codec_decides_every_input_as_the_generic_one(
        message: Message, at: int, noise: bytes, how: str) -> None:
    data = bytearray(encode(message))
    at %= len(data)
    if how == "flip":
        data[max(at, 10)] ^= noise[0] if noise else 0x01
    elif how == "cut":
        del data[at:]
    else:
        data[at:at] = noise
    candidate = bytes(data)
    try:
        expected: Message | str = _generic_decode(candidate)
    except (MessageError, IndexError, KeyError) as e:
        expected = type(e).__name__
    try:
        got: Message | str = decode(candidate)
    except MessageError as e:
        got = type(e).__name__
    if isinstance(expected, str):
        assert isinstance(got, str)  # refused both ways
    else:
        assert got == expected and encode(got) == candidate == _fresh(got)
