"""End to end: our client pays x402 servers through a real facilitator on anvil.

Every test checks balances as exact deltas on the chain: the client's
receipts are the server's word, the token balances are the truth.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from a402.client import (
    Budget,
    PaymentRefused,
    PaymentStatus,
    async_paying_client,
    errors,
    paying_client,
    payment_of,
    receipt_of,
    token_units_max,
)
from tests.client.conftest import Stack, until
from tests.client.x402_server import PaidServer, requirement

PRICE = 10_000  # 0.01 of a 6-decimal token

pytestmark = pytest.mark.anvil


def _assert_settled(stack: Stack, response: httpx.Response, payer: str) -> None:
    payment = payment_of(response)
    receipt = receipt_of(response)
    assert payment is not None and payment.status == PaymentStatus.SETTLED, payment
    assert receipt is not None and receipt.success and receipt.payer.lower() == payer.lower()
    tx = stack.chain.w3.eth.get_transaction_receipt(receipt.transaction)
    assert tx["status"] == 1 and tx["to"].lower() == stack.token.lower()


def test_sync_client_pays_a_v2_server(stack: Stack, served) -> None:
    payer = stack.new_payer(PRICE * 5)
    server = stack.server(PRICE)
    url = served(server)
    before = stack.balance(stack.pay_to)
    with paying_client(payer, max_per_request=token_units_max("0.01"),
                       networks=[stack.manifest.network]) as http:
        response = http.post(f"{url}/paid", content=b"hello")
    assert response.status_code == 200
    assert response.json() == {"paid": True, "method": "POST", "echo": "hello"}
    _assert_settled(stack, response, payer.address)
    assert stack.balance(payer.address) == PRICE * 4
    assert stack.balance(stack.pay_to) - before == PRICE
    assert (server.unpaid_requests, server.paid_attempts) == (1, 1)


@pytest.mark.anyio
async def test_async_client_pays_a_v2_server(stack: Stack, served) -> None:
    payer = stack.new_payer(PRICE * 5)
    url = served(stack.server(PRICE))
    async with async_paying_client(payer, max_per_request=PRICE) as http:
        first = await http.get(f"{url}/paid")
        second = await http.get(f"{url}/paid")
        free = await http.get(f"{url}/free")
    for response in (first, second):
        assert response.status_code == 200
        _assert_settled(stack, response, payer.address)
    assert payment_of(first).nonce != payment_of(second).nonce
    assert free.json() == {"free": True} and payment_of(free) is None
    assert stack.balance(payer.address) == PRICE * 3


def test_sync_client_pays_a_v1_server(sepolia: Stack, served) -> None:
    payer = sepolia.new_payer(PRICE * 2)
    server = sepolia.server(PRICE, version=1)
    url = served(server)
    with paying_client(payer, max_per_request=PRICE, networks=["base-sepolia"]) as http:
        response = http.get(f"{url}/paid")
    assert response.status_code == 200, response.text
    _assert_settled(sepolia, response, payer.address)
    assert payment_of(response).offer.version == 1
    assert server.payloads[0]["network"] == "base-sepolia"  # v1 names, on the wire
    assert sepolia.balance(payer.address) == PRICE


@pytest.mark.anyio
async def test_async_client_pays_a_v1_server(sepolia: Stack, served) -> None:
    payer = sepolia.new_payer(PRICE)
    url = served(sepolia.server(PRICE, version=1))
    async with async_paying_client(payer, max_per_request=PRICE,
                                   networks=["eip155:84532"]) as http:
        response = await http.get(f"{url}/paid")
    assert response.status_code == 200
    _assert_settled(sepolia, response, payer.address)
    assert sepolia.balance(payer.address) == 0


def test_budget_allows_n_payments_and_the_next_moves_nothing(stack: Stack, served) -> None:
    payer = stack.new_payer(PRICE * 10)
    server = stack.server(PRICE)
    url = served(server)
    budget = Budget({stack.token: 3 * PRICE})
    with paying_client(payer, max_per_request=PRICE, budget=budget) as http:
        for _ in range(3):
            assert http.get(f"{url}/paid").status_code == 200
        with pytest.raises(PaymentRefused) as exc:
            http.get(f"{url}/paid")
    assert exc.value.reason == errors.BUDGET_EXHAUSTED
    assert stack.balance(payer.address) == PRICE * 7
    assert server.paid_attempts == 3 and server.unpaid_requests == 4
    assert budget.remaining(stack.token) == 0


def test_concurrent_requests_never_exceed_the_budget(stack: Stack, served) -> None:
    payer = stack.new_payer(PRICE * 10)
    server = stack.server(PRICE)
    url = served(server)
    budget = Budget({stack.token: 2 * PRICE})
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)
    with paying_client(payer, max_per_request=PRICE, budget=budget) as http:
        def worker() -> None:
            start.wait()
            try:
                outcome = str(http.get(f"{url}/paid").status_code)
            except PaymentRefused as e:
                outcome = e.reason
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(outcomes) == ["200", "200", errors.BUDGET_EXHAUSTED, errors.BUDGET_EXHAUSTED]
    assert stack.balance(payer.address) == PRICE * 8
    assert server.paid_attempts == 2


def test_price_above_maximum_sends_no_payment(stack: Stack, served) -> None:
    payer = stack.new_payer(PRICE)
    server = stack.server(PRICE)
    url = served(server)
    with paying_client(payer, max_per_request=token_units_max("0.009999")) as http, \
            pytest.raises(PaymentRefused) as exc:
        http.get(f"{url}/paid")
    assert exc.value.reason == errors.PRICE_ABOVE_MAXIMUM
    assert server.paid_attempts == 0 and stack.balance(payer.address) == PRICE


def test_only_the_allowed_network_is_paid(stack: Stack, served) -> None:
    """x402 #2991: a cheaper first offer on a chain the caller did not allow is skipped."""
    payer = stack.new_payer(PRICE)
    elsewhere = requirement(network="eip155:8453", asset=stack.token, pay_to=stack.pay_to,
                            amount=1, extra=stack.manifest.token.eip712_extra())
    server = PaidServer(stack.facilitator_url, [elsewhere, stack.requirement(PRICE)])
    url = served(server)
    with paying_client(payer, max_per_request=PRICE, networks=["eip155:31337"]) as http:
        response = http.get(f"{url}/paid")
    assert response.status_code == 200
    assert payment_of(response).network == "eip155:31337"
    assert server.payloads[0]["accepted"]["network"] == "eip155:31337"
    assert stack.balance(payer.address) == 0

    with paying_client(payer, max_per_request=PRICE, networks=["eip155:1"]) as http, \
            pytest.raises(PaymentRefused) as exc:
        http.get(f"{url}/paid")
    assert exc.value.reason == errors.NO_ACCEPTABLE_REQUIREMENT


