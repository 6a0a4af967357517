"""An ``upto`` settle whose answer is lost (the facilitator sent the transaction, then its
answer never reached the provider): the payer's retry of the same payment gets the
response, and is charged once, the amount the provider recorded before settling.

Real anvil, our facilitator over HTTP (its journal on SQLite), the provider's ledger a
SQLite file; balances asserted on-chain and in the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.exact.upto import build_upto_payload
from a402.facilitator.app import create_app
from a402.facilitator.client import FacilitatorClient, FacilitatorUnavailable
from a402.facilitator.core import Facilitator
from a402.facilitator.store import Settlement, SettlementStore
from a402.provider import PaymentMiddleware
from a402.provider.ledger import LedgerState, PaymentKey, SqlLedger
from a402.provider.routes import RouteConfig
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_payment_payload,
    decode_payment_required,
    decode_settle_response,
    encode_header,
)
from a402.wire.x402 import AnyPaymentPayload, AnyPaymentRequirements, SettleResponse
from tests.interop.official_upto import fresh_account, upto_payer
from tests.servers import serve

pytestmark = pytest.mark.anvil

MAXIMUM = 50_000
FUNDS = 1_000_000


class AnswerLostOnce(FacilitatorClient):
    """The real facilitator settles (its transaction is mined), but the first settle's
    answer never arrives: what the provider sees when the facilitator's process dies
    after sending, or the connection drops on the way back."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settles: list[str] = []

    async def settle(self, payload: AnyPaymentPayload,
                     requirements: AnyPaymentRequirements) -> SettleResponse:
        answer = await super().settle(payload, requirements)
        self.settles.append(str(getattr(requirements, "amount", "")))
        if len(self.settles) == 1:
            raise FacilitatorUnavailable("facilitator_unavailable", "connection reset")
        return answer


def _app(pay_to: str, manifest: Manifest, facilitator: FacilitatorClient, ledger: SqlLedger,
         runs: list[int]) -> Starlette:
    async def metered(request: Request) -> JSONResponse:
        used = int(request.headers["x-used"])
        runs.append(used)
        return JSONResponse({"used": used, "run": len(runs)},
                            headers={"x-a402-usage": str(used)})

    return Starlette(routes=[Route("/usage", metered)], middleware=[Middleware(
        PaymentMiddleware, routes={"GET /usage": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=pay_to, token=manifest.token, network=manifest.network,
        facilitator=facilitator, ledger=ledger)])


def _signed_header(payer: LocalAccount, offer: httpx.Response) -> tuple[str, dict[str, Any]]:
    required = decode_payment_required(offer.headers[PAYMENT_REQUIRED])
    payload = build_upto_payload(required.accepts[0], payer.key, required.resource)
    return encode_header(payload.to_wire()), payload.payload


def test_a_lost_upto_settle_answer_is_resumed_by_the_retry_for_the_recorded_amount_once(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, tmp_path: Path,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    client = AnswerLostOnce(facilitator_url)
    runs: list[int] = []
    signer = facilitator.signer.address
    try:
        with serve(_app(pay_to, dev_stack, client, ledger, runs)) as base, \
                httpx.Client(timeout=60) as http:
            url = base + "/usage"
            header, inner = _signed_header(payer, http.get(url))
            sent_before = anvil_chain.w3.eth.get_transaction_count(signer)

            lost = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "7000"})
            assert lost.status_code == 503, lost.text
            assert '"used"' not in lost.text  # nothing delivered yet ...
            # ... but the facilitator's transaction went through: the payer is charged.
            assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 7000
            key = PaymentKey.of(dev_stack.network, dev_stack.token.address, payer.address,
                                f"permit2:{inner['permit2Authorization']['nonce']}")
            assert ledger.state_of(key) == LedgerState.PENDING

            # The retry (even one whose handler would now report more) is answered with
            # the response computed the first time (kept in the ledger: the handler does
            # not run again) and charged what was recorded before the first settle.
            retry = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "9000"})
            assert retry.status_code == 200, retry.text
            assert retry.json()["used"] == 7000
            assert "x-a402-usage" not in retry.headers
            receipt = decode_settle_response(retry.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == "7000"
            assert client.settles == ["7000", "7000"]
            assert ledger.state_of(key) == LedgerState.SETTLED

            # Spent: a third identical send gets the same response again, charges nothing.
            third = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "1"})
            assert (third.status_code, third.json()["used"]) == (200, 7000)
            assert client.settles == ["7000", "7000"]
    finally:
        ledger.close()
    assert anvil_chain.w3.eth.get_transaction_count(signer) == sent_before + 1
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 7000
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 7000
    assert json.loads(json.dumps(runs)) == [7000]


