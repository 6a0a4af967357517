"""A payment that does not answer the requirements is refused by a402's facilitator
for the same ``invalidReason`` as by the official SDK's facilitator.

Each payment is signed by the SDK's own client for terms that differ from the
requirements it is then verified against (as a client paying for a stale or
forged offer would), and sent through the SDK's facilitator HTTP client to
both facilitators on the same anvil chain. Nothing may move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.mechanisms.evm.constants import (
    ERR_AUTHORIZATION_VALUE_MISMATCH,
    ERR_INVALID_SIGNATURE,
    ERR_RECIPIENT_MISMATCH,
)

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.wire import errors as wire_errors
from tests.interop.helpers import PRICE
from tests.interop.official import official_payload, official_requirements

pytestmark = [pytest.mark.anvil, pytest.mark.anyio]


@pytest.mark.parametrize(
    ("signed_for", "sdk_reason"),
    [
        ({"amount": str(PRICE - 1)}, ERR_AUTHORIZATION_VALUE_MISMATCH),
        ({"amount": str(PRICE + 1)}, ERR_AUTHORIZATION_VALUE_MISMATCH),
        ({"pay_to": Account.create().address}, ERR_RECIPIENT_MISMATCH),
        ({"asset": Account.create().address}, ERR_INVALID_SIGNATURE),
    ],
    ids=["amount-short", "amount-over", "recipient", "asset"],
)
async def test_a_payment_signed_for_other_terms_is_refused_for_the_sdks_reason(
    signed_for: dict[str, Any], sdk_reason: str, anvil_chain: Chain, dev_stack: Manifest,
    new_payer: Callable[..., LocalAccount], facilitator_url: str, official_facilitator_url: str,
) -> None:
    payer, pay_to = new_payer(PRICE + 1), Account.create().address
    requirements = official_requirements(dev_stack, pay_to, PRICE)
    other_terms = requirements.model_copy(update=signed_for)
    payload = await official_payload(payer, other_terms)  # its ``accepted`` is other_terms too

    ours = await HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)).verify(
        payload, requirements)
    sdk = await HTTPFacilitatorClient(FacilitatorConfig(url=official_facilitator_url)).verify(
        payload, requirements)

    assert not sdk.is_valid and sdk.invalid_reason == sdk_reason
    assert not ours.is_valid and ours.invalid_reason == sdk.invalid_reason
    assert ours.invalid_reason != wire_errors.ACCEPTED_MISMATCH
    assert ours.payer == payer.address
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == PRICE + 1
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0
