"""Tools priced ``a402``: paid inside an Atomic Service Channel, through the payer's vault.

    channels = ToolChannels(mcp, paywall, A402Config(...))   # after protect(mcp, paywall)
    app = channels.wrap(bounded_app(mcp.streamable_http_app()))

A tool priced ``name=a402:PRICE`` is not sold over the MCP session at all. Its call in
the session is answered payment-required with the ``a402`` offer the HTTP provider makes
(:class:`~a402.provider.a402_offer.A402Offer`: endpoint, ASCManager, provider key,
attestation), plus ``extra.mcpUrl``: the tool's own HTTP endpoint,
``POST {base}/mcp/a402/<tool>``, which takes one JSON-RPC ``tools/call`` of that tool and
answers its JSON-RPC response. That endpoint is a route of the a402 provider machinery
the gateway uses (:class:`~a402.provider.a402_payments.A402Payments` in front of a
:class:`~a402.provider.middleware.PaymentMiddleware`), priced at the tool's price. The
payer's vault invokes it (:meth:`a402.client.vault.VaultClient.invoke`): the provider's
enclave runs the call, seals the result, and releases it only against the vault's
payment, in the channel: paid once and delivered, or neither (the ASC's argument, not
this module's). The vault's idempotency key makes a retry return the same result
without paying again, and the channel's counter refuses a replayed payment.

What this module adds, and its safety argument:

- the endpoint runs only the tool its path names: a body that is not one JSON-RPC
  ``tools/call`` of that tool is refused (400, nothing runs, nothing is charged), so a
  payment for a cheap tool cannot buy a dear one;
- a tool that fails (raises, or answers ``isError``) is answered with a status >= 400,
  which the provider's enclave never charges (``service_failed``): as for ``exact``, a
  failed tool costs nothing;
- the tool runs through the server's own ``tools/call`` handler *behind* the paywall
  (:func:`a402.mcp.server.protect` keeps it): the channel payment is the payment; the
  session's paywall never sees these calls;
- the endpoint is also an ordinary x402 route (the middleware offers ``exact`` for it
  over HTTP, as every gateway route): paying it ``exact`` buys the same one call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from mcp import types
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from a402.mcp.paywall import ToolPaywall
from a402.mcp.server import inner_handler
from a402.mcp.wire import MCP_URL
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.provider.middleware import PaymentMiddleware
from a402.serving import read_body, send_error
from a402.wire.a402 import SCHEME_A402, WELL_KNOWN_PREFIX
from a402.wire.errors import WireError
from a402.wire.jsonstrict import DEFAULT_LIMITS, loads_object
from a402.wire.x402 import PaymentRequirements

CHANNEL_PREFIX: Final = "/mcp/a402/"
"""Where each ``a402`` tool's own endpoint is: this plus the tool's (quoted) name."""
WRONG_CALL: Final = "wrong_tool_call"
"""Reason: the body is not one JSON-RPC ``tools/call`` of the tool the path names."""
TOOL_FAILED_STATUS: Final = 502
"""The status of a failed tool's answer: >= 400, so the provider's enclave charges nothing."""


def channel_path(tool: str) -> str:
    return CHANNEL_PREFIX + quote(tool, safe="")


class ToolChannels:
    """Take A402 channel payments for ``paywall``'s tools priced ``a402`` on ``server``
    (a FastMCP or low-level ``Server`` already behind ``paywall`` by :func:`protect`; or
    None, and :meth:`bind` it once it exists: until then the endpoints answer 503).

    ``config`` is the provider's A402 side, as for ``a402 gateway``. ``public_url``: the
    base URL payers reach this server at (else each offer names the base URL the MCP
    request came in on). Registers itself with the paywall, whose payment-required
    answers for ``a402`` tools then carry the offer."""

    def __init__(self, server: Any, paywall: ToolPaywall, config: A402Config, *,
                 public_url: str | None = None) -> None:
        tools = {name: price for name, price in paywall.prices.items()
                 if price.scheme == SCHEME_A402}
        if not tools:
            raise ValueError("no tool of this paywall is priced 'a402'")
        self.paywall = paywall
        self.public_url = public_url.rstrip("/") if public_url else None
        self.calls = _ToolCalls(None if server is None else inner_handler(server), set(tools))
        self.payments = PaymentMiddleware(
            self.calls, routes={f"POST {channel_path(t)}": p.amount for t, p in tools.items()},
            pay_to=paywall.pay_to, token=paywall.token, network=paywall.network,
            facilitator=paywall.facilitator_given, ledger=paywall.ledger,
            max_timeout_seconds=paywall.max_timeout_seconds,
            # The resource an x402 payment of the endpoint is bound to is ours to name,
            # not the request's Host (the payer's to choose; see PaymentMiddleware).
            public_url=self.public_url)
        self.app = A402Payments(self.payments, config)
        paywall.channels = self

    def bind(self, server: Any) -> None:
        """Run the paid calls on ``server`` (protected by the paywall) from now on."""
        self.calls.handler = inner_handler(server)

    def requirement(self, tool: str, base_url: str | None) -> PaymentRequirements:
        """The ``a402`` offer for one call of ``tool``: the provider's, plus its endpoint."""
        base = self.public_url or (base_url or "").rstrip("/")
        if not base:
            raise WireError("a402_unavailable", "this paywall does not know its public URL "
                            "(serve it over HTTP, or give public_url)")
        price = self.paywall.prices[tool]
        offer = self.app.requirement(price.amount, base,
                                     max_timeout_seconds=self.paywall.max_timeout_seconds)
        return offer.model_copy(update={"extra": {**(offer.extra or {}),
                                                  MCP_URL: base + channel_path(tool)}})

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` (the MCP server's streamable HTTP app) with the tools' endpoints and the
        A402 exchange (``/.well-known/a402/*``) in front; the lifespan starts and stops the
        channel watcher around ``app``'s own."""
        return _Front(app, self.app)


class _Front:
    def __init__(self, mcp: ASGIApp, channels: A402Payments) -> None:
        self.mcp = mcp
        self.channels = channels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.mcp(scope, self._lifespan(receive), send)
            return
        path = str(scope.get("path", ""))
        if scope["type"] in ("http", "websocket") and (
                path.startswith(CHANNEL_PREFIX) or path.startswith(WELL_KNOWN_PREFIX)):
            await self.channels(scope, receive, send)
            return
        await self.mcp(scope, receive, send)

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.channels.start()
            elif message["type"] == "lifespan.shutdown":
                await self.channels.stop()
            return message

        return wrapped


class _ToolCalls:
    """``POST /mcp/a402/<tool>``: one JSON-RPC ``tools/call`` of that tool, run through the
    server's own handler, answered as its JSON-RPC response (200; a failed tool 502)."""

    def __init__(self, handler: Any, tools: set[str]) -> None:
        self.handler = handler
        self.paths = {channel_path(t): t for t in tools}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        tool = self.paths.get(scope["path"])
        if tool is None or scope["method"] != "POST":
            await send_error(send, 404, "not_found", "no a402 tool at this path")
            return
        handler = self.handler
        if handler is None:  # a status >= 400: nothing is charged
            await send_error(send, 503, "not_started", "the MCP server is not started yet; "
                             "nothing was run or charged")
            return
        try:
            body = await read_body(receive, DEFAULT_LIMITS.max_bytes)
            call = loads_object(body, reason=WRONG_CALL, limits=DEFAULT_LIMITS)
            request_id, params = _tool_call(call, tool)
        except ConnectionError:
            return
        except WireError as e:  # a status >= 400: the enclave charges nothing
            await send_error(send, getattr(e, "status", 400), e.reason,
                             f"nothing was run or charged: {e.message}")
            return
        request = types.CallToolRequest(method="tools/call", params=types.CallToolRequestParams(
            name=tool, arguments=params))
        try:
            answer = (await handler(request)).root
        except Exception as e:  # the tool's failure: answered >= 400, so not charged
            await _respond(send, TOOL_FAILED_STATUS, {
                "jsonrpc": "2.0", "id": request_id,
                "error": {"code": -32603, "message": f"tool {tool!r} failed "
                          f"({type(e).__name__}); nothing was charged"}})
            return
        if not isinstance(answer, types.CallToolResult):
            answer = types.CallToolResult(content=[types.TextContent(
                type="text", text=f"the tool answered {type(answer).__name__}")], isError=True)
        result = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
        await _respond(send, TOOL_FAILED_STATUS if answer.isError else 200,
                       {"jsonrpc": "2.0", "id": request_id, "result": result})


def _tool_call(call: Mapping[str, Any], tool: str) -> tuple[Any, dict[str, Any]]:
    """The id and arguments of a JSON-RPC ``tools/call`` of ``tool``; WireError if not."""
    params = call.get("params")
    if call.get("jsonrpc") != "2.0" or call.get("method") != "tools/call" \
            or not isinstance(params, dict):
        raise WireError(WRONG_CALL, "the body is not a JSON-RPC 2.0 tools/call request")
    if params.get("name") != tool:
        raise WireError(WRONG_CALL, f"this endpoint runs tool {tool!r} only")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise WireError(WRONG_CALL, "arguments must be a JSON object")
    request_id = call.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        raise WireError(WRONG_CALL, "a tools/call request has a string or integer id")
    return request_id, arguments


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    content = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": content})


__all__ = ["CHANNEL_PREFIX", "MCP_URL", "ToolChannels", "channel_path"]
