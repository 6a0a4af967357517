"""Blocks, receipts and plain transfers read from their proofs, with no node (pure).

The same reading as ``contracts/TransferProver.sol``, for code that must not trust whoever
hands it chain data (the vault's enclave, whose host runs the node):

* :func:`link_headers` — RLP headers that each name the previous one as parent: the last
  one's hash then vouches for every one of them (a contract that knows it, from
  ``BLOCKHASH``, vouches for the whole chain);
* :func:`proven_receipt` — a transaction's consensus receipt from a Merkle-Patricia proof
  to a header's ``receiptsRoot`` (the ``trie`` package's proof reader);
* :func:`plain_transfers` — the token's Transfer logs to an address in a successful receipt
  in which that address emitted no log (the contract's "plain transfer").

And the encodings a proof is built from (:func:`header_rlp`, :func:`encode_receipt`, used by
:mod:`a402.chain.receipts`, which reads them from a node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rlp  # type: ignore[import-untyped]
from trie import HexaryTrie

from a402.evm.address import to_checksum
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
#: The OP stack's deposit transactions (every L2 block of Base and OP Mainnet starts with one):
#: their receipts end with the deposit nonce and receipt version, when the node gives them.
OP_DEPOSIT_TYPE = 0x7E
TRANSFER_TOPIC = keccak256(b"Transfer(address,address,uint256)")
#: A header, a proof node or a receipt larger than this is refused unread.
MAX_ITEM = 1 << 20


class ProofError(ValueError):
    """Chain data that does not prove what it was given for."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a verified header says: its number, hash, parent and receipts root."""

    number: int
    hash: bytes
    parent: bytes
    receipts_root: bytes


@dataclass(frozen=True, slots=True)
class PlainTransfer:
    """A token Transfer log to the vault: ``position`` = block << 64 | txIndex << 32 |
    logIndex (within the receipt), as ``TransferProver.provenTransfer`` returns it."""

    sender: str
    amount: int
    position: int


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
            value = receipt[name]
            fields.append(int(value, 16) if isinstance(value, str) else int(value))
    body = bytes(rlp.encode(fields))
    return body if kind == 0 else bytes([kind]) + body


def read_header(encoded: bytes) -> Header:
    """The fields a proof needs from an RLP header (:class:`ProofError` if it is not one)."""
    if len(encoded) > MAX_ITEM:
        raise ProofError("a header larger than any block's")
    try:
        fields = rlp.decode(encoded)
        parent, root, number = bytes(fields[0]), bytes(fields[5]), fields[8]
    except (rlp.exceptions.DecodingError, IndexError, TypeError) as e:
        raise ProofError(f"not a block header: {e}") from None
    if len(parent) != 32 or len(root) != 32 or not isinstance(number, bytes):
        raise ProofError("not a block header")
    return Header(int.from_bytes(number, "big"), keccak256(encoded), parent, root)


def link_headers(encoded: Sequence[bytes], *, after: Header | None = None) -> list[Header]:
    """``encoded``, consecutive RLP headers, each the parent of the next (and the first a
    child of ``after``, when given): the last one's hash then vouches for them all."""
    headers = [read_header(e) for e in encoded]
    previous = after
    for h in headers:
        if previous is not None and (h.parent != previous.hash
                                     or h.number != previous.number + 1):
            raise ProofError(f"block {h.number} does not follow block {previous.number}")
        previous = h
    return headers


def proven_receipt(header: Header, tx_index: int, nodes: Sequence[bytes]) -> bytes:
    """Transaction ``tx_index``'s consensus receipt, read from ``nodes`` (the trie nodes from
    ``header``'s ``receiptsRoot`` to it)."""
    if not 0 <= tx_index < 1 << 32 or any(len(n) > MAX_ITEM for n in nodes):
        raise ProofError("not a receipt proof")
    try:
        proof = tuple(rlp.decode(n) for n in nodes)
        value = HexaryTrie.get_from_proof(  # type: ignore[no-untyped-call]
            header.receipts_root, rlp.encode(tx_index), proof)
    except Exception as e:  # the trie package raises several kinds for a bad proof
        raise ProofError(f"the receipt proof does not verify: {e}") from None
    if not value:
        raise ProofError(f"block {header.number} has no transaction {tx_index}")
    return bytes(value)


def plain_transfers(receipt: bytes, *, token: str, to: str, block: int, tx_index: int
                    ) -> list[PlainTransfer]:
    """The plain transfers of ``token`` to ``to`` in ``receipt`` (of transaction
    ``tx_index`` of ``block``): none if it failed, is not a four-field receipt, or if ``to``
    emitted a log in it (the contract's rules, ``TransferProver.sol``)."""
    try:
        body = receipt[1:] if receipt and receipt[0] < 0x80 else receipt
        fields = rlp.decode(body)
        if len(fields) != 4 or int.from_bytes(fields[0], "big") != 1:
            return []
        logs = [(bytes(a), [bytes(t) for t in topics], bytes(data))
                for a, topics, data in fields[3]]
    except (rlp.exceptions.DecodingError, TypeError, ValueError) as e:
        raise ProofError(f"not a receipt: {e}") from None
    token_b, to_b = bytes.fromhex(token.removeprefix("0x")), bytes.fromhex(to.removeprefix("0x"))
    if any(address == to_b for address, _, _ in logs):
        return []
    found = []
    for i, (address, topics, data) in enumerate(logs):
        if (address != token_b or len(topics) != 3 or topics[0] != TRANSFER_TOPIC
                or topics[2] != bytes(12) + to_b or len(data) != 32):
            continue
        sender, amount = topics[1][12:], int.from_bytes(data, "big")
        if sender == bytes(20) or amount >> 128 or topics[1][:12] != bytes(12):
            continue
        found.append(PlainTransfer(to_checksum(sender), amount,
                                   block << 64 | tx_index << 32 | i))
    return found


__all__ = ["HEADER_FIELDS", "Header", "PlainTransfer", "ProofError", "encode_receipt",
           "header_rlp", "link_headers", "plain_transfers", "proven_receipt", "read_header"]
