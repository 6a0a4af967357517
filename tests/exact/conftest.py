from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.wire.x402 import PaymentRequirements

NOW = 1_750_000_000
USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


def make_requirements(**over: object) -> PaymentRequirements:
    base: dict[str, object] = {
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "10000",
        "asset": USDC_BASE_SEPOLIA,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
    }
    base.update(over)
    return PaymentRequirements.model_validate(base)


@pytest.fixture
def payer() -> LocalAccount:
    return Account.from_key("0x" + "4c" * 32)


@pytest.fixture
def other() -> LocalAccount:
    return Account.from_key("0x" + "5d" * 32)


@pytest.fixture
def requirements() -> PaymentRequirements:
    return make_requirements()
