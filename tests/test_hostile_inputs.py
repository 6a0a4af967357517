"""Hostile input to the facilitator and the payment middleware never crashes them, is answered
with a reason (no 5xx but a 503 that says why), and changes nothing: no journal row, no
transfer, no handler run. (The vault's API: tests/vault/test_hostile_inputs.py.)

The first tests are the finding itself: a body nested 100,000 deep killed the facilitator with
SIGSEGV (py-evm raises the recursion limit to 100,000, so the C JSON decoder overflowed the C
stack). The servers run in this process, as everywhere in the suite: a crash fails the run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.facilitator.app import BODY_LIMITS
from a402.facilitator.core import Facilitator
from a402.wire.errors import JSON_TOO_DEEP, REQUEST_TOO_LARGE
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    decode_payment_required,
)
from a402.wire.x402 import PaymentRequired
from tests.facilitator.helpers import request_body, requirement
from tests.hostile import FUZZ, assert_answered, hostile_bodies, hostile_headers
from tests.provider.support import PRICE_ATOMIC, Balances, Calls, paid_app, v2_header

pytestmark = pytest.mark.anvil

NewPayer = Callable[..., LocalAccount]
DEEP = b'{"x402Version":2,"paymentPayload":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def test_a_body_nested_100000_deep_is_refused_and_the_facilitator_keeps_serving(
    facilitator: Facilitator, facilitator_url: str, http: httpx.Client
) -> None:
    journal = facilitator.store.count_by_state()
    for path in ("/verify", "/settle"):
        refused = http.post(facilitator_url + path, content=DEEP,
                            headers={"content-type": "application/json"})
        assert (refused.status_code, refused.json()["error"]) == (400, JSON_TOO_DEEP)
    assert http.get(facilitator_url + "/supported").status_code == 200
    assert facilitator.store.count_by_state() == journal


def test_a_body_over_the_size_limit_is_refused_413_before_it_is_decoded(
    facilitator_url: str, http: httpx.Client
) -> None:
    big = b'{"s":"' + b"x" * BODY_LIMITS.max_bytes + b'"}'
    refused = http.post(facilitator_url + "/verify", content=big)
    assert (refused.status_code, refused.json()["error"]) == (413, REQUEST_TOO_LARGE)


def test_a_control_character_in_a_header_is_refused_400_with_a_reason(
    facilitator_url: str, http: httpx.Client
) -> None:
    """uvicorn refuses the request before the app sees it; its answer is JSON, like ours."""
    url = urlsplit(facilitator_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"GET /supported HTTP/1.1\r\nHost: x\r\nX-Evil: a\x01b\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"] == "bad_request"
    assert http.get(facilitator_url + "/supported").status_code == 200


def test_a_handler_that_fails_answers_500_in_json_and_the_next_request_is_served(
    facilitator: Facilitator, facilitator_url: str, http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(facilitator, "verify", broken)
    failed = http.post(facilitator_url + "/verify", json={"x402Version": 2})
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal_error", "message": "RuntimeError"}
    assert http.get(facilitator_url + "/supported").status_code == 200


def test_a_service_that_cannot_serve_exits_non_zero_for_its_supervisor(
    anvil_chain: Chain, tmp_path: Path
) -> None:
    """``a402 facilitator`` on a port already taken: a non-zero exit, which a supervisor
    (systemd ``Restart=on-failure``) restarts."""
    key = tmp_path / "facilitator.key"
    key.write_text("0x" + bytes(Account.create().key).hex() + "\n")
    key.chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("a402")), "facilitator", "--rpc",
             anvil_chain.rpc_url, "--key-file", str(key), "--db", f"sqlite:///{tmp_path}/j.db",
             "--port", str(taken.getsockname()[1])],
            capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0, done.stderr


def test_a_facilitator_answering_100000_deep_is_a_refusal_for_the_middleware_not_a_crash(
    dev_stack: Manifest, new_payer: NewPayer, http: httpx.Client
) -> None:
    """The middleware decodes its facilitator's answers within the same bounds: a hostile
    or broken facilitator gets the payment refused, not the provider's process killed."""
    async def deep(_: Request) -> Response:
        return Response(DEEP, media_type="application/json")

    hostile = Starlette(routes=[Route(p, deep, methods=["GET", "POST"])
                                for p in ("/verify", "/settle", "/supported")])
    calls, pay_to = Calls(), Account.create().address
    with serve_in_thread(hostile) as facilitator, serve_in_thread(paid_app(
            pay_to=pay_to, manifest=dev_stack, facilitator=facilitator, calls=calls)) as url:
        offer = decode_payment_required(http.get(url + "/weather").headers[PAYMENT_REQUIRED])
        assert isinstance(offer, PaymentRequired)
        refused = http.get(url + "/weather", headers=v2_header(offer, new_payer(5_000)))
        assert refused.status_code in (402, 502, 503), refused.text[:300]
        assert http.get(url + "/free").status_code == 200
    assert calls["weather"] == 0


