"""Building real, signed facilitator requests for the tests."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.exact.eip3009 import build_payment_payload
from a402.wire.x402 import PaymentRequirements


def requirement(stack: Manifest, amount: int = 1_000, **overrides: Any) -> PaymentRequirements:
    fields: dict[str, Any] = {
        "scheme": "exact", "network": stack.network, "amount": str(amount),
        "asset": stack.token.address, "payTo": stack.account("provider").address,
        "maxTimeoutSeconds": 60, "extra": stack.token.eip712_extra(),
    }
    return PaymentRequirements.model_validate(fields | overrides)


def funded_payer(chain: Chain, stack: Manifest, funds: int) -> LocalAccount:
    """A fresh key holding ``funds`` token units, on a chain of the test's own."""
    payer = Account.create()
    token = contract_at(chain, "TestUSDC", stack.token.address)
    transact(chain, chain.accounts[0], token.functions.mint(payer.address, funds))
    return payer


def request_body(
    payer: LocalAccount, req: PaymentRequirements, *, signed_for: PaymentRequirements | None = None,
    **sign_options: Any,
) -> dict[str, Any]:
    """A /verify or /settle body; ``signed_for`` signs other terms than those sent."""
    payload = build_payment_payload(signed_for or req, payer.key, **sign_options)
    wire = payload.to_wire()
    wire["accepted"] = req.to_wire()
    return {"x402Version": 2, "paymentPayload": wire, "paymentRequirements": req.to_wire()}


def with_authorization(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same body with authorization fields changed after signing (a tamper)."""
    payload = body["paymentPayload"]
    auth = payload["payload"]["authorization"] | {k: str(v) for k, v in changes.items()}
    return body | {"paymentPayload": payload | {"payload": payload["payload"] | {
        "authorization": auth}}}
