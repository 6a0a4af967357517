"""What ``a402 --help`` and ``a402 pay`` load: only the chosen sub-command's modules.

Checked in a fresh interpreter (``sys.modules`` of this one holds everything the
other tests imported). Not timed: the figures are in ``bench/startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from a402.cli import COMMANDS, build_parser

_PROBE = """
import contextlib, io, json, sys
from a402.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules
                        if m.split('.')[0] in ('web3', 'sqlalchemy', 'a402'))))
"""


def _modules_loaded_by(*argv: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True,
                         text=True, check=True, timeout=60)
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


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
