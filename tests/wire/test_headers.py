from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.wire.errors import INVALID_PAYLOAD, INVALID_PAYMENT_REQUIREMENTS, WireError
from a402.wire.headers import (
    MAX_HEADER_CHARS,
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_header,
    decode_payment_payload,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from a402.wire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    SettleResponse,
)
from tests.wire import samples

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_header_names() -> None:
    assert PAYMENT_REQUIRED == "PAYMENT-REQUIRED"
    assert PAYMENT_SIGNATURE == "PAYMENT-SIGNATURE"
    assert PAYMENT_RESPONSE == "PAYMENT-RESPONSE"
    assert X_PAYMENT == "X-PAYMENT"
    assert X_PAYMENT_RESPONSE == "X-PAYMENT-RESPONSE"


def test_encoding_is_standard_padded_base64_of_compact_utf8_json() -> None:
    value = {"a": "é€", "b": [1, 2]}
    header = encode_header(value)
    assert header == _b64('{"a":"é€","b":[1,2]}'.encode())
    assert base64.b64decode(header, validate=True).decode() == '{"a":"é€","b":[1,2]}'


@pytest.mark.parametrize("n", range(1, 7))
def test_padding_is_always_emitted(n: int) -> None:
    header = encode_header({"k": "x" * n})
    raw_len = len(json.dumps({"k": "x" * n}, separators=(",", ":")).encode())
    assert len(header) % 4 == 0
    assert header.count("=") == (3 - raw_len % 3) % 3


def test_model_encoding_omits_absent_fields() -> None:
    settle = SettleResponse(success=True, transaction="0xab", network="eip155:84532")
    decoded = json.loads(base64.b64decode(encode_header(settle)))
    assert decoded == {"success": True, "transaction": "0xab", "network": "eip155:84532"}


@settings(max_examples=60, deadline=None)
@given(json_objects)
def test_round_trip_any_json_object(value: dict[str, Any]) -> None:
    assert decode_header(encode_header(value)) == value


@settings(max_examples=40, deadline=None)
@given(json_objects)
def test_lenient_input_forms_decode_to_the_same_object(value: dict[str, Any]) -> None:
    header = encode_header(value)
    urlsafe = header.replace("+", "-").replace("/", "_")
    unpadded = header.rstrip("=")
    folded = " " + "\r\n ".join(header[i : i + 10] for i in range(0, len(header), 10)) + "\t"
    for variant in (urlsafe, unpadded, urlsafe.rstrip("="), folded, header.encode()):
        assert decode_header(variant) == value


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_garbage_only_ever_raises_wire_error(garbage: str | bytes) -> None:
    try:
        result = decode_header(garbage)
    except WireError as exc:
        assert exc.reason == INVALID_PAYLOAD
    else:
        assert isinstance(result, dict)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "not base64!",
        "eyJhIjoxfQ=",  # wrong padding (needs none)
        "eyJhIjox===",  # too much padding
        "e",  # impossible length
        "ey+J_hIjoxfQ",  # mixed alphabets
        "eyJh=IjoxfQ==",  # padding in the middle
        "é",
    ],
)
def test_malformed_base64(header: str) -> None:
    with pytest.raises(WireError) as exc:
        decode_header(header)
    assert exc.value.reason == INVALID_PAYLOAD


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json}",
        b'{"a":1',
        b"\xff\xfe{}",  # not UTF-8
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"value":"1","value":"1000"}',  # duplicate keys: parsers disagree on which wins
        b"[1,2]",
        b'"string"',
        b"42",
        b"null",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_malformed_json_or_non_object(raw: bytes) -> None:
    with pytest.raises(WireError) as exc:
        decode_header(_b64(raw))
    assert exc.value.reason == INVALID_PAYLOAD


def test_oversize_header_is_refused_before_decoding() -> None:
    with pytest.raises(WireError) as exc:
        decode_header("A" * (MAX_HEADER_CHARS + 4))
    assert "longer" in exc.value.message


def test_typed_decoders_round_trip() -> None:
    pr = PaymentRequired.model_validate(samples.payment_required_v2())
    assert decode_payment_required(encode_header(pr)) == pr
    pr1 = PaymentRequiredV1.model_validate(
        {
            "x402Version": 1,
            "error": "X-PAYMENT header is required",
            "accepts": [samples.requirements_v1()],
        }
    )
    assert decode_payment_required(encode_header(pr1)) == pr1
    pp = PaymentPayload.model_validate(samples.payment_payload_v2())
    assert decode_payment_payload(encode_header(pp)) == pp
    pp1 = PaymentPayloadV1.model_validate(samples.payment_payload_v1())
    assert decode_payment_payload(encode_header(pp1)) == pp1
    sr = SettleResponse(success=True, transaction="0x1", network="eip155:1", payer=samples.PAYER)
    assert decode_settle_response(encode_header(sr)) == sr


def test_typed_decoders_report_model_errors() -> None:
    with pytest.raises(WireError) as exc:
        decode_payment_required(encode_header({"x402Version": 2, "accepts": [{"scheme": "exact"}]}))
    assert exc.value.reason == INVALID_PAYMENT_REQUIREMENTS
    with pytest.raises(WireError) as exc:
        decode_payment_payload(encode_header({"x402Version": 2, "payload": {}}))
    assert exc.value.reason == INVALID_PAYLOAD
    with pytest.raises(WireError) as exc:
        decode_settle_response(encode_header({"success": "yes"}))
    assert exc.value.reason == INVALID_PAYLOAD
    with pytest.raises(WireError) as exc:
        decode_payment_payload("%%%")
    assert exc.value.reason == INVALID_PAYLOAD
