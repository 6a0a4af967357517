"""A paid agent's JSON-RPC endpoint bounds a body before a2a-sdk decodes it (``request.json()``
then protobuf, both recursive): a body nested 100,000 deep is refused 400 with the reason, runs
nothing, and the agent keeps serving. Without the bound it overflowed the C stack (py-evm
raises the recursion limit to 100,000) and killed the process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.agents import a2a_x402
from a402.agents.a2a_card import InMemoryCardSource
from a402.agents.a2a_client import PayingAgentClient, discover
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import token_units_max
from a402.wire.errors import JSON_NUMBER_TOO_LONG, JSON_TOO_DEEP, REQUEST_TOO_LARGE
from tests.agents.conftest import A2AServedAgent, a2a_balance
from tests.hostile import FUZZ, METHODS, assert_answered, hostile_bodies, hostile_headers

pytestmark = pytest.mark.anvil

DEEP = b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":' + b"[" * 100_000 \
    + b"]" * 100_000 + b"}"


def test_a_json_rpc_body_nested_100000_deep_is_refused_and_the_agent_keeps_serving(
    a2a_agents: Callable[..., A2AServedAgent]
) -> None:
    served = a2a_agents()
    with httpx.Client(timeout=60) as http:
        deep = http.post(served.url, content=DEEP, headers={"content-type": "application/json"})
        long_number = http.post(served.url, content=b'{"id":' + b"1" * 5_000 + b"}")
        huge = http.post(served.url, content=b'{"s":"' + b"x" * (2 << 20) + b'"}')
        card = http.get(served.url + ".well-known/agent-card.json")
        unknown = http.post(served.url, json={"jsonrpc": "2.0", "id": 7, "method": "Nope"})
    assert (deep.status_code, deep.json()["error"]) == (400, JSON_TOO_DEEP)
    assert (long_number.status_code, long_number.json()["error"]) == (400, JSON_NUMBER_TOO_LONG)
    assert (huge.status_code, huge.json()["error"]) == (413, REQUEST_TOO_LARGE)
    assert card.status_code == 200 and card.json()["name"] == "Shouter"
    assert unknown.status_code == 200 and unknown.json()["error"]["code"] == -32601
    assert served.calls == []


@pytest.mark.anyio
async def test_a_paid_json_rpc_call_replayed_and_mutated_runs_nothing_and_moves_nothing(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    """The x402 extension inside A2A JSON-RPC: a paid ``SendMessage`` (its payment payload
    in the message's metadata) sent again byte for byte, mutated, its values replaced, its
    extension header garbled, among every other hostile body and method: no second run of
    the function, no second transfer, every answer within the rule."""
    served = a2a_agents()
    payer = new_payer(1_000_000)
    http, wire = a2a_wire
    agent = await discover("agent-1", InMemoryCardSource({"agent-1": served.onchain}), http=http)
    async with PayingAgentClient(payer.key, max_per_request=token_units_max("0.05"),
                                 http=http) as client:
        await client.send(agent, "hello")
    assert served.calls == ["hello"]
    paid = [(request, json.loads(request.content)) for request, _, _ in wire.exchanges
            if request.method == "POST" and a2a_x402.PAYLOAD_KEY in json.dumps(
                json.loads(request.content))]
    assert paid, "the paying client sent no payment payload"
    request, seed = paid[-1]
    headers = {k: v for k, v in request.headers.items()
               if k.lower() in ("a2a-extensions", "x-a2a-extensions", "a2a-version")}
    balances = (a2a_balance(anvil_chain, dev_stack, payer.address),
                a2a_balance(anvil_chain, dev_stack, served.pay_to))
    probes: list[str] = []

    @settings(FUZZ, max_examples=60)
    @given(body=hostile_bodies(json.dumps(seed).encode(), large=1 << 20),
           method=st.sampled_from(["POST", "POST", "POST", *METHODS]),
           garble=st.one_of(st.none(), hostile_headers("https://github.com/google-a2a/a2a-x402")))
    def probe(body: bytes, method: str, garble: bytes | None) -> None:
        probes.append(method)
        sent: dict[str, Any] = dict(headers, **{"content-type": "application/json"})
        if garble is not None:
            sent["A2A-Extensions"] = garble
        with httpx.Client(timeout=60) as sync:
            answer = sync.request(method, served.url, headers=sent,
                                  content=body if method not in ("GET", "HEAD") else None)
        assert_answered(answer, reason_key=None)

    probe()
    assert len(probes) >= 50
    with httpx.Client(timeout=60) as sync:
        assert sync.get(served.url + ".well-known/agent-card.json").status_code == 200
    assert served.calls == ["hello"]
    assert (a2a_balance(anvil_chain, dev_stack, payer.address),
            a2a_balance(anvil_chain, dev_stack, served.pay_to)) == balances
