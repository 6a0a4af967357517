"""A contract wallet (EIP-1271) pays: its owner's key signs, the wallet's code says yes.

The signature does not recover to ``from``, so the offline check cannot decide;
the facilitator must ask the chain, and must still refuse a stranger's signature.
"""

from __future__ import annotations

import os
import time

from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.chain.tx import contract_at, deploy_contract, transact
from a402.exact.eip3009 import (
    Authorization,
    ExactEvmPayload,
    authorization_digest,
    domain_from_requirements,
)
from a402.facilitator.core import Facilitator
from a402.wire import errors as wire_errors
from a402.wire.x402 import PaymentPayload
from tests.facilitator.helpers import requirement


def wallet_payment(stack: Manifest, wallet: str, signer: LocalAccount, amount: int) -> dict:
    req = requirement(stack, amount)
    now = int(time.time())
    auth = Authorization.model_validate({
        "from": wallet, "to": req.pay_to, "value": str(amount), "validAfter": str(now - 600),
        "validBefore": str(now + 300), "nonce": "0x" + os.urandom(32).hex()})
    digest = authorization_digest(domain_from_requirements(req), auth)
    signature = bytes(signer.unsafe_sign_hash(digest).signature)
    payload = PaymentPayload(accepted=req, payload=ExactEvmPayload(
        signature="0x" + signature.hex(), authorization=auth).to_wire())
    return {"x402Version": 2, "paymentPayload": payload.to_wire(),
            "paymentRequirements": req.to_wire()}


def test_a_contract_wallet_pays_with_its_owners_signature(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator
) -> None:
    owner = Account.create()
    deployer = anvil_chain.accounts[0]
    wallet = deploy_contract(anvil_chain, deployer, "ERC1271Wallet", owner.address).address
    token = contract_at(anvil_chain, "TestUSDC", dev_stack.token.address)
    transact(anvil_chain, deployer, token.functions.mint(wallet, 5_000))

    forged = wallet_payment(dev_stack, wallet, Account.create(), 1_000)
    assert facilitator.verify(forged).invalid_reason == wire_errors.INVALID_SIGNATURE
    assert facilitator.settle(forged).error_reason == wire_errors.INVALID_SIGNATURE

    body = wallet_payment(dev_stack, wallet, owner, 1_000)
    verdict = facilitator.verify(body)
    assert verdict.is_valid and verdict.payer == wallet
    assert facilitator.settle(body).success
    assert token_balance(anvil_chain, dev_stack.token.address, wallet) == 4_000
