"""Settings as small typed groups, and the command-line flags generated from them.

A group is a frozen dataclass whose fields are declared with :func:`setting`: each
has a type, a default (or none: then its flag is required) and a one-line help
text. The service that uses a group takes it as it is, and a command adds its
flags with :func:`add_flags` and builds it back with :func:`from_args`, so a
setting is written down once: its name is the flag's (``lock_timeout`` is
``--lock-timeout``), its default the flag's default, its help the flag's help.

The field types a flag can carry, and how:

* ``bool`` (default ``False``): a switch (``action="store_true"``);
* ``int``, ``float``, ``str``, and each of them ``| None``: one value of that type;
* ``tuple[str, ...]``: a repeatable flag (``action="append"``), a tuple once built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

__all__ = ["ConfigError", "ConfigFile", "Source", "add_flags", "configure", "from_args",
           "load_config", "setting"]

Group = TypeVar("Group")

_SCALARS: tuple[type, ...] = (int, float, str)


def setting(default: Any = dataclasses.MISSING, *, help: str, metavar: str | None = None,
            ) -> Any:
    """A field of a settings group: its default (none: a required flag), its help text
    (argparse's ``%(default)s`` works in it) and, if given, its flag's ``metavar``."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


def add_flags(parser: argparse.ArgumentParser, group: type[Any], title: str
              ) -> argparse._ArgumentGroup:
    """Add one flag per field of ``group`` to ``parser``, under a heading ``title`` with the
    first paragraph of the group's docstring below it; each flag's ``dest`` is its field's
    name."""
    paragraph = (group.__doc__ or "").strip().split("\n\n")[0]
    section = parser.add_argument_group(title, " ".join(paragraph.split()) or None)
    for field, kind in _fields(group):
        help_text = field.metadata.get("help")
        if not help_text:
            raise TypeError(f"{group.__name__}.{field.name}: no help text (use setting())")
        options: dict[str, Any] = {"dest": field.name, "help": help_text}
        if field.metadata.get("metavar"):
            options["metavar"] = field.metadata["metavar"]
        default: Any = field.default
        required = default is dataclasses.MISSING
        if required:
            options["required"] = True
        else:
            options["default"] = default
        if kind is bool:
            if default is not False:
                raise TypeError(f"{group.__name__}.{field.name}: a switch defaults to False")
            options["action"] = "store_true"
        elif kind is tuple:
            options["action"] = "append"
            if not required:  # argparse appends to a copy of a list default
                options["default"] = list(default)
        else:
            options["type"] = kind
        section.add_argument("--" + field.name.replace("_", "-"), **options)
    return section


def from_args(group: type[Group], args: argparse.Namespace) -> Group:
    """The ``group`` the flags of :func:`add_flags` were given for, from parsed ``args``."""
    values: dict[str, Any] = {}
    for field, kind in _fields(group):
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if kind is tuple and value is not None else value
    return group(**values)


def _fields(group: type[Any]) -> list[tuple[dataclasses.Field[Any], type]]:
    """Each field of ``group`` with the kind of flag it takes (bool, tuple or a scalar)."""
    if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
        raise TypeError(f"{group!r} is not a dataclass")
    hints = typing.get_type_hints(group)
    return [(field, _kind(group, field.name, hints[field.name]))
            for field in dataclasses.fields(group)]


def _kind(group: type[Any], name: str, hint: Any) -> type:
    if hint is bool or hint in _SCALARS:
        return typing.cast(type, hint)
    origin, parameters = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and parameters == (str, Ellipsis):
        return tuple
    if origin in (typing.Union, types.UnionType) and len(parameters) == 2 \
            and type(None) in parameters:
        (inner,) = (p for p in parameters if p is not type(None))
        if inner in _SCALARS:
            return typing.cast(type, inner)
    raise TypeError(f"{group.__name__}.{name}: no flag for the type {hint!r}")


# ------------------------------------------------------------------ configuration
#
# Every flag of a command can also come from the environment or from one TOML file, with
# the precedence flags > environment > file > defaults. The file has one table per
# command, its keys the flags' names (``key_file`` or ``key-file``); a nested command's
# table is dotted (``[agents.search]``). The environment variable of a flag is
# ``A402_<COMMAND>_<FLAG>``: ``A402_FACILITATOR_KEY_FILE``, ``A402_AGENTS_SEARCH_MAX_PRICE``.
# A repeatable flag takes a TOML array, or in the environment a JSON array (or one value);
# a switch takes true/false (1/0, yes/no, on/off), and a configured switch can be turned
# off on the command line with ``--no-<flag>``.

#: Environment variable naming the config file; else the first of DEFAULT_CONFIG_FILES.
CONFIG_ENV: Final = "A402_CONFIG"
DEFAULT_CONFIG_FILES: Final = ("a402.toml", ".a402/config.toml")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """The config file or an ``A402_*`` variable is unreadable or names a wrong value."""


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """The TOML config file's tables (none if there is no file)."""

    path: Path | None = None
    tables: dict[str, Any] = dataclasses.field(default_factory=dict)

    def table(self, section: str) -> dict[str, Any]:
        """The table of ``section`` (``"agents.search"`` is ``[agents.search]``)."""
        table: Any = self.tables
        for part in section.split("."):
            table = table.get(part, {}) if isinstance(table, dict) else {}
        return table if isinstance(table, dict) else {}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one flag's value comes from when the command line does not give it."""

    section: str
    dest: str
    flag: str
    value: Any
    origin: str  # "env A402_X", "file PATH", or "default"


def load_config(environ: Mapping[str, str] | None = None, cwd: Path | None = None
                ) -> ConfigFile:
    """The config file: ``$A402_CONFIG`` (which must exist), else the first of
    :data:`DEFAULT_CONFIG_FILES` that exists in ``cwd``, else none."""
    env = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    explicit = env.get(CONFIG_ENV)
    if explicit:
        path = base / explicit
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={explicit}: no such file")
    else:
        found = [base / name for name in DEFAULT_CONFIG_FILES if (base / name).is_file()]
        if not found:
            return ConfigFile()
        path = found[0]
    try:
        with path.open("rb") as f:
            tables = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return ConfigFile(path, tables)


def env_name(section: str, dest: str) -> str:
    """``A402_<SECTION>_<DEST>``, upper case, dots and dashes as underscores."""
    return "A402_" + f"{section}_{dest}".replace(".", "_").replace("-", "_").upper()


def configure(parser: argparse.ArgumentParser, section: str, *,
              environ: Mapping[str, str] | None = None, config: ConfigFile | None = None,
              ) -> list[Source]:
    """Give each flag of ``parser`` (and of its sub-commands, as ``section.sub``) the value
    the environment or the config file sets for it, as its default: the command line still
    wins. Returns where each flag's value comes from when not given on the command line.
    A key of the file that names no flag is refused (ConfigError), so a typo is not a
    silently ignored setting."""
    env = os.environ if environ is None else environ
    file = load_config(env) if config is None else config
    table = file.table(section)
    sources: list[Source] = []
    known: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                known.add(name)
                sources += configure(sub, f"{section}.{name}", environ=env, config=file)
            continue
        if not action.option_strings or isinstance(
                action, argparse._HelpAction | argparse._VersionAction):
            continue
        flag = max(action.option_strings, key=len)
        key = flag.lstrip("-")
        known.update({key, key.replace("-", "_"), action.dest})
        variable = env_name(section, action.dest)
        if variable in env:
            value = _from_text(action, env[variable], variable)
            origin = f"env {variable}"
        elif (found := _in_table(table, key, action.dest)) is not None:
            value = _from_file(action, found[1], f"{file.path} [{section}] {found[0]}")
            origin = f"file {file.path}"
        else:
            sources.append(Source(section, action.dest, flag, action.default, "default"))
            continue
        _set_default(parser, action, value)
        sources.append(Source(section, action.dest, flag, value, origin))
    unknown = sorted(k for k, v in table.items() if k not in known and not isinstance(v, dict))
    if unknown:
        raise ConfigError(f"{file.path} [{section}]: no such setting: {', '.join(unknown)}")
    return sources


def _in_table(table: Mapping[str, Any], key: str, dest: str) -> tuple[str, Any] | None:
    for name in (key, key.replace("-", "_"), dest):
        if name in table:
            return name, table[name]
    return None


def _is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction)


