from __future__ import annotations

import pytest
from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization
from x402.mechanisms.evm.verify import verify_eoa_signature

from a402.evm.address import to_checksum
from a402.evm.ecdsa import SECP256K1_N
from a402.evm.keccak import keccak256
from a402.exact.eip3009 import (
    Authorization,
    Eip712Domain,
    ExactEvmPayload,
    address_of,
    authorization_digest,
    build_payment_payload,
    build_payment_payload_v1,
    domain_from_requirements,
    normalize_signature,
    recover_signer,
    sign_authorization,
)
from a402.wire.errors import (
    INVALID_NETWORK,
    INVALID_PAYMENT_REQUIREMENTS,
    MISSING_EIP712_DOMAIN,
    UNSUPPORTED_SCHEME,
    WireError,
)
from a402.wire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
)
from tests.exact.conftest import NOW, PAY_TO, USDC_BASE_SEPOLIA, make_requirements

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uints = st.integers(min_value=0, max_value=2**256 - 1)


def _eth_account_digest(domain: Eip712Domain, auth: Authorization) -> bytes:
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": to_checksum(domain.verifying_contract),
        },
        "message": {
            "from": to_checksum(auth.from_address),
            "to": to_checksum(auth.to),
            "value": int(auth.value),
            "validAfter": int(auth.valid_after),
            "validBefore": int(auth.valid_before),
            "nonce": bytes.fromhex(auth.nonce[2:]),
        },
    }
    return _hash_eip191_message(encode_typed_data(full_message=typed))


def _official_digest(domain: Eip712Domain, auth: Authorization) -> bytes:
    return hash_eip3009_authorization(
        _official_auth(auth),
        domain.chain_id,
        to_checksum(domain.verifying_contract),
        domain.name,
        domain.version,
    )


def _official_auth(auth: Authorization) -> ExactEIP3009Authorization:
    return ExactEIP3009Authorization(
        from_address=to_checksum(auth.from_address),
        to=to_checksum(auth.to),
        value=auth.value,
        valid_after=auth.valid_after,
        valid_before=auth.valid_before,
        nonce=auth.nonce,
    )


def _auth(**over: str) -> Authorization:
    base = {
        "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
        "to": PAY_TO,
        "value": "10000",
        "validAfter": "1740672089",
        "validBefore": "1740672154",
        "nonce": "0x" + "ab" * 32,
    }
    base.update(over)
    return Authorization.model_validate(base)


BASE_SEPOLIA_USDC = Eip712Domain("USDC", "2", 84532, USDC_BASE_SEPOLIA)


def test_digest_matches_eth_account_and_official_sdk() -> None:
    auth = _auth()
    ours = authorization_digest(BASE_SEPOLIA_USDC, auth)
    assert ours == _eth_account_digest(BASE_SEPOLIA_USDC, auth)
    assert ours == _official_digest(BASE_SEPOLIA_USDC, auth)


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(max_size=12),
    version=st.text(max_size=4),
    chain_id=st.integers(min_value=1, max_value=2**64),
    contract=addresses,
    frm=addresses,
    to=addresses,
    value=uints,
    after=uints,
    before=uints,
    nonce=st.binary(min_size=32, max_size=32),
)
def test_digest_matches_eth_account_for_any_fields(
    name: str,
    version: str,
    chain_id: int,
    contract: str,
    frm: str,
    to: str,
    value: int,
    after: int,
    before: int,
    nonce: bytes,
) -> None:
    domain = Eip712Domain(name, version, chain_id, contract)
    auth = _auth(
        **{
            "from": frm,
            "to": to,
            "value": str(value),
            "validAfter": str(after),
            "validBefore": str(before),
            "nonce": "0x" + nonce.hex(),
        }
    )
    assert authorization_digest(domain, auth) == _eth_account_digest(domain, auth)


def test_digest_depends_on_every_field() -> None:
    base = authorization_digest(BASE_SEPOLIA_USDC, _auth())
    for field, value in [
        ("from", PAY_TO),
        ("to", "0x857b06519E91e3A54538791bDbb0E22373e36b66"),
        ("value", "10001"),
        ("validAfter", "1740672090"),
        ("validBefore", "1740672155"),
        ("nonce", "0x" + "ac" * 32),
    ]:
        assert authorization_digest(BASE_SEPOLIA_USDC, _auth(**{field: value})) != base, field
    for domain in (
        Eip712Domain("USD Coin", "2", 84532, USDC_BASE_SEPOLIA),
        Eip712Domain("USDC", "1", 84532, USDC_BASE_SEPOLIA),
        Eip712Domain("USDC", "2", 8453, USDC_BASE_SEPOLIA),
        Eip712Domain("USDC", "2", 84532, PAY_TO),
    ):
        assert authorization_digest(domain, _auth()) != base


