"""The vault client's retries as a hostile vault host meets them (review s8-rev1): the
host plays every signature the SDK sends, answers what it likes, and shows any life it
likes. What the SDK signs must let the enclave pay one call at most once, and what it
says (and what the budget keeps) must be true about the money.

The vault's HTTP face is a double (``httpx.MockTransport``); where a payment is claimed,
the real enclave code (:class:`VaultEnclaveCode`) is asked to pay the kept signatures.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from argparse import Namespace
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import ChannelTerms
from a402.client.budget import Budget
from a402.client.vault import (
    KEY_OF_ANOTHER_LIFE,
    VaultCallError,
    VaultClient,
    created_at_of,
    new_idempotency_key,
)
from a402.client.vault_transport import CREATED_AT_HEADER, VaultTransport, _Limits
from a402.vault_enclave import INVOKE_PATH, SignedCall, VaultEnclave
from a402.wire import vault_api as api

from .test_enclave_code import (
    DOMAIN,
    NETWORK,
    NOW,
    PRICE,
    Setup,
    call,
    new_setup,
    pay,
    provider_side,
)

TOKEN_ADDRESS = "0x" + "ef" * 20


@pytest.fixture(name="setup")
def _setup() -> Setup:
    return new_setup()


_MANAGER, _TOKEN = "0x" + "4d" * 20, "0x" + "70" * 20  # pinned on first use


def _lost_answers(vault: VaultEnclave) -> httpx.MockTransport:
    """The vault's HTTP face as a hostile host runs it: its real ``/v1/info`` (the
    enclave's account and life); every invoke answered "lost" (503), its signed body kept."""
    kept: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={
                "network": NETWORK, "vault": "0x" + vault.address.hex(),
                "life": vault.life_id, "ascManager": _MANAGER, "token": {"address": _TOKEN}})
        kept.append(request)
        return httpx.Response(503, json={"error": "provider_unavailable", "message": "lost"})

    transport = httpx.MockTransport(handle)
    transport.kept = kept  # type: ignore[attr-defined]
    return transport


def _kept(transport: httpx.MockTransport) -> list[SignedCall]:
    return [SignedCall.of(dict(r.headers), "POST", INVOKE_PATH, r.content)
            for r in transport.kept]  # type: ignore[attr-defined]


def _two_channels(s: Setup, client: LocalAccount) -> list[ChannelTerms]:
    out = []
    for i in range(2):
        terms = ChannelTerms(client.address, s.vault.address, s.provider.address,
                             s.schnorr.public_key, 10 * PRICE, s.vault.salt())
        s.vault.approve_pool_channel(call(s.vault, client, key=f"needs-a-channel-{i}"), terms,
                                     lock_timeout=10.0, now=NOW)
        s.vault.bind_tunnel(s.tunnel, terms.channel_id(DOMAIN))
        out.append(terms)
    return out


def _paid(s: Setup, channels: list[ChannelTerms], calls: list[SignedCall]) -> list[int]:
    """The host tries to pay each kept call on its own channel; what each channel paid."""
    for terms, signed_call in zip(channels, calls, strict=True):
        with contextlib.suppress(Exception):  # refused: what "never pays twice" promises
            pay(s, terms, provider_side(s, terms), signed_call)
    return [s.vault.channel(t.channel_id(DOMAIN)).provider_balance  # type: ignore[union-attr]
            for t in channels]


def test_a_retry_of_ones_own_key_from_a_new_client_object_pays_at_most_once(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """F2: Alice calls with her own idempotency key "order-42"; the answer is lost. Her
    process restarts and a new client object retries the key, a few seconds later, without
    ``created_at``: it signs a new createdAt. The host gets both signatures paid if it can:
    the enclave pays the key once."""
    s = setup
    alice: LocalAccount = Account.create()
    transport = _lost_answers(s.vault)

    def attempt() -> VaultCallError:
        with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                         http=httpx.Client(transport=transport)) as client, \
                pytest.raises(VaultCallError) as failed:
            client.invoke("https://api.example/weather", max_price=PRICE,
                          idempotency_key="order-42")
        return failed.value

    first = attempt()
    assert first.body["idempotencyKey"] == "order-42"  # what a retry needs, in the error
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 5)
    attempt()
    monkeypatch.setattr(time, "time", real)
    calls = _kept(transport)
    created = [json.loads(c.body)["createdAt"] for c in calls]
    assert created[0] == first.body["createdAt"] and created[0] != created[1]
    assert sum(_paid(s, _two_channels(s, alice), calls)) == PRICE


