"""The official SDK's server and facilitator client, pointed at a402's facilitator.

If the SDK's resource server accepts our /supported, sends us its own
verify/settle bodies and understands our answers, then any x402 server built
on the SDK can settle through a402.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.http import FacilitatorConfig, HTTPFacilitatorClient

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.facilitator.core import Facilitator
from tests.interop.helpers import PRICE, assert_mined_settlement, decode_header, paid_server
from tests.interop.official import official_client, official_payload, official_requirements

pytestmark = pytest.mark.anvil


@pytest.mark.anyio
async def test_sdk_facilitator_client_verifies_and_settles_with_us(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    supported = client.get_supported()
    assert any(k.network == dev_stack.network and k.scheme == "exact" and k.x402_version == 2
               for k in supported.kinds)

    payer, pay_to = new_payer(PRICE), Account.create().address
    requirements = official_requirements(dev_stack, pay_to, PRICE)
    payload = await official_payload(payer, requirements)

    verified = await client.verify(payload, requirements)
    assert verified.is_valid and verified.payer == payer.address
    settled = await client.settle(payload, requirements)
    assert settled.success and settled.payer == payer.address
    assert_mined_settlement(anvil_chain, dev_stack, settled.transaction,
                            facilitator.signer.address)
    again = await client.settle(payload, requirements)  # idempotent, as the SDK retries
    assert again.success and again.transaction == settled.transaction
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 0
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == PRICE


@pytest.mark.anyio
async def test_sdk_client_pays_sdk_server_settling_through_our_facilitator(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    payer, pay_to = new_payer(3 * PRICE), Account.create().address
    with paid_server(facilitator_url, pay_to, dev_stack) as url:
        async with official_client(payer) as client:
            response = await client.get(url)

    assert response.status_code == 200
    receipt = decode_header(response.headers["PAYMENT-RESPONSE"])
    assert receipt["success"] is True and receipt["payer"] == payer.address
    assert_mined_settlement(anvil_chain, dev_stack, receipt["transaction"],
                            facilitator.signer.address)
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 2 * PRICE
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == PRICE


@pytest.mark.anyio
async def test_sdk_server_reports_our_refusal_reason_to_the_payer(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer, pay_to = new_payer(PRICE - 1), Account.create().address
    with paid_server(facilitator_url, pay_to, dev_stack) as url:
        async with official_client(payer) as client:
            response = await client.get(url)

    assert response.status_code == 402
    assert decode_header(response.headers["PAYMENT-REQUIRED"])["error"] == (
        "invalid_exact_evm_insufficient_balance")
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == PRICE - 1
