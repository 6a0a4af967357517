"""``a402 demo`` act 2 (``--act agents``): agents find each other on-chain, pay over A2A, rate.

The act checks itself (money conserved, each honest agent paid once at its on-chain
price, the compromised one refused before any payment, feedback stored as given);
these tests hold it to what its summary claims, and show the check can fail.
"""

from __future__ import annotations

import dataclasses
import io
import re

import pytest

import a402.demos.agents as act
from a402.demos.agents import run_agents_act


def test_the_planner_finds_verifies_pays_and_rates_the_honest_agents_only() -> None:
    out = io.StringIO()
    assert run_agents_act(out) == 0
    text = out.getvalue()
    assert "result     OK" in text

    # Discovery: cheapest first, so the compromised agent was tried and refused by field.
    refused = [line for line in text.splitlines() if "REFUSED" in line]
    assert len(refused) == 1
    assert "Cheap Weather" in refused[0] and ".params.payTo: served" in refused[0]
    assert text.count("verified, used") == 2

    # Payments: one settlement per honest agent, at its price; the attacker got nothing.
    assert len(set(re.findall(r"0x[0-9a-f]{64}", text))) == 2
    balances = {m[0].strip(): m[1] for m in re.findall(
        r"^(planner|Weather Now payee|SkyQuote payee|Cheap Weather payee|attacker|total)"
        r"\s+\S+\s+\S+\s+(\S+)$", text, flags=re.MULTILINE)}
    assert balances == {"planner": "-0.007000", "Weather Now payee": "+0.002000",
                        "SkyQuote payee": "+0.005000", "Cheap Weather payee": "+0.000000",
                        "attacker": "+0.000000", "total": "+0.000000"}

    # Reputation: the planner's feedback, as the registry summarises it.
    assert re.search(r"Weather Now\s+#\d+\s+90\s+1 x 90\s+0x[0-9a-f]{64}", text)
    assert re.search(r"SkyQuote\s+#\d+\s+80\s+1 x 80\s+0x[0-9a-f]{64}", text)
    assert re.search(r"Cheap Weather\s+#\d+\s+-\s+no feedback", text)


def test_the_act_reports_failure_when_nothing_is_refused(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """With the cheap agent's server left honest, the planner pays it: the act's own check
    (one refusal, the compromised agent never paid) must then say FAILED."""
    honest = tuple(dataclasses.replace(s, compromised=False) for s in act.SPECS)
    monkeypatch.setattr(act, "SPECS", honest)
    out = io.StringIO()
    assert run_agents_act(out) == 1
    assert "REFUSED" not in out.getvalue()
    assert out.getvalue().rstrip().endswith("FAILED")
