"""Receipt proofs read from a node: that a transaction's log is in a block, in the form
``TransferProver.sol`` checks on-chain (does I/O: reads one block and its receipts).

A block's header commits to ``receiptsRoot``, the root of a Merkle-Patricia trie mapping
``rlp(txIndex)`` to each transaction's consensus receipt. :func:`receipt_proof` rebuilds that
trie from the node's receipts (the ``trie`` package, the Ethereum Foundation's), checks it
against the header, and returns the header's RLP and the trie nodes from the root to the
receipt, so that a contract that knows the block's hash (``BLOCKHASH``, EIP-2935) can read
the receipt without trusting whoever sent it. The encodings are :mod:`a402.evm.receipts`'.
"""

from __future__ import annotations

import rlp  # type: ignore[import-untyped]
from eth_abi import encode
from trie import HexaryTrie

from a402.chain.node import Chain
from a402.evm.keccak import keccak256
from a402.evm.receipts import ProofError, encode_receipt, header_rlp


def block_receipts_trie(chain: Chain, number: int) -> tuple[bytes, HexaryTrie]:
    """Block ``number``'s RLP header and its receipts trie, checked against it
    (:class:`~a402.evm.receipts.ProofError` if the node's block or receipts do not hash to
    what its header says)."""
    w3 = chain.w3
    block = w3.eth.get_block(number, full_transactions=False)
    header = header_rlp(block)
    if keccak256(header) != bytes(block["hash"]):
        raise ProofError(f"block {number}: its header does not hash to its hash")
    trie = HexaryTrie({})
    for receipt in w3.eth.get_block_receipts(number):
        trie[rlp.encode(int(receipt["transactionIndex"]))] = encode_receipt(receipt)
    if trie.root_hash != bytes(block["receiptsRoot"]):
        raise ProofError(f"block {number}: its receipts do not make its root")
    return header, trie


def trie_proof(trie: HexaryTrie, tx_index: int) -> list[bytes]:
    """The RLP trie nodes from the root to transaction ``tx_index``'s receipt."""
    return [bytes(rlp.encode(node)) for node in trie.get_proof(rlp.encode(tx_index))]


def receipt_proof(chain: Chain, tx_hash: bytes | str, log_index: int, *,
                  through: int | None = None) -> bytes:
    """``abi.encode(headers, txIndex, proof, logIndex)`` for log ``log_index`` (counted within
    the receipt: the first log of the transaction is 0, whatever the node's block-wide
    ``logIndex``) of transaction ``tx_hash``: the argument of ``A402Vault.proveTransfer``.
    ``headers``: the transaction's block and each block after it up to ``through`` (default:
    that block alone). Good on-chain while the chain knows the last one's hash: from the next
    block on (``BLOCKHASH`` knows no hash of the block being built) for 8,191 blocks, or for
    good once the vault keeps it (a landed settlement's anchor, ``A402Vault.checkpoint``):
    prove an old transfer ``through`` such a block."""
    mined = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    number = int(mined["blockNumber"])
    header, trie = block_receipts_trie(chain, number)
    headers = [header]
    for later in range(number + 1, (number if through is None else through) + 1):
        block = chain.w3.eth.get_block(later)
        headers.append(header_rlp(block))
        if keccak256(headers[-1]) != bytes(block["hash"]):
            raise ProofError(f"block {later}: its header does not hash to its hash")
    index = int(mined["transactionIndex"])
    return encode(["bytes[]", "uint256", "bytes[]", "uint256"],
                  [headers, index, trie_proof(trie, index), log_index])


__all__ = ["block_receipts_trie", "receipt_proof", "trie_proof"]
