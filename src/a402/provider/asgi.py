"""Small ASGI plumbing the middleware needs: read headers, buffer or amend a response.

Serve-then-settle must hold the app's response back until the payment is
settled: sending the status line first would commit us to a 200 that a failed
settlement then could not take back. So the app runs against a capturing
``send``; settle-first mode instead streams and only amends the status line.

A buffered response is bounded (:data:`MAX_BUFFERED_BODY`): an app (or, behind
``a402 gateway``, an upstream) that sends more is cut off as soon as it does
(:class:`ResponseTooLarge`), so no answer, however large or endless, can exhaust
the process's memory. The caller then withholds it and charges nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Extensions that let an app hand the body to the server out of band (a file
# path, a zero-copy sendfile); a buffering middleware would never see the body.
_OUT_OF_BAND = ("http.response.pathsend", "http.response.zerocopy")


MAX_BUFFERED_BODY: Final = 16 * 1024 * 1024
"""The largest response body buffered before it is paid for (16 MiB): the bound of an A402
sealed result (:data:`a402.wire.a402.DEFAULT_MAX_BLOB`), so one answer is withheld alike
whichever way it was paid. Larger: :class:`ResponseTooLarge`, withheld, nothing charged."""


class ResponseTooLarge(Exception):
    """The app's response body exceeded the buffering limit; what was buffered is dropped."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body exceeds {limit} bytes")
        self.limit = limit


def header_values(scope: Scope, name: str) -> list[str]:
    """All values of a request header (case-insensitive), decoded as latin-1."""
    key = name.lower().encode("latin-1")
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == key]


@dataclass
class BufferedResponse:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    trailers: list[Message] = field(default_factory=list)
    started: bool = False
    trailers_expected: bool = False

    async def replay(self, send: Send, extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        headers = [*self.headers, *_encode(extra_headers)]
        start: dict[str, Any] = {
            "type": "http.response.start", "status": self.status, "headers": headers,
        }
        if self.trailers_expected:
            start["trailers"] = True
        await send(start)
        await send({"type": "http.response.body", "body": b"".join(self.body)})
        for message in self.trailers:
            await send(message)

    def has_header(self, name: str) -> bool:
        key = name.lower().encode("latin-1")
        return any(k.lower() == key for k, _ in self.headers)


async def run_buffered(app: ASGIApp, scope: Scope, receive: Receive, *,
                       limit: int = MAX_BUFFERED_BODY) -> BufferedResponse:
    """Run ``app`` to completion and return what it would have sent.

    :class:`ResponseTooLarge` as soon as the body exceeds ``limit`` bytes: the exception
    is raised from the app's own ``send``, which stops a streaming app (the gateway's
    proxy closes the upstream then), and the body buffered so far is dropped. An app that
    swallows it and returns is refused the same way (nothing more was kept)."""
    captured = BufferedResponse()
    size = 0
    over = False
    extensions = {k: v for k, v in scope.get("extensions", {}).items() if k not in _OUT_OF_BAND}

    async def capture(message: Message) -> None:
        nonlocal size, over
        kind = message["type"]
        if over:
            raise ResponseTooLarge(limit)
        if kind == "http.response.start":
            captured.started = True
            captured.status = int(message["status"])
            captured.headers = list(message.get("headers", []))
            captured.trailers_expected = bool(message.get("trailers", False))
        elif kind == "http.response.body":
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:
                over = True
                captured.body.clear()
                raise ResponseTooLarge(limit)
            captured.body.append(chunk)
        elif kind == "http.response.trailers":
            captured.trailers.append(message)

    try:
        await app({**scope, "extensions": extensions}, receive, capture)
    except Exception:
        if over:
            raise ResponseTooLarge(limit) from None
        raise
    if over:
        raise ResponseTooLarge(limit)
    if not captured.started:
        raise RuntimeError("the application returned without sending a response")
    return captured


def adding_headers(
    send: Send, extra: Iterable[tuple[str, str]], *, defaults: Iterable[tuple[str, str]] = ()
) -> Send:
    """A ``send`` that amends the status line and streams everything else.

    ``extra`` is appended; each of ``defaults`` only when the app did not set
    that header itself.
    """
    encoded = _encode(extra)
    fallback = _encode(defaults)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            headers += encoded + [(k, v) for k, v in fallback if k not in present]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
