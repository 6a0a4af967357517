"""Python and SchnorrVerifier.sol on a real anvil node.

The scenario is the provider's on-chain fallback (paper Alg. 2, ④b): the
provider completes its pre-signature with t and settles on-chain; the contract
recomputes the payment message and verifies the signature with one ecrecover;
the vault reads the transaction's calldata and extracts t.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
from a402.crypto import (
    EVM,
    PaymentDomain,
    authorization_digest,
    generate_adaptor,
    payment_message,
    result_hash,
    sign_authorization,
)
from a402.crypto._secp import HALF_N, N, b32, int_from
from a402.crypto.authorization import address_of

pytestmark = pytest.mark.anvil

GAS_TARGET = 10_000


@pytest.fixture(scope="module")
def verifier(anvil_chain: Chain) -> Any:
    return deploy_contract(anvil_chain, anvil_chain.accounts[0], "SchnorrVerifier")


@pytest.fixture(scope="module")
def domain(anvil_chain: Chain, verifier: Any) -> PaymentDomain:
    return PaymentDomain(anvil_chain.chain_id, verifier.address)


def split(signature: bytes) -> tuple[bytes, int]:
    return signature[:32], int_from(signature[32:])


def test_python_and_the_contract_agree_on_the_payment_message(
    verifier: Any, domain: PaymentDomain
) -> None:
    assert verifier.functions.domainSeparator().call() == domain.separator
    for _ in range(5):
        cid, rid, amount = os.urandom(32), int_from(os.urandom(8)), int_from(os.urandom(32))
        h = result_hash(os.urandom(100))
        on_chain = verifier.functions.paymentMessage(cid, rid, amount, h).call()
        assert on_chain == payment_message(domain, cid, rid, amount, h)


def test_a_completed_signature_settles_and_the_vault_extracts_t_from_the_calldata(
    anvil_chain: Chain, verifier: Any, domain: PaymentDomain
) -> None:
    provider = EVM.generate_key()
    cid, rid, amount = os.urandom(32), 3, 250_000
    result = b'{"answer": 42}' * 70  # about 1 KiB
    h = result_hash(result)
    m = payment_message(domain, cid, rid, amount, h)

    # Provider enclave: draw t, pre-sign m under T. Vault: pre-verify.
    t, adaptor = generate_adaptor()
    presig = EVM.pre_sign(provider, m, adaptor)
    assert EVM.pre_verify(provider.public_key, m, adaptor, presig)

    # The pre-signature alone does not settle.
    with pytest.raises(TransactionFailed):
        transact(
            anvil_chain,
            anvil_chain.accounts[1],
            verifier.functions.acceptPayment(
                provider.public_key, cid, rid, amount, h, presig.r, presig.s
            ),
        )

    # Provider: complete with t and settle.
    e, s = split(EVM.adapt(presig, t))
    receipt = transact(
        anvil_chain,
        anvil_chain.accounts[1],
        verifier.functions.acceptPayment(provider.public_key, cid, rid, amount, h, e, s),
    )
    events = verifier.events.PaymentSignatureAccepted().process_receipt(receipt)
    assert [ev["args"]["message"] for ev in events] == [m]

    # Vault: read (e, s) from the transaction's calldata and extract t.
    tx = anvil_chain.w3.eth.get_transaction(receipt["transactionHash"])
    _, args = verifier.decode_function_input(tx["input"])
    assert EVM.extract(presig, args["e"] + b32(args["s"]), adaptor) == t
    # The event carries it too, for settlements that arrive through another contract.
    logged = events[0]["args"]
    assert EVM.extract(presig, logged["e"] + b32(logged["s"]), adaptor) == t


def test_a_tampered_signature_does_not_settle(
    anvil_chain: Chain, verifier: Any, domain: PaymentDomain
) -> None:
    provider = EVM.generate_key()
    cid, rid, amount, h = os.urandom(32), 4, 1_000, result_hash(b"result")
    t, adaptor = generate_adaptor()
    m = payment_message(domain, cid, rid, amount, h)
    e, s = split(EVM.adapt(EVM.pre_sign(provider, m, adaptor), t))

    tampered = [
        (provider.public_key, cid, rid, amount, h, e, (s + 1) % N),  # s
        (provider.public_key, cid, rid, amount, h, bytes([e[0] ^ 1]) + e[1:], s),  # e
        (provider.public_key, cid, rid, amount + 1, h, e, s),  # another amount, so another m
        (EVM.generate_key().public_key, cid, rid, amount, h, e, s),  # another key
    ]
    for call in tampered:
        with pytest.raises(TransactionFailed):
            transact(anvil_chain, anvil_chain.accounts[1], verifier.functions.acceptPayment(*call))
    transact(
        anvil_chain,
        anvil_chain.accounts[1],
        verifier.functions.acceptPayment(provider.public_key, cid, rid, amount, h, e, s),
    )


def test_python_verification_mirrors_the_contract(verifier: Any) -> None:
    """Same verdict on honest signatures, damaged ones and every edge the contract checks."""
    key = EVM.generate_key()
    m = os.urandom(32)
    e, s = split(EVM.sign(key, m))
    t, adaptor = generate_adaptor()
    presig = EVM.pre_sign(key, m, adaptor)
    cases = [
        (key.public_key, m, e, s),
        (key.public_key, m, e, (s + 1) % N),
        (key.public_key, os.urandom(32), e, s),
        (key.public_key, m, bytes([e[0] ^ 0x80]) + e[1:], s),
        (key.public_key, m, e, 0),
        (key.public_key, m, e, s + N) if s + N < 2**256 else (key.public_key, m, e, N),
        (b32(0), m, e, s),
        (b32(HALF_N + 1), m, e, s),
        (b"\xff" * 32, m, e, s),
        (key.public_key, m, presig.r, presig.s),
        (key.public_key, m, *split(EVM.adapt(presig, t))),
        (key.public_key, m, b32(0), s),
    ]
    for px, message, ch, scalar in cases:
        on_chain = verifier.functions.verify(px, message, ch, scalar).call()
        assert on_chain is EVM.verify(px, message, ch + b32(scalar)), (px, message, ch, scalar)
    assert sum(verifier.functions.verify(*c).call() for c in cases) == 2  # the two honest ones


def test_verification_costs_under_10k_gas(verifier: Any) -> None:
    key = EVM.generate_key()
    m = os.urandom(32)
    e, s = split(EVM.sign(key, m))
    valid, gas = verifier.functions.verifyWithGas(key.public_key, m, e, s).call()
    assert valid
    assert gas < GAS_TARGET


def test_the_vault_authorization_is_recovered_on_chain(
    verifier: Any, domain: PaymentDomain
) -> None:
    vault = os.urandom(32)
    provider = EVM.generate_key()
    m = payment_message(domain, os.urandom(32), 1, 5_000, result_hash(b"r"))
    _, adaptor = generate_adaptor()
    challenge = EVM.pre_sign(provider, m, adaptor).r
    sigma_u = sign_authorization(vault, domain, m, 5_000, challenge)

    digest = verifier.functions.authorizationDigest(m, 5_000, challenge).call()
    assert digest == authorization_digest(domain, m, 5_000, challenge)
    signer = verifier.functions.authorizationSigner(m, 5_000, challenge, sigma_u).call()
    assert signer.lower() == "0x" + address_of(vault).hex()
