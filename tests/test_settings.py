"""Flags generated from a settings group (:mod:`a402.settings`): one per field, with the
field's name, type, default and help, and the group built back from the parsed flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

from a402.settings import add_flags, from_args, setting
from a402.vault.command import FLAG_GROUPS
from a402.vault.settings import Batching, Connections, Deposits, Timing


@dataclass(frozen=True, kw_only=True)
class Example:
    """An example group.

    Only this paragraph's first one is shown in --help."""

    url: str = setting(help="required: it has no default")
    wait: float = setting(1.5, help="seconds (default: %(default)s)")
    count: int | None = setting(None, help="how many")
    loud: bool = setting(False, help="a switch")
    tag: tuple[str, ...] = setting((), metavar="TAG", help="repeatable")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    add_flags(parser, Example, "example")
    return parser


def test_the_defaults_are_the_groups() -> None:
    args = _parser().parse_args(["--url", "u"])
    assert from_args(Example, args) == Example(url="u")
    assert args.tag == []  # a repeatable flag's namespace value is a list, as argparse's


def test_each_flag_has_its_fields_type() -> None:
    args = _parser().parse_args(["--url", "u", "--wait", "2", "--count", "3", "--loud",
                                 "--tag", "a", "--tag", "b"])
    assert from_args(Example, args) == Example(url="u", wait=2.0, count=3, loud=True,
                                               tag=("a", "b"))


def test_a_field_without_a_default_is_a_required_flag() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args([])


def test_help_lists_the_group_with_its_docstring_and_help_texts() -> None:
    text = _parser().format_help()
    assert "example:\n  An example group.\n" in text
    assert "seconds (default: 1.5)" in text and "--tag TAG" in text


def test_a_field_needs_help_and_a_type_a_flag_can_carry() -> None:
    @dataclass(frozen=True)
    class Undocumented:
        wait: float = 1.0

    @dataclass(frozen=True)
    class Unsupported:
        ratio: complex = setting(0j, help="no flag for this")

    @dataclass(frozen=True)
    class OnByDefault:
        on: bool = setting(True, help="a switch cannot turn it off")

    for group in (Undocumented, Unsupported, OnByDefault):
        with pytest.raises(TypeError):
            add_flags(argparse.ArgumentParser(), group, "bad")


def test_every_vault_setting_has_a_flag_whose_default_is_the_settings() -> None:
    parser = argparse.ArgumentParser()
    for title, group in FLAG_GROUPS:
        add_flags(parser, group, title)
    required = ["--rpc", "r", "--key-file", "k", "--provider-measurement", "00"]
    args = parser.parse_args(required)
    for group in (Timing, Deposits, Batching, Connections):
        assert from_args(group, args) == group()
        assert all(getattr(args, f.name) == getattr(group(), f.name) for f in fields(group))
