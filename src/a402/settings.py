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
import types
import typing
from typing import Any, TypeVar

__all__ = ["add_flags", "from_args", "setting"]

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
