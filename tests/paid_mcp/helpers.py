"""Shared pieces of the paid-MCP tests: MCP sessions over real HTTP, token balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.chain.tx import contract_at

PRICE = 1_000  # atomic units: 0.001 of the 6-decimal devnet token
PRICE_TEXT = "0.001"


@asynccontextmanager
async def mcp_session(url: str) -> AsyncIterator[ClientSession]:
    """An initialized official-SDK client session with the MCP server at ``url``."""
    async with (streamable_http_client(url) as (read, write, _),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


def balance(chain: Chain, manifest: Manifest, address: str) -> int:
    token: Any = contract_at(chain, "TestUSDC", manifest.token.address)
    return int(token.functions.balanceOf(address).call())


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)
