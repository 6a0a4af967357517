"""The x402 ``exact`` scheme on EVM via EIP-3009: pure signing, hashing and offline checks.

Chain-side checks (nonce, balance, EIP-1271) and settlement live in the facilitator.
"""

from a402.exact.checks import ExactCheck, check_exact
from a402.exact.eip3009 import (
    Authorization,
    Eip712Domain,
    ExactEvmPayload,
    address_of,
    authorization_digest,
    build_payment_payload,
    build_payment_payload_v1,
    domain_from_requirements,
    normalize_signature,
    recover_signer,
    sign_authorization,
)

__all__ = [
    "Authorization",
    "Eip712Domain",
    "ExactCheck",
    "ExactEvmPayload",
    "address_of",
    "authorization_digest",
    "build_payment_payload",
    "build_payment_payload_v1",
    "check_exact",
    "domain_from_requirements",
    "normalize_signature",
    "recover_signer",
    "sign_authorization",
]
