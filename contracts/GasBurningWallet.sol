// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title GasBurningWallet: an EIP-1271 wallet whose check costs what it is told to, for testing
///        ASCManager's batches.
/// @notice `isValidSignature` first burns `burn` gas, then approves a digest its owner's key
///         signed. With `burn` = type(uint256).max it burns every unit of gas it is given and
///         never answers: the wallet a hostile client would use to consume a whole batch.
///         Test-only: anyone may have it approve a spender.
contract GasBurningWallet is IERC1271 {
    address public immutable owner;
    uint256 public immutable burn;

    constructor(address owner_, uint256 burn_) {
        owner = owner_;
        burn = burn_;
    }

    /// @notice Let `spender` pull this wallet's tokens (an ASCManager, for its deposits).
    function approve(IERC20 token, address spender, uint256 value) external {
        token.approve(spender, value);
    }

    function isValidSignature(bytes32 digest, bytes calldata signature) external view returns (bytes4) {
        uint256 start = gasleft();
        while (start - gasleft() < burn) {}
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        return err == ECDSA.RecoverError.NoError && signer == owner ? IERC1271.isValidSignature.selector : bytes4(0);
    }
}
