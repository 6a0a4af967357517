"""The auth flow over an in-process HTTP transport: what goes on the wire, and when.

No chain is involved here, so these tests look at the client's side only: the
headers it sends, how often it signs, what it refuses, how it replays. The
payloads are really signed and are checked by recovering the signer. The
end-to-end tests (test_e2e.py) prove the same payloads move real money.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from eth_account import Account

from a402.client import (
    Budget,
    PaymentRefused,
    PaymentStatus,
    Wallet,
    X402Auth,
    errors,
    payment_of,
    receipt_of,
)
from a402.exact.eip3009 import (
    Authorization,
    authorization_digest,
    domain_from_requirements,
    recover_signer,
)
from a402.wire.convert import requirements_v2_to_v1
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_payment_payload,
    encode_header,
)
from a402.wire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    ResourceInfo,
)
from tests.client.x402_server import requirement

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
URL = "https://api.example/paid"
KEY = Account.create()
PRICE = 10_000
REQ = requirement(network="eip155:8453", asset=USDC, pay_to=PAY_TO, amount=PRICE)
RESOURCE = ResourceInfo(url=URL, description="paid thing")
PID_EXT = {"payment-identifier": {"info": {"required": False}, "schema": {"type": "object"}}}


def receipt(payer: str, network: str = "eip155:8453", ok: bool = True) -> dict[str, object]:
    out: dict[str, object] = {"success": ok, "transaction": "0x" + "ab" * 32 if ok else "",
                              "network": network, "payer": payer}
    if not ok:
        out["errorReason"] = "invalid_exact_evm_insufficient_balance"
    return out


class Server:
    """Records every request; answers 402 without payment and ``paid(...)`` with one."""

    def __init__(self, version: int = 2, *, paid_status: int = 200,
                 fail_paid: Exception | None = None, max_timeout: int = 60) -> None:
        self.version = version
        self.paid_status = paid_status
        self.fail_paid = fail_paid
        self.req = REQ.model_copy(update={"max_timeout_seconds": max_timeout})
        self.requests: list[httpx.Request] = []

    def payment_header(self, request: httpx.Request) -> str | None:
        return request.headers.get(PAYMENT_SIGNATURE if self.version == 2 else X_PAYMENT)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        header = self.payment_header(request)
        if header is None:
            if self.version == 1:
                body = PaymentRequiredV1(accepts=[requirements_v2_to_v1(self.req, RESOURCE)])
                return httpx.Response(402, json=body.to_wire())
            required = PaymentRequired(resource=RESOURCE, accepts=[self.req], extensions=PID_EXT)
            return httpx.Response(402, json={},
                                  headers={PAYMENT_REQUIRED: encode_header(required)})
        if self.fail_paid is not None:
            raise self.fail_paid
        payload = decode_payment_payload(header)
        payer = payload.payload["authorization"]["from"]
        name = PAYMENT_RESPONSE if self.version == 2 else X_PAYMENT_RESPONSE
        network = "eip155:8453" if self.version == 2 else "base"
        ok = self.paid_status == 200
        return httpx.Response(self.paid_status, content=b'{"data": 42}' if ok else b"{}",
                              headers={name: encode_header(receipt(payer, network, ok))})

    @property
    def paid(self) -> list[httpx.Request]:
        return [r for r in self.requests if self.payment_header(r)]


def client(server: Callable[[httpx.Request], httpx.Response], **kw: object) -> httpx.Client:
    kw.setdefault("max_per_request", PRICE)
    return httpx.Client(auth=X402Auth(Wallet(KEY), **kw),  # type: ignore[arg-type]
                        transport=httpx.MockTransport(server))


def test_v2_pays_once_with_a_payload_that_echoes_the_offer() -> None:
    server = Server()
    budget = Budget({USDC: 3 * PRICE})
    with client(server, budget=budget) as http:
        response = http.post(URL, content=b"question")
    assert response.status_code == 200 and response.json() == {"data": 42}
    assert len(server.requests) == 2 and len(server.paid) == 1
    paid = server.paid[0]
    assert paid.content == b"question"  # the body is resent with the payment
    payload = decode_payment_payload(paid.headers[PAYMENT_SIGNATURE])
    assert isinstance(payload, PaymentPayload)
    assert payload.accepted == REQ and payload.resource == RESOURCE
    pid = payload.extensions["payment-identifier"]
    assert pid["schema"] == {"type": "object"} and pid["info"]["required"] is False
    assert pid["info"]["id"].startswith("pay_") and 16 <= len(pid["info"]["id"]) <= 128
    auth = Authorization.model_validate(payload.payload["authorization"])
    digest = authorization_digest(domain_from_requirements(REQ), auth)
    assert recover_signer(digest, payload.payload["signature"]) == KEY.address
    assert (auth.to, auth.value) == (PAY_TO, str(PRICE))

    payment = payment_of(response)
    assert payment is not None and payment.status == PaymentStatus.SETTLED
    assert payment.nonce == auth.nonce and payment.amount == PRICE
    assert receipt_of(response) is not None and receipt_of(response).success
    assert budget.spent(USDC) == PRICE


def test_v1_uses_x_payment_and_reads_x_payment_response() -> None:
    server = Server(version=1)
    with client(server) as http:
        response = http.get(URL)
    assert response.status_code == 200
    payload = decode_payment_payload(server.paid[0].headers[X_PAYMENT])
    assert isinstance(payload, PaymentPayloadV1)
    assert (payload.scheme, payload.network) == ("exact", "base")
    assert PAYMENT_SIGNATURE not in server.paid[0].headers
    assert payment_of(response).status == PaymentStatus.SETTLED
    assert payment_of(response).offer.version == 1


def test_refusal_happens_before_anything_is_signed_or_sent() -> None:
    server = Server()
    with client(server, max_per_request=PRICE - 1) as http, pytest.raises(PaymentRefused) as exc:
        http.get(URL)
    assert exc.value.reason == errors.PRICE_ABOVE_MAXIMUM
    assert exc.value.url == URL and exc.value.offered == (REQ,)
    assert len(server.requests) == 1 and server.paid == []
    assert http.auth.payments == []  # type: ignore[attr-defined]


def test_a_402_to_the_payment_is_returned_not_paid_again() -> None:
    server = Server(paid_status=402)
    budget = Budget({USDC: 10 * PRICE})
    with client(server, budget=budget) as http:
        response = http.get(URL)
    assert response.status_code == 402
    assert len(server.paid) == 1  # one signature per request, whatever the server says
    payment = payment_of(response)
    assert payment.status == PaymentStatus.REJECTED
    assert payment.reason == "invalid_exact_evm_insufficient_balance"
    assert budget.spent(USDC) == PRICE  # a 402 proves nothing: the money stays counted


def test_validity_is_capped_whatever_the_server_asks() -> None:
    server = Server(max_timeout=86_400)
    with client(server, max_validity=120) as http:
        before = int(time.time())
        http.get(URL)
    auth = decode_payment_payload(server.paid[0].headers[PAYMENT_SIGNATURE]).payload
    assert before + 120 <= int(auth["authorization"]["validBefore"]) <= int(time.time()) + 120


def test_a_paid_attempt_without_answer_is_replayed_not_re_signed() -> None:
    """x402 #808: a retry after a timeout carries the same authorization."""
    server = Server(fail_paid=httpx.ReadTimeout("slow"))
    budget = Budget({USDC: 10 * PRICE})
    with client(server, budget=budget) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(URL, content=b"q")
        auth: X402Auth = http.auth  # type: ignore[assignment]
        assert [p.status for p in auth.unresolved] == [PaymentStatus.UNKNOWN]
        first = server.paid[0].headers[PAYMENT_SIGNATURE]

        server.fail_paid = None
        response = http.post(URL, content=b"q")
    assert response.status_code == 200
    assert len(server.requests) == 3  # unpaid, paid (lost), and the replay: no new 402 round
    assert server.requests[-1].headers[PAYMENT_SIGNATURE] == first
    assert len(auth.payments) == 1 and auth.unresolved == []
    assert payment_of(response).status == PaymentStatus.SETTLED
    assert budget.spent(USDC) == PRICE


