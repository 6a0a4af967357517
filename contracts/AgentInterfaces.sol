// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAgentDirectory: who vouches that an address is a genuine agent contract.
/// @notice Agents trust exactly one directory, their factory: a factory only lists clones of its
///         own implementation, so an agent it lists runs known code and its `owner()` can be
///         believed. Payments are attributed to, and ratings accepted from, listed agents only.
interface IAgentDirectory {
    function isAgent(address account) external view returns (bool);
}

/// @dev EIP-3009 `transferWithAuthorization` in the (v, r, s) form every USDC version has. It is
///      the call an x402 `exact` payment settles with, so an agent contract that is the `payTo`
///      of an x402 requirement can settle the client's own signature itself and record who paid.
interface IERC3009Transfer {
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}