def test_a_generated_key_retried_from_a_new_client_object_is_the_same_call(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """F2, the SDK's half: a key the SDK generates embeds its createdAt; a new client object
    (a new process, the CLI run again with the printed key) retrying it seconds later signs
    the same createdAt, so the first attempt's answer is the retry's (never a second call)."""
    s = setup
    alice: LocalAccount = Account.create()
    transport = _lost_answers(s.vault)
    with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                     http=httpx.Client(transport=transport)) as client, \
            pytest.raises(VaultCallError) as failed:
        client.invoke("https://api.example/weather", max_price=PRICE)
    key, created = failed.value.body["idempotencyKey"], failed.value.body["createdAt"]
    assert created_at_of(key) == created
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7)
    with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                     http=httpx.Client(transport=transport)) as client, \
            pytest.raises(VaultCallError):
        client.invoke("https://api.example/weather", max_price=PRICE, idempotency_key=key)
    monkeypatch.setattr(time, "time", real)
    calls = _kept(transport)
    assert [json.loads(c.body)["createdAt"] for c in calls] == [created, created]
    assert sum(_paid(s, _two_channels(s, alice), calls)) == PRICE
    assert created_at_of("order-42") is None and created_at_of(new_idempotency_key(5)) == 5


def test_the_httpx_transport_retries_with_the_created_at_it_is_given(setup: Setup) -> None:
    """F2, the transport: a request carrying ``Idempotency-Key`` and ``A402-Created-At``
    (the first attempt's, from the error) signs that createdAt; the header is not sent on."""
    s = setup
    alice: LocalAccount = Account.create()
    transport = _lost_answers(s.vault)
    client = VaultClient("http://vault.test", alice, trust_on_first_use=True,
                         http=httpx.Client(transport=transport))
    with httpx.Client(transport=VaultTransport(client, _Limits(PRICE))) as http, \
            pytest.raises(VaultCallError) as failed:
        http.get("https://api.example/weather",
                 headers={"Idempotency-Key": "order-9", CREATED_AT_HEADER: "1700000123"})
    (kept,) = _kept(transport)
    body = json.loads(kept.body)
    assert (body["idempotencyKey"], body["createdAt"]) == ("order-9", 1700000123)
    assert CREATED_AT_HEADER not in {k.lower() for k, _ in body["headers"]}
    assert failed.value.body["createdAt"] == 1700000123


def test_a_retry_from_a_machine_whose_clock_is_a_little_behind_is_paid(setup: Setup) -> None:
    """F6: the retry runs on machine B, 5 s behind machine A that created the call, and
    passes A's ``created_at``: the SDK signs no earlier than it, and the enclave pays."""
    s = setup
    alice: LocalAccount = Account.create()
    transport = _lost_answers(s.vault)
    created_on_a = int(time.time()) + 5
    with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                     http=httpx.Client(transport=transport)) as client, \
            pytest.raises(VaultCallError):
        client.invoke("https://api.example/weather", max_price=PRICE,
                      idempotency_key="order-7", created_at=created_on_a)
    (retry,) = _kept(transport)
    assert int(retry.headers[api.TIMESTAMP_HEADER]) >= created_on_a
    terms = _two_channels(s, alice)[0]
    pay(s, terms, provider_side(s, terms), retry, now=created_on_a)
    paid = s.vault.channel(terms.channel_id(DOMAIN))
    assert paid is not None and paid.provider_balance == PRICE


