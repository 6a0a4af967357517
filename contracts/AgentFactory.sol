// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {Agent} from "./Agent.sol";
import {AgentCardInput} from "./AgentCard.sol";
import {IAgentDirectory} from "./AgentInterfaces.sol";

/// @title AgentFactory: deploys agents as minimal clones of one implementation and lists them.
/// @notice A clone (EIP-1167) costs ~41k gas to create instead of millions for a fresh copy of
///         `Agent`; every clone runs the implementation's code, so "listed by this factory" means
///         "runs known code", which is what agents and registries rely on (`IAgentDirectory`).
///         The list only grows: `createAgent` appends in O(1), and reading it is paged
///         (`agentCount`, `agentAt`, `agentsPage`), so nothing that changes state ever loops
///         over it. Anyone may create an agent for any owner.
contract AgentFactory is IAgentDirectory {
    /// @notice The `Agent` every clone delegates to.
    address public immutable implementation;

    address[] private _agents;
    mapping(address agent => uint256) private _position; // index + 1; 0 = not ours

    event AgentCreated(address indexed agent, address indexed owner, uint256 indexed index);

    error NoImplementation();
    error IndexOutOfRange(uint256 index, uint256 count);

    constructor(address implementation_) {
        if (implementation_.code.length == 0) revert NoImplementation();
        implementation = implementation_;
    }

    /// @notice Deploys an agent owned by `owner` with `card`, alive for `activityWindow` seconds
    ///         after each owner action. Emits the agent's card events, then `AgentCreated`.
    function createAgent(address owner, AgentCardInput calldata card, uint32 activityWindow)
        external
        returns (address agent)
    {
        agent = Clones.clone(implementation);
        _agents.push(agent);
        uint256 count = _agents.length;
        _position[agent] = count;
        Agent(payable(agent)).initialize(owner, card, activityWindow);
        emit AgentCreated(agent, owner, count - 1);
    }

    function isAgent(address account) external view returns (bool) {
        return _position[account] != 0;
    }

    function agentCount() external view returns (uint256) {
        return _agents.length;
    }

    function agentAt(uint256 index) external view returns (address) {
        uint256 count = _agents.length;
        if (index >= count) revert IndexOutOfRange(index, count);
        return _agents[index];
    }

    /// @notice Up to `limit` agents from `offset` (fewer at the end of the list).
    function agentsPage(uint256 offset, uint256 limit) external view returns (address[] memory page) {
        uint256 count = _agents.length;
        if (offset >= count) return new address[](0);
        uint256 end = limit > count - offset ? count : offset + limit;
        page = new address[](end - offset);
        for (uint256 i = offset; i < end; ++i) {
            page[i - offset] = _agents[i];
        }
    }
}
