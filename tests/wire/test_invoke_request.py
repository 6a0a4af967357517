"""What ``POST /v1/invoke`` accepts as a call: the payee's address and the URL, read strictly."""

from __future__ import annotations

from typing import Any

import pytest

from a402.wire import vault_api as api


def _call(**fields: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:8402/paid", "maxPrice": "1000", "idempotencyKey": "k1",
            "createdAt": 1796468467, **fields}


@pytest.mark.parametrize("pay_to", ["0x" + "ab" * 20, "0X" + "AB" * 20, "0x" + "aB" * 20])
def test_a_payee_named_by_its_0x_address_in_any_case_is_read_as_sent(pay_to: str) -> None:
    assert api.InvokeRequest.from_json(_call(payTo=pay_to)).pay_to == pay_to


@pytest.mark.parametrize("pay_to", [
    "0x" + "ab" * 20 + "\n", "0x" + "ab" * 19, "0x" + "ab" * 21, "0x" + "g" * 40,
    "00" + "ab" * 20, "0x" + "\u0663" * 40, 12, ["0x" + "ab" * 20]])
def test_anything_else_as_the_payee_is_refused_before_anything_is_paid(pay_to: Any) -> None:
    with pytest.raises(ValueError, match="payTo is the payee's 0x address"):
        api.InvokeRequest.from_json(_call(payTo=pay_to))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:99999/paid", "http://:8402/paid", "https://host:port/x",
    "http://[::1/x", "http://" + "h" * 5000 + ":99999/"])
def test_a_url_whose_host_or_port_cannot_be_read_is_refused_every_time(url: str) -> None:
    for _ in range(2):  # the second time from what was remembered of the first
        with pytest.raises(ValueError, match="url must be an absolute http"):
            api.InvokeRequest.from_json(_call(url=url))


def test_a_long_url_with_a_host_and_port_is_read() -> None:
    url = "http://127.0.0.1:8402/" + "p" * 5000
    assert api.InvokeRequest.from_json(_call(url=url)).url == url
