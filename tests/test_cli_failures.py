"""Expected failures of the ``a402`` services, case by case, through the real executable.

Each case runs ``python -m a402.cli ...`` in an empty folder and checks three things: the
one line on stderr names the reason (after the money state: a service that did not start
paid nothing), there is no traceback, and nothing changed: no database file was created
and, where a chain is involved, its block number did not move.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from tests.servers import dead_url

pytestmark = pytest.mark.anvil

SRC = str(Path(__file__).resolve().parents[1] / "src")


def a402(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "a402.cli", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def refused(run: subprocess.CompletedProcess[str], command: str, reason: str) -> str:
    """The failure line, after checking it is the only output, names ``reason``, says
    first that nothing was paid, and comes with exit code 2 and no traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"a402 {command}: not started, nothing was paid ({reason}): "), \
        run.stderr
    assert f'"{command}": "http' not in run.stderr  # never announced as ready
    return lines[-1]


def no_files_but(folder: Path, *expected: str) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(expected)


@pytest.fixture
def folder(tmp_path: Path, dev_stack: Manifest) -> Path:
    """An empty working folder with the devnet's manifest and a facilitator key file."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "devnet.json").write_text(dev_stack.to_json())
    key = work / "gas.key"
    key.write_text(dev_stack.account("facilitator").private_key)
    key.chmod(0o600)
    return work


@pytest.fixture
def listening() -> Iterator[int]:
    """A loopback port something is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_facilitator_with_a_missing_key_file(
        folder: Path, anvil_chain: Chain, reserve_port: Callable[[], int]) -> None:
    run = a402(folder, "facilitator", "--rpc", str(anvil_chain.rpc_url),
               "--key-file", "absent.key", "--port", str(reserve_port()))
    assert "absent.key" in refused(run, "facilitator", "key_file_unreadable")
    assert no_files_but(folder, "devnet.json", "gas.key")


@pytest.mark.parametrize("command", ["facilitator", "vault", "indexer"])
def test_a_service_whose_rpc_does_not_answer(
        folder: Path, command: str, reserve_port: Callable[[], int]) -> None:
    rpc = dead_url()
    args = {
        "facilitator": ["--key-file", "gas.key"],
        "vault": ["--key-file", "gas.key", "--manager", "0x" + "22" * 20,
                  "--provider-measurement", "00" * 32, "--allow-simulated-attestation"],
        "indexer": ["--factory", "0x" + "11" * 20],
    }[command]
    run = a402(folder, command, "--rpc", rpc, "--port", str(reserve_port()), *args)
    assert rpc in refused(run, command, "chain_unavailable")
    assert no_files_but(folder, "devnet.json", "gas.key")  # no journal, store or index


def test_gateway_with_a_missing_manifest(folder: Path, reserve_port: Callable[[], int]) -> None:
    run = a402(folder, "gateway", "--upstream", "http://127.0.0.1:9", "--route",
               "GET /x=0.01", "--facilitator", dead_url(), "--manifest", "absent.json",
               "--port", str(reserve_port()))
    assert "a402 devnet" in refused(run, "gateway", "manifest_not_found")
    assert no_files_but(folder, "devnet.json", "gas.key")


def test_gateway_refuses_a_network_that_contradicts_its_manifest(
        folder: Path, reserve_port: Callable[[], int]) -> None:
    run = a402(folder, "gateway", "--upstream", "http://127.0.0.1:9", "--route",
               "GET /x=0.01", "--facilitator", dead_url(), "--manifest", "devnet.json",
               "--network", "eip155:84532", "--port", str(reserve_port()))
    assert "--network eip155:84532" in refused(run, "gateway", "conflicting_options")
    assert no_files_but(folder, "devnet.json", "gas.key")


def test_indexer_before_the_agent_contracts_are_deployed(folder: Path,
                                                         anvil_chain: Chain) -> None:
    run = a402(folder, "indexer", "--rpc", str(anvil_chain.rpc_url), "--suite", "devnet.json",
               "--once")
    assert "a402 agents deploy" in refused(run, "indexer", "agents_not_deployed")
    assert no_files_but(folder, "devnet.json", "gas.key")


@pytest.mark.parametrize("command", ["facilitator", "gateway", "indexer"])
def test_a_service_on_a_busy_port_says_so_before_announcing_itself(
        folder: Path, anvil_chain: Chain, listening: int, command: str) -> None:
    args = {
        "facilitator": ["--rpc", str(anvil_chain.rpc_url), "--key-file", "gas.key"],
        "gateway": ["--upstream", "http://127.0.0.1:9", "--route", "GET /x=0.01",
                    "--facilitator", dead_url(), "--manifest", "devnet.json"],
        "indexer": ["--rpc", str(anvil_chain.rpc_url), "--factory", "0x" + "11" * 20],
    }[command]
    run = a402(folder, command, *args, "--port", str(listening), timeout=60)
    assert f"127.0.0.1:{listening} is already in use" in refused(run, command, "port_in_use")
    assert no_files_but(folder, "devnet.json", "gas.key")


def test_devnet_on_the_port_of_a_running_chain_deploys_nothing(
        folder: Path, anvil_chain: Chain) -> None:
    port = int(str(anvil_chain.rpc_url).rsplit(":", 1)[1])
    head = anvil_chain.w3.eth.block_number
    run = a402(folder, "devnet", "--port", str(port), "--manifest-out", "out/devnet.json")
    refused(run, "devnet", "port_in_use")
    assert anvil_chain.w3.eth.block_number == head  # no second token, no second manager
    assert not (folder / "out").exists()


def test_devnet_never_writes_over_the_manifest_of_a_running_chain(
        folder: Path, anvil_chain: Chain, reserve_port: Callable[[], int]) -> None:
    before = (folder / "devnet.json").read_text()
    run = a402(folder, "devnet", "--port", str(reserve_port()), "--manifest-out", "devnet.json")
    assert str(anvil_chain.rpc_url) in refused(run, "devnet", "manifest_in_use")
    assert (folder / "devnet.json").read_text() == before
    assert no_files_but(folder, "devnet.json", "gas.key")  # no key file written either


def test_a_vault_whose_sealed_identity_another_build_made_says_so_without_a_traceback(
        folder: Path, anvil_chain: Chain, dev_stack: Manifest,
        reserve_port: Callable[[], int]) -> None:
    """An upgraded a402 measures differently: the vault's identity, sealed in its database
    by the build before, does not open. The vault does not start, says why in one line,
    and that the clients' pool balances stay withdrawable without it."""
    from a402.tee.identity import load_platform
    from a402.vault.identity import vault_enclave
    from a402.vault.store import VaultStore

    platform_file, db = folder / "platform.json", f"sqlite:///{folder / 'vault.db'}"
    store = VaultStore(db)
    sealed_by = vault_enclave(load_platform(platform_file), b"\x01" * 48, store)
    assert sealed_by.signing_public_key  # the identity is now in the database
    store.engine.dispose()
    run = a402(folder, "vault", "--rpc", str(anvil_chain.rpc_url), "--key-file", "gas.key",
               "--manager", "0x" + "22" * 20, "--db", db,
               "--platform-file", str(platform_file), "--measurement", "02" * 48,
               "--provider-measurement", "00" * 32, "--allow-simulated-attestation",
               "--port", str(reserve_port()))
    line = refused(run, "vault", "sealed_identity_unreadable")
    assert "0x" + "02" * 48 in line and "another build or platform" in line
    assert "a402 pool withdraw" in line
