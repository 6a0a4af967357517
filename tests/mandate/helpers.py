"""Building signed mandates for tests: an owner key, an agent key, sensible limits."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from eth_account import Account

from a402.crypto.authorization import EcdsaSigner
from a402.mandate import Domain, Mandate, SignedMandate, sign_mandate

USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAYEE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
NETWORK = "eip155:84532"
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DOMAIN = Domain(84532, REGISTRY)


class Keys:
    def __init__(self) -> None:
        self.owner = Account.create()
        self.agent = Account.create()
        self.owner_signer = EcdsaSigner(bytes(self.owner.key))


def make_mandate(keys: Keys, **overrides: Any) -> Mandate:
    now = int(time.time())
    fields: dict[str, Any] = dict(
        owner=keys.owner.address, agent=keys.agent.address,
        max_per_payment=10_000, budget=1_000_000, valid_after=now - 60,
        valid_before=now + 3600, nonce=os.urandom(32), networks=(NETWORK,), assets=(USDC,),
        schemes=("exact", "a402"),
    )
    fields.update(overrides)
    return Mandate(**fields)


def signed(keys: Keys, domain: Domain = DOMAIN, **overrides: Any) -> SignedMandate:
    return sign_mandate(make_mandate(keys, **overrides), domain, keys.owner_signer.sign_digest)


def resign(keys: Keys, s: SignedMandate, **overrides: Any) -> SignedMandate:
    return sign_mandate(replace(s.mandate, **overrides), s.domain, keys.owner_signer.sign_digest)
