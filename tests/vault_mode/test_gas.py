"""Gas budgets of A402Vault, measured by ``bench/vault_gas.py`` on a private anvil, against
issue 13's targets: ≤ 15,000 gas per participant for a settlement of 100 (met, whether or not
the vault paid them before); a participant's lifecycle (its deposit and its share of the
settlements) below the paper's 51,336, and, for 10,000 and 100,000 paid requests among 100
participants, ≥ 100× and ≥ 800× less gas than x402 ``exact``.

All three are met when participants deposit by a plain token ``transfer`` to the vault (the
paper's initVault: no contract record), which the enclave reads from receipt proofs and a
settlement anchors (contract docs, "Plain transfers"): the transfer (~34,700) and its share
of the anchored settlement that pays it. A ``deposit`` (its ``deposited`` word: what pays it
back when the vault is dark without any proof) and a pull (the token's EIP-3009 nonce record,
22,100) cost more, and meet the totals but not the lifecycle. These budgets catch
regressions from there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from a402.chain.node import Chain

pytestmark = pytest.mark.anvil

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vault_gas.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vault_gas", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_settlement_gas_per_participant_meets_the_issues_targets(vault_chain: Chain) -> None:
    bench = load_bench()
    result = bench.measure(vault_chain, (1, 10, 100))
    at_100 = {row["payees"]: row for row in result["settlement"]}[100]
    assert at_100["first_per_payee"] <= bench.TARGET_PER_PARTICIPANT_AT_100
    assert at_100["later_per_payee"] <= 11_500
    gas = result["entry_points"]
    # A deposit (and a claim) folds the deposit chain (one storage word rewritten, ~5,400
    # gas): what makes the host's reports checkable on-chain (A402Vault, "Deposits and
    # claims are the chain's word").
    assert gas["deposit (later)"] <= 51_000
    assert gas["deposit (first, for a new participant)"] <= 68_000
    # With the participant's signed exit order; a statement counting a pull stores it (one
    # more word written) and its final reads the pull's bit.
    assert gas["initForceSettle"] <= 135_000
    assert gas["initForceSettle (statement counting a pull)"] <= 155_000
    assert gas["finalForceSettle"] <= 63_000
    assert gas["finalForceSettle (its pull not made)"] <= 65_500
    assert gas["claimPayment (provider, vault dark)"] <= 146_000
    assert gas["contestForceSettle (provider, vault dark)"] <= 126_000
    lifecycle = result["lifecycle"]
    assert lifecycle["plain transfer + share of the settlement confirming and paying it"] < (
        bench.PAPER["lifecycle"])
    assert lifecycle["first deposit + share of a settlement confirming it"] <= 84_000
    # A pull is the token's receiveWithAuthorization: its nonce record (a fresh slot, 22,100)
    # is most of the first settlement's share; nothing else is the participant's.
    assert lifecycle["pulled deposit + shares of its settlements"] <= 61_000
    totals = result["totals_100_participants"]
    assert totals["10000"]["ratio"] >= 80
    assert totals["100000"]["ratio"] >= 800
    assert totals["10000"]["ratio_pulls"] >= 100
    assert totals["100000"]["ratio_pulls"] >= 800
    assert totals["10000"]["ratio_transfers"] >= 100
    assert totals["100000"]["ratio_transfers"] >= 800
    assert "settle, payees" in bench.tables(result)
