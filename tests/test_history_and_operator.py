"""Seeing what happened: a payer pays twice through a gateway and a facilitator on anvil,
then reads it back with ``a402 payments``, ``a402 receipt`` and ``a402 balance``, and an
operator reads it from the services' token-protected endpoints, their JSON log lines and
their ``/metrics``."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.cli import build_parser
from a402.client.pay import EXIT_OK, pay_main
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.observe import PAID_LOGGER, Observer
from a402.provider import create_gateway

pytestmark = pytest.mark.anvil

TOKEN = "operator-secret-0123456789"
PRICE = 1_500  # 0.0015 with 6 decimals
PAID = 2


class Lines(logging.Handler):
    """The ``a402.paid`` lines, as the operator's log collector would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def of(self, service: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]  # every line is one JSON object
        return [p for p in parsed if p["service"] == service]


@pytest.fixture(scope="module")
def stack(anvil_chain: Chain) -> Manifest:
    return deploy_dev_stack(anvil_chain, asc_manager=True)


@pytest.fixture(scope="module")
def manifest_file(stack: Manifest, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("manifest") / "devnet.json"
    path.write_text(stack.to_json())
    return str(path)


@pytest.fixture(scope="module")
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(PAID_LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def facilitator_url(anvil_chain: Chain, tmp_path_factory: pytest.TempPathFactory,
                    lines: Lines) -> Iterator[str]:
    db = tmp_path_factory.mktemp("journal") / "journal.db"
    facilitator = Facilitator(anvil_chain, anvil_chain.accounts[2],
                              SettlementStore(f"sqlite:///{db}"))
    observer = Observer("facilitator", operator_token=TOKEN)
    with serve_in_thread(create_app(facilitator, observer=observer)) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_url(stack: Manifest, facilitator_url: str) -> Iterator[str]:
    upstream = FastAPI()

    @upstream.get("/paid/report")
    async def report() -> dict[str, str]:
        return {"report": "the numbers"}

    with serve_in_thread(upstream) as upstream_url:
        app = create_gateway(
            upstream_url, ["GET /paid/*=0.0015"], pay_to=stack.account("provider").address,
            token=stack.token, network=stack.network, facilitator_url=facilitator_url,
            observer=Observer("gateway", operator_token=TOKEN))
        with serve_in_thread(app) as url:
            yield url


@pytest.fixture(scope="module")
def payer(anvil_chain: Chain, stack: Manifest) -> LocalAccount:
    account = Account.create()
    token = contract_at(anvil_chain, "TestUSDC", stack.token.address)
    transact(anvil_chain, anvil_chain.accounts[0], token.functions.mint(account.address, 10**6))
    return account


def metric(text: str, service: str, outcome: str) -> float:
    """``a402_paid_requests_total`` for one service and outcome, summed over schemes."""
    return sum(float(m.group(2)) for m in re.finditer(
        r"^a402_paid_requests_total\{([^}]*)\} (\S+)$", text, re.M)
        if f'service="{service}"' in m.group(1) and f'outcome="{outcome}"' in m.group(1))


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def paid(anvil_chain: Chain, stack: Manifest, payer: LocalAccount, gateway_url: str,
         facilitator_url: str, lines: Lines, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    """Two payments through the gateway with `a402 pay`, their records kept locally."""
    folder = tmp_path_factory.mktemp("payer")
    key = folder / "payer.key"
    key.write_text(payer.key.hex())
    key.chmod(0o600)
    history = folder / "payments.jsonl"
    provider = stack.account("provider").address
    before = {"payee": token_balance(anvil_chain, stack.token.address, provider),
              "gateway": scrape(gateway_url), "facilitator": scrape(facilitator_url),
              "lines": len(lines.lines)}
    mp = pytest.MonkeyPatch()
    mp.setenv("A402_HISTORY", str(history))
    try:
        for _ in range(PAID):
            out, err = io.BytesIO(), io.StringIO()
            code = pay_main([f"{gateway_url}/paid/report", "--key-file", str(key),
                             "--max", "0.01", "--network", stack.network],
                            stdout=out, stderr=err)
            assert code == EXIT_OK, err.getvalue()
    finally:
        mp.undo()
    return {"history": history, "before": before, "key": str(key)}


def cli(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.run(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------- services


def test_each_paid_request_is_one_json_log_line_on_the_gateway_and_the_facilitator(
        paid: dict[str, Any], lines: Lines, payer: LocalAccount, stack: Manifest) -> None:
    new = Lines()

    def logged_all() -> bool:  # a service logs a request once it has answered it
        new.lines = lines.lines[paid["before"]["lines"]:]
        return all(len(new.of(s)) >= PAID for s in ("gateway", "facilitator"))
    deadline = time.monotonic() + 60
    while not logged_all() and time.monotonic() < deadline:
        time.sleep(0.02)
    for service in ("gateway", "facilitator"):
        logged = new.of(service)
        assert len(logged) == PAID, new.lines
        for line in logged:
            assert line["event"] == "paid_request" and line["outcome"] == "settled"
            assert line["payer"].lower() == payer.address.lower()
            assert line["amount"] == str(PRICE) and line["scheme"] == "exact"
            assert line["latencyMs"] > 0 and line["requestId"]
            assert line["transaction"].startswith("0x")
    assert len({line["requestId"] for line in new.of("gateway")}) == PAID


def test_metrics_count_exactly_the_paid_requests_and_the_payee_got_exactly_their_price(
        paid: dict[str, Any], gateway_url: str, facilitator_url: str, anvil_chain: Chain,
        stack: Manifest) -> None:
    provider = stack.account("provider").address
    assert token_balance(anvil_chain, stack.token.address, provider) \
        == paid["before"]["payee"] + PAID * PRICE
    for url, service in ((gateway_url, "gateway"), (facilitator_url, "facilitator")):
        text = scrape(url)
        grown = metric(text, service, "settled") - metric(paid["before"][service], service,
                                                          "settled")
        assert grown == PAID
        assert "a402_paid_request_seconds_bucket" in text


@pytest.mark.parametrize("service", ["gateway", "facilitator"])
def test_operator_endpoints_answer_only_the_right_token(
        paid: dict[str, Any], gateway_url: str, facilitator_url: str, service: str,
        payer: LocalAccount) -> None:
    url = {"gateway": gateway_url, "facilitator": facilitator_url}[service]
    none = httpx.get(f"{url}/operator/payments")
    wrong = httpx.get(f"{url}/operator/payments",
                      headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    metrics_without = httpx.get(f"{url}/metrics")
    right = httpx.get(f"{url}/operator/payments", params={"payer": payer.address},
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert (none.status_code, none.json()["error"]) == (401, "operator_token_required")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "operator_token_invalid")
    assert metrics_without.status_code == 401
    assert "payments" not in none.json() and "payments" not in wrong.json()
    assert right.status_code == 200
    records = right.json()["payments"]
    assert len(records) == PAID
    assert {r["amount"] for r in records} == {str(PRICE)}
    bad = httpx.get(f"{url}/operator/payments", params={"limit": "0"},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_filter")


def test_a_service_without_an_operator_token_serves_no_payment_data(stack: Manifest) -> None:
    app = create_gateway("http://127.0.0.1:9", ["GET /paid/*=0.0015"],
                         pay_to=stack.account("provider").address, token=stack.token,
                         network=stack.network, facilitator_url="http://127.0.0.1:9")
    with serve_in_thread(app) as url:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            answer = httpx.get(f"{url}/operator/payments", headers=headers)
            assert (answer.status_code, answer.json()["error"]) \
                == (404, "operator_api_disabled")
            one = httpx.get(f"{url}/operator/payments/anything", headers=headers)
            assert one.status_code == 404 and one.json()["error"] == "operator_api_disabled"
        assert httpx.get(f"{url}/metrics").status_code == 200  # counts only, no payer
    with pytest.raises(ValueError, match="16 characters"):
        Observer("gateway", operator_token="short")


# ---------------------------------------------------------------------- CLI


def test_payments_lists_the_local_records_as_a_table_and_as_json(
        paid: dict[str, Any], payer: LocalAccount, stack: Manifest, manifest_file: str) -> None:
    history = str(paid["history"])
    code, table, _ = cli("payments", "--history", history, "--manifest", manifest_file)
    assert code == 0
    assert table.splitlines()[0] == f"{PAID} payments from {history}, newest first"
    assert table.splitlines()[1].split()[:3] == ["TIME", "(UTC)", "STATUS"]
    assert sum(" settled " in line and " 0.001500 USDC " in line
               for line in table.splitlines()) == PAID
    code, table, _ = cli("payments", "--history", history, "--manifest", "/nonexistent")
    assert sum(f" {PRICE} units " in line for line in table.splitlines()) == PAID
    code, text, _ = cli("payments", "--history", history, "--json", "--status", "settled",
                        "--payee", stack.account("provider").address)
    records = json.loads(text)["payments"]
    assert code == 0 and len(records) == PAID
    assert all(r["amount"] == str(PRICE) and r["payer"].lower() == payer.address.lower()
               for r in records)
    code, text, _ = cli("payments", "--history", history, "--json", "--since", "2999-01-01")
    assert json.loads(text)["payments"] == []
    code, text, _ = cli("payments", "--history", history, "--json", "--status", "unknown")
    assert json.loads(text)["payments"] == []


def test_payments_reads_a_facilitators_journal_and_a_gateways_requests_with_the_token(
        paid: dict[str, Any], facilitator_url: str, gateway_url: str,
        payer: LocalAccount) -> None:
    code, text, _ = cli("payments", "--facilitator", facilitator_url, "--operator-token",
                        TOKEN, "--json", "--payer", payer.address)
    journal = json.loads(text)["payments"]
    assert code == 0 and len(journal) == PAID
    assert {r["status"] for r in journal} == {"confirmed"}
    code, table, _ = cli("payments", "--gateway", gateway_url, "--operator-token", TOKEN,
                         "--payer", payer.address)
    assert code == 0 and table.startswith(f"{PAID} payments from gateway {gateway_url}")
    code, text, err = cli("payments", "--gateway", gateway_url, "--json")
    assert code == 2 and json.loads(text)["reason"] == "operator_token_required"
    assert "give --operator-token" in err


def test_receipt_checks_a_payment_on_chain_and_says_when_the_record_does_not_match(
        paid: dict[str, Any], facilitator_url: str, manifest_file: str,
        payer: LocalAccount) -> None:
    local = [json.loads(line) for line in Path(paid["history"]).read_text().splitlines()]
    nonce, tx = local[0]["id"], local[0]["transaction"]
    code, text, _ = cli("receipt", nonce, "--history", str(paid["history"]), "--manifest",
                        manifest_file, "--json")
    checked = json.loads(text)
    assert code == 0 and checked["ok"] is True, text
    assert [c["ok"] for c in checked["checks"]] == [True, True, True]  # incl. the nonce
    [transfer] = checked["onChain"]["transfers"]
    assert transfer["amount"] == str(PRICE)
    assert transfer["from"].lower() == payer.address.lower()
    code, table, _ = cli("receipt", tx, "--history", str(paid["history"]), "--manifest",
                         manifest_file)
    assert code == 0 and table.startswith("the chain confirms this payment")
    code, text, _ = cli("receipt", tx, "--history", "/nonexistent", "--manifest",
                        manifest_file, "--amount", str(PRICE + 1), "--json")
    assert code == 1 and json.loads(text)["ok"] is False
    journal_key = json.loads(cli("payments", "--facilitator", facilitator_url,
                                 "--operator-token", TOKEN, "--json")[1])["payments"][0]["id"]
    code, table, _ = cli("receipt", journal_key, "--facilitator", facilitator_url,
                         "--operator-token", TOKEN, "--manifest", manifest_file)
    assert code == 0 and "[ok] a Transfer matches the record" in table
    code, _, err = cli("receipt", "no-such-id", "--history", str(paid["history"]),
                       "--manifest", manifest_file)
    assert code == 3 and "no payment 'no-such-id'" in err


def test_balance_shows_the_wallet_and_the_pool_from_the_chain(
        paid: dict[str, Any], payer: LocalAccount, manifest_file: str, anvil_chain: Chain,
        stack: Manifest) -> None:
    from a402.asc_manager import ASCManager

    vault = stack.account("client", 1).address
    manager = ASCManager(anvil_chain, stack.contracts["ASCManager"])
    funder = anvil_chain.accounts[0]  # has gas: pools 0.005 for the payer with the vault
    token = contract_at(anvil_chain, "TestUSDC", stack.token.address)
    transact(anvil_chain, funder, token.functions.mint(funder.address, 5_000))
    transact(anvil_chain, funder, token.functions.approve(manager.address, 5_000))
    manager.deposit_to_pool(funder, vault, payer.address, 5_000)
    wallet = token_balance(anvil_chain, stack.token.address, payer.address)
    assert wallet == 10**6 - PAID * PRICE
    code, text, _ = cli("balance", "--address", payer.address, "--manifest", manifest_file,
                        "--vault", vault, "--json")
    data = json.loads(text)
    assert code == 0
    assert data["walletAtomic"] == str(wallet) and data["ethWei"] == "0"
    assert data["pools"] == [{"vault": vault, "pooled": "0.005000", "pooledAtomic": "5000"}]
    assert data["total"] == "1.002000" and data["channels"] == []
    code, table, _ = cli("balance", "--key-file", paid["key"], "--manifest", manifest_file,
                         "--vault", vault)
    assert code == 0
    assert table.splitlines()[0].startswith(f"1.002000 USDC in all for {payer.address}: "
                                            "0.997000 USDC in the wallet, 0.005000 USDC "
                                            "pooled")
    assert re.search(r"^wallet USDC +0\.997000 USDC$", table, re.M)
    assert re.search(rf"^pool with vault {vault} +0\.005000 USDC$", table, re.M)
    code, _, err = cli("balance", "--manifest", manifest_file)
    assert code == 2 and "give --key-file" in err
    code, _, err = cli("balance", "--address", payer.address, "--manifest", manifest_file,
                       "--vault", "0x1234")
    assert code == 2 and err.startswith("a402 balance: nothing moved:")


def test_a_restarted_gateway_still_lists_what_its_ledger_sold_and_receipt_confirms_it(
        stack: Manifest, facilitator_url: str, payer: LocalAccount, manifest_file: str,
        tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    key = tmp_path / "payer.key"
    key.write_text(payer.key.hex())
    key.chmod(0o600)

    def gateway() -> Any:
        return create_gateway(
            "http://127.0.0.1:9", ["GET /paid/*=0.0015"],
            pay_to=stack.account("provider").address, token=stack.token,
            network=stack.network, facilitator_url=facilitator_url, ledger=ledger,
            settle_before_serve=True, observer=Observer("gateway", operator_token=TOKEN))

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_in_thread(gateway()) as url:
        err = io.StringIO()
        # The upstream is down: settled first, then 502 from the proxy (paid, not served).
        pay_main([f"{url}/paid/report", "--key-file", str(key), "--max", "0.01",
                  "--network", stack.network], stdout=io.BytesIO(), stderr=err)
        before = httpx.get(f"{url}/operator/payments", headers=auth,
                           params={"payer": payer.address}).json()["payments"]
    with serve_in_thread(gateway()) as url:  # a new process: nothing in memory
        after = httpx.get(f"{url}/operator/payments", headers=auth,
                          params={"payer": payer.address, "status": "settled"}
                          ).json()["payments"]
        [entry] = after
        code, table, _ = cli("receipt", entry["nonce"], "--gateway", url, "--operator-token",
                             TOKEN, "--manifest", manifest_file)
    [seen] = before
    assert (seen["status"], seen["amount"], seen["ledger"]) == ("settled", str(PRICE), True)
    assert entry["transaction"] == seen["transaction"] and entry["transaction"]
    assert entry["amount"] is None and entry["payee"] is None  # the ledger keeps neither
    assert code == 0, table
    assert "[ok] the payer's authorization was used" in table


def test_a_settle_that_moves_nothing_is_logged_as_such_with_bounded_labels(
        facilitator_url: str, lines: Lines) -> None:
    before = scrape(facilitator_url)
    start = len(lines.lines)
    junk = httpx.post(f"{facilitator_url}/settle", content=b"{not json")
    odd = httpx.post(f"{facilitator_url}/settle", json={
        "x402Version": 2, "paymentPayload": {}, "paymentRequirements": {
            "scheme": "s" * 1000, "payTo": "p" * 1000, "amount": "1"}})
    after = scrape(facilitator_url)
    assert junk.status_code == 400 and odd.status_code in (200, 400)
    new = Lines()
    new.lines = lines.lines[start:]
    logged = new.of("facilitator")
    assert [line["outcome"] for line in logged] in (["error", "error"], ["error", "failed"])
    assert logged[1]["payee"] is None and logged[1]["amount"] == "1"  # over 80: not logged
    assert metric(after, "facilitator", "settled") == metric(before, "facilitator", "settled")
    assert "s" * 100 not in after  # the label is "other", not the caller's string
    assert 'scheme="other"' in after


def test_receipt_of_a_transaction_the_chain_never_mined_says_so(
        manifest_file: str, paid: dict[str, Any]) -> None:
    code, text, err = cli("receipt", "0x" + "ab" * 32, "--history", str(paid["history"]),
                          "--manifest", manifest_file, "--json")
    assert code == 3 and json.loads(text)["reason"] == "tx_not_found"
    assert "no mined transaction" in err
