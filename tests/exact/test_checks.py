"""check_exact: one test per failure reason, plus the official client's payload."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from x402 import x402ClientSync
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequired as OfficialPaymentRequired

from a402.evm.ecdsa import SECP256K1_N
from a402.exact.checks import ExactCheck, check_exact
from a402.exact.eip3009 import (
    authorization_digest,
    build_payment_payload_v1,
    domain_from_requirements,
    sign_authorization,
)
from a402.wire import errors
from a402.wire.convert import normalize
from a402.wire.headers import decode_payment_payload, encode_header
from a402.wire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
)
from tests.exact.conftest import NOW, PAY_TO, USDC_BASE_SEPOLIA, make_requirements


def pay(
    key: LocalAccount,
    requirements: PaymentRequirements,
    *,
    signed_for: PaymentRequirements | None = None,
    accepted: PaymentRequirements | None = None,
    now: int = NOW,
    edit: dict[str, Any] | None = None,
    signature: str | None = None,
) -> PaymentPayload:
    """A payload for ``requirements``, optionally signed for other terms or edited after signing."""
    signed = sign_authorization(key, signed_for or requirements, now=now, nonce=b"\x09" * 32)
    inner = signed.to_wire()
    if edit:
        inner["authorization"].update(edit)
    if signature is not None:
        inner["signature"] = signature
    return PaymentPayload(accepted=accepted or requirements, payload=inner)


def assert_fails(check: ExactCheck, reason: str) -> None:
    assert check.reason == reason, (check.reason, check.message)
    assert not check.ok
    assert check.message


def test_valid_payment_passes(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    check = check_exact(pay(payer, requirements), requirements, now=NOW)
    assert check.ok and check.reason is None and check.message is None
    assert check.payer == payer.address
    assert not check.needs_contract_check
    assert check.authorization is not None and check.authorization.value == "10000"
    assert check.domain == domain_from_requirements(requirements)
    assert check.digest == authorization_digest(check.domain, check.authorization)
    assert check.signature is not None and len(check.signature) == 65


def test_checksum_case_of_pay_to_does_not_matter(payer: LocalAccount) -> None:
    lower = make_requirements(payTo=PAY_TO.lower(), asset=USDC_BASE_SEPOLIA.lower())
    payload = pay(payer, lower, accepted=make_requirements())  # accepted in checksum case
    assert check_exact(payload, lower, now=NOW).ok


def test_v_as_0_or_1_is_accepted(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    good = pay(payer, requirements)
    sig = bytes.fromhex(good.payload["signature"][2:])
    low_v = "0x" + (sig[:64] + bytes([sig[64] - 27])).hex()
    assert check_exact(pay(payer, requirements, signature=low_v), requirements, now=NOW).ok


# --- scheme and network ---------------------------------------------------------------


def test_unknown_scheme(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    payload = pay(payer, requirements, accepted=make_requirements(scheme="upto"))
    assert_fails(check_exact(payload, requirements, now=NOW), errors.UNSUPPORTED_SCHEME)
    upto = make_requirements(scheme="upto")
    assert_fails(
        check_exact(pay(payer, requirements, accepted=upto), upto, now=NOW),
        errors.UNSUPPORTED_SCHEME,
    )


def test_permit2_is_not_handled_here(payer: LocalAccount) -> None:
    permit2 = make_requirements(
        extra={"name": "USDC", "version": "2", "assetTransferMethod": "permit2"}
    )
    payload = pay(payer, make_requirements(), accepted=permit2)
    assert_fails(check_exact(payload, permit2, now=NOW), errors.UNSUPPORTED_SCHEME)


def test_network_mismatch(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    base = make_requirements(network="eip155:8453")
    payload = pay(payer, requirements, signed_for=base, accepted=base)
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, errors.NETWORK_MISMATCH)
    assert check.payer == payer.address  # reported even before the shape is checked


def test_wrong_chain_id_in_signed_domain(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    # The client echoes the right network but signed for Base mainnet's domain.
    payload = pay(payer, requirements, signed_for=make_requirements(network="eip155:8453"))
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, errors.INVALID_SIGNATURE)
    assert check.needs_contract_check  # `from` could still be a contract wallet


@pytest.mark.parametrize(
    "network", ["solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "eip155:0x1", "base"]
)
def test_non_eip155_network(payer: LocalAccount, network: str) -> None:
    reqs = make_requirements(network=network)
    payload = pay(payer, make_requirements(), accepted=reqs)
    assert_fails(check_exact(payload, reqs, now=NOW), errors.INVALID_NETWORK)


# --- accepted vs requirements -----------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"amount": "9999"}, errors.AUTHORIZATION_VALUE_MISMATCH),
        ({"amount": "10001"}, errors.AUTHORIZATION_VALUE_MISMATCH),
        ({"asset": PAY_TO}, errors.INVALID_SIGNATURE),
        ({"payTo": USDC_BASE_SEPOLIA}, errors.RECIPIENT_MISMATCH),
    ],
)
def test_a_payment_signed_for_other_terms_gets_the_sdks_reason(
    payer: LocalAccount, requirements: PaymentRequirements, over: dict[str, str], reason: str
) -> None:
    accepted = make_requirements(**over)
    payload = pay(payer, requirements, signed_for=accepted, accepted=accepted)
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, reason)
    assert not check.needs_contract_check


@pytest.mark.parametrize(
    "over", [{"amount": "9999"}, {"asset": PAY_TO}, {"payTo": USDC_BASE_SEPOLIA}]
)
def test_an_edited_echo_on_a_right_authorization_is_refused_as_accepted_mismatch(
    payer: LocalAccount, requirements: PaymentRequirements, over: dict[str, str]
) -> None:
    payload = pay(payer, requirements, accepted=make_requirements(**over))
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, errors.ACCEPTED_MISMATCH)
    assert not check.needs_contract_check


def test_an_edited_echo_with_a_contract_wallet_signature_is_refused_without_a_chain_check(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    payload = pay(payer, requirements, accepted=make_requirements(amount="1"),
                  signature="0x" + "ab" * 100)
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, errors.ACCEPTED_MISMATCH)
    assert not check.needs_contract_check


def test_accepted_amount_compares_as_a_number(payer: LocalAccount) -> None:
    reqs = make_requirements(amount="10000")
    payload = pay(payer, reqs, accepted=make_requirements(amount="010000"))
    assert check_exact(payload, reqs, now=NOW).ok


def test_bad_requirements(payer: LocalAccount) -> None:
    for over, reason in (
        ({"amount": "ten"}, errors.INVALID_PAYMENT_REQUIREMENTS),
        ({"payTo": "merchant"}, errors.INVALID_PAYMENT_REQUIREMENTS),
        ({"asset": "USD"}, errors.INVALID_PAYMENT_REQUIREMENTS),
    ):
        reqs = make_requirements(**over)
        payload = pay(payer, make_requirements(), accepted=reqs)
        assert_fails(check_exact(payload, reqs, now=NOW), reason)
    accepted = make_requirements(amount="1e4")
    payload = pay(payer, make_requirements(), accepted=accepted)
    assert_fails(check_exact(payload, make_requirements(), now=NOW), errors.INVALID_PAYLOAD)


# --- EIP-712 domain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [None, {}, {"name": "USDC"}, {"version": "2"}, {"name": None, "version": "2"}]
)
def test_missing_extra_name_or_version(payer: LocalAccount, extra: dict[str, Any] | None) -> None:
    reqs = make_requirements(extra=extra)
    payload = pay(payer, make_requirements(), accepted=reqs)
    assert_fails(check_exact(payload, reqs, now=NOW), errors.MISSING_EIP712_DOMAIN)


# --- payload shape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inner",
    [
        {},
        {"signature": "0x00"},
        {"permit2Authorization": {}, "signature": "0x00"},
        "edit:value=10000.0",
        "edit:value=-10000",
        "edit:nonce=0x1234",
        "edit:from=0xnope",
        "sig:0xZZ",
        "sig:abcd",
    ],
)
def test_bad_payload_shape(
    payer: LocalAccount, requirements: PaymentRequirements, inner: Any
) -> None:
    if isinstance(inner, dict):
        payload = PaymentPayload(accepted=requirements, payload=inner)
        expected = errors.INVALID_PAYLOAD
    elif inner.startswith("edit:"):
        field, value = inner[5:].split("=", 1)
        payload = pay(payer, requirements, edit={field: value})
        expected = errors.INVALID_PAYLOAD
    else:
        payload = pay(payer, requirements, signature=inner[4:])
        expected = errors.INVALID_PAYLOAD
    assert_fails(check_exact(payload, requirements, now=NOW), expected)


def test_numeric_authorization_field_is_a_shape_error(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    payload = pay(payer, requirements, edit={"value": 10000})
    assert_fails(check_exact(payload, requirements, now=NOW), errors.INVALID_PAYLOAD)


# --- the authorization's terms -----------------------------------------------------------------


def test_wrong_recipient(
    payer: LocalAccount, other: LocalAccount, requirements: PaymentRequirements
) -> None:
    payload = pay(payer, requirements, signed_for=make_requirements(payTo=other.address))
    assert_fails(check_exact(payload, requirements, now=NOW), errors.RECIPIENT_MISMATCH)


@pytest.mark.parametrize("signed_amount", ["9999", "10001"])
def test_amount_one_unit_off(
    payer: LocalAccount, requirements: PaymentRequirements, signed_amount: str
) -> None:
    payload = pay(payer, requirements, signed_for=make_requirements(amount=signed_amount))
    assert_fails(check_exact(payload, requirements, now=NOW), errors.AUTHORIZATION_VALUE_MISMATCH)


def test_expired(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    payload = pay(payer, requirements)  # validBefore = NOW + 60
    assert check_exact(payload, requirements, now=NOW + 54).ok  # 60 >= 54 + 6: still fine
    check = check_exact(payload, requirements, now=NOW + 55)
    assert_fails(check, errors.VALID_BEFORE_EXPIRED)
    assert_fails(check_exact(payload, requirements, now=NOW + 3600), errors.VALID_BEFORE_EXPIRED)


def test_not_yet_valid(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    payload = pay(payer, requirements)  # validAfter = NOW - 600
    assert check_exact(payload, requirements, now=NOW - 600).ok
    assert_fails(check_exact(payload, requirements, now=NOW - 601), errors.VALID_AFTER_FUTURE)


# --- signature ---------------------------------------------------------------------------------


def test_forged_signature_by_another_key(
    payer: LocalAccount, other: LocalAccount, requirements: PaymentRequirements
) -> None:
    forged = pay(other, requirements, edit={"from": payer.address})
    check = check_exact(forged, requirements, now=NOW)
    assert_fails(check, errors.INVALID_SIGNATURE)
    assert check.payer == payer.address
    assert check.needs_contract_check
    assert check.digest is not None and check.signature is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("validBefore", str(NOW + 61)),
        ("validAfter", str(NOW - 601)),
        ("nonce", "0x" + "0a" * 32),
    ],
)
def test_field_tampered_after_signing(
    payer: LocalAccount, requirements: PaymentRequirements, field: str, value: str
) -> None:
    payload = pay(payer, requirements, edit={field: value})
    check = check_exact(payload, requirements, now=NOW)
    assert_fails(check, errors.INVALID_SIGNATURE)
    assert check.needs_contract_check


def test_tampered_value_and_requirements_together(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    # An intermediary bumps the price everywhere; the signature still covers 10000.
    pricier = make_requirements(amount="20000")
    payload = pay(payer, requirements, accepted=pricier, edit={"value": "20000"})
    assert_fails(check_exact(payload, pricier, now=NOW), errors.INVALID_SIGNATURE)


def test_high_s_signature(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    good = pay(payer, requirements)
    sig = bytes.fromhex(good.payload["signature"][2:])
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    check = check_exact(
        pay(payer, requirements, signature="0x" + twin.hex()), requirements, now=NOW
    )
    assert_fails(check, errors.INVALID_SIGNATURE)


def test_empty_signature_needs_no_chain(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    check = check_exact(pay(payer, requirements, signature="0x"), requirements, now=NOW)
    assert_fails(check, errors.INVALID_SIGNATURE)
    assert not check.needs_contract_check


def test_smart_wallet_signature_is_left_to_the_chain(
    payer: LocalAccount, requirements: PaymentRequirements
) -> None:
    erc6492 = "0x" + "00" * 96 + "64926492" * 8
    check = check_exact(pay(payer, requirements, signature=erc6492), requirements, now=NOW)
    assert_fails(check, errors.INVALID_SIGNATURE)
    assert check.needs_contract_check
    assert check.signature is not None and len(check.signature) == 128
    assert check.digest is not None


# --- v1 via normalize, and the official SDK's client ------------------------------------------


def test_v1_payment_via_normalize(payer: LocalAccount) -> None:
    v1 = PaymentRequirementsV1.model_validate(
        {
            "scheme": "exact",
            "network": "base-sepolia",
            "maxAmountRequired": "10000",
            "resource": "https://api.example.com/x",
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": USDC_BASE_SEPOLIA,
            "extra": {"name": "USDC", "version": "2"},
        }
    )
    payload = build_payment_payload_v1(v1, payer, now=NOW)
    assert check_exact(*normalize(payload, v1), now=NOW).ok
    elsewhere = PaymentPayloadV1.model_validate({**payload.to_wire(), "network": "base"})
    assert_fails(check_exact(*normalize(elsewhere, v1), now=NOW), errors.NETWORK_MISMATCH)


def test_payload_from_the_official_client_passes(payer: LocalAccount) -> None:
    requirements = make_requirements()
    payment_required = OfficialPaymentRequired.model_validate(
        {"x402Version": 2, "resource": {"url": "https://x/y"}, "accepts": [requirements.to_wire()]}
    )
    client = register_exact_evm_client(x402ClientSync(), EthAccountSigner(payer))
    theirs = client.create_payment_payload(payment_required)
    ours = decode_payment_payload(
        encode_header(theirs.model_dump(by_alias=True, exclude_none=True))
    )
    assert isinstance(ours, PaymentPayload)
    check = check_exact(ours, requirements, now=int(time.time()))
    assert check.ok, (check.reason, check.message)
    assert check.payer == payer.address
