"""What ``a402 --help`` and ``a402 pay`` load: only the chosen sub-command's modules.

Checked in a fresh interpreter (``sys.modules`` of this one holds everything the
other tests imported). Not timed: the figures are in ``bench/startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from a402.cli import COMMANDS, build_parser
from tests.servers import dead_url

_PROBE = """
import json, sys
from a402.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in
                                     ('web3', 'sqlalchemy', 'eth_account', 'a402'))),
      file=sys.stderr)
"""


def _modules_loaded_by(*argv: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True,
                         text=True, check=True, timeout=60)
    (line,) = [text for text in run.stderr.splitlines() if text.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


def test_importing_the_cli_loads_no_web3_and_no_command_module() -> None:
    loaded = _modules_loaded_by("--version")
    assert not any(m.startswith("web3") for m in loaded)
    assert not any(m.startswith(("a402.agents", "a402.vault", "a402.facilitator",
                                 "a402.provider", "a402.client")) for m in loaded)


def test_help_lists_every_command_without_importing_any() -> None:
    loaded = _modules_loaded_by("--help")
    assert not any(m.startswith(("web3", "sqlalchemy", "a402.agents", "a402.provider"))
                   for m in loaded)
    run = subprocess.run([sys.executable, "-m", "a402.cli", "--help"], capture_output=True,
                         text=True, check=True, timeout=60)
    for command in COMMANDS:
        assert f"    {command.name} " in run.stdout


def test_pay_help_loads_neither_web3_nor_the_indexer_nor_a_database() -> None:
    loaded = _modules_loaded_by("pay", "--help")
    assert "a402.client.pay" in loaded
    assert not any(m.startswith(("web3", "sqlalchemy", "a402.agents", "a402.provider",
                                 "a402.facilitator", "a402.vault")) for m in loaded)


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_each_command_parses_its_help_when_chosen_alone(command: str) -> None:
    parser = build_parser([command])
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([command, "--help"])
    assert stop.value.code == 0


def test_a_pay_that_signs_nothing_loads_neither_web3_nor_eth_account(tmp_path: Path) -> None:
    """The whole exact path up to the request (key file, limits, the httpx client): the
    key is parsed and its address derived with coincurve, not eth_account."""
    key = tmp_path / "payer.key"
    key.write_text("0x" + "11" * 32)
    key.chmod(0o600)
    loaded = _modules_loaded_by("pay", dead_url() + "/x", "--key-file", str(key))
    assert "a402.client.auth" in loaded and "a402.client.wallet" in loaded
    assert not any(m.startswith(("web3", "eth_account", "sqlalchemy", "a402.client.vault",
                                 "a402.agents")) for m in loaded)
