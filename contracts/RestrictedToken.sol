// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title RestrictedToken: an ERC-20 with USDC's two kinds of refusal, for testing ASCManager.
/// @notice Like USDC, it refuses any transfer from or to a blocklisted address, and every
///         transfer while paused. Anyone may mint, blocklist and pause: test-only.
contract RestrictedToken is ERC20 {
    mapping(address account => bool blocked) public blocklisted;
    bool public paused;

    constructor() ERC20("Restricted", "RST") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 value) external {
        _mint(to, value);
    }

    function setBlocklisted(address account, bool blocked) external {
        blocklisted[account] = blocked;
    }

    function setPaused(bool paused_) external {
        paused = paused_;
    }

    function _update(address from, address to, uint256 value) internal override {
        require(!paused, "Pausable: paused");
        require(!blocklisted[from] && !blocklisted[to], "Blacklistable: account is blacklisted");
        super._update(from, to, value);
    }
}