def test_digest_ignores_address_case() -> None:
    lower = _auth(**{"from": "0x857b06519e91e3a54538791bdbb0e22373e36b66", "to": PAY_TO.lower()})
    assert authorization_digest(BASE_SEPOLIA_USDC, lower) == authorization_digest(
        BASE_SEPOLIA_USDC, _auth()
    )


def test_authorization_wire_form_is_all_strings() -> None:
    wire = _auth().to_wire()
    assert set(wire) == {"from", "to", "value", "validAfter", "validBefore", "nonce"}
    assert all(isinstance(v, str) for v in wire.values())


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("from", "0x1234"),
        ("to", "209693Bc6afc0C5328bA36FaF03C514EF312287C"),
        ("to", "0x209693Bc6afc0C5328bA36FaF03C514EF312287G"),
        ("value", 10000),
        ("value", "-1"),
        ("value", "1e4"),
        ("value", " 10000"),
        ("value", str(2**256)),
        ("validBefore", "0x10"),
        ("nonce", "0x" + "ab" * 31),
        ("nonce", "ab" * 32),
    ],
)
def test_authorization_rejects_bad_fields(field: str, bad: object) -> None:
    with pytest.raises(ValueError):
        _auth(**{field: bad})  # type: ignore[arg-type]


def test_domain_from_requirements(requirements: PaymentRequirements) -> None:
    assert domain_from_requirements(requirements) == BASE_SEPOLIA_USDC
    v1_named = make_requirements(network="base-sepolia")
    assert domain_from_requirements(v1_named).chain_id == 84532


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"extra": None}, MISSING_EIP712_DOMAIN),
        ({"extra": {"version": "2"}}, MISSING_EIP712_DOMAIN),
        ({"extra": {"name": "USDC"}}, MISSING_EIP712_DOMAIN),
        ({"extra": {"name": "USDC", "version": 2}}, MISSING_EIP712_DOMAIN),
        ({"network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"}, INVALID_NETWORK),
        ({"asset": "USD"}, INVALID_PAYMENT_REQUIREMENTS),
    ],
)
def test_domain_from_requirements_rejects(over: dict[str, object], reason: str) -> None:
    with pytest.raises(WireError) as exc:
        domain_from_requirements(make_requirements(**over))
    assert exc.value.reason == reason


def test_domain_separator_is_cached_by_value() -> None:
    a = Eip712Domain("USDC", "2", 84532, USDC_BASE_SEPOLIA)
    b = Eip712Domain("USDC", "2", 84532, USDC_BASE_SEPOLIA)
    assert a.separator is b.separator


def test_sign_then_recover(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    signed = sign_authorization(payer, requirements, now=NOW, nonce=b"\x07" * 32)
    auth = signed.authorization
    assert auth.from_address == payer.address
    assert auth.to == PAY_TO
    assert auth.value == "10000"
    assert auth.valid_after == str(NOW - 600)
    assert auth.valid_before == str(NOW + 60)
    assert auth.nonce == "0x" + "07" * 32
    sig = signed.signature_bytes
    assert len(sig) == 65 and sig[64] in (27, 28)
    digest = authorization_digest(BASE_SEPOLIA_USDC, auth)
    assert recover_signer(digest, sig) == payer.address
    assert recover_signer(digest, signed.signature) == payer.address
    # the official SDK's EOA verifier agrees
    assert verify_eoa_signature(_official_digest(BASE_SEPOLIA_USDC, auth), sig, payer.address)
    # and so does eth_account's own typed-data signer (RFC 6979: same bytes)
    assert Account.unsafe_sign_hash(digest, payer.key).signature == sig


def test_signing_options(payer: LocalAccount, requirements: PaymentRequirements) -> None:
    by_hex = sign_authorization(payer.key.hex(), requirements, now=NOW, nonce="0x" + "01" * 32)
    by_bytes = sign_authorization(bytes(payer.key), requirements, now=NOW, nonce=b"\x01" * 32)
    assert by_hex == by_bytes
    longer = sign_authorization(payer, requirements, now=NOW, valid_for=3600)
    assert longer.authorization.valid_before == str(NOW + 3600)
    fresh = {sign_authorization(payer, requirements, now=NOW).authorization.nonce for _ in range(4)}
    assert len(fresh) == 4
    early = sign_authorization(payer, requirements, now=100)
    assert early.authorization.valid_after == "0"
    assert address_of(payer) == payer.address


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"scheme": "upto"}, UNSUPPORTED_SCHEME),
        (
            {"extra": {"name": "USDC", "version": "2", "assetTransferMethod": "permit2"}},
            UNSUPPORTED_SCHEME,
        ),
        ({"payTo": "merchant"}, INVALID_PAYMENT_REQUIREMENTS),
        ({"amount": "1.5"}, INVALID_PAYMENT_REQUIREMENTS),
        ({"extra": {}}, MISSING_EIP712_DOMAIN),
    ],
)
def test_sign_refuses(payer: LocalAccount, over: dict[str, object], reason: str) -> None:
    with pytest.raises(WireError) as exc:
        sign_authorization(payer, make_requirements(**over), now=NOW)
    assert exc.value.reason == reason


