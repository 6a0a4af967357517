// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IAgentDirectory} from "./AgentInterfaces.sol";

/// @title AgentListing: an enumerable set of genuine agents, enrolled and left by their owners.
/// @notice Only agents the `directory` (an `AgentFactory`) vouches for can be listed, so a
///         listing cannot point at a contract that lies about its owner. Listing and delisting
///         are O(1) (swap and pop), reads are paged: no state-changing path loops over the list.
///         An agent's owner may always take it off (`unlist`).
abstract contract AgentListing {
    IAgentDirectory public immutable directory;

    address[] private _listed;
    mapping(address agent => uint256) private _position; // index + 1

    event AgentListed(address indexed agent, address indexed owner);
    event AgentDelisted(address indexed agent, address indexed by);

    error NotAnAgent(address account);
    error NotAgentOwner(address agent, address sender);
    error AlreadyListed(address agent);
    error NotListed(address agent);
    error IndexOutOfRange(uint256 index, uint256 count);

    constructor(IAgentDirectory directory_) {
        directory = directory_;
    }

    /// @notice Takes the sender's own agent off the list.
    function unlist(address agent) external {
        _requireAgentOwner(agent);
        _delist(agent);
    }

    function isListed(address agent) public view returns (bool) {
        return _position[agent] != 0;
    }

    function agentCount() external view returns (uint256) {
        return _listed.length;
    }

    function agentAt(uint256 index) external view returns (address) {
        uint256 count = _listed.length;
        if (index >= count) revert IndexOutOfRange(index, count);
        return _listed[index];
    }

    /// @notice Up to `limit` listed agents from `offset`. The order changes when agents leave.
    function agentsPage(uint256 offset, uint256 limit) external view returns (address[] memory page) {
        uint256 count = _listed.length;
        if (offset >= count) return new address[](0);
        uint256 end = limit > count - offset ? count : offset + limit;
        page = new address[](end - offset);
        for (uint256 i = offset; i < end; ++i) {
            page[i - offset] = _listed[i];
        }
    }

    function _requireAgentOwner(address agent) internal view returns (address agentOwner) {
        if (!directory.isAgent(agent)) revert NotAnAgent(agent);
        agentOwner = Ownable(agent).owner();
        if (agentOwner != msg.sender) revert NotAgentOwner(agent, msg.sender);
    }

    function _list(address agent, address agentOwner) internal {
        if (_position[agent] != 0) revert AlreadyListed(agent);
        _listed.push(agent);
        _position[agent] = _listed.length;
        emit AgentListed(agent, agentOwner);
    }

    function _delist(address agent) internal {
        uint256 position = _position[agent];
        if (position == 0) revert NotListed(agent);
        uint256 last = _listed.length;
        if (position != last) {
            address moved = _listed[last - 1];
            _listed[position - 1] = moved;
            _position[moved] = position;
        }
        _listed.pop();
        delete _position[agent];
        emit AgentDelisted(agent, msg.sender);
    }
}

/// @title AgentRegistry: open enrolment; any genuine agent's owner may list it.
contract AgentRegistry is AgentListing {
    constructor(IAgentDirectory directory_) AgentListing(directory_) {}

    function enroll(address agent) external {
        _list(agent, _requireAgentOwner(agent));
    }
}

