"""How much an ``upto`` tool call used: the one hook between a tool and its charge.

A tool priced ``upto`` (``name=upto:MAX`` or ``name=upto:MAX/UNIT``,
:mod:`a402.mcp.prices`) is paid with a signed maximum; after the tool succeeded the
paywall settles what it used. The tool reports the *units* it used, in one of two ways:

- its ``CallToolResult`` carries ``_meta["a402/usage"]``: a whole number of units (a
  JSON integer, or a string of digits). This is the way for an MCP server behind
  ``a402 mcp serve``, which is not changed otherwise;
- or, in a server protected in-process (:func:`a402.mcp.protect`), the tool calls
  :func:`report_usage` while it runs (several calls add up).

The charge is ``units × unit price``, capped at the maximum (:meth:`ToolPrice.charge`):
never more than the payer signed for. A tool that reports nothing is charged the
maximum, as the x402 SDKs charge an ``upto`` payment whose server names no amount. A
charge of 0 is settled without a transaction (the facilitator spends the authorization
in its journal only).

Safety: the usage is the tool's word, bounded by the payer's signature, which is the
payer's own bound on the loss. An unreadable report (not a whole number, reported both
ways, a number larger than a uint256) is an error (:class:`UsageError`): the tool's
output is withheld and nothing is charged, rather than a guess in either party's
disfavour. The report is removed from the result the payer receives: it is between
the tool and the paywall.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from mcp import types

USAGE_META_KEY: Final = "a402/usage"
USAGE_UNREADABLE: Final = "usage_unreadable"
"""Reason: the tool's usage report could not be read; its output was withheld and
nothing was charged."""
_DIGITS: Final = re.compile(r"[0-9]{1,78}")
_UINT256: Final = 2**256

_REPORTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "a402_mcp_usage", default=None)


class UsageError(ValueError):
    """The tool's usage report cannot be read: nothing may be charged on a guess."""


def report_usage(units: int) -> None:
    """Report, from inside a running ``upto`` tool, that it used ``units`` more units.

    Outside a paid ``upto`` call (a free tool, an ``exact`` tool, a test calling the
    function directly) this does nothing. A negative or non-integer count raises
    ``ValueError`` in the tool (which then fails, and is not charged)."""
    if isinstance(units, bool) or not isinstance(units, int) or units < 0:
        raise ValueError(f"usage must be a whole number of units >= 0, not {units!r}")
    reports = _REPORTS.get()
    if reports is not None:
        reports.append(units)


@contextmanager
def collecting() -> Iterator[list[int]]:
    """Collect the :func:`report_usage` calls of the tool run inside this context. The
    list is shared by reference, so a tool run in a worker thread (with a copy of the
    context) reports into it as well."""
    reports: list[int] = []
    token = _REPORTS.set(reports)
    try:
        yield reports
    finally:
        _REPORTS.reset(token)


def _units(raw: Any) -> int:
    if isinstance(raw, bool):
        raise UsageError(f"the usage {raw!r} is not a whole number of units")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _DIGITS.fullmatch(raw):
        value = int(raw)
    else:
        raise UsageError(f"the usage {str(raw)[:80]!r} is not a whole number of units")
    if value < 0 or value >= _UINT256:
        raise UsageError("the usage is out of range (0 .. 2**256-1 units)")
    return value


def take_usage(result: types.CallToolResult, reported: list[int]
               ) -> tuple[int | None, types.CallToolResult]:
    """The units ``result`` (or the :func:`report_usage` calls in ``reported``) says the
    tool used, None if it says nothing; and ``result`` without the report. Raises
    :class:`UsageError` for a report that cannot be read."""
    meta = result.meta or {}
    units: int | None = None
    if USAGE_META_KEY in meta:
        if reported:
            raise UsageError("the tool reported its usage twice (in _meta and by "
                             "report_usage)")
        units = _units(meta[USAGE_META_KEY])
        rest = {k: v for k, v in meta.items() if k != USAGE_META_KEY}
        result = result.model_copy(update={"meta": rest or None})
    elif reported:
        units = sum(reported)
        if units >= _UINT256:
            raise UsageError("the usage is out of range (0 .. 2**256-1 units)")
    return units, result


def without_usage(result: types.CallToolResult) -> types.CallToolResult:
    """``result`` without a usage report (a re-run for a payment already charged: the
    recorded amount wins, the new report is moot)."""
    if result.meta and USAGE_META_KEY in result.meta:
        rest = {k: v for k, v in result.meta.items() if k != USAGE_META_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


__all__ = [
    "USAGE_META_KEY",
    "USAGE_UNREADABLE",
    "UsageError",
    "collecting",
    "report_usage",
    "take_usage",
    "without_usage",
]