def test_only_the_same_request_replays_and_never_an_expiring_authorization() -> None:
    server = Server(fail_paid=httpx.ConnectError("gone"))
    with client(server) as http:
        with pytest.raises(httpx.ConnectError):
            http.post(URL, content=b"q")
        server.fail_paid = None
        http.post(URL, content=b"another body")  # a different request: pays for itself
    assert len({r.headers[PAYMENT_SIGNATURE] for r in server.paid}) == 2

    short = Server(fail_paid=httpx.ReadTimeout("slow"), max_timeout=5)  # expires within 6 s
    with client(short) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(URL)
        short.fail_paid = None
        assert http.get(URL).status_code == 200
    assert len({r.headers[PAYMENT_SIGNATURE] for r in short.paid}) == 2


def test_a_failed_signature_gives_its_reservation_back() -> None:
    class Broken(Wallet):
        def sign(self, *a: object, **kw: object) -> object:  # type: ignore[override]
            raise RuntimeError("hardware wallet unplugged")

    budget = Budget({USDC: PRICE})
    server = Server()
    http = httpx.Client(auth=X402Auth(Broken(KEY), max_per_request=PRICE, budget=budget),
                        transport=httpx.MockTransport(server))
    with http, pytest.raises(PaymentRefused) as exc:
        http.get(URL)
    assert exc.value.reason == errors.SIGNING_FAILED
    assert budget.spent(USDC) == 0 and server.paid == []


def test_free_responses_pass_through_untouched() -> None:
    def free(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="nope")

    with client(free) as http:
        response = http.get(URL)
    assert response.status_code == 404
    assert payment_of(response) is None and receipt_of(response) is None


@pytest.mark.anyio
async def test_async_client_pays_and_replays_after_a_timeout() -> None:
    server = Server(fail_paid=httpx.ReadTimeout("slow"))
    auth = X402Auth(Wallet(KEY), max_per_request=PRICE)
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(server)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(URL)
        assert [p.status for p in auth.unresolved] == [PaymentStatus.UNKNOWN]
        server.fail_paid = None
        response = await http.get(URL)
    assert response.status_code == 200
    assert server.paid[0].headers[PAYMENT_SIGNATURE] == server.paid[1].headers[PAYMENT_SIGNATURE]
    assert payment_of(response).status == PaymentStatus.SETTLED and len(auth.payments) == 1
