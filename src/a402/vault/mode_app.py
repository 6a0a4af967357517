"""Vault mode's HTTP API: a participant's balance, statement and payouts; the operator's
status and settle-now. Every ``/v1/vault`` call is signed like the standard vault's
(:mod:`a402.wire.vault_api`: the signer is the participant, fresh, its nonce used once).

=====================================  =====================================================
``GET  /v1/info``                      the vault's key, its A402Vault, chain, life
``POST /v1/invoke``                    a paid call from the signer's account (as in
                                       standard mode; :mod:`a402.vault.mode_invoke`)
``GET  /v1/requests/{key}``            the answer of the signer's paid call ``key`` (stored)
``GET  /v1/vault/balance``             the signer's free, locked, unconfirmed, queued payout
``GET  /v1/vault/statement``           the signer's latest enclave-signed balance statement
``POST /v1/vault/withdraw``            ``{"amount", "idempotencyKey"?}``: queue a payout to the
                                       signer's address (a key used again: the first answer)
``POST /v1/vault/pull``                ``{"amount"}``: a deposit the next settlement pulls from
                                       the signer's wallet (EIP-3009, no approval): its id,
                                       deadline and the signer's statement counting it
``POST /v1/vault/pull/{id}``           ``{"signature"}``: the signer's EIP-3009 authorization
                                       for that pull (sign it only holding that statement)
``POST /v1/vault/settle-now``          operator only: settle every queued payout now
``GET  /v1/vault/status``              operator only: totals, channels, queue, last settlement
``GET  /healthz``                      the worker's last round
=====================================  =====================================================

Errors are ``{"error": reason, "message": …}``: 400 the call, 401 its signature, 402 the
balance, 403 not the operator, 404 nothing signed yet, 409 a conflict, 503 the vault.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.chain.rpc import ChainUnavailable
from a402.evm.address import address_key
from a402.serving import JsonErrors, json_http_errors, request_body
from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimitError, loads_object

from .mode import NonceHold, VaultModeError, VaultModeService, VaultModeWorker, statement_json
from .mode_invoke import ModeInvoker
from .tunnel import TunnelError

log = logging.getLogger("a402.vault.mode")
#: The nonce a paid call's request holds (set by ``answer`` for the handler it runs).
PAID_NONCE: ContextVar[NonceHold | None] = ContextVar("a402_paid_nonce", default=None)

Handler = Callable[[api.Authenticated, dict[str, Any], SignedCall],
                   Awaitable[tuple[int, Any]]]


def create_mode_app(service: VaultModeService, *, worker: bool = True,
                    invoker: ModeInvoker | None = None) -> Starlette:
    """The vault-mode API; with ``worker``, the app's lifespan runs :class:`VaultModeWorker`
    (deposits, settlement scheduler, watchtower). ``invoker``: pays ``/v1/invoke`` calls
    (without one, the route answers 501 ``not_configured``)."""
    runner = VaultModeWorker(service)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if worker:
            await runner.start()
        if invoker is not None:  # ACKs a process before this one may have owed
            await invoker.start()
        yield
        await runner.stop()
        if invoker is not None:
            await invoker.aclose()

    vault = api.vault_account(service.chain.network, service.address)

    async def answer(request: Request, handler: Handler, *, paid: bool = False
                     ) -> JSONResponse:
        """Authenticate, parse, run ``handler``, answer JSON. The signed request's nonce is
        recorded before the handler runs, or (``paid``: a paid call) held while it runs and
        recorded with the call's answer in its one write (before the answer leaves)."""
        hold = None
        keep = 2 * service.config.auth_window
        try:
            body = await request_body(request, api.MAX_CALL_BODY)
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            now = time.time()
            call = SignedCall.of(request.headers, request.method, path, body)
            if paid:  # checked in the enclave, which keeps what it recovered: the call's
                # own check there (its EXEC) does not recover the signature again
                signed = service.accounts.authenticate(call, now, service.config.auth_window)
            else:
                signed = api.verify_request(call.headers, vault, call.method, path, body,
                                            life=service.accounts.life_id, now=now,
                                            window=service.config.auth_window)
            if paid:
                hold = service.hold_nonce(signed.client, signed.nonce, now)
                if hold is None:
                    raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used")
            elif not await service.remember_nonce(signed.client, signed.nonce, now, keep):
                raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used")
            parsed = loads_object(body) if body else {}
            PAID_NONCE.set(hold)
            status, out = await handler(signed, parsed, call)
        except api.AuthError as e:
            return JSONResponse({"error": e.reason, "message": e.detail}, status_code=401)
        except JsonLimitError as e:
            return JSONResponse({"error": e.reason, "message": e.message}, status_code=e.status)
        except WireError as e:  # not strict JSON (NaN, a duplicate key, bad UTF-8, no object)
            return JSONResponse({"error": e.reason, "message": f"nothing was done: {e.message}"},
                                status_code=400)
        except VaultModeError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except ChainUnavailable as e:
            return JSONResponse({"error": api.CHAIN_UNAVAILABLE, "message": str(e)},
                                status_code=503, headers={"Retry-After": "2"})
        except TunnelError as e:  # before σ_U (after it, the call answers 202)
            return JSONResponse({"error": api.PROVIDER_UNAVAILABLE,
                                 "message": f"nothing was paid: {e}"},
                                status_code=503, headers={"Retry-After": "1"})
        except ValueError as e:
            return JSONResponse({"error": "bad_request", "message": str(e)}, status_code=400)
        except Exception as e:
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": "internal_error", "message": type(e).__name__},
                                status_code=500)
        finally:
            if hold is not None:  # recorded before any answer leaves
                await service.release_nonce(hold, keep)
        return JSONResponse(out, status_code=status)

    def operator(signed: api.Authenticated) -> None:
        if address_key(signed.client) != address_key(service.config.account.address):
            raise VaultModeError(403, "not_operator", "only the vault's operator key may")

    async def info(_: Request) -> JSONResponse:
        return JSONResponse(service.info())

    async def balance(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, _: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            return 200, service.balance(signed.client)
        return await answer(request, h)

    async def statement(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, _: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            return 200, statement_json(service.statement(signed.client))
        return await answer(request, h)

    async def withdraw(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, body: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            raw = body.get("amount")
            text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
            if not (text.isascii() and text.isdigit() and len(text) <= 78):  # ASCII digits only
                raise VaultModeError(400, "bad_request", "nothing was queued: amount is a "
                                     "decimal string of atomic units (ASCII digits)")
            key = body.get("idempotencyKey")
            if key is not None and not isinstance(key, str):
                raise VaultModeError(400, "bad_request", "nothing was queued: idempotencyKey "
                                     "is a string")
            return 202, await _thread(service.withdraw, signed.client, int(text), key)
        return await answer(request, h)

    async def pull(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, body: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            raw = body.get("amount")
            text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
            if not (text.isascii() and text.isdigit() and len(text) <= 78):
                raise VaultModeError(400, "bad_request", "nothing was asked: amount is a "
                                     "decimal string of atomic units (ASCII digits)")
            return 200, await _thread(service.prepare_pull, signed.client, int(text))
        return await answer(request, h)

    async def pull_intent(request: Request) -> JSONResponse:
        pull_id = request.path_params["pull"]

        async def h(signed: api.Authenticated, body: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            raw = body.get("signature")
            try:
                signature = bytes.fromhex(raw.removeprefix("0x")) if isinstance(raw, str) else b""
            except ValueError:
                signature = b""
            if not signature:
                raise VaultModeError(400, "bad_request", "nothing was queued: signature is the "
                                     "pull's EIP-3009 authorization (65 bytes, in hex)")
            return 202, await _thread(service.authorize_pull, signed.client, pull_id, signature)
        return await answer(request, h)

    async def settle_now(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, _: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            operator(signed)
            landed = await _thread(service.settle_now)
            return 200, {"landed": [{"epoch": x.epoch, "tx": x.tx_hash, "payees": x.payees}
                                    for x in landed]}
        return await answer(request, h)

    async def status(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, _: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            operator(signed)
            return 200, await _thread(service.status)
        return await answer(request, h)

    async def invoke(request: Request) -> JSONResponse:
        async def h(signed: api.Authenticated, body: dict[str, Any], call: SignedCall
                    ) -> tuple[int, Any]:
            if invoker is None:
                raise VaultModeError(501, "not_configured",
                                     "this vault pays no calls (no attestation configured)")
            try:
                parsed = api.InvokeRequest.from_json(body)
            except ValueError as e:
                raise VaultModeError(400, api.BAD_REQUEST, str(e)) from None
            return await invoker.invoke(signed.client, parsed, call, nonce=PAID_NONCE.get())
        return await answer(request, h, paid=True)

    async def request_outcome(request: Request) -> JSONResponse:
        key = request.path_params["key"]

        async def h(signed: api.Authenticated, _: dict[str, Any], _call: SignedCall
                    ) -> tuple[int, Any]:
            got = None if invoker is None else await _thread(invoker.outcome_of,
                                                             signed.client, key)
            if got is None:
                raise VaultModeError(404, api.NOT_FOUND, "no paid call of yours with this "
                                     "idempotency key is recorded here")
            return got
        return await answer(request, h)

    async def healthz(_: Request) -> JSONResponse:
        ok = service.broken is None
        return JSONResponse({"ok": ok, "lastTick": runner.last_tick, "broken": service.broken},
                            status_code=200 if ok else 503)

    app = Starlette(lifespan=lifespan, routes=[
        Route("/v1/info", info, methods=["GET"]),
        Route("/v1/invoke", invoke, methods=["POST"]),
        Route("/v1/requests/{key:path}", request_outcome, methods=["GET"]),
        Route("/v1/vault/balance", balance, methods=["GET"]),
        Route("/v1/vault/statement", statement, methods=["GET"]),
        Route("/v1/vault/withdraw", withdraw, methods=["POST"]),
        Route("/v1/vault/pull", pull, methods=["POST"]),
        Route("/v1/vault/pull/{pull:int}", pull_intent, methods=["POST"]),
        Route("/v1/vault/settle-now", settle_now, methods=["POST"]),
        Route("/v1/vault/status", status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
    app.add_middleware(JsonErrors)
    json_http_errors(app)
    return app


async def _thread(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


__all__ = ["create_mode_app"]
