"""Receipt proofs: that a transaction's log is in a block, in the form ``TransferProver.sol``
checks on-chain (does I/O: reads one block and its receipts).

A block's header commits to ``receiptsRoot``, the root of a Merkle-Patricia trie mapping
``rlp(txIndex)`` to each transaction's consensus receipt (EIP-2718 type byte, if any, then
``rlp([status, cumulativeGasUsed, logsBloom, logs])``). :func:`receipt_proof` rebuilds that
trie from the node's receipts (the ``trie`` package, the Ethereum Foundation's), checks it
against the header, and returns the header's RLP and the trie nodes from the root to the
receipt, so that a contract that knows the block's hash (``BLOCKHASH``, EIP-2935) can read
the receipt without trusting whoever sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_abi import encode
from trie import HexaryTrie

from a402.chain.node import Chain
from a402.evm.keccak import keccak256

#: The header's fields in their RLP order; a block has a prefix of them (newer forks add
#: fields at the end), and the encoding stops at the first one the node does not return.
HEADER_FIELDS = (
    "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot",
    "logsBloom", "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData",
    "mixHash", "nonce", "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas",
    "parentBeaconBlockRoot", "requestsHash",
)
_INTEGERS = frozenset({"difficulty", "number", "gasLimit", "gasUsed", "timestamp",
                       "baseFeePerGas", "blobGasUsed", "excessBlobGas"})


class ReceiptProofError(ValueError):
    """The node's block does not hash to its hash, or its receipts not to its root."""


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def header_rlp(block: Mapping[str, Any]) -> bytes:
    """The RLP header of ``block`` (a node's ``eth_getBlockByNumber`` answer)."""
    items: list[Any] = []
    for name in HEADER_FIELDS:
        if block.get(name) is None:
            break
        value = block[name]
        items.append(int(value) if name in _INTEGERS else _bytes(value))
    return bytes(rlp.encode(items))


#: The OP stack's deposit transactions (every L2 block of Base and OP Mainnet starts with one):
#: their receipts end with the deposit nonce and receipt version, when the node gives them.
OP_DEPOSIT_TYPE = 0x7E


def encode_receipt(receipt: Mapping[str, Any]) -> bytes:
    """A receipt's consensus encoding (what the receipts trie holds)."""
    logs = [[_bytes(log["address"]), [_bytes(t) for t in log["topics"]], _bytes(log["data"])]
            for log in receipt["logs"]]
    fields: list[Any] = [int(receipt["status"]), int(receipt["cumulativeGasUsed"]),
                         _bytes(receipt["logsBloom"]), logs]
    kind = int(receipt.get("type", 0))
    if kind == OP_DEPOSIT_TYPE:
        for name in ("depositNonce", "depositReceiptVersion"):
            if receipt.get(name) is None:
                break
            fields.append(int(receipt[name], 16) if isinstance(receipt[name], str)
                          else int(receipt[name]))
    body = bytes(rlp.encode(fields))
    return body if kind == 0 else bytes([kind]) + body


def receipt_proof(chain: Chain, tx_hash: bytes | str, log_index: int) -> bytes:
    """``abi.encode(header, txIndex, proof, logIndex)`` for log ``log_index`` (counted within
    the receipt: the first log of the transaction is 0, whatever the node's block-wide
    ``logIndex``) of transaction ``tx_hash``: the argument of ``A402Vault.proveTransfer``.
    Good on-chain from the next block on (``BLOCKHASH`` knows no hash of the block being
    built) while the block is one of the last 8,191."""
    w3 = chain.w3
    mined = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    block = w3.eth.get_block(mined["blockNumber"], full_transactions=False)
    header = header_rlp(block)
    if keccak256(header) != _bytes(block["hash"]):
        raise ReceiptProofError(f"block {block['number']}: its header does not hash to its hash")
    trie = HexaryTrie({})
    for tx in block["transactions"]:
        receipt = w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
        trie[rlp.encode(int(receipt["transactionIndex"]))] = encode_receipt(receipt)
    if trie.root_hash != _bytes(block["receiptsRoot"]):
        raise ReceiptProofError(f"block {block['number']}: its receipts do not make its root")
    key = rlp.encode(int(mined["transactionIndex"]))
    nodes = [bytes(rlp.encode(node)) for node in trie.get_proof(key)]
    return encode(["bytes", "uint256", "bytes[]", "uint256"],
                  [header, int(mined["transactionIndex"]), nodes, log_index])


__all__ = ["HEADER_FIELDS", "ReceiptProofError", "encode_receipt", "header_rlp",
           "receipt_proof"]