def test_bad_keys_and_nonces(requirements: PaymentRequirements) -> None:
    for key in (b"\x01" * 31, "zz" * 32, 7):
        with pytest.raises(ValueError):
            sign_authorization(key, requirements, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sign_authorization(b"\x01" * 32, requirements, now=NOW, nonce=b"\x00" * 31)


def _signed_digest(payer: LocalAccount) -> tuple[bytes, bytes]:
    signed = sign_authorization(payer, make_requirements(), now=NOW, nonce=b"\x02" * 32)
    return authorization_digest(BASE_SEPOLIA_USDC, signed.authorization), signed.signature_bytes


def test_recover_accepts_v_0_and_1(payer: LocalAccount) -> None:
    digest, sig = _signed_digest(payer)
    zero_one = sig[:64] + bytes([sig[64] - 27])
    assert recover_signer(digest, zero_one) == payer.address
    assert normalize_signature(zero_one) == sig
    assert normalize_signature(sig) == sig
    with pytest.raises(ValueError):
        normalize_signature(sig[:64] + b"\x05")


def test_recover_rejects_high_s(payer: LocalAccount) -> None:
    digest, sig = _signed_digest(payer)
    s = int.from_bytes(sig[32:64], "big")
    flipped_v = 27 + (1 - (sig[64] - 27))
    high = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])
    # The malleated twin is a mathematically valid signature by the same key...
    twin = PublicKey.from_signature_and_message(
        high[:64] + bytes([flipped_v - 27]), digest, hasher=None
    )
    assert to_checksum(_address(twin)) == payer.address
    # ...which EIP-2 (and the token contract) refuses, and so do we.
    assert recover_signer(digest, high) is None


def _address(public: PublicKey) -> bytes:
    return keccak256(public.format(compressed=False)[1:])[12:]


@pytest.mark.parametrize("mutate", ["short", "long", "v", "r0", "s0", "r_overflow", "hex"])
def test_recover_rejects_malformed(payer: LocalAccount, mutate: str) -> None:
    digest, sig = _signed_digest(payer)
    bad: bytes | str = {
        "short": sig[:64],
        "long": sig + b"\x00",
        "v": sig[:64] + b"\x1d",
        "r0": bytes(32) + sig[32:],
        "s0": sig[:32] + bytes(32) + sig[64:],
        "r_overflow": SECP256K1_N.to_bytes(32, "big") + sig[32:],
        "hex": "0xnothex",
    }[mutate]
    assert recover_signer(digest, bad) is None


def test_recover_wrong_digest_gives_someone_else(payer: LocalAccount) -> None:
    digest, sig = _signed_digest(payer)
    assert recover_signer(bytes(32), sig) != payer.address
    assert recover_signer(digest[:31], sig) is None


def test_build_payment_payload_v2(payer: LocalAccount) -> None:
    requirements = make_requirements(futureField={"x": [1]})
    resource = ResourceInfo(url="https://api.example.com/x", description="d")
    payload = build_payment_payload(
        requirements, payer, resource, {"bazaar": {"info": {}}}, now=NOW, nonce=b"\x03" * 32
    )
    assert isinstance(payload, PaymentPayload)
    assert payload.accepted is requirements
    wire = payload.to_wire()
    assert wire["x402Version"] == 2
    assert wire["accepted"] == requirements.to_wire()
    assert wire["accepted"]["futureField"] == {"x": [1]}
    assert wire["resource"] == {"url": "https://api.example.com/x", "description": "d"}
    assert wire["extensions"] == {"bazaar": {"info": {}}}
    inner = ExactEvmPayload.model_validate(wire["payload"])
    assert inner == sign_authorization(payer, requirements, now=NOW, nonce=b"\x03" * 32)
    assert "extensions" not in build_payment_payload(requirements, payer, now=NOW).to_wire()


def test_build_payment_payload_v1(payer: LocalAccount) -> None:
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
    payload = build_payment_payload_v1(v1, payer, now=NOW, nonce=b"\x04" * 32)
    assert isinstance(payload, PaymentPayloadV1)
    assert (payload.x402_version, payload.scheme, payload.network) == (1, "exact", "base-sepolia")
    inner = ExactEvmPayload.model_validate(payload.payload)
    assert inner == sign_authorization(payer, make_requirements(), now=NOW, nonce=b"\x04" * 32)
