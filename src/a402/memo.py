"""Memos of pure functions of a string a peer sent (a URL, a path): bounded twice.

A paid call checks the same few URLs and paths call after call, so their parsing is
worth remembering; but they come from outside, so a memo must not let anyone make
the process hold much: at most ``maxsize`` entries, and only ASCII strings up to
:data:`MAX_KEPT_CHARS` characters (a longer one, or one with any other character, is
computed each time, never kept: a string of 4-byte characters would take four times the
room, and its results — a URL's host — as much again; URLs and paths a client sends are
ASCII).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

#: The longest string a memo keeps.
MAX_KEPT_CHARS: Final = 2048


def memo_short(maxsize: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Remember the last ``maxsize`` results of a pure function of one string, for ASCII
    strings up to :data:`MAX_KEPT_CHARS` characters. Exceptions are not remembered."""

    def wrap(fn: Callable[[str], T]) -> Callable[[str], T]:
        kept = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(text: str) -> T:
            return kept(text) if keeps(text) else fn(text)

        return call

    return wrap


def keeps(text: str) -> bool:
    """Whether a memo keeps ``text``: ASCII, up to :data:`MAX_KEPT_CHARS` characters."""
    return len(text) <= MAX_KEPT_CHARS and text.isascii()
