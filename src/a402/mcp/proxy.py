"""A paywall in front of an existing MCP server: the server's tools, priced, unchanged.

The proxy is an MCP server (the official SDK's low-level ``Server``) whose ``tools/list``
is the upstream's and whose ``tools/call`` goes through :func:`a402.mcp.server.protect`
(:class:`~a402.mcp.paywall.ToolPaywall`: x402 MCP wire, settle after the upstream's
success, exactly once across processes with a shared ledger) before it is forwarded
upstream. The upstream is reached over streamable HTTP (``Upstream.http(url)``) or
started as a child speaking stdio (``Upstream.command([...])``); the proxy serves
streamable HTTP (:func:`proxy_app`) or stdio (:func:`serve_stdio`).

Forwarded upstream: the tool's name and arguments only. The request's ``_meta`` (and
with it the payment) stays at the proxy: the upstream never sees a payment, and cannot
be made to settle or replay one. The upstream's result comes back as it is, plus the
receipt; an upstream error result, or an upstream that cannot be reached, is not charged.
Only the paywall speaks for payments (:func:`upstream_result`): an upstream result posing
as an x402 offer, or carrying a receipt, is not passed on as one.

Bounds: an HTTP body is refused above ``limits`` (size, JSON depth, number length:
413/400 with a reason, :class:`a402.serving.BoundedJsonBodies`) before the MCP SDK
decodes it; the payment in ``_meta`` is bounded again on its own (:mod:`a402.mcp.wire`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from mcp import ClientSession, types
from mcp.client import streamable_http
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from a402.mcp import wire
from a402.mcp.paywall import ToolPaywall
from a402.mcp.server import bounded_app, protect
from a402.wire.jsonstrict import DEFAULT_LIMITS, JsonLimits

if TYPE_CHECKING:  # the A402 code loads only for a proxy that sells 'a402' tools
    from a402.provider.a402_config import A402Config

log = logging.getLogger("a402.mcp.proxy")

MCP_PATH = "/mcp"

UPSTREAM_FAILED = "upstream_failed"


class UpstreamFailed(Exception):
    """The upstream could not be started or did not complete the MCP handshake, before the
    proxy served: no call was answered, so no payment was taken."""

    reason = UPSTREAM_FAILED

    def __init__(self, upstream: Upstream, cause: BaseException) -> None:
        self.upstream = upstream
        super().__init__(f"the upstream MCP server {str(upstream)!r} did not start or "
                         f"answer the MCP handshake: {_describe(cause)}")


def _describe(error: BaseException) -> str:
    """The innermost cause of a startup failure, in one line (a task group's exception
    group unwrapped to its first leaf: the SDK starts the child in one)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True)
class Upstream:
    """Where the protected MCP server is: a streamable HTTP URL, or a command to start."""

    url: str | None = None
    argv: tuple[str, ...] = ()
    env: dict[str, str] | None = field(default=None, hash=False)
    timeout: float = 60.0

    @classmethod
    def http(cls, url: str, *, timeout: float = 60.0) -> Upstream:
        return cls(url=url, timeout=timeout)

    @classmethod
    def command(cls, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Upstream:
        if not argv:
            raise ValueError("the upstream command is empty")
        return cls(argv=tuple(argv), env=env)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[ClientSession]:
        """An initialized session with the upstream, for as long as the context lasts."""
        async with contextlib.AsyncExitStack() as stack:
            if self.url is not None:
                read, write, _ = await self._http_streams(self.url, stack)
            else:
                params = StdioServerParameters(command=self.argv[0], args=list(self.argv[1:]),
                                               env=self.env)
                read, write = await stack.enter_async_context(stdio_client(params))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            yield session

    async def _http_streams(self, url: str, stack: contextlib.AsyncExitStack) -> Any:
        """The SDK's streamable HTTP client: ``streamable_http_client`` with an httpx client
        of ours where it exists (newer 1.x), else the older ``streamablehttp_client``."""
        current = getattr(streamable_http, "streamable_http_client", None)
        if current is None:
            return await stack.enter_async_context(
                streamable_http.streamablehttp_client(url, timeout=self.timeout))
        client = await stack.enter_async_context(httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, read=max(self.timeout, 300.0))))
        return await stack.enter_async_context(current(url, http_client=client))

    def __str__(self) -> str:
        return self.url if self.url is not None else " ".join(self.argv)


