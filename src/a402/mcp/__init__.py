"""Paid MCP tools: x402 ``exact`` and ``upto`` over the x402 MCP transport, with the official
``mcp`` SDK.

    from a402.mcp import PayingMCPSession, ToolPaywall, protect

Server side, :class:`ToolPaywall` prices tools and :func:`protect` puts it in front of a
``FastMCP`` (or low-level ``Server``); ``a402 mcp serve`` (:mod:`a402.mcp.proxy`) puts it in
front of any MCP server without changing it. Client side, :class:`PayingMCPSession` wraps
an ``mcp.ClientSession`` and pays within its limits. Both speak the wire of the official
``x402.mcp`` (:mod:`a402.mcp.wire`), so either side can be the x402 SDK's. An ``upto``
tool reports what it used (:mod:`a402.mcp.usage`); a tool priced ``a402`` is sold in
Atomic Service Channels through the payer's vault (:mod:`a402.mcp.channels`, imported
on its own: it loads the A402 provider code).
"""

from __future__ import annotations

from a402.mcp.client import MCPPaymentUnresolved, PaidToolResult, PayingMCPSession
from a402.mcp.paywall import ToolPaywall
from a402.mcp.prices import PriceError, ToolPrice, parse_tool_spec
from a402.mcp.server import bounded_app, protect
from a402.mcp.usage import USAGE_META_KEY, report_usage
from a402.mcp.wire import PAYMENT_META_KEY, PAYMENT_RESPONSE_META_KEY

__all__ = [
    "PAYMENT_META_KEY",
    "PAYMENT_RESPONSE_META_KEY",
    "USAGE_META_KEY",
    "MCPPaymentUnresolved",
    "PaidToolResult",
    "PayingMCPSession",
    "PriceError",
    "ToolPaywall",
    "ToolPrice",
    "bounded_app",
    "parse_tool_spec",
    "protect",
    "report_usage",
]
