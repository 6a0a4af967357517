"""Our reason codes must be spelled exactly as the official Python SDK spells them."""

from __future__ import annotations

import pytest
from x402.mechanisms.evm import constants as official

from a402.wire import errors
from a402.wire.errors import WireError


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("INVALID_SIGNATURE", "ERR_INVALID_SIGNATURE"),
        ("RECIPIENT_MISMATCH", "ERR_RECIPIENT_MISMATCH"),
        ("AUTHORIZATION_VALUE_MISMATCH", "ERR_AUTHORIZATION_VALUE_MISMATCH"),
        ("VALID_BEFORE_EXPIRED", "ERR_VALID_BEFORE_EXPIRED"),
        ("VALID_AFTER_FUTURE", "ERR_VALID_AFTER_FUTURE"),
        ("MISSING_EIP712_DOMAIN", "ERR_MISSING_EIP712_DOMAIN"),
        ("NETWORK_MISMATCH", "ERR_NETWORK_MISMATCH"),
        ("UNSUPPORTED_SCHEME", "ERR_UNSUPPORTED_SCHEME"),
        ("NONCE_ALREADY_USED", "ERR_NONCE_ALREADY_USED"),
        ("INSUFFICIENT_BALANCE", "ERR_INSUFFICIENT_BALANCE"),
        ("TRANSACTION_FAILED", "ERR_TRANSACTION_FAILED"),
        ("SETTLEMENT_PENDING", "ERR_SETTLEMENT_PENDING"),
        ("FAILED_TO_GET_NETWORK_CONFIG", "ERR_FAILED_TO_GET_NETWORK_CONFIG"),
        ("FAILED_TO_VERIFY_SIGNATURE", "ERR_FAILED_TO_VERIFY_SIGNATURE"),
        ("UNDEPLOYED_SMART_WALLET", "ERR_UNDEPLOYED_SMART_WALLET"),
        ("TOKEN_NAME_MISMATCH", "ERR_TOKEN_NAME_MISMATCH"),
        ("TOKEN_VERSION_MISMATCH", "ERR_TOKEN_VERSION_MISMATCH"),
        ("EIP3009_NOT_SUPPORTED", "ERR_EIP3009_NOT_SUPPORTED"),
        ("TRANSACTION_SIMULATION_FAILED", "ERR_TRANSACTION_SIMULATION_FAILED"),
    ],
)
def test_spelling_matches_official_python_sdk(ours: str, theirs: str) -> None:
    assert getattr(errors, ours) == getattr(official, theirs)


def test_spec_codes() -> None:
    assert errors.INVALID_PAYLOAD == "invalid_payload"
    assert errors.INVALID_PAYMENT_REQUIREMENTS == "invalid_payment_requirements"
    assert errors.INVALID_X402_VERSION == "invalid_x402_version"
    assert errors.INVALID_NETWORK == "invalid_network"
    assert errors.UNEXPECTED_VERIFY_ERROR == "unexpected_verify_error"
    assert errors.UNEXPECTED_SETTLE_ERROR == "unexpected_settle_error"


def test_wire_error_carries_reason_and_message() -> None:
    err = WireError("invalid_payload", "bad base64")
    assert err.reason == "invalid_payload"
    assert err.message == "bad base64"
    assert str(err) == "invalid_payload: bad base64"
    assert str(WireError("network_mismatch")) == "network_mismatch"
