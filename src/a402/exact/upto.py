"""x402 ``upto`` on EVM: a signed maximum, settled later for the amount used (pure).

The payer signs a Permit2 ``PermitWitnessTransferFrom`` of at most ``permitted.amount``
of the token, whose spender is the x402 upto proxy and whose witness names the payee
(``to``), the one facilitator allowed to settle it (``facilitator``) and ``validAfter``:
the wire fields, EIP-712 types and fixed contract addresses of the official x402 SDKs.
The resource server answers first, then asks the facilitator to settle the amount
actually used (the requirements' ``amount`` at ``/settle``), at most the signed one.

This module builds, signs and checks those payloads without I/O. The EIP-712 digest is
computed by hand (three fixed type hashes, Permit2's name-only domain), and checked
against eth_account's generic encoder in the tests.

What the signature binds, hence what nobody holding it can change: the token, the
maximum, the payee, the facilitator and the deadline. What it does not bind is the
amount settled, below the maximum: that is the resource server's word, which is why
a client authorises only what it is willing to lose on one request (its ``--max``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Final

from coincurve import PrivateKey
from pydantic import Field

from a402.evm.address import address_bytes, is_address, same_address, to_checksum
from a402.evm.ecdsa import OPENZEPPELIN, public_key_address, recover_address
from a402.evm.keccak import keccak256
from a402.exact.eip3009 import Address, HexData, SigningKey, Uint256Str, _private_key
from a402.wire.errors import (
    ACCEPTED_MISMATCH,
    INVALID_NETWORK,
    INVALID_PAYLOAD,
    INVALID_PAYMENT_REQUIREMENTS,
    WireError,
)
from a402.wire.model import WireModel
from a402.wire.networks import EIP155, evm_chain_id, parse_caip2
from a402.wire.numbers import UINT256_MAX
from a402.wire.x402 import PaymentPayload, PaymentRequirements, ResourceInfo

SCHEME_UPTO: Final = "upto"
TRANSFER_METHOD_PERMIT2: Final = "permit2"
PERMIT2_ADDRESS: Final = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
"""Where Permit2 lives on every chain (and where the devnet places ours)."""
UPTO_PROXY_ADDRESS: Final = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
"""Where the SDKs' x402 upto proxy lives (and where the devnet places ours)."""

DEADLINE_MARGIN: Final = 6
"""A deadline must leave at least this long to get the settlement mined (as the SDK)."""

# Reason codes of the official SDK's upto facilitator, so a payment it refuses is
# refused here for the same reason.
INVALID_SCHEME: Final = "invalid_upto_evm_scheme"
NETWORK_MISMATCH: Final = "invalid_upto_evm_network_mismatch"
INVALID_SPENDER: Final = "invalid_permit2_spender"
RECIPIENT_MISMATCH: Final = "invalid_permit2_recipient_mismatch"
FACILITATOR_MISMATCH: Final = "upto_facilitator_mismatch"
DEADLINE_EXPIRED: Final = "permit2_deadline_expired"
NOT_YET_VALID: Final = "permit2_not_yet_valid"
AMOUNT_MISMATCH: Final = "permit2_amount_mismatch"
TOKEN_MISMATCH: Final = "permit2_token_mismatch"
INVALID_SIGNATURE: Final = "invalid_permit2_signature"
SETTLEMENT_EXCEEDS_AMOUNT: Final = "invalid_upto_evm_payload_settlement_exceeds_amount"
ALLOWANCE_REQUIRED: Final = "permit2_allowance_required"
INSUFFICIENT_BALANCE: Final = "permit2_insufficient_balance"
TRANSACTION_FAILED: Final = "invalid_upto_evm_transaction_failed"
INVALID_NONCE: Final = "permit2_invalid_nonce"

PERMIT2_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,uint256 chainId,address verifyingContract)")
TOKEN_PERMISSIONS_TYPEHASH: Final = keccak256(b"TokenPermissions(address token,uint256 amount)")
WITNESS_TYPEHASH: Final = keccak256(b"Witness(address to,address facilitator,uint256 validAfter)")
PERMIT_WITNESS_TYPEHASH: Final = keccak256(
    b"PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,"
    b"uint256 deadline,Witness witness)TokenPermissions(address token,uint256 amount)"
    b"Witness(address to,address facilitator,uint256 validAfter)")


# ----------------------------------------------------------------------- payloads


class TokenPermissions(WireModel):
    token: Address
    amount: Uint256Str


class UptoWitness(WireModel):
    to: Address
    facilitator: Address
    valid_after: Uint256Str


class UptoAuthorization(WireModel):
    from_address: Address = Field(alias="from")
    permitted: TokenPermissions
    spender: Address
    nonce: Uint256Str
    deadline: Uint256Str
    witness: UptoWitness


