"""The vault's API at its edges: authentication, refusals that pay nothing, idempotency,
deposits by either route counted once, withdrawals."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from eth_account import Account

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.tx import transact
from a402.client.vault import KEY_OF_ANOTHER_LIFE, VaultCallError
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World
from tests.provider.support import paid_app

from .helpers import assert_conserved, client_of, running_vault, wait_for

pytestmark = pytest.mark.anvil


def _signed_get(vault_url: str, signed_as: str, account: Any, **kwargs: Any
                ) -> tuple[dict[str, str], httpx.Response]:
    headers = api.sign_request(account, signed_as, "GET", "/v1/account", b"", **kwargs)
    return headers, httpx.get(vault_url + "/v1/account", headers=headers)


def test_calls_must_be_signed_fresh_and_once(world: World) -> None:
    with running_vault(world) as vault:
        account = Account.create()
        unsigned = httpx.get(vault.url + "/v1/account")
        headers, ok = _signed_get(vault.url, vault.signed_as, account, life=vault.life)
        replayed = httpx.get(vault.url + "/v1/account", headers=headers)
        _, stale = _signed_get(vault.url, vault.signed_as, account, life=vault.life,
                               now=time.time() - 600)
        _, other_vault = _signed_get(
            vault.url, api.vault_account(vault.service.chain.network, Account.create().address),
            account, life=vault.life)
        forged = dict(headers, **{api.NONCE_HEADER: "0123456789abcdef"})
        tampered = httpx.get(vault.url + "/v1/account", headers=forged)
        info = httpx.get(vault.url + "/v1/info")
    assert ok.status_code == 200 and ok.json()["balance"] == "0"
    for response, reason in ((unsigned, api.UNAUTHENTICATED), (replayed, api.REPLAYED_REQUEST),
                             (stale, api.STALE_REQUEST), (other_vault, api.BAD_SIGNATURE),
                             (tampered, api.BAD_SIGNATURE)):
        assert (response.status_code, response.json()["error"]) == (401, reason)
    assert info.status_code == 200
    assert info.json()["deposit"]["vault"] == vault.address
    assert info.json()["deposit"]["ascManager"] == world.manager.address


def test_an_oversized_call_is_refused_before_it_is_read(world: World,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "MAX_CALL_BODY", 1_000)
    with running_vault(world) as vault:
        account = Account.create()
        body = json.dumps({"url": "http://127.0.0.1:1/x", "maxPrice": "1",
                           "body": "a" * 2_000}).encode()
        headers = api.sign_request(account, vault.signed_as, "POST", "/v1/invoke", body,
                                   life=vault.life)
        declared = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers)

        with httpx.Client() as http:  # streamed: no content-length to go by
            streamed = http.post(vault.url + "/v1/invoke", content=iter([body[:900], body[900:]]),
                                 headers=api.sign_request(account, vault.signed_as, "POST",
                                                          "/v1/invoke", body,
                                                          life=vault.life))
        totals = vault.store.totals()
    for response in (declared, streamed):
        assert (response.status_code, response.json()["error"]) == (413, api.REQUEST_TOO_LARGE)
    assert totals.deposits == 0 and totals.conserved  # nothing happened


def test_a_vault_for_the_public_internet_refuses_private_targets(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, allow_private_targets=False) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        with pytest.raises(VaultCallError) as refused:
            client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="ssrf")
        recorded = vault.store.request(f"{account.address.lower()}:ssrf")
        assert_conserved(world, vault.store, vault.address, escrow)
        balance = int(client.account_info()["balance"])
    assert (refused.value.status, refused.value.reason) == (403, api.TARGET_NOT_ALLOWED)
    assert recorded is None and balance == 20_000  # refused before anything was written
    assert provider.calls["weather"] == 0


def test_refusals_pay_nothing_and_say_why(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, rich = client_of(world, vault, funds=20_000, deposit=20_000)
        _, poor = client_of(world, vault, funds=500, deposit=500)
        cases = {
            "price": lambda: rich.invoke(f"{site}/weather", max_price=999),
            "balance": lambda: poor.invoke(f"{site}/weather", max_price=1_000),
            "reused": lambda: rich.invoke(f"{site}/weather", max_price=2_000,
                                          idempotency_key="k"),
        }
        first = rich.invoke(f"{site}/weather", max_price=1_000, idempotency_key="k")
        errors = {}
        for name, call in cases.items():
            with pytest.raises(VaultCallError) as refused:
                call()
            errors[name] = (refused.value.status, refused.value.reason)
        free = rich.invoke(f"{site}/free", max_price=1_000)
        failed = rich.invoke(f"{site}/boom", max_price=1_000)
        view = rich.account_info()
        assert_conserved(world, vault.store, vault.address, escrow)
    assert errors == {"price": (402, api.PRICE_ABOVE_MAXIMUM),
                      "balance": (402, api.INSUFFICIENT_BALANCE),
                      "reused": (409, api.IDEMPOTENCY_KEY_REUSED)}
    assert first.outcome == api.PAID
    assert (free.outcome, free.amount, json.loads(free.content)) == (api.FREE, 0, {"free": True})
    # The paid service failed: its own answer comes back and nothing is paid for it.
    assert (failed.outcome, failed.status, failed.amount) == (api.UNPAID, 500, 0)
    assert json.loads(failed.content) == {"error": "kaput"}
    assert provider.calls["boom"] == 1
    assert view["paid"] == "1000"


def test_an_offer_the_vault_cannot_pay_is_refused(world: World) -> None:
    """A plain x402 server (exact only) has no a402 requirement: 422, with its 402 attached."""
    manifest = Manifest(world.chain.network, world.chain.chain_id, world.token_info, {})
    app = paid_app(pay_to=world.chain.accounts[1].address, manifest=manifest,
                   facilitator="http://127.0.0.1:9")
    with serve_in_thread(app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=5_000, deposit=5_000)
        with pytest.raises(VaultCallError) as refused:
            client.invoke(f"{site}/weather", max_price=10_000)
    assert (refused.value.status, refused.value.reason) == (422, api.NO_ACCEPTABLE_OFFER)
    assert refused.value.body["response"]["status"] == 402


def test_deposits_count_once_by_either_route_and_withdrawals_pay_out(world: World) -> None:
    with running_vault(world) as vault:
        account, client = client_of(world, vault, funds=10_000, deposit=3_000)
        signed = client.deposit(2_000)
        # The same relayed deposit reported again is not credited twice …
        again = client.report_deposit(signed["transaction"])
        # … a depositToPool of its own is, once.
        transact(world.chain, account, world.token.functions.approve(world.manager.address,
                                                                      1_500))
        tx = world.manager.deposit_to_pool(account, vault.address, account.address, 1_500)
        tx_hash = "0x" + bytes(tx["transactionHash"]).hex()
        reported = client.report_deposit(tx_hash)
        twice = client.report_deposit(tx_hash)
        assert client.account_info()["balance"] == str(6_500)
        assert world.manager.pooled(vault.address, account.address) == 6_500

        nonce = int(client.account_info()["poolWithdrawalNonce"])
        paid_out = client.withdraw(2_500, nonce=nonce)
        with pytest.raises(VaultCallError) as overdrawn:
            client.withdraw(10_000)
        view = client.account_info()
        assert_conserved(world, vault.store, vault.address)
    assert (again["amount"], reported["amount"], twice["amount"]) == ("2000", "1500", "1500")
    assert paid_out["state"] == "confirmed" and paid_out["transaction"]
    assert world.balance(account.address) == 10_000 - 6_500 + 2_500
    assert (overdrawn.value.status, overdrawn.value.reason) == (402, api.INSUFFICIENT_BALANCE)
    assert "nothing moved" in overdrawn.value.body["message"]
    assert (view["balance"], view["deposits"], view["withdrawn"]) == ("4000", "6500", "2500")
    assert view["pooled"] == "4000"
    assert world.balance(account.address) == 10_000 - 3_000 - 2_000 - 1_500 + 2_500



def test_a_paid_call_replayed_byte_for_byte_is_refused_and_unknown_routes_answer_json(
    world: World,
) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=100_000, deposit=50_000)
        body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=1_000,
            idempotency_key="replayed-1", created_at=int(time.time())).to_json()).encode()
        headers = {**api.sign_request(client.account, vault.signed_as, "POST", "/v1/invoke",
                                      body, life=vault.life), "content-type": "application/json"}
        first = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers)
        again = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers)
        # The replay met an open channel, so it went as far as that channel's LOCKED
        # checkpoint, which the recorded nonce refused whole: the channel pays on as before.
        after = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="after-1")
        [channel] = client.account_info()["channels"]
        unknown = httpx.get(vault.url + "/v1/nowhere")
        wrong_method = httpx.get(vault.url + "/v1/invoke")
        client.close()
    assert (first.status_code, first.json()["outcome"]) == (200, api.PAID)
    # The nonce is recorded with the call's claim: the replay is refused, not answered.
    assert (again.status_code, again.json()["error"]) == (401, api.REPLAYED_REQUEST)
    assert (after.outcome, after.payment["requestId"]) == (api.PAID, 1)
    assert channel["providerBalance"] == "2000"
    assert provider.calls["weather"] == 2
    assert (unknown.status_code, unknown.json()["error"]) == (404, api.NOT_FOUND)
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, api.BAD_REQUEST)


def test_a_clients_retry_keeps_its_creation_time_and_a_new_life_is_said_plainly(
    world: World,
) -> None:
    """The client SDK signs one creation time per idempotency key (a retry keeps it, so
    the vault's enclave sees one call), and every call names the vault's life: a call
    signed for a life the vault no longer has is refused, the client reads the info
    again and says plainly that the vault lost its ledger; its next call goes through (a
    key signed for the old life only when the caller says so: it may have paid there).
    An older client (no createdAt, no life) is refused with a reason, nothing paid."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=100_000, deposit=50_000)
        sent: list[httpx.Request] = []
        client.http.event_hooks["request"] = [
            lambda r: sent.append(r) if r.url.path == "/v1/invoke" else None]
        first = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="retried")
        again = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="retried")
        created = [json.loads(r.content)["createdAt"] for r in sent]
        # As if the vault had lost its ledger and started anew after this client read it.
        assert client._info is not None
        client._info = {**client._info, "life": "0x" + "00" * 16}
        with pytest.raises(VaultCallError) as stale:
            client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="after")
        # The key was signed for the old life (it may have paid there): not again unless told.
        with pytest.raises(VaultCallError) as other_life:
            client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="after")
        after = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="after",
                              allow_new_life=True)
        old_body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=1_000,
            idempotency_key="old-client").to_json()).encode()
        old_client = httpx.post(vault.url + "/v1/invoke", content=old_body, headers={
            **api.sign_request(account, vault.signed_as, "POST", "/v1/invoke", old_body,
                               life=vault.life), "content-type": "application/json"})
        no_life = {k: v for k, v in api.sign_request(
            account, vault.signed_as, "GET", "/v1/account", b"", life=vault.life).items()
            if k != api.LIFE_HEADER}
        unlived = httpx.get(vault.url + "/v1/account", headers=no_life)
        info = client.info()
        view = client.account_info()
        assert_conserved(world, vault.store, vault.address)
        client.close()
    assert created[0] == created[1] == client.created_at("retried")
    assert (first.outcome, again.outcome) == (api.PAID, api.PAID)
    assert again.payment == first.payment  # answered from the record, paid once
    assert (stale.value.status, stale.value.reason) == (401, api.WRONG_LIFE)
    assert stale.value.message.startswith("nothing was paid")
    assert "lost its ledger" in stale.value.message and vault.life in stale.value.message
    assert (other_life.value.status, other_life.value.reason) == (409, KEY_OF_ANOTHER_LIFE)
    assert "may have been paid" in other_life.value.message
    assert after.outcome == api.PAID and info["life"] == vault.life
    assert (old_client.status_code, old_client.json()["error"]) == (400, api.CLIENT_OUTDATED)
    assert old_client.json()["message"].startswith("nothing was paid")
    assert (unlived.status_code, unlived.json()["error"]) == (401, api.CLIENT_OUTDATED)
    assert provider.calls["weather"] == 2
    [channel] = view["channels"]
    assert channel["providerBalance"] == "2000"
    assert int(view["balance"]) + int(channel["deposit"]) == 50_000


