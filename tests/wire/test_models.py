from __future__ import annotations

import json
from typing import Any

import pytest

from a402.wire.errors import (
    INVALID_PAYLOAD,
    INVALID_PAYMENT_REQUIREMENTS,
    INVALID_X402_VERSION,
    WireError,
)
from a402.wire.x402 import (
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    detect_version,
    parse_facilitator_request,
    parse_payment_payload,
    parse_payment_required,
    parse_payment_requirements,
)
from tests.wire import samples


def _no_nulls(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nulls(v) for v in value)
    return True


def test_absent_fields_are_omitted_not_null() -> None:
    req = PaymentRequirements(
        scheme="exact",
        network="eip155:1",
        amount="1",
        asset=samples.USDC_BASE_SEPOLIA,
        pay_to=samples.PAY_TO,
        max_timeout_seconds=60,
    )
    pr = PaymentRequired(accepts=[req], resource=ResourceInfo(url="https://x"))
    wire = pr.to_wire()
    assert wire == {
        "x402Version": 2,
        "resource": {"url": "https://x"},
        "accepts": [
            {
                "scheme": "exact",
                "network": "eip155:1",
                "amount": "1",
                "asset": samples.USDC_BASE_SEPOLIA,
                "payTo": samples.PAY_TO,
                "maxTimeoutSeconds": 60,
            }
        ],
    }
    assert "null" not in pr.to_json()
    settle = SettleResponse(success=False, error_reason="x", transaction="", network="eip155:1")
    assert settle.to_wire() == {
        "success": False,
        "errorReason": "x",
        "transaction": "",
        "network": "eip155:1",
    }
    v1 = PaymentRequirementsV1.model_validate(samples.requirements_v1(outputSchema=None))
    assert "outputSchema" not in v1.to_wire()
    assert _no_nulls(v1.to_wire())


def test_unknown_top_level_null_is_dropped_but_opaque_blobs_are_kept_verbatim() -> None:
    # ``extra`` belongs to the scheme: a null inside it is data, not an absent field.
    data = samples.requirements_v2(extra={"name": "USDC", "version": "2", "memo": None})
    data["someNewField"] = None
    wire = PaymentRequirements.model_validate(data).to_wire()
    assert "someNewField" not in wire
    assert wire["extra"] == {"name": "USDC", "version": "2", "memo": None}


def test_unknown_fields_survive_round_trips() -> None:
    data = samples.payment_required_v2()
    data["futureTopLevel"] = {"a": [1, 2, {"b": "c"}]}
    data["resource"]["serviceName"] = "weather"
    data["accepts"][0]["futureField"] = "kept"
    data["extensions"] = {"bazaar": {"info": {"x": 1}, "schema": {"type": "object"}}}
    parsed = parse_payment_required(data)
    assert isinstance(parsed, PaymentRequired)
    assert parsed.to_wire() == data
    assert parse_payment_required(json.loads(parsed.to_json())) == parsed


def test_payload_echoes_accepted_verbatim() -> None:
    accept = samples.requirements_v2(futureField={"k": "v"})
    pr = parse_payment_required(samples.payment_required_v2(accepts=[accept]))
    assert isinstance(pr, PaymentRequired)
    payload = PaymentPayload(accepted=pr.accepts[0], payload=samples.inner_payload())
    assert payload.to_wire()["accepted"] == accept


def test_numbers_and_strings_on_the_wire() -> None:
    wire = PaymentRequirements.model_validate(samples.requirements_v2()).to_wire()
    assert wire["maxTimeoutSeconds"] == 60 and isinstance(wire["maxTimeoutSeconds"], int)
    assert wire["amount"] == "10000"
    for bad in ("60", True, 60.5, -1):
        with pytest.raises(WireError) as exc:
            parse_payment_requirements(samples.requirements_v2(maxTimeoutSeconds=bad))
        assert exc.value.reason == INVALID_PAYMENT_REQUIREMENTS
    with pytest.raises(WireError):
        parse_payment_requirements(samples.requirements_v2(amount=10000))


@pytest.mark.parametrize("amount", ["0", "10000", str(2**256 - 1)])
def test_amount_int(amount: str) -> None:
    req = PaymentRequirements.model_validate(samples.requirements_v2(amount=amount))
    assert req.amount_int == int(amount)


