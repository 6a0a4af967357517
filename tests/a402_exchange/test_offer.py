"""The ``a402`` requirement next to ``exact``: what the 402 says, who can still pay ``exact``,
and the gateway taking A402 payments for an unchanged upstream."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from x402.schemas import PaymentRequiredV1 as OfficialPaymentRequiredV1

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import async_paying_client
from a402.provider import create_gateway
from a402.provider.a402_config import A402Config
from a402.provider.a402_store import SqlChannelStore
from a402.provider.routes import RouteConfig
from a402.tee import (
    PROVIDER_PURPOSES,
    AttestationPolicy,
    SimulatedPlatform,
    SimulatedVerifier,
)
from a402.wire.a402 import SCHEME_A402, WELL_KNOWN_PREFIX, HttpRequest
from a402.wire.headers import PAYMENT_REQUIRED, PAYMENT_RESPONSE, decode_payment_required
from a402.wire.x402 import PaymentRequired
from tests.interop.official import official_client
from tests.provider.support import PRICE_ATOMIC, Balances, asgi_client, paid_app

from .helpers import (
    DISPUTE_WINDOW,
    PRICES,
    PROVIDER_CODE,
    UNUSED_FACILITATOR,
    VAULT_CODE,
    World,
    fresh_account,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


async def test_the_402_offers_exact_first_and_a402_next_and_its_endpoint_works(
    world: World,
) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{url}/weather")
            free = await http.get(f"{url}/free")
        assert free.status_code == 200
        assert response.status_code == 402
        required = decode_payment_required(response.headers[PAYMENT_REQUIRED])
        assert isinstance(required, PaymentRequired)
        exact, a402 = required.accepts
        assert (exact.scheme, a402.scheme) == ("exact", SCHEME_A402)
        assert a402.amount == exact.amount == str(PRICES["GET /weather"])
        assert a402.asset == exact.asset == world.token.address
        assert a402.pay_to == provider.address and a402.network == world.chain.network
        extra = a402.extra or {}
        assert extra["endpoint"] == url + WELL_KNOWN_PREFIX
        assert extra["ascManager"] == world.manager.address
        assert extra["providerKey"] == "0x" + provider.enclave.signing_public_key[1:].hex()
        assert extra["attestation"]["measurement"] == "0x" + PROVIDER_CODE.hex()
        assert extra["disputeWindow"] == DISPUTE_WINDOW
        # The v1 body lists both too, in the same order.
        assert [r["scheme"] for r in response.json()["accepts"]] == ["exact", SCHEME_A402]

        # A vault that only read the 402 can pay through the advertised endpoint.
        async with world.tunnel(vault, extra["endpoint"]) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            paid = await tunnel.request(channel, HttpRequest("GET", "/weather"), int(a402.amount))
        assert json.loads(paid.response.body)["weather"] == "sunny"


def _shared_chain_config(
    chain: Chain, manifest: Manifest, tmp: str
) -> tuple[A402Config, LocalAccount]:
    """a402 on the shared node (where the facilitator settles exact): its own manager."""
    manager = ASCManager.deploy(chain, chain.accounts[0], manifest.token.address, DISPUTE_WINDOW)
    platform = SimulatedPlatform.generate()
    operator = fresh_account(chain)
    return A402Config(
        enclave=platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES),
        operator=operator, chain=chain, manager=manager.address,
        vault_policy=AttestationPolicy(frozenset({VAULT_CODE})),
        verifiers=[SimulatedVerifier(platform.root.public_key, allow_simulated=True)],
        store=SqlChannelStore(f"sqlite:///{tmp}/provider.db"),
    ), operator


async def test_x402_clients_still_pay_exact_when_a402_is_offered(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str,
    new_payer: Callable[..., LocalAccount], tmp_path: object,
) -> None:
    config, operator = _shared_chain_config(anvil_chain, dev_stack, str(tmp_path))
    app = paid_app(pay_to=operator.address, manifest=dev_stack, facilitator=facilitator_url,
                   a402=config)
    payer, other = new_payer(10_000), new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, other.address, operator.address)
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient() as http:
            offered = decode_payment_required((await http.get(f"{url}/weather")).headers[
                PAYMENT_REQUIRED])
        assert [r.scheme for r in offered.accepts] == ["exact", SCHEME_A402]
        async with official_client(payer) as sdk:
            by_sdk = await sdk.get(f"{url}/weather")
        async with async_paying_client(other, max_per_request=PRICE_ATOMIC) as ours:
            by_us = await ours.get(f"{url}/weather")
    for response in (by_sdk, by_us):
        assert response.status_code == 200, response.text
        assert PAYMENT_RESPONSE in response.headers
    assert balances.delta(payer.address) == balances.delta(other.address) == -PRICE_ATOMIC
    assert balances.delta(operator.address) == 2 * PRICE_ATOMIC


async def test_every_v1_accepts_entry_has_the_fields_the_v1_schema_requires(
    anvil_chain: Chain, dev_stack: Manifest, tmp_path: object,
) -> None:
    """The official SDK's v1 model, strictly, over the whole v1 body: ``exact`` and
    ``a402`` both carry ``description`` and ``mimeType`` (the route's, else ``""``)."""
    config, operator = _shared_chain_config(anvil_chain, dev_stack, str(tmp_path))
    described = RouteConfig(price=PRICE_ATOMIC, description="Weather in Paris",
                            mime_type="application/json")
    app = paid_app(pay_to=operator.address, manifest=dev_stack, facilitator=UNUSED_FACILITATOR,
                   a402=config, extra_prices={"GET /items/:id": described})
    async with asgi_client(app) as http:
        bodies = {path: (await http.get(path)).json() for path in ("/weather", "/items/paris")}

    for path, body in bodies.items():
        official = OfficialPaymentRequiredV1.model_validate(body, strict=True)
        assert [r.scheme for r in official.accepts] == ["exact", SCHEME_A402]
        for entry in body["accepts"]:
            assert isinstance(entry["description"], str) and isinstance(entry["mimeType"], str)
            assert entry["resource"] == f"http://provider.test{path}"
    for entry in bodies["/items/paris"]["accepts"]:
        assert (entry["description"], entry["mimeType"]) == ("Weather in Paris",
                                                             "application/json")
    for entry in bodies["/weather"]["accepts"]:
        assert (entry["description"], entry["mimeType"]) == ("", "")


def upstream() -> tuple[FastAPI, list[dict[str, object]]]:
    seen: list[dict[str, object]] = []
    app = FastAPI()

    @app.post("/paid/{name}")
    async def paid(name: str, request: Request) -> dict[str, str]:
        seen.append({"name": name, "body": await request.body(),
                     "query": request.url.query})
        return {"report": name}

    return app, seen


async def test_the_gateway_takes_a402_payments_for_an_unchanged_upstream(world: World) -> None:
    app, seen = upstream()
    vault, client = world.vault(), world.client()
    template = world.provider()  # for its config: enclave, operator, store
    with serve_in_thread(app) as upstream_url:
        gateway = create_gateway(
            upstream_url, ["POST /paid/*=0.002"], pay_to=template.address,
            token=world.token_info, network=world.chain.network,
            facilitator_url="http://127.0.0.1:9", a402=template.config,
        )
        with serve_in_thread(gateway) as url:
            async with world.tunnel(vault, url) as tunnel:
                channel = await world.open_channel(tunnel, vault, client)
                paid = await tunnel.request(
                    channel, HttpRequest("POST", "/paid/q3", b"year=2025", body=b"numbers"),
                    2_000,
                )
    assert paid.response.status == 200
    assert json.loads(paid.response.body) == {"report": "q3"}
    assert seen == [{"name": "q3", "body": b"numbers", "query": "year=2025"}]
    assert paid.receipt is not None and paid.receipt.state.provider_balance == 2_000
