"""End to end: an operator watches a gateway's console in headless Chromium while a payer
pays through the gateway on anvil; the payment appears (payer, amount, transaction)
without a reload, the facilitator's console lists the settlement and its transaction,
and the money moved exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.observe import Observer
from a402.provider import create_gateway
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    decode_payment_required,
    decode_settle_response,
)
from a402.wire.x402 import PaymentRequired
from tests.console.browser import chromium, sign_in, wait_for
from tests.console.test_console_browser import csp_violations, payment_rows
from tests.provider.support import Balances, assert_mined_transfer, v2_header

pytestmark = [pytest.mark.anvil, pytest.mark.browser]

TOKEN = "console-operator-token-0123456789"
PRICE = 1_500  # "0.0015" with 6 decimals


@pytest.fixture(scope="module")
def facilitator_url(anvil_chain: Chain, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[str]:
    """A facilitator with its console on, journaling to its own SQLite file."""
    db = tmp_path_factory.mktemp("console-journal") / "journal.db"
    facilitator = Facilitator(anvil_chain, anvil_chain.accounts[2],
                              SettlementStore(f"sqlite:///{db}"))
    app = create_app(facilitator, observer=Observer("facilitator", operator_token=TOKEN),
                     console=True)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def gateway_url(dev_stack: Manifest, facilitator_url: str) -> Iterator[str]:
    upstream = FastAPI()

    @upstream.get("/paid/report")
    async def report() -> dict[str, str]:
        return {"report": "the numbers"}

    with serve_in_thread(upstream) as upstream_url:
        app = create_gateway(
            upstream_url, ["GET /paid/*=0.0015"], pay_to=dev_stack.account("provider").address,
            token=dev_stack.token, network=dev_stack.network, facilitator_url=facilitator_url,
            observer=Observer("gateway", operator_token=TOKEN), console=True)
        with serve_in_thread(app) as url:
            yield url


def pay(gateway_url: str, payer: LocalAccount) -> str:
    """One paid GET through the gateway; its settlement transaction."""
    with httpx.Client(base_url=gateway_url, timeout=60) as client:
        offered = client.get("/paid/report")
        assert offered.status_code == 402, offered.text
        required = decode_payment_required(offered.headers[PAYMENT_REQUIRED])
        assert isinstance(required, PaymentRequired)
        assert required.accepts[0].amount == str(PRICE)
        answer = client.get("/paid/report", headers=v2_header(required, payer))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"report": "the numbers"}
    return decode_settle_response(answer.headers[PAYMENT_RESPONSE]).transaction


def test_a_payment_through_the_gateway_appears_in_its_console(
        anvil_chain: Chain, dev_stack: Manifest, gateway_url: str, facilitator_url: str,
        new_payer: Callable[..., LocalAccount]) -> None:
    payer = new_payer(10_000)
    payee = dev_stack.account("provider").address
    balances = Balances(anvil_chain, dev_stack, payer.address, payee)
    with chromium() as driver:
        sign_in(driver, gateway_url, TOKEN)
        wait_for(driver, lambda d: d.find_elements("id", "payments"))
        assert not any(r["payer"].lower() == payer.address.lower()
                       for r in payment_rows(driver))
        driver.execute_script("document.body.dataset.marker = 'same page'")

        tx = pay(gateway_url, payer)

        def row(d: Any) -> dict[str, str] | None:
            return next((r for r in payment_rows(d)
                         if r["payer"].lower() == payer.address.lower()), None)

        shown = wait_for(driver, row)
        assert shown["amount"] == str(PRICE)
        assert shown["transaction"].lower() == tx.lower()
        assert shown["payee"].lower() == payee.lower()
        assert driver.execute_script("return document.body.dataset.marker") == "same page"
        assert csp_violations(driver) == []
        # The facilitator's console lists the same settlement, from its journal.
        sign_in(driver, facilitator_url, TOKEN)
        settled = wait_for(driver, row)
        assert (settled["amount"], settled["status"]) == (str(PRICE), "confirmed")
        assert settled["transaction"].lower() == tx.lower()
        states = driver.execute_script(
            "const h = Array.from(document.querySelectorAll('h2'))"
            ".find((e) => e.textContent === 'Settlements by state');"
            "return h ? h.nextElementSibling.textContent : '';")
        assert "confirmed" in states
    assert_mined_transfer(anvil_chain, tx)
    assert balances.delta(payer.address) == -PRICE
    assert balances.delta(payee) == PRICE


def test_the_gateway_console_shows_nothing_without_the_token(gateway_url: str) -> None:
    page = httpx.get(f"{gateway_url}/console")
    assert page.status_code == 200 and 'name="token"' in page.text
    assert "<table" not in page.text
    refused = httpx.post(f"{gateway_url}/console/login", data={"token": "x" * 32})
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    assert httpx.get(f"{gateway_url}/console/panel").status_code == 401
