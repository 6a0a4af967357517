"""An agent calling a paid MCP tool: it pays within its limits and says what it paid.

    python examples/mcp_client.py http://127.0.0.1:4406/mcp forecast '{"city": "Paris"}' \
        --key-file .a402/client.key --max 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from a402.client import Budget, token_units_max
from a402.mcp import PayingMCPSession


async def call(url: str, tool: str, arguments: dict[str, object], key: str, maximum: str
               ) -> int:
    async with (streamable_http_client(url) as (read, write, _),
                ClientSession(read, write) as session):
        await session.initialize()
        paying = PayingMCPSession(session, key, max_per_request=token_units_max(maximum),
                                  budget=Budget(1_000_000))
        answer = await paying.call_tool(tool, arguments)
    for block in answer.result.content:
        print(getattr(block, "text", block))
    # What was paid, as the server proved it: "settled" only with a receipt for our payment.
    paid = answer.payment.summary() if answer.payment is not None else {"paid": "nothing"}
    print(json.dumps(paid), file=sys.stderr)
    return 1 if answer.result.isError else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="?", default="{}", help="JSON object")
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--max", default="0.01", help="most to pay per call, in token units")
    args = parser.parse_args()
    key = Path(args.key_file).read_text().strip()
    sys.exit(asyncio.run(call(args.url, args.tool, json.loads(args.arguments), key, args.max)))
