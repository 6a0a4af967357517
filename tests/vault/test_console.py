"""A vault's operator console: after paid calls, the signed-in operator sees each call,
the client's balance, the channel and its state, and the ledger's conservation; without
the token, none of it."""

from __future__ import annotations

import re

import httpx
import pytest

from a402.background import serve_in_thread
from a402.observe import Observer
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import client_of, running_vault

pytestmark = pytest.mark.anvil

TOKEN = "vault-console-token-0123456789"
PRICE = 1_000  # the test provider's /weather price


def cells(page: str, first: str) -> list[str]:
    """The cells of the first table row whose first cell is ``first``."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S):
        values = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if values and values[0].lower() == first.lower():
            return values
    raise AssertionError(f"no row for {first}")


def test_the_vault_console_shows_calls_balances_and_channels_to_its_operator(
        world: World) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(
            world, observer=Observer("vault", operator_token=TOKEN), console=True) as vault:
        account, client = client_of(world, vault, funds=100_000, deposit=50_000)
        results = [client.invoke(f"{site}/weather", max_price=PRICE,
                                 idempotency_key=f"console-{i}") for i in range(2)]
        [channel] = client.account_info()["channels"]
        client.close()
        with httpx.Client(base_url=vault.url) as browser:
            signed_out = browser.get("/console").text
            assert browser.post("/console/login", data={"token": TOKEN}).status_code == 303
            page = browser.get("/console").text
        balance = vault.store.balance(account.address)
    assert [r.outcome for r in results] == [api.PAID] * 2
    assert account.address.lower() not in signed_out.lower()
    calls = [row for row in re.findall(r'<tr class="payment">(.*?)</tr>', page, re.S)]
    assert len(calls) == 2
    assert all(f'<td class="amount">{PRICE}</td>' in row and
               f'<td class="status">{api.PAID}</td>' in row for row in calls)
    assert all(account.address.lower() in row.lower() for row in calls)
    shown = cells(page, channel["channelId"])
    assert channel["status"] in shown and str(2 * PRICE) in shown
    assert provider.address.lower() in [v.lower() for v in shown]
    account_row = cells(page, account.address)
    assert account_row[1] == str(balance) and 0 < balance < 50_000
    assert "<td>yes</td>" in page  # the ledger's conservation holds
    assert provider.calls["weather"] == 2
