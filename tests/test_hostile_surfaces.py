"""Every HTTP surface of the facilitator and the gateway that tests/test_hostile_inputs.py
does not fuzz: the operator endpoints (``/metrics``, ``/operator/payments[/{id}]``) and the
console, with and without the operator token, ``/supported``, ``/healthz``, unknown paths
and methods, hostile query strings and headers (oversized, invalid UTF-8, junk tokens and
cookies). The rule of tests/hostile.py: no 5xx but a 503 that says why, nothing changes
(no journal row, no transfer, no upstream call), the process answers afterwards.

And the replay across instances: a payment settled by one facilitator, sent to a second
facilitator with a journal of its own, moves no token a second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from hypothesis import given, settings

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.observe import Observer
from a402.provider import create_gateway
from tests.facilitator.helpers import request_body, requirement
from tests.hostile import FUZZ, assert_answered, hostile_requests
from tests.provider.support import Balances

pytestmark = pytest.mark.anvil

TOKEN = "hostile-operator-token-0123456789"
#: Fewer examples than the body fuzzers: each example is one request to one surface.
SURFACE = settings(FUZZ, max_examples=120)
FACILITATOR_PATHS = ["/verify", "/settle", "/supported", "/healthz", "/metrics",
                     "/operator/payments", "/operator/payments/x", "/console",
                     "/console/login", "/console/panel", "/console/console.js",
                     "/console/logout", "/openapi.json", "/nope"]
GATEWAY_PATHS = ["/paid/report", "/free", "/metrics", "/operator/payments",
                 "/operator/payments/x", "/console", "/console/login", "/console/panel",
                 "/.well-known/a402/info", "/.well-known/a402/session", "/nope"]
NewPayer = Callable[..., LocalAccount]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def operated(anvil_chain: Chain, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Facilitator, str]]:
    """A facilitator with its operator API and console on, journaling to its own file."""
    db = tmp_path_factory.mktemp("hostile-journal") / "journal.db"
    facilitator = Facilitator(anvil_chain, anvil_chain.accounts[3],
                              SettlementStore(f"sqlite:///{db}"))
    app = create_app(facilitator, observer=Observer("facilitator", operator_token=TOKEN),
                     console=True)
    with serve_in_thread(app) as url:
        yield facilitator, url


def _send(http: httpx.Client, url: str, method: str, target: str,
          headers: dict[str, bytes], body: bytes) -> httpx.Response:
    return http.request(method, url + target, headers=headers,
                        content=body if method not in ("GET", "HEAD") else None)


def test_hostile_requests_to_every_facilitator_surface_are_answered_and_change_nothing(
    anvil_chain: Chain, dev_stack: Manifest, operated: tuple[Facilitator, str],
    new_payer: NewPayer, http: httpx.Client
) -> None:
    facilitator, url = operated
    payer, pay_to = new_payer(5_000), Account.create().address
    body = request_body(payer, requirement(dev_stack, 1_000, payTo=pay_to))
    first = http.post(url + "/settle", json=body).json()
    assert first["success"], first
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    journal = facilitator.store.count_by_state()
    seen: list[int] = []

    @SURFACE
    @given(request=hostile_requests(FACILITATOR_PATHS, token=TOKEN))
    def probe(request: tuple[str, str, dict[str, bytes], bytes]) -> None:
        method, target, headers, raw = request
        answer = _send(http, url, method, target, headers, raw)
        seen.append(answer.status_code)
        # The console answers its pages in HTML and its refusals in plain text.
        json_surface = not target.startswith("/console") and method != "HEAD"
        assert_answered(answer, reason_key="error" if json_surface else None)

    probe()
    assert len(seen) >= 100
    signed_in = http.get(url + "/operator/payments", headers={"authorization": "Bearer " + TOKEN})
    assert signed_in.status_code == 200
    assert [p["transaction"] for p in signed_in.json()["payments"]] == [first["transaction"]]
    assert facilitator.store.count_by_state() == journal
    assert balances.unchanged()


def test_a_settled_payment_sent_to_a_second_facilitator_with_its_own_journal_moves_nothing(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, new_payer: NewPayer,
    http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two facilitators that share no journal: the second one's /settle of the same body
    is refused (the authorization's nonce is used on chain), or answers the first
    transaction; it never sends a second transfer."""
    payer, pay_to = new_payer(5_000), Account.create().address
    body = request_body(payer, requirement(dev_stack, 1_000, payTo=pay_to))
    first = http.post(facilitator_url + "/settle", json=body).json()
    assert first["success"], first
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    db = tmp_path_factory.mktemp("second-journal") / "journal.db"
    second = Facilitator(anvil_chain, anvil_chain.accounts[4], SettlementStore(f"sqlite:///{db}"))
    with serve_in_thread(create_app(second)) as url:
        verified = http.post(url + "/verify", json=body)
        settled = http.post(url + "/settle", json=body)
    assert verified.status_code == 200 and verified.json()["isValid"] is False, verified.text
    assert settled.status_code == 200, settled.text
    answer = settled.json()
    assert answer["success"] is False or answer["transaction"] == first["transaction"], answer
    assert balances.unchanged()
    assert balances.before[pay_to] == 1_000


