"""Our encodings against the official x402 SDK (2.25), used purely as an oracle."""

from __future__ import annotations

import json

from x402 import schemas as official
from x402.http import utils as official_http
from x402.schemas import v1 as official_v1

from a402.wire.headers import (
    decode_payment_payload,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from a402.wire.x402 import (
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)
from tests.wire import samples


def _theirs(model: object) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True)  # type: ignore[attr-defined]


def test_our_payment_required_parses_with_theirs() -> None:
    ours = PaymentRequired.model_validate(samples.payment_required_v2())
    theirs = official_http.decode_payment_required_header(encode_header(ours))
    assert isinstance(theirs, official.PaymentRequired)
    assert _theirs(theirs) == ours.to_wire()


def test_their_payment_required_parses_with_ours() -> None:
    theirs = official.PaymentRequired.model_validate(samples.payment_required_v2())
    ours = decode_payment_required(official_http.encode_payment_required_header(theirs))
    assert isinstance(ours, PaymentRequired)
    assert ours.to_wire() == _theirs(theirs)


def test_payment_required_without_extra_round_trips_through_theirs() -> None:
    # They always emit extra={}; we accept that and keep it.
    data = samples.payment_required_v2()
    del data["accepts"][0]["extra"]
    theirs = official.PaymentRequired.model_validate(data)
    ours = decode_payment_required(official_http.encode_payment_required_header(theirs))
    assert isinstance(ours, PaymentRequired)
    assert ours.accepts[0].extra == {}


def test_v1_payment_required_both_ways() -> None:
    body = {
        "x402Version": 1,
        "error": "X-PAYMENT header is required",
        "accepts": [samples.requirements_v1()],
    }
    ours = PaymentRequiredV1.model_validate(body)
    theirs = official_http.decode_payment_required_header(encode_header(ours))
    assert isinstance(theirs, official_v1.PaymentRequiredV1)
    assert _theirs(theirs) == body
    back = decode_payment_required(official_http.encode_payment_required_header(theirs))
    assert back == ours


def test_payment_payload_both_ways() -> None:
    ours = PaymentPayload.model_validate(samples.payment_payload_v2())
    theirs = official_http.decode_payment_signature_header(encode_header(ours))
    assert isinstance(theirs, official.PaymentPayload)
    assert _theirs(theirs) == ours.to_wire()
    back = decode_payment_payload(official_http.encode_payment_signature_header(theirs))
    assert back == ours


def test_v1_payment_payload_both_ways() -> None:
    ours = PaymentPayloadV1.model_validate(samples.payment_payload_v1())
    theirs = official_http.decode_payment_signature_header(encode_header(ours))
    assert isinstance(theirs, official_v1.PaymentPayloadV1)
    assert _theirs(theirs) == ours.to_wire()
    assert decode_payment_payload(official_http.encode_payment_signature_header(theirs)) == ours


def test_settle_response_both_ways() -> None:
    ours = SettleResponse(
        success=False,
        error_reason="invalid_exact_evm_insufficient_balance",
        transaction="",
        network="eip155:84532",
        payer=samples.PAYER,
    )
    theirs = official_http.decode_payment_response_header(encode_header(ours))
    assert _theirs(theirs) == ours.to_wire()
    their_ok = official.SettleResponse(
        success=True, transaction="0x" + "ab" * 32, network="eip155:84532", payer=samples.PAYER
    )
    back = decode_settle_response(official_http.encode_payment_response_header(their_ok))
    assert back.to_wire() == _theirs(their_ok)


def test_facilitator_bodies_validate_with_their_models() -> None:
    request = FacilitatorRequest.model_validate(
        {
            "x402Version": 2,
            "paymentPayload": samples.payment_payload_v2(),
            "paymentRequirements": samples.requirements_v2(),
        }
    )
    theirs = official.VerifyRequest.model_validate_json(json.dumps(request.to_wire()))
    assert _theirs(theirs) == request.to_wire()
    verify = VerifyResponse(is_valid=False, invalid_reason="network_mismatch", payer=samples.PAYER)
    assert _theirs(official.VerifyResponse.model_validate(verify.to_wire())) == verify.to_wire()
    supported = SupportedResponse(
        kinds=[SupportedKind(x402_version=2, scheme="exact", network="eip155:84532")],
        signers={"eip155:*": [samples.PAY_TO]},
    )
    their_supported = official.SupportedResponse.model_validate(supported.to_wire())
    assert _theirs(their_supported) == supported.to_wire()
    assert SupportedResponse.model_validate(_theirs(their_supported)) == supported
