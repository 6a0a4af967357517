"""The payment message m and the vault's authorization digest are plain EIP-712.

a402 encodes them by hand for speed; eth-account's generic EIP-712 encoder is
the independent oracle here (and ``test_onchain.py`` checks the contract).
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from a402.crypto import (
    PaymentDomain,
    answer_hash,
    answer_hash_of,
    authorization_digest,
    payment_message,
    result_hash,
)
from a402.crypto.authorization import (
    EcdsaSigner,
    address_of,
    authorization_signer,
    recover_signer,
    sign_authorization,
    sign_digest,
)
from a402.evm.keccak import keccak256

from ._strategies import SETTINGS, messages32, secrets32

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
chain_ids = st.integers(min_value=1, max_value=2**64)
addresses = st.binary(min_size=20, max_size=20)

PAYMENT_FIELDS = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "requestId", "type": "uint256"},
    {"name": "amount", "type": "uint256"},
    {"name": "resultHash", "type": "bytes32"},
]
AUTHORIZATION_FIELDS = [
    {"name": "payment", "type": "bytes32"},
    {"name": "amount", "type": "uint256"},
    {"name": "challenge", "type": "bytes32"},
]


def digest(signable: SignableMessage) -> bytes:
    return keccak256(b"\x19" + signable.version + signable.header + signable.body)


@SETTINGS
@given(
    chain_id=chain_ids,
    contract=addresses,
    channel_id=messages32,
    request_id=uint256,
    amount=uint256,
    result=st.binary(max_size=64),
)
def test_the_payment_message_is_the_eip712_hash_of_an_a402_payment(
    chain_id: int, contract: bytes, channel_id: bytes, request_id: int, amount: int, result: bytes
) -> None:
    domain = PaymentDomain(chain_id, contract)
    h = result_hash(result)
    expected = encode_typed_data(
        domain_data={
            "name": "A402",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": "0x" + contract.hex(),
        },
        message_types={"A402Payment": PAYMENT_FIELDS},
        message_data={
            "channelId": channel_id,
            "requestId": request_id,
            "amount": amount,
            "resultHash": h,
        },
    )
    assert domain.separator == expected.header
    assert payment_message(domain, channel_id, request_id, amount, h) == digest(expected)


@SETTINGS
@given(
    chain_id=chain_ids,
    contract=addresses,
    payment=messages32,
    amount=uint256,
    challenge=messages32,
)
def test_the_authorization_digest_is_the_eip712_hash_of_an_authorization(
    chain_id: int, contract: bytes, payment: bytes, amount: int, challenge: bytes
) -> None:
    expected = encode_typed_data(
        domain_data={
            "name": "A402",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": "0x" + contract.hex(),
        },
        message_types={"A402PaymentAuthorization": AUTHORIZATION_FIELDS},
        message_data={"payment": payment, "amount": amount, "challenge": challenge},
    )
    domain = PaymentDomain(chain_id, contract)
    assert authorization_digest(domain, payment, amount, challenge) == digest(expected)


BASE = {
    "chain_id": 31337,
    "contract": b"\x5a" * 20,
    "channel_id": b"\xc1" * 32,
    "request_id": 7,
    "amount": 1_000,
    "result_digest": result_hash(b"result"),
}


def message_of(fields: dict[str, Any]) -> bytes:
    domain = PaymentDomain(fields["chain_id"], fields["contract"])
    return payment_message(
        domain,
        fields["channel_id"],
        fields["request_id"],
        fields["amount"],
        fields["result_digest"],
    )


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("chain_id", 1),
        ("contract", b"\x5b" * 20),
        ("channel_id", b"\xc2" * 32),
        ("request_id", 8),
        ("amount", 1_001),
        ("result_digest", result_hash(b"another result")),
    ],
)
def test_every_field_binds_the_message(field: str, other: Any) -> None:
    """Another chain, contract, channel, request, amount or result: another message."""
    assert message_of({**BASE, field: other}) != message_of(BASE)


@SETTINGS
@given(request=st.binary(max_size=256), result=st.binary(max_size=64))
def test_the_answer_hash_is_a_tagged_keccak_of_the_request_and_result_hashes(
    request: bytes, result: bytes,
) -> None:
    """h = keccak256("A402/answer/v1" ‖ keccak256(request) ‖ keccak256(result)): what m
    commits to, so that a pre-signature pays a result only as the answer to one request."""
    h = answer_hash(request, result_hash(result))
    assert h == keccak256(b"A402/answer/v1" + keccak256(request) + keccak256(result))
    assert h == answer_hash_of(keccak256(request), result_hash(result))
    assert h not in (result_hash(result), result_hash(request + result))


def test_another_request_or_result_gives_another_answer_hash() -> None:
    h = answer_hash(b"GET /weather", result_hash(b"sunny"))
    assert answer_hash(b"POST /echo", result_hash(b"sunny")) != h
    assert answer_hash(b"GET /weather", result_hash(b"rainy")) != h
    with pytest.raises(ValueError):
        answer_hash(b"GET /weather", b"\x00" * 31)
    with pytest.raises(ValueError):
        answer_hash_of(b"\x00" * 33, result_hash(b"sunny"))


def test_addresses_may_be_given_as_hex() -> None:
    assert PaymentDomain(1, "0x" + "5a" * 20) == PaymentDomain(1, b"\x5a" * 20)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("channel_id", b"\x00" * 31),
        ("request_id", -1),
        ("amount", 2**256),
        ("result_digest", b"\x00" * 33),
        ("contract", b"\x00" * 19),
    ],
)
def test_out_of_range_fields_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(ValueError):
        message_of({**BASE, field: bad})


@SETTINGS
@given(secret=secrets32, payload=messages32)
def test_ecdsa_signatures_match_eth_account_and_recover_to_the_signer(
    secret: bytes, payload: bytes
) -> None:
    signature = sign_digest(secret, payload)
    reference = Account.unsafe_sign_hash(payload, secret)
    assert signature == bytes(reference.signature)
    assert recover_signer(payload, signature) == address_of(secret)
    assert "0x" + address_of(secret).hex() == Account.from_key(secret).address.lower()


def test_the_vault_authorization_recovers_to_the_vault_only_for_its_terms() -> None:
    vault = b"\x24" * 32
    domain = PaymentDomain(31337, b"\x5a" * 20)
    payment, challenge = b"\x01" * 32, b"\x02" * 32
    sigma_u = sign_authorization(vault, domain, payment, 1_000, challenge)

    assert authorization_signer(domain, payment, 1_000, challenge, sigma_u) == address_of(vault)
    assert authorization_signer(domain, payment, 1_001, challenge, sigma_u) != address_of(vault)
    assert authorization_signer(domain, payment, 1_000, b"\x03" * 32, sigma_u) != address_of(vault)


def test_malleable_or_malformed_ecdsa_signatures_are_refused_like_openzeppelin() -> None:
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    payload = b"\x33" * 32
    signature = sign_digest(b"\x24" * 32, payload)
    r, s, v = signature[:32], int.from_bytes(signature[32:64]), signature[64]
    high_s_twin = r + (n - s).to_bytes(32, "big") + bytes([55 - v])  # same signer, high s
    assert recover_signer(payload, high_s_twin) is None
    assert recover_signer(payload, signature[:64] + b"\x01") is None
    assert recover_signer(payload, signature[:64]) is None


def test_a_loaded_vault_key_signs_like_the_raw_key_and_never_shows_it() -> None:
    secret = b"\x24" * 32
    signer = EcdsaSigner(secret)
    payload = b"\x44" * 32
    assert signer.sign_digest(payload) == sign_digest(secret, payload)
    assert signer.address == address_of(secret)
    assert secret.hex() not in repr(signer)
