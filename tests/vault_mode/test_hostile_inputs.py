"""Hostile input to vault mode's HTTP API (:mod:`a402.vault.mode_app`) never crashes it, is
answered with a reason (no 5xx but a 503 that says why), and changes nothing: no payout
queued, no settlement, no balance moved, on the ledger or on chain. Bodies are signed by a
participant with no free balance (as anyone can sign), by Alice who has one (read-only
routes), or carry hostile signature headers; Alice's own signed call replayed is refused.
The app runs in this process behind real HTTP: a crash fails the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.background import serve_in_thread
from a402.vault.mode_app import create_mode_app
from a402.wire import vault_api as api
from a402.wire.errors import JSON_TOO_DEEP, REQUEST_TOO_LARGE
from tests.hostile import FUZZ, METHODS, assert_answered, hostile_bodies, hostile_headers

from .helpers import balance
from .test_service import Harness

pytestmark = pytest.mark.anvil

DEEP = b'{"amount":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
PATHS = ["/v1/vault/withdraw", "/v1/vault/settle-now", "/v1/vault/balance",
         "/v1/vault/statement", "/v1/vault/status", "/v1/invoke", "/v1/requests/k"]
VALID: dict[str, Any] = {"/v1/vault/withdraw": {"amount": "5000", "idempotencyKey": "w1"},
                         "/v1/invoke": {"url": "http://127.0.0.1:1/x", "maxPrice": "1",
                                        "idempotencyKey": "k"}}


def test_hostile_calls_to_the_vault_mode_api_are_answered_and_change_nothing(
    vault_chain: Any, usdc: Any, tmp_path: Path
) -> None:
    h = Harness(vault_chain, usdc, tmp_path)
    alice, stranger = Account.create(), Account.create()
    h.deposit(alice.address, 1_000)
    h.service.tick()
    vault = api.vault_account(h.chain.network, h.service.address)
    life = h.service.accounts.life_id

    def signed(who: Any, method: str, path: str, body: bytes) -> dict[str, str]:
        return dict(api.sign_request(who, vault, method, path, body, life=life))

    with serve_in_thread(create_mode_app(h.service, worker=False)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        replayed = signed(alice, "GET", "/v1/vault/balance", b"")
        mine = http.get("/v1/vault/balance", headers=replayed)
        assert mine.status_code == 200 and mine.json()["free"] == "1000", mine.text
        before = (h.service.balance(alice.address), h.service.status()["totals"],
                  balance(usdc, h.contract.address))
        deep = http.post("/v1/vault/withdraw", content=DEEP,
                         headers=signed(stranger, "POST", "/v1/vault/withdraw", DEEP))
        assert (deep.status_code, deep.json()["error"]) == (400, JSON_TOO_DEEP)
        big = b'{"amount":"' + b"1" * (api.MAX_CALL_BODY + 1) + b'"}'
        huge = http.post("/v1/vault/withdraw", content=big,
                         headers=signed(stranger, "POST", "/v1/vault/withdraw", big))
        assert (huge.status_code, huge.json()["error"]) == (413, REQUEST_TOO_LARGE)
        probes: list[str] = []

        @settings(FUZZ, max_examples=120)
        @given(data=st.data(), path=st.sampled_from(PATHS), method=st.sampled_from(METHODS),
               who=st.sampled_from(["stranger", "stranger", "alice", "replay"]),
               tamper=st.sampled_from([None, None, api.SIGNATURE_HEADER, api.CLIENT_HEADER,
                                       api.NONCE_HEADER, api.TIMESTAMP_HEADER]))
        def probe(data: st.DataObject, path: str, method: str, who: str,
                  tamper: str | None) -> None:
            probes.append(path)
            valid = json.dumps(VALID.get(path, {})).encode()
            body = data.draw(hostile_bodies(valid, large=api.MAX_CALL_BODY))
            if method in ("GET", "HEAD"):
                body = b""
            if who == "replay":
                headers = dict(replayed)
            elif who == "alice" and method in ("GET", "HEAD"):  # reads only: she is funded
                headers = signed(alice, method, path, body)
            else:
                headers = signed(stranger, method, path, body)
            if tamper is not None:
                headers[tamper] = data.draw(hostile_headers(replayed[api.SIGNATURE_HEADER]))
            answer = http.request(method, path, content=body or None, headers=headers)
            assert_answered(answer, reason_key=None if method == "HEAD" else "error")
            if who == "replay" or tamper in (api.SIGNATURE_HEADER, api.CLIENT_HEADER):
                assert answer.status_code >= 400, answer.text[:300]

        probe()
        assert len(probes) >= 100
        assert http.get("/v1/info").status_code == 200
        after = (h.service.balance(alice.address), h.service.status()["totals"],
                 balance(usdc, h.contract.address))
    assert after == before
    assert h.service.balance(stranger.address)["payoutRequested"] == "0"


def test_a_signed_withdrawal_replayed_to_a_second_instance_queues_it_once(
    vault_chain: Any, usdc: Any, tmp_path: Path
) -> None:
    """Alice's signed ``withdraw`` (no idempotency key: only its nonce makes it one call),
    accepted by one instance, then sent byte for byte to a second instance on the same
    store (a restart, a replica) and to another vault with a store of its own: both refuse
    it (401), and her payout is queued once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    h = Harness(vault_chain, usdc, tmp_path / "a")
    other = Harness(vault_chain, usdc, tmp_path / "b")
    alice = Account.create()
    h.deposit(alice.address, 1_000)
    other.deposit(alice.address, 1_000)
    h.service.tick()
    other.service.tick()
    body = b'{"amount":"100"}'
    headers = api.sign_request(alice, api.vault_account(h.chain.network, h.service.address),
                               "POST", "/v1/vault/withdraw", body,
                               life=h.service.accounts.life_id)

    def send(service: Any) -> httpx.Response:
        with serve_in_thread(create_mode_app(service, worker=False)) as url:
            return httpx.post(url + "/v1/vault/withdraw", content=body, headers=headers,
                              timeout=60)

    first = send(h.service)
    assert first.status_code == 202, first.text
    second_instance = h.start()
    replayed = [send(second_instance), send(h.service), send(other.service)]
    assert [(r.status_code, r.json()["error"]) for r in replayed[:2]] == \
        [(401, api.REPLAYED_REQUEST)] * 2
    assert replayed[2].status_code == 401, replayed[2].text
    assert second_instance.balance(alice.address)["payoutRequested"] == "100"
    assert h.service.balance(alice.address)["payoutRequested"] == "100"
    assert other.service.balance(alice.address)["payoutRequested"] == "0"
