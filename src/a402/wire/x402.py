"""x402 v1 and v2 message models, and the parsers that pick the right version.

Field names and optionality follow what the official SDKs put on the wire
(reference/x402-wire.md §2), not only the spec text, because interop is decided
by the SDKs. Everything inherits ``WireModel``: unknown fields survive, absent
fields are omitted. Amounts and times stay decimal *strings* in the models (that
is the wire form, and keeping it makes round trips lossless); the ``*_int``
helpers give the strict integer view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, ValidationError, model_validator

from a402.wire.errors import (
    INVALID_PAYLOAD,
    INVALID_PAYMENT_REQUIREMENTS,
    INVALID_X402_VERSION,
    WireError,
)
from a402.wire.model import WireModel, summarise
from a402.wire.numbers import parse_uint256

# A JSON number, never a bool or a numeric string (TS peers type these as number).
Seconds = Annotated[StrictInt, Field(ge=0)]


# ----------------------------------------------------------------------------- v2


class ResourceInfo(WireModel):
    url: str
    description: str | None = None
    mime_type: str | None = None


class PaymentRequirements(WireModel):
    """One way to pay (an entry of ``accepts``); also the normalised form of v1 requirements."""

    scheme: str
    network: str
    amount: str
    asset: str
    pay_to: str
    max_timeout_seconds: Seconds
    # Optional and omitted when absent, unlike the Python SDK which always emits
    # ``{}``: inventing a key would break a TS server's deepEqual on ``accepted``.
    extra: dict[str, Any] | None = None

    @property
    def amount_int(self) -> int:
        return parse_uint256(self.amount, reason=INVALID_PAYMENT_REQUIREMENTS, what="amount")


class PaymentRequired(WireModel):
    x402_version: Literal[2] = 2
    error: str | None = None
    resource: ResourceInfo | None = None
    accepts: list[PaymentRequirements]
    extensions: dict[str, Any] | None = None


class PaymentPayload(WireModel):
    x402_version: Literal[2] = 2
    resource: ResourceInfo | None = None
    accepted: PaymentRequirements
    payload: dict[str, Any]
    extensions: dict[str, Any] | None = None

    @property
    def scheme(self) -> str:
        return self.accepted.scheme

    @property
    def network(self) -> str:
        return self.accepted.network


# ----------------------------------------------------------------------------- v1


class PaymentRequirementsV1(WireModel):
    scheme: str
    network: str
    max_amount_required: str
    resource: str
    description: str | None = None
    mime_type: str | None = None
    output_schema: dict[str, Any] | None = None
    pay_to: str
    max_timeout_seconds: Seconds
    asset: str
    extra: dict[str, Any] | None = None

    @property
    def amount_int(self) -> int:
        return parse_uint256(
            self.max_amount_required, reason=INVALID_PAYMENT_REQUIREMENTS, what="maxAmountRequired"
        )


class PaymentRequiredV1(WireModel):
    x402_version: Literal[1] = 1
    error: str | None = None
    accepts: list[PaymentRequirementsV1]


class PaymentPayloadV1(WireModel):
    x402_version: Literal[1] = 1
    scheme: str
    network: str
    payload: dict[str, Any]


AnyPaymentPayload = PaymentPayload | PaymentPayloadV1
AnyPaymentRequirements = PaymentRequirements | PaymentRequirementsV1
AnyPaymentRequired = PaymentRequired | PaymentRequiredV1


# ---------------------------------------------------------------------- facilitator


class FacilitatorRequest(WireModel):
    """The body of ``POST /verify`` and ``POST /settle`` (same shape for both)."""

    x402_version: Literal[1, 2]
    payment_payload: AnyPaymentPayload
    payment_requirements: AnyPaymentRequirements

    @model_validator(mode="before")
    @classmethod
    def _requirements_follow_payload_version(cls, data: Any) -> Any:
        # Requirements carry no version of their own; letting pydantic guess from
        # the keys would let a dict with both ``amount`` and ``maxAmountRequired``
        # be read as whichever version suits the sender.
        if not isinstance(data, Mapping):
            return data
        payload = data.get("paymentPayload", data.get("payment_payload"))
        version = payload.get("x402Version") if isinstance(payload, Mapping) else None
        key = "paymentRequirements" if "paymentRequirements" in data else "payment_requirements"
        reqs = data.get(key)
        if isinstance(reqs, Mapping) and type(version) is int and version in (1, 2):
            model = PaymentRequirementsV1 if version == 1 else PaymentRequirements
            try:
                return {**data, key: model.model_validate(reqs)}
            except ValidationError as exc:
                raise ValueError(summarise(f"paymentRequirements (v{version})", exc)) from None
        return data

    @model_validator(mode="after")
    def _versions_agree(self) -> FacilitatorRequest:
        if self.payment_payload.x402_version != self.x402_version:
            raise ValueError("x402Version differs from paymentPayload.x402Version")
        want = PaymentRequirementsV1 if self.x402_version == 1 else PaymentRequirements
        if not isinstance(self.payment_requirements, want):
            raise ValueError(f"paymentRequirements is not x402 v{self.x402_version}")
        return self


class VerifyResponse(WireModel):
    is_valid: StrictBool
    invalid_reason: str | None = None
    invalid_message: str | None = None
    payer: str | None = None
    extensions: dict[str, Any] | None = None


class SettleResponse(WireModel):
    success: StrictBool
    error_reason: str | None = None
    error_message: str | None = None
    payer: str | None = None
    transaction: str
    network: str
    amount: str | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class SupportedKind(WireModel):
    x402_version: StrictInt
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(WireModel):
    kinds: list[SupportedKind]
    # Always emitted (as the Python SDK does): clients index into them.
    extensions: list[str] = Field(default_factory=list)
    signers: dict[str, list[str]] = Field(default_factory=dict)


# -------------------------------------------------------------------------- parsing


def detect_version(data: Any, *, reason: str = INVALID_X402_VERSION) -> Literal[1, 2]:
    """The ``x402Version`` of a decoded message; only a JSON integer 1 or 2 counts."""
    if not isinstance(data, Mapping):
        raise WireError(INVALID_PAYLOAD, f"expected a JSON object, got {type(data).__name__}")
    version = data.get("x402Version")
    if type(version) is not int or version not in (1, 2):
        raise WireError(reason, f"unsupported x402Version {version!r:.40}")
    return 1 if version == 1 else 2


def parse_payment_payload(data: Any) -> AnyPaymentPayload:
    if detect_version(data) == 1:
        return PaymentPayloadV1.from_wire(data, reason=INVALID_PAYLOAD)
    return PaymentPayload.from_wire(data, reason=INVALID_PAYLOAD)


def parse_payment_required(data: Any) -> AnyPaymentRequired:
    if detect_version(data) == 1:
        return PaymentRequiredV1.from_wire(data, reason=INVALID_PAYMENT_REQUIREMENTS)
    return PaymentRequired.from_wire(data, reason=INVALID_PAYMENT_REQUIREMENTS)


def parse_payment_requirements(data: Any, version: int | None = None) -> AnyPaymentRequirements:
    """Parse one requirements object; without ``version``, infer it from the amount key.

    Requirements have no ``x402Version`` of their own. Pass the version of the
    message they came with whenever you know it; inference refuses a dict that
    has both ``amount`` and ``maxAmountRequired`` rather than guess.
    """
    if not isinstance(data, Mapping):
        raise WireError(INVALID_PAYMENT_REQUIREMENTS, "requirements must be a JSON object")
    if version is None:
        has_v2, has_v1 = "amount" in data, "maxAmountRequired" in data
        if has_v1 == has_v2:
            raise WireError(
                INVALID_PAYMENT_REQUIREMENTS, "cannot tell v1 from v2 requirements (amount key)"
            )
        version = 1 if has_v1 else 2
    if version == 1:
        return PaymentRequirementsV1.from_wire(data, reason=INVALID_PAYMENT_REQUIREMENTS)
    if version == 2:
        return PaymentRequirements.from_wire(data, reason=INVALID_PAYMENT_REQUIREMENTS)
    raise WireError(INVALID_X402_VERSION, f"unsupported x402Version {version!r}")


def parse_facilitator_request(data: Any) -> FacilitatorRequest:
    """Parse a /verify or /settle body; an unknown version gets its own reason code."""
    detect_version(data)
    payload = data.get("paymentPayload")
    if isinstance(payload, Mapping):
        detect_version(payload)
    return FacilitatorRequest.from_wire(data, reason=INVALID_PAYLOAD)
