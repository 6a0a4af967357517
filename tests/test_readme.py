"""The README stays true: its code imports what exists, its commands parse, its
make targets exist. (The behaviour behind them is tested elsewhere.)"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

from a402.cli import build_parser
from a402.vault.mode_command import ACTIONS as VAULT_ACTIONS
from a402.vault.mode_command import build_parser as vault_action_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def commands() -> list[str]:
    joined = "\n".join(blocks("sh")).replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in joined.splitlines()
            if line.strip().startswith(("a402 ", "make "))]


@pytest.mark.parametrize("code", blocks("python"))
def test_python_examples_compile_and_import_real_names(code: str) -> None:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


@pytest.mark.parametrize("code", blocks("python"))
def test_python_examples_use_only_the_public_api_of_package_roots(code: str) -> None:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("a402"):
            assert node.module and node.module.count(".") == 1, f"{node.module}: not a root"
            public = importlib.import_module(node.module).__all__
            for alias in node.names:
                assert alias.name in public, f"{node.module}.{alias.name} is not in __all__"


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("a402 ")])
def test_cli_examples_parse(command: str) -> None:
    argv = shlex.split(command)[1:]
    if argv[:1] == ["vault"] and argv[1:2] and argv[1] in VAULT_ACTIONS:  # a402.cli.main
        vault_action_parser().parse_args(argv[1:])
    else:
        build_parser().parse_args(argv)


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {c.split()[1] for c in commands() if c.startswith("make ")}
    assert {"demo", "test"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
