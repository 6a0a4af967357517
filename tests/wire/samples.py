"""Wire-form samples shared by the wire tests (plain dicts, as a peer would send them)."""

from __future__ import annotations

from typing import Any

USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"


def requirements_v2(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "10000",
        "asset": USDC_BASE_SEPOLIA,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
    }
    base.update(over)
    return base


def requirements_v1(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scheme": "exact",
        "network": "base-sepolia",
        "maxAmountRequired": "10000",
        "resource": "https://api.example.com/premium-data",
        "description": "Premium data",
        "mimeType": "application/json",
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "asset": USDC_BASE_SEPOLIA,
        "extra": {"name": "USDC", "version": "2"},
    }
    base.update(over)
    return base


def inner_payload() -> dict[str, Any]:
    return {
        "signature": "0x" + "11" * 65,
        "authorization": {
            "from": PAYER,
            "to": PAY_TO,
            "value": "10000",
            "validAfter": "1740672089",
            "validBefore": "1740672154",
            "nonce": "0x" + "ab" * 32,
        },
    }


def payment_required_v2(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "x402Version": 2,
        "error": "PAYMENT-SIGNATURE header is required",
        "resource": {
            "url": "https://api.example.com/premium-data",
            "description": "Premium data",
            "mimeType": "application/json",
        },
        "accepts": [requirements_v2()],
        "extensions": {},
    }
    base.update(over)
    return base


def payment_payload_v2(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "x402Version": 2,
        "resource": {"url": "https://api.example.com/premium-data"},
        "accepted": requirements_v2(),
        "payload": inner_payload(),
    }
    base.update(over)
    return base


def payment_payload_v1(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "x402Version": 1,
        "scheme": "exact",
        "network": "base-sepolia",
        "payload": inner_payload(),
    }
    base.update(over)
    return base
