"""The paying side of x402 ``exact``: an httpx integration, a wallet, a budget, ``a402 pay``.

    from a402.client import paying_client, token_units_max, Budget

    with paying_client(key, max_per_request=token_units_max("0.01"),
                       budget=Budget({usdc: 1_000_000}), networks=["eip155:8453"]) as http:
        r = http.get("https://api.example.com/paid")
        print(r.json(), receipt_of(r))

It pays any x402 server, v2 (``PAYMENT-REQUIRED`` → ``PAYMENT-SIGNATURE``) or
v1 (402 JSON body → ``X-PAYMENT``), never above the per-request maximum or the
total budget, and never on a network or asset the caller did not allow.

``vault_paying_client(vault_url, key, max_per_request=…)`` pays through a
Liquidity Vault instead (A402 channels; see :mod:`a402.client.vault`).

Every name loads its module on first use (:mod:`a402.lazy`), so ``a402 pay`` loads
the exact path only, not the vault client or eth_account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Loaded now: the function ``choose`` has its module's name, and a submodule loaded later
# would otherwise be what ``a402.client.choose`` names.
from a402.client.choose import choose
from a402.lazy import lazy_attributes

if TYPE_CHECKING:
    from a402.client.auth import X402Auth, async_paying_client, paying_auth, paying_client
    from a402.client.budget import Budget, Reservation
    from a402.client.choose import Offer, evaluate
    from a402.client.errors import (
        BUDGET_EXHAUSTED,
        MALFORMED_PAYMENT_REQUIRED,
        NO_ACCEPTABLE_REQUIREMENT,
        PRICE_ABOVE_MAXIMUM,
        SIGNING_FAILED,
        BudgetExceeded,
        PaymentError,
        PaymentRefused,
        Rejection,
    )
    from a402.client.limits import (
        MaxAmount,
        fixed_max,
        per_asset_max,
        to_atomic,
        token_units_max,
    )
    from a402.client.permit2 import approve_permit2
    from a402.client.records import (
        PAYMENT_EXTENSION,
        Payment,
        PaymentStatus,
        payment_of,
        payment_required_of,
        receipt_of,
    )
    from a402.client.vault import (
        AsyncVaultClient,
        ExpectedVault,
        VaultCallError,
        VaultClient,
        VaultResult,
        vault_payment_of,
    )
    from a402.client.vault_transport import async_vault_paying_client, vault_paying_client
    from a402.client.wallet import Wallet, load_account

_MODULE_OF = {
    "approve_permit2": "a402.client.permit2",
    "X402Auth": "a402.client.auth",
    "async_paying_client": "a402.client.auth",
    "paying_auth": "a402.client.auth",
    "paying_client": "a402.client.auth",
    "Budget": "a402.client.budget",
    "Reservation": "a402.client.budget",
    "Offer": "a402.client.choose",
    "evaluate": "a402.client.choose",
    "BUDGET_EXHAUSTED": "a402.client.errors",
    "MALFORMED_PAYMENT_REQUIRED": "a402.client.errors",
    "NO_ACCEPTABLE_REQUIREMENT": "a402.client.errors",
    "PRICE_ABOVE_MAXIMUM": "a402.client.errors",
    "SIGNING_FAILED": "a402.client.errors",
    "BudgetExceeded": "a402.client.errors",
    "PaymentError": "a402.client.errors",
    "PaymentRefused": "a402.client.errors",
    "Rejection": "a402.client.errors",
    "MaxAmount": "a402.client.limits",
    "fixed_max": "a402.client.limits",
    "per_asset_max": "a402.client.limits",
    "to_atomic": "a402.client.limits",
    "token_units_max": "a402.client.limits",
    "PAYMENT_EXTENSION": "a402.client.records",
    "Payment": "a402.client.records",
    "PaymentStatus": "a402.client.records",
    "payment_of": "a402.client.records",
    "payment_required_of": "a402.client.records",
    "receipt_of": "a402.client.records",
    "AsyncVaultClient": "a402.client.vault",
    "ExpectedVault": "a402.client.vault",
    "VaultCallError": "a402.client.vault",
    "VaultClient": "a402.client.vault",
    "VaultResult": "a402.client.vault",
    "vault_payment_of": "a402.client.vault",
    "async_vault_paying_client": "a402.client.vault_transport",
    "vault_paying_client": "a402.client.vault_transport",
    "Wallet": "a402.client.wallet",
    "load_account": "a402.client.wallet",
}

__all__ = [
    "BUDGET_EXHAUSTED",
    "MALFORMED_PAYMENT_REQUIRED",
    "NO_ACCEPTABLE_REQUIREMENT",
    "PAYMENT_EXTENSION",
    "PRICE_ABOVE_MAXIMUM",
    "SIGNING_FAILED",
    "AsyncVaultClient",
    "Budget",
    "BudgetExceeded",
    "ExpectedVault",
    "MaxAmount",
    "Offer",
    "Payment",
    "PaymentError",
    "PaymentRefused",
    "PaymentStatus",
    "Rejection",
    "Reservation",
    "VaultCallError",
    "VaultClient",
    "VaultResult",
    "Wallet",
    "X402Auth",
    "approve_permit2",
    "async_paying_client",
    "async_vault_paying_client",
    "choose",
    "evaluate",
    "fixed_max",
    "load_account",
    "paying_auth",
    "paying_client",
    "payment_of",
    "payment_required_of",
    "per_asset_max",
    "receipt_of",
    "to_atomic",
    "token_units_max",
    "vault_paying_client",
    "vault_payment_of",
]


__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
