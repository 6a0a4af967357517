"""What every a402 HTTP service puts between the network and its handlers.

A peer's request must never take the process down, and every refusal must
carry a machine-readable reason (``{"error": reason, "message": …}``):

- :func:`read_body` reads a body up to a limit and stops as soon as it is over
  (413 ``request_too_large``), so no handler ever buffers an unbounded body;
- :class:`BoundedJsonBodies` is the same bound, plus the JSON bounds of
  :mod:`a402.wire.jsonstrict`, in front of an application that decodes bodies
  with its own code (a2a-sdk's JSON-RPC endpoint calls ``request.json()``);
- :class:`JsonErrors` is the catch-all middleware: a bug in one request answers
  500 in JSON and the server keeps serving;
- :func:`json_http_errors` makes the framework's own refusals (404 no such path, 405
  wrong method, a FastAPI query that does not validate) JSON with a reason too;
- :func:`run` starts uvicorn with protocol classes whose 400 for an unparsable
  request (control characters in a header, a bad request line) is JSON too.

The JSON limits themselves live in one place, :mod:`a402.wire.jsonstrict`.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from a402.wire.errors import REQUEST_TOO_LARGE, WireError
from a402.wire.jsonstrict import DEFAULT_LIMITS, JsonLimitError, JsonLimits, check_bounds

log = logging.getLogger("a402.serving")

BAD_REQUEST: Final = "bad_request"
INTERNAL_ERROR: Final = "internal_error"


def too_large(limit: int) -> JsonLimitError:
    return JsonLimitError(REQUEST_TOO_LARGE, f"the body exceeds {limit} bytes", 413)


async def read_body(receive: Receive, limit: int, declared: str | None = None) -> bytes:
    """The request body, or :class:`JsonLimitError` (413) as soon as it exceeds ``limit``.

    ``declared`` is the Content-Length header, if any: a body announced too large
    is refused before a byte of it is read. A client that disconnects mid-body
    raises ``ConnectionError``.
    """
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _content_length(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.decode("latin-1")
    return None


async def request_body(request: Request, limit: int) -> bytes:
    """:func:`read_body` for a Starlette request (the body stays readable by the handler)."""
    body = await read_body(request.receive, limit, request.headers.get("content-length"))
    request._body = body  # Starlette's own cache: request.body() / .json() reuse it
    return body


def error_body(reason: str, message: str) -> bytes:
    return json.dumps({"error": reason, "message": message}, separators=(",", ":")).encode()


async def send_error(send: Send, status: int, reason: str, message: str) -> None:
    body = error_body(reason, message)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})


class BoundedJsonBodies:
    """Refuse a request body over ``limits`` before the wrapped app decodes it.

    For requests whose method carries a body (POST, PUT, PATCH) on ``paths``
    (every path if ``None``), the body is read up to ``limits.max_bytes`` and,
    if it is not empty, pre-scanned by :func:`~a402.wire.jsonstrict.check_bounds`;
    a refusal answers 413/400 with the reason. Only bodies that passed reach the
    app, replayed unchanged, so the app's own decoder (whatever recursion it
    does) only ever sees a document at most ``limits.max_depth`` deep.
    """

    def __init__(self, app: ASGIApp, *, limits: JsonLimits = DEFAULT_LIMITS,
                 paths: Iterable[str] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.paths = None if paths is None else frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH")
                or (self.paths is not None and scope["path"] not in self.paths)):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.limits.max_bytes, _content_length(scope))
            if body.strip():
                check_bounds(body, self.limits)
        except ConnectionError:
            return
        except JsonLimitError as e:
            await send_error(send, e.status, e.reason, e.message)
            return
        except WireError as e:  # not UTF-8: not JSON, let the app answer as it does
            log.debug("body passed to the app undecoded: %s", e)
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


class JsonErrors:
    """The catch-all around an app: a request whose handler raises answers 500 in JSON
    (``internal_error``) and the connection stays usable for the next request.

    Added as the app's outermost user middleware (``app.add_middleware(JsonErrors)``), so
    Starlette's own handlers (404, 405, HTTPException) still answer first. Starlette's
    ``exception_handlers={Exception: …}`` would answer too but then re-raise, and uvicorn
    closes the connection under the client. An exception after the response started
    cannot be answered any more: it is re-raised and the connection closed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as e:
            if started:
                raise
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await send_error(send, 500, INTERNAL_ERROR, type(e).__name__)