def test_a_copied_upto_header_settled_first_by_someone_else_still_buys_its_response(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, tmp_path: Path,
) -> None:
    """A copy of the payment header (a log, a proxy) is taken to the facilitator before
    the provider settles, for the whole maximum: the money can only go to the payee,
    once, but the provider's own settle for the usage must not then be refused, which
    would leave the payer charged the maximum with no response."""
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    runs: list[int] = []
    signer = facilitator.signer.address
    try:
        with serve(_app(pay_to, dev_stack, FacilitatorClient(facilitator_url), ledger,
                        runs)) as base, httpx.Client(timeout=60) as http:
            url = base + "/usage"
            offer = http.get(url)
            header, _ = _signed_header(payer, offer)
            sent_before = anvil_chain.w3.eth.get_transaction_count(signer)
            required = decode_payment_required(offer.headers[PAYMENT_REQUIRED])
            copy = decode_payment_payload(header)
            thief = http.post(facilitator_url + "/settle", json={
                "x402Version": 2, "paymentPayload": copy.to_wire(),
                "paymentRequirements": required.accepts[0].to_wire()})
            assert thief.json()["success"] is True
            assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == MAXIMUM

            paid = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "700"})
            assert paid.status_code == 200, paid.text
            assert paid.json()["used"] == 700
            receipt = decode_settle_response(paid.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == str(MAXIMUM)  # what it really cost
            assert receipt.transaction == thief.json()["transaction"]
    finally:
        ledger.close()
    assert anvil_chain.w3.eth.get_transaction_count(signer) == sent_before + 1
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - MAXIMUM
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == MAXIMUM


def test_a_header_settled_first_for_less_than_the_usage_buys_nothing_more(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, tmp_path: Path,
) -> None:
    """The payer itself settles its own header for 0 first, hoping to be served free:
    the provider's settle for the usage is refused and nothing is delivered."""
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    runs: list[int] = []
    try:
        with serve(_app(pay_to, dev_stack, FacilitatorClient(facilitator_url), ledger,
                        runs)) as base, httpx.Client(timeout=60) as http:
            url = base + "/usage"
            offer = http.get(url)
            header, _ = _signed_header(payer, offer)
            required = decode_payment_required(offer.headers[PAYMENT_REQUIRED])
            free = http.post(facilitator_url + "/settle", json={
                "x402Version": 2, "paymentPayload": decode_payment_payload(header).to_wire(),
                "paymentRequirements": required.accepts[0].model_copy(
                    update={"amount": "0"}).to_wire()})
            assert free.json()["success"] is True and free.json()["transaction"] == ""
            refused = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "700"})
            assert refused.status_code == 402
            assert '"used"' not in refused.text
    finally:
        ledger.close()
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 0


class DiesAfterSending(Facilitator):
    """A facilitator whose first settle dies right after its transaction was journaled
    and broadcast (its HTTP answer is a 500): the crash the journal exists for."""

    died = False

    def _await(self, record: Settlement, deadline: float) -> SettleResponse:
        if not self.died:
            DiesAfterSending.died = True
            raise RuntimeError("killed after sending")
        return super()._await(record, deadline)


