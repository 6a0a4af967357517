"""A lean load generator for the vault benchmark: paid calls on ``POST /v1/invoke`` over HTTP/1.1.

The benchmark's load generator shares the machine's cores with the vault and the
provider it measures, so every microsecond it spends per request is taken from
them. :class:`a402.client.vault.AsyncVaultClient` builds each call through httpx
(~0.7 ms of CPU per request); this client sends the same call on the wire
(the same JSON body, the same signature headers from :func:`a402.wire.vault_api.
sign_request`, its key loaded once in a :class:`~a402.wire.vault_api.RequestSigner`,
a fresh idempotency key each time, the same content type, and the same polling of a
PENDING answer) on one kept-alive connection: an :class:`asyncio.Protocol` writing
the request's bytes and reading the response with httptools' C parser (what uvicorn
itself parses with), for ~0.2 ms, half of what the same calls cost through aiohttp.
It does only paid ``invoke`` calls from the vault's balance (no 428 channel
authorization, no deposits or closes: the benchmark leaves those to
:class:`~a402.client.vault.AsyncVaultClient`) and returns the vault's answer as
it came, ``(HTTP status, JSON)``; :func:`paid_of` reads it as
:class:`~a402.client.vault.VaultResult` would.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any, cast

import httptools
from eth_account.signers.local import LocalAccount

from a402.client.vault import DEFAULT_PENDING_WAIT
from a402.wire import vault_api as api


class LeanVaultClient:
    """One simulated client: its key and one keep-alive connection to the vault.

    Use as ``async with``; :meth:`info` is fetched once (it names the vault the
    calls are signed for) and opens the connection, so call it before timing.
    """

    def __init__(self, url: str, account: LocalAccount, *, timeout: float = 120.0,
                 pending_wait: float = DEFAULT_PENDING_WAIT) -> None:
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"the lean client speaks plain HTTP to host:port, not {url}")
        self._host, self._port = parts.hostname, parts.port
        self._host_header = f"host: {parts.netloc}\r\n".encode("latin-1")
        self.account = account
        self._signer = api.RequestSigner(account)  # the key, loaded once (not per call)
        self.timeout = timeout
        self.pending_wait = pending_wait
        self._vault: str | None = None
        self._life = ""
        self._connection: _Connection | None = None

    async def __aenter__(self) -> LeanVaultClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def info(self) -> dict[str, Any]:
        """``GET /v1/info`` (unsigned); remembers the vault (on its chain) calls are signed for."""
        status, data = await self._send("GET", api.API_PREFIX + "/info", None, {})
        if status != 200:
            raise RuntimeError(f"vault info failed: {status} {data}")
        self._vault = api.vault_account(str(data["network"]), str(data["vault"]))
        self._life = str(data["life"])
        return data

    async def invoke(
        self, url: str, *, max_price: int, method: str = "GET",
        headers: Sequence[tuple[bytes, bytes]] = (), content: bytes = b"",
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One paid request, as ``AsyncVaultClient.invoke`` sends it: (HTTP status, JSON).

        A 202 (PENDING) is polled on ``GET /v1/requests/<key>`` every 0.25 s for up to
        ``pending_wait`` seconds, as the client does; any other answer is returned as is.
        """
        if self._vault is None:
            await self.info()
        key = idempotency_key or uuid.uuid4().hex
        body = api.InvokeRequest(
            url=url, method=method.upper(), headers=tuple(headers), body=content,
            max_price=max_price, idempotency_key=key, created_at=int(time.time())).to_json()
        status, data = await self._signed("POST", api.API_PREFIX + "/invoke", body)
        deadline = time.monotonic() + self.pending_wait
        while status == 202 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            status, data = await self._signed("GET", f"{api.API_PREFIX}/requests/{key}", None)
        return status, data

    async def _signed(self, method: str, path: str, body: dict[str, Any] | None
                      ) -> tuple[int, dict[str, Any]]:
        assert self._vault is not None
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = api.sign_request(self._signer, self._vault, method, path, content or b"",
                                   life=self._life)
        if content is not None:
            headers["content-type"] = "application/json"
        return await self._send(method, path, content, headers)

    async def _send(self, method: str, path: str, content: bytes | None,
                    headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join((
            f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._host_header,
            head.encode("latin-1"),
            b"content-length: %d\r\n\r\n" % len(content) if content is not None else b"\r\n",
            content or b""))
        async with asyncio.timeout(self.timeout):
            connection = self._connection
            if connection is None or connection.closed:  # first call, or the vault closed it
                connection = self._connection = await _Connection.open(self._host, self._port)
            try:
                status, raw = await connection.exchange(request)
            except BaseException:
                connection.close()  # out of step (or cut): never reused
                self._connection = None
                raise
        try:
            data = json.loads(raw)
        except ValueError:
            return status, {"error": f"http_{status}", "message": raw[:200].decode("latin-1")}
        return status, data if isinstance(data, dict) else {"error": "malformed",
                                                            "message": str(data)}


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, one request at a time, responses parsed by
    httptools (the C parser uvicorn uses): the least CPU a client can spend per call."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; its (status, body) once the whole response is in."""
        if self._transport is None or self.closed:
            raise ConnectionError("the connection is closed")
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"unparsable response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"the vault closed the connection: {exc}"))

    def _fail(self, error: Exception) -> None:
        self.close()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        if not self._parser.should_keep_alive():
            self.close()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), body))


def paid_of(status: int, data: dict[str, Any]) -> tuple[int, str | None, int | None, int]:
    """(vault HTTP status, outcome, the service's status, amount paid) of an invoke answer,
    read as :meth:`a402.client.vault.VaultResult.from_json` reads it."""
    if status != 200:
        return status, None, None, 0
    response = data.get("response") or {"status": 502}
    payment = data.get("payment")
    return (status, data.get("outcome"), int(response["status"]),
            int(payment["amount"]) if payment else 0)
