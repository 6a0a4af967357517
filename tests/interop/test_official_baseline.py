"""The official SDK against itself on anvil: client → FastAPI server → facilitator.

This is the baseline the mixed tests (one role replaced by a402's) are read
against: if it fails, the harness or the chain is wrong, not a402. Headers are
decoded here by hand (strict standard base64 of JSON) rather than with the
SDK's helpers, so the assertions also pin down the wire format.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from tests.interop.helpers import PRICE, assert_mined_settlement, decode_header, paid_server
from tests.interop.official import (
    DEFAULT_MAX_TIMEOUT_SECONDS,
    official_client,
    official_client_sync,
    official_facilitator,
    official_payload,
    official_requirements,
)

pytestmark = pytest.mark.anvil



@pytest.mark.anyio
async def test_unpaid_request_gets_the_sdk_payment_required(
    dev_stack: Manifest, official_facilitator_url: str
) -> None:
    pay_to = Account.create().address
    with paid_server(official_facilitator_url, pay_to, dev_stack) as url:
        async with httpx.AsyncClient() as http:
            response = await http.get(url)

    assert response.status_code == 402
    required = decode_header(response.headers["PAYMENT-REQUIRED"])
    assert required["x402Version"] == 2
    assert required["error"] == "Payment required"
    assert required["resource"]["url"] == url
    assert required["accepts"] == [
        {
            "scheme": "exact",
            "network": dev_stack.network,
            "asset": dev_stack.token.address,
            "amount": str(PRICE),
            "payTo": pay_to,
            "maxTimeoutSeconds": DEFAULT_MAX_TIMEOUT_SECONDS,
            "extra": {"name": dev_stack.token.name, "version": dev_stack.token.version},
        }
    ]


@pytest.mark.anyio
async def test_sdk_client_pays_sdk_server_through_sdk_facilitator(
    anvil_chain: Chain,
    dev_stack: Manifest,
    new_payer: Callable[..., LocalAccount],
    official_facilitator_url: str,
    official_facilitator_account: LocalAccount,
) -> None:
    payer = new_payer(5 * PRICE)
    pay_to = Account.create().address
    token = dev_stack.token.address
    payer_before = token_balance(anvil_chain, token, payer.address)
    pay_to_before = token_balance(anvil_chain, token, pay_to)

    with paid_server(official_facilitator_url, pay_to, dev_stack) as url:
        async with official_client(payer) as client:
            response = await client.get(url)

    assert response.status_code == 200, response.headers
    assert response.json() == {"report": {"weather": "sunny", "temperature": 21}}
    receipt = decode_header(response.headers["PAYMENT-RESPONSE"])
    assert receipt["success"] is True
    assert receipt["network"] == dev_stack.network
    assert receipt["payer"] == payer.address
    assert_mined_settlement(
        anvil_chain, dev_stack, receipt["transaction"], official_facilitator_account.address
    )
    assert token_balance(anvil_chain, token, payer.address) == payer_before - PRICE
    assert token_balance(anvil_chain, token, pay_to) == pay_to_before + PRICE


def test_sync_sdk_client_pays_too(
    anvil_chain: Chain,
    dev_stack: Manifest,
    new_payer: Callable[..., LocalAccount],
    official_facilitator_url: str,
    official_facilitator_account: LocalAccount,
) -> None:
    payer = new_payer(PRICE)
    pay_to = Account.create().address

    with paid_server(official_facilitator_url, pay_to, dev_stack) as url:
        session = official_client_sync(payer)
        with session:
            response = session.get(url, timeout=30)

    assert response.status_code == 200
    receipt = decode_header(response.headers["PAYMENT-RESPONSE"])
    assert receipt["success"] is True
    assert_mined_settlement(
        anvil_chain, dev_stack, receipt["transaction"], official_facilitator_account.address
    )
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 0
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == PRICE


@pytest.mark.anyio
async def test_underfunded_payer_gets_the_402_back_and_nothing_moves(
    anvil_chain: Chain,
    dev_stack: Manifest,
    new_payer: Callable[..., LocalAccount],
    official_facilitator_url: str,
) -> None:
    """The SDK client retries once; a second 402 is returned to the caller, not raised."""
    payer = new_payer(PRICE - 1)
    pay_to = Account.create().address

    with paid_server(official_facilitator_url, pay_to, dev_stack) as url:
        async with official_client(payer) as client:
            response = await client.get(url)

    assert response.status_code == 402
    assert "PAYMENT-RESPONSE" not in response.headers
    required = decode_header(response.headers["PAYMENT-REQUIRED"])
    # Found by simulating transferWithAuthorization (eth_call) and mapping the revert string.
    assert required["error"] == "invalid_exact_evm_insufficient_balance"
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == PRICE - 1
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0


@pytest.mark.anyio
async def test_in_process_facilitator_verifies_then_settles_once(
    anvil_chain: Chain,
    dev_stack: Manifest,
    new_payer: Callable[..., LocalAccount],
    official_facilitator_account: LocalAccount,
) -> None:
    """The path a benchmark takes: no HTTP, the SDK's ``verify``/``settle`` awaited directly."""
    facilitator = official_facilitator(anvil_chain, dev_stack, official_facilitator_account)
    payer = new_payer(PRICE)
    pay_to = Account.create().address
    requirements = official_requirements(dev_stack, pay_to, PRICE)
    payload = await official_payload(payer, requirements)

    verified = await facilitator.verify(payload, requirements)
    assert verified.is_valid, verified
    assert verified.payer == payer.address

    settled = await facilitator.settle(payload, requirements)
    assert settled.success, settled
    assert_mined_settlement(
        anvil_chain, dev_stack, settled.transaction, official_facilitator_account.address
    )
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == PRICE

    replayed = await facilitator.verify(payload, requirements)
    assert not replayed.is_valid
    assert replayed.invalid_reason == "invalid_exact_evm_nonce_already_used"
