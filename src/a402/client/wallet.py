"""The payer's key, what it is allowed to sign, and the signing itself.

The allow-lists exist because of x402 issue #2991: a client that cannot match
the server's network silently fell back to ``accepts[0]`` and paid on a chain
its user never chose. Here a requirement outside the lists is simply not
payable, and ``sign`` re-checks it, so no caller (ours or a future one) can
route around the check by signing directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from a402.client import errors
from a402.client.budget import asset_key
from a402.evm.address import is_address
from a402.exact.eip3009 import (
    SCHEME_EXACT,
    TRANSFER_METHOD_EIP3009,
    address_of,
    build_payment_payload,
    build_payment_payload_v1,
)
from a402.exact.upto import (
    SCHEME_UPTO,
    TRANSFER_METHOD_PERMIT2,
    build_upto_payload,
    facilitator_of,
)
from a402.wire.convert import to_v2_requirements
from a402.wire.errors import WireError
from a402.wire.networks import is_evm, to_caip2
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequirements,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

KNOWN_PAYMENT_FLOWS: Final = (None, "authorization", "upfront", "escrow")
"""``extra.paymentFlow`` values whose payload is the plain EIP-3009 authorization
(they only change *when* the server settles). ``None`` and ``"authorization"``
settle after the resource is served, which is what a payer wants."""


def private_key_bytes(key: str | bytes | LocalAccount) -> bytes:
    """The 32 bytes of a hex key (``0x`` optional, whitespace ignored), of raw bytes, or of
    an eth_account LocalAccount; ValueError otherwise. (No eth_account needed: signing an
    ``exact`` payment is coincurve's, see :func:`a402.exact.eip3009.sign_authorization`.)"""
    if isinstance(key, str):
        text = "".join(key.split()).removeprefix("0x")
        if len(text) != 64:
            raise ValueError("private key must be 32 bytes of hex (64 hex digits)")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError("private key is not hex") from None
    elif isinstance(key, bytes | bytearray) and len(key) == 32:
        raw = bytes(key)
    elif isinstance(getattr(key, "key", None), bytes | bytearray):  # a LocalAccount
        raw = bytes(key.key)  # type: ignore[union-attr]
    else:
        raise ValueError("private key must be 32 bytes, 64 hex digits, or a LocalAccount")
    address_of(raw)  # ValueError if it is not a valid secp256k1 secret (0, or >= N)
    return raw


def load_account(key: str | bytes | LocalAccount) -> LocalAccount:
    """A LocalAccount from a hex key (``0x`` optional, whitespace ignored) or raw bytes."""
    from eth_account import Account
    from eth_account.signers.local import LocalAccount

    if isinstance(key, LocalAccount):
        return key
    return Account.from_key(private_key_bytes(key))


class Wallet:
    """Signs x402 ``exact`` (EIP-3009) payments, only where the caller allowed.

    ``networks``: CAIP-2 ids or legacy v1 names (``"base-sepolia"``); None means
    any EVM network. ``assets``: token addresses; None means any token (then
    the per-request maximum is the only thing bounding what a server can ask).
    """

    def __init__(
        self,
        key: str | bytes | LocalAccount,
        *,
        networks: Iterable[str] | None = None,
        assets: Iterable[str] | None = None,
    ) -> None:
        self._key = private_key_bytes(key)
        self._address = address_of(self._key)
        self.networks = None if networks is None else frozenset(to_caip2(n) for n in networks)
        self.assets = None if assets is None else frozenset(asset_key(a) for a in assets)

    @property
    def address(self) -> str:
        return self._address

    def sign_evidence(self, digest: bytes) -> bytes:
        """Sign an evidence record's hash (:func:`a402.mandate.evidence.record_hash`: a
        domain-separated keccak, never a transaction's or typed data's digest)."""
        from a402.crypto.authorization import EcdsaSigner

        return EcdsaSigner(self._key).sign_digest(digest)

    def __repr__(self) -> str:  # never the key
        return f"Wallet({self.address}, networks={self.networks}, assets={self.assets})"

    def refusal(self, req: AnyPaymentRequirements) -> tuple[str, str] | None:
        """Why this requirement must not be signed, as (reason, detail); None if it may."""
        try:
            v2 = to_v2_requirements(req)
        except WireError as e:  # e.g. a v1 network name nobody knows
            return errors.NETWORK_NOT_ALLOWED, e.message or e.reason
        upto = v2.scheme == SCHEME_UPTO
        if upto and isinstance(req, PaymentRequirementsV1):
            return errors.UNSUPPORTED_SCHEME, "upto is an x402 v2 scheme"
        if v2.scheme != SCHEME_EXACT and not upto:
            return errors.UNSUPPORTED_SCHEME, f"scheme {v2.scheme!r:.40}"
        if not is_evm(v2.network):
            return errors.NETWORK_NOT_ALLOWED, f"{v2.network!r:.60} is not an EVM network"
        if self.networks is not None and v2.network not in self.networks:
            return errors.NETWORK_NOT_ALLOWED, f"{v2.network} is not in the allowed networks"
        if self.assets is not None and asset_key(v2.asset) not in self.assets:
            return errors.ASSET_NOT_ALLOWED, f"{v2.asset:.60} is not in the allowed assets"
        return _signable_upto(v2) if upto else _signable(v2)

    def sign(
        self,
        req: AnyPaymentRequirements,
        *,
        resource: ResourceInfo | None = None,
        extensions: dict[str, Any] | None = None,
        valid_for: int | None = None,
    ) -> AnyPaymentPayload:
        """A signed payload for ``req`` as received (v1 or v2), or ``PaymentRefused``.

        v2 payloads echo ``req`` verbatim as ``accepted`` and carry ``resource``
        and ``extensions``; v1 payloads have neither.
        """
        if (refused := self.refusal(req)) is not None:
            raise errors.PaymentRefused(refused[0], refused[1], offered=[req])
        if isinstance(req, PaymentRequirementsV1):
            return build_payment_payload_v1(req, self._key, valid_for=valid_for)
        if req.scheme == SCHEME_UPTO:
            # A Permit2 authorization of at most req.amount (which the caller has checked
            # against its limits), for this payee and the facilitator the offer names.
            return build_upto_payload(req, self._key, resource=resource,
                                      extensions=extensions, valid_for=valid_for)
        return build_payment_payload(
            req, self._key, resource=resource, extensions=extensions, valid_for=valid_for
        )


def _signable_upto(req: PaymentRequirements) -> tuple[str, str] | None:
    """What the upto (Permit2) signer needs, checked up front."""
    extra = req.extra or {}
    method = extra.get("assetTransferMethod", TRANSFER_METHOD_PERMIT2)
    if method != TRANSFER_METHOD_PERMIT2:
        return errors.UNSUPPORTED_TRANSFER_METHOD, f"assetTransferMethod {method!r:.40}"
    if not is_address(req.asset) or not is_address(req.pay_to):
        return errors.INVALID_REQUIREMENTS, "asset and payTo must be EVM addresses"
    try:
        facilitator_of(req)
        req.amount_int  # noqa: B018 - parsing is the check
    except WireError as e:
        return errors.INVALID_REQUIREMENTS, e.message
    return None


def _signable(req: PaymentRequirements) -> tuple[str, str] | None:
    """What the EIP-3009 signer needs, checked up front so a bad offer is a rejection."""
    extra = req.extra or {}
    method = extra.get("assetTransferMethod", TRANSFER_METHOD_EIP3009)
    if method != TRANSFER_METHOD_EIP3009:
        return errors.UNSUPPORTED_TRANSFER_METHOD, f"assetTransferMethod {method!r:.40}"
    if extra.get("paymentFlow") not in KNOWN_PAYMENT_FLOWS:
        return errors.UNSUPPORTED_PAYMENT_FLOW, f"paymentFlow {extra.get('paymentFlow')!r:.40}"
    if not isinstance(extra.get("name"), str) or not isinstance(extra.get("version"), str):
        return errors.MISSING_EIP712_DOMAIN, "extra needs the token's EIP-712 name and version"
    if not is_address(req.asset) or not is_address(req.pay_to):
        return errors.INVALID_REQUIREMENTS, "asset and payTo must be EVM addresses"
    try:
        req.amount_int  # noqa: B018 - parsing is the check
    except WireError as e:
        return errors.INVALID_REQUIREMENTS, e.message
    return None
