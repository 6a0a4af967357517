"""Sending transactions from local keys, in steps a payment system can journal.

The facilitator must know a transaction's hash *before* it is broadcast, so it
can write it down and find the payment again after a crash; hence ``sign``,
``broadcast`` and ``wait_for_receipt`` are separate, and ``transact`` is only
their composition for the simple cases (deployment, tests, the demo).

Every call that reaches the node maps its failures through
:func:`a402.chain.rpc.node_errors`: no answer raises ``ChainUnavailable``, an
error answer ``RpcError``, whatever web3.py or its HTTP library raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.types import Nonce, TxParams, TxReceipt, Wei

from a402.chain.artifacts import load_artifact
from a402.chain.node import Chain
from a402.chain.rpc import RpcError, node_errors


class TransactionFailed(Exception):
    """The chain refused the call (estimation) or the transaction reverted."""

    def __init__(self, reason: str, tx_hash: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tx_hash = tx_hash


ESTIMATE_HEADROOM = 1.2


@dataclass(frozen=True)
class SignedTx:
    tx_hash: str
    raw: bytes
    nonce: int


def revert_reason(error: ContractLogicError) -> str:
    message = str(error.message or error)
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted")


def sign(
    chain: Chain, account: LocalAccount, call: ContractFunction | TxParams, *, nonce: int,
    gas: int | None = None, value: int = 0,
) -> SignedTx:
    """Build and sign a transaction; estimation reverts raise TransactionFailed."""
    params: TxParams = {
        "from": account.address, "nonce": Nonce(nonce), "value": Wei(value),
        "chainId": chain.chain_id,
    }
    if gas is not None:
        params["gas"] = gas
    try:
        with node_errors("building a transaction"):
            tx = call.build_transaction(params) if isinstance(call, ContractFunction) else {
                **call, **params, "gas": gas or chain.w3.eth.estimate_gas({**call, **params}),
            }
            if gas is None:
                # An estimate is exact for the state it ran on; a write that costs more a
                # block later (a slot first set in this block, a clock read) would run out.
                tx["gas"] = int(tx["gas"] * ESTIMATE_HEADROOM)
            if "maxFeePerGas" not in tx and "gasPrice" not in tx:
                tx.update(_fees(chain))
    except ContractLogicError as e:
        raise TransactionFailed(revert_reason(e)) from e
    # eth-account types a transaction as a plain dict, web3 as the TxParams TypedDict.
    signed = account.sign_transaction(cast(dict[str, Any], tx))
    return SignedTx(tx_hash=HexBytes(signed.hash).to_0x_hex(), raw=bytes(signed.raw_transaction),
                    nonce=nonce)


def _fees(chain: Chain) -> TxParams:
    base = chain.w3.eth.get_block("latest").get("baseFeePerGas", 0)
    tip = 10**9
    return {"maxFeePerGas": Wei(2 * base + tip), "maxPriorityFeePerGas": Wei(tip)}


def broadcast(chain: Chain, signed: SignedTx) -> str:
    """Send a signed transaction; sending one the node already has is not an error."""
    try:
        with node_errors("eth_sendRawTransaction"):
            chain.w3.eth.send_raw_transaction(signed.raw)
    except (ValueError, RpcError) as e:
        text = str(e).lower()
        if "already known" not in text and "already imported" not in text:
            raise
    return signed.tx_hash


def wait_for_receipt(chain: Chain, tx_hash: str, timeout: float) -> TxReceipt:
    """The receipt, or ``TimeExhausted`` once ``timeout`` seconds have passed."""
    with node_errors("eth_getTransactionReceipt"):
        return chain.w3.eth.wait_for_transaction_receipt(
            HexBytes(tx_hash), timeout=timeout, poll_latency=0.02
        )


def pending_nonce(chain: Chain, address: ChecksumAddress) -> int:
    with node_errors("eth_getTransactionCount"):
        return int(chain.w3.eth.get_transaction_count(address, "pending"))


def transact(
    chain: Chain, account: LocalAccount, call: ContractFunction | TxParams, *,
    value: int = 0, gas: int | None = None, timeout: float = 60.0,
) -> TxReceipt:
    """Sign, send and wait; a revert raises TransactionFailed."""
    with chain.sender_lock(account.address):
        signed = sign(chain, account, call, nonce=pending_nonce(chain, account.address),
                      gas=gas, value=value)
        broadcast(chain, signed)
    receipt = wait_for_receipt(chain, signed.tx_hash, timeout)
    if receipt["status"] != 1:
        raise TransactionFailed("transaction reverted", signed.tx_hash)
    return receipt


def deploy_contract(chain: Chain, account: LocalAccount, name: str, *args: Any) -> Contract:
    """Deploy the packaged artifact ``name`` and return a bound contract."""
    artifact = load_artifact(name)
    factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = transact(chain, account, {"data": factory.constructor(*args).data_in_transaction})
    address = receipt["contractAddress"]
    assert address is not None  # a contract creation's receipt names the contract
    return contract_at(chain, name, address)


def contract_at(chain: Chain, name: str, address: str) -> Contract:
    return chain.w3.eth.contract(address=chain.w3.to_checksum_address(address),
                                 abi=load_artifact(name).abi)


__all__ = [
    "SignedTx", "TimeExhausted", "TransactionFailed", "broadcast", "contract_at",
    "deploy_contract", "pending_nonce", "revert_reason", "sign", "transact", "wait_for_receipt",
]
