"""``a402 demo --act channels``: the paid weather API, paid through one A402 channel.

The act checks itself (one createASCFromPool and one closeASC whatever the number of
requests, every request paid once, balances conserved across client, provider,
vault and the ASCManager, which holds the pool); these tests hold it to what its summary
claims, on the embedded py-evm chain, and show the check can fail.
"""

from __future__ import annotations

import io
import re

from a402.demos.channels import run_channels_act
from a402.demos.exact import run_demo


def _row(text: str, scheme: str, name: str) -> tuple[int, int]:
    """(transactions, gas) of one row of the on-chain table."""
    [row] = re.findall(rf"^  {scheme} +{name} +(\d+) +([\d,]+)$", text, re.M)
    return int(row[0]), int(row[1].replace(",", ""))


def test_ten_requests_through_one_channel_cost_one_open_and_one_close() -> None:
    out = io.StringIO()
    assert run_demo(act="channels", channel_requests=10, out=out) == 0
    text = out.getvalue()
    assert "result     OK: one channel, every request paid once, balances conserved" in text
    assert "requests   10 through one channel (1 opened), 0.010000 USDC paid" in text
    assert "x402 exact" in text and "for comparison" in text

    # On-chain: one deposit, one open, one close — against one transfer per exact payment.
    assert _row(text, "A402 channel", "createASCFromPool")[0] == 1
    assert _row(text, "A402 channel", "closeASC")[0] == 1
    assert _row(text, "A402 channel", "depositToPoolWithAuthorization")[0] == 1  # the deposit
    assert re.search(r"transactions for 10 +10 +3$", text, re.M), text
    exact_txs, exact_gas = _row(text, "x402 exact", "transferWithAuthorization")
    assert exact_txs == 5 and exact_gas > 5 * 21_000

    # Balances: the provider got 5 exact payments and the 10 channel payments; the
    # channel's escrow is gone; the unspent half of the deposit stays in the client's pool
    # balance, in the ASCManager; the vault's own address holds nothing.
    assert re.search(r"^provider +0\.000000 +0\.005000 +0\.015000 +\+0\.015000$", text, re.M)
    assert re.search(r"^ASCManager pool +0\.000000 +0\.000000 +0\.010000 +\+0\.010000$",
                     text, re.M)
    assert re.search(r"^vault +0\.000000 +0\.000000 +0\.000000", text, re.M)
    assert re.search(r"^total +([\d,.]+) +\1 +\1 +\+0\.000000$", text, re.M)


def test_the_act_fails_when_the_requests_need_a_second_channel() -> None:
    out = io.StringIO()
    assert run_channels_act(6, out=out, exact_batch=1, channel_covers=3) == 1
    text = out.getvalue()
    assert "requests   6 through one channel (2 opened)" in text
    assert "result     FAILED" in text
