"""Fixtures for the agent tests: an asyncio backend, served paid A2A agents, a wire recorder.

Helper names start with ``a2a_`` so tests of the on-chain agent code can share
this directory without clashes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from eth_account import Account

from a402.agents.a2a_provider import PaidAgent
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from tests.servers import reserved_port

A2A_PRICE = "0.01"
A2A_PRICE_ATOMIC = 10_000  # the dev token has 6 decimals
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio: a2a-sdk and uvicorn are asyncio-only."""
    return "asyncio"


@dataclass
class A2AServedAgent:
    """A paid agent behind real HTTP, and the requests its function actually ran for."""

    agent: PaidAgent
    url: str
    onchain: dict[str, Any]
    """The card as the agent built it, before any ``tamper``: what the chain holds."""
    calls: list[str] = field(default_factory=list)

    @property
    def pay_to(self) -> str:
        return self.agent.terms.pay_to




@pytest.fixture
def a2a_agents(
    dev_stack: Manifest, facilitator_url: str
) -> Iterator[Callable[..., A2AServedAgent]]:
    """Start paid agents (``shout`` by default) on loopback; each gets a fresh payee.

    ``tamper`` edits the agent after its on-chain card was taken and before it
    is served: a dishonest agent whose card or offer departs from the chain.
    """
    with contextlib.ExitStack() as stack:

        def start(
            handler: Callable[[str], Awaitable[str]] | None = None,
            *,
            price: str | int = A2A_PRICE,
            facilitator: str | None = None,
            tamper: Callable[[PaidAgent], None] | None = None,
            **options: Any,
        ) -> A2AServedAgent:
            port = stack.enter_context(reserved_port())  # held until the agent stops
            url = f"http://127.0.0.1:{port}/"
            calls: list[str] = []

            async def shout(text: str) -> str:
                calls.append(text)
                return text.upper()

            async def wrapped(text: str) -> str:
                calls.append(text)
                assert handler is not None
                return await handler(text)

            agent = PaidAgent(
                shout if handler is None else wrapped,
                name="Shouter", description="Answers in capitals.", url=url, price=price,
                pay_to=Account.create().address, token=dev_stack.token,
                network=dev_stack.network, facilitator=facilitator or facilitator_url,
                **options,
            )
            onchain = agent.onchain_card()
            if tamper is not None:
                tamper(agent)
            stack.enter_context(serve_in_thread(agent.app(), port=port))
            return A2AServedAgent(agent, url, onchain, calls)

        yield start


@dataclass
class A2AWire:
    """Every HTTP exchange of an httpx client, decoded, to assert what went on the wire."""

    exchanges: list[tuple[httpx.Request, httpx.Response, Any]] = field(default_factory=list)

    def rpc(self) -> list[tuple[dict[str, Any], dict[str, Any], httpx.Response]]:
        """(request JSON, response JSON, response) of the JSON-RPC calls, in order."""
        out = []
        for request, response, body in self.exchanges:
            if request.method == "POST":
                out.append((json.loads(request.content), body, response))
        return out


@pytest.fixture
async def a2a_wire() -> Any:
    """An httpx.AsyncClient that records; yields (client, recorder)."""
    wire = A2AWire()

    async def record(response: httpx.Response) -> None:
        await response.aread()
        try:
            body = response.json()
        except ValueError:
            body = None
        wire.exchanges.append((response.request, response, body))

    async with httpx.AsyncClient(timeout=60, event_hooks={"response": [record]}) as http:
        yield http, wire


def a2a_balance(chain: Chain, manifest: Manifest, owner: str) -> int:
    return token_balance(chain, manifest.token.address, owner)


def a2a_assert_transfer(
    chain: Chain, manifest: Manifest, tx_hash: str, *, payer: str, pay_to: str, amount: int
) -> None:
    """The settlement transaction is mined and moved exactly ``amount`` from payer to payee."""
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    transfers = [
        log for log in receipt["logs"]
        if log["address"].lower() == manifest.token.address.lower()
        and log["topics"][0].hex().removeprefix("0x") == TRANSFER_TOPIC
    ]
    assert len(transfers) == 1
    topics = transfers[0]["topics"]
    assert topics[1].hex()[-40:].lower() == payer[2:].lower()
    assert topics[2].hex()[-40:].lower() == pay_to[2:].lower()
    assert int(transfers[0]["data"].hex(), 16) == amount
