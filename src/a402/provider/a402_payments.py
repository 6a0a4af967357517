"""``A402Payments``: A402 channel payments, one ASGI middleware in front of ``PaymentMiddleware``.

::

    app = A402Payments(PaymentMiddleware(service, routes=..., ...), A402Config(...))

or, on Starlette/FastAPI, ``app.add_middleware(A402Payments, config=A402Config(...))``
after ``app.add_middleware(PaymentMiddleware, ...)`` (the middleware added last is the
outermost). What it adds to the :class:`PaymentMiddleware` it wraps, and nothing else
(``exact`` behaves exactly as without it, and the middleware never loads this code):

* ``/.well-known/a402/*`` — the exchange, HTTP requests and the WebSocket stream alike —
  is served by :class:`~a402.provider.a402_app.A402Endpoint`, ahead of everything
  else (a priced route that matches the prefix too included). The stream is a
  WebSocket: it must reach the endpoint, not the app (the gateway's proxy refuses
  every WebSocket);
* every 402 of the middleware lists an ``a402`` requirement after ``exact``, in both
  protocol versions (:class:`~a402.provider.a402_offer.A402Offer`, one of the
  middleware's ``alternatives``, :mod:`a402.provider.alternatives`);
* the channel watcher (:class:`~a402.provider.a402_watch.ChannelWatcher`), started
  with the server's lifespan, or by the first A402 request when the server runs none,
  and stopped at shutdown before the middleware closes its ledger and facilitator
  client (their shutdown runs after the wrapped ``receive`` returns).

It owns the runtime, its endpoint and its watcher, and wires them: the runtime runs
each paid request against the app the middleware wraps (not through the middleware: a
channel payment is not an ``exact`` one), priced by the middleware's routes, in the
token and on the network the middleware charges in; the watcher sends the runtime's
channel transactions.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from a402.provider.a402_app import A402Endpoint
from a402.provider.a402_config import A402Config
from a402.provider.a402_offer import A402Offer
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider.a402_streams import STOP_HEADER, stream_id
from a402.provider.a402_watch import ChannelWatcher
from a402.provider.middleware import PaymentMiddleware
from a402.wire.x402 import PaymentRequirements, PaymentRequirementsV1, ResourceInfo


class A402Payments:
    """Take A402 channel payments for the routes ``app`` charges for with ``exact``.

    ``app`` is the :class:`PaymentMiddleware` (directly: its routes price the channel
    payments, its 402s carry their offer); ``config`` is the provider's A402 side
    (:class:`A402Config`: enclave, operator account, chain, ASCManager, policies).
    """

    def __init__(self, app: PaymentMiddleware, config: A402Config) -> None:
        if not isinstance(app, PaymentMiddleware):
            raise TypeError(f"A402Payments wraps a PaymentMiddleware, not {type(app).__name__}")
        self.app = app
        self.endpoint = A402Endpoint(ProviderRuntime(
            config, app=app.app, routes=app.routes, token=app.asset, network=app.network
        ))
        self._watcher: ChannelWatcher | None = None
        driver = self.endpoint.runtime.driver
        driver.observer, driver.price = app.observer, self.endpoint.runtime._price
        app.offer_also(self)

    @property
    def runtime(self) -> ProviderRuntime:
        return self.endpoint.runtime

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._on_lifespan(receive), send)
            return
        if scope["type"] in ("http", "websocket") and self.endpoint.handles(scope):
            await self.start()  # idempotent; also started by the lifespan when there is one
            await self.endpoint(scope, receive, send)
            return
        if scope["type"] == "http":
            sid = stream_id(scope.get("headers", ()), STOP_HEADER)
            if sid is not None:  # a paid stream's payer stops it: free, before the routes
                await self._stop_stream(sid, send)
                return
        await self.app(scope, receive, send)

    async def _stop_stream(self, sid: str, send: Send) -> None:
        """``A402-Stream-Stop: <id>``: end that stream (its service told to stop). The id
        is the capability (128 random bits, known to the stream's payer); stopping moves
        no money, it only ends what nobody has bought yet."""
        stopped = self.runtime.driver.executor.streams.stop(sid)
        body = b'{"stopped":true}' if stopped else b'{"stopped":false}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _on_lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            if message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        return wrapped

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Reload active channels and start the watcher (idempotent)."""
        if self._watcher is not None or not self.runtime.config.watch:
            return
        self._watcher = self.runtime.watcher()
        await self._watcher.start()

    async def stop(self) -> None:
        self.runtime.driver.executor.streams.close()  # every open stream's service stops
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()

    # ------------------------------------------------------- the offer (alternatives)

    def requirement(
        self, amount: int, base_url: str, *, max_timeout_seconds: int
    ) -> PaymentRequirements:
        """The ``a402`` entry of a v2 ``accepts`` (:meth:`A402Offer.requirement`)."""
        return A402Offer(self.runtime).requirement(
            amount, base_url, max_timeout_seconds=max_timeout_seconds)

    def requirement_v1(
        self, amount: int, base_url: str, *, network_v1: str, resource: ResourceInfo,
        max_timeout_seconds: int,
    ) -> PaymentRequirementsV1:
        """The ``a402`` entry of a v1 ``accepts`` (:meth:`A402Offer.requirement_v1`)."""
        return A402Offer(self.runtime).requirement_v1(
            amount, base_url, network_v1=network_v1, resource=resource,
            max_timeout_seconds=max_timeout_seconds,
        )


__all__ = ["A402Payments"]
