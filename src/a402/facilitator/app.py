"""The facilitator's HTTP face, wire compatible with x402 facilitators.

Status codes follow the x402 convention: a negative verdict is still HTTP 200
(``isValid: false`` / ``success: false``) because it is an answer; 400 is for a
body that is not a facilitator request at all; 503 means the chain could not
be reached or failed to answer (any transport error, timeout, or answer that
is not JSON-RPC), this request moved no funds, and the same call can be retried;
or that the journal's database could not be reached (``journal_unavailable``),
and the same call can be retried to learn the outcome. A body over the
bounds of :data:`BODY_LIMITS` is refused before it is decoded (413
``request_too_large``; 400 ``json_too_deep`` / ``json_number_too_long``), and a
request whose handler fails unexpectedly answers 500 in JSON: no request body
can take the process down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from a402.chain.rpc import ChainUnavailable, RpcError
from a402.facilitator.core import Facilitator
from a402.facilitator.store import Settlement
from a402.observe import Observer, OperatorRoutes, PaymentFilter, new_request_id, payment_record
from a402.serving import JsonErrors, json_http_errors, request_body
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimitError, JsonLimits, loads_object

log = logging.getLogger("a402.facilitator")

JOURNAL_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)
"""The journal's database did not answer: refused or lost connections, a full pool,
a lock another replica held too long."""

ANSWERED = (JsonLimitError, WireError, ChainUnavailable, RpcError, *JOURNAL_UNREACHABLE)
"""The failures answered in JSON with their own reason (the rest are bugs: 500)."""

#: A verify or settle body is a few KB (the payload, the requirements, their ``extra``).
BODY_LIMITS = JsonLimits(max_bytes=256 * 1024)


def create_app(facilitator: Facilitator, *, reconcile_every: float = 5.0,
               observer: Observer | None = None, console: bool = False) -> FastAPI:
    """The facilitator's app. ``observer`` (default: one with the operator API off) logs
    one JSON line per ``/settle`` and serves ``/metrics`` and ``/operator/payments`` (the
    journal, read-only; see :mod:`a402.observe`). With ``console``, the operator console
    at ``/console`` shows the journal (settlements and their transactions) and the
    settlements by state, signed in with the operator token (ValueError without one)."""
    stop = threading.Event()
    observer = observer if observer is not None else Observer("facilitator")

    def reconcile_loop() -> None:
        while not stop.wait(reconcile_every):
            try:
                facilitator.reconcile()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("reconciliation round failed")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(ChainUnavailable):
            await run_in_threadpool(facilitator.reconcile)
        worker = threading.Thread(target=reconcile_loop, name="a402-reconciler", daemon=True)
        worker.start()
        yield
        stop.set()
        worker.join(timeout=reconcile_every + 1)

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN. /openapi.json stays.
    app = FastAPI(title="a402 facilitator", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.add_middleware(JsonErrors)
    json_http_errors(app)

    async def list_payments(wanted: PaymentFilter) -> list[dict[str, Any]]:
        rows = await run_in_threadpool(
            lambda: facilitator.store.journal(
                since=wanted.since, until=wanted.until, payer=wanted.payer,
                pay_to=wanted.payee, state=wanted.status, limit=wanted.limit))
        return [_journal_record(row, created) for row, created in rows]

    async def get_payment(key: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            row = facilitator.store.get(key)
            if row is None:
                return None
            return _journal_record(row, facilitator.store.created_at(key) or row.updated_at)
        return await run_in_threadpool(read)

    app.add_middleware(OperatorRoutes, observer=observer, list_payments=list_payments,
                       get_payment=get_payment)
    if console:
        from a402.console import Console, Table
        from a402.console.operator import operator_check, operator_reader

        async def tables() -> list[Table]:
            counts = await run_in_threadpool(facilitator.store.count_by_state)
            return [Table("Settlements by state", ("state", "settlements"),
                          sorted(counts.items()))]

        app.add_middleware(Console, service="facilitator",  # outermost: added last
                           check_token=operator_check(observer),
                           read=operator_reader(list_payments, tables))
    app.state.observer = observer

    async def answer(request: Request, handler: Any, *, logged: bool = False
                     ) -> JSONResponse:
        started = time.perf_counter()
        body: dict[str, Any] | None = None
        result: Any = None
        try:
            raw = await request_body(request, BODY_LIMITS.max_bytes)
            body = loads_object(raw, limits=BODY_LIMITS)
            result = await run_in_threadpool(handler, body)
            response = JSONResponse(result.to_wire())
        except ANSWERED as e:
            response = _failure(e)
        except Exception:
            if logged:  # a bug: JsonErrors answers 500; the request is still logged
                _log_settle(observer, request, body, None,
                            JSONResponse({"error": "internal_error"}, status_code=500),
                            time.perf_counter() - started)
            raise
        if logged:
            _log_settle(observer, request, body, result, response,
                        time.perf_counter() - started)
        return response

    def _failure(error: Exception) -> JSONResponse:
        if isinstance(error, JsonLimitError):
            return JSONResponse({"error": error.reason, "message": error.message},
                                status_code=error.status)
        if isinstance(error, WireError):
            return JSONResponse({"error": error.reason, "message": error.message},
                                status_code=400)
        if isinstance(error, ChainUnavailable | RpcError):
            return JSONResponse(
                {"error": "chain_unavailable",
                 "message": f"the chain RPC failed ({error}); this request moved no funds: "
                            "retry it"},
                status_code=503, headers={"Retry-After": "2"},
            )
        # The journal did not answer. Unlike the chain's, this failure may come after a
        # transaction was journaled and sent: the message must not say that nothing moved.
        log.warning("journal unreachable: %s", error)
        return JSONResponse(
            {"error": "journal_unavailable",
             "message": "the facilitator's journal (its database) did not answer in "
                        "time; a settlement already under way goes on: repeat the same "
                        "request for its outcome"},
            status_code=503, headers={"Retry-After": "2"},
        )

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        return await answer(request, facilitator.verify)

    @app.post("/settle")
    async def settle(request: Request) -> JSONResponse:
        return await answer(request, facilitator.settle, logged=True)

    @app.get("/supported")
    async def supported() -> JSONResponse:
        return JSONResponse(facilitator.supported().to_wire())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            block = await run_in_threadpool(lambda: facilitator.chain.w3.eth.block_number)
        except Exception as e:
            return JSONResponse({"status": "degraded", "chain": str(e)[:200]}, status_code=503)
        try:
            settlements = await run_in_threadpool(facilitator.store.count_by_state)
        except JOURNAL_UNREACHABLE as e:
            return JSONResponse({"status": "degraded", "journal": str(e)[:200]}, status_code=503)
        return JSONResponse({
            "status": "ok", "network": facilitator.network, "block": block,
            "signer": facilitator.signer.address, "settlements": settlements,
        })

    return app


def _journal_record(row: Settlement, created: float) -> dict[str, Any]:
    return payment_record(
        source="facilitator", id=row.key, time=created, payer=row.payer, payee=row.pay_to,
        amount=row.amount, scheme=row.scheme, status=str(row.state), network=row.network,
        asset=row.asset, transaction=row.tx_hash, updated=row.updated_at,
        resource=row.resource,
        reason=(row.response or {}).get("errorReason"))


def _log_settle(observer: Observer, request: Request, body: dict[str, Any] | None,
                result: Any, response: JSONResponse, latency: float) -> None:
    """One ``/settle``'s log line and metrics: the outcome is ``settled``, ``pending``,
    ``failed`` (an answer with ``success: false``: nothing moved) or ``error`` (no
    answer: a bad body, or the chain or journal unreachable)."""
    requirements = (body or {}).get("paymentRequirements")
    terms = requirements if isinstance(requirements, dict) else {}
    amount = _short(terms.get("amount", terms.get("maxAmountRequired")))
    # A metrics label takes a bounded set of values, whatever a caller sends.
    named = terms.get("scheme")
    scheme = "exact" if named is None else str(named) if named in ("exact", "upto") else "other"
    fields: dict[str, Any] = {"payee": _short(terms.get("payTo")),
                              "status": response.status_code}
    if result is not None and hasattr(result, "success"):
        outcome = ("settled" if result.success else
                   "pending" if result.error_reason == "settlement_pending" else "failed")
        payer = result.payer
        fields["transaction"] = result.transaction or None
        if result.error_reason:
            fields["reason"] = result.error_reason
    else:
        outcome, payer = "error", None
        with contextlib.suppress(ValueError, AttributeError):
            fields["reason"] = json.loads(bytes(response.body)).get("error")
    observer.paid(request_id=new_request_id(request.scope), payer=payer, amount=amount,
                  scheme=scheme, outcome=outcome, latency=latency, **fields)


def _short(value: Any) -> str | None:
    """A caller's value fit for a log line: a string or integer of at most 80 characters
    (an amount, an address), else None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if len(text) <= 80 else None
