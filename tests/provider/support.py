"""Helpers shared by the provider tests: a small paid app, paying, and balance bookkeeping."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.exact.eip3009 import build_payment_payload, build_payment_payload_v1
from a402.provider import PaymentMiddleware
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    decode_payment_required,
    encode_header,
)
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)
from tests.servers import dead_url

PRICE = "0.001"
PRICE_ATOMIC = 1_000  # the dev token has 6 decimals
BOOM_PRICE_ATOMIC = 1_000
ITEM_PRICE_ATOMIC = 2_500


@dataclass
class Calls:
    """How often each handler ran: a refused payment must not reach the handler."""

    counts: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def paid_app(
    *, pay_to: str, manifest: Manifest, facilitator: Any, calls: Calls | None = None,
    extra_prices: dict[str, Any] | None = None, a402: A402Config | None = None,
    **options: Any,
) -> FastAPI:
    """A FastAPI app with priced and free routes behind ``PaymentMiddleware``.

    ``extra_prices`` prices routes the test adds to the returned app itself; with
    ``a402``, :class:`A402Payments` is in front of the middleware.
    """
    app = FastAPI()
    calls = calls if calls is not None else Calls()

    @app.get("/weather")
    async def weather() -> dict[str, Any]:
        calls.hit("weather")
        return {"weather": "sunny", "temperature": 21}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        calls.hit("free")
        return {"free": True}

    @app.get("/boom")
    async def boom() -> JSONResponse:
        calls.hit("boom")
        return JSONResponse({"error": "kaput"}, status_code=500)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        calls.hit("item")
        return {"item": item_id}

    app.add_middleware(
        PaymentMiddleware,
        routes={
            "GET /weather": PRICE,
            "GET /boom": BOOM_PRICE_ATOMIC,
            "GET /items/:id": "$0.0025",
            **(extra_prices or {}),
        },
        pay_to=pay_to,
        token=manifest.token,
        network=manifest.network,
        facilitator=facilitator,
        **options,
    )
    if a402 is not None:
        app.add_middleware(A402Payments, config=a402)  # added last: the outermost
    return app


@contextlib.asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider.test") as client:
        yield client


async def offer(client: httpx.AsyncClient, path: str) -> tuple[PaymentRequired, PaymentRequiredV1]:
    """The 402 for ``path``: the v2 header and the v1 body, both parsed strictly."""
    response = await client.get(path)
    assert response.status_code == 402, response.text
    v2 = decode_payment_required(response.headers[PAYMENT_REQUIRED])
    assert isinstance(v2, PaymentRequired)
    v1 = PaymentRequiredV1.model_validate(response.json())
    return v2, v1


class Paying(NamedTuple):
    """A client of a paid app holding ``payer``'s signed payment for one path's offer."""

    client: httpx.AsyncClient
    required: PaymentRequired
    headers: dict[str, str]


@contextlib.asynccontextmanager
async def paying(app: Any, path: str, payer: LocalAccount) -> AsyncIterator[Paying]:
    """``app``'s client with ``payer``'s v2 payment (its header) for the 402 of ``path``:
    what a payer holds before it sends the paid request, as often as the test likes."""
    async with asgi_client(app) as client:
        required, _ = await offer(client, path)
        yield Paying(client, required, v2_header(required, payer))


def v2_header(required: PaymentRequired, payer: LocalAccount, **kwargs: Any) -> dict[str, str]:
    payload = build_payment_payload(required.accepts[0], payer, resource=required.resource,
                                    **kwargs)
    return {PAYMENT_SIGNATURE: encode_header(payload)}


def v1_header(required: PaymentRequiredV1, payer: LocalAccount) -> dict[str, str]:
    return {X_PAYMENT: encode_header(build_payment_payload_v1(required.accepts[0], payer))}


def payload_header(payload: PaymentPayload) -> dict[str, str]:
    return {PAYMENT_SIGNATURE: encode_header(payload)}


def requirements_of(required: PaymentRequired) -> PaymentRequirements:
    return required.accepts[0]


def requirements_v1_of(required: PaymentRequiredV1) -> PaymentRequirementsV1:
    return required.accepts[0]


class Balances:
    """Token balances of some addresses, to assert exact deltas against a snapshot."""

    def __init__(self, chain: Chain, manifest: Manifest, *addresses: str) -> None:
        self.chain, self.token = chain, manifest.token.address
        self.before = {a: token_balance(chain, self.token, a) for a in addresses}

    def delta(self, address: str) -> int:
        return token_balance(self.chain, self.token, address) - self.before[address]

    def unchanged(self) -> bool:
        return all(self.delta(a) == 0 for a in self.before)


def closed_port_url() -> str:
    """A loopback URL nothing listens on, nor will: its port stays bound, never listening."""
    return dead_url()


def assert_mined_transfer(chain: Chain, tx_hash: str) -> None:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1


@contextlib.contextmanager
def ledger_refuses_settled(postgres_url: str, payer: str) -> Iterator[None]:
    """Real PostgreSQL refuses to record ``payer``'s payments as settled in the replay
    ledger (a trigger raises, as a database going away would); everything else works."""
    name = "a402_test_refuse_" + os.urandom(4).hex()
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as db:
            db.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.payer = '{payer.lower()}' AND NEW.state = 'settled' THEN "
                "RAISE EXCEPTION 'the ledger database went away'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            db.execute(text(f"CREATE TRIGGER {name} BEFORE UPDATE ON a402_provider_ledger "
                            f"FOR EACH ROW EXECUTE FUNCTION {name}()"))
        yield
    finally:
        with engine.begin() as db:
            db.execute(text(f"DROP TRIGGER IF EXISTS {name} ON a402_provider_ledger"))
            db.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
        engine.dispose()