class UptoEvmPayload(WireModel):
    """``PaymentPayload.payload`` for upto/Permit2."""

    permit2_authorization: UptoAuthorization
    signature: HexData

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature[2:])


def is_upto_payload(inner: dict[str, Any]) -> bool:
    """An upto payload names a facilitator in its witness (exact's Permit2 witness does not)."""
    auth = inner.get("permit2Authorization")
    witness = auth.get("witness") if isinstance(auth, dict) else None
    return isinstance(witness, dict) and "facilitator" in witness


# ------------------------------------------------------------------------- EIP-712


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + address_bytes(address)


def permit2_domain_separator(chain_id: int) -> bytes:
    return keccak256(PERMIT2_DOMAIN_TYPEHASH + keccak256(b"Permit2") + _word(chain_id)
                     + _address_word(PERMIT2_ADDRESS))


def witness_hash(witness: UptoWitness) -> bytes:
    return keccak256(WITNESS_TYPEHASH + _address_word(witness.to)
                     + _address_word(witness.facilitator) + _word(int(witness.valid_after)))


def upto_digest(chain_id: int, auth: UptoAuthorization) -> bytes:
    """The EIP-712 digest the payer signs (Permit2 ``PermitWitnessTransferFrom``)."""
    permitted = keccak256(TOKEN_PERMISSIONS_TYPEHASH + _address_word(auth.permitted.token)
                          + _word(int(auth.permitted.amount)))
    struct = keccak256(PERMIT_WITNESS_TYPEHASH + permitted + _address_word(auth.spender)
                       + _word(int(auth.nonce)) + _word(int(auth.deadline))
                       + witness_hash(auth.witness))
    return keccak256(b"\x19\x01" + permit2_domain_separator(chain_id) + struct)


# ------------------------------------------------------------------------ signing


def facilitator_of(requirements: PaymentRequirements) -> str:
    """The facilitator an upto offer names (``extra.facilitatorAddress``)."""
    address = (requirements.extra or {}).get("facilitatorAddress")
    if not isinstance(address, str) or not is_address(address):
        raise WireError(INVALID_PAYMENT_REQUIREMENTS,
                        "an upto offer must name its facilitator in extra.facilitatorAddress")
    return to_checksum(address)


def sign_upto(
    key: SigningKey, requirements: PaymentRequirements, *, now: int | None = None,
    nonce: int | None = None, valid_for: int | None = None,
) -> UptoEvmPayload:
    """Sign a Permit2 authorization of at most ``requirements.amount``, for the payee
    and the facilitator the offer names, valid for ``maxTimeoutSeconds`` (as the SDK)."""
    if requirements.scheme != SCHEME_UPTO:
        raise WireError(INVALID_SCHEME, f"cannot sign scheme {requirements.scheme!r} as upto")
    if not is_address(requirements.pay_to) or not is_address(requirements.asset):
        raise WireError(INVALID_PAYMENT_REQUIREMENTS, "payTo and asset must be EVM addresses")
    chain_id = evm_chain_id(requirements.network)
    facilitator = facilitator_of(requirements)
    private = _private_key(key)
    t = int(time.time()) if now is None else now
    lifetime = requirements.max_timeout_seconds if valid_for is None else valid_for
    if lifetime <= 0:
        raise WireError(INVALID_PAYMENT_REQUIREMENTS, "maxTimeoutSeconds must be positive")
    auth = UptoAuthorization(
        from_address=to_checksum(public_key_address(private.public_key)),
        permitted=TokenPermissions(token=to_checksum(requirements.asset),
                                   amount=str(requirements.amount_int)),
        spender=UPTO_PROXY_ADDRESS,
        nonce=str(int.from_bytes(os.urandom(32)) if nonce is None else nonce),
        deadline=str(t + lifetime),
        witness=UptoWitness(to=to_checksum(requirements.pay_to), facilitator=facilitator,
                            valid_after="0"),
    )
    signature = _sign(private, upto_digest(chain_id, auth))
    return UptoEvmPayload(permit2_authorization=auth, signature="0x" + signature.hex())


def _sign(private: PrivateKey, digest: bytes) -> bytes:
    raw = private.sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def build_upto_payload(
    requirements: PaymentRequirements, key: SigningKey, resource: ResourceInfo | None = None,
    extensions: dict[str, Any] | None = None, *, now: int | None = None,
    valid_for: int | None = None,
) -> PaymentPayload:
    """A signed v2 upto payload; ``accepted`` is the very requirements object."""
    signed = sign_upto(key, requirements, now=now, valid_for=valid_for)
    return PaymentPayload(resource=resource, accepted=requirements, payload=signed.to_wire(),
                          extensions=extensions)


