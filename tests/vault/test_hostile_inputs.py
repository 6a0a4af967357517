"""Hostile input to the vault's API never crashes it, is answered with a reason (no 5xx but a
503 that says why), and changes nothing: no account, deposit, withdrawal or channel, no token
moved. Every body is signed by a fresh key, as anyone can: the signature admits the body to
decoding, so decoding is where it must be bounded.

The finding itself first: a signed ``POST /v1/deposits`` nested 100,000 deep killed the vault
with SIGSEGV (py-evm raises the recursion limit to 100,000; the C JSON decoder then overflowed
the C stack). The vault runs in this process: a crash fails the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from a402.chain.tx import transact
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from a402.wire.errors import JSON_TOO_DEEP
from tests.a402_exchange.helpers import World
from tests.hostile import FUZZ, assert_answered, hostile_bodies, hostile_headers

from .helpers import Vault, assert_conserved, client_of, running_vault

pytestmark = pytest.mark.anvil

DEEP = b'{"transaction":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def _post(http: httpx.Client, vault: Vault, path: str, body: bytes,
          account: object | None = None) -> httpx.Response:
    signer = account or Account.create()
    headers = api.sign_request(signer, vault.signed_as, "POST", path, body, life=vault.life)  # type: ignore[arg-type]
    return http.post(vault.url + path, content=body, headers=headers)


def test_a_signed_deposit_nested_100000_deep_is_refused_and_the_vault_keeps_serving(
    world: World, http: httpx.Client
) -> None:
    with running_vault(world) as vault:
        before = vault.store.totals()
        refused = _post(http, vault, "/v1/deposits", DEEP)
        assert (refused.status_code, refused.json()["error"]) == (400, JSON_TOO_DEEP)
        assert http.get(vault.url + "/v1/info").status_code == 200
        assert vault.store.totals() == before


@pytest.mark.parametrize("tx_hash", ["0x1234", "not a hash", "0x" + "zz" * 32, "0x" + "0" * 66])
def test_a_deposit_report_with_a_malformed_transaction_hash_is_refused_and_changes_nothing(
    world: World, http: httpx.Client, tx_hash: str
) -> None:
    with running_vault(world) as vault:
        account = Account.create()
        refused = _post(http, vault, "/v1/deposits", json.dumps({"transaction": tx_hash}).encode(),
                        account)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == api.BAD_REQUEST
        assert "transaction hash" in refused.json()["message"]
        assert vault.store.totals(account.address) == vault_store.Totals(0, 0, 0, 0, 0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:x/", "http://127.0.0.1:99999/", "http://:80/"])
def test_a_call_to_a_url_whose_host_or_port_cannot_be_read_is_refused_400(
    world: World, http: httpx.Client, url: str
) -> None:
    """Found by the fuzzing below: such a URL answered 500 (a ValueError from urllib)."""
    with running_vault(world) as vault:
        body = json.dumps({"url": url, "maxPrice": "1", "idempotencyKey": "k"}).encode()
        refused = _post(http, vault, "/v1/invoke", body)
        assert (refused.status_code, refused.json()["error"]) == (400, api.BAD_REQUEST)


def test_hostile_bodies_and_headers_to_the_vault_are_answered_and_change_nothing(
    world: World, http: httpx.Client
) -> None:
    """A real deposit's report replayed and mutated by a stranger, a withdrawal and a call
    shaped right but unfunded, and every other hostile body; some with hostile signatures."""
    with running_vault(world) as vault:
        depositor, _ = client_of(world, vault, funds=5_000)
        transact(world.chain, depositor, world.token.functions.approve(world.manager.address,
                                                                        700))
        tx = world.manager.deposit_to_pool(depositor, vault.address, depositor.address, 700)
        report = {"transaction": "0x" + bytes(tx["transactionHash"]).hex()}
        assert _post(http, vault, "/v1/deposits", json.dumps(report).encode(),
                     depositor).json()["state"] == "credited"
        stranger = Account.create()
        valid = {
            "/v1/deposits": report,
            "/v1/withdrawals": {"amount": "100", "to": stranger.address, "nonce": "0",
                                "deadline": str(2**40), "signature": "0x" + "11" * 65},
            "/v1/invoke": {"url": "http://127.0.0.1:1/x", "maxPrice": "1",
                           "idempotencyKey": "k2"},
        }
        before = (vault.store.totals(), world.balance(world.manager.address))
        signature = api.sign_request(stranger, vault.signed_as, "GET", "/v1/account", b"",
                                     life=vault.life)
        probes: list[str] = []

        @FUZZ
        @given(data=st.data(), path=st.sampled_from(sorted(valid)),
               tamper=st.sampled_from([None, None, api.SIGNATURE_HEADER, api.CLIENT_HEADER,
                                       api.NONCE_HEADER, api.TIMESTAMP_HEADER]))
        def probe(data: st.DataObject, path: str, tamper: str | None) -> None:
            probes.append(path)
            body = data.draw(hostile_bodies(json.dumps(valid[path]).encode(),
                                            large=api.MAX_CALL_BODY))
            headers: dict[str, str | bytes] = dict(
                api.sign_request(stranger, vault.signed_as, "POST", path, body,
                                 life=vault.life))
            if tamper is not None:
                headers[tamper] = data.draw(hostile_headers(signature[api.SIGNATURE_HEADER]))
            answer = http.post(vault.url + path, content=body, headers=headers)
            assert_answered(answer)  # a 200 may be a call to a free URL: it moves nothing

        probe()
        assert len(probes) >= 100
        assert http.get(vault.url + "/v1/info").status_code == 200
        assert (vault.store.totals(), world.balance(world.manager.address)) == before
        assert vault.store.totals(stranger.address) == vault.store.totals(Account.create().address)
        assert_conserved(world, vault.store, vault.address)


def test_hostile_requests_to_the_vaults_other_routes_are_answered_and_change_nothing(
    world: World, http: httpx.Client
) -> None:
    """The routes the body fuzzer above leaves out: ``GET /v1/account``,
    ``GET /v1/requests/{key}``, ``POST /v1/channels/{cid}/close``, the operator API and
    console (with and without the token), unknown paths, any method, hostile queries and
    path parameters, signed by a stranger or with hostile signature headers."""
    from a402.observe import Observer
    from tests.hostile import hostile_requests

    token = "vault-operator-token-0123456789"
    with running_vault(world, observer=Observer("vault", operator_token=token),
                       console=True) as vault:
        stranger = Account.create()
        before = (vault.store.totals(), world.balance(world.manager.address))
        seed = api.sign_request(stranger, vault.signed_as, "GET", "/v1/account", b"",
                                life=vault.life)
        paths = ["/v1/account", "/v1/requests/k", "/v1/channels/0x" + "11" * 32 + "/close",
                 "/v1/channels/x/close", "/v1/info", "/healthz", "/metrics",
                 "/operator/payments", "/operator/payments/x", "/console", "/console/login",
                 "/v1/nope"]
        probes: list[str] = []

        @FUZZ
        @given(data=st.data(), request=hostile_requests(paths, token=token),
               signed=st.booleans(),
               tamper=st.sampled_from([None, api.SIGNATURE_HEADER, api.NONCE_HEADER,
                                       api.TIMESTAMP_HEADER, api.LIFE_HEADER]))
        def probe(data: st.DataObject, request: tuple[str, str, dict[str, bytes], bytes],
                  signed: bool, tamper: str | None) -> None:
            method, target, headers, body = request
            probes.append(target)
            if method in ("GET", "HEAD"):
                body = b""
            sent: dict[str, str | bytes] = dict(headers)
            if signed:
                sent.update(api.sign_request(stranger, vault.signed_as, method, target, body,
                                             life=vault.life))
            if tamper is not None:
                sent[tamper] = data.draw(hostile_headers(seed[api.SIGNATURE_HEADER]))
            answer = http.request(method, vault.url + target, headers=sent,
                                  content=body or None)
            json_surface = not target.startswith("/console") and method != "HEAD"
            assert_answered(answer, reason_key="error" if json_surface else None)

        probe()
        assert len(probes) >= 100
        assert http.get(vault.url + "/v1/info").status_code == 200
        assert (vault.store.totals(), world.balance(world.manager.address)) == before
