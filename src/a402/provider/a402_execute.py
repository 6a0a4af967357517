"""Running one paid request against the provider's service: buffered, bounded, exact.

On EXEC the enclave hands its host the request it accepted
(:class:`~a402.provider_enclave.Execute`); :class:`Executor` runs it against
the wrapped ASGI app (the provider's service, or ``a402 gateway``'s reverse
proxy to the upstream), fully buffered, and returns either the response or a
:class:`ServiceFailed` — an exception, or no answer within the budget — which
the driver reports to the enclave as ``failed`` (nothing is charged). The body is
bounded by :data:`~a402.provider.asgi.MAX_BUFFERED_BODY`, the size of a sealed result
(``DEFAULT_MAX_BLOB``): a larger or endless one is cut off as it comes and is a
``ServiceFailed("response_too_large")``, so no answer can exhaust the host's memory.

What comes back is exactly what the app sent: status, headers as sent, and
the body's bytes joined, never decoded or re-encoded (behind the gateway the
proxy forwards the upstream's raw bytes, compressed or not). The enclave
hashes and seals those bytes, so what the vault decrypts is what was paid for.

The request's scope is built from the scope of the request that carried the
frame (host, client, server, scheme, state): the paid request looks to the app
as it would have over plain HTTP. In memory, with no carrying request, those
are absent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from starlette.types import ASGIApp, Message

from a402.memo import memo_short
from a402.metering import Unit, readable_request
from a402.provider.a402_streams import (
    StreamError,
    StreamTable,
    group_size,
    stream_id,
    streamable,
    unencoded_request,
)
from a402.provider.asgi import MAX_BUFFERED_BODY, ResponseTooLarge, run_buffered
from a402.provider_enclave import Execute, MeterOf
from a402.wire.a402 import HttpRequest, HttpResponse

log = logging.getLogger("a402.provider.a402")

#: Request headers that describe the transport of the /message call, not the paid request.
_TRANSPORT_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


@dataclass(frozen=True, slots=True)
class ServiceFailed:
    """The service gave no response to charge for: ``reason`` and ``detail`` go to the vault."""

    reason: str
    detail: str


class Executor:
    """Runs paid requests against ``app``; each may take at most ``budget`` seconds.

    A request asking for a stream (``A402-Stream-Group``), or for a stream's next group
    (``A402-Stream``), is served by ``streams`` (:mod:`a402.provider.a402_streams`): one
    group of the service's streamed response per paid request."""

    def __init__(self, app: ASGIApp, *, budget: float, streams: StreamTable | None = None,
                 meter: MeterOf | None = None) -> None:
        self.app = app
        self.budget = budget
        #: The largest response body run and buffered (:class:`ResponseTooLarge` above it).
        self.max_body = MAX_BUFFERED_BODY
        #: The route's metering rule: a stream is refused on a route whose rule reads a
        #: report of the whole response (:func:`~a402.provider.a402_streams.streamable`).
        self.meter = meter
        self.streams = streams if streams is not None else StreamTable(clock=time.monotonic)

    async def run(
        self, paid: Execute, outer: Mapping[str, Any] | None = None
    ) -> HttpResponse | ServiceFailed:
        """The app's response to ``paid.request``, or why there is none."""
        try:
            async with asyncio.timeout(self.budget):  # in this task: no task per request
                return await self._dispatch(paid, outer or {})
        except TimeoutError:
            return ServiceFailed("execution_timeout", "the service did not answer in time")
        except ResponseTooLarge as e:  # cut off as it came: nothing is charged
            log.error("paid request %d on %s withheld: %s", paid.request_id,
                      paid.channel_id.hex(), e)
            return ServiceFailed("response_too_large", str(e))
        except Exception as e:  # the service crashed: nothing is charged
            log.exception("paid request %d on %s failed", paid.request_id,
                          paid.channel_id.hex())
            return ServiceFailed("service_error", type(e).__name__)

    async def _dispatch(self, paid: Execute, outer: Mapping[str, Any]) -> HttpResponse:
        """A stream's next group, a new stream's first, or the whole response."""
        request = paid.request
        try:
            sid = stream_id(request.headers)
            group = None if sid is not None else group_size(request.headers)
            if sid is not None or group is not None:
                target = (request.method.upper(), request.path)
                if self.meter is not None:
                    streamable(self.meter(request.method, request.path))
            if sid is not None:
                return await self.streams.next(paid.channel_id, sid, target)
            if group is not None:
                scope = self.scope(request, outer)
                scope["headers"] = unencoded_request(scope["headers"])
                return await self.streams.open(paid.channel_id, group, self.app, scope,
                                               request.body, target)
        except StreamError as e:  # answered with a status ≥ 400: nothing is charged
            return e.response()
        return await self.execute(request, outer)

    def scope(self, request: HttpRequest, outer: Mapping[str, Any]) -> dict[str, Any]:
        """The ASGI scope of ``request``, from the scope of the request that carried it."""
        headers = [(k, v) for k, v in request.headers if k not in _TRANSPORT_HEADERS]
        if request.body:
            headers.append((b"content-length", str(len(request.body)).encode()))
        if not any(k == b"host" for k, _ in headers):
            headers += [(k, v) for k, v in outer.get("headers", ()) if k == b"host"]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": outer.get("asgi", {"version": "3.0"}),
            "http_version": outer.get("http_version", "1.1"),
            "method": request.method,
            "scheme": outer.get("scheme", "http"),
            "path": request.path,
            "raw_path": _raw_path(request.path),
            "root_path": outer.get("root_path", ""),
            "query_string": request.query,
            "headers": headers,
            "client": outer.get("client"),
            "server": outer.get("server"),
            "extensions": {},
        }
        if "state" in outer:
            scope["state"] = dict(outer["state"])
        return scope

    async def execute(self, request: HttpRequest, outer: Mapping[str, Any]) -> HttpResponse:
        """Run ``request`` against the app, buffered (the service, or the upstream). On a
        route whose rule reads the body, the app is asked only for the codings the rule
        decodes (:func:`~a402.metering.readable_request`): one it cannot (``br``) would
        leave every answer unreadable, refused and never paid."""
        scope = self.scope(request, outer)
        rule = None if self.meter is None else self.meter(request.method, request.path)
        if rule is not None and rule.unit in (Unit.FIELD, Unit.EVENT):
            scope["headers"] = readable_request(scope["headers"])
        sent = False
        done: asyncio.Event | None = None  # made only for an app that listens on

        async def receive() -> Message:
            nonlocal sent, done
            if not sent:
                sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            if done is None:
                done = asyncio.Event()
            await done.wait()  # nothing more will come; an app listening for a disconnect waits
            return {"type": "http.disconnect"}

        try:
            buffered = await run_buffered(self.app, scope, receive, limit=self.max_body)
        finally:
            if done is not None:
                done.set()
        return HttpResponse(buffered.status, tuple(buffered.headers), b"".join(buffered.body))


#: What a path's raw bytes may keep as they are (RFC 3986 ``pchar`` and ``/``).
_PATH_SAFE: Final = "/:@!$&'()*+,;=~"


@memo_short(1024)
def _raw_path(path: str) -> bytes:
    """``scope["raw_path"]`` of a decoded path: the path percent-encoded (paid requests
    repeat their paths, so each is encoded once)."""
    return quote(path, safe=_PATH_SAFE).encode("ascii")


__all__ = ["Executor", "ServiceFailed"]
