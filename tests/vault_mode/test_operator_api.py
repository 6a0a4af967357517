"""Vault mode's operator API (``GET /operator/vault`` behind the operator token), on anvil:
the accounts, pending settlements, the last settlement and the lease holder it reports are
the ledger's and the chain's; without the token it answers nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from a402.background import serve_in_thread
from a402.chain.node import Chain
from a402.observe import Observer
from a402.vault.mode_app import create_mode_app
from a402.vault.mode_operator import VAULT_PATH, with_operator_api
from a402.vault.settlement_schedule import SchedulePolicy

from .helpers import balance
from .test_service import Harness

pytestmark = pytest.mark.anvil

TOKEN = "operator-token-0123456789"


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    # payouts wait for a second payee: one stays pending until the operator looks
    return Harness(vault_chain, usdc, tmp_path,
                   SchedulePolicy(window=0, jitter=0, min_participants=2, max_per_tx=10))


def test_the_operator_sees_accounts_pending_settlements_the_last_settlement_and_the_lease_holder(
    h: Harness,
) -> None:
    alice, bob = Account.create(), Account.create()
    h.deposit(alice.address, 3_000)
    h.deposit(bob.address, 2_000)
    h.service.tick()  # confirms both deposits in settlement 1
    h.service.withdraw(alice.address, 1_200)  # queued: one payee, the batch needs two
    app = with_operator_api(create_mode_app(h.service, worker=False),
                            Observer("vault", operator_token=TOKEN), lambda: h.service)
    with serve_in_thread(app) as url:
        auth = {"authorization": f"Bearer {TOKEN}"}
        got = httpx.get(url + VAULT_PATH, headers=auth)
        assert got.status_code == 200, got.text
        view = got.json()
        assert view["service"] == "vault" and view["mode"] == "vault"
        assert view["leaseHolder"] == h.service.holder
        assert view["accounts"] == {"count": 2, "free": "5000", "locked": "0",
                                    "pending": "0", "unconfirmed": "0", "paid_out": "0",
                                    "debt": "0", "pulled": "0", "pulling": "0",
                                    "transferred": "0", "unanchored": "0"}
        assert view["onChain"] == str(balance(h.usdc, h.contract.address)) == "5000"
        assert view["pendingSettlements"] == {"payouts": 1, "amount": "1200",
                                              "signedNotLanded": 0}
        assert view["lastSettlement"]["epoch"] == 1 == h.contract.last_epoch()
        assert view["openChannels"] == 0
        # nothing about who: no participant address in the operator view
        assert alice.address.lower()[2:] not in got.text.lower()

        # the operator settles: the view follows the chain
        h.service.settle_now()
        view = httpx.get(url + VAULT_PATH, headers=auth).json()
        assert view["pendingSettlements"] == {"payouts": 0, "amount": "0",
                                              "signedNotLanded": 0}
        assert view["lastSettlement"]["epoch"] == 2 == h.contract.last_epoch()
        receipt = h.chain.w3.eth.get_transaction_receipt(view["lastSettlement"]["tx"])
        assert receipt["status"] == 1
        assert balance(h.usdc, alice.address) == 1_200
        assert view["onChain"] == str(balance(h.usdc, h.contract.address)) == "3800"
        assert (view["accounts"]["free"], view["accounts"]["paid_out"]) == ("3800", "1200")

        # without the token, or with another: nothing; it only reads
        plain = httpx.get(url + VAULT_PATH)
        assert plain.status_code == 401 and plain.json()["error"] == "operator_token_required"
        other = httpx.get(url + VAULT_PATH, headers={"authorization": "Bearer " + "x" * 24})
        assert other.status_code == 401 and other.json()["error"] == "operator_token_invalid"
        posted = httpx.post(url + VAULT_PATH, headers=auth)
        assert posted.status_code == 405
        assert h.contract.last_epoch() == 2


def test_without_an_operator_token_the_operator_api_is_off_and_a_standby_says_so(
    h: Harness,
) -> None:
    off = with_operator_api(create_mode_app(h.service, worker=False), Observer("vault"),
                            lambda: h.service)
    standby = with_operator_api(create_mode_app(h.service, worker=False),
                                Observer("vault", operator_token=TOKEN), lambda: None)
    with serve_in_thread(off) as url_off, serve_in_thread(standby) as url_standby:
        got = httpx.get(url_off + VAULT_PATH, headers={"authorization": f"Bearer {TOKEN}"})
        assert got.status_code == 404 and got.json()["error"] == "operator_api_disabled"
        got = httpx.get(url_standby + VAULT_PATH, headers={"authorization": f"Bearer {TOKEN}"})
        assert got.status_code == 503 and got.json()["error"] == "vault_standby"
        # the rest of the API is still the vault's
        assert httpx.get(url_off + "/v1/info").status_code == 200


def test_a_broken_vault_tells_the_operator_why_and_shows_no_figure_the_store_lacks(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = Account.create()
    h.deposit(alice.address, 3_000)
    h.service.tick()

    def disk_full(*_: Any, **__: Any) -> bytes:
        raise OSError("disk full")
    monkeypatch.setattr(h.service.store, "put_meta", disk_full)
    monkeypatch.setattr(h.service.store, "put_metas", disk_full)
    provider = Account.create()
    with pytest.raises(OSError):  # the change is not acknowledged; the vault is broken
        h.service.open_channel(alice.address, provider.address, b"\x01" * 32, 1_000)
    app = with_operator_api(create_mode_app(h.service, worker=False),
                            Observer("vault", operator_token=TOKEN), lambda: h.service)
    with serve_in_thread(app) as url:
        got = httpx.get(url + VAULT_PATH, headers={"authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 503, got.text
    assert got.json()["error"] == "vault_broken"
    assert "disk full" in got.json()["broken"] and "accounts" not in got.json()
    monkeypatch.undo()
    assert h.start().balance(alice.address)["free"] == "3000"  # the open was never stored
    assert balance(h.usdc, h.contract.address) == 3_000
