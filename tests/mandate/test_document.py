"""The mandate document: EIP-712 a wallet can sign, decoding that fails closed."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from a402.mandate import Domain, MandateError, SignedMandate, load_signed, typed_data
from a402.mandate.document import Confirmation, revocation_digest
from tests.mandate.helpers import DOMAIN, PAYEE, USDC, Keys, make_mandate, signed


def test_a_wallet_signing_the_typed_data_makes_the_same_mandate_hash_and_signature() -> None:
    keys = Keys()
    mandate = make_mandate(keys, payees=(PAYEE,), origins=("https://API.example.com:443",),
                           url_patterns=("https://api.example.com/v1/*",), skills=("search",),
                           period=86_400, period_budget=100_000, confirm_above=5_000)
    data = typed_data(mandate, DOMAIN)
    wallet = Account.sign_typed_data(keys.owner.key, full_message=data)
    assert wallet.message_hash == mandate.digest(DOMAIN)
    ours = SignedMandate(mandate, DOMAIN, wallet.signature)
    assert ours.hash == wallet.message_hash
    assert encode_typed_data(full_message=data).body == mandate.struct_hash()
    assert ours.mandate.origins == ("https://api.example.com",)


def test_the_json_round_trip_keeps_every_limit_and_the_hash() -> None:
    keys = Keys()
    s = signed(keys, payees=(PAYEE,), skills=("a", "b"), period=60, period_budget=20_000)
    again = load_signed(s.dumps())
    assert again == s and again.hash == s.hash


def test_a_mandate_signed_by_another_key_is_refused() -> None:
    keys, other = Keys(), Keys()
    mandate = make_mandate(keys)
    forged = other.owner_signer.sign_digest(mandate.digest(DOMAIN))
    with pytest.raises(MandateError) as e:
        SignedMandate(mandate, DOMAIN, forged)
    assert e.value.reason == "mandate_bad_signature"


def test_a_signature_for_another_registry_or_chain_is_refused() -> None:
    keys = Keys()
    s = signed(keys)
    for domain in (Domain(1, DOMAIN.registry), Domain(DOMAIN.chain_id, PAYEE)):
        with pytest.raises(MandateError) as e:
            SignedMandate(s.mandate, domain, s.signature)
        assert e.value.reason == "mandate_bad_signature"


def test_an_altered_limit_in_the_json_breaks_the_signature() -> None:
    keys = Keys()
    data = signed(keys).to_json()
    data["mandate"]["maxPerPayment"] *= 100
    del data["hash"]
    with pytest.raises(MandateError) as e:
        load_signed(data)
    assert e.value.reason == "mandate_bad_signature"


@pytest.mark.parametrize("where", ["top", "mandate", "domain"])
def test_an_unknown_field_fails_closed(where: str) -> None:
    data = signed(Keys()).to_json()
    target = data if where == "top" else data[where]
    target["maxPerDay"] = 1
    with pytest.raises(MandateError) as e:
        load_signed(json.dumps(data))
    assert e.value.reason == "mandate_unknown_field"


def test_an_unknown_scheme_fails_closed() -> None:
    with pytest.raises(MandateError) as e:
        make_mandate(Keys(), schemes=("exact", "deferred"))
    assert e.value.reason == "mandate_unknown_scheme"


@pytest.mark.parametrize("overrides", [
    {"networks": ()}, {"assets": ()}, {"schemes": ()}, {"max_per_payment": -1},
    {"budget": 1, "max_per_payment": 2}, {"period": 60}, {"period_budget": 5},
    {"valid_before": 0}, {"origins": ("ftp://x",)}, {"networks": ("base",)},
    {"payees": ("not-an-address",)}, {"nonce": b"short"}, {"max_per_payment": True},
])
def test_a_malformed_mandate_is_refused_with_a_reason(overrides: dict) -> None:
    with pytest.raises(MandateError) as e:
        make_mandate(Keys(), **overrides)
    assert e.value.reason == "mandate_invalid"


def test_owner_and_agent_must_differ() -> None:
    keys = Keys()
    with pytest.raises(MandateError):
        make_mandate(keys, agent=keys.owner.address)


def test_confirmation_and_revocation_digests_match_a_wallets() -> None:
    keys = Keys()
    s = signed(keys, confirm_above=1)
    c = Confirmation(s.hash, PAYEE, "eip155:84532", USDC, "exact", 7, "https://x/", bytes(32), 9)
    data = {
        "types": {
            "EIP712Domain": typed_data(s.mandate, DOMAIN)["types"]["EIP712Domain"],
            "PaymentConfirmation": [
                {"name": "mandate", "type": "bytes32"}, {"name": "payee", "type": "address"},
                {"name": "network", "type": "string"}, {"name": "asset", "type": "address"},
                {"name": "scheme", "type": "string"}, {"name": "amount", "type": "uint256"},
                {"name": "resource", "type": "string"}, {"name": "nonce", "type": "bytes32"},
                {"name": "validBefore", "type": "uint64"}],
        },
        "primaryType": "PaymentConfirmation", "domain": DOMAIN.typed(),
        "message": {**c.to_json(), "signature": None},
    }
    del data["message"]["signature"]
    assert Account.sign_typed_data(keys.owner.key, full_message=data).message_hash \
        == c.digest(DOMAIN)
    revocation = {
        "types": {"EIP712Domain": data["types"]["EIP712Domain"],
                  "Revocation": [{"name": "mandate", "type": "bytes32"}]},
        "primaryType": "Revocation", "domain": DOMAIN.typed(),
        "message": {"mandate": s.hash_hex},
    }
    assert Account.sign_typed_data(keys.owner.key, full_message=revocation).message_hash \
        == revocation_digest(s.hash, DOMAIN)
