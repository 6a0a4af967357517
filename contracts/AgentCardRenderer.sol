// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {
    AgentCard,
    AgentCardData,
    AgentProfile,
    AgentCapabilities,
    PaymentTerms
} from "./AgentCard.sol";

/// @title AgentCardRenderer: the read side of `AgentCard`, deployed once and shared by all agents.
/// @notice Decoding a profile blob and rendering canonical JSON is a lot of code that only views
///         run; keeping it here keeps `Agent` under the 24,576-byte code limit (EIP-170). Every
///         function is pure: an agent passes its stored blob and fields in.
contract AgentCardRenderer {
    /// @notice The canonical JSON of a card from its parts (see `AgentCard`).
    function renderJSON(
        bytes calldata profileBlob,
        string calldata version,
        AgentCapabilities calldata capabilities,
        PaymentTerms calldata payment
    ) external pure returns (string memory) {
        return string(AgentCard.renderJSON(profileBlob, version, capabilities, payment));
    }

    /// @notice What `Agent.cardJSON()` would return for `card`, validated as a write would be:
    ///         lets a client compute a card's canonical form and hash before publishing it.
    function renderCard(AgentCardData calldata card) external pure returns (string memory) {
        AgentCard.checkVersion(card.version);
        AgentCard.checkPayment(card.payment);
        return string(
            AgentCard.renderJSON(AgentCard.encodeProfile(card.profile), card.version, card.capabilities, card.payment)
        );
    }

    /// @notice The compact blob `Agent` would store for `profile` (validated).
    function encodeProfile(AgentProfile calldata profile) external pure returns (bytes memory) {
        return AgentCard.encodeProfile(profile);
    }

    /// @notice Reverts unless `profileBlob` is a blob `Agent` would accept (see `validateProfile`).
    function checkProfile(bytes calldata profileBlob) external pure {
        AgentCard.validateProfile(profileBlob);
    }

    function decodeProfile(bytes calldata profileBlob) external pure returns (AgentProfile memory) {
        return AgentCard.decodeProfile(profileBlob);
    }

    function profileName(bytes calldata profileBlob) external pure returns (string memory) {
        return AgentCard.profileName(profileBlob);
    }
}
