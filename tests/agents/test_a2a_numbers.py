"""x402 integers in A2A metadata: spelled as integers on the wire, read back strictly.

A2A 1.0 metadata is a protobuf Struct (numbers are doubles). The agent's JSON
answers spell integral numbers as integers, so the official x402 SDK's models
accept its offer and receipts in strict mode; what it reads, it reads strictly:
``2.0`` is the integer 2, ``2.5`` is refused. Raw JSON-RPC (no a2a-sdk client)
so that the exact spelling on the wire is what is checked and sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from x402.schemas import PaymentRequired as OfficialPaymentRequired
from x402.schemas import SettleResponse as OfficialSettleResponse

from a402.agents import a2a_x402
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import Wallet
from a402.wire import errors as wire_errors
from a402.wire.x402 import PaymentPayload, parse_payment_required
from tests.agents.conftest import A2A_PRICE_ATOMIC, A2AServedAgent, a2a_balance

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

FUNDS = 1_000_000


def _send(wire: str, text: str, *, task: dict[str, Any] | None = None,
          metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"messageId": uuid.uuid4().hex}
    if wire == "1.0":
        message |= {"role": "ROLE_USER", "parts": [{"text": text}]}
        method = "SendMessage"
    else:
        message |= {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": text}]}
        method = "message/send"
    if task is not None:
        message |= {"taskId": task["id"], "contextId": task["contextId"]}
    if metadata is not None:
        message["metadata"] = metadata
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": message}}


async def _call(http: httpx.AsyncClient, served: A2AServedAgent, wire: str,
                request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the answer's raw text, its task) for one JSON-RPC call."""
    response = await http.post(served.url, content=json.dumps(request), headers={
        "A2A-Version": wire, "X-A2A-Extensions": a2a_x402.X402_EXTENSION_URI,
        "Content-Type": "application/json"})
    result = response.json()["result"]
    return response.text, (result["task"] if wire == "1.0" else result)


def _offer(task: dict[str, Any]) -> dict[str, Any]:
    meta = task["status"]["message"]["metadata"]
    assert meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_REQUIRED
    required: dict[str, Any] = meta[a2a_x402.REQUIRED_KEY]
    return required


def _signed(payer: LocalAccount, required: dict[str, Any], **numbers: Any) -> dict[str, Any]:
    """A payload for the offer, with its integers re-spelled as ``numbers`` says."""
    offer = parse_payment_required(a2a_x402.from_struct(required))
    payload = Wallet(payer).sign(offer.accepts[0], resource=offer.resource)
    assert isinstance(payload, PaymentPayload)
    wire = payload.to_wire()
    wire["x402Version"] = numbers.get("version", wire["x402Version"])
    wire["accepted"]["maxTimeoutSeconds"] = numbers.get(
        "timeout", wire["accepted"]["maxTimeoutSeconds"])
    return wire


@pytest.mark.parametrize("wire", ["1.0", "0.3"])
async def test_the_offer_and_receipt_spell_integers_and_the_sdk_models_accept_them_strictly(
    wire: str, a2a_agents: Callable[..., A2AServedAgent],
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(FUNDS)
    async with httpx.AsyncClient(timeout=60) as http:
        text, task = await _call(http, served, wire, _send(wire, "hello"))
        required = _offer(task)
        assert '"x402Version":2' in text and '"x402Version":2.0' not in text
        assert '"maxTimeoutSeconds":120' in text and '"maxTimeoutSeconds":120.0' not in text
        official = OfficialPaymentRequired.model_validate(required, strict=True)
        assert official.x402_version == 2 and official.accepts[0].max_timeout_seconds == 120

        # The payment itself goes out with a double, as an a2a-sdk client sends it.
        payload = _signed(payer, required, version=2.0, timeout=120.0)
        sent = json.dumps(_send(wire, "payment", task=task, metadata={
            a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED, a2a_x402.PAYLOAD_KEY: payload}))
        assert '"x402Version": 2.0' in sent
        text, done = await _call(http, served, wire, json.loads(sent))

    meta = done["status"]["message"]["metadata"]
    assert meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_COMPLETED, meta
    receipt = OfficialSettleResponse.model_validate(meta[a2a_x402.RECEIPTS_KEY][-1], strict=True)
    assert receipt.success and receipt.payer == payer.address
    assert served.calls == ["hello"]
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC


@pytest.mark.parametrize(
    ("numbers", "reason"),
    [({"version": 2.5}, wire_errors.INVALID_X402_VERSION), ({"timeout": 120.5},
                                                            wire_errors.INVALID_PAYLOAD)],
    ids=["version-2.5", "timeout-120.5"],
)
async def test_a_non_integral_number_where_x402_has_an_integer_is_refused(
    numbers: dict[str, float], reason: str, a2a_agents: Callable[..., A2AServedAgent],
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    served = a2a_agents()
    payer = new_payer(FUNDS)
    async with httpx.AsyncClient(timeout=60) as http:
        _, task = await _call(http, served, "1.0", _send("1.0", "hello"))
        payload = _signed(payer, _offer(task), **numbers)
        _, done = await _call(http, served, "1.0", _send("1.0", "payment", task=task, metadata={
            a2a_x402.STATUS_KEY: a2a_x402.PAYMENT_SUBMITTED, a2a_x402.PAYLOAD_KEY: payload}))

    assert done["status"]["state"] == "TASK_STATE_FAILED"
    meta = done["status"]["message"]["metadata"]
    assert meta[a2a_x402.STATUS_KEY] == a2a_x402.PAYMENT_FAILED
    assert meta[a2a_x402.RECEIPTS_KEY][-1]["errorReason"] == reason
    assert served.calls == []
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == FUNDS
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0
