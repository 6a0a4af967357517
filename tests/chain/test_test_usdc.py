"""TestUSDC on a real anvil node: EIP-3009 and EIP-2612 as USDC behaves.

Signatures here are made with eth-account's generic EIP-712 encoder, not with
a402's own fast encoder, so these tests check the contract independently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, contract_at, deploy_contract, transact

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def sign_auth(
    signer: LocalAccount, stack: Manifest, *, primary: str = "TransferWithAuthorization",
    chain_id: int | None = None, **message: Any,
) -> bytes:
    domain = {
        "name": stack.token.name, "version": stack.token.version,
        "chainId": chain_id or stack.chain_id, "verifyingContract": stack.token.address,
    }
    signed = Account.sign_typed_data(signer.key, domain, {primary: AUTH_FIELDS}, message)
    return bytes(signed.signature)


def authorization(payer: str, payee: str, value: int, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"from": payer, "to": payee, "value": value, "validAfter": now - 600,
            "validBefore": now + 600, "nonce": os.urandom(32)} | overrides


def args(auth: dict[str, Any]) -> list[Any]:
    return [auth["from"], auth["to"], auth["value"], auth["validAfter"], auth["validBefore"],
            auth["nonce"]]


@pytest.fixture
def token(anvil_chain: Chain, dev_stack: Manifest) -> Any:
    return contract_at(anvil_chain, "TestUSDC", dev_stack.token.address)


def test_token_looks_like_usdc(token: Any, dev_stack: Manifest) -> None:
    assert token.functions.decimals().call() == 6
    assert token.functions.name().call() == "USD Coin"
    assert token.functions.version().call() == "2"


def test_transfer_with_authorization_moves_exactly_the_value_once(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer, payee = new_payer(5_000_000), Account.create().address
    relayer = anvil_chain.accounts[1]
    auth = authorization(payer.address, payee, 1_250_000)
    signature = sign_auth(payer, dev_stack, **auth)

    transfer = token.functions.transferWithAuthorization(*args(auth), signature)
    transact(anvil_chain, relayer, transfer)

    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 3_750_000
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == 1_250_000
    assert token.functions.authorizationState(payer.address, auth["nonce"]).call() is True
    with pytest.raises(TransactionFailed, match="authorization is used"):
        transact(anvil_chain, relayer,
                 token.functions.transferWithAuthorization(*args(auth), signature))
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == 1_250_000


def test_vrs_overload_accepts_the_same_signature(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer, payee = new_payer(), Account.create().address
    auth = authorization(payer.address, payee, 10)
    sig = sign_auth(payer, dev_stack, **auth)
    call = token.functions.transferWithAuthorization(*args(auth), sig[64], sig[:32], sig[32:64])
    transact(anvil_chain, anvil_chain.accounts[1], call)
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == 10


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda a: a | {"validBefore": int(time.time()) - 1}, "authorization is expired"),
        (lambda a: a | {"validAfter": int(time.time()) + 3600}, "authorization is not yet valid"),
    ],
)
def test_time_window_is_enforced(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount],
    tamper: Callable[[dict[str, Any]], dict[str, Any]], reason: str,
) -> None:
    payer = new_payer()
    auth = tamper(authorization(payer.address, Account.create().address, 1))
    sig = sign_auth(payer, dev_stack, **auth)
    with pytest.raises(TransactionFailed, match=reason):
        transact(anvil_chain, anvil_chain.accounts[1],
                 token.functions.transferWithAuthorization(*args(auth), sig))


def test_signature_for_another_chain_or_value_is_invalid(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer, payee = new_payer(), Account.create().address
    auth = authorization(payer.address, payee, 100)
    wrong_chain = sign_auth(payer, dev_stack, chain_id=1, **auth)
    signed_for_less = sign_auth(payer, dev_stack, **(auth | {"value": 99}))
    for sig in (wrong_chain, signed_for_less):
        with pytest.raises(TransactionFailed, match="invalid signature"):
            transact(anvil_chain, anvil_chain.accounts[1],
                     token.functions.transferWithAuthorization(*args(auth), sig))
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == 0


def test_overdraft_reverts_with_usdc_wording(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer = new_payer(5)
    auth = authorization(payer.address, Account.create().address, 6)
    with pytest.raises(TransactionFailed, match="transfer amount exceeds balance"):
        transact(anvil_chain, anvil_chain.accounts[1], token.functions.transferWithAuthorization(
            *args(auth), sign_auth(payer, dev_stack, **auth)))


def test_receive_with_authorization_only_by_the_payee(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer, payee = new_payer(), anvil_chain.accounts[2]
    auth = authorization(payer.address, payee.address, 7)
    sig = sign_auth(payer, dev_stack, primary="ReceiveWithAuthorization", **auth)
    call = token.functions.receiveWithAuthorization(*args(auth), sig)
    with pytest.raises(TransactionFailed, match="caller must be the payee"):
        transact(anvil_chain, anvil_chain.accounts[1], call)
    before = token_balance(anvil_chain, dev_stack.token.address, payee.address)
    transact(anvil_chain, payee, call)
    assert token_balance(anvil_chain, dev_stack.token.address, payee.address) == before + 7


def test_cancelled_authorization_can_no_longer_be_used(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    payer = new_payer()
    auth = authorization(payer.address, Account.create().address, 1)
    cancel = Account.sign_typed_data(
        payer.key,
        {"name": dev_stack.token.name, "version": dev_stack.token.version,
         "chainId": dev_stack.chain_id, "verifyingContract": dev_stack.token.address},
        {"CancelAuthorization": [{"name": "authorizer", "type": "address"},
                                 {"name": "nonce", "type": "bytes32"}]},
        {"authorizer": payer.address, "nonce": auth["nonce"]},
    )
    transact(anvil_chain, anvil_chain.accounts[1], token.functions.cancelAuthorization(
        payer.address, auth["nonce"], bytes(cancel.signature)))
    with pytest.raises(TransactionFailed, match="authorization is used or canceled"):
        transact(anvil_chain, anvil_chain.accounts[1], token.functions.transferWithAuthorization(
            *args(auth), sign_auth(payer, dev_stack, **auth)))


def test_permit_sets_allowance_and_consumes_a_nonce(
    anvil_chain: Chain, dev_stack: Manifest, token: Any, new_payer: Callable[..., LocalAccount]
) -> None:
    owner, spender = new_payer(), Account.create().address
    deadline = int(time.time()) + 600
    permit = Account.sign_typed_data(
        owner.key,
        {"name": dev_stack.token.name, "version": dev_stack.token.version,
         "chainId": dev_stack.chain_id, "verifyingContract": dev_stack.token.address},
        {"Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"}]},
        {"owner": owner.address, "spender": spender, "value": 42, "nonce": 0, "deadline": deadline},
    )
    sig = bytes(permit.signature)
    v, r, s = sig[64], sig[:32], sig[32:64]
    call = token.functions.permit(owner.address, spender, 42, deadline, v, r, s)
    transact(anvil_chain, anvil_chain.accounts[1], call)
    assert token.functions.allowance(owner.address, spender).call() == 42
    assert token.functions.nonces(owner.address).call() == 1
    with pytest.raises(TransactionFailed, match="invalid signature"):
        transact(anvil_chain, anvil_chain.accounts[1], call)


def test_contract_wallet_pays_by_eip1271(
    anvil_chain: Chain, dev_stack: Manifest, token: Any
) -> None:
    owner = Account.create()
    wallet = deploy_contract(anvil_chain, anvil_chain.accounts[0], "ERC1271Wallet", owner.address)
    transact(anvil_chain, anvil_chain.accounts[0], token.functions.mint(wallet.address, 100))
    payee = Account.create().address
    auth = authorization(wallet.address, payee, 60)
    transact(anvil_chain, anvil_chain.accounts[1], token.functions.transferWithAuthorization(
        *args(auth), sign_auth(owner, dev_stack, **auth)))
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == 60
    stranger_auth = authorization(wallet.address, payee, 40)
    with pytest.raises(TransactionFailed, match="invalid signature"):
        transact(anvil_chain, anvil_chain.accounts[1], token.functions.transferWithAuthorization(
            *args(stranger_auth), sign_auth(Account.create(), dev_stack, **stranger_auth)))
