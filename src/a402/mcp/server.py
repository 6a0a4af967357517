"""Paid tools on an MCP server built with the official ``mcp`` SDK, without touching them.

    mcp = FastMCP("weather")

    @mcp.tool()
    def forecast(city: str) -> str: ...

    protect(mcp, ToolPaywall({"forecast": "0.001"}, pay_to=..., token=usdc,
                             network="eip155:8453", facilitator="https://..."))

:func:`protect` wraps the server's ``tools/call`` handler: a call of a priced tool goes
through :meth:`ToolPaywall.call` (the x402 MCP wire, settle after success, exactly once),
every other request (``tools/list``, free tools, resources, prompts) is the server's as
before. The tools' code does not change and never sees an unpaid call of a priced tool.
"""

from __future__ import annotations

from typing import Any

from mcp import types
from mcp.server.lowlevel import Server

from a402.mcp import wire
from a402.mcp.paywall import ToolPaywall

UNEXPECTED_RESULT = "unexpected_tool_result"


def lowlevel_of(server: Any) -> Server[Any, Any]:
    """The low-level ``Server`` of a ``FastMCP`` (its ``_mcp_server``), or ``server`` itself."""
    low = getattr(server, "_mcp_server", server)
    if not isinstance(low, Server):
        raise TypeError(f"expected an mcp Server or FastMCP, got {type(server).__name__}")
    return low


def protect(server: Any, paywall: ToolPaywall) -> None:
    """Put ``paywall`` in front of ``server``'s tools (a FastMCP or a low-level ``Server``
    with its ``call_tool`` handler registered). Idempotent per server: protecting twice
    raises rather than charging twice."""
    low = lowlevel_of(server)
    inner = low.request_handlers.get(types.CallToolRequest)
    if inner is None:
        raise ValueError("the server has no tools/call handler: register its tools first")
    if getattr(inner, "__a402_paywall__", None) is not None:
        raise ValueError("this server is already behind a paywall")

    async def paid(request: types.CallToolRequest) -> types.ServerResult:
        params = request.params
        meta = params.meta.model_extra if params.meta is not None else None

        async def run() -> types.CallToolResult:
            answer = await inner(request)
            result = answer.root
            if not isinstance(result, types.CallToolResult):
                return wire.error_result(UNEXPECTED_RESULT,
                                         f"the tool answered {type(result).__name__}")
            return result

        return types.ServerResult(await paywall.call(params.name, meta, run))

    paid.__a402_paywall__ = paywall  # type: ignore[attr-defined]
    low.request_handlers[types.CallToolRequest] = paid