def test_a_key_signed_for_one_life_is_not_signed_again_for_another_without_being_told(
        ) -> None:
    """F4: a hostile host shows a second life of the vault between Alice's attempts:
    attempt 1 (life L1) is "lost" (perhaps paid there); attempt 2 is answered
    ``wrong_life`` (the SDK reads the info again: L2). Her retry loop retries the key: the
    SDK does not sign it for L2 (``key_of_another_life``: the old life may have paid it)
    unless told (``allow_new_life``)."""
    lives = ["0x" + "11" * 16, "0x" + "22" * 16]
    seen: list[str] = []
    shown = {"life": lives[0]}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={"network": NETWORK, "vault": "0x" + "ab" * 20,
                                             "life": shown["life"], "ascManager": _MANAGER,
                                             "token": {"address": _TOKEN}})
        seen.append(request.headers["a402-life"])
        if len(seen) == 1:
            shown["life"] = lives[1]
            return httpx.Response(503, json={"error": "provider_unavailable"})
        if request.headers["a402-life"] != shown["life"]:
            return httpx.Response(401, json={"error": "wrong_life"})
        return httpx.Response(503, json={"error": "provider_unavailable"})

    alice: LocalAccount = Account.create()
    reasons = []
    with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                     http=httpx.Client(transport=httpx.MockTransport(handle))) as client:
        for _ in range(3):
            with pytest.raises(VaultCallError) as failed:
                client.invoke("https://api.example/weather", max_price=PRICE,
                              idempotency_key="order-42")
            reasons.append(failed.value)
        assert [e.reason for e in reasons] == ["provider_unavailable", api.WRONG_LIFE,
                                              KEY_OF_ANOTHER_LIFE]
        assert "may have been paid in the old life" in reasons[1].body["message"]
        assert "may have been paid" in reasons[2].body["message"]
        assert seen == [lives[0], lives[0]]  # nothing signed for L2
        with pytest.raises(VaultCallError, match="provider_unavailable"):  # told: signed
            client.invoke("https://api.example/weather", max_price=PRICE,
                          idempotency_key="order-42", allow_new_life=True)
    assert seen == [lives[0], lives[0], lives[1]]


def test_the_428_round_keeps_the_calls_created_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """What held: the SDK's answer to a wallet channel's 428 carries the same createdAt as
    the call it answers, even seconds later (same client object)."""
    bodies: list[dict[str, Any]] = []
    alice: LocalAccount = Account.create()
    manager, token = "0x" + "cd" * 20, TOKEN_ADDRESS
    cid = "0x" + "01" * 32

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={
                "network": NETWORK, "vault": "0x" + "ab" * 20, "life": "0x" + "11" * 16,
                "ascManager": manager, "token": {"address": token}, "chainId": 31337})
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 7)
            return httpx.Response(428, json={
                "error": "channel_authorization_required", "channelId": cid, "deposit": "5000",
                "typedData": {
                    "types": {"EIP712Domain": [
                        {"name": "name", "type": "string"},
                        {"name": "version", "type": "string"},
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"}],
                        "ReceiveWithAuthorization": [
                            {"name": "from", "type": "address"},
                            {"name": "to", "type": "address"},
                            {"name": "value", "type": "uint256"},
                            {"name": "validAfter", "type": "uint256"},
                            {"name": "validBefore", "type": "uint256"},
                            {"name": "nonce", "type": "bytes32"}]},
                    "primaryType": "ReceiveWithAuthorization",
                    "domain": {"name": "USD Coin", "version": "2", "chainId": 31337,
                               "verifyingContract": token},
                    "message": {"from": alice.address, "to": manager, "value": 5000,
                                "validAfter": 0, "validBefore": 2**40, "nonce": cid}}})
        return httpx.Response(503, json={"error": "provider_unavailable"})

    with VaultClient("http://vault.test", alice, trust_on_first_use=True,
                     http=httpx.Client(transport=httpx.MockTransport(handle))) as client, \
            pytest.raises(VaultCallError) as failed:
        client.invoke("https://api.example/weather", max_price=PRICE,
                      idempotency_key="w", funding="wallet", deposit=5000)
    assert failed.value.reason == "provider_unavailable", failed.value.body
    assert len(bodies) == 2 and "channelAuthorization" in bodies[1]
    assert bodies[0]["createdAt"] == bodies[1]["createdAt"]


@pytest.mark.parametrize("poll_answer", [
    (401, {"error": "wrong_life"}),
    (503, {"error": "conflict", "message": "the ledger kept changing"}),
    (None, {}),  # the connection drops
])
def test_a_call_answered_202_stays_paid_and_counted_whatever_its_poll_answers_next(
        poll_answer: tuple[int | None, dict[str, Any]]) -> None:
    """F7: the vault answers an invoke 202 (σ_U is out: paid, or may be) and the SDK polls
    GET /v1/requests/<key>. Whatever the poll answers next (``wrong_life``, an error, no
    answer), the call is reported ``payment_pending`` (never "nothing was paid"), with
    its key and createdAt to ask again, and the budget keeps its reservation."""
    lives = iter(["0x" + "11" * 16, "0x" + "22" * 16])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={"network": NETWORK, "vault": "0x" + "ab" * 20,
                                             "life": next(lives), "ascManager": _MANAGER,
                                             "token": {"address": _TOKEN}})
        if request.method == "POST":
            return httpx.Response(202, json={"outcome": "pending", "idempotencyKey": "k",
                                             "state": "authorized"})
        if poll_answer[0] is None:
            raise httpx.ConnectError("the vault went away")
        return httpx.Response(poll_answer[0], json=poll_answer[1])

    budget = Budget({TOKEN_ADDRESS: PRICE})
    alice: LocalAccount = Account.create()
    client = VaultClient("http://vault.test", alice, trust_on_first_use=True, pending_wait=5.0,
                         http=httpx.Client(transport=httpx.MockTransport(handle)))
    with httpx.Client(transport=VaultTransport(
            client, _Limits(PRICE, budget, TOKEN_ADDRESS))) as http, \
            pytest.raises(VaultCallError) as failed:
        http.get("https://api.example/weather", headers={"Idempotency-Key": "k"})
    said = failed.value.body["message"]
    assert failed.value.reason == api.PAYMENT_PENDING and "may have been paid" in said
    assert "nothing was paid" not in said
    assert (failed.value.body["idempotencyKey"], type(failed.value.body["createdAt"])) == (
        "k", int)
    assert budget.spent(TOKEN_ADDRESS) == PRICE  # the paid call stays counted


