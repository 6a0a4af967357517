"""The search API over an index (FastAPI; reads only, so any number of replicas can serve it).

- ``GET /agents?skill=&q=&max_price=&asset=&network=&min_reputation=&active=&registry=``
  ``&limit=&cursor=`` — agents, best reputation first; ``next_cursor`` pages on.
- ``GET /agents/{address}`` — card (as the contract renders it, with its hash),
  terms, activity, listings, linked ERC-8004 identities (each with its validation
  requests and their latest answers), payment and rating
  counts, and the reputation with every input, weight and exclusion.
- ``GET /healthz`` — cursor (block, hash, time), chain head, lag; 503 before the
  first block is indexed or when the indexer has not polled for ``stale_after``
  seconds.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, HTTPException
from fastapi import Query as Param
from fastapi.responses import JSONResponse

from a402.agents.indexer.search import MAX_LIMIT, BadQuery, Query, Search
from a402.serving import JsonErrors, json_http_errors


def create_app(search: Search, *, stale_after: float | None = None) -> FastAPI:
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN. /openapi.json stays.
    app = FastAPI(title="a402 agent index", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(JsonErrors)
    json_http_errors(app)

    @app.get("/agents")
    def agents(
        skill: str | None = None, q: str | None = None,
        max_price: str | None = Param(None, description="base units of the price asset"),
        asset: str | None = None, network: str | None = None,
        min_reputation: float | None = None, active: bool | None = None,
        registry: str | None = Param(None, description="any, a label (open, curated) or an "
                                     "address"),
        limit: int = Param(20, ge=1, le=MAX_LIMIT), cursor: str | None = None,
    ) -> JSONResponse:
        try:
            price = None
            if max_price is not None:
                if not max_price.isdigit():
                    raise BadQuery("max_price must be a non-negative integer (base units)")
                price = int(max_price)
            # A ready Response skips FastAPI's jsonable_encoder walk (half the cost of a
            # 100-agent page); the values are plain JSON types already.
            return JSONResponse(search.search(Query(
                skill=skill, q=q, max_price=price, asset=asset, network=network,
                min_reputation=min_reputation, active=active, registry=registry, limit=limit,
                cursor=cursor)))
        except BadQuery as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/agents/{address}")
    def agent(address: str) -> JSONResponse:
        try:
            found = search.agent(address)
        except BadQuery as e:
            raise HTTPException(400, str(e)) from None
        if found is None:
            raise HTTPException(404, f"no indexed agent {address}")
        return JSONResponse(found)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        health = search.health()
        ok = health["cursor"] is not None
        if ok and stale_after is not None:
            polled = health.get("polled_at")
            ok = polled is not None and time.time() - polled <= stale_after
        return JSONResponse({"ok": ok, **health}, status_code=200 if ok else 503)

    return app


__all__ = ["create_app"]
