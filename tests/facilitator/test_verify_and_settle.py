"""The facilitator on a real anvil chain: good payments settle exactly once, bad ones
are refused with the x402 reason code and move nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.exact_transfer import transfer_calldata
from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.facilitator.core import Facilitator
from a402.wire import errors as wire_errors
from a402.wire.errors import WireError
from tests.facilitator.helpers import request_body, requirement, with_authorization

NewPayer = Callable[..., LocalAccount]


def balances(chain: Chain, stack: Manifest, *owners: str) -> list[int]:
    return [token_balance(chain, stack.token.address, o) for o in owners]


def test_a_good_payment_verifies_settles_and_conserves_balances(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    body = request_body(payer, requirement(dev_stack, 1_234))
    before = balances(anvil_chain, dev_stack, payer.address, payee)

    verdict = facilitator.verify(body)
    assert verdict.is_valid and verdict.payer == payer.address
    receipt = facilitator.settle(body)

    assert receipt.success and receipt.network == dev_stack.network
    assert receipt.payer == payer.address
    mined = anvil_chain.w3.eth.get_transaction_receipt(receipt.transaction)
    assert mined["status"] == 1 and mined["to"] == dev_stack.token.address
    after = balances(anvil_chain, dev_stack, payer.address, payee)
    assert after == [before[0] - 1_234, before[1] + 1_234]
    assert sum(after) == sum(before)


def test_settling_the_same_payload_again_returns_the_first_result(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer = new_payer(5_000)
    body = request_body(payer, requirement(dev_stack, 700))
    first = facilitator.settle(body)
    second = facilitator.settle(body)
    assert first.success and second == first
    assert balances(anvil_chain, dev_stack, payer.address) == [4_300]
    again = facilitator.verify(body)
    assert not again.is_valid and again.invalid_reason == wire_errors.NONCE_ALREADY_USED
    assert first.transaction in (again.invalid_message or "")


def test_the_same_payload_replayed_in_parallel_moves_money_once(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    body = request_body(payer, requirement(dev_stack, 1_000))
    payee_before = balances(anvil_chain, dev_stack, payee)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: facilitator.settle(body), range(8)))

    assert all(r.success for r in results)
    assert len({r.transaction for r in results}) == 1
    assert balances(anvil_chain, dev_stack, payer.address, payee) == [4_000, payee_before + 1_000]


def test_a_second_signature_over_the_same_nonce_is_refused(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer, nonce = new_payer(5_000), "0x" + "ab" * 32
    first = request_body(payer, requirement(dev_stack, 100), nonce=nonce)
    other = request_body(payer, requirement(dev_stack, 100), nonce=nonce, valid_for=120)
    assert facilitator.settle(first).success
    refused = facilitator.settle(other)
    assert not refused.success and refused.error_reason == wire_errors.NONCE_ALREADY_USED
    assert balances(anvil_chain, dev_stack, payer.address) == [4_900]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("amount one unit short", wire_errors.AUTHORIZATION_VALUE_MISMATCH),
        ("amount one unit over", wire_errors.AUTHORIZATION_VALUE_MISMATCH),
        ("expired", wire_errors.VALID_BEFORE_EXPIRED),
        ("not yet valid", wire_errors.VALID_AFTER_FUTURE),
        ("forged by another key", wire_errors.INVALID_SIGNATURE),
        ("signed for another chain id", wire_errors.INVALID_SIGNATURE),
        ("tampered recipient", wire_errors.RECIPIENT_MISMATCH),
        ("unknown scheme", wire_errors.UNSUPPORTED_SCHEME),
        ("another network", wire_errors.INVALID_NETWORK),
        ("no EIP-712 domain", wire_errors.MISSING_EIP712_DOMAIN),
    ],
)
def test_bad_payments_are_refused_with_a_reason_and_move_nothing(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer,
    case: str, reason: str,
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    req = requirement(dev_stack, 1_000)
    now = int(time.time())
    body = {
        "amount one unit short": lambda: request_body(
            payer, req, signed_for=requirement(dev_stack, 999)),
        "amount one unit over": lambda: request_body(
            payer, req, signed_for=requirement(dev_stack, 1_001)),
        "expired": lambda: request_body(payer, req, now=now - 3_600),
        "not yet valid": lambda: request_body(payer, req, now=now + 3_600),
        "forged by another key": lambda: with_authorization(
            request_body(Account.create(), req), **{"from": payer.address}),
        "signed for another chain id": lambda: request_body(
            payer, req, signed_for=requirement(dev_stack, 1_000, network="eip155:1")),
        "tampered recipient": lambda: with_authorization(
            request_body(payer, req), to=Account.create().address),
        "unknown scheme": lambda: request_body(
            payer, requirement(dev_stack, scheme="deferred"), signed_for=req),
        "another network": lambda: request_body(
            payer, requirement(dev_stack, network="eip155:8453"), signed_for=req),
        "no EIP-712 domain": lambda: request_body(
            payer, requirement(dev_stack, extra={}), signed_for=req),
    }[case]()
    before = balances(anvil_chain, dev_stack, payer.address, payee)

    verdict = facilitator.verify(body)
    settled = facilitator.settle(body)

    assert not verdict.is_valid and verdict.invalid_reason == reason, verdict
    assert not settled.success and settled.error_reason == reason and settled.transaction == ""
    assert balances(anvil_chain, dev_stack, payer.address, payee) == before


def test_insufficient_balance_is_found_on_chain(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer = new_payer(999)
    body = request_body(payer, requirement(dev_stack, 1_000))
    assert facilitator.verify(body).invalid_reason == wire_errors.INSUFFICIENT_BALANCE
    assert facilitator.settle(body).error_reason == wire_errors.INSUFFICIENT_BALANCE
    assert balances(anvil_chain, dev_stack, payer.address) == [999]


def test_a_retry_after_topping_up_succeeds(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    """A refused settlement leaves no claim behind, so the same payload can be retried."""
    payer = new_payer(500)
    body = request_body(payer, requirement(dev_stack, 1_000))
    assert facilitator.settle(body).error_reason == wire_errors.INSUFFICIENT_BALANCE
    token = contract_at(anvil_chain, "TestUSDC", dev_stack.token.address)
    transact(anvil_chain, anvil_chain.accounts[0], token.functions.mint(payer.address, 500))
    assert facilitator.settle(body).success
    assert balances(anvil_chain, dev_stack, payer.address) == [0]


def test_a_nonce_already_used_on_chain_is_refused(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    """Someone else submitted the authorization first (e.g. the payee, directly)."""
    payer = new_payer(5_000)
    body = request_body(payer, requirement(dev_stack, 300))
    evm = body["paymentPayload"]["payload"]
    calldata = transfer_calldata(evm["authorization"], bytes.fromhex(evm["signature"][2:]))
    transact(anvil_chain, anvil_chain.accounts[2],
             {"to": dev_stack.token.address, "data": "0x" + calldata.hex()})

    assert facilitator.verify(body).invalid_reason == wire_errors.NONCE_ALREADY_USED
    assert facilitator.settle(body).error_reason == wire_errors.NONCE_ALREADY_USED
    assert balances(anvil_chain, dev_stack, payer.address) == [4_700]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"x402Version": 2},
        {"x402Version": 7, "paymentPayload": {}, "paymentRequirements": {}},
        {"x402Version": 2, "paymentPayload": {"x402Version": 2}, "paymentRequirements": {}},
    ],
)
def test_malformed_requests_raise_wire_errors(facilitator: Facilitator, body: dict) -> None:
    with pytest.raises(WireError):
        facilitator.verify(body)
    with pytest.raises(WireError):
        facilitator.settle(body)


def test_supported_lists_the_concrete_network_and_the_signer(
    dev_stack: Manifest, facilitator: Facilitator
) -> None:
    supported = facilitator.supported().to_wire()
    assert {"x402Version": 2, "scheme": "exact", "network": dev_stack.network} in supported["kinds"]
    assert supported["signers"] == {"eip155:*": [facilitator.signer.address]}