# ------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class UptoCheck:
    """The offline verdict on one upto payment (``reason`` None: every check passed).

    ``needs_contract_check``: the signature is not an EOA's by ``from``; it stands
    refused unless the chain's simulation (Permit2 asks the wallet, EIP-1271) accepts it.
    """

    payer: str | None
    reason: str | None = None
    message: str | None = None
    authorization: UptoAuthorization | None = None
    signature: bytes | None = None
    maximum: int = 0
    amount: int = 0
    """What is to be settled: the requirements' amount (at ``/verify``, the maximum)."""
    needs_contract_check: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_upto(
    payload: PaymentPayload, requirements: PaymentRequirements, *, facilitators: list[str],
    now: int, settling: bool,
) -> UptoCheck:
    """The offline upto checks, in the SDK facilitator's order.

    At ``/verify`` (``settling`` False) the requirements' amount must be the signed
    maximum, as the SDK requires. At ``/settle`` it is the amount to charge: at most
    the maximum (above it: ``invalid_upto_evm_payload_settlement_exceeds_amount``,
    nothing moves), possibly 0.
    """
    payer: str | None = None

    def fail(reason: str, message: str) -> UptoCheck:
        return UptoCheck(payer=payer, reason=reason, message=message)

    if payload.accepted.scheme != SCHEME_UPTO or requirements.scheme != SCHEME_UPTO:
        return fail(INVALID_SCHEME, f"scheme {payload.accepted.scheme!r}/{requirements.scheme!r}")
    if payload.accepted.network != requirements.network:
        return fail(NETWORK_MISMATCH, f"{payload.accepted.network!r} != {requirements.network!r}")
    try:
        if parse_caip2(requirements.network)[0] != EIP155:
            return fail(INVALID_NETWORK, f"{requirements.network!r} is not an eip155 network")
        chain_id = evm_chain_id(requirements.network)
        amount = requirements.amount_int
        if not is_address(requirements.pay_to) or not is_address(requirements.asset):
            raise WireError(INVALID_PAYMENT_REQUIREMENTS, "payTo and asset must be EVM addresses")
        evm = UptoEvmPayload.from_wire(payload.payload, reason=INVALID_PAYLOAD)
    except WireError as exc:
        return fail(exc.reason, exc.message)
    auth = evm.permit2_authorization
    payer = to_checksum(auth.from_address)
    if not same_address(auth.spender, UPTO_PROXY_ADDRESS):
        return fail(INVALID_SPENDER, "spender is not the x402 upto proxy")
    if not same_address(auth.witness.to, requirements.pay_to):
        return fail(RECIPIENT_MISMATCH, "witness.to is not payTo")
    if not any(same_address(auth.witness.facilitator, f) for f in facilitators):
        return fail(FACILITATOR_MISMATCH, "witness.facilitator is not this facilitator")
    if int(auth.deadline) < now + DEADLINE_MARGIN:
        return fail(DEADLINE_EXPIRED, f"deadline {auth.deadline} < {now + DEADLINE_MARGIN}")
    if int(auth.witness.valid_after) > now:
        return fail(NOT_YET_VALID, f"validAfter {auth.witness.valid_after} > now ({now})")
    maximum = int(auth.permitted.amount)
    if settling and amount > maximum:
        return fail(SETTLEMENT_EXCEEDS_AMOUNT,
                    f"settlement amount {amount} exceeds the authorised maximum {maximum}")
    if not settling and amount != maximum:
        return fail(AMOUNT_MISMATCH, f"permitted amount {maximum} != required {amount}")
    if not same_address(auth.permitted.token, requirements.asset):
        return fail(TOKEN_MISMATCH, "permitted.token is not the asset")
    if payload.accepted.amount != auth.permitted.amount or not same_address(
            payload.accepted.pay_to, requirements.pay_to) or not same_address(
            payload.accepted.asset, requirements.asset):
        return fail(ACCEPTED_MISMATCH, "accepted differs from the signed authorization")
    signature = evm.signature_bytes
    verdict = UptoCheck(payer=payer, authorization=auth, signature=signature,
                        maximum=maximum, amount=amount)
    if not signature:
        return replace(verdict, reason=INVALID_SIGNATURE, message="empty signature")
    digest = upto_digest(chain_id, auth)
    if len(signature) == 65 and recover_address(digest, signature, policy=OPENZEPPELIN) \
            == address_bytes(auth.from_address):
        return verdict
    return replace(verdict, reason=INVALID_SIGNATURE, message="not an EOA signature by `from`",
                   needs_contract_check=True)


def permit2_nonce_position(nonce: int) -> tuple[int, int]:
    """Permit2's unordered nonce: (word index, bit) in ``nonceBitmap(owner, word)``."""
    if not 0 <= nonce <= UINT256_MAX:
        raise ValueError("nonce out of range")
    return nonce >> 8, nonce & 0xFF
