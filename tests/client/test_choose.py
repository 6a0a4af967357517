"""Choosing a requirement (pure): never the wrong network, never above the cap, cheapest first."""

from __future__ import annotations

import httpx
import pytest
from eth_account import Account

from a402.client import Budget, PaymentRefused, Wallet, choose, errors, payment_required_of
from a402.client.limits import fixed_max
from a402.exact.eip3009 import (
    Authorization,
    authorization_digest,
    domain_from_requirements,
    recover_signer,
)
from a402.wire.headers import PAYMENT_REQUIRED, encode_header
from a402.wire.x402 import PaymentRequired, PaymentRequiredV1, PaymentRequirements
from tests.client.x402_server import requirement

USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
USDC_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
KEY = Account.create()


def req(network: str = "eip155:8453", amount: int = 10_000, asset: str = USDC_BASE,
        **kw: object) -> PaymentRequirements:
    return requirement(network=network, asset=asset, pay_to=PAY_TO, amount=amount, **kw)  # type: ignore[arg-type]


def offered(*accepts: PaymentRequirements) -> PaymentRequired:
    return PaymentRequired(accepts=list(accepts))


def refused(
    required: object, wallet: Wallet, cap: int, budget: Budget | None = None
) -> PaymentRefused:
    with pytest.raises(PaymentRefused) as exc:
        choose(required, wallet, fixed_max(cap), budget)  # type: ignore[arg-type]
    return exc.value


def test_a_network_the_caller_did_not_allow_is_never_paid() -> None:
    """x402 #2991: the only offer is on another chain → refusal, not accepts[0]."""
    wallet = Wallet(KEY, networks=["eip155:8453"])
    e = refused(offered(req("eip155:84532", asset=USDC_SEPOLIA)), wallet, 10**9)
    assert e.reason == errors.NO_ACCEPTABLE_REQUIREMENT
    assert [r.reason for r in e.rejections] == [errors.NETWORK_NOT_ALLOWED]
    assert e.offered == (req("eip155:84532", asset=USDC_SEPOLIA),)


def test_the_allowed_network_is_chosen_even_when_it_is_not_first_or_cheapest() -> None:
    wallet = Wallet(KEY, networks=["eip155:8453"])
    cheap_elsewhere = req("eip155:84532", amount=1, asset=USDC_SEPOLIA)
    offer, _ = choose(offered(cheap_elsewhere, req(amount=5_000)), wallet, fixed_max(10_000))
    assert (offer.index, offer.network, offer.amount) == (1, "eip155:8453", 5_000)


def test_price_above_the_maximum_is_refused() -> None:
    e = refused(offered(req(amount=10_001)), Wallet(KEY), 10_000)
    assert e.reason == errors.PRICE_ABOVE_MAXIMUM
    assert "10001 > maximum 10000" in e.rejections[0].detail


def test_the_cheapest_acceptable_offer_wins_and_ties_keep_server_order() -> None:
    accepts = [req(amount=9_000), req(amount=3_000), req(amount=20_000), req(amount=3_000)]
    offer, _ = choose(offered(*accepts), Wallet(KEY), fixed_max(10_000))
    assert (offer.index, offer.amount) == (1, 3_000)


def test_settle_after_serve_flow_breaks_ties() -> None:
    upfront = req(extra={"name": "USD Coin", "version": "2", "paymentFlow": "upfront"})
    plain = req()
    offer, _ = choose(offered(upfront, plain), Wallet(KEY), fixed_max(10_000))
    assert offer.index == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (req(scheme="deferred"), errors.UNSUPPORTED_SCHEME),
        (req(network="solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"), errors.NETWORK_NOT_ALLOWED),
        (req(extra={"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}),
         errors.UNSUPPORTED_TRANSFER_METHOD),
        (req(extra={"name": "USD Coin", "version": "2", "paymentFlow": "later"}),
         errors.UNSUPPORTED_PAYMENT_FLOW),
        (req(extra={}), errors.MISSING_EIP712_DOMAIN),
        (requirement(network="eip155:8453", asset="USD", pay_to=PAY_TO, amount=1),
         errors.INVALID_REQUIREMENTS),
    ],
)
def test_what_cannot_be_signed_is_rejected_with_its_reason(bad: PaymentRequirements,
                                                           reason: str) -> None:
    e = refused(offered(bad), Wallet(KEY), 10**9)
    assert (e.reason, [r.reason for r in e.rejections]) == (errors.NO_ACCEPTABLE_REQUIREMENT,
                                                            [reason])


def test_asset_allow_list() -> None:
    wallet = Wallet(KEY, assets=[USDC_BASE.lower()])
    other = req(asset="0x" + "11" * 20, amount=1)
    offer, _ = choose(offered(other, req()), wallet, fixed_max(10_000))
    assert offer.index == 1
    assert refused(offered(other), wallet, 10_000).rejections[0].reason == errors.ASSET_NOT_ALLOWED


def test_the_reason_is_the_one_closest_to_payable() -> None:
    e = refused(offered(req(scheme="upto"), req(amount=50_000)), Wallet(KEY), 10_000)
    assert e.reason == errors.PRICE_ABOVE_MAXIMUM


def test_budget_is_reserved_and_falls_through_to_an_asset_with_room() -> None:
    other = "0x" + "22" * 20
    budget = Budget({USDC_BASE: 5_000, other: 50_000})
    required = offered(req(amount=4_000), req(amount=6_000, asset=other))
    first, r1 = choose(required, Wallet(KEY), fixed_max(10_000), budget)
    second, r2 = choose(required, Wallet(KEY), fixed_max(10_000), budget)
    assert (first.index, second.index) == (0, 1)
    assert (budget.spent(USDC_BASE), budget.spent(other)) == (4_000, 6_000)
    assert r1 is not None and r2 is not None and r1.amount == 4_000
    tight = Budget({USDC_BASE: 3_999})
    e = refused(offered(req(amount=4_000)), Wallet(KEY), 10_000, tight)
    assert e.reason == errors.BUDGET_EXHAUSTED
    assert tight.spent(USDC_BASE) == 0


def test_v1_body_is_parsed_and_legacy_names_map_to_caip2() -> None:
    v1 = {
        "x402Version": 1, "error": "X-PAYMENT header is required",
        "accepts": [{"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "7000",
                     "resource": "https://api.example/x", "description": "", "mimeType": "",
                     "payTo": PAY_TO, "maxTimeoutSeconds": 60, "asset": USDC_SEPOLIA,
                     "extra": {"name": "USDC", "version": "2"}}],
    }
    response = httpx.Response(402, json=v1, request=httpx.Request("GET", "https://api.example/x"))
    required = payment_required_of(response)
    assert isinstance(required, PaymentRequiredV1)
    # The allow-list may use either spelling; both mean eip155:84532.
    for allowed in ("base-sepolia", "eip155:84532"):
        offer, _ = choose(required, Wallet(KEY, networks=[allowed]), fixed_max(7_000))
        assert (offer.version, offer.network, offer.amount) == (1, "eip155:84532", 7_000)
    assert refused(required, Wallet(KEY, networks=["eip155:8453"]), 10**6).rejections[0].reason \
        == errors.NETWORK_NOT_ALLOWED


def test_header_wins_over_body_and_garbage_is_malformed() -> None:
    request = httpx.Request("GET", "https://api.example/x")
    v2 = offered(req())
    both = httpx.Response(402, headers={PAYMENT_REQUIRED: encode_header(v2)},
                          json={"x402Version": 1, "accepts": []}, request=request)
    assert payment_required_of(both) == v2
    for bad in (
        httpx.Response(402, request=request),
        httpx.Response(402, headers={PAYMENT_REQUIRED: "not base64!"}, request=request),
        httpx.Response(402, json={"error": "pay me"}, request=request),
        httpx.Response(402, text="<html>402</html>", request=request),
    ):
        with pytest.raises(PaymentRefused) as exc:
            payment_required_of(bad)
        assert exc.value.reason == errors.MALFORMED_PAYMENT_REQUIRED


def test_wallet_sign_rechecks_its_allow_list() -> None:
    wallet = Wallet(KEY, networks=["eip155:8453"])
    with pytest.raises(PaymentRefused) as exc:
        wallet.sign(req("eip155:84532", asset=USDC_SEPOLIA))
    assert exc.value.reason == errors.NETWORK_NOT_ALLOWED


def test_signed_v2_payload_echoes_accepted_verbatim_and_recovers_to_the_payer() -> None:
    odd = PaymentRequirements.model_validate({**req().to_wire(), "serverNote": {"keep": [1, None]}})
    payload = Wallet(KEY).sign(odd, valid_for=30)
    assert payload.to_wire()["accepted"] == odd.to_wire()
    auth = Authorization.model_validate(payload.payload["authorization"])
    digest = authorization_digest(domain_from_requirements(odd), auth)
    assert recover_signer(digest, payload.payload["signature"]) == KEY.address
    assert int(auth.valid_before) - int(auth.valid_after) == 30 + 600


WBTC = "0x2260FAC5E5542a773Aa44fBeFeDC7C193bc2C599"


def _upto(asset: str, amount: int) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="upto", network="eip155:8453", asset=asset, amount=str(amount), pay_to=PAY_TO,
        max_timeout_seconds=60,
        extra={"assetTransferMethod": "permit2", "facilitatorAddress": PAY_TO})


def test_an_upto_offer_in_a_token_nobody_named_is_never_signed() -> None:
    """Permit2 moves any token the wallet allowed it: 20,000 atomic units under a cap
    meant as 0.02 USDC would be 0.0002 BTC. Without an asset allow-list (or a mandate's),
    an upto offer is refused, in any token; with one, only its tokens are paid."""
    for asset in (WBTC, USDC_BASE):
        rejection = refused(offered(_upto(asset, 20_000)), Wallet(KEY), 20_000).rejections[0]
        assert rejection.reason == errors.ASSET_NOT_ALLOWED and "--asset" in rejection.detail
    named = Wallet(KEY, assets=[USDC_BASE])
    offer, _ = choose(offered(_upto(WBTC, 1), _upto(USDC_BASE, 20_000)), named,
                      fixed_max(20_000))
    assert offer.index == 1
    assert refused(offered(_upto(WBTC, 1)), named, 20_000).rejections[0].reason \
        == errors.ASSET_NOT_ALLOWED