def test_the_cli_prints_the_key_and_created_at_to_run_the_same_call_again(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """F2, the CLI: a failed ``a402 pay --vault`` prints the call's idempotency key and
    createdAt in its advice (and in its JSON line), so a re-run is the same call; a
    ``replayed_call`` is reported as paid already, or may have been, not "nothing was
    paid"."""
    from a402.client import vault_pay
    from a402.client.limits import as_max_amount

    s = setup
    alice: LocalAccount = Account.create()
    answers = iter([
        httpx.Response(503, json={"error": "provider_unavailable", "message": "lost"}),
        httpx.Response(401, json={"error": api.REPLAYED_CALL, "message": "paid already"}),
    ])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={
                "network": NETWORK, "vault": "0x" + s.vault.address.hex(),
                "life": s.vault.life_id, "ascManager": _MANAGER,
                "token": {"address": TOKEN_ADDRESS, "decimals": 6}})
        return next(answers)

    real_client = vault_pay.VaultClient
    monkeypatch.setattr(vault_pay, "VaultClient", lambda url, key, timeout, **pin: real_client(
        url, key, http=httpx.Client(transport=httpx.MockTransport(handle)), **pin))

    class _Wallet:
        networks = assets = None

    def run(key: str | None = None) -> tuple[int, str]:
        err = io.StringIO()
        args = Namespace(vault="http://vault.test", timeout=5.0, funding=api.POOL,
                         url="https://api.example/weather", idempotency_key=key,
                         created_at=None, trust_vault_info=True)
        code = vault_pay.run_vault_pay(
            args, "0x" + bytes(alice.key).hex(), _Wallet(), method="GET",  # type: ignore[arg-type]
            headers=[], content=None, cap=as_max_amount(PRICE), budget=None,
            out=io.BytesIO(), err=err)
        return code, err.getvalue()

    code, said = run()
    assert said.startswith("a402 pay: nothing was paid by this attempt")  # the money first
    line = json.loads(next(text for text in said.splitlines() if text.startswith("{")))
    key, created = line["idempotencyKey"], line["createdAt"]
    assert code == vault_pay.EXIT_REQUEST_FAILED
    assert f"--idempotency-key {key} --created-at {created}" in said
    code, said = run(key)  # the generated key carries its createdAt
    assert code == vault_pay.EXIT_NOT_SETTLED
    assert "paid already, or may have been" in said and "nothing was paid" not in said
