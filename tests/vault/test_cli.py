"""``a402 vault`` from the command line: a devnet manifest is enough to find the ASCManager,
simulated attestation must be asked for, and a database is bound to one vault."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from a402.chain.deploy import deploy_dev_stack
from a402.chain.node import start_anvil
from a402.tee import SimulatedPlatform
from a402.vault.identity import save_platform
from tests.a402_exchange.helpers import PROVIDER_CODE

from .helpers import wait_for

pytestmark = pytest.mark.anvil


def _vault(*args: str) -> list[str]:
    return [sys.executable, "-m", "a402.cli", "vault", *args]


def test_the_vault_command_runs_from_a_devnet_manifest(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    with start_anvil(accounts=5) as chain:
        manifest = deploy_dev_stack(chain, asc_manager=True)
        manifest_path = tmp_path / "devnet.json"
        manifest_path.write_text(manifest.to_json())
        key = tmp_path / "vault.key"
        key.write_text(manifest.account("client", 1).private_key)
        key.chmod(0o600)
        platform = tmp_path / "platform.json"
        save_platform(SimulatedPlatform.generate(), platform)
        port, db = reserve_port(), f"sqlite:///{tmp_path}/vault.db"
        common = ["--rpc", str(chain.rpc_url), "--key-file", str(key), "--manifest",
                  str(manifest_path), "--db", db, "--platform-file", str(platform),
                  "--provider-measurement", PROVIDER_CODE.hex()]

        refused = subprocess.run(_vault(*common, "--port", str(port)), capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 2 and "--allow-simulated-attestation" in refused.stderr

        proc = subprocess.Popen(_vault(*common, "--port", str(port),
                                       "--allow-simulated-attestation"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            info = wait_for(lambda: _info(port), what="the vault")
        finally:
            proc.terminate()
            proc.wait(10)
        assert (info["ascManager"], info["network"]) == (manifest.contracts["ASCManager"],
                                                         manifest.network)
        # The vault is its enclave's key; the key file only pays gas.
        assert info["vault"] not in (manifest.account("client", 1).address, None)

        other = tmp_path / "other.key"
        other.write_text(Account.create().key.hex())
        other.chmod(0o600)
        taken = subprocess.run(
            _vault(*[str(other) if a == str(key) else a for a in common], "--port",
                   str(reserve_port()), "--allow-simulated-attestation"),
            capture_output=True, text=True, timeout=60)
    assert taken.returncode == 2 and "belongs to vault" in taken.stderr


def _info(port: int) -> dict[str, object] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=1).json()
    except httpx.HTTPError:
        return None
