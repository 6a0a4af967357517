"""An agent calling a paid MCP tool: it pays within its limits and says what it paid.

    python examples/mcp_client.py http://127.0.0.1:4406/mcp forecast '{"city": "Paris"}' \
        --key-file .a402/client.key --max 0.01

A tool sold by usage (x402 ``upto``) is paid only in a token named with ``--asset``
(Permit2 could move any token the wallet allowed it), after ``a402 permit2 approve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from a402.client import Budget, PaymentRefused, Wallet, token_units_max
from a402.mcp import PayingMCPSession


async def call(url: str, tool: str, arguments: dict[str, object], key: str, maximum: str,
               assets: list[str] | None = None) -> int:
    async with (streamable_http_client(url) as (read, write, _),
                ClientSession(read, write) as session):
        await session.initialize()
        paying = PayingMCPSession(session, Wallet(key, assets=assets),
                                  max_per_request=token_units_max(maximum),
                                  budget=Budget(1_000_000))
        try:
            answer = await paying.call_tool(tool, arguments)
        except PaymentRefused as e:  # refused before signing: nothing left the wallet
            print(f"nothing was paid: payment refused ({e})", file=sys.stderr)
            return 3
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
    parser.add_argument("--asset", action="append", default=None, metavar="ADDRESS",
                        help="a token this wallet may pay upto tools in (repeatable)")
    args = parser.parse_args()
    key = Path(args.key_file).read_text().strip()
    sys.exit(asyncio.run(call(args.url, args.tool, json.loads(args.arguments), key, args.max,
                              args.asset)))