/// @title CuratedAgentRegistry: enrolment approved by a consortium.
/// @notice An agent's owner requests enrolment; the agent is listed once `threshold` members
///         approved that request. The registry owner (a person, a multisig or a DAO) manages
///         the members and the threshold and may remove listed agents or cancel requests; an
///         agent's owner may cancel its request or unlist it. Removing a member voids every
///         pending approval (they are counted per membership epoch), so a removed member's
///         approvals can never list anything; lowering the threshold lists nothing by itself,
///         `finalize` then lists a request that has enough approvals.
contract CuratedAgentRegistry is AgentListing, Ownable2Step {
    struct Request {
        uint64 id;
        uint64 epoch;
        uint32 approvals;
    }

    mapping(address member => bool) public isMember;
    uint256 public memberCount;
    uint256 public threshold;
    /// @notice Incremented whenever a member is removed; approvals of older epochs do not count.
    uint64 public membershipEpoch;

    uint64 private _nextRequestId = 1;
    mapping(address agent => Request) private _requests;
    mapping(bytes32 key => bool) private _approved;

    event MemberAdded(address indexed member);
    event MemberRemoved(address indexed member);
    event ThresholdSet(uint256 threshold);
    event EnrolmentRequested(address indexed agent, address indexed owner, uint64 indexed requestId);
    event EnrolmentApproved(address indexed agent, address indexed member, uint64 indexed requestId, uint32 approvals);
    event EnrolmentCancelled(address indexed agent, address indexed by, uint64 indexed requestId);

    error NotMember(address account);
    error AlreadyMember(address account);
    error InvalidThreshold(uint256 threshold, uint256 memberCount);
    error NoRequest(address agent);
    error RequestPending(address agent);
    error AlreadyApproved(address agent, address member);
    error NotEnoughApprovals(uint256 approvals, uint256 threshold);

    constructor(IAgentDirectory directory_, address owner_, address[] memory members, uint256 threshold_)
        AgentListing(directory_)
        Ownable(owner_)
    {
        for (uint256 i; i < members.length; ++i) {
            _addMember(members[i]);
        }
        _setThreshold(threshold_);
    }

    // ---------------------------------------------------------------- consortium (owner)

    function addMember(address member) external onlyOwner {
        _addMember(member);
    }

    function removeMember(address member) external onlyOwner {
        if (!isMember[member]) revert NotMember(member);
        if (memberCount - 1 < threshold) revert InvalidThreshold(threshold, memberCount - 1);
        isMember[member] = false;
        memberCount -= 1;
        membershipEpoch += 1;
        emit MemberRemoved(member);
    }

    function setThreshold(uint256 threshold_) external onlyOwner {
        _setThreshold(threshold_);
    }

    /// @notice Takes a listed agent off the registry.
    function remove(address agent) external onlyOwner {
        _delist(agent);
    }

    function _addMember(address member) private {
        if (member == address(0)) revert NotMember(member);
        if (isMember[member]) revert AlreadyMember(member);
        isMember[member] = true;
        memberCount += 1;
        emit MemberAdded(member);
    }

    function _setThreshold(uint256 threshold_) private {
        if (threshold_ == 0 || threshold_ > memberCount) revert InvalidThreshold(threshold_, memberCount);
        threshold = threshold_;
        emit ThresholdSet(threshold_);
    }

    // ---------------------------------------------------------------- enrolment

    function requestEnrolment(address agent) external returns (uint64 requestId) {
        address agentOwner = _requireAgentOwner(agent);
        if (isListed(agent)) revert AlreadyListed(agent);
        if (_requests[agent].id != 0) revert RequestPending(agent);
        requestId = _nextRequestId++;
        _requests[agent] = Request(requestId, membershipEpoch, 0);
        emit EnrolmentRequested(agent, agentOwner, requestId);
    }

    /// @notice A member approves the pending request; the approval that reaches the threshold lists the agent.
    function approve(address agent) external {
        if (!isMember[msg.sender]) revert NotMember(msg.sender);
        Request storage r = _requests[agent];
        uint64 id = r.id;
        if (id == 0) revert NoRequest(agent);
        uint64 epoch = membershipEpoch;
        if (r.epoch != epoch) {
            r.epoch = epoch;
            r.approvals = 0;
        }
        bytes32 key = keccak256(abi.encode(agent, id, epoch, msg.sender));
        if (_approved[key]) revert AlreadyApproved(agent, msg.sender);
        _approved[key] = true;
        uint32 approvals = r.approvals + 1;
        r.approvals = approvals;
        emit EnrolmentApproved(agent, msg.sender, id, approvals);
        if (approvals >= threshold) _listRequested(agent);
    }

    /// @notice Lists an agent whose request already has enough approvals (after the threshold was lowered).
    function finalize(address agent) external {
        Request storage r = _requests[agent];
        if (r.id == 0) revert NoRequest(agent);
        uint256 approvals = r.epoch == membershipEpoch ? r.approvals : 0;
        if (approvals < threshold) revert NotEnoughApprovals(approvals, threshold);
        _listRequested(agent);
    }

    /// @notice Withdraws a pending request: by the agent's owner or the registry owner.
    function cancelEnrolment(address agent) external {
        if (msg.sender != owner()) _requireAgentOwner(agent);
        uint64 id = _requests[agent].id;
        if (id == 0) revert NoRequest(agent);
        delete _requests[agent];
        emit EnrolmentCancelled(agent, msg.sender, id);
    }

    /// @notice The pending request of `agent` (id 0: none) and its approvals in the current epoch.
    function request(address agent) external view returns (uint64 requestId, uint32 approvals) {
        Request storage r = _requests[agent];
        return (r.id, r.epoch == membershipEpoch ? r.approvals : 0);
    }

    function hasApproved(address agent, address member) external view returns (bool) {
        Request storage r = _requests[agent];
        return r.id != 0 && _approved[keccak256(abi.encode(agent, r.id, membershipEpoch, member))];
    }

    function _listRequested(address agent) private {
        delete _requests[agent];
        _list(agent, Ownable(agent).owner());
    }
}
