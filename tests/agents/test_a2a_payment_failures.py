"""Payments that fail leave the task in ``payment-failed`` with the reason, and move nothing.

Some payments here are made by hand with a bare a2a-sdk client, because the
paying client would never send them (a tampered payload, a replayed one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from a2a.client import Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.extensions.common import HTTP_EXTENSION_HEADER
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, Task, TaskState
from eth_account.signers.local import LocalAccount
from google.protobuf.json_format import MessageToDict

from a402.agents import a2a_x402
from a402.agents.a2a_card import InMemoryCardSource
from a402.agents.a2a_client import (
    A2APaymentFailed,
    DiscoveredAgent,
    PayingAgentClient,
    PaymentUnresolved,
    card_for_wire,
    discover,
)
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import Wallet, token_units_max
from a402.wire import errors as wire_errors
from a402.wire.x402 import PaymentPayload, PaymentRequired, parse_payment_required
from tests.agents.conftest import A2A_PRICE_ATOMIC, A2AServedAgent, a2a_balance
from tests.facilitator_faults import AnswerLostToAnErrorOnce, RefusedAsMalformedOnce
from tests.servers import dead_url

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

AGENT_ID = "agent-1"
FUNDS = 1_000_000


# --------------------------------------------------------------------------- helpers


class _Hand:
    """A bare a2a-sdk client that opens tasks and submits whatever payload it is given."""

    def __init__(self, agent: DiscoveredAgent, http: httpx.AsyncClient, wire: str,
                 *, header: str = HTTP_EXTENSION_HEADER) -> None:
        config = ClientConfig(streaming=False, httpx_client=http)
        self.client: Client = ClientFactory(config).create(
            card_for_wire(agent.card, wire))  # type: ignore[arg-type]
        self.call = ClientCallContext(service_parameters={header: a2a_x402.X402_EXTENSION_URI})

    async def send(self, text: str, *, task: Task | None = None,
                   metadata: dict[str, Any] | None = None) -> Task:
        message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex,
                          parts=[Part(text=text)], metadata=metadata)
        if task is not None:
            message.task_id, message.context_id = task.id, task.context_id
        async for event in self.client.send_message(SendMessageRequest(message=message),
                                                    context=self.call):
            assert event.HasField("task")
            return event.task
        raise AssertionError("no answer")

    async def offer(self, text: str = "hello") -> tuple[Task, PaymentRequired]:
        task = await self.send(text)
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        required = parse_payment_required(_meta(task)[a2a_x402.REQUIRED_KEY])
        assert isinstance(required, PaymentRequired)
        return task, required

    async def pay(self, task: Task, payload: dict[str, Any]) -> Task:
        return await self.send("payment", task=task,
                               metadata={a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED,
                                         a2a_x402.PAYLOAD_KEY: payload})

    async def task(self, task_id: str) -> Task:
        return await self.client.get_task(GetTaskRequest(id=task_id), context=self.call)


def _meta(task: Task) -> dict[str, Any]:
    return a2a_x402.from_struct(MessageToDict(task.status.message.metadata))


def _sign(payer: LocalAccount, required: PaymentRequired) -> PaymentPayload:
    payload = Wallet(payer).sign(required.accepts[0], resource=required.resource)
    assert isinstance(payload, PaymentPayload)
    return payload


def _assert_failed(task: Task, error: str, reason: str) -> None:
    """Terminal ``failed`` with ``payment-failed``, the spec code, and the exact reason."""
    assert task.status.state == TaskState.TASK_STATE_FAILED
    meta = _meta(task)
    assert meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_FAILED
    assert meta[a2a_x402.ERROR_KEY] == error
    receipt = a2a_x402.receipts_of(meta)[-1]
    assert not receipt.success and receipt.error_reason == reason and receipt.transaction == ""


async def _discover(served: A2AServedAgent, http: httpx.AsyncClient) -> DiscoveredAgent:
    return await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}), http=http)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_a_payer_without_funds_leaves_the_task_payment_failed(
    wire: str, a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(0)
    http, _ = a2a_wire
    agent = await _discover(served, http)

    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"), wire=wire,
                                 http=http) as client:
        with pytest.raises(A2APaymentFailed) as failed:
            await client.send(agent, "hello")

    assert failed.value.reason == a2a_x402.INSUFFICIENT_FUNDS
    assert failed.value.receipt is not None
    assert failed.value.receipt.error_reason == wire_errors.INSUFFICIENT_BALANCE
    stored = await _Hand(agent, http, wire).task(failed.value.task.id)
    _assert_failed(stored, a2a_x402.INSUFFICIENT_FUNDS, wire_errors.INSUFFICIENT_BALANCE)
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_an_amount_changed_after_signing_is_refused_by_the_facilitator(
    wire: str, a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    hand = _Hand(await _discover(served, http), http, wire)
    task, required = await hand.offer()
    payload = _sign(payer, required).to_wire()
    payload["payload"]["authorization"]["value"] = "1"  # pay 1 unit on a signature for 10000

    done = await hand.pay(task, payload)

    _assert_failed(done, a2a_x402.INVALID_AMOUNT, wire_errors.AUTHORIZATION_VALUE_MISMATCH)
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0


async def test_a_payment_signed_for_less_than_the_terms_is_refused_before_the_facilitator(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    hand = _Hand(await _discover(served, http), http, "1.0")
    task, required = await hand.offer()
    cheaper = required.model_copy(update={"accepts": [
        required.accepts[0].model_copy(update={"amount": "1"})]})

    done = await hand.pay(task, _sign(payer, cheaper).to_wire())  # a valid signature, for 1 unit

    _assert_failed(done, a2a_x402.NO_MATCHING_REQUIREMENTS, a2a_x402.NO_MATCHING_REQUIREMENTS)
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS


async def test_a_payload_replayed_in_another_task_is_refused(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    agent = await _discover(served, http)
    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"),
                                 http=http) as client:
        first = await client.send(agent, "first")
    assert first.payload is not None

    hand = _Hand(agent, http, "1.0")
    task, _ = await hand.offer("second")
    done = await hand.pay(task, first.payload.to_wire())  # the settled payload, again

    _assert_failed(done, a2a_x402.DUPLICATE_NONCE, a2a_x402.PAYMENT_ALREADY_USED)
    assert served.calls == ["first"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC


async def test_a_failing_service_is_not_charged(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    async def broken(text: str) -> str:
        raise RuntimeError("out of ink")

    served = a2a_agents(broken)
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"),
                                 http=http) as client:
        with pytest.raises(A2APaymentFailed) as failed:
            await client.send(await _discover(served, http), "hello")

    _assert_failed(failed.value.task, a2a_x402.SERVICE_FAILED, a2a_x402.SERVICE_FAILED)
    assert served.calls == ["hello"]  # it ran (after verification) and failed
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS


async def test_an_unreachable_facilitator_keeps_the_task_open_and_the_money_still(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents(facilitator=dead_url())  # stays dead: no agent can get its port
    payer = new_payer(FUNDS)
    http, recorder = a2a_wire
    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"),
                                 retries=1, retry_delay=0, http=http) as client:
        with pytest.raises(PaymentUnresolved) as unresolved:
            await client.send(await _discover(served, http), "hello")

    # The same signed payload was sent twice, never a second signature.
    submitted = [req["params"]["message"]["metadata"][a2a_x402.PAYLOAD_KEY]
                 for req, _, _ in recorder.rpc() if a2a_x402.PAYLOAD_KEY in
                 req["params"]["message"].get("metadata", {})]
    assert len(submitted) == 2 and submitted[0] == submitted[1]
    assert submitted[0]["payload"] == unresolved.value.payload.payload
    task = recorder.rpc()[-1][1]["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    metadata = task["status"]["message"]["metadata"]
    assert metadata[a2a_x402.ERROR_KEY] == a2a_x402.FACILITATOR_UNAVAILABLE
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS


# --------------------------------------------------------- extension activation


def _raw_send(wire: str, **message: Any) -> dict[str, Any]:
    if wire == "1.0":
        body = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": "hi"}],
                **message}
        return {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": body}}
    body = {"kind": "message", "messageId": uuid.uuid4().hex, "role": "user",
            "parts": [{"kind": "text", "text": "hi"}], **message}
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": body}}


@pytest.mark.parametrize(
    ("wire", "header"),
    [("1.0", "A2A-Extensions"), ("1.0", "X-A2A-Extensions"), ("0.3", "X-A2A-Extensions"),
     ("0.3", "A2A-Extensions")],
)
@pytest.mark.parametrize("uri", a2a_x402.X402_EXTENSION_URIS)
async def test_either_extension_uri_activates_payment_on_either_wire(
    wire: str, header: str, uri: str, a2a_agents: Callable[..., A2AServedAgent],
) -> None:
    served = a2a_agents()
    headers = {header: uri, "A2A-Version": wire}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(served.url, json=_raw_send(wire), headers=headers)

    body = response.json()
    task = body["result"]["task"] if wire == "1.0" else body["result"]
    state = task["status"]["state"]
    assert state == ("TASK_STATE_INPUT_REQUIRED" if wire == "1.0" else "input-required")
    message = task["status"]["message"]
    assert message["metadata"][a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REQUIRED
    assert message["extensions"] == [uri]  # the agent answers under the URI the client used
    assert response.headers["A2A-Extensions"] == response.headers["X-A2A-Extensions"] == uri


async def test_an_a2a_1_0_client_activating_with_the_x_header_pays_and_is_served(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    """The x402 A2A transport tells clients to send ``X-A2A-Extensions``; an a2a-sdk
    1.0 client doing only that is offered the payment, pays once and is served."""
    served = a2a_agents()
    payer = new_payer(FUNDS)
    http, wire_log = a2a_wire
    hand = _Hand(await _discover(served, http), http, "1.0", header="X-A2A-Extensions")
    task, required = await hand.offer()

    done = await hand.pay(task, _sign(payer, required).to_wire())

    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert _meta(done)[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED
    sent, _, answer = wire_log.rpc()[-1]
    assert sent["method"] == "SendMessage"
    assert "A2A-Extensions" not in answer.request.headers  # only the X- name was sent
    assert answer.request.headers["X-A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI
    assert answer.headers["X-A2A-Extensions"] == a2a_x402.X402_EXTENSION_URI
    assert served.calls == ["hello"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_a_refused_activation_is_not_echoed_as_active(
    wire: str, a2a_agents: Callable[..., A2AServedAgent],
) -> None:
    """A header naming only other extensions activates nothing: refused, and no
    extension header in the answer claims x402 is active."""
    served = a2a_agents()
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(served.url, json=_raw_send(wire), headers={
            "A2A-Version": wire, "X-A2A-Extensions": "https://example.com/other-extension",
            "A2A-Extensions": "https://example.com/another"})

    assert refused.json()["error"]["code"] == (-32008 if wire == "1.0" else -32603)
    for name in ("A2A-Extensions", "X-A2A-Extensions"):
        assert a2a_x402.X402_EXTENSION_URI not in refused.headers.get(name, "")
    assert served.calls == []


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_a_client_that_does_not_activate_the_extension_is_refused(
    wire: str, a2a_agents: Callable[..., A2AServedAgent],
) -> None:
    served = a2a_agents()
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(served.url, json=_raw_send(wire),
                                  headers={"A2A-Version": wire})
        # Activation through the message's own ``extensions`` list is accepted too.
        listed = await http.post(served.url, json=_raw_send(wire, extensions=[
            a2a_x402.X402_EXTENSION_URI_V02]), headers={"A2A-Version": wire})

    # v0.3 has no ExtensionSupportRequiredError; a2a-sdk reports it there as -32603.
    assert refused.json()["error"]["code"] == (-32008 if wire == "1.0" else -32603)
    assert "x402" in refused.json()["error"]["message"]
    result = listed.json()["result"]
    task = result["task"] if wire == "1.0" else result
    assert task["status"]["message"]["metadata"][a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REQUIRED
    assert served.calls == []



async def test_a_settle_answer_lost_to_an_unexpected_error_is_answered_on_resend_once(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any, facilitator_url: str,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    """The money moved but the agent never heard: the payment stays pending with its
    result held, and the same payload sent again in the same task gets that result,
    charged once and computed once."""
    served = a2a_agents(facilitator=AnswerLostToAnErrorOnce(facilitator_url))
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    hand = _Hand(await _discover(served, http), http, "1.0")
    task, required = await hand.offer("hello")
    payload = _sign(payer, required).to_wire()
    lost = await hand.pay(task, payload)
    assert lost.status.state == TaskState.TASK_STATE_INPUT_REQUIRED  # not failed: resend
    assert _meta(lost)[a2a_x402.ERROR_KEY] == a2a_x402.FACILITATOR_UNAVAILABLE
    done = await hand.pay(task, payload)

    assert done.status.state == TaskState.TASK_STATE_COMPLETED, done
    assert _meta(done)[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED
    assert served.calls == ["hello"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC


async def test_a_settle_refused_as_malformed_fails_the_task_and_leaves_the_payment_unspent(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any, facilitator_url: str,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    """The facilitator refuses the agent's ``/settle`` with HTTP 400: it did not look at
    the payment (x402: 400 is a malformed request; ours answers it before it claims or
    sends anything), and a payment verified just now had no earlier settle, so nothing
    moved. The task fails saying so (before, it was left pending, the payer told the
    facilitator was unavailable and to resend the same payload, which stayed stuck), and
    the authorization is released: the same payload, in a new task, buys that task."""
    lying = RefusedAsMalformedOnce(facilitator_url)
    served = a2a_agents(facilitator=lying)
    payer = new_payer(FUNDS)
    http, _ = a2a_wire
    hand = _Hand(await _discover(served, http), http, "1.0")
    task, required = await hand.offer("hello")
    payload = _sign(payer, required).to_wire()

    refused = await hand.pay(task, payload)

    _assert_failed(refused, wire_errors.INVALID_PAYLOAD, wire_errors.INVALID_PAYLOAD)
    assert "nothing was charged" in a2a_x402.receipts_of(_meta(refused))[-1].error_message
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0

    again, _ = await hand.offer("hello again")
    done = await hand.pay(again, payload)  # the same signed payload: unspent, released

    assert done.status.state == TaskState.TASK_STATE_COMPLETED, done
    assert _meta(done)[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED
    assert lying.settles == [str(A2A_PRICE_ATOMIC)] * 2
    assert served.calls == ["hello", "hello again"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC
