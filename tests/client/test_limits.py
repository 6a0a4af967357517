"""Token-unit caps: exact Decimal conversion, and servers cannot loosen them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from a402.client.limits import as_max_amount, per_asset_max, to_atomic, token_units_max
from tests.client.x402_server import requirement

ASSET = "0x" + "ab" * 20
PAY_TO = "0x" + "cd" * 20


def _req(extra: dict[str, object]) -> object:
    return requirement(network="eip155:8453", asset=ASSET, pay_to=PAY_TO, amount=1, extra=extra)


@pytest.mark.parametrize(
    ("amount", "decimals", "atomic"),
    [("0.01", 6, 10_000), ("1", 6, 1_000_000), ("0.1", 18, 10**17),
     ("0.0000015", 6, 1), ("0", 6, 0), ("123.456789", 6, 123_456_789),
     (Decimal("0.3"), 6, 300_000), ("1e-2", 6, 10_000), (" 2 ", 0, 2)],
)
def test_to_atomic_is_exact_and_floors(amount: str, decimals: int, atomic: int) -> None:
    assert to_atomic(amount, decimals) == atomic


@pytest.mark.parametrize("bad", ["-0.01", "NaN", "Infinity", "ten", ""])
def test_to_atomic_refuses_what_is_not_an_amount(bad: str) -> None:
    with pytest.raises(ValueError):
        to_atomic(bad, 6)


def test_floats_are_refused_everywhere() -> None:
    with pytest.raises(TypeError):
        to_atomic(0.01, 6)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        as_max_amount(0.01)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        as_max_amount(Decimal("0.01"))  # type: ignore[arg-type]


def test_extra_decimals_may_only_tighten_the_cap() -> None:
    cap = token_units_max("0.01")  # believed 6 decimals
    assert cap(_req({"name": "USD Coin", "version": "2"})) == 10_000
    # A server claiming 18 decimals would lift the cap to 10**16 units: ignored.
    assert cap(_req({"name": "x", "version": "1", "decimals": 18})) == 10_000
    # Claiming fewer can only make it stricter, so it is honoured.
    assert cap(_req({"name": "x", "version": "1", "decimals": 2})) == 1
    assert cap(_req({"name": "x", "version": "1", "decimals": "2"})) == 10_000  # not an int
    assert token_units_max("0.01", 18)(_req({"name": "x", "version": "1"})) == 10**16


def test_per_asset_caps_refuse_unlisted_assets() -> None:
    cap = per_asset_max({ASSET.upper().replace("0X", "0x"): 5})
    assert cap(_req({})) == 5
    other = requirement(network="eip155:8453", asset="0x" + "11" * 20, pay_to=PAY_TO, amount=1)
    assert cap(other) is None
