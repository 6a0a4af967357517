"""The operator's and the payer's view through the real ``a402`` executables: a devnet,
``a402 facilitator`` and ``a402 gateway`` with ``--operator-token``, two ``a402 pay``;
then each service's stderr holds one JSON line per paid request at the default log
level, and ``a402 payments``, ``a402 receipt`` and ``a402 balance`` tell the same story
as the chain."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import connect
from tests.test_cli_end_to_end import A402, Stderr, running, upstream_api, wait_until

TOKEN = "end-to-end-operator-token"


def a402(*args: str, history: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([A402, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "A402_HISTORY": str(history), **env})


def paid_lines(stderr: Stderr) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in list(stderr.lines) if line.startswith("{")]
    return [line for line in lines if line.get("event") == "paid_request"]


@pytest.mark.anvil
def test_two_payments_are_logged_listed_and_confirmed_from_the_command_line(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    manifest_path = tmp_path / "devnet.json"
    history = tmp_path / "payments.jsonl"
    chain_port = reserve_port()
    with running("devnet", "--port", str(chain_port), "--manifest-out", str(manifest_path)):
        wait_until(manifest_path.exists, "devnet")
        manifest = Manifest.load(manifest_path)
        facilitator_port = reserve_port()
        with running("facilitator", "--rpc", manifest.rpc_url, "--network", manifest.network,
                     "--key-file", str(tmp_path / "facilitator.key"),
                     "--db", f"sqlite:///{tmp_path}/j.db", "--port", str(facilitator_port),
                     "--operator-token", TOKEN) as facilitator_proc:
            facilitator_log = Stderr(facilitator_proc)
            facilitator = f"http://127.0.0.1:{facilitator_port}"
            wait_until(lambda: httpx.get(f"{facilitator}/healthz").status_code == 200,
                       "facilitator")
            with serve_in_thread(upstream_api()) as upstream:
                gateway_port = reserve_port()
                with running(
                    "gateway", "--upstream", upstream, "--route", "GET /quote=0.25",
                    "--manifest", str(manifest_path), "--facilitator", facilitator,
                    "--ledger-db", f"sqlite:///{tmp_path}/ledger.db",
                    "--port", str(gateway_port), "--operator-token", TOKEN,
                ) as gateway_proc:
                    gateway_log = Stderr(gateway_proc)
                    gateway = f"http://127.0.0.1:{gateway_port}"
                    wait_until(lambda: httpx.get(f"{gateway}/free").status_code == 200,
                               "gateway")
                    client = manifest.account("client").address
                    chain = connect(manifest.rpc_url)
                    before = token_balance(chain, manifest.token.address, client)
                    for _ in range(2):
                        paid = a402("pay", f"{gateway}/quote", "--key-file",
                                    str(tmp_path / "client.key"), "--max", "0.5",
                                    history=history)
                        assert paid.returncode == 0, paid.stderr
                    after = token_balance(chain, manifest.token.address, client)
                    wait_until(lambda: len(paid_lines(gateway_log)) >= 2, "gateway log")
                    wait_until(lambda: len(paid_lines(facilitator_log)) >= 2,
                               "facilitator log")
                    time.sleep(0.2)  # a third line, were there one, would be out by now
                    journal = a402("payments", "--facilitator", facilitator,
                                   "--operator-token", TOKEN, "--json", history=history)
                    requests = a402("payments", "--gateway", gateway, history=history,
                                    A402_OPERATOR_TOKEN=TOKEN)  # the token from the env
                    refused = a402("payments", "--gateway", gateway, "--operator-token",
                                   "x" * len(TOKEN), history=history)
                    metrics = httpx.get(f"{gateway}/metrics",
                                        headers={"Authorization": f"Bearer {TOKEN}"}).text
                    gateway_lines, facilitator_lines = (paid_lines(gateway_log),
                                                        paid_lines(facilitator_log))
        local = a402("payments", "--json", history=history)
        [first, _] = json.loads(local.stdout)["payments"]
        receipt = a402("receipt", str(first["id"]), "--manifest", str(manifest_path),
                       history=history)
        balance = a402("balance", "--key-file", str(tmp_path / "client.key"), "--manifest",
                       str(manifest_path), "--json", history=history)

    assert after == before - 2 * 250_000
    for lines in (gateway_lines, facilitator_lines):
        assert [line["outcome"] for line in lines] == ["settled", "settled"]
        assert all(line["amount"] == "250000" and str(line["payer"]).lower()
                   == client.lower() for line in lines)
    assert journal.returncode == 0, journal.stderr
    assert [r["status"] for r in json.loads(journal.stdout)["payments"]] \
        == ["confirmed", "confirmed"]
    assert requests.returncode == 0 and requests.stdout.startswith(
        f"2 payments from gateway {gateway}")
    assert refused.returncode == 2 and "operator_token_invalid" in refused.stderr
    assert 'a402_paid_requests_total{outcome="settled",scheme="exact",service="gateway"} 2.0' \
        in metrics
    assert local.returncode == 0 and first["status"] == "settled"
    assert receipt.returncode == 0, receipt.stdout + receipt.stderr
    assert receipt.stdout.startswith("the chain confirms this payment")
    assert "[ok] the payer's authorization was used" in receipt.stdout
    assert balance.returncode == 0, balance.stderr
    assert json.loads(balance.stdout)["walletAtomic"] == str(after)
