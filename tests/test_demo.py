"""``a402 demo`` (what ``make demo`` runs) completes and proves conservation."""

import io

from a402.demos.exact import run_demo


def test_the_demo_pays_every_request_once_and_conserves_balances() -> None:
    out = io.StringIO()
    assert run_demo(requests=3, out=out, act="exact") == 0
    text = out.getvalue()
    assert "OK: every request paid once, balances conserved" in text
    assert text.count("GET /weather/") == 3
    assert "-0.003000" in text and "+0.003000" in text
