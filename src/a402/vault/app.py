"""The vault's HTTP API (see :mod:`a402.vault.api` for authentication and reasons).

=====================================  =====================================================
``GET  /v1/info``                      who the vault is, its chain, token, deposit offer
``GET  /v1/account``                   balance, conservation terms, channels
``POST /v1/deposits``                  ``{"payload": x402 exact}`` or ``{"transaction": hash}``
``POST /v1/withdrawals``               ``{"amount", "idempotencyKey", "to"?}``
``POST /v1/invoke``                    a paid request (:class:`~a402.vault.api.InvokeRequest`)
``GET  /v1/requests/{key}``            the outcome of an earlier ``invoke``
``POST /v1/channels/{cid}/close``      cooperative close, the rest back to the balance
``GET  /healthz``                      chain reachable, worker ticking
=====================================  =====================================================

Every ``/v1`` call but ``info`` is signed by the client (401 otherwise, with
the reason). Errors are JSON ``{"error": reason, "message": …}`` with the
status that says who can fix them: 400 the call, 401 its signature, 402 money
(balance, price above the maximum), 404, 409 a conflict (idempotency key,
busy channel), 422 an offer this vault cannot pay, 428 a wallet-funded
channel needs the client's authorization, 502 the provider misbehaved or
refused, 503 the provider or the chain is unreachable (retry). A paid request
answers 200 even if the service's own status is an error: the service's
response is inside; 202 means σ_U is out and the result is not in yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from a402.chain.rpc import ChainUnavailable

from . import api
from .channels import VaultError
from .service import VaultService

log = logging.getLogger("a402.vault")

Handler = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


def create_app(service: VaultService) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="a402 vault", version="1", lifespan=lifespan)
    vault = service.address

    async def authenticated(request: Request) -> tuple[str, bytes]:
        body = await _bounded_body(request, api.MAX_CALL_BODY)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        now = time.time()
        signed = api.verify_request(request.headers, vault, request.method, path, body,
                                    now=now, window=service.config.auth_window)
        fresh = await run_in_threadpool(service.store.remember_nonce, signed.client,
                                        signed.nonce, now=now,
                                        keep=2 * service.config.auth_window)
        if not fresh:
            raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used")
        return signed.client, body

    async def answer(request: Request, handler: Handler) -> JSONResponse:
        try:
            client, raw = await authenticated(request)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise VaultError(400, api.BAD_REQUEST, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise VaultError(400, api.BAD_REQUEST, "the body is a JSON object")
            status, out = await handler(client, body)
        except api.AuthError as e:
            return JSONResponse({"error": e.reason, "message": e.detail}, status_code=401)
        except _TooLarge:
            return JSONResponse({"error": api.REQUEST_TOO_LARGE,
                                 "message": f"the body exceeds {api.MAX_CALL_BODY} bytes"},
                                status_code=413)
        except VaultError as e:
            headers = {"Retry-After": "1"} if e.retryable and e.status in (409, 503) else None
            return JSONResponse(e.body(), status_code=e.status, headers=headers)
        except ChainUnavailable as e:
            return JSONResponse({"error": api.CHAIN_UNAVAILABLE, "message": str(e)},
                                status_code=503, headers={"Retry-After": "2"})
        except Exception as e:  # a bug or an outage we did not foresee: say so, in JSON
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": "internal_error", "message": type(e).__name__},
                                status_code=500)
        headers = {"Retry-After": "1"} if status == 202 else None
        return JSONResponse(out, status_code=status, headers=headers)

    @app.get("/v1/info")
    async def info() -> JSONResponse:
        return JSONResponse(service.info())

    @app.get("/v1/account")
    async def account(request: Request) -> JSONResponse:
        async def handler(client: str, _: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return 200, await service.account_view(client)
        return await answer(request, handler)

    @app.post("/v1/deposits")
    async def deposit(request: Request) -> JSONResponse:
        return await answer(request, service.funds.deposit)

    @app.post("/v1/withdrawals")
    async def withdraw(request: Request) -> JSONResponse:
        return await answer(request, service.funds.withdraw)

    @app.post("/v1/invoke")
    async def invoke(request: Request) -> JSONResponse:
        async def handler(client: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            try:
                call = api.InvokeRequest.from_json(body)
            except ValueError as e:
                raise VaultError(400, api.BAD_REQUEST, str(e)) from None
            return await service.invoker.invoke(client, call)
        return await answer(request, handler)

    @app.get("/v1/requests/{key:path}")
    async def request_outcome(request: Request, key: str) -> JSONResponse:
        async def handler(client: str, _: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            row = await run_in_threadpool(service.store.request, f"{client.lower()}:{key}")
            if row is None:
                raise VaultError(404, api.NOT_FOUND, "no call with this idempotency key")
            return service.invoker.answer_of(row)
        return await answer(request, handler)

    @app.post("/v1/channels/{cid}/close")
    async def close(request: Request, cid: str) -> JSONResponse:
        async def handler(client: str, _: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return await service.close_channel(client, cid)
        return await answer(request, handler)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            block = await run_in_threadpool(lambda: service.chain.w3.eth.block_number)
        except Exception as e:
            return JSONResponse({"status": "degraded", "chain": str(e)[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "vault": vault, "block": block,
                             "workerTicks": service.worker.ticks,
                             "recovered": service.worker.recovered.is_set()})

    return app


class _TooLarge(Exception):
    pass


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, or :class:`_TooLarge` as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
