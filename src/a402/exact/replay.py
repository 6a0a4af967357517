"""The replay ledger's vocabulary (pure): what identifies a payment, and what the ledger answers.

The ledgers themselves (memory, SQL) are I/O and live in :mod:`a402.provider.ledger`,
which explains the states; these names are here, below the provider, so the one
server-side ``exact`` flow (:mod:`a402.exact.serve`) can speak of admissions
without loading a database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from a402.evm.address import address_key
from a402.wire.x402 import SettleResponse


class LedgerState(StrEnum):
    IN_FLIGHT = "in_flight"
    PENDING = "pending"
    SETTLED = "settled"


class Admission(StrEnum):
    FRESH = "fresh"
    """Never seen (or released): verify, serve, settle."""
    RESUMED = "resumed"
    """The same payload after ``settlement_pending`` or a lost settle answer: settle again."""
    REFUSED = "refused"
    """In use by another request right now, or already sold a response."""
    OTHER_TERMS = "other_terms"
    """The same pending payload, sent for other terms than it was admitted for: refused,
    and the entry stays PENDING for a retry on the original terms."""


@dataclass(frozen=True)
class PaymentKey:
    """The identity of one EIP-3009 authorization; addresses and nonce compared lowercase."""

    network: str
    asset: str
    payer: str
    nonce: str

    @classmethod
    def of(cls, network: str, asset: str, payer: str, nonce: str) -> PaymentKey:
        return cls(network, address_key(asset), address_key(payer), nonce.lower())


@dataclass(frozen=True)
class Admit:
    admission: Admission
    state: LedgerState | None = None
    """For a refusal: the state that caused it."""
    settlement: SettleResponse | None = None
    """For a refusal of a sold or pending payment: its last known receipt."""


def payment_fingerprint(signature: str, authorization: dict[str, Any]) -> str:
    """A digest of what was signed and the signature, independent of header encoding."""
    return _digest({"signature": signature.lower(), "authorization": authorization})


def payment_terms(*, scheme: str, network: str, amount: str, asset: str, pay_to: str,
                  resource: str = "") -> str:
    """A digest of the terms a payment is admitted for: its money terms (addresses compared
    lowercase) and the resource it buys."""
    return _digest({"scheme": scheme, "network": network, "amount": str(amount),
                    "asset": address_key(asset), "payTo": address_key(pay_to),
                    "resource": resource})


def _digest(value: dict[str, Any]) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
