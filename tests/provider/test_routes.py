"""Route patterns, exact prices and the route table (pure)."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.provider.gateway import parse_route_spec
from a402.provider.routes import (
    RouteConfig,
    RouteError,
    RoutePattern,
    RouteTable,
    normalize_path,
    to_atomic,
)

# ------------------------------------------------------------------------ prices


@pytest.mark.parametrize(
    ("price", "decimals", "atomic"),
    [
        ("0.001", 6, 1_000),
        ("$0.001", 6, 1_000),
        (" 1.5 ", 6, 1_500_000),
        ("1", 6, 1_000_000),
        ("0.000001", 6, 1),
        (".5", 2, 50),
        ("0.1", 18, 10**17),
        ("1.000000", 6, 1_000_000),  # trailing zeros are not extra precision
        (1_000, 6, 1_000),  # ints are atomic units
        (Decimal("0.25"), 2, 25),
    ],
)
def test_prices_convert_exactly(price: object, decimals: int, atomic: int) -> None:
    assert to_atomic(price, decimals) == atomic  # type: ignore[arg-type]


def test_prices_beyond_28_digits_are_not_rounded() -> None:
    # Decimal's default context would round this 32-digit amount silently.
    assert to_atomic("12345678901234567890123456.789012", 6) == 12345678901234567890123456789012
    assert to_atomic(str(2**256 - 1), 0) == 2**256 - 1


@pytest.mark.parametrize(
    "price",
    [
        "0.0000001",  # 7 decimals for a 6-decimal token: refused, not rounded
        "0.0000005",
        "1e-3",
        "1E3",
        "-1",
        "0",
        "0.000000",
        "$",
        "",
        "1,5",
        "1_000",
        "$ 1",
        "USD 1",
        "NaN",
        "Infinity",
        "٣",  # a non-ASCII digit
        0,
        -5,
        True,
        1.5,
        Decimal("NaN"),
        Decimal("0.0000001"),
        str(2**256),
    ],
)
def test_bad_prices_are_refused(price: object) -> None:
    with pytest.raises(RouteError):
        to_atomic(price, 6)  # type: ignore[arg-type]


def test_float_prices_are_refused_even_when_they_look_exact() -> None:
    # 0.1 as a float is 0.1000000000000000055...: money must not go through one.
    with pytest.raises(RouteError, match="str, int or Decimal"):
        to_atomic(0.1, 6)  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=10**30), st.integers(min_value=0, max_value=30))
def test_decimal_strings_round_trip(atomic: int, decimals: int) -> None:
    with localcontext(prec=100):
        text = f"{Decimal(atomic).scaleb(-decimals):f}"  # plain notation, no exponent
    assert to_atomic(text, decimals) == atomic


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=10**20), st.integers(min_value=0, max_value=18))
def test_one_digit_too_many_is_always_refused(atomic: int, decimals: int) -> None:
    with localcontext(prec=100):
        text = f"{Decimal(atomic).scaleb(-decimals):f}"
    text += "1" if "." in text else ".1"  # one significant digit past the token's
    with pytest.raises(RouteError, match="precision"):
        to_atomic(text, decimals)


# ---------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a/b/", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/free/../paid", "/paid"),
        ("/../../paid", "/paid"),
        ("/a/b/..", "/a"),
    ],
)
def test_paths_are_normalised_before_matching(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


def table(spec: dict[str, object]) -> RouteTable:
    return RouteTable.build(spec, decimals=6)  # type: ignore[arg-type]


def matched(t: RouteTable, method: str, path: str) -> str | None:
    m = t.match(method, path)
    return None if m is None else m.route.pattern.text


def test_method_and_exact_path() -> None:
    t = table({"GET /weather": "0.001"})
    assert matched(t, "GET", "/weather") == "GET /weather"
    assert matched(t, "get", "/weather/") == "GET /weather"
    assert matched(t, "HEAD", "/weather") == "GET /weather"  # HEAD is priced like GET
    assert matched(t, "POST", "/weather") is None
    assert matched(t, "GET", "/weather/x") is None
    assert matched(t, "GET", "/weathe") is None


def test_dot_segments_cannot_walk_around_a_price() -> None:
    t = table({"GET /paid/*": "0.001"})
    assert matched(t, "GET", "/free/../paid/data") == "GET /paid/*"
    assert matched(t, "GET", "//paid//data") == "GET /paid/*"
    assert matched(t, "GET", "/paid/./data") == "GET /paid/*"


def test_wildcard_covers_the_prefix_and_everything_below() -> None:
    t = table({"GET /api/*": "0.001"})
    for path in ("/api", "/api/", "/api/a", "/api/a/b/c"):
        assert matched(t, "GET", path) == "GET /api/*", path
    assert matched(t, "GET", "/apis") is None
    assert matched(t, "GET", "/") is None


def test_inner_wildcard_and_parameters_take_one_segment() -> None:
    t = table({"/users/*/posts": 5, "/items/:id": 7})
    assert matched(t, "DELETE", "/users/42/posts") == "/users/*/posts"
    assert matched(t, "GET", "/users/42/x/posts") is None
    m = t.match("PUT", "/items/abc")
    assert m is not None and m.params == {"id": "abc"} and m.amount == 7
    assert t.match("GET", "/items") is None
    assert t.match("GET", "/items/a/b") is None


def test_a_match_handed_to_every_request_with_its_line_cannot_be_changed_by_one() -> None:
    t = table({"/items/:id": 7})
    first = t.match("GET", "/items/abc")
    assert first is not None
    with pytest.raises(TypeError):
        first.params["id"] = "other"  # type: ignore[index]
    again = t.match("GET", "/items/abc")
    assert again is not None and again.params == {"id": "abc"}


def test_any_method_route_leaves_cors_preflight_free() -> None:
    t = table({"/paid": "1", "OPTIONS /cors-paid": "1"})
    assert matched(t, "OPTIONS", "/paid") is None
    assert matched(t, "OPTIONS", "/cors-paid") == "OPTIONS /cors-paid"
    assert matched(t, "PATCH", "/paid") == "/paid"


def test_most_specific_route_wins_regardless_of_order() -> None:
    t = table({
        "/*": "0.000001",
        "GET /api/*": "0.001",
        "GET /api/:name": "0.002",
        "GET /api/premium": "0.01",
        "/api/premium": "0.5",
    })
    assert t.match("GET", "/api/premium").amount == 10_000  # type: ignore[union-attr]
    assert t.match("POST", "/api/premium").amount == 500_000  # type: ignore[union-attr]
    assert t.match("GET", "/api/other").amount == 2_000  # type: ignore[union-attr]
    assert t.match("GET", "/api/a/b").amount == 1_000  # type: ignore[union-attr]
    assert t.match("GET", "/elsewhere").amount == 1  # type: ignore[union-attr]


def test_a_request_line_asked_again_gets_the_same_answer() -> None:
    """A paid request's route is read several times (price, metering rule, executor):
    the table remembers each request line's match, and forgetting (it is bounded) or
    remembering never changes an answer."""
    t = table({"GET /api/*": "0.001", "GET /api/:name": "0.002", "/free/../x": "0.003"})
    first = [t.match("GET", "/api/a"), t.match("GET", "/api"), t.match("POST", "/api/a"),
             t.match("GET", "/x")]
    assert [m and m.amount for m in first] == [2_000, 1_000, None, 3_000]
    assert t.match("GET", "/api/a") is first[0]
    for n in range(5_000):  # more request lines than it keeps
        assert t.match("GET", f"/api/{n}/more").amount == 1_000  # type: ignore[union-attr]
    assert [t.match("GET", "/api/a"), t.match("GET", "/api"), t.match("POST", "/api/a"),
            t.match("GET", "/x")] == first


def test_ties_go_to_the_first_declared() -> None:
    t = RouteTable.build([("/a/:x", "1"), ("/:y/b", "2")], decimals=0)
    assert t.match("GET", "/a/b").amount == 1  # type: ignore[union-attr]


def test_route_config_carries_resource_text() -> None:
    t = table({"GET /r": RouteConfig("0.01", description="Weather", mime_type="text/plain")})
    m = t.match("GET", "/r")
    assert m is not None
    assert (m.amount, m.route.description, m.route.mime_type) == (10_000, "Weather", "text/plain")


@pytest.mark.parametrize(
    "pattern",
    ["weather", "GET weather", "FETCH /x", "GET /x extra", "/a/b*", "/a/:", "/a/:1x", "/x?y=1",
     "", "   "],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(RouteError):
        RoutePattern.parse(pattern)


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(RouteError, match="twice"):
        table({"GET /a": "1", "get /a/": "2"})


# --------------------------------------------------------------------- CLI specs


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("GET /path/*=0.001", ("GET /path/*", "0.001")),
        ("/items/:id=$0.25", ("/items/:id", "$0.25")),
        ("  POST /x = 2 ", ("POST /x", "2")),
        ("POST /llm=upto:0.05", ("POST /llm", RouteConfig(price="0.05", scheme="upto"))),
    ],
)
def test_route_specs_parse(spec: str, parsed: tuple[str, object]) -> None:
    assert parse_route_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["GET /path", "=0.1", "GET /x=", "GET x=1", "BREW /x=1",
                                  "GET /x=upto:"])
def test_bad_route_specs_are_refused(spec: str) -> None:
    with pytest.raises(RouteError):
        parse_route_spec(spec)


def test_cli_integer_prices_are_token_units() -> None:
    from a402.provider.gateway import _route_table

    t = _route_table(["GET /x=2"], decimals=6)
    assert t.match("GET", "/x").amount == 2_000_000  # type: ignore[union-attr]
