"""x402 ``upto`` between the official SDK and a402's facilitator, on anvil.

The SDK's upto client signs Permit2 authorizations; a402's facilitator (through the
SDK's own HTTP facilitator client) verifies them and settles the amount used, at
most the signed maximum, through our Permit2 and upto proxy compiled from source.
Every test asserts token balances and, where nothing may move, that the facilitator
sent no transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from x402.http import FacilitatorConfig, HTTPFacilitatorClient

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.chain.upto_settle import UPTO_PROXY_ADDRESS, permit2_nonce_used
from a402.facilitator.core import Facilitator
from tests.interop.official_upto import (
    fresh_account,
    sdk_upto_payload,
    upto_payer,
    upto_requirements,
)

pytestmark = pytest.mark.anvil

MAXIMUM = 50_000
FUNDS = 1_000_000


def _sent(chain: Chain, address: str) -> int:
    return int(chain.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_sdk_payer_is_charged_what_was_used_below_its_maximum_once(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    kinds = client.get_supported().kinds
    upto = [k for k in kinds if k.scheme == "upto" and k.network == dev_stack.network]
    assert upto and upto[0].extra == {"facilitatorAddress": facilitator.signer.address}

    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    requirements = upto_requirements(dev_stack, pay_to, MAXIMUM, facilitator.signer.address)
    payload = await sdk_upto_payload(payer, requirements)

    verified = await client.verify(payload, requirements)
    assert verified.is_valid, verified
    used = requirements.model_copy(update={"amount": "12345"})
    settled = await client.settle(payload, used)
    assert settled.success, settled
    assert settled.amount == "12345"
    receipt = anvil_chain.w3.eth.get_transaction_receipt(settled.transaction)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and receipt["to"] == UPTO_PROXY_ADDRESS
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 12345
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 12345

    again = await client.settle(payload, used)  # the resource server's retry: same answer
    assert again.success and again.transaction == settled.transaction
    # Asked less than it was settled for (as after a copy of the header was settled
    # first): no second charge, the answer is the settlement that was made.
    second = await client.settle(payload, requirements.model_copy(update={"amount": "1"}))
    assert second.success and second.amount == "12345"
    assert second.transaction == settled.transaction
    more = await client.settle(payload, requirements.model_copy(update={"amount": "12346"}))
    assert not more.success and more.error_reason == "invalid_exact_evm_nonce_already_used"
    reverify = await client.verify(payload, requirements)  # a second response: refused
    assert not reverify.is_valid
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 12345
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 12345


@pytest.mark.anyio
async def test_a_zero_charge_sends_no_transaction_and_spends_the_authorization(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    requirements = upto_requirements(dev_stack, pay_to, MAXIMUM, facilitator.signer.address)
    payload = await sdk_upto_payload(payer, requirements)
    assert (await client.verify(payload, requirements)).is_valid
    sent_before = _sent(anvil_chain, facilitator.signer.address)

    zero = requirements.model_copy(update={"amount": "0"})
    settled = await client.settle(payload, zero)
    assert settled.success and settled.transaction == "" and settled.amount == "0"
    assert _sent(anvil_chain, facilitator.signer.address) == sent_before
    nonce = int(payload.payload["permit2Authorization"]["nonce"])
    assert not permit2_nonce_used(anvil_chain, payer.address, nonce)
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0
    # Journaled: the same authorization cannot be charged afterwards.
    later = await client.settle(payload, requirements.model_copy(update={"amount": "100"}))
    assert not later.success
    assert _sent(anvil_chain, facilitator.signer.address) == sent_before
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0


@pytest.mark.anyio
async def test_a_charge_above_the_authorised_maximum_is_refused_and_nothing_moves(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    requirements = upto_requirements(dev_stack, pay_to, MAXIMUM, facilitator.signer.address)
    payload = await sdk_upto_payload(payer, requirements)
    sent_before = _sent(anvil_chain, facilitator.signer.address)

    over = await client.settle(payload, requirements.model_copy(
        update={"amount": str(MAXIMUM + 1)}))
    assert not over.success
    assert over.error_reason == "invalid_upto_evm_payload_settlement_exceeds_amount"
    assert _sent(anvil_chain, facilitator.signer.address) == sent_before
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0
    # Refused, not spent: the maximum itself still settles.
    full = await client.settle(payload, requirements)
    assert full.success
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == MAXIMUM


@pytest.mark.anyio
async def test_an_upto_authorization_for_another_facilitator_is_refused(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    requirements = upto_requirements(dev_stack, pay_to, MAXIMUM, fresh_account())
    payload = await sdk_upto_payload(payer, requirements)
    verdict = await client.verify(payload, requirements)
    assert not verdict.is_valid and verdict.invalid_reason == "upto_facilitator_mismatch"
    settled = await client.settle(payload, requirements)
    assert not settled.success
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS


@pytest.mark.anyio
async def test_a_payer_without_permit2_allowance_is_refused_at_verify(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS, allowance=MAXIMUM - 1)
    requirements = upto_requirements(dev_stack, fresh_account(), MAXIMUM,
                                     facilitator.signer.address)
    payload = await sdk_upto_payload(payer, requirements)
    verdict = await client.verify(payload, requirements)
    assert not verdict.is_valid and verdict.invalid_reason == "permit2_allowance_required"
