"""``a402 demo --act bitcoin``: an Atomic Service Channel on Bitcoin, paper Table 2 style.

Builds a Taproot channel, pays ``requests`` requests through the A402 adaptor exchange (the
ASC state machine of :mod:`a402.asc`, driven over :mod:`a402.bitcoin.exchange`), and
prints each closing transaction (hex, vB, fee at 10 sat/vB) and the vault-mode ones, each
validated by the node-free ledger of :mod:`a402.bitcoin.validate`, against 100 x402-style
payments (the paper's two-transaction escrow model). No Bitcoin node runs: see the README's
Bitcoin section for what the validation covers.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from a402.bitcoin.costs import (
    BTC_USD,
    FEE_RATE,
    PAPER_VB,
    PAPER_X402_100,
    REFUND_DELAY,
    run_lifecycles,
)

PRICE = 1_000  # sat per request

ORDER = (
    "U.createASC", "U.closeASC", "U.closeASC (2-of-2 leaf)", "S.forceClose", "C.forceClose",
    "U.initVault", "U.settleVault", "C/S.forceSettle",
    "x402 tx1 (escrow)", "x402 tx2 (finalise)",
)


def _usd(vb: int) -> str:
    return f"${vb * FEE_RATE * BTC_USD / 100_000_000:,.3f}"


def run_bitcoin_act(requests: int = 100, out: TextIO = sys.stdout) -> int:
    """Run the act; 0 only if every transaction validated and every result opened."""
    say = lambda line="": print(line, file=out, flush=True)  # noqa: E731
    say("a402 demo: Atomic Service Channels on Bitcoin (Taproot, validated without a node)\n")
    started = time.perf_counter()
    run = run_lifecycles(requests, PRICE)
    say("channel    P2TR, internal key MuSig2(U, S) (key path: cooperative close); leaf payment "
        f"<U> CHECKSIGVERIFY <S> CHECKSIG; leaf refund <{REFUND_DELAY}> CSV DROP <C> CHECKSIG")
    say(f"paid       {run.requests} requests x {PRICE:,} sat through the ASC state machine "
        "(a402.asc, as on EVM) over the BIP-341 settlement: "
        f"vault credited {run.provider_balance:,} sat, opened {run.results_opened} results")
    say(f"fees       {FEE_RATE} sat/vB, BTC ${BTC_USD:,} (as the paper's Table 2)\n")
    for name in ORDER:
        m = run.transactions[name]
        say(f"{name:<25} {m.vsize:>4} vB (base {m.base}, witness {m.witness_vb:g})  "
            f"fee {m.fee:,} sat {_usd(m.vsize)}   paper {PAPER_VB[name]} vB")
        say(f"  {m.raw.hex()}")
    standard = run.vb("U.createASC") + run.vb("U.closeASC")
    vault = run.vb("U.initVault") + run.vb("U.settleVault")
    per_request = run.vb("x402 tx1 (escrow)") + run.vb("x402 tx2 (finalise)")
    say()
    say(f"{'':<34} {'vB':>7} {'USD':>9}   paper vB")
    rows = [
        ("A402 standard lifecycle", standard, PAPER_VB["standard lifecycle"]),
        ("  closed by the 2-of-2 leaf instead", run.vb("U.createASC")
         + run.vb("U.closeASC (2-of-2 leaf)"), PAPER_VB["standard lifecycle"]),
        ("A402 vault lifecycle", vault, PAPER_VB["vault lifecycle"]),
        ("x402-style, per request", per_request, PAPER_VB["x402 per request"]),
        (f"x402-style, {run.requests} requests", per_request * run.requests,
         PAPER_VB["x402 per request"] * run.requests),
    ]
    for label, vb, paper in rows:
        say(f"{label:<34} {vb:>7,} {_usd(vb):>9}   {paper:,}")
    paper_x402 = PAPER_X402_100 * run.requests // 100
    say(f"\n{run.requests} requests: A402 standard {paper_x402 / standard:.1f}x, "
        f"vault {paper_x402 / vault:.1f}x cheaper than the paper's "
        f"x402 model ({paper_x402:,} vB); against the P2TR x402-style "
        f"transactions measured here: {per_request * run.requests / standard:.1f}x and "
        f"{per_request * run.requests / vault:.1f}x")
    ok = run.provider_balance == run.requests * PRICE and run.results_opened == run.requests
    say(f"\n{'ok' if ok else 'FAILED'}: every transaction validated by the ledger "
        f"({time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1
