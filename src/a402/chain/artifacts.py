"""Compiled contracts shipped inside the package.

Artifacts are produced by ``scripts/compile_contracts.mjs`` from ``contracts/``
and committed, so that installing a402 never needs Node or solc; a test
recompiles the sources and compares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """The ABI and creation bytecode of contract ``name``; KeyError if absent."""
    file = resources.files(__package__).joinpath("artifacts", f"{name}.json")
    if not file.is_file():
        raise KeyError(f"no compiled artifact for contract {name!r}")
    data = json.loads(file.read_text())
    return Artifact(name=name, abi=data["abi"], bytecode=data["bytecode"])