@pytest.mark.parametrize(
    "amount", ["", "-1", "+1", " 1", "1_000", "1.0", "0x10", "١٠", str(2**256)]
)
def test_amount_int_is_strict(amount: str) -> None:
    req = PaymentRequirements.model_validate(samples.requirements_v2(amount=amount))
    with pytest.raises(WireError) as exc:
        _ = req.amount_int
    assert exc.value.reason == INVALID_PAYMENT_REQUIREMENTS


def test_v1_amount_int() -> None:
    req = PaymentRequirementsV1.model_validate(samples.requirements_v1())
    assert req.amount_int == 10000


def test_models_are_frozen() -> None:
    req = PaymentRequirements.model_validate(samples.requirements_v2())
    with pytest.raises(ValueError):
        req.amount = "1"  # type: ignore[misc]
    assert req.model_copy(update={"amount": "1"}).amount == "1"


def test_populate_by_name_and_alias() -> None:
    by_name = PaymentRequirements(
        scheme="exact",
        network="eip155:1",
        amount="1",
        asset="a",
        pay_to="p",
        max_timeout_seconds=1,
    )
    by_alias = PaymentRequirements.model_validate(
        {
            "scheme": "exact",
            "network": "eip155:1",
            "amount": "1",
            "asset": "a",
            "payTo": "p",
            "maxTimeoutSeconds": 1,
        }
    )
    assert by_name == by_alias


def test_detect_version() -> None:
    assert detect_version({"x402Version": 1}) == 1
    assert detect_version({"x402Version": 2}) == 2
    for bad in ({}, {"x402Version": 3}, {"x402Version": "2"}, {"x402Version": True}):
        with pytest.raises(WireError) as exc:
            detect_version(bad)
        assert exc.value.reason == INVALID_X402_VERSION
    with pytest.raises(WireError) as exc:
        detect_version([1])
    assert exc.value.reason == INVALID_PAYLOAD


def test_parse_payment_payload_both_versions() -> None:
    v2 = parse_payment_payload(samples.payment_payload_v2())
    v1 = parse_payment_payload(samples.payment_payload_v1())
    assert isinstance(v2, PaymentPayload) and v2.scheme == "exact"
    assert v2.network == "eip155:84532"
    assert isinstance(v1, PaymentPayloadV1) and v1.network == "base-sepolia"
    assert v2.to_wire() == samples.payment_payload_v2()
    assert v1.to_wire() == samples.payment_payload_v1()


def test_parse_payment_payload_errors() -> None:
    bad = samples.payment_payload_v2()
    del bad["accepted"]
    with pytest.raises(WireError) as exc:
        parse_payment_payload(bad)
    assert exc.value.reason == INVALID_PAYLOAD
    assert "accepted" in exc.value.message
    with pytest.raises(WireError) as exc:
        parse_payment_payload(samples.payment_payload_v2(x402Version=7))
    assert exc.value.reason == INVALID_X402_VERSION


def test_error_message_does_not_echo_input_values() -> None:
    secretish = "0x" + "de" * 40
    with pytest.raises(WireError) as exc:
        parse_payment_payload(samples.payment_payload_v2(payload=secretish))
    assert secretish not in exc.value.message


def test_parse_payment_required_both_versions() -> None:
    v1 = parse_payment_required(
        {
            "x402Version": 1,
            "error": "X-PAYMENT header is required",
            "accepts": [samples.requirements_v1()],
        }
    )
    assert isinstance(v1, PaymentRequiredV1)
    assert isinstance(parse_payment_required(samples.payment_required_v2()), PaymentRequired)
    with pytest.raises(WireError) as exc:
        parse_payment_required(samples.payment_required_v2(accepts="nope"))
    assert exc.value.reason == INVALID_PAYMENT_REQUIREMENTS


