"""A paid A2A task end to end: anvil, our facilitator over HTTP, a2a-sdk on both wires.

The client discovers the agent through a card source (standing in for the
chain), checks the served card, answers ``payment-required`` and gets the
result with its receipt. Every test that pays checks the money on chain
(exact deltas on a fresh payee and payer, the mined Transfer); every refusal
checks that nothing moved and that the paid function did not run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types import GetTaskRequest, TaskState
from eth_account.signers.local import LocalAccount

from a402.agents import a2a_x402
from a402.agents.a2a_card import CardMismatch, InMemoryCardSource
from a402.agents.a2a_client import (
    OFFER_NOT_ON_CARD,
    PayingAgentClient,
    card_for_wire,
    discover,
)
from a402.agents.a2a_provider import PaidAgent
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import Budget, PaymentRefused, token_units_max
from a402.client.errors import BUDGET_EXHAUSTED, PRICE_ABOVE_MAXIMUM
from tests.agents.conftest import (
    A2A_PRICE_ATOMIC,
    A2AServedAgent,
    a2a_assert_transfer,
    a2a_balance,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

AGENT_ID = "agent-1"
WIRE_SPELLING = {
    "1.0": {"send": "SendMessage", "input": "TASK_STATE_INPUT_REQUIRED",
            "done": "TASK_STATE_COMPLETED"},
    "0.3": {"send": "message/send", "input": "input-required", "done": "completed"},
}


def _task_json(response: dict[str, Any], wire: str) -> dict[str, Any]:
    """The task in a SendMessage / message/send result, whatever the wire version."""
    result = response["result"]
    return result["task"] if wire == "1.0" else result


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_a_paid_task_goes_from_payment_required_to_payment_completed(
    wire: str, a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(1_000_000)
    http, recorder = a2a_wire
    source = InMemoryCardSource({AGENT_ID: served.onchain})

    agent = await discover(AGENT_ID, source, http=http)
    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"), wire=wire,
                                 http=http) as client:
        result = await client.send(agent, "hello there")

    # The result and its receipt; the money moved once, exactly the price.
    assert result.text == "HELLO THERE"
    assert served.calls == ["hello there"]
    receipt = result.receipt
    assert receipt is not None and receipt.success
    assert receipt.payer == payer.address and receipt.network == dev_stack.network
    a2a_assert_transfer(anvil_chain, dev_stack, receipt.transaction, payer=payer.address,
                        pay_to=served.pay_to, amount=A2A_PRICE_ATOMIC)
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000 - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC

    # What went over the wire: this version's method and state spellings, the x402
    # metadata flow, and the extension echoed in both header spellings.
    spelling = WIRE_SPELLING[wire]
    (ask, offered, _), (pay, settled, answer) = recorder.rpc()
    assert ask["method"] == pay["method"] == spelling["send"]
    first, last = _task_json(offered, wire), _task_json(settled, wire)
    assert first["status"]["state"] == spelling["input"]
    offer_meta = first["status"]["message"]["metadata"]
    assert offer_meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REQUIRED
    assert offer_meta[a2a_x402.REQUIRED_KEY]["accepts"][0]["amount"] == str(A2A_PRICE_ATOMIC)
    assert offer_meta[a2a_x402.REQUIRED_KEY]["accepts"][0]["payTo"] == served.pay_to
    pay_meta = pay["params"]["message"]["metadata"]
    assert pay_meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_SUBMITTED
    assert pay_meta[a2a_x402.PAYLOAD_KEY]["payload"]["authorization"]["from"] == payer.address
    assert pay["params"]["message"]["taskId"] == first["id"]
    assert last["status"]["state"] == spelling["done"]
    done_meta = last["status"]["message"]["metadata"]
    assert done_meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED
    assert done_meta[a2a_x402.RECEIPTS_KEY][-1]["transaction"] == receipt.transaction
    assert last["artifacts"][0]["parts"][0]["text"] == "HELLO THERE"
    assert answer.headers["A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI
    assert answer.headers["X-A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI
    # Both activation headers, on either wire (the x402 A2A transport names the X- one).
    assert answer.request.headers["A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI
    assert answer.request.headers["X-A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI

    # The agent keeps the task completed, with the receipt, for anyone who asks later.
    sdk = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(
        card_for_wire(agent.card, wire))  # type: ignore[arg-type]
    task = await sdk.get_task(GetTaskRequest(id=first["id"]))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts] == ["HELLO THERE"]


def _params(agent: PaidAgent) -> Any:
    return agent.card.capabilities.extensions[0].params


EXT = f"capabilities.extensions[{a2a_x402.X402_EXTENSION_URI}]"


@pytest.mark.parametrize(
    ("field", "tamper"),
    [
        (f"{EXT}.params.amount", lambda a: _params(a).update({"amount": "1"})),
        (f"{EXT}.params.payTo", lambda a: _params(a).update({"payTo": "0x" + "11" * 20})),
        ("name", lambda a: setattr(a.card, "name", "Someone else")),
        ("supportedInterfaces[JSONRPC 1.0 ",
         lambda a: setattr(a.card.supported_interfaces[0], "url", "http://10.0.0.1/")),
        ("skills[task].description",
         lambda a: setattr(a.card.skills[0], "description", "Does something else.")),
    ],
)
async def test_a_served_card_that_differs_from_the_chain_is_refused_before_any_payment(
    field: str, tamper: Callable[[PaidAgent], None],
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents(tamper=tamper)  # serves a card the chain does not hold
    payer = new_payer(1_000_000)
    http, recorder = a2a_wire
    source = InMemoryCardSource({AGENT_ID: served.onchain})

    with pytest.raises(CardMismatch) as refused:
        await discover(AGENT_ID, source, http=http)

    differences = refused.value.differences
    assert differences and all(d.startswith(field) for d in differences), differences
    assert recorder.rpc() == []  # only the card was fetched: no task, no offer, no signature
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0


async def test_the_refusal_names_the_differing_fields(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
) -> None:
    served = a2a_agents(tamper=lambda a: _params(a).update({"amount": "1"}))
    http, _ = a2a_wire
    with pytest.raises(CardMismatch) as refused:
        await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}), http=http)
    assert refused.value.differences == (
        f"{EXT}.params.amount: "
        f'served "1", on chain "{A2A_PRICE_ATOMIC}"',
    )


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_per_request": token_units_max("0.005")}, PRICE_ABOVE_MAXIMUM),
        ({"max_per_request": token_units_max("1"), "budget": Budget(A2A_PRICE_ATOMIC - 1)},
         BUDGET_EXHAUSTED),
    ],
)
async def test_the_client_never_pays_above_its_maximum_or_budget(
    limits: dict[str, Any], reason: str, a2a_agents: Callable[..., A2AServedAgent],
    a2a_wire: Any, new_payer: Callable[..., LocalAccount], anvil_chain: Chain,
    dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(1_000_000)
    http, recorder = a2a_wire
    agent = await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}),
                           http=http)

    async with PayingAgentClient(payer.key, http=http, **limits) as client:
        with pytest.raises(PaymentRefused) as refused:
            await client.send(agent, "hello")

    assert refused.value.reason == reason
    # Declined in-band: the agent closed the task as payment-rejected; nothing was signed.
    (_, _, _), (decline, closed, _) = recorder.rpc()
    assert a2a_x402.PAYLOAD_KEY not in decline["params"]["message"]["metadata"]
    metadata = decline["params"]["message"]["metadata"]
    assert metadata[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REJECTED
    task = closed["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert task["status"]["message"]["metadata"][a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REJECTED
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0


async def test_an_offer_that_differs_from_the_onchain_terms_is_not_paid(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    """The card matches, but the offer in ``payment-required`` asks twice the card's price
    (well within the client's maximum): refused, because the chain is what the client trusts."""

    def overcharge(agent: PaidAgent) -> None:
        agent.requirements = agent.requirements.model_copy(
            update={"amount": str(2 * A2A_PRICE_ATOMIC)})

    served = a2a_agents(tamper=overcharge)
    payer = new_payer(1_000_000)
    http, _ = a2a_wire
    agent = await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}),
                           http=http)

    async with PayingAgentClient(payer.key, max_per_request=token_units_max("1"),
                                 http=http) as client:
        with pytest.raises(PaymentRefused) as refused:
            await client.send(agent, "hello")

    assert refused.value.reason == OFFER_NOT_ON_CARD
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000


class _DropOnce(httpx.AsyncBaseTransport):
    """Real HTTP, except that the first payment submission loses its request or its answer."""

    def __init__(self, lose: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.dropped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        paying = a2a_x402.PAYMENT_SUBMITTED.encode() in request.content and not self.dropped
        if paying and self.lose == "request":
            self.dropped += 1
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if paying and self.lose == "answer":
            self.dropped += 1
            await response.aclose()  # the agent got the payment and settled; we never hear it
            raise httpx.ReadError("connection reset", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("lose", ["request", "answer"])
async def test_a_lost_payment_message_is_resolved_without_paying_twice(
    lose: str, a2a_agents: Callable[..., A2AServedAgent],
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(1_000_000)
    transport = _DropOnce(lose)
    async with httpx.AsyncClient(transport=transport, timeout=60) as http:
        agent = await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}),
                               http=http)
        async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"),
                                     retry_delay=0, http=http) as client:
            result = await client.send(agent, "again")

    assert transport.dropped == 1
    assert result.text == "AGAIN" and result.receipt is not None and result.receipt.success
    assert served.calls == ["again"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000 - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC
