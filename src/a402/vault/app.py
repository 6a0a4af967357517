"""The vault's HTTP API (see :mod:`a402.wire.vault_api` for authentication and reasons).

=====================================  =====================================================
``GET  /v1/info``                      who the vault is, its chain, token, deposit offer
``GET  /v1/account``                   balance, conservation terms, channels
``POST /v1/deposits``                  ``{"authorization": EIP-3009 pool deposit}`` or
                                       ``{"transaction": hash}`` (the client's depositToPool)
``POST /v1/withdrawals``               the client's signed pool withdrawal order
                                       ``{"amount", "to", "nonce", "deadline", "signature"}``
``POST /v1/invoke``                    a paid request (:class:`~a402.wire.vault_api.InvokeRequest`)
``GET  /v1/requests/{key}``            the outcome of an earlier ``invoke``
``POST /v1/channels/{cid}/close``      cooperative close, the rest back to the balance
``GET  /healthz``                      chain reachable, worker ticking, active or standby
=====================================  =====================================================

Fail-over (:mod:`a402.vault.lease`): a replica that is not the active one answers
every ``/v1`` call but ``info`` with ``503 {"error": "vault_standby", "active": url}``
and ``Retry-After: 1``, having done nothing (and ``/healthz`` with 503, ``"role":
"standby"``, so a load balancer routes to the active one). An answer computed while
this process was active but sent after its lease lapsed is replaced by that 503 too:
a paused-then-resumed old active answers nothing.

Every ``/v1`` call but ``info`` is signed by the client (401 otherwise, with
the reason). Errors are JSON ``{"error": reason, "message": …}`` with the
status that says who can fix them: 400 the call, 401 its signature, 402 money
(balance, price above the maximum), 404, 409 a conflict (idempotency key,
busy channel), 422 an offer this vault cannot pay, 428 a wallet-funded
channel needs the client's authorization, 502 the provider misbehaved or
refused, 503 the provider or the chain is unreachable (retry). A paid request
answers 200 even if the service's own status is an error: the service's
response is inside; 202 means σ_U is out and the result is not in yet.

A plain Starlette application: every route reads its own body and answers
JSON, so a framework's validation and middleware layers would only add CPU to
each paid request; ``POST /v1/invoke``, the call made once per paid request,
is dispatched ahead of Starlette's router and middleware (its handler answers
every error itself).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from a402 import jsonbytes
from a402.chain.rpc import ChainUnavailable
from a402.evm.address import address_key
from a402.observe import Observer, OperatorRoutes, PaymentFilter, new_request_id, payment_record
from a402.serving import JsonErrors, request_body
from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimitError, JsonLimits, loads_object

from .channels import VaultError
from .service import VaultService

log = logging.getLogger("a402.vault")

#: Every body the vault decodes: its size bound, and the depth and number bounds of
#: :mod:`a402.wire.jsonstrict` (checked without recursion, so no body can crash the vault).
BODY_LIMITS = JsonLimits(max_bytes=api.MAX_CALL_BODY)

class JSONResponse(_StarletteJSON):
    """Starlette's JSON answer, encoded by :mod:`a402.jsonbytes` (an answer per paid call)."""

    def render(self, content: Any) -> bytes:
        return jsonbytes.dumps(content)


Handler = Callable[[api.Authenticated, dict[str, Any], SignedCall],
                   Awaitable[tuple[int, dict[str, Any]]]]


def create_app(service: VaultService, *, observer: Observer | None = None,
               console: bool = False) -> ASGIApp:
    """The vault's app. ``observer`` (default: one with the operator API off) logs one
    JSON line per ``/v1/invoke`` and serves ``/metrics`` and ``/operator/payments`` (the
    calls, read-only, nothing sealed; see :mod:`a402.observe`), on standbys too. With
    ``console``, the operator console at ``/console`` shows the calls, balances, channels
    and their states and the settlement transactions (:mod:`a402.vault.console_view`),
    signed in with the operator token (ValueError without one)."""
    observer = observer if observer is not None else Observer("vault")
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    vault = api.vault_account(service.chain.network, service.address)

    async def authenticated(request: Request, remember: bool
                            ) -> tuple[api.Authenticated, bytes, SignedCall]:
        body = await request_body(request, api.MAX_CALL_BODY)
        now = time.time()
        # The call as signed, checked in the enclave (which recovers its signature once for
        # this check and its own, before it pays or approves anything: invoke, withdraw).
        call = _signed_call(request, body)
        signed = service.vault.authenticate(call, now=now,
                                            window=service.config.timing.auth_window)
        if remember and not await service.store.remember_nonce(
                signed.client, signed.nonce, now=now, keep=2 * service.config.timing.auth_window):
            raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used")
        return signed, body, call

    async def answer(request: Request, handler: Handler, *, remember_nonce: bool = True
                     ) -> JSONResponse:
        """Authenticate, parse, run ``handler``, answer JSON. Without ``remember_nonce``
        the handler records the nonce itself, in its first write."""
        try:
            signed, raw, call = await authenticated(request, remember_nonce)
            body = _decode(raw)
            status, out = await handler(signed, body, call)
        except api.AuthError as e:
            return JSONResponse({"error": e.reason, "message": e.detail}, status_code=401)
        except JsonLimitError as e:  # the body's size, before it was read whole: 413
            return JSONResponse({"error": e.reason, "message": e.message},
                                status_code=e.status)
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
        # 202: ask again for the outcome; 503 (recorded refusals too): transient, call again.
        headers = {"Retry-After": "1"} if status in (202, 503) else None
        return JSONResponse(out, status_code=status, headers=headers)

    async def info(_: Request) -> JSONResponse:
        return JSONResponse(service.info())

    async def account(request: Request) -> JSONResponse:
        async def handler(signed: api.Authenticated, _: dict[str, Any], __: SignedCall
                          ) -> tuple[int, dict[str, Any]]:
            await service.channels.write_held()  # every group delivered counts
            return 200, await service.account_view(signed.client)
        return await answer(request, handler)

    async def deposit(request: Request) -> JSONResponse:
        return await answer(request, lambda signed, body, _: service.funds.deposit(
            signed.client, body))

    async def withdraw(request: Request) -> JSONResponse:
        return await answer(request, lambda signed, body, _: service.funds.withdraw(
            signed.client, body))

    async def invoke(request: Request) -> JSONResponse:
        started = time.perf_counter()
        seen: dict[str, Any] = {}
        response = await _invoke(request, seen)
        _log_invoke(observer, request, seen, response, time.perf_counter() - started)
        return response

    async def _invoke(request: Request, seen: dict[str, Any]) -> JSONResponse:
        async def handler(signed: api.Authenticated, body: dict[str, Any], raw: SignedCall
                          ) -> tuple[int, dict[str, Any]]:
            seen["payer"] = signed.client
            try:
                call = api.InvokeRequest.from_json(body)
            except ValueError as e:
                raise VaultError(400, api.BAD_REQUEST, str(e)) from None
            if call.created_at is None:  # an older client: refused before anything is recorded
                raise VaultError(400, api.CLIENT_OUTDATED,
                                 "nothing was paid: sign the call's createdAt (its creation "
                                 "time, kept across retries); this client is older than the "
                                 "vault")
            status, out = await service.invoker.invoke(signed.client, call,
                                                       nonce=signed.nonce, signed=raw)
            seen["out"] = out
            return status, out
        # The call's claim records the nonce in the same write: one commit fewer per call.
        return await answer(request, handler, remember_nonce=False)

    async def request_outcome(request: Request) -> JSONResponse:
        key = request.path_params["key"]

        async def handler(signed: api.Authenticated, _: dict[str, Any], __: SignedCall
                          ) -> tuple[int, dict[str, Any]]:
            client = signed.client
            await service.channels.write_held()  # a stream's group answered, not yet written
            row = await run_in_threadpool(service.store.request, f"{address_key(client)}:{key}")
            if row is None:
                raise VaultError(404, api.NOT_FOUND, "no call with this idempotency key")
            return service.invoker.answer_of(row)
        return await answer(request, handler)

    async def close(request: Request) -> JSONResponse:
        cid = request.path_params["cid"]

        async def handler(signed: api.Authenticated, _: dict[str, Any], __: SignedCall
                          ) -> tuple[int, dict[str, Any]]:
            return await service.close_channel(signed.client, cid)
        return await answer(request, handler)

    async def healthz(_: Request) -> JSONResponse:
        lease = service.lease
        role = {} if lease is None else {
            "role": "active" if service.serving() else "standby",
            "lease": (await run_in_threadpool(lease.current)).to_json()}
        if lease is not None and not service.serving():
            return JSONResponse({"status": "standby", "vault": vault, **role},
                                status_code=503, headers={"Retry-After": "1"})
        try:
            block = await run_in_threadpool(lambda: service.chain.w3.eth.block_number)
        except Exception as e:
            return JSONResponse({"status": "degraded", "chain": str(e)[:200], **role},
                                status_code=503)
        return JSONResponse({"status": "ok", "vault": vault, "block": block,
                             "workerTicks": service.worker.ticks,
                             "recovered": service.worker.recovered.is_set(), **role})

    async def no_route(request: Request, error: Exception) -> JSONResponse:
        status = getattr(error, "status_code", 404)
        reason = api.NOT_FOUND if status == 404 else api.BAD_REQUEST
        return JSONResponse({"error": reason, "message": f"no {request.method} "
                             f"{request.url.path} here"}, status_code=status)

    routes = [
        Route("/v1/info", info, methods=["GET"]),
        Route("/v1/account", account, methods=["GET"]),
        Route("/v1/deposits", deposit, methods=["POST"]),
        Route("/v1/withdrawals", withdraw, methods=["POST"]),
        Route("/v1/invoke", invoke, methods=["POST"]),
        Route("/v1/requests/{key:path}", request_outcome, methods=["GET"]),
        Route("/v1/channels/{cid}/close", close, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(lifespan=lifespan, routes=routes,
                    exception_handlers={404: no_route, 405: no_route})
    app.add_middleware(JsonErrors)

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/invoke" \
                and scope["method"] == "POST":
            response = await invoke(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await app(scope, receive, send)

    async def list_payments(wanted: PaymentFilter) -> list[dict[str, Any]]:
        await service.channels.write_held()
        rows = await run_in_threadpool(lambda: service.store.calls(
            since=wanted.since, until=wanted.until, client=wanted.payer,
            provider=wanted.payee, status=wanted.status, limit=wanted.limit))
        return [_call_record(row, service.chain.network, service.token.address)
                for row in rows]

    async def get_payment(key: str) -> dict[str, Any] | None:
        await service.channels.write_held()
        rows = await run_in_threadpool(lambda: service.store.calls(key=key, limit=1))
        return (_call_record(rows[0], service.chain.network, service.token.address)
                if rows else None)

    def observed(inner: ASGIApp) -> ASGIApp:
        routes = OperatorRoutes(inner, observer, list_payments=list_payments,
                                get_payment=get_payment)
        if not console:
            return routes
        from a402.console.operator import with_console
        from a402.vault import console_view

        return with_console(routes, tables=lambda: console_view.tables(service.store))

    if service.lease is None:
        return observed(routed)
    return observed(_active_only(service, routed))


def _call_record(row: dict[str, Any], network: str, asset: str) -> dict[str, Any]:
    return payment_record(
        source="vault", id=row["key"], time=row["created_at"], payer=row["client"],
        payee=row["provider"], amount=row["amount"], scheme="a402",
        status=row["outcome"] or row["state"], network=network, asset=asset,
        transaction=row["transaction"], updated=row["updated_at"], reason=row["reason"],
        url=row["url"], method=row["method"], channelId=row["channel_id"],
        requestId=row["request_id"])


def _log_invoke(observer: Observer, request: Request, seen: dict[str, Any],
                response: JSONResponse, latency: float) -> None:
    """One ``/v1/invoke``'s log line and metrics. The outcome is the call's recorded
    outcome (``paid`` means the client paid) or, for a call refused before it was
    recorded, the refusal's reason as ``refused`` (nothing was paid)."""
    out = seen.get("out") or {}
    payment = out.get("payment") or {}
    fields: dict[str, Any] = {"status": response.status_code}
    if out:
        outcome = str(out.get("outcome") or "accepted")
        fields.update(idempotencyKey=out.get("idempotencyKey"), reason=out.get("reason"),
                      payee=payment.get("provider"), channelId=payment.get("channelId"),
                      transaction=payment.get("transaction"))
    else:
        outcome = "refused" if response.status_code < 500 else "error"
        with contextlib.suppress(ValueError, AttributeError):
            fields["reason"] = json.loads(bytes(response.body)).get("error")
    observer.paid(request_id=new_request_id(request.scope), payer=seen.get("payer"),
                  amount=payment.get("amount"), scheme="a402", outcome=outcome,
                  latency=latency, **fields)


def _active_only(service: VaultService, inner: ASGIApp) -> ASGIApp:
    """Every ``/v1`` call but ``info`` reaches ``inner`` only while this process is the
    active one, and its answer leaves only if it still is when the answer starts;
    otherwise ``503 vault_standby`` (the call never ran: nothing was done), or for a call
    that ran ``503 answer_dropped`` (it may have been paid:
    :meth:`~a402.vault.lease.Lease.not_serving_answer`); the body names the active
    replica's URL if known."""
    lease = service.lease
    assert lease is not None

    def standby(dropped: bool = False) -> JSONResponse:
        return JSONResponse(lease.not_serving_answer(dropped=dropped), status_code=503,
                            headers={"Retry-After": "1"})

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path == "/v1/info":
            await inner(scope, receive, send)
            return
        if not service.serving():
            await (await run_in_threadpool(standby))(scope, receive, send)
            return
        replaced = False

        async def guarded(message: Any) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and not service.serving():
                replaced = True
                log.warning("an answer to %s was dropped: the lease lapsed", path)
                await (await run_in_threadpool(standby, True))(scope, receive, send)
            elif not replaced:
                await send(message)

        await inner(scope, receive, guarded)

    return asgi


#: The headers a call's signature is checked with (:data:`~a402.vault_enclave.SignedCall`
#: keeps only these), as ASGI names them (lowercase bytes).
_AUTH_HEADERS = {name.encode("latin-1"): name for name in (
    api.CLIENT_HEADER, api.TIMESTAMP_HEADER, api.NONCE_HEADER, api.SIGNATURE_HEADER,
    api.LIFE_HEADER)}
#: What may be in a path or a query for it to reach ``request.url`` unchanged.
_PLAIN = re.compile(r"[!$-;=@-\[\]-~]*")  # printable ASCII but space, '"', '#', '<', '>', '?', '\\'


def _signed_call(request: Request, body: bytes) -> SignedCall:
    """The call as its signature covers it: its method, its path and query as Starlette's
    ``request.url`` gives them, its body and its authentication headers (the first of each
    name, as ``request.headers[name]`` reads them).

    Read straight from the ASGI scope, without building ``request.url`` (a URL parsed
    back from the scope) nor ``request.headers``, for a path and query that URL would
    give back unchanged (printable ASCII, nothing it escapes or splits at); any other
    goes through ``request.url``."""
    scope = request.scope
    auth: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = _AUTH_HEADERS.get(name)
        if key is not None and key not in auth:
            auth[key] = value.decode("latin-1")
    path: str = scope["path"]
    query: bytes = scope.get("query_string", b"")
    if _PLAIN.fullmatch(path) and path.startswith("/") and not path.startswith("//") \
            and _PLAIN.fullmatch(query.decode("latin-1")):
        if query:
            path = f"{path}?{query.decode('ascii')}"
    else:
        url = request.url
        path = url.path + (f"?{url.query}" if url.query else "")
    return SignedCall.of(auth, request.method, path, body)


def _decode(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (empty: ``{}``), within :data:`BODY_LIMITS`; else a
    VaultError with the reason (400; a body over the size bound never gets here)."""
    if not raw:
        return {}
    try:
        return loads_object(raw, reason=api.BAD_REQUEST, limits=BODY_LIMITS)
    except JsonLimitError as e:
        raise VaultError(e.status, e.reason, e.message) from None
    except WireError as e:
        raise VaultError(400, api.BAD_REQUEST, f"the body is not a JSON object: {e.message}"
                         ) from None
