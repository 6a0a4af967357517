"""The committed artifacts are exactly what the pinned compiler makes of the sources."""

import shutil
import subprocess
from pathlib import Path

import pytest

from a402.chain.artifacts import load_artifact

ROOT = Path(__file__).resolve().parents[2]


def test_recompiling_the_sources_reproduces_the_committed_artifacts() -> None:
    if not (ROOT / "node_modules" / "solc").is_dir() or not shutil.which("node"):
        pytest.fail("node and node_modules/solc are needed: run `npm ci` (make test does)")
    result = subprocess.run(
        ["node", "scripts/compile_contracts.mjs", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "match their sources" in result.stdout


def test_every_source_contract_has_a_packaged_artifact() -> None:
    for name in ("TestUSDC", "ERC1271Wallet"):
        artifact = load_artifact(name)
        assert artifact.bytecode.startswith("0x6")
        assert any(item.get("type") == "constructor" for item in artifact.abi)


def test_an_unknown_artifact_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="NoSuchContract"):
        load_artifact("NoSuchContract")