def test_hostile_requests_to_every_gateway_surface_are_answered_and_change_nothing(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, new_payer: NewPayer,
    http: httpx.Client
) -> None:
    upstream, hits = FastAPI(), []

    @upstream.api_route("/paid/report", methods=["GET", "POST"])  # both priced
    async def report() -> dict[str, str]:
        hits.append("paid")
        return {"report": "the numbers"}

    @upstream.get("/free")
    async def free() -> dict[str, str]:
        return {"free": "yes"}

    payee = Account.create().address
    payer = new_payer(5_000)
    with serve_in_thread(upstream) as upstream_url:
        app = create_gateway(
            upstream_url, ["GET /paid/*=0.0015", "POST /paid/*=0.0015"], pay_to=payee,
            token=dev_stack.token, network=dev_stack.network, facilitator_url=facilitator_url,
            observer=Observer("gateway", operator_token=TOKEN), console=True)
        with serve_in_thread(app) as url:
            balances = Balances(anvil_chain, dev_stack, payer.address, payee)
            seen: list[int] = []

            @SURFACE
            @given(request=hostile_requests(GATEWAY_PATHS, token=TOKEN))
            def probe(request: tuple[str, str, dict[str, bytes], bytes]) -> None:
                method, target, headers, raw = request
                answer = _send(http, url, method, target, headers, raw)
                seen.append(answer.status_code)
                assert_answered(answer, reason_key=None)  # the upstream's own answers pass
                if target.startswith("/paid") and method in ("GET", "POST"):
                    assert answer.status_code != 200, answer.text[:300]

            probe()
            assert len(seen) >= 100
            assert http.get(url + "/free").json() == {"free": "yes"}
            operator = http.get(url + "/operator/payments",
                                headers={"authorization": "Bearer " + TOKEN})
            assert operator.status_code == 200, operator.text
    assert hits == []
    assert balances.unchanged()
    assert json.dumps(balances.before)  # the payer's funds are where they were


@pytest.mark.parametrize("path", ["/paid/report", "/free", "/.well-known/a402/stream",
                                  "/metrics", "/console"])
def test_a_websocket_to_any_gateway_path_is_refused_and_the_gateway_keeps_serving(
    dev_stack: Manifest, facilitator_url: str, http: httpx.Client, path: str
) -> None:
    """The gateway serves no WebSocket but the A402 stream (which needs an established
    tunnel): an upgrade anywhere is refused or closed, never a 5xx, never the upstream."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect as ws_connect

    upstream, hits = FastAPI(), []

    @upstream.get("/paid/report")
    async def report() -> dict[str, str]:
        hits.append("paid")
        return {"report": "the numbers"}

    with serve_in_thread(upstream) as upstream_url:
        app = create_gateway(
            upstream_url, ["GET /paid/*=0.0015"], pay_to=Account.create().address,
            token=dev_stack.token, network=dev_stack.network, facilitator_url=facilitator_url,
            observer=Observer("gateway", operator_token=TOKEN), console=True)
        with serve_in_thread(app) as url:
            target = "ws" + url.removeprefix("http") + path + "?session=" + "%ff" * 10
            try:
                with ws_connect(target, open_timeout=10, close_timeout=5) as ws:
                    ws.send(b"\x00" * 100)
                    ws.recv(timeout=10)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code != 1011, closed
            except InvalidStatus as refused:
                assert refused.response.status_code < 500, refused.response
            assert http.get(url + "/metrics", headers={"authorization": "Bearer " + TOKEN}
                            ).status_code == 200
    assert hits == []
