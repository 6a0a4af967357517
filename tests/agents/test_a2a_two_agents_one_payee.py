"""One payment submitted to two paid agents with the same payee and facilitator buys one task.

Each agent has its own (default, in-memory) ledger, so what keeps the second from delivering
is the facilitator's refusal to hand one settlement to a second resource. That only holds if
each agent names its *own* resource when it verifies and settles: the payload's ``resource``
is not signed, and a payer who sends both agents one payload naming one resource would get
the second settle answered with the first receipt (two results, one transfer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.agents import a2a_x402
from a402.agents.a2a_provider import PaidAgent
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.wire import errors as wire_errors
from tests.agents.conftest import (
    A2A_PRICE,
    A2A_PRICE_ATOMIC,
    A2AServedAgent,
    a2a_balance,
)
from tests.agents.test_a2a_numbers import _call, _offer, _send, _signed
from tests.servers import reserved_port

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

FUNDS = 1_000_000


async def test_one_payload_sent_to_two_agents_paid_to_one_payee_completes_one_task(
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
    facilitator_url: str,
) -> None:
    payer = new_payer(FUNDS)
    pay_to = Account.create().address
    calls: list[str] = []

    async def slow(text: str) -> str:  # both agents verify before either settles
        # Each agent runs this after its verify and before its settle: it waits for the
        # other one to get here too (a fixed 1.5 s sleep assumed the two verifies came
        # within 1.5 s of each other, which a loaded host does not promise).
        calls.append(text)
        deadline = time.monotonic() + 60
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return text.upper()

    with contextlib.ExitStack() as stack:
        served = []
        for name in ("Shouter", "Echoer"):
            port = stack.enter_context(reserved_port())  # held until the agent stops
            url = f"http://127.0.0.1:{port}/"
            agent = PaidAgent(slow, name=name, description="Answers in capitals.", url=url,
                              price=A2A_PRICE, pay_to=pay_to, token=dev_stack.token,
                              network=dev_stack.network, facilitator=facilitator_url)
            stack.enter_context(serve_in_thread(agent.app(), port=port))
            served.append(A2AServedAgent(agent, url, agent.onchain_card()))
        async with httpx.AsyncClient(timeout=60) as http:
            tasks = [(await _call(http, a, "1.0", _send("1.0", "hello")))[1] for a in served]
            # Signed once, for the first agent's offer (naming its resource), sent to both.
            payload = _signed(payer, _offer(tasks[0]))
            answers = await asyncio.gather(*(
                _call(http, a, "1.0", _send("1.0", "payment", task=t, metadata={
                    a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED,
                    a2a_x402.PAYLOAD_KEY: payload}))
                for a, t in zip(served, tasks, strict=True)))

    statuses = sorted(done["status"]["message"]["metadata"][a2a_x402.STATUS_KEY]
                      for _, done in answers)
    assert statuses == [a2a_x402.PAYMENT_COMPLETED, a2a_x402.PAYMENT_FAILED], statuses
    metadata = [done["status"]["message"]["metadata"] for _, done in answers]
    failed = next(m for m in metadata if m[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_FAILED)
    assert failed[a2a_x402.ERROR_KEY] == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE, failed
    # A refused settle (a verdict): the payer reads the money truth first.
    assert a2a_x402.receipts_of(failed)[-1].error_message.startswith("nothing was charged: ")
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, pay_to) == A2A_PRICE_ATOMIC
