"""``a402 pay`` against an ``upto`` route with no Permit2 allowance: refused before any
money moves, with the exact command to run; ``a402 permit2 approve`` then sets it and the
same ``a402 pay`` is charged by usage (anvil, balances asserted)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.chain.upto_settle import permit2_allowance
from a402.cli import build_parser
from a402.client.pay import EXIT_NOT_PAID, EXIT_OK, EXIT_REFUSED, pay_main
from a402.client.permit2 import UNLIMITED
from a402.provider import PaymentMiddleware
from a402.provider.routes import RouteConfig
from tests.interop.official_upto import GAS_FUNDS_WEI, fresh_account
from tests.servers import serve

pytestmark = pytest.mark.anvil

MAXIMUM = 20_000
USED = 1_234
FUNDS = 100_000


def _app(pay_to: str, manifest: Manifest, facilitator_url: str) -> Starlette:
    async def metered(request: Request) -> JSONResponse:
        return JSONResponse({"answer": 42}, headers={"x-a402-usage": str(USED)})

    return Starlette(routes=[Route("/llm", metered)], middleware=[Middleware(
        PaymentMiddleware, routes={"GET /llm": RouteConfig(price=MAXIMUM, scheme="upto")},
        pay_to=pay_to, token=manifest.token, network=manifest.network,
        facilitator=facilitator_url)])


def _permit2(*argv: str) -> tuple[int, str, str]:
    args = build_parser(["permit2", *argv]).parse_args(["permit2", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.run(args, out=out, err=err), out.getvalue(), err.getvalue()


def _pay(*argv: str) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    return pay_main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_pay_without_a_permit2_allowance_says_what_to_run_and_pays_after_approve(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("A402_HISTORY", str(tmp_path / "payments.jsonl"))
    payer = new_payer(FUNDS)
    anvil_chain.w3.provider.make_request(  # type: ignore[operator]
        "anvil_setBalance", [payer.address, hex(GAS_FUNDS_WEI)])
    key = tmp_path / "payer.key"
    key.write_text(payer.key.hex() + "\n")  # as `a402 devnet` writes its key files
    key.chmod(0o600)
    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())
    token = dev_stack.token.address
    pay_to = fresh_account()

    with serve(_app(pay_to, dev_stack, facilitator_url)) as base:
        # Without naming the token, an upto offer is not signed at all (Permit2 could
        # move any token the wallet allowed it, in that token's units).
        code, out, err = _pay(base + "/llm", "--key-file", str(key), "--max", "0.02")
        assert code == EXIT_REFUSED and "asset_not_allowed" in err, err
        assert "--asset" in err and "nothing was signed" in err

        code, out, err = _pay(base + "/llm", "--key-file", str(key), "--max", "0.02",
                              "--asset", token)
        assert code == EXIT_NOT_PAID, err
        assert b"answer" not in out
        assert "permit2_allowance_required" in err
        assert "nothing was paid" in err
        assert f"a402 permit2 approve --key-file KEYFILE --token {dev_stack.token.address}" \
            in err
        assert token_balance(anvil_chain, token, payer.address) == FUNDS
        assert token_balance(anvil_chain, token, pay_to) == 0

        code, text, err = _permit2("show", "--key-file", str(key), "--manifest", str(manifest),
                                   "--json")
        assert code == 0, err
        assert json.loads(text)["allowance"] == "0"
        code, text, err = _permit2("approve", "--key-file", str(key), "--manifest",
                                   str(manifest), "--json")
        assert code == 0, err
        approved = json.loads(text)
        assert approved["unlimited"] is True and approved["transaction"].startswith("0x")
        assert permit2_allowance(anvil_chain, token, payer.address) == UNLIMITED
        # Asking again sends nothing.
        code, text, _ = _permit2("approve", "--key-file", str(key), "--manifest", str(manifest),
                                 "--json")
        assert code == 0 and json.loads(text)["transaction"] == ""

        code, out, err = _pay(base + "/llm", "--key-file", str(key), "--max", "0.02",
                              "--asset", token)
        assert code == EXIT_OK, err
        assert json.loads(out) == {"answer": 42}
    assert token_balance(anvil_chain, token, payer.address) == FUNDS - USED
    assert token_balance(anvil_chain, token, pay_to) == USED
    # The local record says what was charged (and the maximum), which the chain confirms.
    records = [json.loads(line) for line in (tmp_path / "payments.jsonl").read_text()
               .splitlines()]
    paid = records[-1]
    assert (paid["scheme"], paid["amount"], paid["maximum"]) == ("upto", str(USED),
                                                                 str(MAXIMUM))
    args = build_parser(["receipt"]).parse_args(
        ["receipt", paid["id"], "--history", str(tmp_path / "payments.jsonl"),
         "--manifest", str(manifest), "--json"])
    out_text, err_text = io.StringIO(), io.StringIO()
    code = args.run(args, out=out_text, err=err_text)
    checked = json.loads(out_text.getvalue())
    assert code == 0 and checked["ok"] is True, out_text.getvalue() + err_text.getvalue()


def test_permit2_approve_refuses_a_bad_amount_and_sends_nothing(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    tmp_path: Path,
) -> None:
    payer = new_payer(FUNDS)
    key = tmp_path / "payer.key"
    key.write_text(payer.key.hex())
    key.chmod(0o600)
    code, _, err = _permit2("approve", "--key-file", str(key), "--token",
                            dev_stack.token.address, "--rpc", anvil_chain.rpc_url or "",
                            "--amount", "-5")
    assert code == 2 and "nothing was sent" in err
    assert permit2_allowance(anvil_chain, dev_stack.token.address, payer.address) == 0
