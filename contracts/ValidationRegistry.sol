// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IIdentityRegistryForValidation {
    function isAuthorizedOrOwner(address spender, uint256 agentId) external view returns (bool);
}

/// @title ValidationRegistry: the ERC-8004 validation registry (2026-01 revision of the interface).
/// @notice An agent's owner (or an operator the IdentityRegistry approves) asks a named validator
///         to check one piece of work, identified by `requestHash` (a commitment to what was
///         done; `requestURI` says where the details are). Only that validator may answer, with
///         a score `response` in 0..100, a `responseHash` committing to its evidence and a free
///         `tag`; it may answer again (a progressive check, a correction), the last answer
///         stands and `lastUpdate` says when it was given.
///
///         A request is filed under its key `requestKey(agentId, requestHash)` =
///         keccak256(abi.encode(agentId, requestHash)): the work's commitment namespaced by the
///         agent it is asked for. Answers, status and the `requestHash` of both events are that
///         key. So the owner of another agent who sees a commitment (in the mempool, or
///         recomputed from a receipt) and files it first for its own agent takes nothing: the
///         agent's own owner still files it under its agent's key.
///
///         Safety: a request key is used once, ever (so a validator's answer can never be
///         re-attached to other work); nobody but the named validator can write an answer;
///         nothing here moves value. `getSummary` averages the answered requests of one agent,
///         filtered by validator and tag: a reader should name the validators it trusts, since
///         an owner chooses who validates its agent.
contract ValidationRegistry {
    struct Status {
        address validatorAddress;
        uint256 agentId;
        uint8 response;
        bytes32 responseHash;
        string tag;
        uint256 lastUpdate;
        bool answered;
    }

    uint8 private constant MAX_RESPONSE = 100;

    IIdentityRegistryForValidation private immutable _identity;

    mapping(bytes32 requestHash => Status) private _status;
    mapping(uint256 agentId => bytes32[]) private _agentRequests;
    mapping(address validator => bytes32[]) private _validatorRequests;

    event ValidationRequest(
        address indexed validatorAddress,
        uint256 indexed agentId,
        string requestURI,
        bytes32 indexed requestHash
    );
    event ValidationResponse(
        address indexed validatorAddress,
        uint256 indexed agentId,
        bytes32 indexed requestHash,
        uint8 response,
        string responseURI,
        bytes32 responseHash,
        string tag
    );

    error ZeroIdentityRegistry();
    error ZeroValidator();
    error ZeroRequestHash();
    error NotAuthorized(address sender, uint256 agentId);
    error RequestExists(bytes32 requestHash);
    error UnknownRequest(bytes32 requestHash);
    error NotTheValidator(address sender, address validator);
    error ResponseOutOfRange(uint8 response);

    constructor(address identityRegistry) {
        if (identityRegistry == address(0)) revert ZeroIdentityRegistry();
        _identity = IIdentityRegistryForValidation(identityRegistry);
    }

    function getIdentityRegistry() external view returns (address) {
        return address(_identity);
    }

    function getVersion() external pure returns (string memory) {
        return "2.0.0";
    }

    // ---------------------------------------------------------------- writing

    function validationRequest(
        address validatorAddress,
        uint256 agentId,
        string calldata requestURI,
        bytes32 requestHash
    ) external {
        if (validatorAddress == address(0)) revert ZeroValidator();
        if (requestHash == bytes32(0)) revert ZeroRequestHash();
        // Reverts for an agent that does not exist.
        if (!_identity.isAuthorizedOrOwner(msg.sender, agentId)) revert NotAuthorized(msg.sender, agentId);
        bytes32 key = requestKey(agentId, requestHash);
        Status storage s = _status[key];
        if (s.validatorAddress != address(0)) revert RequestExists(key);
        s.validatorAddress = validatorAddress;
        s.agentId = agentId;
        _agentRequests[agentId].push(key);
        _validatorRequests[validatorAddress].push(key);
        emit ValidationRequest(validatorAddress, agentId, requestURI, key);
    }

    /// @notice The key a request for `agentId` of the work committed to by `requestHash` is
    ///         filed, answered and read under.
    function requestKey(uint256 agentId, bytes32 requestHash) public pure returns (bytes32) {
        return keccak256(abi.encode(agentId, requestHash));
    }

    /// @param requestHash the request's key (`requestKey`).
    function validationResponse(
        bytes32 requestHash,
        uint8 response,
        string calldata responseURI,
        bytes32 responseHash,
        string calldata tag
    ) external {
        Status storage s = _status[requestHash];
        if (s.validatorAddress == address(0)) revert UnknownRequest(requestHash);
        if (msg.sender != s.validatorAddress) revert NotTheValidator(msg.sender, s.validatorAddress);
        if (response > MAX_RESPONSE) revert ResponseOutOfRange(response);
        s.response = response;
        s.responseHash = responseHash;
        s.tag = tag;
        s.lastUpdate = block.timestamp;
        s.answered = true;
        emit ValidationResponse(s.validatorAddress, s.agentId, requestHash, response, responseURI, responseHash, tag);
    }

    // ---------------------------------------------------------------- reading

    /// @notice By the request's key (`requestKey`). A request that was never made reverts
    ///         (`UnknownRequest`); an unanswered one has `lastUpdate` 0.
    function getValidationStatus(bytes32 requestHash)
        external
        view
        returns (
            address validatorAddress,
            uint256 agentId,
            uint8 response,
            bytes32 responseHash,
            string memory tag,
            uint256 lastUpdate
        )
    {
        Status storage s = _status[requestHash];
        if (s.validatorAddress == address(0)) revert UnknownRequest(requestHash);
        return (s.validatorAddress, s.agentId, s.response, s.responseHash, s.tag, s.lastUpdate);
    }

    /// @notice Answered requests of `agentId` by any of `validatorAddresses` (empty: any
    ///         validator) whose tag is `tag` (empty: any tag); their average response, rounded
    ///         down.
    function getSummary(uint256 agentId, address[] calldata validatorAddresses, string calldata tag)
        external
        view
        returns (uint64 count, uint8 averageResponse)
    {
        bytes32[] storage requests = _agentRequests[agentId];
        bytes32 tagHash = keccak256(bytes(tag));
        bool anyTag = bytes(tag).length == 0;
        uint256 total;
        for (uint256 i = 0; i < requests.length; i++) {
            Status storage s = _status[requests[i]];
            if (!s.answered) continue;
            if (validatorAddresses.length != 0 && !_contains(validatorAddresses, s.validatorAddress)) continue;
            if (!anyTag && keccak256(bytes(s.tag)) != tagHash) continue;
            count++;
            total += s.response;
        }
        averageResponse = count == 0 ? 0 : uint8(total / count);
    }

    function getAgentValidations(uint256 agentId) external view returns (bytes32[] memory) {
        return _agentRequests[agentId];
    }

    function getValidatorRequests(address validatorAddress) external view returns (bytes32[] memory) {
        return _validatorRequests[validatorAddress];
    }

    function _contains(address[] calldata list, address item) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; i++) {
            if (list[i] == item) return true;
        }
        return false;
    }
}
