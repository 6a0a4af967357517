"""A command line ``a402`` refuses says the money state on its first line, like every failure.

Through the real executable, in an empty folder: a service (gateway, vault, facilitator,
indexer) refused at its command line was not started and paid nothing; a paying command
paid nothing; a vault-mode action moved nothing. Exit 2, the usage after the first line,
no traceback, no file written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("A402_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "a402.cli", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "first"), [
    (("gateway", "--port", "abc"),
     "a402 gateway: not started, nothing was paid (usage): argument --port: invalid int "
     "value: 'abc'"),
    (("gateway", "--upstream", "http://127.0.0.1:9"),
     "a402 gateway: not started, nothing was paid (usage): the following arguments are "
     "required: --facilitator"),
    (("vault",),
     "a402 vault: not started, nothing was paid (usage): the following arguments are "
     "required: --rpc, --key-file, --provider-measurement"),
    (("facilitator", "--key-file", "gas.key"),
     "a402 facilitator: not started, nothing was paid (usage): the following arguments are "
     "required: --rpc"),
    (("pay",), "a402 pay: nothing was paid (usage): the following arguments are required: "
               "url, --key-file"),
    (("pay", "http://127.0.0.1:9/x", "--key-file", "k", "--nope"),
     "a402 pay: nothing was paid (usage): unrecognized arguments: --nope"),
    (("vault", "deposit"), "a402 vault ACTION: nothing was moved (usage): the following "
                           "arguments are required: --key-file"),
    (("nosuch",), "a402: nothing was run (usage): argument COMMAND: invalid choice: 'nosuch'"),
])
def test_a_refused_command_line_says_first_that_nothing_was_paid(
    tmp_path: Path, args: tuple[str, ...], first: str,
) -> None:
    run = _run(tmp_path, *args)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines[0].startswith(first), run.stderr
    assert lines[1].startswith("usage: ")
    assert run.stdout == "" and list(tmp_path.iterdir()) == []


def test_an_indexer_console_without_an_operator_token_is_not_started(tmp_path: Path) -> None:
    run = _run(tmp_path, "indexer", "--rpc", "http://127.0.0.1:9", "--factory",
               "0x" + "11" * 20, "--console")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("a402 indexer: not started, nothing was paid (usage): "
                                 "--console needs --operator-token"), run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "first"), [
    (("payments", "--facilitator", "http://127.0.0.1:9", "--operator-token", "a" * 20),
     "a402 payments: nothing moved (service_unavailable): could not reach "
     "http://127.0.0.1:9"),
    (("receipt", "0x1234"), "a402 receipt: nothing moved (not_found): no payment '0x1234'"),
    (("mandate", "revoke", "missing.json", "--owner-key-file", "owner.key"),
     "a402 mandate revoke: nothing changed, the mandate is NOT revoked (usage): cannot read "
     "mandate missing.json"),
    (("mandate", "list"), "a402 mandate list: nothing changed (usage): no spend store at "
                          "sqlite:///.a402/<chain id>/mandates.db for any chain"),
    (("audit",), "a402 audit: nothing to check: no spend store at "
                 "sqlite:///.a402/<chain id>/mandates.db for any chain"),
])
def test_a_read_or_owner_command_that_fails_says_first_that_nothing_moved(
    tmp_path: Path, args: tuple[str, ...], first: str,
) -> None:
    run = _run(tmp_path, *args)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0].startswith(first), run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_program_is_named_by_its_message_not_as_none() -> None:
    """``find_anvil`` raises FileNotFoundError with a message and no file name (a user who
    ran only ``make demo`` has no anvil): the failure line must say what is missing and how
    to get it, not "None: no such file"."""
    from a402.failure import expected_failure

    failure = expected_failure(FileNotFoundError("anvil not found: run `npm ci` in the project"))
    assert failure is not None and failure.reason == "file_not_found"
    assert "anvil not found: run `npm ci`" in failure.message
    assert "None" not in failure.message
    named = expected_failure(FileNotFoundError(2, "No such file or directory", "x.key"))
    assert named is not None and named.message == "x.key: no such file"
