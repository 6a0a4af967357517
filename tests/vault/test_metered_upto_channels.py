"""A metered route offered to x402 payers as ``upto`` (``RouteConfig(scheme="upto",
meter=...)``) still takes A402 channel payments when no facilitator answers: a channel
payment never goes through a facilitator, so its 402 (which the vault reads to find the
offer) lists the ``a402`` requirement alone rather than failing with 503, and the vault
pays what the rule measures. An x402 payment header still gets the 503 (its upto offer
cannot be made without the facilitator's address). Real HTTP, anvil, balances."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI, Request

from a402.background import serve_in_thread
from a402.metering import parse_rule
from a402.provider.routes import RouteConfig
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from a402.wire.headers import PAYMENT_REQUIRED, PAYMENT_SIGNATURE, decode_payment_required
from tests.a402_exchange.helpers import World

from .helpers import assert_conserved, client_of, running_vault

pytestmark = pytest.mark.anvil

LLM = parse_rule("per-field:usage.total_tokens:0.00001,max=0.01", 6)


def service() -> FastAPI:
    app = FastAPI()

    @app.post("/llm")
    async def llm(request: Request) -> dict[str, object]:
        tokens = int(json.loads(await request.body())["tokens"])
        return {"text": "tok " * tokens, "usage": {"total_tokens": tokens}}

    return app


def test_channel_payers_need_no_facilitator_on_an_upto_metered_route(world: World) -> None:
    provider = world.provider(routes={"POST /llm": RouteConfig(
        price=LLM.maximum, scheme="upto", meter=LLM)}, service=service())
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        offered = httpx.post(f"{site}/llm", content=b'{"tokens": 1}')
        assert offered.status_code == 402, offered.text
        required = decode_payment_required(offered.headers[PAYMENT_REQUIRED])
        assert [r.scheme for r in required.accepts] == ["a402"]
        assert [r["scheme"] for r in offered.json()["accepts"]] == ["a402"]
        assert "facilitator" in offered.json()["message"]
        # An x402 payer cannot be offered upto now: 503, nothing taken.
        x402 = httpx.post(f"{site}/llm", content=b'{"tokens": 1}',
                          headers={PAYMENT_SIGNATURE: "e30="})
        assert x402.status_code == 503 and x402.json()["error"] == "facilitator_unavailable"

        _, client = client_of(world, vault, funds=300_000, deposit=200_000)
        paid = client.invoke(f"{site}/llm", method="POST", content=b'{"tokens": 123}',
                             max_price=LLM.maximum)
        assert (paid.outcome, paid.status, paid.amount) == (api.PAID, 200, 1_230)
        assert json.loads(paid.content)["usage"] == {"total_tokens": 123}
        for channel in client.account_info()["channels"]:
            assert client.close_channel(channel["channelId"])["phase"] == vault_store.SETTLED
        assert world.balance(provider.address) == 1_230
        assert client.account_info()["balance"] == str(200_000 - 1_230)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()


def compressing_service() -> FastAPI:
    """As a compressing server: brotli if accepted (a coding no rule decodes; stood in
    for by a marker), else gzip if accepted."""
    import gzip

    from fastapi import Response

    app = FastAPI()

    @app.post("/llm")
    async def llm(request: Request) -> Response:
        tokens = int(json.loads(await request.body())["tokens"])
        body = json.dumps({"text": "tok " * tokens, "usage": {"total_tokens": tokens}}).encode()
        accepted = request.headers.get("accept-encoding", "")
        if "br" in accepted:
            return Response(b"BROTLI" + body, media_type="application/json",
                            headers={"content-encoding": "br"})
        if "gzip" in accepted:
            return Response(gzip.compress(body), media_type="application/json",
                            headers={"content-encoding": "gzip"})
        return Response(body, media_type="application/json")

    return app


def test_a_channel_payment_of_a_compressed_answer_is_charged_what_it_decodes_to(
    world: World,
) -> None:
    """The provider's enclave measures the JSON field on the decoded body, and the app is
    asked only for codings the rule decodes (a caller's ``br`` would make every answer
    unreadable: refused, never paid)."""
    import gzip

    provider = world.provider(routes={"POST /llm": RouteConfig(
        price=LLM.maximum, meter=LLM)}, service=compressing_service())
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=300_000, deposit=200_000)
        paid = client.invoke(f"{site}/llm", method="POST", content=b'{"tokens": 123}',
                             headers=[(b"accept-encoding", b"br, gzip")],
                             max_price=LLM.maximum)
        assert (paid.outcome, paid.status, paid.amount) == (api.PAID, 200, 1_230)
        assert json.loads(gzip.decompress(paid.content))["usage"] == {"total_tokens": 123}
        for channel in client.account_info()["channels"]:
            assert client.close_channel(channel["channelId"])["phase"] == vault_store.SETTLED
        assert world.balance(provider.address) == 1_230
        assert client.account_info()["balance"] == str(200_000 - 1_230)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()
