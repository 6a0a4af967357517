"""Configuration: every flag also from ``A402_*`` variables and one TOML file, with the
precedence flags > environment > file > defaults; ``a402 config show``; and SQLite files
in one folder per chain (``.a402/<chain id>/``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from a402.chain.node import Chain
from a402.facilitator.command import add_facilitator_arguments
from a402.provider.command import add_gateway_arguments
from a402.settings import ConfigError, ConfigFile, chain_data_url, configure, load_config

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _facilitator(environ: dict[str, str], tables: dict[str, object], *argv: str):
    import argparse

    parser = argparse.ArgumentParser(prog="a402 facilitator")
    add_facilitator_arguments(parser)
    sources = configure(parser, "facilitator", environ=environ,
                        config=ConfigFile(Path("a402.toml"), tables))
    return parser.parse_args(list(argv)), {s.dest: s.origin for s in sources}


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() -> None:
    file = {"facilitator": {"port": 5001, "host": "0.0.0.0", "rpc": "http://file:8545",
                            "key-file": "file.key"}}
    env = {"A402_FACILITATOR_PORT": "5002", "A402_FACILITATOR_HOST": "127.0.0.2"}
    args, origin = _facilitator(env, file, "--port", "5003")
    assert args.port == 5003  # the flag
    assert args.host == "127.0.0.2" and origin["host"] == "env A402_FACILITATOR_HOST"
    assert args.rpc == "http://file:8545" and origin["rpc"] == "file a402.toml"
    assert args.key_file == "file.key"  # a dashed key names the flag as well
    assert args.db == "sqlite:///.a402/{chain_id}/facilitator.db"
    assert origin["db"] == "default"
    args, _ = _facilitator(env, file)
    assert args.port == 5002  # without the flag: the environment


def test_a_required_flag_may_come_from_the_environment_alone() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="a402 facilitator")
    add_facilitator_arguments(parser)
    with pytest.raises(SystemExit):  # --rpc and --key-file are required ...
        parser.parse_args([])
    args, _ = _facilitator({"A402_FACILITATOR_RPC": "http://env:8545",
                            "A402_FACILITATOR_KEY_FILE": "env.key"}, {})
    assert (args.rpc, args.key_file) == ("http://env:8545", "env.key")  # ... unless set


def test_a_repeatable_flag_on_the_command_line_replaces_the_configured_list() -> None:
    import argparse

    def parse(env: dict[str, str], *argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="a402 gateway")
        add_gateway_arguments(parser)
        configure(parser, "gateway", environ=env, config=ConfigFile(Path("a402.toml"), {
            "gateway": {"route": ["GET /a=0.01", "GET /b=0.02"], "upstream": "http://u",
                        "facilitator": "http://f", "settle-before-serve": True}}))
        return parser.parse_args(list(argv))

    assert parse({}).route == ["GET /a=0.01", "GET /b=0.02"]
    assert parse({}, "--route", "GET /c=1").route == ["GET /c=1"]
    assert parse({"A402_GATEWAY_ROUTE": '["GET /d=1", "GET /e=2"]'}).route == [
        "GET /d=1", "GET /e=2"]
    # A switch the file turns on is turned off by --no-FLAG.
    assert parse({}).settle_before_serve is True
    assert parse({}, "--no-settle-before-serve").settle_before_serve is False
    assert parse({"A402_GATEWAY_SETTLE_BEFORE_SERVE": "false"}).settle_before_serve is False


@pytest.mark.parametrize(("env", "tables", "said"), [
    ({}, {"facilitator": {"prot": 1}}, "no such setting: prot"),
    ({"A402_FACILITATOR_PORT": "eighty"}, {}, "A402_FACILITATOR_PORT"),
    ({}, {"facilitator": {"port": [1, 2]}}, "list is not a value"),
    ({}, {"facilitator": {"host": True}}, "bool is not a value"),
])
def test_a_wrong_setting_is_refused_with_where_it_is(env: dict[str, str],
                                                     tables: dict[str, object],
                                                     said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        _facilitator(env, tables)


def test_the_config_file_is_found_or_named(tmp_path: Path) -> None:
    assert load_config({}, tmp_path).path is None
    (tmp_path / ".a402").mkdir()
    (tmp_path / ".a402" / "config.toml").write_text('[pay]\nmax = "0.02"\n')
    assert load_config({}, tmp_path).table("pay") == {"max": "0.02"}
    with pytest.raises(ConfigError, match="no such file"):
        load_config({"A402_CONFIG": "absent.toml"}, tmp_path)
    (tmp_path / "broken.toml").write_text("[pay\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config({"A402_CONFIG": "broken.toml"}, tmp_path)


def _a402(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "a402.cli", *args], cwd=folder,
                          env={**os.environ, "PYTHONPATH": SRC, **env}, capture_output=True,
                          text=True, timeout=60)


def test_config_show_says_where_each_value_comes_from_and_masks_passwords(
        tmp_path: Path) -> None:
    (tmp_path / "a402.toml").write_text(
        '[facilitator]\ndb = "postgresql+psycopg://alice:s3cret@db/pay"\n\n'
        '[agents.search]\nmax-price = "0.5"\n')
    run = _a402(tmp_path, "config", "show", "--json", A402_FACILITATOR_PORT="4999")
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["configFile"] == str(tmp_path / "a402.toml")
    rows = {(r["command"], r["flag"]): (r["value"], r["from"]) for r in shown["settings"]}
    assert rows[("facilitator", "--port")] == (4999, "env A402_FACILITATOR_PORT")
    assert rows[("facilitator", "--db")] == ("postgresql+psycopg://alice:***@db/pay",
                                             f"file {tmp_path / 'a402.toml'}")
    assert rows[("agents search", "--max-price")][0] == "0.5"
    assert "s3cret" not in run.stdout
    table = _a402(tmp_path, "config", "show", "facilitator")
    assert "--host" in table.stdout and "default" in table.stdout


def test_a_bad_config_file_stops_every_command_before_it_runs(tmp_path: Path) -> None:
    (tmp_path / "a402.toml").write_text("[facilitator]\nprot = 4021\n")
    run = _a402(tmp_path, "facilitator")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("a402: nothing was run (config_invalid): ")
    assert "no such setting: prot" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a402.toml"]


@pytest.mark.anvil
def test_a_service_configured_by_file_and_environment_keeps_its_data_per_chain(
        tmp_path: Path, anvil_chain: Chain) -> None:
    (tmp_path / "a402.toml").write_text(
        f'[indexer]\nrpc = "{anvil_chain.rpc_url}"\nfactory = ["0x{"11" * 20}"]\n')
    run = _a402(tmp_path, "indexer", A402_INDEXER_ONCE="1")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / ".a402" / str(anvil_chain.chain_id) / "indexer.db").is_file()
    assert not (tmp_path / "a402-indexer.db").exists()


def test_a_per_chain_default_keeps_using_the_file_it_replaced(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    default = "sqlite:///.a402/{chain_id}/vault.db"
    assert chain_data_url(default, 31337, legacy="sqlite:///a402-vault.db") == \
        "sqlite:///.a402/31337/vault.db"
    assert (tmp_path / ".a402" / "31337").is_dir()
    assert chain_data_url(default, 84532) == "sqlite:///.a402/84532/vault.db"
    (tmp_path / "a402-vault.db").write_bytes(b"")  # a vault upgraded in place
    said: list[str] = []
    assert chain_data_url(default, 1, legacy="sqlite:///a402-vault.db",
                          warn=said.append) == "sqlite:///a402-vault.db"
    assert "move it to .a402/1/vault.db" in said[0]
    assert chain_data_url("postgresql://h/db", 1) == "postgresql://h/db"


def test_what_the_commands_generate_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[1]
    generated = [".a402/31337/vault.db", ".a402/devnet.json", ".a402/client.key",
                 "a402-facilitator.db", "a402-vault.db-wal", "bench/results/startup.json"]
    run = subprocess.run(["git", "check-ignore", "--no-index", *generated], cwd=root,
                         capture_output=True, text=True)
    if run.returncode == 128:
        pytest.skip("not a git checkout")
    assert sorted(run.stdout.split()) == sorted(generated)
