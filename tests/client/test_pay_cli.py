"""``a402 pay``: body to stdout, receipt to stderr, exit codes that say what happened."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from a402.client.pay import (
    EXIT_HTTP_ERROR,
    EXIT_NOT_PAID,
    EXIT_NOT_SETTLED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    pay_main,
    read_key_file,
)
from tests.client.conftest import Stack, until

PRICE = 10_000  # 0.01


def key_file(
    tmp_path: Path, account: LocalAccount, mode: int = 0o600, text: str | None = None
) -> str:
    path = tmp_path / "payer.key"
    path.write_text(text if text is not None else f"  {account.key.hex()}\n")
    path.chmod(mode)
    return str(path)


def run(*argv: str) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = pay_main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def receipt_line(err: str) -> dict[str, object]:
    return json.loads(next(line for line in err.splitlines() if line.startswith("{")))


@pytest.mark.anvil
def test_pays_and_prints_body_and_receipt(stack: Stack, served, tmp_path: Path) -> None:
    payer = stack.new_payer(PRICE * 2)
    server = stack.server(PRICE)
    url = served(server)
    code, out, err = run(f"{url}/paid", "--key-file", key_file(tmp_path, payer),
                         "--max", "0.01", "-d", '{"q": 1}', "-H", "Content-Type: application/json",
                         "--network", stack.manifest.network)
    assert code == EXIT_OK, err
    assert json.loads(out) == {"paid": True, "method": "POST", "echo": '{"q": 1}'}
    receipt = receipt_line(err)
    assert receipt["success"] is True and receipt["amount"] == str(PRICE)
    assert receipt["network"] == stack.manifest.network
    assert str(receipt["payer"]).lower() == payer.address.lower()
    assert stack.chain.w3.eth.get_transaction_receipt(receipt["transaction"])["status"] == 1
    assert stack.balance(payer.address) == PRICE


@pytest.mark.anvil
def test_pays_a_v1_server(sepolia: Stack, served, tmp_path: Path) -> None:
    payer = sepolia.new_payer(PRICE)
    url = served(sepolia.server(PRICE, version=1))
    code, out, err = run(f"{url}/paid", "--key-file", key_file(tmp_path, payer))
    assert code == EXIT_OK, err
    assert json.loads(out)["paid"] is True
    assert receipt_line(err)["x402Version"] == 1
    assert sepolia.balance(payer.address) == 0


@pytest.mark.anvil
def test_refuses_above_max_and_moves_nothing(stack: Stack, served, tmp_path: Path) -> None:
    payer = stack.new_payer(PRICE)
    server = stack.server(PRICE)
    url = served(server)
    code, out, err = run(f"{url}/paid", "--key-file", key_file(tmp_path, payer),
                         "--max", "0.005")
    assert code == EXIT_REFUSED
    assert out == b""
    assert receipt_line(err)["refused"] == "price_above_maximum"
    assert "nothing was signed" in err
    assert server.paid_attempts == 0 and stack.balance(payer.address) == PRICE


@pytest.mark.anvil
def test_settlement_failure_is_reported(stack: Stack, served, tmp_path: Path) -> None:
    broke = stack.new_payer(0)  # signs fine, cannot pay
    url = served(stack.server(PRICE))
    code, _, err = run(f"{url}/paid", "--key-file", key_file(tmp_path, broke))
    assert code == EXIT_NOT_PAID and err.startswith("a402 pay: nothing was paid")
    summary = receipt_line(err)
    assert summary["success"] is False and summary["status"] == "rejected"
    assert "insufficient" in str(summary["reason"])


@pytest.mark.anvil
def test_free_url_and_http_errors(stack: Stack, served, tmp_path: Path) -> None:
    payer = stack.new_payer(0)
    url = served(stack.server(PRICE))
    code, out, err = run(f"{url}/free", "--key-file", key_file(tmp_path, payer))
    assert (code, json.loads(out), err) == (EXIT_OK, {"free": True}, "")
    code, _, err = run(f"{url}/missing", "--key-file", key_file(tmp_path, payer))
    assert code == EXIT_HTTP_ERROR and "404" in err


def test_key_file_rules(tmp_path: Path) -> None:
    from eth_account import Account

    account = Account.create()
    normalised = "0x" + bytes(account.key).hex()  # what every signer takes
    assert read_key_file(key_file(tmp_path, account)) == normalised
    with_prefix = key_file(tmp_path, account, text="0x" + account.key.hex() + "\n")
    assert read_key_file(with_prefix) == normalised  # a402 devnet's files end with "\n"
    code, _, err = run("http://127.0.0.1:9/x", "--key-file", key_file(tmp_path, account, 0o644))
    assert code == EXIT_USAGE and "chmod 600" in err
    code, _, err = run("http://127.0.0.1:9/x", "--key-file", key_file(tmp_path, account,
                                                                        text="not a key"))
    assert code == EXIT_USAGE and "key file" in err
    code, _, err = run("http://127.0.0.1:9/x", "--key-file", str(tmp_path / "absent"))
    assert code == EXIT_USAGE
    code, _, err = run("http://127.0.0.1:9/x", "--key-file", key_file(tmp_path, account),
                       "--max", "-1")
    assert code == EXIT_USAGE and "--max" in err
    assert err.count(account.key.hex()) == 0  # the key never reaches the output
    code, _, _ = run("--key-file")
    assert code == EXIT_USAGE


@pytest.mark.anvil
def test_timeout_after_paying_is_reported_as_unsettled(stack: Stack, served,
                                                       tmp_path: Path) -> None:
    payer = stack.new_payer(PRICE)
    server = stack.server(PRICE, slow_paid=1, slow_seconds=4.0)
    url = served(server)
    code, out, err = run(f"{url}/paid", "--key-file", key_file(tmp_path, payer),
                         "--timeout", "2")
    assert code == EXIT_NOT_SETTLED and out == b""
    assert receipt_line(err)["status"] == "unknown"
    assert "may still settle" in err
    until(lambda: len(server.settled) == 1, "the server's settlement")  # on its own schedule
    assert stack.balance(payer.address) == 0  # it did: the message was right to warn