def _from_text(action: argparse.Action, text: str, where: str) -> Any:
    """A value typed in an environment variable, as the flag would have parsed it."""
    if _is_switch(action):
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{where}={text!r}: a switch is true or false")
        return word in _TRUE
    if isinstance(action, argparse._AppendAction):
        items: Any = [text]
        if text.strip().startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ConfigError(f"{where}: not a JSON array") from None
        if not isinstance(items, list):
            raise ConfigError(f"{where}: not a JSON array")
        return [_typed(action, str(item), where) for item in items]
    return _typed(action, text, where)


def _from_file(action: argparse.Action, value: Any, where: str) -> Any:
    """A value of the TOML file, checked against the flag's type."""
    if _is_switch(action):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: a switch is true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_typed(action, str(item), where) for item in items]
    if isinstance(value, dict | list | bool):
        raise ConfigError(f"{where}: {type(value).__name__} is not a value of this flag")
    return _typed(action, str(value), where)


def _typed(action: argparse.Action, text: str, where: str) -> Any:
    convert = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"{where}: {text!r}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


class _ReplacingAppend(argparse._AppendAction):
    """A repeatable flag whose configured list the command line replaces, not extends."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given: set[str] = namespace.__dict__.setdefault("_given_on_command_line", set())
        if self.dest not in given:
            given.add(self.dest)
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def _set_default(parser: argparse.ArgumentParser, action: argparse.Action, value: Any
                 ) -> None:
    action.default = value
    action.required = False
    if isinstance(action, argparse._AppendAction):
        action.__class__ = _ReplacingAppend
    elif isinstance(action, argparse._StoreTrueAction) and value:
        # A switch the configuration turns on must be possible to turn off: --no-FLAG.
        flag = max(action.option_strings, key=len)
        if flag.startswith("--") and "--no-" + flag[2:] not in parser._option_string_actions:
            typing.cast(Any, action).__class__ = argparse.BooleanOptionalAction
            action.option_strings = [*action.option_strings, "--no-" + flag[2:]]
            parser._option_string_actions["--no-" + flag[2:]] = action


# ------------------------------------------------------------- per-chain data folders

#: Where a service keeps its SQLite files by default: one folder per chain id, so that
#: two chains (or a devnet restarted with a fresh chain) never share a ledger.
DATA_DIR: Final = ".a402"
CHAIN_ID_FIELD: Final = "{chain_id}"


def chain_data_default(name: str) -> str:
    """The default SQLite URL of a service's file ``name``: ``.a402/{chain_id}/NAME``."""
    return f"sqlite:///{DATA_DIR}/{CHAIN_ID_FIELD}/{name}"