#: The reason a framework refusal (an ``HTTPException``) is given, by its status.
_HTTP_REASONS: Final = {400: BAD_REQUEST, 401: "unauthorized", 403: "forbidden",
                        404: "not_found", 405: "method_not_allowed", 413: REQUEST_TOO_LARGE,
                        422: BAD_REQUEST}


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = _HTTP_REASONS.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse({"error": reason, "message": str(exc.detail)},
                        status_code=exc.status_code, headers=exc.headers)


async def _invalid_query(_: Request, exc: Exception) -> Response:
    errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
    message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}"
                        for e in errors[:5]) or "the request does not validate"
    return JSONResponse({"error": BAD_REQUEST, "message": message[:500]}, status_code=422)


def json_http_errors(app: Any) -> None:
    """Answer the framework's own refusals of a Starlette or FastAPI ``app`` as every
    a402 refusal is answered, ``{"error": reason, "message": …}``: an unknown path (404
    ``not_found``), a wrong method (405 ``method_not_allowed``, its ``Allow`` header
    kept), a handler's ``HTTPException``, and FastAPI's parameter validation (422
    ``bad_request`` instead of its bare ``{"detail": […]}``)."""
    app.add_exception_handler(HTTPException, _http_error)
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:  # pragma: no cover - FastAPI is a dependency of a402
        return
    app.add_exception_handler(RequestValidationError, _invalid_query)


# ------------------------------------------------------------------ uvicorn


_BAD_REQUEST_BODY: Final = error_body(
    BAD_REQUEST, "the request is not valid HTTP (a control character in a header, a bad "
    "request line or a malformed body framing)")


class JsonH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with its 400 for an unparsable request in JSON."""

    def send_400_response(self, msg: str) -> None:
        _write_400(self.transport, self.server_state.default_headers)


def _write_400(transport: Any, default_headers: list[tuple[bytes, bytes]]) -> None:
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [b"content-type: application/json\r\n",
              b"content-length: " + str(len(_BAD_REQUEST_BODY)).encode() + b"\r\n",
              b"connection: close\r\n", b"\r\n", _BAD_REQUEST_BODY]
    transport.write(b"".join(lines))
    transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn's "auto" would take h11 too
    HTTP_PROTOCOL: type = JsonH11Protocol
else:
    class JsonHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, with its 400 for an unparsable request in JSON."""

        def send_400_response(self, msg: str) -> None:
            _write_400(self.transport, self.server_state.default_headers)

    HTTP_PROTOCOL = JsonHttpToolsProtocol
"""The protocol class for ``uvicorn.Config(http=…)``, chosen as uvicorn's ``auto`` would;
either answers a request it cannot parse with a JSON 400."""


#: The recursion limit of a service process. py-evm and py_ecc raise it to 100,000 on
#: import (for the embedded EVM, which no service runs: they reach their chain over
#: JSON-RPC), deep enough for C-level recursion to overflow an 8 MB stack before it raises.
#: Defence in depth only: the bounded decoders never let a peer's document that deep.
SERVICE_RECURSION_LIMIT: Final = 10_000


def run(app: ASGIApp, *, host: str, port: int, log_level: str = "warning",
        **options: Any) -> None:
    """``uvicorn.run`` with :data:`HTTP_PROTOCOL`, in a process whose recursion limit is at
    most :data:`SERVICE_RECURSION_LIMIT`. Blocks until a signal stops the server; a server
    that could not start (port taken, lifespan failed) exits non-zero (uvicorn's 3), and
    an error that escapes it propagates, so ``a402 …`` exits 1: either way a supervisor
    (systemd ``Restart=on-failure``) restarts it."""
    import uvicorn

    sys.setrecursionlimit(min(sys.getrecursionlimit(), SERVICE_RECURSION_LIMIT))
    # "on", not uvicorn's "auto": under "auto" a lifespan that raises before it answers
    # startup (an MCP paywall whose channel watcher cannot start) is taken for an app
    # without a lifespan, and the server serves unstarted, answering every call 500.
    options.setdefault("lifespan", "on")
    freeze_startup_objects()
    uvicorn.run(app, host=host, port=port, log_level=log_level, http=HTTP_PROTOCOL,
                **options)


def freeze_startup_objects() -> None:
    """Move every object alive now (imported modules, the built app) out of the garbage
    collector's reach, before serving: a service holds some 200,000 of them, all kept
    for its life, and each full collection walked them all again (~100 ms of CPU on the
    thread it happened to interrupt: a paid request's). Objects made later are
    collected as before; nothing frozen is ever freed, which these never were anyway."""
    gc.collect()
    gc.freeze()

