"""Result sealing: the result opens with t, for its own request, and for nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a402.crypto import (
    EncRes,
    ResultContext,
    SealError,
    generate_adaptor,
    result_hash,
    seal,
    sealing,
)

from ._strategies import SETTINGS, messages32

CONTEXT = ResultContext(channel_id=b"\xc1" * 32, request_id=7)


@SETTINGS
@given(result=st.binary(max_size=4096), channel_id=messages32, request_id=st.integers(0, 2**64))
def test_a_sealed_result_opens_with_t_for_its_request(
    result: bytes, channel_id: bytes, request_id: int
) -> None:
    t, _ = generate_adaptor()
    context = ResultContext(channel_id, request_id)
    sealed = seal(t, result, context)

    assert sealing.open(t, sealed, context) == result
    assert sealing.open(t, sealed.to_bytes(), context, expected_hash=result_hash(result)) == result
    assert result not in sealed.to_bytes() or len(result) < 8  # not in the clear


def test_it_does_not_open_with_another_secret() -> None:
    t, _ = generate_adaptor()
    other, _ = generate_adaptor()
    sealed = seal(t, b"the paid result", CONTEXT)
    with pytest.raises(SealError):
        sealing.open(other, sealed, CONTEXT)


@pytest.mark.parametrize(
    "replayed_into",
    [
        ResultContext(channel_id=b"\xc1" * 32, request_id=8),  # the next request
        ResultContext(channel_id=b"\xc2" * 32, request_id=7),  # another channel
    ],
)
def test_it_cannot_be_replayed_into_another_request(replayed_into: ResultContext) -> None:
    t, _ = generate_adaptor()
    sealed = seal(t, b"the paid result", CONTEXT)
    with pytest.raises(SealError):
        sealing.open(t, sealed, replayed_into)


@SETTINGS
@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_tampering_is_detected(position: int, bit: int) -> None:
    t, _ = generate_adaptor()
    wire = bytearray(seal(t, b"x" * 100, CONTEXT).to_bytes())
    wire[position % len(wire)] ^= 1 << bit
    with pytest.raises(SealError):
        sealing.open(t, bytes(wire), CONTEXT)


def test_the_vault_can_insist_on_the_committed_result() -> None:
    """A provider that sealed something other than the result it committed to in m
    (through H(result)) is caught when the vault opens it."""
    t, _ = generate_adaptor()
    sealed = seal(t, b"a different result", CONTEXT)
    with pytest.raises(SealError, match="committed result hash"):
        sealing.open(t, sealed, CONTEXT, expected_hash=result_hash(b"the promised result"))


def test_sealing_twice_under_one_secret_never_repeats_a_nonce() -> None:
    t, _ = generate_adaptor()
    first, second = seal(t, b"same", CONTEXT), seal(t, b"same", CONTEXT)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_malformed_inputs_are_refused() -> None:
    with pytest.raises(SealError):
        EncRes.from_bytes(b"\x02" + bytes(40))  # unknown version
    with pytest.raises(SealError):
        EncRes.from_bytes(b"\x01" + bytes(10))  # too short
    with pytest.raises(SealError):
        seal(b"\x00" * 32, b"result", CONTEXT)  # t = 0 is no secret
    with pytest.raises(ValueError):
        ResultContext(channel_id=b"\x00" * 31, request_id=0)
