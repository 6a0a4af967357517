"""The replay ledger's database fails right after a payment settled: the payer, charged,
still gets the response and its receipt, and the payment buys nothing more.

Real PostgreSQL refuses the write (a trigger raises on this payer's ``settled`` row,
as a database going away would); the facilitator and the chain are real. Before, the
failed write turned into a 500 with no receipt for a payment that had moved. Having
served, the gateway must leave the entry in flight, not pending: a pending one could be
resumed by the same header for a second response.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.provider.ledger import LedgerState, PaymentKey, SqlLedger
from a402.wire.headers import (
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_payment_payload,
    decode_settle_response,
)
from tests.provider.support import (
    PRICE_ATOMIC,
    Balances,
    Calls,
    asgi_client,
    assert_mined_transfer,
    ledger_refuses_settled,
    offer,
    paid_app,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


async def test_a_payment_whose_settled_mark_fails_is_served_once_and_buys_nothing_more(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], postgres_url: str,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    ledger = SqlLedger(postgres_url)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url,
                   calls=calls, ledger=ledger)
    try:
        with ledger_refuses_settled(postgres_url, payer.address):
            async with asgi_client(app) as client:
                required, _ = await offer(client, "/weather")
                headers = v2_header(required, payer)
                paid = await client.get("/weather", headers=headers)
                again = await client.get("/weather", headers=headers)
    finally:
        ledger.close()

    assert paid.status_code == 200, paid.text
    assert paid.json()["weather"] == "sunny"
    receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
    assert receipt.success
    assert_mined_transfer(anvil_chain, receipt.transaction)
    # Not recorded as sold, but never resumable: in use until it expires (then the
    # facilitator and the chain know the nonce).
    assert again.status_code == 402 and again.json()["error"] == "payment_already_used"
    assert PAYMENT_RESPONSE not in again.headers
    nonce = decode_payment_payload(headers[PAYMENT_SIGNATURE]).payload["authorization"]["nonce"]
    key = PaymentKey.of(dev_stack.network, dev_stack.token.address, payer.address, nonce)
    state = SqlLedger(postgres_url)
    try:
        assert state.state_of(key) is LedgerState.IN_FLIGHT
    finally:
        state.close()
    assert calls["weather"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC

