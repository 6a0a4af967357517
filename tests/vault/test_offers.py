"""A 402's a402 offer as the vault reads it: a provider's hostile endpoint is refused as an
offer the vault cannot pay (422 before anything is paid), never an error of the vault."""

from __future__ import annotations

import json

import httpx
import pytest

from a402.vault.offers import Offer, OfferError, pick_offer
from a402.wire import vault_api as api
from a402.wire.a402 import SCHEME_A402, WELL_KNOWN_PREFIX
from tests.wire.samples import USDC_BASE_SEPOLIA, payment_required_v2, requirements_v2

MANAGER = "0x" + "aa" * 20
URL = "https://api.example.com/premium-data"


def _402(endpoint: str) -> httpx.Response:
    offer = requirements_v2(scheme=SCHEME_A402, extra={
        "endpoint": endpoint, "providerKey": "0x" + "02" * 33, "ascManager": MANAGER})
    body = json.dumps(payment_required_v2(accepts=[offer])).encode()
    return httpx.Response(402, content=body)


def _pick(response: httpx.Response) -> Offer:
    return pick_offer(response, URL, network="eip155:84532", manager=MANAGER,
                      token=USDC_BASE_SEPOLIA)


def test_an_endpoint_on_the_urls_origin_is_the_offer() -> None:
    offer = _pick(_402("https://api.example.com:443" + WELL_KNOWN_PREFIX))
    assert offer.endpoint == "https://api.example.com:443" + WELL_KNOWN_PREFIX


@pytest.mark.parametrize("port", ["abc", "99999", "-1"])
def test_an_endpoint_whose_port_is_not_one_is_no_offer(port: str) -> None:
    with pytest.raises(OfferError) as refused:
        _pick(_402(f"https://api.example.com:{port}" + WELL_KNOWN_PREFIX))
    assert refused.value.reason == api.NO_ACCEPTABLE_OFFER
    assert "an endpoint on another origin" in refused.value.detail
