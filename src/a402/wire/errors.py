"""One exception type and the machine-readable reason codes every layer reports.

x402 peers match on ``invalidReason`` / ``errorReason`` strings, and the SDKs do
not agree on their spelling (see reference/x402-wire.md §3.3). We speak the
official *Python* SDK's dialect so that a Python resource server or client in
front of us sees the codes it already knows. Codes the Python SDK has no
spelling for come from the x402 specification; the few that exist in neither
are marked as a402 additions.
"""

from __future__ import annotations

from typing import Final

# --- generic (x402 specification §9) -------------------------------------------------
INVALID_PAYLOAD: Final = "invalid_payload"
INVALID_PAYMENT_REQUIREMENTS: Final = "invalid_payment_requirements"
INVALID_X402_VERSION: Final = "invalid_x402_version"
INVALID_NETWORK: Final = "invalid_network"
UNEXPECTED_VERIFY_ERROR: Final = "unexpected_verify_error"
UNEXPECTED_SETTLE_ERROR: Final = "unexpected_settle_error"

# --- scheme / network routing (Python SDK spellings) ---------------------------------
UNSUPPORTED_SCHEME: Final = "unsupported_scheme"
NETWORK_MISMATCH: Final = "network_mismatch"
FAILED_TO_GET_NETWORK_CONFIG: Final = "invalid_exact_evm_failed_to_get_network_config"

# --- exact / EVM / EIP-3009 offline checks (Python SDK spellings) --------------------
MISSING_EIP712_DOMAIN: Final = "missing_eip712_domain"
INVALID_SIGNATURE: Final = "invalid_exact_evm_payload_signature"
RECIPIENT_MISMATCH: Final = "invalid_exact_evm_payload_recipient_mismatch"
AUTHORIZATION_VALUE_MISMATCH: Final = "invalid_exact_evm_payload_authorization_value_mismatch"
VALID_BEFORE_EXPIRED: Final = "invalid_exact_evm_payload_authorization_valid_before"
VALID_AFTER_FUTURE: Final = "invalid_exact_evm_payload_authorization_valid_after"
FAILED_TO_VERIFY_SIGNATURE: Final = "invalid_exact_evm_failed_to_verify_signature"
UNDEPLOYED_SMART_WALLET: Final = "invalid_exact_evm_payload_undeployed_smart_wallet"

# --- exact / EVM chain-side outcomes (Python SDK spellings; raised by the I/O layer) --
NONCE_ALREADY_USED: Final = "invalid_exact_evm_nonce_already_used"
INSUFFICIENT_BALANCE: Final = "invalid_exact_evm_insufficient_balance"
TOKEN_NAME_MISMATCH: Final = "invalid_exact_evm_token_name_mismatch"
TOKEN_VERSION_MISMATCH: Final = "invalid_exact_evm_token_version_mismatch"
EIP3009_NOT_SUPPORTED: Final = "invalid_exact_evm_eip3009_not_supported"
TRANSACTION_SIMULATION_FAILED: Final = "invalid_exact_evm_transaction_simulation_failed"
TRANSACTION_FAILED: Final = "transaction_failed"
SETTLEMENT_PENDING: Final = "settlement_pending"

# --- a402 additions (no spelling in the SDKs or the spec) ----------------------------
# The payload's echoed ``accepted`` disagrees with the requirements on
# amount/asset/payTo while its signed authorization matches them. The official
# Python facilitator does not look at the echo (it would accept); its resource
# server rejects such a payload before verify with the free text "No matching
# payment requirements". A payment whose *authorization* is for other terms gets
# the SDK's own reason instead (recipient, value, or signature), see exact/checks.py.
ACCEPTED_MISMATCH: Final = "accepted_requirements_mismatch"
# The authorization is already journaled for (claimed or settled by) a request
# naming another resource: one payment buys one resource, so a second resource
# must not be handed the first one's settlement. A refinement of
# ``invalid_exact_evm_nonce_already_used`` (that code for the same resource),
# hence its prefix: a peer matching on the prefix reads it as "nonce used".
NONCE_USED_FOR_ANOTHER_RESOURCE: Final = "invalid_exact_evm_nonce_already_used_for_another_resource"
# A body or header over the bounds every decoder applies (see a402.wire.jsonstrict):
# too many bytes (HTTP 413), nested too deep, or a number too long (HTTP 400).
REQUEST_TOO_LARGE: Final = "request_too_large"
JSON_TOO_DEEP: Final = "json_too_deep"
JSON_NUMBER_TOO_LONG: Final = "json_number_too_long"
# A 402 without a decodable x402 PaymentRequired (header or v1 body): what the paying
# client refuses it with, and what the vault reads as "no offer" (a402.wire.required).
MALFORMED_PAYMENT_REQUIRED: Final = "malformed_payment_required"


class WireError(Exception):
    """A protocol-level rejection that carries its reason code with it.

    Carrying ``reason`` on the exception lets any layer turn a failure into an
    ``invalidReason`` / ``errorReason`` without re-deriving the code from text.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"WireError({self.reason!r}, {self.message!r})"
