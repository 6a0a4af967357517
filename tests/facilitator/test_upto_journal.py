"""The facilitator's journal names the scheme it settled: an ``upto`` row reads ``upto``
(with the amount charged, 0 included) in ``/operator/payments`` and in ``a402 payments``,
and ``a402 receipt`` checks an upto settlement's transfer on-chain (anvil)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.cli import build_parser
from a402.exact.upto import build_upto_payload
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.observe import Observer
from a402.wire.x402 import PaymentRequirements, ResourceInfo
from tests.interop.official_upto import upto_payer

pytestmark = [pytest.mark.anvil]

TOKEN = "t" * 32
MAXIMUM = 30_000


def _cli(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    return args.run(args, out=out, err=err), out.getvalue(), err.getvalue()


def _settle_upto(facilitator: Facilitator, manifest: Manifest, payer: LocalAccount,
                 pay_to: str, amount: int) -> str:
    offer = PaymentRequirements(
        scheme="upto", network=manifest.network, asset=manifest.token.address,
        amount=str(MAXIMUM), pay_to=pay_to, max_timeout_seconds=60,
        extra={"assetTransferMethod": "permit2", **manifest.token.eip712_extra(),
               "facilitatorAddress": facilitator.signer.address})
    payload = build_upto_payload(offer, payer.key, ResourceInfo(url="http://p.example/llm"))
    settled = facilitator.settle({
        "x402Version": 2, "paymentPayload": payload.to_wire(),
        "paymentRequirements": offer.model_copy(update={"amount": str(amount)}).to_wire()})
    assert settled.success, settled
    return settled.transaction


def test_the_journal_lists_upto_settlements_as_upto_with_the_amount_charged(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator: Facilitator, tmp_path: Path,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, 100_000)
    pay_to = Account.create().address
    charged = _settle_upto(facilitator, dev_stack, payer, pay_to, 4_321)
    free = _settle_upto(facilitator, dev_stack, payer, pay_to, 0)
    assert charged.startswith("0x") and free == ""
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 4_321
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 100_000 - 4_321
    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())

    app = create_app(facilitator, observer=Observer("facilitator", operator_token=TOKEN))
    with serve_in_thread(app) as url:
        code, text, err = _cli("payments", "--facilitator", url, "--operator-token", TOKEN,
                               "--payer", payer.address, "--json")
        assert code == 0, err
        rows = json.loads(text)["payments"]
        assert sorted((r["scheme"], r["amount"], r["status"]) for r in rows) == [
            ("upto", "0", "confirmed"), ("upto", "4321", "confirmed")]
        [row] = [r for r in rows if r["transaction"] == charged]
        code, text, err = _cli("receipt", row["id"], "--facilitator", url, "--operator-token",
                               TOKEN, "--manifest", str(manifest), "--json")
        checked = json.loads(text)
        assert code == 0 and checked["ok"] is True, text + err
        assert checked["record"]["scheme"] == "upto"
        [transfer] = checked["onChain"]["transfers"]
        assert transfer["amount"] == "4321" and transfer["to"].lower() == pay_to.lower()
