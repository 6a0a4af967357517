from __future__ import annotations

import pytest

from a402.wire.convert import (
    normalize,
    payload_v2_to_v1,
    payment_required_v1_to_v2,
    payment_required_v2_to_v1,
    requirements_v1_to_v2,
    requirements_v2_to_v1,
    resource_from_v1,
    to_v2_requirements,
)
from a402.wire.errors import INVALID_NETWORK, INVALID_X402_VERSION, WireError
from a402.wire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)
from tests.wire import samples


def test_v1_requirements_to_v2() -> None:
    v1 = PaymentRequirementsV1.model_validate(
        samples.requirements_v1(outputSchema={"type": "object"}, vendorHint="x", amount="999")
    )
    v2 = requirements_v1_to_v2(v1)
    wire = v2.to_wire()
    assert wire == {
        **samples.requirements_v2(),
        "vendorHint": "x",  # unknown fields ride along...
    }  # ...but a stray v1 "amount" never overrides maxAmountRequired
    assert resource_from_v1(v1) == ResourceInfo(
        url="https://api.example.com/premium-data",
        description="Premium data",
        mime_type="application/json",
    )
    assert to_v2_requirements(v1) == v2
    assert to_v2_requirements(v2) is v2


def test_v2_requirements_to_v1() -> None:
    v2 = PaymentRequirements.model_validate(samples.requirements_v2())
    info = ResourceInfo(
        url="https://api.example.com/premium-data",
        description="Premium data",
        mime_type="application/json",
    )
    assert requirements_v2_to_v1(v2, info).to_wire() == samples.requirements_v1()
    bare = requirements_v2_to_v1(v2, "https://x/y").to_wire()
    assert bare["resource"] == "https://x/y"
    assert bare["description"] == "" and bare["mimeType"] == ""  # v1 schemas require strings


def test_round_trip_v2_v1_v2_is_identity() -> None:
    v2 = PaymentRequirements.model_validate(samples.requirements_v2(futureField=1))
    back = requirements_v1_to_v2(requirements_v2_to_v1(v2, "https://r"))
    assert back == v2


def test_v2_to_v1_needs_a_v1_network_name() -> None:
    v2 = PaymentRequirements.model_validate(samples.requirements_v2(network="eip155:31337"))
    with pytest.raises(WireError) as exc:
        requirements_v2_to_v1(v2, "https://r")
    assert exc.value.reason == INVALID_NETWORK


def test_v1_with_unknown_network_name_is_rejected() -> None:
    v1 = PaymentRequirementsV1.model_validate(samples.requirements_v1(network="atlantis"))
    with pytest.raises(WireError) as exc:
        requirements_v1_to_v2(v1)
    assert exc.value.reason == INVALID_NETWORK


def test_payment_required_conversions() -> None:
    v1 = PaymentRequiredV1.model_validate(
        {
            "x402Version": 1,
            "error": "X-PAYMENT header is required",
            "accepts": [samples.requirements_v1()],
        }
    )
    v2 = payment_required_v1_to_v2(v1)
    assert v2.resource is not None and v2.resource.url == "https://api.example.com/premium-data"
    assert v2.accepts[0].to_wire() == samples.requirements_v2()
    assert v2.error == "X-PAYMENT header is required"
    again = payment_required_v2_to_v1(v2)
    assert again == v1
    empty = payment_required_v1_to_v2(PaymentRequiredV1(accepts=[]))
    assert empty.resource is None and empty.accepts == []


def test_normalize_v2_is_identity() -> None:
    payload = PaymentPayload.model_validate(samples.payment_payload_v2())
    reqs = PaymentRequirements.model_validate(samples.requirements_v2())
    assert normalize(payload, reqs) == (payload, reqs)


def test_normalize_v1() -> None:
    payload = PaymentPayloadV1.model_validate(samples.payment_payload_v1())
    reqs = PaymentRequirementsV1.model_validate(samples.requirements_v1())
    p2, r2 = normalize(payload, reqs)
    assert r2.to_wire() == samples.requirements_v2()
    assert p2.accepted == r2
    assert p2.payload == payload.payload
    assert p2.resource is not None and p2.resource.url == reqs.resource


def test_normalize_v1_keeps_the_payloads_own_network() -> None:
    payload = PaymentPayloadV1.model_validate(samples.payment_payload_v1(network="base"))
    reqs = PaymentRequirementsV1.model_validate(samples.requirements_v1())
    p2, r2 = normalize(payload, reqs)
    assert p2.accepted.network == "eip155:8453"
    assert r2.network == "eip155:84532"


def test_normalize_rejects_mixed_versions() -> None:
    p1 = PaymentPayloadV1.model_validate(samples.payment_payload_v1())
    p2 = PaymentPayload.model_validate(samples.payment_payload_v2())
    r1 = PaymentRequirementsV1.model_validate(samples.requirements_v1())
    r2 = PaymentRequirements.model_validate(samples.requirements_v2())
    for payload, reqs in ((p1, r2), (p2, r1)):
        with pytest.raises(WireError) as exc:
            normalize(payload, reqs)  # type: ignore[arg-type]
        assert exc.value.reason == INVALID_X402_VERSION


def test_payload_v2_to_v1() -> None:
    p2 = PaymentPayload.model_validate(samples.payment_payload_v2())
    assert payload_v2_to_v1(p2).to_wire() == samples.payment_payload_v1()


def test_conversion_results_are_plain_models() -> None:
    v1 = PaymentRequirementsV1.model_validate(samples.requirements_v1())
    assert isinstance(requirements_v1_to_v2(v1), PaymentRequirements)
    assert isinstance(payment_required_v1_to_v2(PaymentRequiredV1(accepts=[v1])), PaymentRequired)
