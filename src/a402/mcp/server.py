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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from a402.mcp import wire
from a402.mcp.paywall import ToolPaywall
from a402.serving import BoundedJsonBodies, JsonErrors, read_body, send_error
from a402.wire.jsonstrict import DEFAULT_LIMITS, JsonLimits

UNEXPECTED_RESULT = "unexpected_tool_result"
INVALID_JSON = "invalid_json"


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
        try:  # the HTTP request this call came in on (streamable HTTP): its base URL
            http = low.request_context.request
            base_url = str(getattr(http, "base_url", "") or "") or None
        except LookupError:
            base_url = None

        async def run() -> types.CallToolResult:
            answer = await inner(request)
            result = answer.root
            if not isinstance(result, types.CallToolResult):
                return wire.error_result(UNEXPECTED_RESULT,
                                         f"the tool answered {type(result).__name__}")
            return result

        return types.ServerResult(await paywall.call(params.name, meta, run,
                                                    arguments=params.arguments,
                                                    base_url=base_url))

    paid.__a402_paywall__ = paywall  # type: ignore[attr-defined]
    paid.__a402_inner__ = inner  # type: ignore[attr-defined]
    low.request_handlers[types.CallToolRequest] = paid


def inner_handler(server: Any) -> Any:
    """The ``tools/call`` handler :func:`protect` put the paywall in front of: what a tool
    paid by other means (an A402 channel, :mod:`a402.mcp.channels`) runs through."""
    handler = lowlevel_of(server).request_handlers.get(types.CallToolRequest)
    inner = getattr(handler, "__a402_inner__", None)
    if inner is None:
        raise ValueError("the server is not behind a paywall: protect() it first")
    return inner


def bounded_app(app: ASGIApp, limits: JsonLimits = DEFAULT_LIMITS) -> ASGIApp:
    """An MCP server's ASGI app (e.g. ``FastMCP.streamable_http_app()``) with every POST
    body bounded before the SDK decodes it: over ``limits`` (size, JSON depth, number
    length) it is answered 413/400 with the reason, a body that is not UTF-8 400
    (:data:`INVALID_JSON`), and a handler's exception a JSON 500. The SDK decodes a body
    with no depth limit of its own, which a process whose recursion limit was raised
    (py-evm raises it on import) cannot survive at a depth of 100,000."""
    return JsonErrors(BoundedJsonBodies(_Utf8Bodies(app, limits.max_bytes), limits=limits))


class _Utf8Bodies:
    """Refuse a POST body that is not UTF-8 (400 ``invalid_json``) before the MCP SDK,
    which answers such a body with a 500. Sits inside :class:`BoundedJsonBodies`, so the
    body it reads again is already bounded and in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.max_bytes)
        except ConnectionError:
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            await send_error(send, 400, INVALID_JSON, "the body is not UTF-8 JSON")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
