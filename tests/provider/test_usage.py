"""The ``upto`` usage report a handler gives its middleware (pure)."""

from __future__ import annotations

import pytest

from a402.provider.usage import (
    MeteredResponse,
    UsageError,
    actual_amount,
    charge_for,
    without_reports,
)


def h(name: str, value: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (name.encode(), value.encode())]


@pytest.mark.parametrize(("headers", "amount"), [
    (h("Settlement-Overrides", '{"amount": "1234"}'), 1234),
    (h("settlement-overrides", '{"amount": 0}'), 0),
    (h("Settlement-Overrides", '{"amount": "50%"}'), 5_000),
    (h("Settlement-Overrides", '{"amount": "12.34%"}'), 1_234),
    (h("X-A402-Usage", "77"), 77),
    (h("X-A402-Usage", "20000"), 20_000),  # above the maximum: passed on, refused there
    ([(b"content-type", b"text/plain")], None),
])
def test_the_reported_amount_is_read_as_the_sdk_writes_it(
        headers: list[tuple[bytes, bytes]], amount: int | None) -> None:
    assert actual_amount(headers, 10_000) == amount


@pytest.mark.parametrize("headers", [
    h("Settlement-Overrides", "not json"),
    h("Settlement-Overrides", '{"amount": "$0.01"}'),
    h("Settlement-Overrides", '{"amount": -1}'),
    h("Settlement-Overrides", '{"amount": "1.5"}'),
    h("Settlement-Overrides", '{"other": 1}'),
    h("X-A402-Usage", "12 tokens"),
    h("X-A402-Usage", "9" * 100),
    [*h("X-A402-Usage", "1"), (b"x-a402-usage", b"2")],
])
def test_an_unreadable_report_is_an_error_never_a_guess(
        headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(UsageError):
        actual_amount(headers, 10_000)


def test_a_meter_counts_only_when_the_handler_reported_nothing() -> None:
    def per_byte(response: MeteredResponse) -> int:
        return len(response.body)

    plain = MeteredResponse(200, [(b"content-type", b"text/plain")], b"hello", 100)
    assert charge_for(plain, per_byte) == 5
    assert charge_for(plain, None) == 100  # nothing said: the maximum, as the SDK
    reported = MeteredResponse(200, h("X-A402-Usage", "3"), b"hello", 100)
    assert charge_for(reported, per_byte) == 3
    with pytest.raises(UsageError):
        charge_for(plain, lambda r: -1)
    with pytest.raises(UsageError):
        charge_for(plain, lambda r: 1 // 0)


def test_the_report_is_not_forwarded_to_the_payer() -> None:
    headers = [*h("Settlement-Overrides", "{}"), (b"X-A402-Usage", b"1")]
    assert without_reports(headers) == [(b"content-type", b"application/json")]
