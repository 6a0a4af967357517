"""Usage-based prices through the vault (issue 16, part 2), end to end on anvil: the
provider's enclave charges what the response reports, never above the route's maximum δ,
the vault pays exactly that inside the channel, and the chain settles exactly that.

The provider is the real payment middleware behind ``A402Payments`` with metered routes
(:mod:`a402.metering`); the vault is the real service over real HTTP."""

from __future__ import annotations

import json
import os
import time

import pytest
from eth_account import Account
from fastapi import FastAPI, Request, Response

from a402.background import serve_in_thread
from a402.chain.tx import deploy_contract
from a402.client.vault import VaultCallError
from a402.crypto import EcdsaSigner
from a402.mandate import Domain, Mandate, sign_mandate
from a402.mandate.registry import MandateRegistry
from a402.metering import parse_rule
from a402.provider.routes import RouteConfig
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import assert_conserved, client_of, running_vault

pytestmark = pytest.mark.anvil

#: 10 atomic units (0.00001 USDC) per token, at most 10,000 (0.01 USDC) a call.
LLM = parse_rule("per-field:usage.total_tokens:0.00001,max=0.01", 6)
#: 2 atomic units per unit the handler reports in A402-Units, at most 1,000 a call.
REPORT = parse_rule("per-unit:0.000002,max=0.001", 6)
ROUTES = {
    "POST /llm": RouteConfig(price=LLM.maximum, meter=LLM),
    "GET /report": RouteConfig(price=REPORT.maximum, meter=REPORT),
}


def metered_service() -> FastAPI:
    app = FastAPI()

    @app.post("/llm")
    async def llm(request: Request) -> dict[str, object]:
        tokens = int(json.loads(await request.body())["tokens"])
        return {"text": "tok " * tokens, "usage": {"total_tokens": tokens}}

    @app.get("/report")
    async def report(request: Request) -> Response:
        units = request.query_params.get("units")
        headers = {} if units is None else {"A402-Units": units}
        return Response(b"reported", headers=headers)

    return app


def test_a_metered_route_charges_exactly_the_units_reported_and_never_above_delta(
    world: World,
) -> None:
    provider = world.provider(routes=ROUTES, service=metered_service())
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=300_000, deposit=200_000)
        llm = client.invoke(f"{site}/llm", method="POST", content=b'{"tokens": 123}',
                            max_price=10_000)
        assert (llm.outcome, llm.status, llm.amount) == (api.PAID, 200, 1_230)
        assert json.loads(llm.content)["usage"] == {"total_tokens": 123}
        # The handler reports 900 units (1,800 at the rate): capped at δ = 1,000.
        over = client.invoke(f"{site}/report?units=900", max_price=1_000)
        assert (over.outcome, over.amount, over.content) == (api.PAID, 1_000, b"reported")
        exact = client.invoke(f"{site}/report?units=7", max_price=1_000)
        assert (exact.outcome, exact.amount) == (api.PAID, 14)
        paid = 1_230 + 1_000 + 14
        receipt = exact.payment["receipt"] if exact.payment else None
        assert receipt is not None and receipt["providerBalance"] == str(paid)

        # No report at all: the enclave refuses it; nothing is charged.
        with pytest.raises(VaultCallError) as refused:
            client.invoke(f"{site}/report", max_price=1_000)
        assert "usage_unreadable" in str(refused.value)

        view = client.account_info()
        assert view["paid"] == str(paid)
        for channel in view["channels"]:
            closed = client.close_channel(channel["channelId"])
            assert closed["phase"] == vault_store.SETTLED
        assert world.balance(provider.address) == paid
        assert client.account_info()["balance"] == str(200_000 - paid)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()


def test_a_mandate_is_charged_the_metered_amount_and_gets_the_rest_of_delta_back(
    world: World,
) -> None:
    """Budget 12,000, δ 10,000: the first call reserves 10,000 and is charged 1,230; the
    8,770 left of δ goes back to the budget, so a second call (another 10,000 reserved)
    fits, and a third (1,230 + 1,230 + 10,000 > 12,000) is refused with nothing paid."""
    chain = world.chain
    registry = MandateRegistry(chain, deploy_contract(chain, chain.accounts[0],
                                                      "MandateRegistry").address)
    owner = Account.create()
    provider = world.provider(routes=ROUTES, service=metered_service())
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=300_000, deposit=200_000)
        now = int(time.time())
        client.mandate = sign_mandate(Mandate(
            owner=owner.address, agent=agent.address, max_per_payment=LLM.maximum,
            budget=12_000, valid_after=now - 60, valid_before=now + 3600,
            nonce=os.urandom(32), networks=(chain.network,), assets=(world.token.address,),
            schemes=("a402",)), Domain(chain.chain_id, registry.address),
            EcdsaSigner(bytes(owner.key)).sign_digest).to_json()
        for _ in range(2):
            paid = client.invoke(f"{site}/llm", method="POST", content=b'{"tokens": 123}',
                                 max_price=LLM.maximum)
            assert (paid.outcome, paid.amount) == (api.PAID, 1_230)
        with pytest.raises(VaultCallError) as refused:
            client.invoke(f"{site}/llm", method="POST", content=b'{"tokens": 1}',
                          max_price=LLM.maximum)
        assert refused.value.reason.startswith("mandate_"), refused.value.body
        assert client.account_info()["paid"] == str(2 * 1_230)
        client.close()