def proxy_server(upstream: ClientSession, paywall: ToolPaywall,
                 name: str = "a402-mcp-paywall") -> Server[Any, Any]:
    """The proxying MCP server over an initialized upstream session, behind ``paywall``."""
    server: Server[Any, Any] = Server(name)

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return (await upstream.list_tools()).tools

    @server.call_tool(validate_input=False)  # the upstream validates its own arguments
    async def call_tool(tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return upstream_result(await upstream.call_tool(tool, arguments))

    protect(server, paywall)
    return server


UPSTREAM_ASKED_FOR_PAYMENT = "upstream_asked_for_payment"


def upstream_result(result: types.CallToolResult) -> types.CallToolResult:
    """The upstream's result as the proxy may pass it on: the paywall alone speaks for
    payments. A result posing as an x402 offer is replaced by an error (the upstream never
    receives a payment, so a client paying it would pay for nothing), and a receipt in its
    ``_meta`` is dropped (only the paywall's own receipt is attached, for a paid tool)."""
    if wire.required_of(result) is not None:
        return wire.error_result(UPSTREAM_ASKED_FOR_PAYMENT,
                                 "the upstream MCP server asked for a payment itself; this "
                                 "paywall does not forward payments")
    if result.meta and wire.PAYMENT_RESPONSE_META_KEY in result.meta:
        meta = {k: v for k, v in result.meta.items() if k != wire.PAYMENT_RESPONSE_META_KEY}
        return result.model_copy(update={"meta": meta or None})
    return result


async def _connected(upstream: Upstream, stack: contextlib.AsyncExitStack) -> ClientSession:
    """The upstream's session, entered on ``stack``; its failure to connect (only that: not
    an error once serving) as :class:`UpstreamFailed`, the cause logged at debug level."""
    try:
        return await stack.enter_async_context(upstream.connect())
    except Exception as e:  # not BaseException: a cancellation stays one
        log.debug("the upstream %s did not start", upstream, exc_info=True)
        raise UpstreamFailed(upstream, e) from e


class _LazyHandler:
    """The streamable HTTP handler, set once the lifespan has connected the upstream."""

    def __init__(self) -> None:
        self.manager: StreamableHTTPSessionManager | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.manager is None:  # pragma: no cover - the lifespan runs first
            raise RuntimeError("the MCP proxy is not started")
        await self.manager.handle_request(scope, receive, send)


def proxy_app(upstream: Upstream, paywall: ToolPaywall, *,
              limits: JsonLimits = DEFAULT_LIMITS,
              on_ready: Callable[[], None] | None = None,
              on_failure: Callable[[UpstreamFailed], None] | None = None,
              a402: A402Config | None = None, public_url: str | None = None,
              ) -> Starlette | Any:
    """The proxy as an ASGI app serving streamable HTTP at ``/mcp`` (stateless: every
    request stands alone, so replicas behind one load balancer share only the ledger).
    The upstream is connected in the app's lifespan (``on_ready`` runs once it is), and
    the paywall closed with it. With ``a402`` (the provider's A402 side), the tools priced
    ``a402`` are sold in channels at their own endpoints (:mod:`a402.mcp.channels`),
    named from ``public_url`` or each request's base URL.

    An upstream that cannot be connected (a command that does not exist, or exits before
    the handshake) fails the startup with :class:`UpstreamFailed`, given to ``on_failure``
    first (so the command can say so in one line): nothing was served, so nothing was paid.
    Only the connection is caught so: an error once serving, or in the paywall, propagates
    as it is; the cause is logged at debug level."""
    handler = _LazyHandler()
    channels = None
    if a402 is not None:
        from a402.mcp.channels import ToolChannels

        channels = ToolChannels(None, paywall, a402, public_url=public_url)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    session = await _connected(upstream, stack)
                except UpstreamFailed as failed:
                    if on_failure is not None:
                        on_failure(failed)
                    raise
                server = proxy_server(session, paywall)
                if channels is not None:
                    channels.bind(server)
                manager = StreamableHTTPSessionManager(
                    app=server, stateless=True, json_response=True)
                async with manager.run():
                    handler.manager = manager
                    log.info("proxying MCP tools of %s", upstream)
                    if on_ready is not None:
                        on_ready()
                    yield
        finally:
            handler.manager = None
            await paywall.aclose()

    app = Starlette(routes=[Route(MCP_PATH, endpoint=handler)], lifespan=lifespan)
    if channels is None:
        return bounded_app(app, limits)
    # The A402 exchange carries binary frames: in front of the JSON bounds, which the
    # tools' endpoints apply on their own.
    return channels.wrap(bounded_app(app, limits))


async def serve_stdio(upstream: Upstream, paywall: ToolPaywall, *,
                      on_ready: Callable[[], None] | None = None) -> None:
    """Serve the proxy on this process's stdin/stdout until the client closes it.

    ``on_ready`` runs once the upstream has completed the MCP handshake, just before the
    proxy serves (as :func:`proxy_app`'s): whoever it tells that the proxy is ready can
    call a tool that reaches the upstream. An upstream that cannot be connected raises
    :class:`UpstreamFailed` before serving and before ``on_ready``: nothing was announced,
    answered or paid."""
    from mcp.server.stdio import stdio_server

    try:
        async with contextlib.AsyncExitStack() as stack:
            session = await _connected(upstream, stack)  # UpstreamFailed: nothing served
            server = proxy_server(session, paywall)
            if on_ready is not None:
                on_ready()
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
    finally:
        await paywall.aclose()
