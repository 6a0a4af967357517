"""A paid agent whose replay ledger fails to record a settled payment still completes the
task it was paid for (before: the task failed with the payer charged), and the payment
buys nothing more. Real PostgreSQL refuses the write; the chain and facilitator are real.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from a402.agents import a2a_x402
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.provider.ledger import SqlLedger
from tests.agents.conftest import A2A_PRICE_ATOMIC, A2AServedAgent, a2a_balance
from tests.agents.test_a2a_numbers import _call, _offer, _send, _signed
from tests.provider.support import ledger_refuses_settled

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

FUNDS = 1_000_000


async def test_a_task_whose_settled_mark_fails_completes_once_and_buys_nothing_more(
    a2a_agents: Callable[..., A2AServedAgent], new_payer: Callable[..., LocalAccount],
    anvil_chain: Chain, dev_stack: Manifest, postgres_url: str,
) -> None:
    payer = new_payer(FUNDS)
    ledger = SqlLedger(postgres_url)
    served = a2a_agents(ledger=ledger)
    try:
        with ledger_refuses_settled(postgres_url, payer.address):
            async with httpx.AsyncClient(timeout=60) as http:
                _, task = await _call(http, served, "1.0", _send("1.0", "hello"))
                payload = _signed(payer, _offer(task))
                paying = _send("1.0", "payment", task=task, metadata={
                    a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED, a2a_x402.PAYLOAD_KEY: payload})
                _, done = await _call(http, served, "1.0", paying)
                # The same payment for another task of the same agent buys nothing.
                _, other = await _call(http, served, "1.0", _send("1.0", "again"))
                _, again = await _call(http, served, "1.0", _send(
                    "1.0", "payment", task=other, metadata={
                        a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED,
                        a2a_x402.PAYLOAD_KEY: payload}))
    finally:
        ledger.close()

    meta = done["status"]["message"]["metadata"]
    assert meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED, meta
    assert meta[a2a_x402.RECEIPTS_KEY][-1]["success"] is True
    refused = again["status"]["message"]["metadata"]
    assert refused[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_FAILED, refused
    last = refused[a2a_x402.RECEIPTS_KEY][-1]
    assert last["errorReason"] == a2a_x402.PAYMENT_ALREADY_USED, refused
    assert served.calls == ["hello"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC
