"""A paid agent's JSON-RPC endpoint bounds a body before a2a-sdk decodes it (``request.json()``
then protobuf, both recursive): a body nested 100,000 deep is refused 400 with the reason, runs
nothing, and the agent keeps serving. Without the bound it overflowed the C stack (py-evm
raises the recursion limit to 100,000) and killed the process."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from a402.wire.errors import JSON_NUMBER_TOO_LONG, JSON_TOO_DEEP, REQUEST_TOO_LARGE
from tests.agents.conftest import A2AServedAgent

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
