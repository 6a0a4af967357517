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
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from a402.chain.rpc import ChainUnavailable, RpcError
from a402.facilitator.core import Facilitator
from a402.serving import JsonErrors, request_body
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimitError, JsonLimits, loads_object

log = logging.getLogger("a402.facilitator")

JOURNAL_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)
"""The journal's database did not answer: refused or lost connections, a full pool,
a lock another replica held too long."""

#: A verify or settle body is a few KB (the payload, the requirements, their ``extra``).
BODY_LIMITS = JsonLimits(max_bytes=256 * 1024)


def create_app(facilitator: Facilitator, *, reconcile_every: float = 5.0) -> FastAPI:
    stop = threading.Event()

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

    async def answer(request: Request, handler: Any) -> JSONResponse:
        try:
            raw = await request_body(request, BODY_LIMITS.max_bytes)
            body = loads_object(raw, limits=BODY_LIMITS)
            result = await run_in_threadpool(handler, body)
        except JsonLimitError as e:
            return JSONResponse({"error": e.reason, "message": e.message}, status_code=e.status)
        except WireError as e:
            return JSONResponse({"error": e.reason, "message": e.message}, status_code=400)
        except (ChainUnavailable, RpcError) as e:
            return JSONResponse(
                {"error": "chain_unavailable",
                 "message": f"the chain RPC failed ({e}); this request moved no funds: retry it"},
                status_code=503, headers={"Retry-After": "2"},
            )
        except JOURNAL_UNREACHABLE as e:
            # Unlike the chain's, this failure may come after a transaction was
            # journaled and sent: the message must not say that nothing moved.
            log.warning("journal unreachable: %s", e)
            return JSONResponse(
                {"error": "journal_unavailable",
                 "message": "the facilitator's journal (its database) did not answer in "
                            "time; a settlement already under way goes on: repeat the same "
                            "request for its outcome"},
                status_code=503, headers={"Retry-After": "2"},
            )
        return JSONResponse(result.to_wire())

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        return await answer(request, facilitator.verify)

    @app.post("/settle")
    async def settle(request: Request) -> JSONResponse:
        return await answer(request, facilitator.settle)

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
