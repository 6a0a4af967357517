// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

/// @title A402Message
/// @notice The A402 payment message `m` and the vault's authorization digest, as EIP-712
///         typed-data hashes. `a402.crypto.message` computes the same bytes in Python.
/// @dev The domain is `EIP712Domain(name "A402", version "1", chainId, verifyingContract)`,
///      identical to OpenZeppelin's `EIP712("A402", "1")` at the same address, so a contract
///      inheriting that can pass `_domainSeparatorV4()` here.
library A402Message {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant NAME_HASH = keccak256("A402");
    bytes32 internal constant VERSION_HASH = keccak256("1");

    /// @dev `requestId` is the channel's request counter k (the paper's rid = (cid, k));
    ///      `amount` is the payment δ in token base units; `resultHash` is the answer hash
    ///      keccak256("A402/answer/v1" ‖ keccak256(request) ‖ keccak256(result)) (`a402.crypto.answer_hash`):
    ///      the pre-signed m names the request it answers as well as the result (the field keeps
    ///      its name; the contracts treat it as opaque).
    bytes32 internal constant PAYMENT_TYPEHASH =
        keccak256("A402Payment(bytes32 channelId,uint256 requestId,uint256 amount,bytes32 resultHash)");

    /// @dev The vault's conditional payment signature σ_U signs this. `challenge` is the EVM
    ///      Schnorr challenge e of the provider's pre-signature: fixing it means the only
    ///      signature a settlement can present is the completion (e, ŝ + t) of that
    ///      pre-signature, from which the vault extracts t.
    bytes32 internal constant AUTHORIZATION_TYPEHASH =
        keccak256("A402PaymentAuthorization(bytes32 payment,uint256 amount,bytes32 challenge)");

    function domainSeparator(uint256 chainId, address verifyingContract) internal pure returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chainId, verifyingContract));
    }

    /// @notice m = H(domain ‖ cid ‖ rid ‖ δ ‖ answer hash), the message the provider pre-signs.
    function paymentMessage(
        bytes32 domain,
        bytes32 channelId,
        uint256 requestId,
        uint256 amount,
        bytes32 resultHash
    ) internal pure returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(PAYMENT_TYPEHASH, channelId, requestId, amount, resultHash));
        return MessageHashUtils.toTypedDataHash(domain, structHash);
    }

    /// @notice The digest of the vault's conditional payment signature σ_U (ECDSA).
    function authorizationDigest(bytes32 domain, bytes32 payment, uint256 amount, bytes32 challenge)
        internal
        pure
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(AUTHORIZATION_TYPEHASH, payment, amount, challenge));
        return MessageHashUtils.toTypedDataHash(domain, structHash);
    }
}
