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
"""

from a402.client.auth import X402Auth, async_paying_client, paying_auth, paying_client
from a402.client.budget import Budget, Reservation
from a402.client.choose import Offer, choose, evaluate
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
