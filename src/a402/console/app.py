"""The console as ASGI: ``/console`` and its assets answered here, everything else
passed to the service's app untouched.

Safety argument:

- **Read-only.** The only state the console changes is its own cookie (sign in, sign
  out); every page is rendered from what the service's :data:`Reader` returns.
- **The operator token never travels in a URL.** It is typed into a form that POSTs it
  in the body to ``/console/login`` (so no query string, history entry, access log line
  or Referer holds it), and checked by the service's own check (the operator API's,
  constant time). The answer sets a cookie that is not the token but a random session
  value drawn when the process started (a stolen cookie does not reveal the token, reads
  only this console, and dies with the process), ``HttpOnly`` (no script reads it),
  ``SameSite=Strict`` (no other site's page sends it), ``Path`` the console's prefix,
  ``Secure`` over HTTPS; it is compared in constant time (:func:`hmac.compare_digest`).
  A request without the right cookie gets the sign-in form (GET) or 401 and no data.
- **No foreign code, no inline code.** Every answer carries ``Content-Security-Policy:
  default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src
  'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'``: the page can run
  only the console's own script file, load nothing from another origin, and not be
  framed. Values are escaped where they are written (:mod:`a402.console.page`).
- A sign-in or sign-out POST whose ``Origin`` is another site's is refused (403), so no
  page elsewhere can sign an operator in or out. Bodies are bounded
  (:func:`a402.serving.read_body`, 4 KiB) and answers are not cached.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from a402.console.page import ConsoleData, console_page, login_page, panel_page
from a402.serving import read_body
from a402.wire.jsonstrict import JsonLimitError

log = logging.getLogger("a402.console")

Reader = Callable[[], Awaitable[ConsoleData]]
TokenCheck = Callable[[str], bool]

PREFIX: Final = "/console"
COOKIE: Final = "a402_console"
LOGIN_BODY_LIMIT: Final = 4096
MIN_TOKEN: Final = 16

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
              "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
              "base-uri 'none'")
SECURITY_HEADERS: Final = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
ASSETS: Final = {"console.js": b"text/javascript; charset=utf-8",
                 "console.css": b"text/css; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files("a402.console").joinpath(name).read_bytes()


def token_check(token: str) -> TokenCheck:
    """A check against one operator token (16+ characters), in constant time."""
    if not token or len(token) < MIN_TOKEN:
        raise ValueError(f"the console needs an operator token of {MIN_TOKEN}+ characters")
    expected = token.encode()
    return lambda given: hmac.compare_digest(given.encode(), expected)


class Console:
    """``app`` with the operator console at ``/console``.

    ``check_token`` says whether a typed token is the service's operator token (the one
    its operator API asks for: :func:`token_check`, or the operator API's own check);
    ``read`` returns what the page shows, and is called once per page or refresh by a
    signed-in operator only.
    """

    def __init__(self, app: ASGIApp, *, service: str, check_token: TokenCheck,
                 read: Reader) -> None:
        self.app = app
        self.service = service
        self.read = read
        self.check_token = check_token
        self._session = secrets.token_hex(32).encode()
        self._assets = {name: _asset(name) for name in ASSETS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        await self._console(path[len(PREFIX):] or "/", scope, receive, send)

    async def _console(self, sub: str, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        name = sub.lstrip("/")
        if name in ASSETS and method in ("GET", "HEAD"):
            await _send(send, 200, self._assets[name], ASSETS[name])
            return
        if method == "POST" and sub in ("/login", "/logout") and not _same_origin(scope):
            await _send(send, 403, b"a form of another site cannot sign in or out here",
                        b"text/plain; charset=utf-8")
            return
        if sub == "/login" and method == "POST":
            await self._login(scope, receive, send)
            return
        if sub == "/logout" and method == "POST":
            await _send(send, 303, b"", b"text/plain", [
                (b"location", PREFIX.encode()), (b"set-cookie", self._cookie(scope, b""))])
            return
        if sub not in ("/", "/panel"):
            await _send(send, 404, b"no such console page", b"text/plain; charset=utf-8")
            return
        if method not in ("GET", "HEAD"):
            await _send(send, 405, b"the console only reads (GET)",
                        b"text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")])
            return
        if not self._signed_in(scope):
            if sub == "/panel":
                await _send(send, 401, b"sign in again", b"text/plain; charset=utf-8")
            else:
                await _html(send, 200, login_page(self.service, PREFIX))
            return
        data = await self.read()
        page = console_page if sub == "/" else panel_page
        await _html(send, 200, page(self.service, data, PREFIX))

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _header(scope, b"content-length")
        try:
            raw = await read_body(receive, LOGIN_BODY_LIMIT, declared)
        except JsonLimitError:
            await _send(send, 413, b"the sign-in form is too large", b"text/plain")
            return
        except ConnectionError:
            return
        given = dict(parse_qsl(raw.decode("utf-8", "replace"))).get("token", "")
        if not given.strip() or not self.check_token(given.strip()):
            log.warning("console sign-in refused (wrong operator token)")
            await _html(send, 401, login_page(
                self.service, PREFIX, error="That is not this service's operator token."))
            return
        await _send(send, 303, b"", b"text/plain", [
            (b"location", PREFIX.encode()), (b"set-cookie", self._cookie(scope, self._session))])

    def _cookie(self, scope: Scope, value: bytes) -> bytes:
        attributes = f"; Path={PREFIX}; HttpOnly; SameSite=Strict"
        if not value:
            attributes += "; Max-Age=0"
        if scope.get("scheme") == "https":
            attributes += "; Secure"
        return COOKIE.encode() + b"=" + value + attributes.encode()

    def _signed_in(self, scope: Scope) -> bool:
        raw = _header(scope, b"cookie")
        if raw is None:
            return False
        for part in raw.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self._session):
                return True
        return False


def _same_origin(scope: Scope) -> bool:
    """Does a POST come from this console's own page? Browsers send ``Origin`` with every
    form POST; one naming another host (or ``null``) is another site's form. A request
    without it (a script, curl) is not a browser that another site drives."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = _header(scope, b"host")
    return host is not None and origin.partition("://")[2] == host


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value).decode("latin-1")
    return None


async def _html(send: Send, status: int, page: str) -> None:
    await _send(send, status, page.encode(), b"text/html; charset=utf-8")


async def _send(send: Send, status: int, body: bytes, content_type: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
