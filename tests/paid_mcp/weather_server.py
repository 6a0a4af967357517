"""An ordinary, unpaid MCP server (official SDK's FastMCP) for the paywall tests.

Run as a script it speaks MCP on stdio (``a402 mcp serve --upstream-command``);
``app()`` is the same server over streamable HTTP. It counts its tool runs in a file
named by ``WEATHER_RUNS`` (if set), so a test can see how often a tool really ran.
"""

from __future__ import annotations

import os
from typing import Any

from mcp.server.fastmcp import FastMCP


def build() -> FastMCP:
    mcp = FastMCP("weather")

    def count(tool: str) -> None:
        path = os.environ.get("WEATHER_RUNS")
        if path:
            with open(path, "a") as f:
                f.write(tool + "\n")

    @mcp.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather in a city."""
        count("forecast")
        return f"sunny in {city}, 21 C"

    @mcp.tool()
    def broken(city: str) -> str:
        """A tool whose backend is down: it always fails."""
        count("broken")
        raise RuntimeError(f"the weather service for {city} is down")

    @mcp.tool()
    def echo(text: str) -> str:
        """A free tool."""
        count("echo")
        return text

    return mcp


def app() -> Any:
    return build().streamable_http_app()


if __name__ == "__main__":
    build().run("stdio")
