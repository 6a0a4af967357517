// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

interface IIdentityRegistry8004 {
    function isAuthorizedOrOwner(address spender, uint256 agentId) external view returns (bool);
}

/// @title ReputationRegistry: the ERC-8004 reputation registry (2026-01 revision, reference v2.0.0).
/// @notice Any address may leave feedback on an existing agent except the agent's own owner and
///         operators. Feedback is a signed fixed-point `value` with `valueDecimals` (0..18)
///         decimals — a score, a latency, a revenue figure — and two free tags for filtering;
///         `endpoint`, `feedbackURI` and `feedbackHash` are only logged. Each (agent, client)
///         pair numbers its feedback 1, 2, 3, …; a client may revoke its own feedback (it stays
///         readable, flagged), and anyone may append responses to any feedback (a refund proof,
///         a spam flag), counted per responder.
///
///         `getSummary` averages the non-revoked feedback of the given clients — which must be
///         named: an unfiltered average is whatever Sybils make it — optionally filtered by tag:
///         every value is brought to 18 decimals, averaged (rounding toward zero), and returned
///         with the most frequent `valueDecimals` among them (ties: the fewest decimals).
contract ReputationRegistry {
    using SafeCast for int256;

    struct FeedbackList {
        address[] clients;
        uint64[] feedbackIndexes;
        int128[] values;
        uint8[] valueDecimals;
        string[] tag1s;
        string[] tag2s;
        bool[] revokedStatuses;
    }

    struct Feedback {
        int128 value;
        uint8 valueDecimals;
        bool isRevoked;
        string tag1;
        string tag2;
    }

    int256 private constant MAX_ABS_VALUE = 1e38;
    uint8 private constant MAX_DECIMALS = 18;

    IIdentityRegistry8004 private immutable _identity;

    mapping(uint256 agentId => mapping(address client => mapping(uint64 index => Feedback))) private _feedback;
    mapping(uint256 agentId => mapping(address client => uint64)) private _lastIndex;
    mapping(uint256 agentId => address[]) private _clients;
    mapping(bytes32 feedbackKey => mapping(address responder => uint64)) private _responseCount;
    mapping(bytes32 feedbackKey => address[]) private _responders;

    event NewFeedback(
        uint256 indexed agentId,
        address indexed clientAddress,
        uint64 feedbackIndex,
        int128 value,
        uint8 valueDecimals,
        string indexed indexedTag1,
        string tag1,
        string tag2,
        string endpoint,
        string feedbackURI,
        bytes32 feedbackHash
    );
    event FeedbackRevoked(uint256 indexed agentId, address indexed clientAddress, uint64 indexed feedbackIndex);
    event ResponseAppended(
        uint256 indexed agentId,
        address indexed clientAddress,
        uint64 feedbackIndex,
        address indexed responder,
        string responseURI,
        bytes32 responseHash
    );

    error ZeroIdentityRegistry();
    error InvalidValueDecimals(uint8 valueDecimals);
    error ValueOutOfRange(int128 value);
    error SelfFeedback(address sender, uint256 agentId);
    error FeedbackNotFound(uint256 agentId, address clientAddress, uint64 feedbackIndex);
    error AlreadyRevoked(uint256 agentId, address clientAddress, uint64 feedbackIndex);
    error EmptyResponseURI();
    error ClientAddressesRequired();

    constructor(address identityRegistry) {
        if (identityRegistry == address(0)) revert ZeroIdentityRegistry();
        _identity = IIdentityRegistry8004(identityRegistry);
    }

    function getIdentityRegistry() external view returns (address) {
        return address(_identity);
    }

    function getVersion() external pure returns (string memory) {
        return "2.0.0";
    }

    // ---------------------------------------------------------------- writing

    function giveFeedback(
        uint256 agentId,
        int128 value,
        uint8 valueDecimals,
        string calldata tag1,
        string calldata tag2,
        string memory endpoint,
        string memory feedbackURI,
        bytes32 feedbackHash
    ) external {
        if (valueDecimals > MAX_DECIMALS) revert InvalidValueDecimals(valueDecimals);
        if (value > MAX_ABS_VALUE || value < -MAX_ABS_VALUE) revert ValueOutOfRange(value);
        // Reverts for an agent that does not exist.
        if (_identity.isAuthorizedOrOwner(msg.sender, agentId)) revert SelfFeedback(msg.sender, agentId);
        uint64 index = _lastIndex[agentId][msg.sender] + 1;
        if (index == 1) _clients[agentId].push(msg.sender);
        _lastIndex[agentId][msg.sender] = index;
        Feedback storage f = _feedback[agentId][msg.sender][index];
        f.value = value;
        f.valueDecimals = valueDecimals;
        if (bytes(tag1).length != 0) f.tag1 = tag1;
        if (bytes(tag2).length != 0) f.tag2 = tag2;
        emit NewFeedback(
            agentId, msg.sender, index, value, valueDecimals, tag1, tag1, tag2, endpoint, feedbackURI, feedbackHash
        );
    }

    function revokeFeedback(uint256 agentId, uint64 feedbackIndex) external {
        _requireFeedback(agentId, msg.sender, feedbackIndex);
        Feedback storage f = _feedback[agentId][msg.sender][feedbackIndex];
        if (f.isRevoked) revert AlreadyRevoked(agentId, msg.sender, feedbackIndex);
        f.isRevoked = true;
        emit FeedbackRevoked(agentId, msg.sender, feedbackIndex);
    }

    function appendResponse(
        uint256 agentId,
        address clientAddress,
        uint64 feedbackIndex,
        string calldata responseURI,
        bytes32 responseHash
    ) external {
        _requireFeedback(agentId, clientAddress, feedbackIndex);
        if (bytes(responseURI).length == 0) revert EmptyResponseURI();
        bytes32 key = _key(agentId, clientAddress, feedbackIndex);
        uint64 count = _responseCount[key][msg.sender];
        if (count == 0) _responders[key].push(msg.sender);
        _responseCount[key][msg.sender] = count + 1;
        emit ResponseAppended(agentId, clientAddress, feedbackIndex, msg.sender, responseURI, responseHash);
    }

    // ---------------------------------------------------------------- reading

    function readFeedback(uint256 agentId, address clientAddress, uint64 feedbackIndex)
        external
        view
        returns (int128 value, uint8 valueDecimals, string memory tag1, string memory tag2, bool isRevoked)
    {
        _requireFeedback(agentId, clientAddress, feedbackIndex);
        Feedback storage f = _feedback[agentId][clientAddress][feedbackIndex];
        return (f.value, f.valueDecimals, f.tag1, f.tag2, f.isRevoked);
    }

    function getSummary(uint256 agentId, address[] calldata clientAddresses, string calldata tag1, string calldata tag2)
        external
        view
        returns (uint64 count, int128 summaryValue, uint8 summaryValueDecimals)
    {
        if (clientAddresses.length == 0) revert ClientAddressesRequired();
        int256 sum;
        uint256[19] memory seen;
        (sum, seen, count) = _sumAll(agentId, clientAddresses, _filter(tag1), _filter(tag2));
        if (count == 0) return (0, 0, 0);
        uint256 best;
        for (uint256 d = 1; d <= MAX_DECIMALS; ++d) {
            if (seen[d] > seen[best]) best = d;
        }
        summaryValueDecimals = uint8(best);
        summaryValue = ((sum / int256(uint256(count))) / int256(uint256(10) ** (MAX_DECIMALS - best))).toInt128();
    }

    /// @notice Every matching feedback (empty `clientAddresses`: all clients), in client order
    ///         then index order; revoked feedback only with `includeRevoked`.
    function readAllFeedback(
        uint256 agentId,
        address[] memory clientAddresses,
        string memory tag1,
        string memory tag2,
        bool includeRevoked
    )
        external
        view
        returns (
            address[] memory clients,
            uint64[] memory feedbackIndexes,
            int128[] memory values,
            uint8[] memory valueDecimals,
            string[] memory tag1s,
            string[] memory tag2s,
            bool[] memory revokedStatuses
        )
    {
        address[] memory list = clientAddresses;
        if (list.length == 0) list = _clients[agentId];
        FeedbackList memory r = _collect(agentId, list, _filter(tag1), _filter(tag2), includeRevoked);
        return (r.clients, r.feedbackIndexes, r.values, r.valueDecimals, r.tag1s, r.tag2s, r.revokedStatuses);
    }

    /// @notice Responses counted over: every client if `clientAddress` is 0, else every index of
    ///         that client if `feedbackIndex` is 0, else that one feedback; by every responder if
    ///         `responders` is empty, else by those.
    function getResponseCount(
        uint256 agentId,
        address clientAddress,
        uint64 feedbackIndex,
        address[] calldata responders
    ) external view returns (uint64 count) {
        if (clientAddress == address(0)) {
            address[] storage all = _clients[agentId];
            for (uint256 i; i < all.length; ++i) {
                count += _countClient(agentId, all[i], responders);
            }
        } else if (feedbackIndex == 0) {
            count = _countClient(agentId, clientAddress, responders);
        } else {
            count = _countOne(_key(agentId, clientAddress, feedbackIndex), responders);
        }
    }

    function getClients(uint256 agentId) external view returns (address[] memory) {
        return _clients[agentId];
    }

    function getLastIndex(uint256 agentId, address clientAddress) external view returns (uint64) {
        return _lastIndex[agentId][clientAddress];
    }

    // ---------------------------------------------------------------- internals

    function _requireFeedback(uint256 agentId, address client, uint64 index) private view {
        if (index == 0 || index > _lastIndex[agentId][client]) revert FeedbackNotFound(agentId, client, index);
    }

    function _key(uint256 agentId, address client, uint64 index) private pure returns (bytes32) {
        return keccak256(abi.encode(agentId, client, index));
    }

    /// @dev A tag filter: 0 for "any", else the tag's hash.
    function _filter(string memory tag) private pure returns (bytes32) {
        return bytes(tag).length == 0 ? bytes32(0) : keccak256(bytes(tag));
    }

    function _matches(Feedback storage f, bytes32 tag1, bytes32 tag2) private view returns (bool) {
        return (tag1 == 0 || keccak256(bytes(f.tag1)) == tag1) && (tag2 == 0 || keccak256(bytes(f.tag2)) == tag2);
    }

    function _collect(uint256 agentId, address[] memory list, bytes32 tag1, bytes32 tag2, bool includeRevoked)
        private
        view
        returns (FeedbackList memory r)
    {
        uint256 total;
        for (uint256 i; i < list.length; ++i) {
            uint64 last = _lastIndex[agentId][list[i]];
            for (uint64 j = 1; j <= last; ++j) {
                Feedback storage f = _feedback[agentId][list[i]][j];
                if ((includeRevoked || !f.isRevoked) && _matches(f, tag1, tag2)) ++total;
            }
        }
        r.clients = new address[](total);
        r.feedbackIndexes = new uint64[](total);
        r.values = new int128[](total);
        r.valueDecimals = new uint8[](total);
        r.tag1s = new string[](total);
        r.tag2s = new string[](total);
        r.revokedStatuses = new bool[](total);
        uint256 k;
        for (uint256 i; i < list.length; ++i) {
            uint64 last = _lastIndex[agentId][list[i]];
            for (uint64 j = 1; j <= last; ++j) {
                Feedback storage f = _feedback[agentId][list[i]][j];
                if (!((includeRevoked || !f.isRevoked) && _matches(f, tag1, tag2))) continue;
                r.clients[k] = list[i];
                r.feedbackIndexes[k] = j;
                r.values[k] = f.value;
                r.valueDecimals[k] = f.valueDecimals;
                r.tag1s[k] = f.tag1;
                r.tag2s[k] = f.tag2;
                r.revokedStatuses[k] = f.isRevoked;
                ++k;
            }
        }
    }

    function _sumAll(uint256 agentId, address[] calldata clients, bytes32 tag1, bytes32 tag2)
        private
        view
        returns (int256 sum, uint256[19] memory seen, uint64 count)
    {
        for (uint256 i; i < clients.length; ++i) {
            (int256 clientSum, uint64 clientCount) = _accumulate(agentId, clients[i], tag1, tag2, seen);
            sum += clientSum;
            count += clientCount;
        }
    }

    /// @dev Sum (at 18 decimals) and count of one client's live matching feedback; tallies
    ///      `seen[valueDecimals]`.
    function _accumulate(
        uint256 agentId,
        address client,
        bytes32 tag1,
        bytes32 tag2,
        uint256[19] memory seen
    ) private view returns (int256 sum, uint64 count) {
        uint64 last = _lastIndex[agentId][client];
        for (uint64 j = 1; j <= last; ++j) {
            Feedback storage f = _feedback[agentId][client][j];
            if (f.isRevoked || !_matches(f, tag1, tag2)) continue;
            sum += int256(f.value) * int256(uint256(10) ** (MAX_DECIMALS - f.valueDecimals));
            seen[f.valueDecimals] += 1;
            ++count;
        }
    }

    function _countClient(uint256 agentId, address client, address[] calldata responders)
        private
        view
        returns (uint64 count)
    {
        uint64 last = _lastIndex[agentId][client];
        for (uint64 j = 1; j <= last; ++j) {
            count += _countOne(_key(agentId, client, j), responders);
        }
    }

    function _countOne(bytes32 key, address[] calldata responders) private view returns (uint64 count) {
        if (responders.length == 0) {
            address[] storage all = _responders[key];
            for (uint256 i; i < all.length; ++i) {
                count += _responseCount[key][all[i]];
            }
        } else {
            for (uint256 i; i < responders.length; ++i) {
                count += _responseCount[key][responders[i]];
            }
        }
    }
}
