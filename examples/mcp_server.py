"""An ordinary MCP server with no payment code (official `mcp` SDK, FastMCP).

`a402 mcp serve --upstream-command 'python examples/mcp_server.py' --tool 'forecast=0.001' ...`
starts it on stdio and charges for `forecast`; `--http PORT` serves it over streamable
HTTP at http://127.0.0.1:PORT/mcp instead (then `a402 mcp serve --upstream URL`).
"""

from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("weather")


@mcp.tool()
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"sunny in {city}, 21 C"


@mcp.tool()
def echo(text: str) -> str:
    """A free tool: the paywall prices only the tools it is told to."""
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    args = parser.parse_args()
    if args.http:
        mcp.settings.port = args.http
        mcp.run("streamable-http")
    else:
        mcp.run("stdio")
