"""Vault mode's withdrawals are idempotent by the client's key (issue 13): a withdrawal
signed again with a fresh nonce but the same ``idempotencyKey`` answers the first answer and
queues nothing, before settlement and after, and after a restart from the store. On anvil;
the money is checked on the chain."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.vault.mode import VaultModeService
from a402.vault.mode_app import create_mode_app
from a402.wire import vault_api as api

from .helpers import balance
from .test_service import Harness

pytestmark = pytest.mark.anvil


@pytest.fixture
def h(vault_chain: Any, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def withdraw(h: Harness, service: VaultModeService, who: LocalAccount,
             body: dict[str, Any]) -> httpx.Response:
    """One withdrawal over HTTP, signed afresh (a new nonce) each time."""
    app = create_mode_app(service, worker=False)
    vault = api.vault_account(h.chain.network, service.address)
    raw = json.dumps(body).encode()
    headers = api.sign_request(who, vault, "POST", "/v1/vault/withdraw", raw,
                               life=service.accounts.life_id)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://vault") as http:
            return await http.post("/v1/vault/withdraw", content=raw, headers=headers)

    return asyncio.run(go())


def test_a_withdrawal_retried_with_its_key_before_and_after_settlement_and_a_restart_is_paid_once(
    h: Harness,
) -> None:
    alice, bob = Account.create(), Account.create()
    for who in (alice, bob):
        h.deposit(who.address, 2_000)
    h.service.tick()
    first = withdraw(h, h.service, alice, {"amount": "700", "idempotencyKey": "k-1"})
    assert first.status_code == 202
    assert first.json()["queued"] == "700" and first.json()["idempotencyKey"] == "k-1"
    again = withdraw(h, h.service, alice, {"amount": "700", "idempotencyKey": "k-1"})
    assert again.status_code == 202 and again.json()["replayed"] is True
    assert h.service.balance(alice.address)["payoutRequested"] == "700"  # queued once
    # the same key is alice's only: bob's k-1 is his own withdrawal
    assert withdraw(h, h.service, bob, {"amount": "300", "idempotencyKey": "k-1"}
                    ).json().get("replayed") is None
    restarted = h.start()  # the first process is gone: the key came back with the queue
    assert withdraw(h, restarted, alice, {"amount": "700", "idempotencyKey": "k-1"}
                    ).json()["replayed"] is True
    assert restarted.balance(alice.address)["payoutRequested"] == "700"
    assert [x.payees for x in restarted.tick()] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    # after it was paid, and after another restart: still answered, nothing queued again
    after = withdraw(h, h.start(), alice, {"amount": "700", "idempotencyKey": "k-1"})
    assert after.status_code == 202 and after.json()["replayed"] is True
    final = h.start()
    assert final.balance(alice.address)["payoutRequested"] == "0"
    assert final.balance(alice.address)["free"] == "1300"
    assert final.tick() == []
    assert h.paid_to(alice.address) == 700
    assert balance(h.usdc, h.contract.address) == 2_000 - 700 + 2_000 - 300


def test_a_key_reused_for_another_amount_or_malformed_is_refused_and_nothing_is_queued(
    h: Harness,
) -> None:
    alice = Account.create()
    h.deposit(alice.address, 2_000)
    h.service.tick()
    assert withdraw(h, h.service, alice, {"amount": "500", "idempotencyKey": "same"}
                    ).status_code == 202
    other = withdraw(h, h.service, alice, {"amount": "600", "idempotencyKey": "same"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
    assert other.json()["message"].startswith("nothing was queued")
    for bad in ("", "x" * 65, "no spaces", 7):
        got = withdraw(h, h.service, alice, {"amount": "1", "idempotencyKey": bad})
        assert got.status_code == 400 and got.json()["error"] == "bad_request", bad
    # without a key, each withdrawal is its own (as before)
    assert withdraw(h, h.service, alice, {"amount": "100"}).status_code == 202
    assert withdraw(h, h.service, alice, {"amount": "100"}).status_code == 202
    assert h.service.balance(alice.address)["payoutRequested"] == "700"
    h.service.settle_now()  # alice alone: below the schedule's minimum of two
    assert h.paid_to(alice.address) == 700


def test_the_withdraw_command_sends_a_new_key_each_time_and_reuses_one_given(
    h: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from a402.vault import mode_command

    alice = Account.create()
    h.deposit(alice.address, 2_000)
    h.service.tick()
    app = create_mode_app(h.service, worker=False)
    seen: list[dict[str, Any]] = []

    class Sync(httpx.Client):  # the command's client, answered by the app in-process
        def __init__(self, **kw: Any) -> None:
            super().__init__(base_url=kw["base_url"], transport=_AppTransport(app, seen))

    monkeypatch.setattr(mode_command.httpx, "Client", Sync)
    key = tmp_path / "alice.key"
    key.write_text(alice.key.hex())

    def run(*extra: str) -> dict[str, Any]:
        out = io.StringIO()
        assert mode_command.main(["withdraw", "--key-file", str(key), "--amount", "400",
                                  "--json", *extra], out=out, err=io.StringIO()) == 0
        return dict(json.loads(out.getvalue()))

    one, two = run(), run()
    assert one["idempotencyKey"] != two["idempotencyKey"]
    assert h.service.balance(alice.address)["payoutRequested"] == "800"
    three = run("--idempotency-key", one["idempotencyKey"])
    assert three["replayed"] is True
    assert h.service.balance(alice.address)["payoutRequested"] == "800"
    h.service.settle_now()
    assert h.paid_to(alice.address) == 800


class _AppTransport(httpx.BaseTransport):
    """Sends a synchronous client's requests to an ASGI app (one event loop per request)."""

    def __init__(self, app: Any, seen: list[dict[str, Any]]) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.seen = seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.inner, base_url="http://vault") as c:
                r = await c.request(request.method, str(request.url.copy_with(
                    scheme="http", host="vault", port=None)), content=body,
                    headers=request.headers)
                await r.aread()
                return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        return asyncio.run(go())
