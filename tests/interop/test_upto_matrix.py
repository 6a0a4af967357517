"""The x402 ``upto`` interop matrix over HTTP, on anvil, balances asserted.

client × server × facilitator:

- the SDK's upto client → a402's middleware → a402's facilitator;
- a402's paying client → the SDK's middleware → a402's facilitator;
- a402's paying client → the SDK's middleware → the SDK's upto facilitator;
- a402's paying client → a402's middleware → a402's facilitator.

Each server charges what the handler reports (the SDK's ``Settlement-Overrides``
header, or a402's ``X-A402-Usage``): a partial charge, a zero charge (no
transaction, balances unchanged) and a charge above the authorised maximum
(refused, nothing moves, nothing delivered).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from x402.schemas import PaymentRequirements as SdkRequirements

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.client import PaymentRefused, approve_permit2, paying_client
from a402.client.mandate_command import add_audit_arguments, run_audit
from a402.client.records import PaymentStatus, payment_of
from a402.crypto.authorization import EcdsaSigner
from a402.facilitator.core import Facilitator
from a402.mandate import Domain, Mandate, sign_mandate
from a402.mandate.guard import MandateGuard
from a402.mandate.registry import RevocationCheck
from a402.mandate.spend import SpendStore
from a402.provider import PaymentMiddleware
from a402.provider.routes import RouteConfig
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from tests.interop.official import facilitator_http_app
from tests.interop.official_upto import (
    fresh_account,
    sdk_upto_client,
    sdk_upto_facilitator,
    sdk_upto_paid_app,
    sdk_upto_payload,
    upto_payer,
)
from tests.servers import serve

pytestmark = pytest.mark.anvil

MAXIMUM = 40_000
FUNDS = 1_000_000


def _usage(request: Request) -> int:
    return int(request.query_params.get("used", "0"))


def a402_upto_app(pay_to: str, manifest: Manifest, facilitator_url: str,
                  header: str = "settlement-overrides") -> Starlette:
    """A Starlette app selling ``GET /usage`` by usage through a402's middleware; the
    handler reports ``?used=N`` in ``header``."""
    async def metered(request: Request) -> JSONResponse:
        used = _usage(request)
        value = json.dumps({"amount": str(used)}) if header == "settlement-overrides" \
            else str(used)
        return JSONResponse({"used": used}, headers={header: value})

    return Starlette(routes=[Route("/usage", metered)], middleware=[Middleware(
        PaymentMiddleware, routes={"GET /usage": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=pay_to, token=manifest.token, network=manifest.network,
        facilitator=facilitator_url)])


@contextmanager
def server(app: Starlette) -> Iterator[str]:
    with serve(app) as base:
        yield base + "/usage"


def _balances(chain: Chain, manifest: Manifest, *who: str) -> list[int]:
    return [token_balance(chain, manifest.token.address, w) for w in who]


def _sent(chain: Chain, address: str) -> int:
    return int(chain.w3.eth.get_transaction_count(address))  # type: ignore[arg-type]


# ---------------------------------------------------- SDK client → a402 server


@pytest.mark.anyio
async def test_sdk_client_pays_a402_server_what_the_handler_reports(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url)) as url:
        async with sdk_upto_client(payer) as client:
            paid = await client.get(url, params={"used": "7000"})
            assert paid.status_code == 200, paid.text
            assert paid.json() == {"used": 7000}
            assert "settlement-overrides" not in paid.headers  # between handler and middleware
            receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == "7000"
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]

            sent = _sent(anvil_chain, facilitator.signer.address)
            free = await client.get(url, params={"used": "0"})
            assert free.status_code == 200 and free.json() == {"used": 0}
            assert decode_settle_response(free.headers[PAYMENT_RESPONSE]).transaction == ""
            assert _sent(anvil_chain, facilitator.signer.address) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]

            over = await client.get(url, params={"used": str(MAXIMUM + 1)})
            assert over.status_code == 402
            assert "\"used\":" not in over.text  # the response was withheld
            assert _sent(anvil_chain, facilitator.signer.address) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 7000, 7000]


@pytest.mark.anyio
async def test_one_upto_authorization_buys_one_response(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url, "x-a402-usage")) as url:
        async with httpx.AsyncClient(timeout=30) as plain:
            offer = await plain.get(url)
            required = decode_payment_required(offer.headers[PAYMENT_REQUIRED])
            accepted = SdkRequirements.model_validate(required.accepts[0].to_wire())
            payload = await sdk_upto_payload(payer, accepted, url)
            header = encode_header(payload.model_dump(mode="json", by_alias=True,
                                                      exclude_none=True))
            paid = await plain.get(url, params={"used": "100"},
                                   headers={PAYMENT_SIGNATURE: header})
            assert paid.status_code == 200 and paid.json() == {"used": 100}
            replay = await plain.get(url, params={"used": "200"},
                                     headers={PAYMENT_SIGNATURE: header})
            assert replay.status_code == 402
            assert '"used":' not in replay.text
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [FUNDS - 100, 100]


# ------------------------------------------------------ a402 client → SDK server


@pytest.mark.parametrize("facilitator_kind", ["a402", "sdk"])
def test_a402_client_pays_sdk_server_within_its_maximum(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, facilitator_kind: str,
    official_facilitator_account: LocalAccount,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    with _facilitator(anvil_chain, dev_stack, facilitator_url, facilitator_kind,
                      official_facilitator_account) as (url_of_facilitator, gas_payer):
        app = sdk_upto_paid_app(url_of_facilitator, pay_to, dev_stack, MAXIMUM, _usage)
        with serve(app) as base, paying_client(payer, max_per_request=MAXIMUM,
                                               assets=[dev_stack.token.address]) as client:
            paid = client.get(base + "/usage", params={"used": "2500"})
            assert paid.status_code == 200, paid.text
            payment = payment_of(paid)
            assert payment is not None and payment.status == PaymentStatus.SETTLED
            assert payment.amount == MAXIMUM  # what was authorised (and counted)
            assert payment.charged == 2500 and payment.summary()["charged"] == "2500"
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 2500, 2500]

            sent = _sent(anvil_chain, gas_payer)
            free = client.get(base + "/usage", params={"used": "0"})
            assert free.status_code == 200
            assert _sent(anvil_chain, gas_payer) == sent
            over = client.get(base + "/usage", params={"used": str(MAXIMUM + 1)})
            assert over.status_code == 402
            assert _sent(anvil_chain, gas_payer) == sent
            assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
                FUNDS - 2500, 2500]


def test_a402_client_refuses_a_maximum_above_its_cap(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    app = sdk_upto_paid_app(facilitator_url, pay_to, dev_stack, MAXIMUM, _usage)
    with serve(app) as base, paying_client(payer, max_per_request=MAXIMUM - 1,
                                                    assets=[dev_stack.token.address]) as client:
        with pytest.raises(PaymentRefused) as refused:
            client.get(base + "/usage", params={"used": "1"})
        assert refused.value.reason == "price_above_maximum"
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [FUNDS, 0]


def test_a402_client_pays_a402_server_by_usage(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = new_payer(FUNDS)
    anvil_chain.w3.provider.make_request("anvil_setBalance", [payer.address, hex(10**18)])
    assert anvil_chain.rpc_url is not None
    approved = approve_permit2(anvil_chain.rpc_url, payer.key, dev_stack.token.address)
    assert approved.startswith("0x")  # the payer's one transaction; again, none
    assert approve_permit2(anvil_chain.rpc_url, payer.key, dev_stack.token.address) == ""
    pay_to = fresh_account()
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url, "x-a402-usage")) as url, \
            paying_client(payer, max_per_request=MAXIMUM,
                          assets=[dev_stack.token.address]) as client:
        for used in (1, 39_999, 0):
            paid = client.get(url, params={"used": str(used)})
            assert paid.status_code == 200 and paid.json() == {"used": used}
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [
        FUNDS - 40_000, 40_000]


@contextmanager
def _facilitator(chain: Chain, manifest: Manifest, ours: str, kind: str,
                 sdk_key: LocalAccount) -> Iterator[tuple[str, str]]:
    if kind == "a402":
        yield ours, chain.accounts[1].address
        return
    with serve(facilitator_http_app(sdk_upto_facilitator(chain, manifest, sdk_key))) as url:
        yield url, sdk_key.address


def test_a_mandate_counts_an_upto_payment_at_its_authorised_maximum(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, tmp_path: Path,
) -> None:
    """The mandate reserves, and keeps counting, what the agent signed for (the maximum):
    the settled amount is the server's word, known only after the fact. Two upto
    payments that each moved 100 use up a budget of two maximums."""
    owner, agent = new_payer(0), upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    now = int(time.time())
    mandate = Mandate(owner=owner.address, agent=agent.address, max_per_payment=MAXIMUM,
                      budget=2 * MAXIMUM, valid_after=now - 60, valid_before=now + 3600,
                      nonce=os.urandom(32), networks=(dev_stack.network,),
                      assets=(dev_stack.token.address,), payees=(pay_to,), schemes=("upto",))
    signed = sign_mandate(mandate, Domain(dev_stack.chain_id,
                                          dev_stack.contracts["MandateRegistry"]),
                          EcdsaSigner(bytes(owner.key)).sign_digest)
    guard = MandateGuard(signed, agent=agent.address,
                         store=SpendStore(f"sqlite:///{tmp_path / 'spend.db'}"),
                         revocation=RevocationCheck.for_mandate(anvil_chain, signed))
    with server(a402_upto_app(pay_to, dev_stack, facilitator_url, "x-a402-usage")) as url, \
            paying_client(agent, mandate=guard) as client:
        for _ in range(2):
            assert client.get(url, params={"used": "100"}).status_code == 200
        assert guard.store.spent(signed).total == 2 * MAXIMUM
        with pytest.raises(PaymentRefused) as refused:
            client.get(url, params={"used": "100"})
        assert refused.value.reason.startswith("mandate_")
    assert _balances(anvil_chain, dev_stack, agent.address, pay_to) == [FUNDS - 200, 200]
    # Both payments left evidence records that the offline audit verifies (Permit2
    # signatures by the agent, for the recorded payee and maximum), each with its outcome.
    guard.flush()
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(parser.parse_args(["--spend-db", f"sqlite:///{tmp_path / 'spend.db'}"]),
                     out=out, err=err)
    assert code == 0, err.getvalue()
    assert "4 record(s), every signature and link verified" in err.getvalue()


def test_an_unreadable_usage_report_withholds_the_response_and_charges_nothing(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator,
) -> None:
    async def garbled(request: Request) -> JSONResponse:
        return JSONResponse({"secret": "answer"}, headers={"x-a402-usage": "lots"})

    app = Starlette(routes=[Route("/usage", garbled)], middleware=[Middleware(
        PaymentMiddleware, routes={"GET /usage": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=(pay_to := fresh_account()), token=dev_stack.token, network=dev_stack.network,
        facilitator=facilitator_url)])
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    sent = _sent(anvil_chain, facilitator.signer.address)
    with server(app) as url, paying_client(payer, max_per_request=MAXIMUM,
                                           assets=[dev_stack.token.address]) as client:
        answer = client.get(url)
    assert answer.status_code == 502 and answer.json()["error"] == "usage_unreadable"
    assert "secret" not in answer.text
    assert _sent(anvil_chain, facilitator.signer.address) == sent
    assert _balances(anvil_chain, dev_stack, payer.address, pay_to) == [FUNDS, 0]
