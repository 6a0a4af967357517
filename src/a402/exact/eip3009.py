"""EIP-3009 ``transferWithAuthorization`` for the x402 ``exact`` EVM scheme (pure).

The facilitator hashes and recovers one authorization per paid request, so the
EIP-712 digest is computed by hand: both type hashes are constants, the domain
separator is cached per (token, chain), and the struct is six fixed 32-byte
words, so no generic typed-data encoder is needed. Signing and recovery use
libsecp256k1 through coincurve.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeAlias

from coincurve import PrivateKey
from pydantic import AfterValidator, Field, StrictStr, StringConstraints

from a402.evm.address import is_address, to_checksum
from a402.evm.ecdsa import EIP3009_TOKEN, public_key_address, recover_address
from a402.evm.keccak import keccak256
from a402.wire.convert import requirements_v1_to_v2, to_v2_requirements
from a402.wire.errors import (
    INVALID_PAYMENT_REQUIREMENTS,
    MISSING_EIP712_DOMAIN,
    UNSUPPORTED_SCHEME,
    WireError,
)
from a402.wire.model import WireModel
from a402.wire.networks import evm_chain_id
from a402.wire.numbers import UINT256_MAX
from a402.wire.x402 import (
    AnyPaymentRequirements,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


SCHEME_EXACT: Final = "exact"
TRANSFER_METHOD_EIP3009: Final = "eip3009"
EIP712_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
TRANSFER_WITH_AUTHORIZATION_TYPEHASH: Final = keccak256(
    b"TransferWithAuthorization(address from,address to,uint256 value,"
    b"uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
# The client may be ahead of us by clock skew; it back-dates validAfter by this much.
VALID_AFTER_SKEW: Final = 600

_PAD12: Final = bytes(12)


# ---------------------------------------------------------------------- addresses


def _check_uint256(value: str) -> str:
    if int(value) > UINT256_MAX:
        raise ValueError("does not fit in uint256")
    return value


Address = Annotated[StrictStr, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Uint256Str = Annotated[
    StrictStr, StringConstraints(pattern=r"^[0-9]{1,78}$"), AfterValidator(_check_uint256)
]
Bytes32Hex = Annotated[StrictStr, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
HexData = Annotated[StrictStr, StringConstraints(pattern=r"^0x(?:[0-9a-fA-F]{2})*$")]


# ----------------------------------------------------------------------- payloads


class Authorization(WireModel):
    """The EIP-3009 message; on the wire every field is a string."""

    from_address: Address = Field(alias="from")
    to: Address
    value: Uint256Str
    valid_after: Uint256Str
    valid_before: Uint256Str
    nonce: Bytes32Hex


class ExactEvmPayload(WireModel):
    """``PaymentPayload.payload`` for exact/EIP-3009."""

    signature: HexData
    authorization: Authorization

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature[2:])


# ------------------------------------------------------------------------- EIP-712


@lru_cache(maxsize=1024)
def _domain_separator(name: str, version: str, chain_id: int, contract: bytes) -> bytes:
    return keccak256(
        EIP712_DOMAIN_TYPEHASH
        + keccak256(name.encode("utf-8"))
        + keccak256(version.encode("utf-8"))
        + chain_id.to_bytes(32, "big")
        + _PAD12
        + contract
    )


@dataclass(frozen=True, slots=True)
class Eip712Domain:
    """The token's EIP-712 domain; the separator is cached across instances.

    The cache is keyed by value, not by instance, because the facilitator builds
    a fresh domain from every request's requirements.
    """

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.version, str):
            raise WireError(MISSING_EIP712_DOMAIN, "EIP-712 name and version must be strings")
        if (
            isinstance(self.chain_id, bool)
            or not isinstance(self.chain_id, int)
            or not (0 < self.chain_id <= UINT256_MAX)
        ):
            raise WireError(INVALID_PAYMENT_REQUIREMENTS, f"bad chain id {self.chain_id!r}")
        if not is_address(self.verifying_contract):
            raise WireError(INVALID_PAYMENT_REQUIREMENTS, "verifyingContract is not an address")

    @property
    def separator(self) -> bytes:
        return _domain_separator(
            self.name, self.version, self.chain_id, bytes.fromhex(self.verifying_contract[2:])
        )


def authorization_digest(domain: Eip712Domain, auth: Authorization) -> bytes:
    """The 32-byte EIP-712 digest a payer signs for ``auth`` under ``domain``."""
    struct_hash = keccak256(
        TRANSFER_WITH_AUTHORIZATION_TYPEHASH
        + _PAD12
        + bytes.fromhex(auth.from_address[2:])
        + _PAD12
        + bytes.fromhex(auth.to[2:])
        + int(auth.value).to_bytes(32, "big")
        + int(auth.valid_after).to_bytes(32, "big")
        + int(auth.valid_before).to_bytes(32, "big")
        + bytes.fromhex(auth.nonce[2:])
    )
    return keccak256(b"\x19\x01" + domain.separator + struct_hash)


def domain_from_requirements(req: AnyPaymentRequirements) -> Eip712Domain:
    """{name, version} from ``extra``, chainId from the network, verifyingContract = asset.

    A missing name/version is an error rather than a lookup in a table of known
    tokens: the domain is part of what is signed, so guessing it would only move
    the failure to the chain.
    """
    extra = req.extra or {}
    name, version = extra.get("name"), extra.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise WireError(MISSING_EIP712_DOMAIN, "requirements.extra needs string name and version")
    if not is_address(req.asset):
        raise WireError(INVALID_PAYMENT_REQUIREMENTS, "asset is not an EVM token address")
    return Eip712Domain(name, version, evm_chain_id(req.network), req.asset)


# ------------------------------------------------------------------ sign / recover

SigningKey: TypeAlias = "bytes | str | LocalAccount"
"""A raw 32-byte key, its hex, or an eth_account LocalAccount."""


def _private_key(key: SigningKey) -> PrivateKey:
    raw: Any = getattr(key, "key", key)  # LocalAccount keeps its secret in .key
    if isinstance(raw, str):
        try:
            raw = bytes.fromhex(raw.removeprefix("0x"))
        except ValueError:
            raise ValueError("private key is not hex") from None
    if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
        raise ValueError("private key must be 32 bytes")
    return PrivateKey(bytes(raw))


def address_of(key: SigningKey) -> str:
    """The checksum address controlled by ``key``."""
    return to_checksum(public_key_address(_private_key(key).public_key))


def _nonce_bytes(nonce: bytes | str | None) -> bytes:
    if nonce is None:
        return os.urandom(32)
    raw = bytes.fromhex(nonce.removeprefix("0x")) if isinstance(nonce, str) else nonce
    if len(raw) != 32:
        raise ValueError("nonce must be 32 bytes")
    return raw


def sign_authorization(
    key: SigningKey,
    requirements: AnyPaymentRequirements,
    *,
    now: int | None = None,
    nonce: bytes | str | None = None,
    valid_for: int | None = None,
) -> ExactEvmPayload:
    """Sign an EIP-3009 authorization paying exactly what ``requirements`` ask.

    validAfter is back-dated by ten minutes, as the SDK clients do, so a
    facilitator whose clock is behind ours still accepts it; validBefore is
    ``now + maxTimeoutSeconds`` unless ``valid_for`` overrides it.
    """
    req = to_v2_requirements(requirements)
    if req.scheme != SCHEME_EXACT:
        raise WireError(UNSUPPORTED_SCHEME, f"cannot sign scheme {req.scheme!r}")
    method = (req.extra or {}).get("assetTransferMethod", TRANSFER_METHOD_EIP3009)
    if method != TRANSFER_METHOD_EIP3009:
        raise WireError(UNSUPPORTED_SCHEME, f"asset transfer method {method!r} is not EIP-3009")
    domain = domain_from_requirements(req)
    if not is_address(req.pay_to):
        raise WireError(INVALID_PAYMENT_REQUIREMENTS, "payTo is not an EVM address")
    private = _private_key(key)
    t = int(time.time()) if now is None else now
    lifetime = req.max_timeout_seconds if valid_for is None else valid_for
    auth = Authorization(
        from_address=to_checksum(public_key_address(private.public_key)),
        to=req.pay_to,
        value=str(req.amount_int),
        valid_after=str(max(0, t - VALID_AFTER_SKEW)),
        valid_before=str(t + lifetime),
        nonce="0x" + _nonce_bytes(nonce).hex(),
    )
    signature = private.sign_recoverable(authorization_digest(domain, auth), hasher=None)
    signature = signature[:64] + bytes([signature[64] + 27])
    return ExactEvmPayload(signature="0x" + signature.hex(), authorization=auth)


def _signature_bytes(signature: bytes | str) -> bytes | None:
    if isinstance(signature, bytes | bytearray):
        return bytes(signature)
    try:
        return bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        return None


def normalize_signature(signature: bytes | str) -> bytes:
    """65-byte r‖s‖v with v as 27/28, the form token contracts' ``ecrecover`` expects."""
    raw = _signature_bytes(signature)
    if raw is None or len(raw) != 65 or raw[64] not in (0, 1, 27, 28):
        raise ValueError("not a 65-byte ECDSA signature with v in {0, 1, 27, 28}")
    return raw if raw[64] >= 27 else raw[:64] + bytes([raw[64] + 27])


