"""``a402 mandate`` and ``a402 pay --mandate`` against anvil: an owner signs, the agent
pays inside, a greedy 402 is refused, the owner revokes, the next payment is refused."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from a402.cli import build_parser
from a402.client.mandate_command import run_mandate
from a402.client.pay import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, pay_main
from tests.client.conftest import Stack

PRICE = 10_000

pytestmark = pytest.mark.anvil


def _key_file(tmp_path: Path, name: str, account: LocalAccount) -> str:
    path = tmp_path / f"{name}.key"
    path.write_text(HexBytes(account.key).to_0x_hex())
    path.chmod(0o600)
    return str(path)


def mandate(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["mandate", *argv])
    return run_mandate(args, out=out, err=err), out.getvalue(), err.getvalue()


def pay(*argv: str) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    return pay_main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_owner_signs_agent_pays_greedy_402_refused_owner_revokes_next_payment_refused(
    stack: Stack, served, tmp_path: Path,
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(stack.manifest.to_json())
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 10)
    owner_key, agent_key = _key_file(tmp_path, "owner", owner), _key_file(tmp_path, "agent", agent)
    doc, db = str(tmp_path / "mandate.json"), f"sqlite:///{tmp_path / 'spend.db'}"

    code, out, err = mandate("create", "--owner-key-file", owner_key, "--agent", agent.address,
                             "--max-per-payment", "0.01", "--budget", "0.05",
                             "--payee", stack.pay_to, "--manifest", str(manifest),
                             "--out", doc)
    assert code == 0, err
    assert re.search(r"max per payment +10000\n", out) and stack.pay_to in out
    code, out, _ = mandate("show", doc, "--json")
    shown = json.loads(out)
    assert shown["signatureValid"] and shown["mandate"]["budget"] == 5 * PRICE
    code, out, err = mandate("verify", doc, "--manifest", str(manifest), "--agent",
                             agent.address)
    assert code == 0, out + err
    assert re.search(r"usable now +yes", out)

    url = served(stack.server(PRICE))
    flags = ("--key-file", agent_key, "--mandate", doc, "--spend-db", db,
             "--manifest", str(manifest))
    code, body, err = pay(f"{url}/paid", *flags)
    assert code == EXIT_OK, err
    assert json.loads(body)["paid"] is True
    assert stack.balance(agent.address) == PRICE * 9

    greedy = served(stack.server(100 * PRICE))
    code, body, err = pay(f"{greedy}/paid", *flags)
    assert code == EXIT_REFUSED and body == b""
    refusal = json.loads(next(line for line in err.splitlines() if line.startswith("{")))
    assert refusal["refused"] == "mandate_cap_exceeded"
    assert "nothing was signed, nothing was paid" in err
    assert stack.balance(agent.address) == PRICE * 9

    code, out, _ = mandate("list", "--spend-db", db, "--json")
    [row] = json.loads(out)
    assert (row["spent"], row["budget"], row["payments"]) == (PRICE, 5 * PRICE, 1)

    # The owner's key has no gas and no relayer is named: the node refuses the
    # transaction; the command says the mandate is not known to be revoked (exit 3, no
    # traceback), and it is indeed still usable.
    code, out, err = mandate("revoke", doc, "--owner-key-file", owner_key,
                             "--manifest", str(manifest))
    assert code == 3 and out == "", err
    assert err.startswith("a402 mandate revoke: the mandate is NOT known to be revoked "
                          "(chain_error): "), err
    assert "needs gas" in err and "a402 mandate verify" in err
    code, out, err = mandate("verify", doc, "--manifest", str(manifest))
    assert code == 0 and re.search(r"revoked +no", out), out + err

    relayer = _key_file(tmp_path, "relayer", stack.chain.accounts[-2])
    code, out, err = mandate("revoke", doc, "--owner-key-file", owner_key,
                             "--relayer-key-file", relayer, "--manifest", str(manifest),
                             "--json")
    assert code == 0, err
    assert json.loads(out)["revoked"] is True
    code, out, _ = mandate("verify", doc, "--manifest", str(manifest))
    assert code == 1 and "mandate_revoked" in out

    code, _, err = pay(f"{url}/paid", *flags)
    assert code == EXIT_REFUSED and "mandate_revoked" in err
    assert stack.balance(agent.address) == PRICE * 9


def test_a_mandate_for_another_key_altered_or_with_an_unknown_field_does_not_pay(
    stack: Stack, served, tmp_path: Path,
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(stack.manifest.to_json())
    owner, agent, other = stack.new_payer(0), stack.new_payer(PRICE), stack.new_payer(PRICE)
    doc = str(tmp_path / "mandate.json")
    code, _, err = mandate("create", "--owner-key-file", _key_file(tmp_path, "owner", owner),
                           "--agent", other.address, "--max-per-payment", "0.01",
                           "--budget", "1", "--manifest", str(manifest), "--out", doc)
    assert code == 0, err
    url = served(stack.server(PRICE))
    flags = ("--key-file", _key_file(tmp_path, "agent", agent), "--spend-db",
             f"sqlite:///{tmp_path / 'spend.db'}", "--manifest", str(manifest))
    code, _, err = pay(f"{url}/paid", "--mandate", doc, *flags)
    assert code == EXIT_USAGE and "mandate_wrong_agent" in err
    data = json.loads(Path(doc).read_text())
    raised = {**data, "mandate": {**data["mandate"], "agent": agent.address}}
    del raised["hash"]
    Path(doc).write_text(json.dumps(raised))  # the agent edits itself in: not the owner's
    code, _, err = pay(f"{url}/paid", "--mandate", doc, *flags)
    assert code == EXIT_USAGE and "mandate_bad_signature" in err
    data["mandate"]["maxPerHour"] = 1
    Path(doc).write_text(json.dumps(data))
    code, _, err = pay(f"{url}/paid", "--mandate", doc, *flags)
    assert code == EXIT_USAGE and "mandate_unknown_field" in err
    code, _, err = mandate("show", doc)
    assert code == 2 and "mandate_unknown_field" in err
    assert stack.balance(agent.address) == PRICE


def test_above_the_threshold_a_payment_needs_the_owners_confirmation_file(
    stack: Stack, served, tmp_path: Path,
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(stack.manifest.to_json())
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 3)
    owner_key = _key_file(tmp_path, "owner", owner)
    doc = str(tmp_path / "mandate.json")
    code, _, err = mandate("create", "--owner-key-file", owner_key, "--agent", agent.address,
                           "--max-per-payment", "0.05", "--budget", "1",
                           "--confirm-above", "0.005", "--manifest", str(manifest),
                           "--out", doc)
    assert code == 0, err
    url = served(stack.server(PRICE))
    flags = ("--key-file", _key_file(tmp_path, "agent", agent), "--mandate", doc,
             "--spend-db", f"sqlite:///{tmp_path / 'spend.db'}", "--manifest", str(manifest))
    code, _, err = pay(f"{url}/paid", *flags)
    assert code == EXIT_REFUSED and "mandate_needs_confirmation" in err

    conf = str(tmp_path / "confirmation.json")
    code, _, err = mandate("confirm", doc, "--owner-key-file", owner_key, "--payee",
                           stack.pay_to, "--amount", "0.001", "--url", f"{url}/paid",
                           "--out", conf)
    assert code == 0, err
    code, _, err = pay(f"{url}/paid", *flags, "--confirmation", conf)
    assert code == EXIT_REFUSED and "mandate_bad_confirmation" in err  # 0.001 ≠ the price

    code, _, err = mandate("confirm", doc, "--owner-key-file", owner_key, "--payee",
                           stack.pay_to, "--amount", "0.01", "--url", f"{url}/paid",
                           "--out", conf)
    code, _, err = pay(f"{url}/paid", *flags, "--confirmation", conf)
    assert code == EXIT_OK, err
    assert stack.balance(agent.address) == PRICE * 2
    code, _, err = pay(f"{url}/paid", *flags, "--confirmation", conf)
    assert code == EXIT_REFUSED and "mandate_confirmation_used" in err
    assert stack.balance(agent.address) == PRICE * 2
