"""A vault's operator sees its calls: one JSON log line per ``/v1/invoke`` (and the
provider's gateway one per EXEC it ran), ``/metrics`` counting exactly the paid calls,
and ``/operator/payments`` behind the operator token, read also by ``a402 payments
--vault``."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest

from a402.background import serve_in_thread
from a402.cli import build_parser
from a402.observe import PAID_LOGGER, Observer
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import client_of, running_vault

pytestmark = pytest.mark.anvil

TOKEN = "vault-operator-token-0123"
PRICE = 1_000  # the test provider's /weather price


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def paid_count(text: str) -> float:
    return sum(float(m.group(2)) for m in re.finditer(
        r"^a402_paid_requests_total\{([^}]*)\} (\S+)$", text, re.M)
        if 'service="vault"' in m.group(1) and 'outcome="paid"' in m.group(1))


def test_a_vaults_paid_calls_are_logged_counted_and_listed_for_its_operator_only(
        world: World) -> None:
    lines = Lines()
    logging.getLogger(PAID_LOGGER).addHandler(lines)
    provider = world.provider()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with serve_in_thread(provider.app) as site, running_vault(
                world, observer=Observer("vault", operator_token=TOKEN)) as vault:
            account, client = client_of(world, vault, funds=100_000, deposit=50_000)
            before = httpx.get(vault.url + "/metrics", headers=auth).text
            results = [client.invoke(f"{site}/weather", max_price=PRICE,
                                     idempotency_key=f"op-{i}") for i in range(3)]
            after = httpx.get(vault.url + "/metrics", headers=auth).text
            none = httpx.get(vault.url + "/operator/payments")
            wrong = httpx.get(vault.url + "/operator/payments",
                              headers={"Authorization": "Bearer " + "y" * len(TOKEN)})
            listed = httpx.get(vault.url + "/operator/payments", headers=auth,
                               params={"payer": account.address, "status": api.PAID})
            args = build_parser().parse_args(["payments", "--vault", vault.url,
                                              "--operator-token", TOKEN, "--json"])
            out = io.StringIO()
            code = args.run(args, out=out, err=io.StringIO())
            [channel] = client.account_info()["channels"]
            client.close()
    finally:
        logging.getLogger(PAID_LOGGER).removeHandler(lines)
    assert [r.outcome for r in results] == [api.PAID] * 3
    assert paid_count(after) - paid_count(before) == 3
    logged = [json.loads(line) for line in lines.lines]
    vault_lines = [line for line in logged if line["service"] == "vault"]
    assert len(vault_lines) == 3
    assert all(line["outcome"] == "paid" and line["amount"] == str(PRICE)
               and line["payer"].lower() == account.address.lower()
               and line["scheme"] == "a402" and line["latencyMs"] > 0 for line in vault_lines)
    # The provider's side (a gateway taking A402 channel payments) logs each EXEC it ran.
    executed = [line for line in logged if line["service"] == "gateway"]
    assert [line["outcome"] for line in executed] == ["executed"] * 3
    assert all(line["scheme"] == "a402" and line["amount"] == str(PRICE)
               and line["payee"].lower() == provider.address.lower() for line in executed)
    assert (none.status_code, none.json()["error"]) == (401, "operator_token_required")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "operator_token_invalid")
    records = listed.json()["payments"]
    assert len(records) == 3 and {r["amount"] for r in records} == {str(PRICE)}
    assert {r["payee"].lower() for r in records} == {provider.address.lower()}
    assert code == 0 and len(json.loads(out.getvalue())["payments"]) == 3
    assert provider.calls["weather"] == 3
    assert channel["providerBalance"] == str(3 * PRICE)  # what the operator API listed
