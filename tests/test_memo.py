"""A memo of a pure function of a peer's string keeps short strings only, and few of them."""

from __future__ import annotations

import pytest

from a402.memo import MAX_KEPT_CHARS, memo_short
from a402.provider.routes import RouteTable


def test_a_short_string_is_computed_once_a_long_one_every_time_and_never_kept() -> None:
    calls: list[str] = []

    @memo_short(4)
    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    short, long = "a" * MAX_KEPT_CHARS, "b" * (MAX_KEPT_CHARS + 1)
    assert [length(short), length(short)] == [MAX_KEPT_CHARS, MAX_KEPT_CHARS]
    assert [length(long), length(long)] == [MAX_KEPT_CHARS + 1] * 2
    assert calls == [short, long, long]


def test_a_string_with_a_character_past_ascii_is_computed_every_time_and_never_kept() -> None:
    """Its characters may take four bytes each (and its results as much again): a client's
    thousands of such URLs would hold tens of megabytes in each memo."""
    calls: list[str] = []

    @memo_short(4)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    wide = "http://\N{GRINNING FACE}.example/"
    assert [upper(wide), upper(wide)] == [wide.upper()] * 2
    assert calls == [wide, wide]
    table = RouteTable.build({"GET /files/*": "0.01"}, decimals=6)
    assert table.match("GET", "/files/\N{GRINNING FACE}") is not None
    assert table._matched == {}


def test_a_failure_is_not_remembered() -> None:
    tries: list[str] = []

    @memo_short(4)
    def refuse(text: str) -> None:
        tries.append(text)
        raise ValueError(text)

    for _ in range(2):
        with pytest.raises(ValueError):
            refuse("x")
    assert tries == ["x", "x"]


def test_a_route_table_matches_a_long_path_without_keeping_it() -> None:
    table = RouteTable.build({"GET /files/*": "0.01"}, decimals=6)
    long = "/files/" + "x" * MAX_KEPT_CHARS
    first = table.match("GET", long)
    assert first is not None and table.match("GET", long) is not None
    assert ("GET", long) not in table._matched
    assert table.match("GET", "/files/a") is table.match("GET", "/files/a")
