"""Metering rules (issue 16, part 2): what the gateway's ``--meter`` accepts, and the charge
each unit puts on a response — exact, rounded down, never above the maximum δ."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from a402.metering import (
    MeterError,
    Unit,
    UsageUnreadable,
    count_events,
    parse_meter_spec,
    parse_rule,
)
from a402.provider.gateway import _route_table
from a402.provider.routes import RouteError

USDC = 6


def test_a_per_byte_rule_from_the_command_line_charges_each_byte_up_to_its_maximum() -> None:
    pattern, rule = parse_meter_spec("GET /api/*=per-byte:0.000001,max=0.01", USDC)
    assert (pattern, rule.unit, rule.rate, rule.maximum) == ("GET /api/*", Unit.BYTE, 1, 10_000)
    assert rule.charge(200, (), b"x" * 1_234) == 1_234
    assert rule.charge(200, (), b"x" * 20_000) == 10_000  # capped at δ


def test_a_json_field_rule_reads_usage_total_tokens() -> None:
    rule = parse_rule("per-field:usage.total_tokens:0.00002,max=0.05", USDC)
    body = json.dumps({"choices": [], "usage": {"total_tokens": 321}}).encode()
    assert (rule.source, rule.charge(200, (), body)) == ("usage.total_tokens", 321 * 20)


def test_a_handler_reports_units_in_a_header_and_a_report_above_delta_is_capped() -> None:
    rule = parse_rule("per-unit:0.000002,max=0.001", USDC)
    assert rule.charge(200, ((b"A402-Units", b"400"),), b"") == 800
    assert rule.charge(200, ((b"a402-units", b"999999"),), b"") == 1_000
    assert rule.charge(200, ((b"a402-units", b"9" * 31),), b"") == 1_000
    named = parse_rule("per-unit:0.000001,max=1,header=X-Tokens", USDC)
    assert named.charge(200, ((b"x-tokens", b"7"),), b"") == 7


def test_fractional_rates_round_down_so_the_payer_never_pays_a_fraction() -> None:
    rule = parse_rule("per-byte:0.0000001,max=1", USDC)  # a tenth of an atomic unit per byte
    assert rule.rate == Fraction(1, 10)
    assert [rule.charge(200, (), b"x" * n) for n in (9, 10, 19)] == [0, 1, 1]


def test_per_second_and_per_event_rules() -> None:
    seconds = parse_rule("per-second:0.001,max=0.01", USDC)
    assert seconds.charge(200, (), b"", 2.5) == 2_500
    assert seconds.charge(200, (), b"", 60.0) == 10_000
    events = parse_rule("per-event:0.00001,max=0.001", USDC)
    body = b"data: a\n\ndata: b\n\n: comment\n\nevent: x\ndata: c\n\n"
    assert count_events(body) == 3
    assert events.charge(200, (), body) == 30


@pytest.mark.parametrize("elapsed", [float("inf"), float("nan"), -1.0])
def test_an_elapsed_time_that_is_no_finite_non_negative_number_is_unreadable(
        elapsed: float) -> None:
    """The host's clock is the host's: ∞ made Fraction raise OverflowError in the enclave."""
    with pytest.raises(UsageUnreadable):
        parse_rule("per-second:0.001,max=0.01", USDC).charge(200, (), b"", elapsed)


@pytest.mark.parametrize("headers, body", [
    ((), b""),
    (((b"a402-units", b"-1"),), b""),
    (((b"a402-units", b"1.5"),), b""),
    (((b"a402-units", b"1"), (b"a402-units", b"2")), b""),
])
def test_a_missing_or_malformed_report_is_unreadable(headers, body) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageUnreadable):
        parse_rule("per-unit:0.000001,max=1", USDC).charge(200, headers, body)


@pytest.mark.parametrize("body", [
    b"not json", b"{}", b'{"usage": {"total_tokens": -3}}', b'{"usage": {"total_tokens": true}}',
    b'{"usage": {"total_tokens": "12"}}', b'{"usage": 5}', b"[" * 100_000,
])
def test_a_json_body_without_the_field_is_unreadable(body: bytes) -> None:
    with pytest.raises(UsageUnreadable):
        parse_rule("per-field:usage.total_tokens:0.00001,max=1", USDC).charge(200, (), body)


@pytest.mark.parametrize("spec", [
    "GET /x", "GET /x=", "GET /x=per-byte:0.000001", "GET /x=per-parsec:1,max=1",
    "GET /x=per-byte:0.000001,max=0.0000001", "GET /x=per-byte:0.000001,max=0",
    "GET /x=per-byte:-1,max=1", "GET /x=per-byte:1e3,max=1", "GET /x=per-field:0.1,max=1",
    "GET /x=per-byte:0.1,max=1,max=2", "GET /x=per-byte:0.1,max=1,header=x",
    "GET /x=per-byte,max=1", "GET /x=per-byte:0.1,max",
])
def test_bad_rules_are_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(MeterError):
        parse_meter_spec(spec, USDC)


def test_the_gateway_table_prices_a_metered_route_at_its_maximum() -> None:
    table = _route_table(["GET /fixed=0.001"], USDC,
                         ["POST /v1/chat=per-field:usage.total_tokens:0.00001,max=0.02"])
    fixed, chat = table.match("GET", "/fixed"), table.match("POST", "/v1/chat")
    assert fixed is not None and (fixed.amount, fixed.route.meter) == (1_000, None)
    assert chat is not None and chat.amount == 20_000 and chat.route.meter is not None
    with pytest.raises(RouteError, match="no max"):
        _route_table([], USDC, ["GET /y=per-byte:0.1"])