def test_a_clients_own_pool_deposit_and_exit_are_mirrored_unreported_and_count_once(
        world: World) -> None:
    with running_vault(world) as vault:
        account, client = client_of(world, vault, funds=10_000)
        transact(world.chain, account, world.token.functions.approve(world.manager.address,
                                                                      4_000))
        tx = world.manager.deposit_to_pool(account, vault.address, account.address, 4_000)
        wait_for(lambda: client.account_info()["balance"] == "4000",
                 what="the worker mirroring the PoolDeposited log")
        reported = client.report_deposit("0x" + bytes(tx["transactionHash"]).hex())
        view = client.account_info()
        # The client's own exit, with the vault running but not asked: mirrored too.
        world.manager.withdraw_from_pool(account, vault.address, account.address, 1_500)
        wait_for(lambda: client.account_info()["balance"] == "2500",
                 what="the worker mirroring the PoolWithdrawn log")
        after = client.account_info()
        assert_conserved(world, vault.store, vault.address)
        client.close()
    assert reported["amount"] == "4000"  # what the log carries, credited once
    assert (view["balance"], view["deposits"], view["pooled"]) == ("4000", "4000", "4000")
    assert (after["balance"], after["withdrawn"], after["pooled"]) == ("2500", "1500", "2500")
    assert world.balance(account.address) == 10_000 - 4_000 + 1_500
