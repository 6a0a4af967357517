"""Gas budgets of ASCManager, measured by ``bench/asc_gas.py`` on the test node.

The paper's Table 1 figures are the ceiling wherever a real ERC-20 escrow can
meet them (every force-close path); the cooperative lifecycle cannot (see the
bench's docstring and the report: two transactions' intrinsic gas plus one new
storage slot already exceed the paper's createASC), so it gets a budget of its
own that catches regressions.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from a402.chain.node import Chain

pytestmark = pytest.mark.anvil

BENCH = Path(__file__).resolve().parents[2] / "bench" / "asc_gas.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asc_gas", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_gas_stays_within_budget(asc_chain: Chain) -> None:
    bench = load_bench()
    gas = bench.measure(asc_chain)
    paper = bench.PAPER
    for name in ("forceClose (provider)", "initForceClose", "finalForceClose"):
        assert gas[name] <= paper[name], (name, gas[name])
    assert gas["forceClose (provider, during a dispute)"] <= paper["forceClose (provider)"]
    assert gas["challengeForceClose"] <= 45_000
    assert gas["createASC"] <= 82_000
    assert gas["closeASC"] <= 68_000
    assert gas["lifecycle (createASC + closeASC)"] <= 150_000
    assert "closeASC" in bench.table(gas)
