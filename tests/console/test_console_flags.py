"""``--console`` on each service's command: without ``--operator-token`` it is refused
with a clear message and exit 2, before any key, chain or port is touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

UNREACHABLE = "http://127.0.0.1:9"
COMMANDS = {
    "facilitator": ["--key-file", "/nonexistent/key", "--rpc", UNREACHABLE],
    "vault": ["--key-file", "/nonexistent/key", "--rpc", UNREACHABLE,
              "--provider-measurement", "00"],
    "gateway": ["--upstream", UNREACHABLE, "--route", "GET /x=1", "--facilitator", UNREACHABLE,
                "--pay-to", "0x" + "11" * 20, "--network", "eip155:31337",
                "--asset", "0x" + "22" * 20],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_console_without_an_operator_token_is_refused(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "a402.cli", command, "--console",
                           *COMMANDS[command]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--console needs --operator-token" in done.stderr
    assert "Traceback" not in done.stderr