@pytest.mark.parametrize("idempotent", [False, True])
def test_retry_after_timeout_does_not_pay_twice(stack: Stack, served, idempotent: bool) -> None:
    """x402 #808: the server settles, the answer is lost, the caller retries."""
    payer = stack.new_payer(PRICE * 5)
    server = stack.server(PRICE, slow_paid=1, slow_seconds=4.0, idempotent=idempotent)
    url = served(server)
    with paying_client(payer, max_per_request=PRICE, timeout=2.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{url}/paid")
        # The server settles on its own schedule; the retry must come after it did.
        until(lambda: len(server.settled) == 1, "the first request's settlement")
        assert stack.balance(payer.address) == PRICE * 4  # it did settle
        retry = http.get(f"{url}/paid")
        auth = http.auth
    nonces = {p["payload"]["authorization"]["nonce"] for p in server.payloads}
    assert len(server.payloads) == 2 and len(nonces) == 1  # the same authorization, twice
    assert len(auth.payments) == 1  # type: ignore[attr-defined]
    assert stack.balance(payer.address) == PRICE * 4  # paid exactly once
    if idempotent:  # a server that remembers payments answers the replay with the resource
        assert retry.status_code == 200
        _assert_settled(stack, retry, payer.address)
    else:  # one that does not says 402 (nonce used), and the client does not re-sign
        assert retry.status_code == 402
        assert payment_of(retry).status == PaymentStatus.REJECTED
        assert "nonce" in (payment_of(retry).reason or "")
