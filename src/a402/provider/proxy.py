"""A small streaming reverse proxy (ASGI → httpx) for the payment gateway.

It forwards method, path (as received, percent-encoding intact), query and
body to one upstream, streaming in both directions, and drops what must not
cross a proxy:

- hop-by-hop headers (RFC 9110 §7.6.1) and any the ``Connection`` header names;
- the payment headers: the upstream has no use for the payer's signed
  authorization, so it never sees it;
- cookies between users: the shared HTTP client keeps no cookie jar, or one
  user's ``Set-Cookie`` would ride along on the next user's request.

It adds ``X-Forwarded-For``/``-Proto``/``-Host``. Upstream unreachable → 502
``upstream_unavailable``; no answer in time → 504 ``upstream_timeout``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final

import httpx
from starlette.types import Receive, Scope, Send

from a402.provider.asgi import header_values
from a402.wire.headers import PAYMENT_SIGNATURE, X_PAYMENT

log = logging.getLogger("a402.gateway")

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
_NOT_FORWARDED: Final = frozenset({"host", PAYMENT_SIGNATURE.lower(), X_PAYMENT.lower()})


class _ClientGone(Exception):
    """The downstream client disconnected while we were reading its body."""


def _no_cookies() -> CookieJar:
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _dropped(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Hop-by-hop names, plus every name listed in ``Connection``."""
    names = {h.encode() for h in HOP_BY_HOP}
    for key, value in headers:
        if key.lower() == b"connection":
            names |= {t.strip().lower() for t in value.split(b",") if t.strip()}
    return names


class ReverseProxy:
    """An ASGI app forwarding every HTTP request to ``upstream_url`` (path prefix allowed)."""

    def __init__(
        self, upstream_url: str, *, timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx.URL(upstream_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream_url!r}")
        self.upstream = url
        self._prefix = url.raw_path.split(b"?", 1)[0].rstrip(b"/")
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, trust_env=False,
                cookies=_no_cookies(), transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _request(self, scope: Scope, receive: Receive) -> httpx.Request:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string", b"")
        target = self._prefix + raw_path + (b"?" + query if query else b"")
        url = self.upstream.copy_with(raw_path=target)

        incoming = list(scope.get("headers", []))
        dropped = _dropped(incoming) | {h.encode() for h in _NOT_FORWARDED}
        headers = [(k, v) for k, v in incoming if k.lower() not in dropped]
        client = scope.get("client")
        forwarded_for = ", ".join([*header_values(scope, "x-forwarded-for"),
                                   *([client[0]] if client else [])])
        headers = [(k, v) for k, v in headers if k.lower() != b"x-forwarded-for"]
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for.encode("latin-1")))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        if host := header_values(scope, "host"):
            headers.append((b"x-forwarded-host", host[0].encode("latin-1")))

        has_body = bool(header_values(scope, "transfer-encoding")) or any(
            v.strip() not in ("", "0") for v in header_values(scope, "content-length")
        )
        content = _body(receive) if has_body else None
        return httpx.Request(scope["method"], url, headers=headers, content=content)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._request(scope, receive)
        try:
            response = await self.client.send(request, stream=True)
        except _ClientGone:
            return
        except httpx.TimeoutException as exc:
            await _error(send, 504, "upstream_timeout", f"the upstream did not answer: {exc!r}")
            return
        except httpx.TransportError as exc:
            log.warning("upstream %s unreachable: %r", self.upstream, exc)
            await _error(send, 502, "upstream_unavailable",
                         f"the upstream could not be reached: {exc!r}")
            return
        try:
            raw = list(response.headers.raw)
            dropped = _dropped(raw)
            headers = [(k.lower(), v) for k, v in raw if k.lower() not in dropped]
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": headers})
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _error(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
