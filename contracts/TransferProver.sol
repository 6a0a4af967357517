// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.26;

import {BlockHeader} from "@openzeppelin/contracts/utils/BlockHeader.sol";
import {Memory} from "@openzeppelin/contracts/utils/Memory.sol";
import {RLP} from "@openzeppelin/contracts/utils/RLP.sol";
import {TrieProof} from "@openzeppelin/contracts/utils/cryptography/TrieProof.sol";

/// @title TransferProver: proves that a plain ERC-20 `transfer` to an address was mined
/// @notice Stateless; one instance serves every contract (A402Vault deploys it once per chain
///         at a CREATE2 address). `provenTransfer` checks a receipt proof against a chain of
///         headers and returns the transfer it shows and the last header, whose hash the
///         caller must know to be the chain's.
/// @dev What it proves, and why it can be trusted:
///      * the block: its header starts a chain of headers, each the parent of the next, whose
///        last one the caller knows to be the chain's (`BLOCKHASH` for the last 256 blocks,
///        the EIP-2935 history contract for the last 8,191, or a hash it stored earlier), so
///        every field of it is the chain's, among them `receiptsRoot`;
///      * the receipt: a Merkle-Patricia proof from that root for key `rlp(txIndex)`
///        (OpenZeppelin's `TrieProof`), so its bytes are the transaction's consensus receipt;
///      * the transfer: the receipt succeeded (status 1), and its log `logIndex` (counted
///        within the receipt) was emitted by `token` with topics (Transfer, from, `to`) and a
///        32-byte amount below 2^128, `from` not zero;
///      * a plain transfer: no log of the receipt was emitted by `to` itself. Money `to`
///        takes in by its own functions (A402Vault's `deposit`, the pulls of its `settle`)
///        is in transactions where `to` emits an event; those are counted by `to`'s own
///        records and must not be counted again as a transfer.
///      `position` = block << 64 | txIndex << 32 | logIndex names the log once on the chain.
///      Every byte it reads is authenticated by the block hash, so RLP leniency (the library
///      accepts non-canonical integers) cannot be used to change what it reads.
contract TransferProver {
    using Memory for Memory.Slice;
    using RLP for Memory.Slice;

    bytes32 private constant _TRANSFER = keccak256("Transfer(address,address,uint256)");

    /// @notice The headers do not link (or a number is out of range).
    error UnknownBlock();
    /// @notice The receipt failed, or its log `logIndex` is not `token`'s Transfer to `to`.
    error NotATransfer();
    /// @notice `to` emitted a log in the same transaction: not a plain transfer.
    error NotPlain();

    /// @param receiptProof abi.encode(bytes[] headers, uint256 txIndex, bytes[] proof, uint256
    ///        logIndex): the RLP headers from the transfer's block on, each the parent of the
    ///        next (one: the block itself), the transaction's index in that block, the trie
    ///        nodes from its `receiptsRoot` to the receipt, the log's index within the receipt.
    /// @dev Returns, besides the transfer, `last`, the number of the last header, and
    ///      `lastHash`, its hash: the caller checks that the chain knows it (`BLOCKHASH`,
    ///      EIP-2935, or a hash it stored), which vouches for every header before it.
    function provenTransfer(address token, address to, bytes calldata receiptProof)
        external
        pure
        returns (address from, uint256 amount, uint256 position, uint256 last, bytes32 lastHash)
    {
        (bytes[] memory headers, uint256 txIndex, bytes[] memory proof, uint256 logIndex) =
            abi.decode(receiptProof, (bytes[], uint256, bytes[], uint256));
        if (headers.length == 0 || txIndex >> 32 != 0 || logIndex >> 32 != 0) revert NotATransfer();
        (last, lastHash) = _linked(headers);
        bytes memory receipt =
            TrieProof.traverse(BlockHeader.getReceiptsRoot(headers[0]), RLP.encode(txIndex), proof);
        Memory.Slice[] memory logs = _logs(receipt);
        if (logIndex >= logs.length) revert NotATransfer();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].readList()[0].readAddress() == to) revert NotPlain();
        }
        (from, amount) = _transfer(logs[logIndex], token, to);
        position = BlockHeader.getNumber(headers[0]) << 64 | txIndex << 32 | logIndex;
    }

    /// @dev Each header the parent of the next (by hash and number): the last one's number
    ///      and hash.
    function _linked(bytes[] memory headers) private pure returns (uint256 number, bytes32 hash) {
        number = BlockHeader.getNumber(headers[0]);
        if (number >> 64 != 0) revert UnknownBlock();
        hash = keccak256(headers[0]);
        for (uint256 i = 1; i < headers.length; ++i) {
            if (BlockHeader.getParentHash(headers[i]) != hash || BlockHeader.getNumber(headers[i]) != ++number) {
                revert UnknownBlock();
            }
            hash = keccak256(headers[i]);
        }
    }

    /// @dev `log` = rlp([address, topics, data]) must be `token`'s Transfer(from ≠ 0, `to`, amount).
    function _transfer(Memory.Slice log, address token, address to)
        private
        pure
        returns (address from, uint256 amount)
    {
        Memory.Slice[] memory fields = log.readList();
        Memory.Slice[] memory topics = fields[1].readList();
        bytes memory data = fields[2].readBytes();
        if (
            fields[0].readAddress() != token || topics.length != 3 || topics[0].readBytes32() != _TRANSFER
                || address(uint160(uint256(topics[2].readBytes32()))) != to || data.length != 32
        ) revert NotATransfer();
        from = address(uint160(uint256(topics[1].readBytes32())));
        if (from == address(0)) revert NotATransfer();
        amount = uint256(bytes32(data));
        if (amount >> 128 != 0) revert NotATransfer(); // what a vault's uint128 sum can hold
    }

    /// @dev A consensus receipt (EIP-2718 type byte, if any, then rlp([status, cumulativeGas,
    ///      bloom, logs])) of a successful transaction: its logs.
    function _logs(bytes memory receipt) private pure returns (Memory.Slice[] memory) {
        Memory.Slice body = Memory.asSlice(receipt);
        if (receipt.length != 0 && uint8(receipt[0]) < 0x80) body = body.slice(1);
        Memory.Slice[] memory fields = body.readList();
        if (fields.length != 4 || fields[0].readUint256() != 1) revert NotATransfer();
        return fields[3].readList();
    }
}
