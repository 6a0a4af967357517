// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title MandateRegistry: where an owner revokes the spending mandates it signed.
/// @notice A mandate (see `a402.mandate`) is EIP-712 typed data signed by a fund owner in this
///         contract's domain ("a402 Mandates", "1", chain id, this address); its hash is that
///         EIP-712 digest. Revoking it here is final: everyone who relies on the mandate (the
///         paying client, later the vault) reads `isRevoked(owner, mandateHash)` before paying.
///
///         Revocations are keyed by (owner, mandate hash), never by the hash alone: the hash
///         of a mandate is not secret (providers may see it), and a revocation anyone could
///         file under any hash would let a stranger switch an agent off. Only the owner can
///         revoke, by calling `revoke` or by signing `Revocation(bytes32 mandate)` in this
///         domain, which anyone may relay (`revokeBySig`: an owner with no gas, or whose
///         agent is running away, has a friend or a watchtower submit it). EOA signatures and
///         ERC-1271 contract wallets are both accepted (OpenZeppelin's SignatureChecker).
///         Revoking twice is harmless: the first block stays the recorded one.
contract MandateRegistry is EIP712 {
    bytes32 public constant REVOCATION_TYPEHASH = keccak256("Revocation(bytes32 mandate)");

    mapping(address owner => mapping(bytes32 mandateHash => uint256 blockNumber)) private _revokedAt;

    event MandateRevoked(address indexed owner, bytes32 indexed mandateHash, address relayer);

    error BadRevocationSignature();

    constructor() EIP712("a402 Mandates", "1") {}

    /// @notice Revoke a mandate the caller signed as owner.
    function revoke(bytes32 mandateHash) external {
        _revoke(msg.sender, mandateHash);
    }

    /// @notice Revoke `owner`'s mandate with the owner's EIP-712 `Revocation` signature.
    function revokeBySig(address owner, bytes32 mandateHash, bytes calldata signature) external {
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(REVOCATION_TYPEHASH, mandateHash)));
        if (!SignatureChecker.isValidSignatureNow(owner, digest, signature)) {
            revert BadRevocationSignature();
        }
        _revoke(owner, mandateHash);
    }

    /// @notice Whether `owner` revoked `mandateHash`.
    function isRevoked(address owner, bytes32 mandateHash) external view returns (bool) {
        return _revokedAt[owner][mandateHash] != 0;
    }

    /// @notice The block in which `owner` revoked `mandateHash` (0: not revoked).
    function revokedAt(address owner, bytes32 mandateHash) external view returns (uint256) {
        return _revokedAt[owner][mandateHash];
    }

    /// @notice This contract's EIP-712 domain separator (mandates and revocations are signed in it).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _revoke(address owner, bytes32 mandateHash) private {
        if (_revokedAt[owner][mandateHash] == 0) {
            _revokedAt[owner][mandateHash] = block.number;
        }
        emit MandateRevoked(owner, mandateHash, msg.sender);
    }
}
