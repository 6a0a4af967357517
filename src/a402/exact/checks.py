"""Every check of an exact/EIP-3009 payment that needs no chain (pure).

The facilitator's I/O layer calls ``check_exact`` first and only spends RPC
calls on payments that pass it. Checks run cheapest-and-most-fundamental
first (routing, then what the server asked for, then the payload's shape, then
its terms, and the signature), so the reason reported is the most useful
one. Reason codes and their order are the official Python facilitator's, so a
payment it refuses is refused here for the same reason.

The echoed ``accepted`` (unsigned) is compared with the requirements last: the
official facilitator does not look at it, so wherever the signed authorization
itself is wrong (recipient, value, times, signature) its reason is given. Only
a payload whose authorization is right but whose echo was edited gets
``accepted_requirements_mismatch``, the one case the SDK would accept and we
refuse (an edited echo is a tampered or confused client; refusing costs it
nothing, since it can resend the same authorization with the true echo).

What is left to the chain: nonce unused, balance, and contract-wallet
signatures (EIP-1271 / ERC-6492), which ``needs_contract_check`` flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from a402.evm.address import address_bytes, is_address, same_address, to_checksum
from a402.evm.ecdsa import EIP3009_TOKEN, recover_address
from a402.exact.eip3009 import (
    SCHEME_EXACT,
    TRANSFER_METHOD_EIP3009,
    Authorization,
    Eip712Domain,
    ExactEvmPayload,
    authorization_digest,
    domain_from_requirements,
)
from a402.wire.errors import (
    ACCEPTED_MISMATCH,
    AUTHORIZATION_VALUE_MISMATCH,
    INVALID_NETWORK,
    INVALID_PAYLOAD,
    INVALID_PAYMENT_REQUIREMENTS,
    INVALID_SIGNATURE,
    NETWORK_MISMATCH,
    RECIPIENT_MISMATCH,
    UNSUPPORTED_SCHEME,
    VALID_AFTER_FUTURE,
    VALID_BEFORE_EXPIRED,
    WireError,
)
from a402.wire.networks import EIP155, evm_chain_id, parse_caip2
from a402.wire.numbers import parse_uint256
from a402.wire.x402 import PaymentPayload, PaymentRequirements

# validBefore must leave at least this long to get the transfer mined.
VALID_BEFORE_MARGIN = 6


@dataclass(frozen=True, slots=True)
class ExactCheck:
    """The offline verdict on one payment.

    ``reason`` is None when every offline check passed. When
    ``needs_contract_check`` is set, ``reason`` is ``invalid_exact_evm_payload_signature``
    and stands *unless* the chain shows ``payer`` is a contract that accepts the
    signature for ``digest`` (EIP-1271, or ERC-6492 for an undeployed wallet).
    Failing closed this way means a caller that ignores the flag rejects.
    """

    payer: str | None
    reason: str | None = None
    message: str | None = None
    digest: bytes | None = None
    authorization: Authorization | None = None
    signature: bytes | None = None
    domain: Eip712Domain | None = None
    needs_contract_check: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_exact(
    payload: PaymentPayload, requirements: PaymentRequirements, *, now: int
) -> ExactCheck:
    """Run the offline exact/EIP-3009 checks on a normalised (v2) payload."""
    accepted = payload.accepted
    payer: str | None = None  # known once the payload's shape is checked

    def fail(reason: str, message: str) -> ExactCheck:
        hint = payer or _payer_hint(payload.payload)
        return ExactCheck(payer=hint, reason=reason, message=message)

    # 1. scheme and transfer method
    if accepted.scheme != SCHEME_EXACT or requirements.scheme != SCHEME_EXACT:
        return fail(UNSUPPORTED_SCHEME, f"scheme {accepted.scheme!r}/{requirements.scheme!r}")
    method = (requirements.extra or {}).get("assetTransferMethod", TRANSFER_METHOD_EIP3009)
    if method != TRANSFER_METHOD_EIP3009:
        return fail(UNSUPPORTED_SCHEME, f"asset transfer method {method!r} is not EIP-3009")

    # 2. network
    if accepted.network != requirements.network:
        return fail(NETWORK_MISMATCH, f"{accepted.network!r} != {requirements.network!r}")
    try:
        if parse_caip2(requirements.network)[0] != EIP155:
            return fail(INVALID_NETWORK, f"{requirements.network!r} is not an eip155 network")
        evm_chain_id(requirements.network)
    except WireError as exc:
        return fail(exc.reason, exc.message)

    # 3. the requirements are usable (and the echoed amount is a number)
    try:
        amount = requirements.amount_int
        if not is_address(requirements.pay_to):
            raise WireError(INVALID_PAYMENT_REQUIREMENTS, "payTo is not an EVM address")
        accepted_amount = parse_uint256(accepted.amount, reason=INVALID_PAYLOAD, what="amount")
    except WireError as exc:
        return fail(exc.reason, exc.message)

    # 4. EIP-712 domain
    try:
        domain = domain_from_requirements(requirements)
    except WireError as exc:
        return fail(exc.reason, exc.message)

    # 5. payload shape
    try:
        evm = ExactEvmPayload.from_wire(payload.payload, reason=INVALID_PAYLOAD)
    except WireError as exc:
        return fail(exc.reason, exc.message)
    auth = evm.authorization
    from_bytes = address_bytes(auth.from_address)
    payer = to_checksum(from_bytes)

    # 6-9. the authorization's terms
    if not _same_address(auth.to, requirements.pay_to):
        return fail(RECIPIENT_MISMATCH, "authorization.to is not payTo")
    if int(auth.value) != amount:
        return fail(AUTHORIZATION_VALUE_MISMATCH, f"value {auth.value} != amount {amount}")
    if int(auth.valid_before) < (deadline := now + VALID_BEFORE_MARGIN):
        return fail(VALID_BEFORE_EXPIRED, f"validBefore {auth.valid_before} < {deadline}")
    if int(auth.valid_after) > now:
        return fail(VALID_AFTER_FUTURE, f"validAfter {auth.valid_after} > now ({now})")

    # 10. signature
    signature = evm.signature_bytes
    digest = authorization_digest(domain, auth)
    verdict = ExactCheck(
        payer=payer, digest=digest, authorization=auth, signature=signature, domain=domain
    )
    eoa_signed = (
        len(signature) == 65
        and recover_address(digest, signature, policy=EIP3009_TOKEN) == from_bytes
    )

    # 11. what the client says it accepted is what the server requires
    echo = _echo_mismatch(accepted, requirements, accepted_amount, amount)
    if echo is not None:
        # Final either way (no contract check): an authorization for another asset
        # fails the signature under this asset's domain, as the SDK reports it.
        if not eoa_signed and len(signature) in (0, 65):
            return replace(verdict, reason=INVALID_SIGNATURE,
                           message=f"{echo}, and the signature is not by `from` for these terms")
        return replace(verdict, reason=ACCEPTED_MISMATCH, message=echo)

    if not signature:
        return replace(verdict, reason=INVALID_SIGNATURE, message="empty signature")
    if eoa_signed:
        return verdict
    return replace(
        verdict,
        reason=INVALID_SIGNATURE,
        message=(
            "not an EOA signature by `from`"
            if len(signature) == 65
            else f"{len(signature)}-byte signature needs a contract wallet"
        ),
        needs_contract_check=True,
    )


def _echo_mismatch(
    accepted: PaymentRequirements, requirements: PaymentRequirements,
    accepted_amount: int, amount: int,
) -> str | None:
    """Which of the echoed ``accepted`` terms differ from the requirements, if any."""
    if accepted_amount != amount:
        return "accepted.amount differs from the requirements"
    if not _same_address(accepted.asset, requirements.asset):
        return "accepted.asset differs from the requirements"
    if not _same_address(accepted.pay_to, requirements.pay_to):
        return "accepted.payTo differs from the requirements"
    return None


def _same_address(a: str, b: str) -> bool:
    """EVM addresses compare case-insensitively (checksum case is presentation only);
    anything else only as the very same text."""
    return a == b or same_address(a, b)


def _payer_hint(inner: dict[str, Any]) -> str | None:
    """Best-effort payer for responses to payloads that fail before shape validation."""
    auth = inner.get("authorization")
    candidate = auth.get("from") if isinstance(auth, dict) else None
    return to_checksum(candidate) if is_address(candidate) else None
