"""An ``upto`` settle the facilitator answers ``settlement_pending`` *without* an amount
(the field is optional in x402; a facilitator that only knows its transaction is not
confirmed yet may leave it out): the pending entry must still say what is being charged,
or the payer's retry cannot resume it. Before, the answer replaced the amount the
provider had recorded, the retry was refused (``payment_terms_mismatch``) on every try,
and the payer, charged on-chain, never got the response. Real anvil, our facilitator
over HTTP, a SQLite ledger; balances asserted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.facilitator.core import Facilitator
from a402.provider.ledger import LedgerState, PaymentKey, SqlLedger
from a402.wire.errors import SETTLEMENT_PENDING
from a402.wire.headers import PAYMENT_RESPONSE, PAYMENT_SIGNATURE, decode_settle_response
from tests.facilitator_faults import PendingWithoutAmountOnce
from tests.interop.official_upto import fresh_account, upto_payer
from tests.servers import serve

from .test_upto_resume import FUNDS, _app, _signed_header

pytestmark = pytest.mark.anvil


def test_a_pending_upto_settle_without_an_amount_is_resumed_for_the_recorded_charge(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str, facilitator: Facilitator, tmp_path: Path,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    client = PendingWithoutAmountOnce(facilitator_url)
    runs: list[int] = []
    try:
        with serve(_app(pay_to, dev_stack, client, ledger, runs)) as base, \
                httpx.Client(timeout=60) as http:
            url = base + "/usage"
            header, inner = _signed_header(payer, http.get(url))
            pending = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "7000"})
            assert pending.status_code == 402, pending.text
            assert pending.json()["error"] == SETTLEMENT_PENDING
            assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 7000
            key = PaymentKey.of(dev_stack.network, dev_stack.token.address, payer.address,
                                f"permit2:{inner['permit2Authorization']['nonce']}")
            assert ledger.state_of(key) == LedgerState.PENDING

            retry = http.get(url, headers={PAYMENT_SIGNATURE: header, "x-used": "9000"})
            assert retry.status_code == 200, retry.text
            assert retry.json()["used"] == 7000  # the response computed the first time
            receipt = decode_settle_response(retry.headers[PAYMENT_RESPONSE])
            assert receipt.success and receipt.amount == "7000"
            assert client.settles == ["7000", "7000"]
            assert ledger.state_of(key) == LedgerState.SETTLED
    finally:
        ledger.close()
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - 7000
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == 7000
    assert runs == [7000]
