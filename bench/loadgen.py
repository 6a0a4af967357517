"""A lean load generator for the vault benchmark: paid calls on ``POST /v1/invoke`` over aiohttp.

The benchmark's load generator shares the machine's cores with the vault and the
provider it measures, so every microsecond it spends per request is taken from
them. :class:`a402.client.vault.AsyncVaultClient` builds each call through httpx
(~0.7 ms of CPU per request); this client sends the same call on the wire
(the same JSON body, the same signature headers from :func:`a402.wire.vault_api.
sign_request`, its key loaded once in a :class:`~a402.wire.vault_api.RequestSigner`,
a fresh idempotency key each time, the same content type, and the
same polling of a PENDING answer) through one kept-alive aiohttp connection, for
~0.13 ms. It does only paid ``invoke`` calls from the vault's balance (no 428
channel authorization, no deposits or closes: the benchmark leaves those to
:class:`~a402.client.vault.AsyncVaultClient`) and returns the vault's answer as
it came, ``(HTTP status, JSON)``; :func:`paid_of` reads it as
:class:`~a402.client.vault.VaultResult` would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
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
        self.account = account
        self._signer = api.RequestSigner(account)  # the key, loaded once (not per call)
        self.pending_wait = pending_wait
        self._vault: str | None = None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=300),
            timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False)

    async def __aenter__(self) -> LeanVaultClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    async def info(self) -> dict[str, Any]:
        """``GET /v1/info`` (unsigned); remembers the vault (on its chain) calls are signed for."""
        status, data = await self._send("GET", api.API_PREFIX + "/info", None, {})
        if status != 200:
            raise RuntimeError(f"vault info failed: {status} {data}")
        self._vault = api.vault_account(str(data["network"]), str(data["vault"]))
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
            max_price=max_price, idempotency_key=key).to_json()
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
        headers = api.sign_request(self._signer, self._vault, method, path, content or b"")
        if content is not None:
            headers["content-type"] = "application/json"
        return await self._send(method, path, content, headers)

    async def _send(self, method: str, path: str, content: bytes | None,
                    headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with self._session.request(method, self.url + path, data=content,
                                         headers=headers) as response:
            raw = await response.read()
            status = response.status
        try:
            data = json.loads(raw)
        except ValueError:
            return status, {"error": f"http_{status}", "message": raw[:200].decode("latin-1")}
        return status, data if isinstance(data, dict) else {"error": "malformed",
                                                            "message": str(data)}


def paid_of(status: int, data: dict[str, Any]) -> tuple[int, str | None, int | None, int]:
    """(vault HTTP status, outcome, the service's status, amount paid) of an invoke answer,
    read as :meth:`a402.client.vault.VaultResult.from_json` reads it."""
    if status != 200:
        return status, None, None, 0
    response = data.get("response") or {"status": 502}
    payment = data.get("payment")
    return (status, data.get("outcome"), int(response["status"]),
            int(payment["amount"]) if payment else 0)