def test_a_facilitator_dying_after_it_sent_the_upto_settlement_is_resumed_once(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    tmp_path: Path,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    dying = DiesAfterSending(anvil_chain, anvil_chain.accounts[8],
                             SettlementStore(f"sqlite:///{tmp_path / 'journal.db'}"))
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    runs: list[int] = []
    signer = dying.signer.address
    sent_before = anvil_chain.w3.eth.get_transaction_count(signer)
    try:
        with serve_in_thread(create_app(dying, reconcile_every=3600)) as facilitator_url, \
                serve(_app(pay_to, dev_stack, FacilitatorClient(facilitator_url), ledger,
                           runs)) as base, httpx.Client(timeout=60) as http:
            url = base + "/usage"
            header, _ = _signed_header(payer, http.get(url))
            lost = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "3300"})
            assert lost.status_code in (502, 503), lost.text
            assert '"used"' not in lost.text
            assert dying.store.count_by_state() == {"submitted": 1}  # sent, unanswered

            retry = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "4400"})
            assert retry.status_code == 200, retry.text
            receipt = decode_settle_response(retry.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == "3300"
            assert dying.store.count_by_state() == {"confirmed": 1}
    finally:
        ledger.close()
        dying.store.close()
    assert anvil_chain.w3.eth.get_transaction_count(signer) == sent_before + 1
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 3300
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 3300


def test_a_resumed_upto_payment_buys_only_the_request_it_was_charged_for(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, tmp_path: Path,
) -> None:
    """The settle answer of a request that used 7,000 is lost: the payment is pending for
    7,000. Resending the same payment with another body (a request that would use 40,000)
    must not buy that request for 7,000: refused (402, nothing runs, nothing more is
    charged); the identical resend gets the response it paid for."""
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    client = AnswerLostOnce(facilitator_url)
    runs: list[int] = []

    async def metered(request: Request) -> JSONResponse:
        used = int((await request.json())["used"])
        runs.append(used)
        return JSONResponse({"used": used}, headers={"x-a402-usage": str(used)})

    app = Starlette(routes=[Route("/usage", metered, methods=["POST"])], middleware=[Middleware(
        PaymentMiddleware, routes={"POST /usage": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
        facilitator=client, ledger=ledger)])
    try:
        with serve(app) as base, httpx.Client(timeout=60) as http:
            url = base + "/usage"
            header, _ = _signed_header(payer, http.post(url, json={"used": 1}))
            lost = http.post(url, json={"used": 7000}, headers={PAYMENT_SIGNATURE: header})
            assert lost.status_code == 503, lost.text
            other = http.post(url, json={"used": 40_000}, headers={PAYMENT_SIGNATURE: header})
            assert other.status_code == 402, other.text
            assert decode_payment_required(
                other.headers[PAYMENT_REQUIRED]).error == "payment_terms_mismatch"
            assert "7000" in other.text and '"used"' not in other.text
            same = http.post(url, json={"used": 7000}, headers={PAYMENT_SIGNATURE: header})
            assert (same.status_code, same.json()["used"]) == (200, 7000)
    finally:
        ledger.close()
    assert runs == [7000]
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 7000
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 7000


def test_a_resumed_exact_payment_resent_with_another_body_is_served_not_hung(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, tmp_path: Path,
) -> None:
    """``exact``: the settle answer of a POST is lost (its response held); the resend of
    the same payment with another body is served (the price does not depend on it), once,
    charged once. Before, the request's digest had read the body the app then waited for:
    the payer, charged, got no response at all."""
    from a402.exact.eip3009 import build_payment_payload

    payer = new_payer(10_000)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    client = AnswerLostOnce(facilitator_url)
    runs: list[str] = []

    async def echo(request: Request) -> JSONResponse:
        said = str((await request.json())["say"])
        runs.append(said)
        return JSONResponse({"said": said})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])], middleware=[Middleware(
        PaymentMiddleware, routes={"POST /echo": 1_000}, pay_to=pay_to, token=dev_stack.token,
        network=dev_stack.network, facilitator=client, ledger=ledger)])
    try:
        with serve(app) as base, httpx.Client(timeout=20) as http:
            url = base + "/echo"
            required = decode_payment_required(
                http.post(url, json={"say": "-"}).headers[PAYMENT_REQUIRED])
            header = encode_header(build_payment_payload(
                required.accepts[0], payer.key, required.resource).to_wire())
            lost = http.post(url, json={"say": "a"}, headers={PAYMENT_SIGNATURE: header})
            assert lost.status_code == 503, lost.text
            other = http.post(url, json={"say": "b"}, headers={PAYMENT_SIGNATURE: header})
            assert (other.status_code, other.json()) == (200, {"said": "b"})
    finally:
        ledger.close()
    assert runs == ["a", "b"]
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 10_000 - 1_000
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 1_000