def test_hostile_bodies_to_the_facilitator_are_answered_and_change_nothing(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, facilitator_url: str,
    new_payer: NewPayer, http: httpx.Client
) -> None:
    """A settled payment's body, replayed and mutated among other hostile bodies: no new
    journal row, no transfer; a settle that succeeds is the first one, answered again."""
    payer, pay_to = new_payer(5_000), Account.create().address
    body = request_body(payer, requirement(dev_stack, 1_000, payTo=pay_to))
    first = http.post(facilitator_url + "/settle", json=body).json()
    assert first["success"], first
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    journal = facilitator.store.count_by_state()
    probes: list[str] = []

    @FUZZ
    @given(raw=hostile_bodies(json.dumps(body).encode(), large=BODY_LIMITS.max_bytes),
           path=st.sampled_from(["/verify", "/settle"]))
    def probe(raw: bytes, path: str) -> None:
        probes.append(path)
        answer = http.post(facilitator_url + path, content=raw,
                           headers={"content-type": "application/json"})
        assert_answered(answer)
        if path == "/settle" and answer.status_code == 200 and answer.json().get("success"):
            assert answer.json()["transaction"] == first["transaction"]

    probe()
    assert len(probes) >= 100
    assert http.get(facilitator_url + "/supported").status_code == 200
    assert facilitator.store.count_by_state() == journal
    assert balances.unchanged()


def test_hostile_payment_headers_to_the_middleware_are_answered_and_change_nothing(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, new_payer: NewPayer,
    http: httpx.Client
) -> None:
    """A payment already served, its header replayed and mutated among other hostile
    headers (v2 and v1 names): the handler never runs again and no token moves; only the
    identical resend gets a 200, the response it bought, again (kept in the ledger)."""
    calls, payer, pay_to = Calls(), new_payer(5_000), Account.create().address
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=facilitator_url, calls=calls)
    with serve_in_thread(app) as url:
        offer = decode_payment_required(http.get(url + "/weather").headers[PAYMENT_REQUIRED])
        assert isinstance(offer, PaymentRequired)
        header = v2_header(offer, payer)
        served = http.get(url + "/weather", headers=header)
        assert served.status_code == 200
        balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
        assert balances.before[pay_to] == PRICE_ATOMIC and calls["weather"] == 1
        probes: list[str] = []

        @FUZZ
        @given(value=hostile_headers(header[PAYMENT_SIGNATURE]),
               name=st.sampled_from([PAYMENT_SIGNATURE, X_PAYMENT]))
        def probe(value: bytes, name: str) -> None:
            probes.append(name)
            answer = http.get(url + "/weather", headers={name: value})
            assert_answered(answer, reason_key=None)
            if answer.status_code == 200:  # only the identical resend: what it bought, again
                assert answer.content == served.content, answer.text[:300]
                assert answer.headers["payment-response"] == served.headers["payment-response"]

        probe()
        assert len(probes) >= 100
        assert http.get(url + "/free").status_code == 200
    assert calls["weather"] == 1
    assert balances.unchanged()
