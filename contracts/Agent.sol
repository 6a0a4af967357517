// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {
    AgentCard,
    AgentCardData,
    AgentCardInput,
    AgentProfile,
    AgentCapabilities,
    PaymentTerms
} from "./AgentCard.sol";
import {AgentCardRenderer} from "./AgentCardRenderer.sol";
import {IAgentDirectory, IERC3009Transfer} from "./AgentInterfaces.sol";

/// @title Agent: an A2A AgentCard published as a contract, with a till and a rating book.
/// @notice One clone per agent (see `AgentFactory`), after the TU Berlin design (arXiv 2507.19550):
///         the card's fields live on-chain, `cardJSON()` renders them as an A2A AgentCard with
///         the x402 payment extension, and `cardHash()` is the keccak-256 of that JSON, which a
///         client compares with the card the agent serves (`a402.agents.card`).
///
///         Card. Four sections, each replaced by its owner-only setter with its own event, and
///         all at once by `updateCard`: the profile (name, description, interfaces, I/O modes,
///         skills, the x402 extension's description: one compact blob, validated and written
///         as a data contract, `AgentCard`), the version, the capability flags and the payment
///         terms (storage, so a price or version change costs a few thousand gas).
///         `cardRevision` counts changes; every card event carries the new value.
///
///         Liveness. `isActive()` is true while the agent is enabled and its owner was seen
///         within `activityWindow` seconds. The owner is "seen" by `heartbeat()` and by every
///         other owner-only call (activity); money arriving does not count, since it says
///         nothing about whether the agent still answers.
///
///         Till. Native coin arrives by `pay`, plain transfers or `receive`; ERC-20 tokens by
///         `payToken` (pulled with an allowance) or `payWithAuthorization` (an EIP-3009
///         signature, the same one an x402 `exact` payment carries when `payTo` is this
///         contract), and only tokens the owner accepts: the card's payment asset and any
///         added with `setTokenAccepted`. Only the owner withdraws.
///
///         Ratings. A payment may name a `payerAgent`: a genuine agent (listed by this agent's
///         factory) on whose behalf the sender acts, i.e. the sender is that agent contract or
///         its owner (for `payWithAuthorization`, the token's `from`). Attributed payments are
///         counted per payer agent (`paymentsFrom`, `paidBy`), and only an agent with at least
///         one attributed payment may rate: one live score in 0..100 per rater, replaceable and
///         withdrawable, sent by the rater agent or its owner. Agents with the same owner as
///         this one cannot rate it. A rating costs the rater a payment and an agent of its own;
///         weighing raters (by amount paid, by their own reputation) is left to readers.
contract Agent is Initializable, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct Rating {
        uint8 score;
        bool live;
        uint64 updatedAt;
    }

    /// @notice Decodes and renders the card for the views (shared code, see `AgentCardRenderer`).
    AgentCardRenderer public immutable renderer;

    /// @notice The factory that created this agent; it vouches for other agents.
    IAgentDirectory public directory;
    /// @notice Incremented by every change to the card.
    uint64 public cardRevision;
    /// @notice Seconds of owner silence after which the agent counts as inactive.
    uint32 public activityWindow;

    address private _profile;
    /// @notice When the owner last acted (heartbeat or any owner-only call).
    uint64 public lastSeen;
    /// @notice The owner's switch; a disabled agent is inactive whatever its heartbeat.
    bool public enabled;
    bool private _streaming;
    bool private _pushNotifications;
    bool private _extendedAgentCard;

    string private _version;
    PaymentTerms private _payment;

    /// @notice Number of live ratings and the sum of their scores.
    uint64 public ratingCount;
    uint128 public ratingSum;

    mapping(address token => bool) private _acceptedTokens;
    /// @notice Number of payments attributed to each payer agent.
    mapping(address payerAgent => uint256) public paymentsFrom;
    /// @notice Cumulative amount attributed to each payer agent, per asset (0 = native coin).
    mapping(address payerAgent => mapping(address asset => uint256)) public paidBy;
    mapping(address raterAgent => Rating) private _ratings;

    event ProfileUpdated(uint64 indexed revision, address data);
    event VersionUpdated(uint64 indexed revision, string version);
    event CapabilitiesUpdated(uint64 indexed revision, bool streaming, bool pushNotifications, bool extendedAgentCard);
    event PaymentTermsUpdated(
        uint64 indexed revision,
        address indexed asset,
        string scheme,
        string network,
        uint256 amount,
        address indexed payTo
    );
    event Heartbeat(uint64 timestamp);
    event ActivityWindowSet(uint32 window);
    event EnabledSet(bool enabled);
    event TokenAcceptanceSet(address indexed token, bool accepted);
    /// @notice Money arrived. `payerAgent` is 0 for an unattributed payment; `asset` 0 is native coin.
    event Paid(address indexed payerAgent, address indexed from, address indexed asset, uint256 amount);
    /// @notice This agent paid another agent from its own balance.
    event PaidAgent(address indexed payee, address indexed asset, uint256 amount);
    event Withdrawn(address indexed asset, address indexed to, uint256 amount);
    event Rated(address indexed raterAgent, address indexed sender, uint8 score, string comment);
    event RatingWithdrawn(address indexed raterAgent, address indexed sender);

    error ZeroAddress();
    error ZeroAmount();
    error InvalidActivityWindow();
    error TokenNotAccepted(address token);
    error NotAnAgent(address account);
    error NotActingFor(address agent, address sender);
    error SelfDealing();
    error NotAPayer(address agent);
    error InvalidScore(uint8 score);
    error NoRating(address agent);
    error RenounceDisabled();

    /// @dev The implementation itself is ownerless and can never be initialized; only clones are used.
    constructor(AgentCardRenderer renderer_) Ownable(msg.sender) {
        renderer = renderer_;
        _transferOwnership(address(0));
        _disableInitializers();
    }

    /// @notice Called once by the factory that cloned this agent, which becomes its directory.
    ///         A new agent is enabled and seen now; its events (OwnershipTransferred,
    ///         ActivityWindowSet, the four card events) describe its whole initial state.
    function initialize(address owner_, AgentCardInput calldata card_, uint32 activityWindow_) external initializer {
        if (owner_ == address(0)) revert ZeroAddress();
        directory = IAgentDirectory(msg.sender);
        _transferOwnership(owner_);
        enabled = true;
        lastSeen = uint64(block.timestamp);
        _setActivityWindow(activityWindow_);
        _writeCard(card_);
    }

    modifier ownerActivity() {
        _checkOwner();
        lastSeen = uint64(block.timestamp);
        _;
    }

    receive() external payable {
        emit Paid(address(0), msg.sender, address(0), msg.value);
    }

    // ------------------------------------------------------------------ card updates (owner)

    /// @notice Replaces the whole card (one revision, the four section events).
    function updateCard(AgentCardInput calldata card_) external ownerActivity {
        _writeCard(card_);
    }

    /// @notice Replaces the profile with `profileBlob`, its compact encoding (see `AgentCard`).
    function setProfile(bytes calldata profileBlob) external ownerActivity {
        _setProfile(++cardRevision, profileBlob);
    }

    function setVersion(string calldata version_) external ownerActivity {
        _setVersion(++cardRevision, version_);
    }

    function setCapabilities(AgentCapabilities calldata capabilities_) external ownerActivity {
        _setCapabilities(++cardRevision, capabilities_);
    }

    function setPaymentTerms(PaymentTerms calldata terms) external ownerActivity {
        _setPayment(++cardRevision, terms);
    }

    function _writeCard(AgentCardInput calldata c) private {
        uint64 revision = ++cardRevision;
        _setProfile(revision, c.profile);
        _setVersion(revision, c.version);
        _setCapabilities(revision, c.capabilities);
        _setPayment(revision, c.payment);
    }

    function _setProfile(uint64 revision, bytes calldata blob) private {
        AgentCard.validateProfile(blob);
        address data = AgentCard.store(blob);
        _profile = data;
        emit ProfileUpdated(revision, data);
    }

    function _setVersion(uint64 revision, string calldata v) private {
        AgentCard.checkVersion(v);
        _version = v;
        emit VersionUpdated(revision, v);
    }

    function _setCapabilities(uint64 revision, AgentCapabilities calldata c) private {
        _streaming = c.streaming;
        _pushNotifications = c.pushNotifications;
        _extendedAgentCard = c.extendedAgentCard;
        emit CapabilitiesUpdated(revision, c.streaming, c.pushNotifications, c.extendedAgentCard);
    }

    function _setPayment(uint64 revision, PaymentTerms calldata t) private {
        AgentCard.checkPayment(t);
        _payment = t;
        emit PaymentTermsUpdated(revision, t.asset, t.scheme, t.network, t.amount, t.payTo);
    }

    // ------------------------------------------------------------------ liveness (owner)

    function heartbeat() external ownerActivity {
        emit Heartbeat(uint64(block.timestamp));
    }

    function setActivityWindow(uint32 window) external ownerActivity {
        _setActivityWindow(window);
    }

    function _setActivityWindow(uint32 window) private {
        if (window == 0) revert InvalidActivityWindow();
        activityWindow = window;
        emit ActivityWindowSet(window);
    }

    function setEnabled(bool enabled_) external ownerActivity {
        enabled = enabled_;
        emit EnabledSet(enabled_);
    }

    /// @notice Enabled and heard from within the activity window.
    function isActive() external view returns (bool) {
        return enabled && block.timestamp <= uint256(lastSeen) + activityWindow;
    }

    /// @notice An agent without an owner could never withdraw or update again.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceDisabled();
    }

    // ------------------------------------------------------------------ till

    function setTokenAccepted(address token, bool accepted) external ownerActivity {
        if (token == address(0)) revert ZeroAddress();
        _acceptedTokens[token] = accepted;
        emit TokenAcceptanceSet(token, accepted);
    }

    /// @notice Whether `payToken`/`payWithAuthorization` take `token`: the card's payment asset
    ///         always, others once the owner accepted them.
    function acceptsToken(address token) public view returns (bool) {
        return token != address(0) && (token == _payment.asset || _acceptedTokens[token]);
    }

    /// @notice Pays native coin, attributed to `payerAgent` (0: unattributed).
    function pay(address payerAgent) external payable nonReentrant {
        if (msg.value == 0) revert ZeroAmount();
        _checkPayer(payerAgent, msg.sender);
        _record(payerAgent, msg.sender, address(0), msg.value);
    }

    /// @notice Pulls `amount` of an accepted `token` from the sender (who approved this agent);
    ///         records what actually arrived.
    function payToken(address payerAgent, address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (!acceptsToken(token)) revert TokenNotAccepted(token);
        _checkPayer(payerAgent, msg.sender);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        _record(payerAgent, msg.sender, token, IERC20(token).balanceOf(address(this)) - before);
    }

    /// @notice Settles an EIP-3009 `transferWithAuthorization` signed by `from` to this agent —
    ///         an x402 `exact` payment whose `payTo` is this contract — and records it. Anyone
    ///         may submit it; attribution needs `from` to be `payerAgent` or its owner. If the
    ///         authorization was submitted to the token directly first, the money has arrived
    ///         unrecorded and this call reverts (the nonce is spent): nobody gains.
    function payWithAuthorization(
        address payerAgent,
        address token,
        address from,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant {
        if (value == 0) revert ZeroAmount();
        if (!acceptsToken(token)) revert TokenNotAccepted(token);
        _checkPayer(payerAgent, from);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC3009Transfer(token).transferWithAuthorization(
            from, address(this), value, validAfter, validBefore, nonce, v, r, s
        );
        _record(payerAgent, from, token, IERC20(token).balanceOf(address(this)) - before);
    }

    /// @notice Pays another genuine agent from this agent's balance, attributed to this agent,
    ///         which may then rate it.
    function payAgent(address payee, address asset, uint256 amount) external ownerActivity nonReentrant {
        if (payee == address(this) || !directory.isAgent(payee)) revert NotAnAgent(payee);
        if (asset == address(0)) {
            Agent(payable(payee)).pay{value: amount}(address(this));
        } else {
            IERC20(asset).forceApprove(payee, amount);
            Agent(payable(payee)).payToken(address(this), asset, amount);
        }
        emit PaidAgent(payee, asset, amount);
    }

    function withdraw(address payable to, uint256 amount) external ownerActivity nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        Address.sendValue(to, amount);
        emit Withdrawn(address(0), to, amount);
    }

    function withdrawToken(address token, address to, uint256 amount) external ownerActivity nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        IERC20(token).safeTransfer(to, amount);
        emit Withdrawn(token, to, amount);
    }

    function _checkPayer(address payerAgent, address actor) private view {
        if (payerAgent == address(0)) return;
        if (payerAgent == address(this)) revert SelfDealing();
        _actingFor(payerAgent, actor);
    }

    /// @dev Reverts unless `agent` is genuine and `actor` is it or its owner; returns its owner.
    function _actingFor(address agent, address actor) private view returns (address agentOwner) {
        if (!directory.isAgent(agent)) revert NotAnAgent(agent);
        agentOwner = Ownable(agent).owner();
        if (actor != agent && actor != agentOwner) revert NotActingFor(agent, actor);
    }

    function _record(address payerAgent, address from, address asset, uint256 amount) private {
        if (payerAgent != address(0)) {
            paymentsFrom[payerAgent] += 1;
            paidBy[payerAgent][asset] += amount;
        }
        emit Paid(payerAgent, from, asset, amount);
    }

    // ------------------------------------------------------------------ ratings

    /// @notice Rates this agent 0..100 on behalf of `raterAgent`, which must have paid it;
    ///         replaces that agent's previous rating. `comment` is only logged.
    function rate(address raterAgent, uint8 score, string calldata comment) external {
        if (score > 100) revert InvalidScore(score);
        if (raterAgent == address(this)) revert SelfDealing();
        if (_actingFor(raterAgent, msg.sender) == owner()) revert SelfDealing();
        if (paymentsFrom[raterAgent] == 0) revert NotAPayer(raterAgent);
        Rating storage r = _ratings[raterAgent];
        if (r.live) {
            ratingSum = ratingSum - r.score + score;
        } else {
            ratingCount += 1;
            ratingSum += score;
            r.live = true;
        }
        r.score = score;
        r.updatedAt = uint64(block.timestamp);
        emit Rated(raterAgent, msg.sender, score, comment);
    }

    function withdrawRating(address raterAgent) external {
        _actingFor(raterAgent, msg.sender);
        Rating storage r = _ratings[raterAgent];
        if (!r.live) revert NoRating(raterAgent);
        ratingCount -= 1;
        ratingSum -= r.score;
        delete _ratings[raterAgent];
        emit RatingWithdrawn(raterAgent, msg.sender);
    }

    function ratingOf(address raterAgent) external view returns (bool live, uint8 score, uint64 updatedAt) {
        Rating storage r = _ratings[raterAgent];
        return (r.live, r.score, r.updatedAt);
    }

    // ------------------------------------------------------------------ card views

    function card() external view returns (AgentCardData memory c) {
        c.profile = renderer.decodeProfile(AgentCard.load(_profile));
        c.version = _version;
        c.capabilities = capabilities();
        c.payment = _payment;
    }

    function profile() external view returns (AgentProfile memory) {
        return renderer.decodeProfile(AgentCard.load(_profile));
    }

    /// @notice The data contract holding the current profile blob (its code after one 0x00 byte).
    function profileData() external view returns (address) {
        return _profile;
    }

    function name() external view returns (string memory) {
        return renderer.profileName(AgentCard.load(_profile));
    }

    function version() external view returns (string memory) {
        return _version;
    }

    function capabilities() public view returns (AgentCapabilities memory) {
        return AgentCapabilities(_streaming, _pushNotifications, _extendedAgentCard);
    }

    function paymentTerms() external view returns (PaymentTerms memory) {
        return _payment;
    }

    /// @notice The card as canonical A2A AgentCard JSON (keys sorted, no whitespace).
    function cardJSON() public view returns (string memory) {
        return renderer.renderJSON(AgentCard.load(_profile), _version, capabilities(), _payment);
    }

    /// @notice keccak256 of `cardJSON()`.
    function cardHash() external view returns (bytes32) {
        return keccak256(bytes(cardJSON()));
    }
}
