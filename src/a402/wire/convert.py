"""v1 ↔ v2 conversion, so the facilitator and middleware handle one normalised form.

The normalised form is v2: CAIP-2 network ids, ``amount``, and a payload that
carries the requirement it answers in ``accepted``. A v1 payload has no
``accepted``; we synthesise one from the requirements but keep the payload's
*own* scheme and network in it, so that a v1 payload aimed at another chain
still fails the network check instead of being silently re-targeted.
"""

from __future__ import annotations

from typing import Any

from a402.wire.errors import INVALID_X402_VERSION, WireError
from a402.wire.model import WireModel
from a402.wire.networks import to_caip2, to_v1
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequired,
    AnyPaymentRequirements,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)


def _unknown(model: WireModel, target: type[WireModel]) -> dict[str, Any]:
    """Unknown fields of ``model`` that cannot be mistaken for a field of ``target``.

    A v1 dict may carry a stray ``amount`` (or a snake_case ``pay_to``); letting it
    through would make it compete with the value we set deliberately.
    """
    taken = set()
    for name, field in target.model_fields.items():
        taken.add(name)
        if field.alias:
            taken.add(field.alias)
    return {k: v for k, v in (model.model_extra or {}).items() if k not in taken}


def requirements_v1_to_v2(req: PaymentRequirementsV1) -> PaymentRequirements:
    """The v2 view of v1 requirements; the resource fields move to ``resource_from_v1``.

    Unknown fields ride along so nothing a v1 server added is lost; ``outputSchema``
    has no v2 home in requirements (v2 moved it to the bazaar extension) and is dropped.
    """
    known = {
        "scheme": req.scheme,
        "network": to_caip2(req.network),
        "amount": req.max_amount_required,
        "asset": req.asset,
        "payTo": req.pay_to,
        "maxTimeoutSeconds": req.max_timeout_seconds,
        "extra": req.extra,
    }
    return PaymentRequirements.model_validate({**_unknown(req, PaymentRequirements), **known})


def resource_from_v1(req: PaymentRequirementsV1) -> ResourceInfo:
    return ResourceInfo(url=req.resource, description=req.description, mime_type=req.mime_type)


def requirements_v2_to_v1(
    req: PaymentRequirements,
    resource: ResourceInfo | str,
    *,
    output_schema: dict[str, Any] | None = None,
) -> PaymentRequirementsV1:
    """The v1 form of v2 requirements, for serving v1 clients from one configuration.

    ``description`` and ``mimeType`` are emitted as ``""`` when unknown because
    the legacy v1 schemas declare them as required strings.
    """
    info = ResourceInfo(url=resource) if isinstance(resource, str) else resource
    known = {
        "scheme": req.scheme,
        "network": to_v1(req.network),
        "maxAmountRequired": req.amount,
        "resource": info.url,
        "description": info.description or "",
        "mimeType": info.mime_type or "",
        "outputSchema": output_schema,
        "payTo": req.pay_to,
        "maxTimeoutSeconds": req.max_timeout_seconds,
        "asset": req.asset,
        "extra": req.extra,
    }
    return PaymentRequirementsV1.model_validate({**_unknown(req, PaymentRequirementsV1), **known})


def payment_required_v1_to_v2(pr: PaymentRequiredV1) -> PaymentRequired:
    """v1 repeats the resource per requirement; v2 states it once, so take the first."""
    resource = resource_from_v1(pr.accepts[0]) if pr.accepts else None
    return PaymentRequired(
        error=pr.error,
        resource=resource,
        accepts=[requirements_v1_to_v2(r) for r in pr.accepts],
    )


def payment_required_v2_to_v1(pr: PaymentRequired) -> PaymentRequiredV1:
    """Every requirement must have a v1 network name; otherwise WireError(invalid_network)."""
    resource = pr.resource if pr.resource is not None else ResourceInfo(url="")
    return PaymentRequiredV1(
        error=pr.error,
        accepts=[requirements_v2_to_v1(r, resource) for r in pr.accepts],
    )


def to_v2_requirements(req: AnyPaymentRequirements) -> PaymentRequirements:
    return req if isinstance(req, PaymentRequirements) else requirements_v1_to_v2(req)


def to_v2_payment_required(pr: AnyPaymentRequired) -> PaymentRequired:
    return pr if isinstance(pr, PaymentRequired) else payment_required_v1_to_v2(pr)


def normalize(
    payload: AnyPaymentPayload, requirements: AnyPaymentRequirements
) -> tuple[PaymentPayload, PaymentRequirements]:
    """Bring a (payload, requirements) pair of either version to the v2 form.

    Both must be of the same version: mixing them is a malformed request, not
    something to paper over.
    """
    if isinstance(payload, PaymentPayload):
        if not isinstance(requirements, PaymentRequirements):
            raise WireError(INVALID_X402_VERSION, "v2 payload with v1 requirements")
        return payload, requirements
    if not isinstance(requirements, PaymentRequirementsV1):
        raise WireError(INVALID_X402_VERSION, "v1 payload with v2 requirements")
    reqs_v2 = requirements_v1_to_v2(requirements)
    accepted = reqs_v2.model_copy(
        update={"scheme": payload.scheme, "network": to_caip2(payload.network)}
    )
    return (
        PaymentPayload(
            resource=resource_from_v1(requirements),
            accepted=accepted,
            payload=payload.payload,
        ),
        reqs_v2,
    )


def payload_v2_to_v1(payload: PaymentPayload) -> PaymentPayloadV1:
    """The v1 form of a v2 payload (scheme and network hoisted out of ``accepted``)."""
    return PaymentPayloadV1(
        scheme=payload.accepted.scheme,
        network=to_v1(payload.accepted.network),
        payload=payload.payload,
    )