def recover_signer(digest: bytes, signature: bytes | str) -> str | None:
    """The checksum address that signed ``digest``, or None (bad length, v, s, or point).

    The token contracts' rule (:data:`a402.evm.ecdsa.EIP3009_TOKEN`): v in {0, 1, 27,
    28}, high s refused (EIP-2), since accepting one would let anyone mint a second
    valid signature from a first.
    """
    raw = _signature_bytes(signature)
    if raw is None:
        return None
    address = recover_address(digest, raw, policy=EIP3009_TOKEN)
    return None if address is None else to_checksum(address)


# ----------------------------------------------------------------------- builders


def build_payment_payload(
    requirements: PaymentRequirements,
    key: SigningKey,
    resource: ResourceInfo | None = None,
    extensions: dict[str, Any] | None = None,
    *,
    now: int | None = None,
    nonce: bytes | str | None = None,
    valid_for: int | None = None,
) -> PaymentPayload:
    """A signed v2 payload; ``accepted`` is the very requirements object, unknown fields and all."""
    signed = sign_authorization(key, requirements, now=now, nonce=nonce, valid_for=valid_for)
    return PaymentPayload(
        resource=resource,
        accepted=requirements,
        payload=signed.to_wire(),
        extensions=extensions,
    )


def build_payment_payload_v1(
    requirements: PaymentRequirementsV1,
    key: SigningKey,
    *,
    now: int | None = None,
    nonce: bytes | str | None = None,
    valid_for: int | None = None,
) -> PaymentPayloadV1:
    """A signed v1 payload (``X-PAYMENT``): scheme and network echoed at the top level."""
    signed = sign_authorization(
        key, requirements_v1_to_v2(requirements), now=now, nonce=nonce, valid_for=valid_for
    )
    return PaymentPayloadV1(
        scheme=requirements.scheme, network=requirements.network, payload=signed.to_wire()
    )
