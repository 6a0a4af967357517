// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantToken: a hostile ERC-20 for testing ASCManager.
/// @notice Behaves as a plain ERC-20 until armed; then, on its next transfer, it first calls
///         `target` with `data` (a call back into the manager, the attack) and records whether
///         that call succeeded and what it returned, before completing the transfer. Test-only.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public data;
    bool public armed;
    bool public attempted;
    bool public reentrySucceeded;
    bytes public reentryResult;

    constructor() ERC20("Reentrant", "RNT") {}

    function mint(address to, uint256 value) external {
        _mint(to, value);
    }

    /// @notice Arm the hook: the next transfer calls `target_` with `data_` first.
    function arm(address target_, bytes calldata data_) external {
        target = target_;
        data = data_;
        armed = true;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (armed) {
            armed = false;
            attempted = true;
            (bool ok, bytes memory result) = target.call(data);
            reentrySucceeded = ok;
            reentryResult = result;
        }
        super._update(from, to, value);
    }
}
