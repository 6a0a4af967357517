"""``a402 mcp serve`` refused before it serves says the money state first, as every other
command does: ``a402 mcp serve: not started, nothing was paid (REASON): ...``, exit 2, no
traceback, nothing announced (a paywall that never served took no payment)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import a402
from a402.chain.deploy import Manifest
from a402.cli import main

FIRST = "a402 mcp serve: not started, nothing was paid"
UPSTREAM = ["--upstream", "http://127.0.0.1:1/mcp"]


@pytest.fixture
def manifest_file(tmp_path: Path, dev_stack: Manifest) -> str:
    path = tmp_path / "devnet.json"
    path.write_text(dev_stack.to_json())
    return str(path)


def _first_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(["mcp", "serve", "--facilitator", "http://127.0.0.1:1", *args])
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert '"mcp":' not in captured.err  # never announced
    return captured.err.splitlines()[0]


@pytest.mark.parametrize(("args", "reason", "message"), [
    (["--port", "abc"], "usage", "argument --port: invalid int value: 'abc'"),
    (["--tool", "forecast=0.001"], "usage", "give exactly one of --upstream URL and"),
    ([*UPSTREAM, "--upstream-command", "python x.py", "--tool", "forecast=0.001"], "usage",
     "give exactly one of --upstream URL and"),
    (UPSTREAM, "no_tools", "price at least one tool"),
    ([*UPSTREAM, "--tool", "forecast=0.001"], "usage",
     "give --manifest, or --asset, --network and --pay-to"),
    ([*UPSTREAM, "--tool", "forecast=lots", "--asset", "0x" + "11" * 20, "--network",
      "eip155:1", "--pay-to", "0x" + "22" * 20], "bad_price", "price 'lots' is not"),
    ([*UPSTREAM, "--tool", "forecast=0.001", "--manifest", "/nonexistent/devnet.json"],
     "manifest_not_found", "/nonexistent/devnet.json"),
])
def test_a_refused_mcp_serve_says_first_that_nothing_was_paid(
    args: list[str], reason: str, message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    first = _first_line(args, capsys)
    assert first.startswith(f"{FIRST} ({reason}): "), first
    assert message in first, first


@pytest.mark.anvil
def test_conflicting_options_and_a_taken_port_say_it_too(
    manifest_file: str, capsys: pytest.CaptureFixture[str],
) -> None:
    first = _first_line([*UPSTREAM, "--tool", "forecast=0.001", "--manifest", manifest_file,
                         "--network", "eip155:1"], capsys)
    assert first.startswith(f"{FIRST} (conflicting_options): "), first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = _first_line([*UPSTREAM, "--tool", "forecast=0.001", "--manifest",
                             manifest_file, "--port", str(port)], capsys)
    assert first.startswith(f"{FIRST} (port_in_use): "), first


def test_an_unknown_flag_says_the_paywall_was_not_started(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # argparse's top parser refuses what no parser knows: it is the mcp command's.
    first = _first_line([*UPSTREAM, "--nope"], capsys)
    assert first == "a402 mcp: not started, nothing was paid (usage): unrecognized " \
                    "arguments: --nope", first



@pytest.mark.parametrize("serving", ["http", "stdio"])
@pytest.mark.parametrize(("command", "cause"), [
    ("a402-no-such-upstream-command", "FileNotFoundError"),
    (f"{sys.executable} -c 'import sys; sys.exit(1)'", "Connection closed"),
])
def test_an_upstream_command_that_cannot_start_says_it_in_one_line(
    command: str, cause: str, serving: str,
) -> None:
    # The proxy starts the upstream before it serves (HTTP: before it listens; stdio:
    # before it reads its stdin): a command that does not exist, or exits before the MCP
    # handshake, refuses the start in one line with a reason (not the server's traceback
    # and its exit 3), and the proxy never said it was ready. A process of its own: the
    # upstream's stderr is this process's, which pytest's capture has not.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "a402.cli", "mcp", "serve", "--facilitator",
         "http://127.0.0.1:1", "--upstream-command", command, "--tool", "forecast=0.001",
         "--asset", "0x" + "11" * 20, "--network", "eip155:1", "--pay-to", "0x" + "22" * 20,
         *(["--port", str(port)] if serving == "http" else ["--stdio"])],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(a402.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr and '"mcp":' not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{FIRST} (upstream_failed): the upstream MCP server "), lines
    assert cause in lines[0], lines
