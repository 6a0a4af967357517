"""``a402 demo --act bitcoin``: the act runs, checks itself and prints each transaction."""

from __future__ import annotations

import io

from a402.bitcoin.costs import run_lifecycles
from a402.demos.exact import run_demo


def test_the_bitcoin_act_pays_through_the_channel_and_prints_every_validated_transaction() -> None:
    out = io.StringIO()
    assert run_demo(out=out, act="bitcoin", channel_requests=3) == 0
    text = out.getvalue()
    for name in ("U.createASC", "U.closeASC", "S.forceClose", "C.forceClose",
                 "U.settleVault", "C/S.forceSettle", "x402 tx1 (escrow)"):
        assert name in text
    assert "vault credited 3,000 sat, opened 3 results" in text
    assert "ok: every transaction validated" in text


def test_the_lifecycle_sizes_are_those_of_the_serialised_transactions() -> None:
    run = run_lifecycles(requests=2, price=500)
    assert run.provider_balance == 1_000 and run.results_opened == 2
    for m in run.transactions.values():
        assert m.fee == m.vsize * 10
    # The provider's force close and the client's stay at or below the paper's figures.
    assert run.vb("S.forceClose") <= 208 and run.vb("C.forceClose") <= 192
