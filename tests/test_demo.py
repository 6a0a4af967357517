"""``a402 demo`` (what ``make demo`` runs) completes and proves conservation."""

import io
import logging

import pytest

from a402.demos.exact import run_demo
from a402.observe import PAID_LOGGER


def test_the_demo_pays_every_request_once_and_conserves_balances(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert run_demo(requests=3, out=out, act="exact") == 0
    # Its own table says what was paid; the services' JSON line per paid request (for
    # operators) is not printed over it, and is back on once the demo ends.
    assert "paid_request" not in capsys.readouterr().err
    assert not logging.getLogger(PAID_LOGGER).filters
    text = out.getvalue()
    assert "OK: every request paid once, balances conserved" in text
    assert text.count("GET /weather/") == 3
    assert "-0.003000" in text and "+0.003000" in text
