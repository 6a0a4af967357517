"""The x402 MCP wire pieces and tool prices, without a chain: bounds, parsing, refusals."""

from __future__ import annotations

import pytest
from mcp import types

from a402.mcp.prices import PriceError, ToolPrice, parse_tool_spec, price_table
from a402.mcp.wire import (
    PAYMENT_META_KEY,
    PAYMENT_RESPONSE_META_KEY,
    check_value,
    failed_receipt_of,
    payment_of,
    payment_required_result,
    receipt_of,
    required_of,
    with_receipt,
)
from a402.wire.jsonstrict import JsonLimitError
from a402.wire.x402 import PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse

REQ = PaymentRequirements(scheme="exact", network="eip155:31337", amount="1000",
                          asset="0x" + "11" * 20, pay_to="0x" + "22" * 20,
                          max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
REQUIRED = PaymentRequired(error="payment_required", resource=ResourceInfo(url="mcp://tool/t"),
                           accepts=[REQ])


def test_a_value_a_million_levels_deep_is_refused_without_recursion() -> None:
    value: list[object] = []
    for _ in range(1_000_000):
        value = [value]
    with pytest.raises(JsonLimitError) as e:
        check_value(value)
    assert (e.value.reason, e.value.status) == ("json_too_deep", 400)


@pytest.mark.parametrize(("value", "reason"), [
    ({"a": "x" * 70_000}, "request_too_large"),
    ([0] * 40_000, "request_too_large"),
    ({"n": 10**200}, "json_number_too_long"),
    ({"n": 1 << 100_000}, "json_number_too_long"),
])
def test_values_over_the_meta_limits_are_refused_with_their_limit(value: object,
                                                                 reason: str) -> None:
    with pytest.raises(JsonLimitError) as e:
        check_value(value)
    assert e.value.reason == reason


def test_a_real_payload_sized_value_passes() -> None:
    check_value({"x402Version": 2, "accepted": REQ.to_wire(),
                 "payload": {"signature": "0x" + "ab" * 65,
                             "authorization": {"value": "1000", "nonce": "0x" + "00" * 32}}})


def test_no_meta_or_no_payment_key_is_no_payment() -> None:
    assert payment_of(None) is None
    assert payment_of({}) is None
    assert payment_of({"progressToken": 1}) is None


def test_the_payment_required_result_reads_back_as_the_sdk_reads_it() -> None:
    result = payment_required_result(REQUIRED)
    assert result.isError and result.structuredContent == REQUIRED.to_wire()
    assert required_of(result) == REQUIRED
    # Only the text block (no structuredContent), as some servers send it.
    text_only = types.CallToolResult(content=result.content, isError=True)
    assert required_of(text_only) == REQUIRED
    # Not an error: never an offer, whatever it contains.
    assert required_of(result.model_copy(update={"isError": False})) is None


def test_a_failed_settlement_carries_its_receipt_in_the_offer() -> None:
    failed = SettleResponse(success=False, error_reason="transaction_failed", transaction="",
                            network="eip155:31337")
    result = payment_required_result(REQUIRED, failed)
    assert result.structuredContent is not None
    assert result.structuredContent[PAYMENT_RESPONSE_META_KEY]["errorReason"] == \
        "transaction_failed"
    assert required_of(result) == REQUIRED
    assert failed_receipt_of(result) == failed


@pytest.mark.parametrize("content", [
    {"x402Version": 1, "accepts": [REQ.to_wire()]},
    {"x402Version": 2, "accepts": []},
    {"x402Version": 2, "accepts": [{"scheme": "exact"}]},
    {"x402Version": 2, "accepts": "all"},
    {"accepts": [REQ.to_wire()]},
])
def test_a_malformed_offer_is_no_offer(content: dict[str, object]) -> None:
    result = types.CallToolResult(content=[], structuredContent=content, isError=True)
    assert required_of(result) is None


def test_a_receipt_travels_in_result_meta_and_a_malformed_one_is_not_trusted() -> None:
    ok = SettleResponse(success=True, transaction="0x" + "ab" * 32, network="eip155:31337",
                        payer="0x" + "33" * 20)
    plain = types.CallToolResult.model_validate({"content": [], "_meta": {"other": 1}})
    stamped = with_receipt(plain, ok)
    assert receipt_of(stamped) == ok and stamped.meta is not None
    assert stamped.meta["other"] == 1 and plain.meta == {"other": 1}
    for bad in ({"success": "maybe"}, "0xdeadbeef"):
        assert receipt_of(types.CallToolResult.model_validate(
            {"content": [], "_meta": {PAYMENT_RESPONSE_META_KEY: bad}})) is None


def test_tool_specs_parse_exactly_or_not_at_all() -> None:
    assert parse_tool_spec("forecast=0.001", 6) == ToolPrice("forecast", 1000)
    assert parse_tool_spec(" forecast = exact:$0.25 ", 6) == ToolPrice("forecast", 250_000)
    assert parse_tool_spec("a=b=2", 6) == ToolPrice("a=b", 2_000_000)
    for bad in ("forecast", "=0.1", "forecast=", "forecast=0.0000001", "forecast=-1",
                "forecast=0", "forecast=abc", "x" * 200 + "=1"):
        with pytest.raises(PriceError):
            parse_tool_spec(bad, 6)


def test_every_scheme_is_parsed_as_named_and_an_unknown_one_refused() -> None:
    assert parse_tool_spec("forecast=upto:0.01/0.001", 6) == ToolPrice(
        "forecast", 10_000, "upto", unit=1_000)
    assert parse_tool_spec("forecast=a402:0.01", 6) == ToolPrice("forecast", 10_000, "a402")
    with pytest.raises(PriceError, match="unknown scheme"):
        parse_tool_spec("forecast=cheap:0.01", 6)


def test_a_price_table_from_a_mapping_and_duplicates() -> None:
    assert price_table({"a": "0.5", "b": 7}, 6) == {"a": ToolPrice("a", 500_000),
                                                   "b": ToolPrice("b", 7)}
    with pytest.raises(PriceError, match="priced twice"):
        price_table([ToolPrice("a", 1), ToolPrice("a", 2)], 6)
    assert PAYMENT_META_KEY == "x402/payment"