def test_parse_payment_requirements_version_inference() -> None:
    assert isinstance(parse_payment_requirements(samples.requirements_v2()), PaymentRequirements)
    assert isinstance(parse_payment_requirements(samples.requirements_v1()), PaymentRequirementsV1)
    assert isinstance(
        parse_payment_requirements(samples.requirements_v1(), 1), PaymentRequirementsV1
    )
    both = samples.requirements_v1(amount="1")
    with pytest.raises(WireError) as exc:
        parse_payment_requirements(both)
    assert exc.value.reason == INVALID_PAYMENT_REQUIREMENTS
    with pytest.raises(WireError) as exc:
        parse_payment_requirements(samples.requirements_v2(), 3)
    assert exc.value.reason == INVALID_X402_VERSION


def test_facilitator_request_v2_and_v1() -> None:
    v2 = parse_facilitator_request(
        {
            "x402Version": 2,
            "paymentPayload": samples.payment_payload_v2(),
            "paymentRequirements": samples.requirements_v2(),
        }
    )
    assert isinstance(v2.payment_payload, PaymentPayload)
    assert isinstance(v2.payment_requirements, PaymentRequirements)
    v1_body = {
        "x402Version": 1,
        "paymentPayload": samples.payment_payload_v1(),
        "paymentRequirements": samples.requirements_v1(),
    }
    v1 = parse_facilitator_request(v1_body)
    assert isinstance(v1.payment_payload, PaymentPayloadV1)
    assert isinstance(v1.payment_requirements, PaymentRequirementsV1)
    assert v1.to_wire() == v1_body


def test_facilitator_request_requirements_follow_payload_version() -> None:
    # v1 requirements that also carry a stray "amount" must still be read as v1.
    body = {
        "x402Version": 1,
        "paymentPayload": samples.payment_payload_v1(),
        "paymentRequirements": samples.requirements_v1(amount="1"),
    }
    req = FacilitatorRequest.model_validate(body).payment_requirements
    assert isinstance(req, PaymentRequirementsV1)
    assert req.max_amount_required == "10000"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {
                "x402Version": 1,
                "paymentPayload": samples.payment_payload_v2(),
                "paymentRequirements": samples.requirements_v2(),
            },
            INVALID_PAYLOAD,
        ),
        (
            {
                "x402Version": 2,
                "paymentPayload": samples.payment_payload_v2(),
                "paymentRequirements": samples.requirements_v1(),
            },
            INVALID_PAYLOAD,
        ),
        (
            {
                "x402Version": 2,
                "paymentPayload": samples.payment_payload_v2(x402Version=9),
                "paymentRequirements": samples.requirements_v2(),
            },
            INVALID_X402_VERSION,
        ),
        ({"paymentPayload": {}, "paymentRequirements": {}}, INVALID_X402_VERSION),
        ({"x402Version": 2, "paymentRequirements": samples.requirements_v2()}, INVALID_PAYLOAD),
    ],
)
def test_facilitator_request_rejects(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(WireError) as exc:
        parse_facilitator_request(body)
    assert exc.value.reason == reason


def test_responses() -> None:
    ok = VerifyResponse(is_valid=True, payer=samples.PAYER)
    assert ok.to_wire() == {"isValid": True, "payer": samples.PAYER}
    bad = VerifyResponse.model_validate(
        {"isValid": False, "invalidReason": "network_mismatch", "invalidMessage": "m"}
    )
    assert bad.invalid_reason == "network_mismatch"
    with pytest.raises(WireError):
        VerifyResponse.from_wire({"isValid": "false"}, reason=INVALID_PAYLOAD)
    settle = SettleResponse(
        success=True, transaction="0x12", network="eip155:84532", payer=samples.PAYER, amount="5"
    )
    assert settle.to_wire() == {
        "success": True,
        "transaction": "0x12",
        "network": "eip155:84532",
        "payer": samples.PAYER,
        "amount": "5",
    }


def test_supported_response_always_emits_extensions_and_signers() -> None:
    sup = SupportedResponse(
        kinds=[SupportedKind(x402_version=2, scheme="exact", network="eip155:1")]
    )
    assert sup.to_wire() == {
        "kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:1"}],
        "extensions": [],
        "signers": {},
    }
    v1_style = SupportedResponse.model_validate(
        {"kinds": [{"x402Version": 1, "scheme": "exact", "network": "base"}]}
    )
    assert v1_style.kinds[0].network == "base"