def chain_data_url(url: str, chain_id: int, *, legacy: str | None = None,
                   warn: typing.Callable[[str], None] | None = None) -> str:
    """``url`` with ``{chain_id}`` replaced by the chain's id, and for SQLite its folder
    created (mode 700: a ledger says who paid whom).

    ``legacy``: the file this default used to name (``sqlite:///a402-vault.db``, in the
    working folder). If ``url`` is a per-chain default whose file does not exist yet and
    the legacy file does, the legacy file is used, with a warning through ``warn``: a
    vault or facilitator upgraded in place keeps its ledger instead of starting empty
    beside it (a vault that forgot its channels could not close them)."""
    expanded = url.replace(CHAIN_ID_FIELD, str(chain_id))
    prefix = "sqlite:///"
    if not expanded.startswith(prefix) or expanded == prefix + ":memory:":
        return expanded
    path = Path(expanded.removeprefix(prefix))
    if CHAIN_ID_FIELD in url and legacy is not None and not path.exists():
        old = Path(legacy.removeprefix(prefix))
        if legacy.startswith(prefix) and old.exists():
            if warn is not None:
                warn(f"using {old} (where this default used to be); move it to {path} to "
                     "keep one folder per chain")
            return legacy
    if CHAIN_ID_FIELD in url:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return expanded
