// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {A402Message} from "./A402Message.sol";
import {Schnorr} from "./SchnorrVerifier.sol";

/// @dev EIP-3009 `receiveWithAuthorization` (USDC), in the (v, r, s) form every USDC version has.
interface IERC3009Receive {
    function receiveWithAuthorization(
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

    /// @dev The `bytes` signature form (USDC v2.2): an EOA's, or an EIP-1271 wallet's.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;
}

/// @title ASCManager: Atomic Service Channels, standard mode (A402 paper §4.1–4.2, §6.2)
/// @notice Escrows a client's ERC-20 deposit for one client/provider pair and settles it
///         in exactly one of four ways:
///         * `closeASC`: cooperative, a co-signed *final* state;
///         * `initForceClose` → (`challengeForceClose`)* → `finalForceClose`: the client path,
///           with a dispute window in which a newer co-signed state replaces the recorded one;
///         * `forceClose`: the provider path, the latest co-signed state plus the one pending
///           payment, proven by the provider's completed adaptor signature (which publishes
///           `s`, so the vault extracts `t = s − ŝ` and opens the result) and by the vault's
///           conditional authorization σ_U.
/// @dev Parties. `client` owns the deposit and receives the refund. `vault` is the client's
///      agent (the paper's U): it approves opening the channel and signs states, payment
///      authorizations and force-close requests for the client. `provider` (S) is paid; its
///      on-chain identity is its address (state signatures, `forceClose` caller) and
///      `providerKey` is the x-coordinate of its EVM-flavour Schnorr adaptor key
///      (`a402.crypto.EVM`), the key its attested enclave pre-signs with.
///
///      The vault's address may be a key that never sends a transaction (the attested key of the
///      vault's enclave, whose host pays gas from an account of its own): every step the vault
///      must approve takes its signature in place of its sending. A party approves when it sends
///      the transaction OR its signature is given; the vault's and the provider's are plain
///      ECDSA (see States), the client's consent to open may also be EIP-1271. The vault signs
///      * A402Open(channelId, deadline) to open a channel (`createASC`, `createASCBatch`,
///        `createASCWithAuthorization`, `openApprovalDigest`), and A402PoolOpen(channelId,
///        deadline) to open one from the client's pool balance (`createASCFromPool(Batch)`,
///        `poolOpenApprovalDigest`; neither type stands in for the other): the id is the EIP-712 hash of
///        every term and ids are single-use, so an approval opens that one channel once; and it
///        lapses at `deadline`, so an open that failed or was withheld cannot be replayed later
///        (from failed-transaction calldata, the mempool, a host that kept it) against an
///        allowance the vault meant for newer channels: once a block stamped after the deadline
///        shows the id unopened, the vault may count the channel as never opened, for good;
///      * states (`closeASC`, `challengeForceClose`, `forceClose`, the dispute paths);
///      * σ_U for the provider's `forceClose`;
///      * A402ForceClose(channelId, version, deadline) to have anyone start a force close for
///        it before `deadline` (`initForceCloseFor`), a type of its own so no state signature
///        can stand in for it.
///      The two approvals that lapse travel as `approval = signature ‖ deadline`: the 65-byte
///      ECDSA signature (r ‖ s ‖ v) followed by the deadline as one 32-byte big-endian word, in
///      the `bytes` argument that carries the signature (no extra ABI argument or array, so a
///      vault that sends, passing empty bytes, pays nothing for it). A deadline is inclusive
///      (`block.timestamp <= deadline`). The client's consent stays a signature over the id
///      itself (an EIP-712 signature any wallet makes); it opens nothing without the vault's
///      approval, so the vault's deadline bounds it too. When the client is the vault, the
///      vault's approval is the consent.
///
///      Terms are not stored. A channel's identity is the EIP-712 hash of its terms,
///          channelId = hashTypedDataV4(A402Channel(client, vault, provider, providerKey, deposit,
///                                                   salt)),
///      and every call passes the terms back; the contract recomputes the id, which proves them.
///      Storage per channel is one word (status, dispute deadline, recorded version and provider
///      balance) instead of five, which is most of what a channel costs. A closed id is never
///      zeroed (forgoing the 4,800-gas refund): an id that could be opened again would let the
///      client's consent and every old co-signed state replay against a new deposit. The provider
///      consents to the terms by co-signing states of this id, so it must check them (its key,
///      this manager and its `disputeWindow`) before serving. Because the id is a typed-data hash,
///      the client's consent to open is an ordinary EIP-712 signature over the id, and the id
///      doubles as the EIP-3009 nonce when the deposit moves by authorization.
///
///      States. `A402ChannelState(bytes32 channelId, uint256 version, uint256 clientBalance,
///      uint256 providerBalance, bool isFinal)`, EIP-712 in the domain ("A402", "1", chainid,
///      this contract) — the same domain as the payment message m and σ_U (`A402Message`), told
///      apart by their type hashes. So a state is bound to this contract, this chain and this
///      channel, and balances always sum to the deposit (checked in every path).
///      * A state is approved by a party when it carries that party's ECDSA signature, or when
///        that party sends the transaction. Vault and provider signatures are plain ECDSA (not
///        EIP-1271) on purpose: a contract signer could revoke a signature after the other side
///        relied on it, and the provider's σ_U claim must stay valid until it is used.
///      * Version 0 is the opening state (deposit, 0): createASC itself made it, so it needs no
///        signature in the dispute paths. It can never be a final state, so the vault alone
///        can never close cooperatively.
///      * Versions increase with every co-signed state; a state of version v accounts for every
///        payment with request id < v. Off-chain, request ids come from a counter that never
///        goes below the state version (see `a402.asc`), so a pending payment has rid ≥ v.
///      * `isFinal` marks the one state both parties sign to close cooperatively. Intermediate
///        states are never final, so `closeASC` cannot replay an old one: without the flag, the
///        vault could close with any older state the provider had co-signed.
///
///      Who may call what: createASC, createASCBatch, createASCWithAuthorization — anyone
///      carrying the vault's approval (the vault itself, or its signed A402Open of each id, before
///      its deadline) and the client's consent; createASCFromPool(Batch) — anyone carrying the
///      vault's A402PoolOpen approval (the client consented by pooling with that vault); closeASC — anyone (with both approvals);
///      initForceClose — client or vault; initForceCloseFor — anyone carrying the vault's signed
///      force-close request, before its deadline;
///      challengeForceClose — anyone holding both approvals (a watchtower); finalForceClose —
///      anyone once the window has passed (the outcome is fixed, only its timing is left);
///      forceClose — the provider only; closeASCBatch — anyone (with both approvals of each);
///      withdrawWithSignature, withdrawFromPoolWithSignature — anyone relaying the owner's signed
///      order; withdrawFromPool — the pool client itself; depositToPool(WithAuthorization) —
///      anyone paying (or relaying the payer's authorization).
///
///      Contract wallets. A client's EIP-1271 consent is checked with all the gas left in a single
///      `createASC`, but with a stipend of `CONSENT_CHECK_GAS` in `createASCBatch`, so a wallet
///      whose `isValidSignature` burns gas costs the batch at most that much and is skipped like
///      any refused member (a wallet that needs more opens its channel with `createASC`). A batch
///      sent with too little gas left to give a wallet its whole stipend reverts
///      (`InsufficientGas()`) rather than skip a member that would pass with more gas.
///
///      Batches. `createASCBatch` and `closeASCBatch` run the very checks and effects of
///      `createASC` and `closeASC` for each channel (the same private functions), all of them
///      before any token moves, then move the tokens aggregated: one transfer per maximal run of
///      consecutive channels with the same payer or payee. A channel that cannot proceed (one
///      already closed, a bad signature, a client whose deposit does not arrive) is skipped with
///      a `BatchMemberSkipped` event carrying the error `createASC`/`closeASC` would have
///      reverted with, and the others go on: one member cannot hold the rest hostage. Only a
///      malformed batch (empty, arrays of different lengths) reverts. This is the paper's
///      "settlement aggregated into one transaction": a batch pays the 21,000-gas intrinsic cost
///      once, and its token transfers once per run instead of once per channel
///      (`createASCFromPoolBatch` moves no tokens at all).
///
///      Pool. A vault's clients may keep tokens here instead of in their wallets: `pooled[vault]
///      [client]`, credited by `depositToPool` (from the sender) or
///      `depositToPoolWithAuthorization` (EIP-3009, the payer's signature fixing vault, client
///      and amount). `createASCFromPool(Batch)` opens a channel whose `client` is the real client
///      by debiting that balance (no token moves), with the vault's approval as for `createASC`;
///      the record is marked pool-funded, and every exit (`closeASC`, `closeASCBatch`,
///      `finalForceClose`, `forceClose`) credits the client's share back to the balance instead of
///      transferring it (`_payout`), while the provider is paid as for any channel (or owed).
///      The client takes its balance out with `withdrawFromPool` (sent by itself: the exit that
///      needs nothing of the vault) or `withdrawFromPoolWithSignature` (its signed
///      A402PoolWithdrawal order, relayed by anyone). The safety argument:
///      * conservation: the tokens this manager holds always equal Σ `pooled` + the deposits of
///        the channels not closed + Σ `owed` — each entry point moves an amount between exactly
///        two of these terms, or between one of them and a token transfer checked to arrive;
///      * only the client takes its pooled balance out (its sending, or its signature);
///      * only the vault's approval moves it into a channel, of that same client, and only the
///        channel's co-signed states (or its dispute paths) move it out of the channel;
///      * nothing the vault's host reports can create a balance: a balance is created only by
///        tokens arriving in this contract. A host that invents a deposit in its own books, or
///        has the vault's enclave believe one, makes nothing withdrawable from anyone else's.
///
///      Races. Every path ends in CLOSED, written before any token moves, so whichever
///      transaction lands first wins and the others revert. A provider's forceClose may land
///      during a client's dispute window, on a state at least as new as the recorded one; it
///      then settles at once. A provider could present an older state than the latest, but the
///      provider balance never decreases across versions, so that only costs it; the payment
///      rule rid ≥ version means no payment is ever counted twice.
///
///      Token: one immutable asset per manager (the domain, and so every id and signature, is bound
///      to it through this contract's address). It must not rebase: all channels share one escrow
///      and each pays out exactly its deposit. A deposit that does not arrive whole (a
///      fee-on-transfer token) is refused, so no channel is ever funded from another's escrow.
///
///      Payouts never block. Settling a channel first fixes both payouts (the record is CLOSED),
///      then tries to transfer each; a transfer the token refuses (a blocklisted receiver, a
///      paused token) is credited to the receiver instead (`owed`, event `PayoutCredited`),
///      to be taken later with `withdraw` (by the receiver, to any address it names) or
///      `withdrawWithSignature` (anyone relaying the receiver's signed order). So one party's
///      blocked address can neither stop the other party's payout nor undo a settlement: a
///      provider's claim is recorded even when its transfer fails. The happy path still pays in
///      the settling transaction, with no second transaction for anyone.
///      Reentrancy: checks-effects-interactions everywhere plus a transient reentrancy guard on
///      every state-changing entry point, so a token or signer contract that calls back finds
///      the channel already settled and the manager locked.
contract ASCManager is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The terms of one channel; their typed-data hash is the channel id.
    /// @param salt Makes ids unique; an id can be used once, ever (closed ids stay tombstoned).
    struct Channel {
        address client;
        address vault;
        address provider;
        bytes32 providerKey;
        uint256 deposit;
        bytes32 salt;
    }

    /// @notice A balance state; `clientBalance + providerBalance` must equal the deposit.
    struct State {
        uint256 version;
        uint256 clientBalance;
        uint256 providerBalance;
        bool isFinal;
    }

    /// @notice The pending payment of a provider force-close and its completed adaptor
    ///         signature (e, s) on m = A402Payment(channelId, requestId, amount, resultHash).
    struct Payment {
        uint256 requestId;
        uint256 amount;
        bytes32 resultHash;
        bytes32 e;
        uint256 s;
    }

    /// @notice An EIP-3009 `receiveWithAuthorization` signature's validity and (v, r, s).
    struct ReceiveAuthorization {
        uint256 validAfter;
        uint256 validBefore;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @dev Consecutive token movements of a batch to (or from) one account, made as one.
    struct Run {
        address account;
        uint256 amount;
    }

    enum Status {
        None,
        Open,
        Closing,
        Closed
    }

    bytes32 public constant CHANNEL_TYPEHASH = keccak256(
        "A402Channel(address client,address vault,address provider,bytes32 providerKey,uint256 deposit,bytes32 salt)"
    );
    bytes32 public constant STATE_TYPEHASH = keccak256(
        "A402ChannelState(bytes32 channelId,uint256 version,uint256 clientBalance,uint256 providerBalance,bool isFinal)"
    );

    /// @notice How long a client force-close stays open to challenges and to the provider's
    ///         forceClose, in seconds. Fixed per deployment so that every channel's provider
    ///         knows it from the manager's address alone.
    uint256 public immutable disputeWindow;

    /// @notice The channel asset. One manager per asset: the deployer vouches that it is a
    ///         standard ERC-20, and every channel of this manager shares one escrow of it.
    IERC20 public immutable token;

    // One word per channel: status (8 bits) | deadline (40) | version (64) | providerBalance (128)
    // | pool-funded (1, bit 240) | 15 unused bits. The version and provider balance are those of
    // the recorded state while Closing. The pool bit is set by `createASCFromPool` and kept by
    // every later write of the record (Closing, Closed), so every exit knows where the client's
    // share goes.
    mapping(bytes32 channelId => uint256 record) private _records;

    /// @notice Clients' pool balances, per vault: tokens held here for `client`, which only the
    ///         client takes out (`withdrawFromPool`, `withdrawFromPoolWithSignature`) and only the
    ///         vault's approval moves into a channel (`createASCFromPool`).
    mapping(address vault => mapping(address client => uint256 amount)) public pooled;

    /// @notice The next nonce of each owner's signed pool withdrawal order.
    mapping(address owner => uint256 nonce) public poolWithdrawalNonces;

    /// @notice Payouts the token refused to transfer when they were due, by receiver.
    mapping(address account => uint256 amount) public owed;

    /// @notice The next nonce of each account's signed withdrawal order.
    mapping(address account => uint256 nonce) public withdrawalNonces;

    bytes32 public constant WITHDRAWAL_TYPEHASH = keccak256(
        "A402Withdrawal(address owner,address to,uint256 amount,uint256 nonce,uint256 deadline)"
    );
    bytes32 public constant POOL_DEPOSIT_TYPEHASH =
        keccak256("A402PoolDeposit(address vault,address client,uint256 amount,bytes32 salt)");
    bytes32 public constant POOL_WITHDRAWAL_TYPEHASH = keccak256(
        "A402PoolWithdrawal(address vault,address owner,address to,uint256 amount,uint256 nonce,uint256 deadline)"
    );
    /// @notice The vault's approval to open a channel, good until `deadline` (`openApprovalDigest`).
    bytes32 public constant OPEN_TYPEHASH = keccak256("A402Open(bytes32 channelId,uint256 deadline)");
    /// @notice The vault's approval to open a channel FROM THE CLIENT'S POOL BALANCE, good until
    ///         `deadline` (`poolOpenApprovalDigest`): a type of its own, so that no approval of
    ///         a wallet open (whose client consents on-chain) can open from the pool instead.
    bytes32 public constant POOL_OPEN_TYPEHASH = keccak256("A402PoolOpen(bytes32 channelId,uint256 deadline)");
    /// @notice The vault's request to force-close a channel at a version, good until `deadline`
    ///         (`initForceCloseFor`, `forceCloseDigest`).
    bytes32 public constant FORCE_CLOSE_TYPEHASH =
        keccak256("A402ForceClose(bytes32 channelId,uint256 version,uint256 deadline)");
    /// @notice The gas a client wallet's EIP-1271 `isValidSignature` gets in `createASCBatch`.
    uint256 public constant CONSENT_CHECK_GAS = 200_000;

    /// @dev An approval that lapses: a 65-byte ECDSA signature, then its 32-byte deadline.
    uint256 private constant _SIGNATURE_LENGTH = 65;
    uint256 private constant _APPROVAL_LENGTH = 97;

    uint256 private constant _DEADLINE_SHIFT = 8;
    uint256 private constant _VERSION_SHIFT = 48;
    uint256 private constant _BALANCE_SHIFT = 112;
    uint256 private constant _CLOSED = uint256(Status.Closed);
    uint256 private constant _POOL_BIT = 1 << 240;
    uint256 private constant _BALANCE_MASK = (1 << 128) - 1;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed client,
        address indexed provider,
        address vault,
        bytes32 providerKey,
        uint256 deposit,
        bytes32 salt
    );
    /// @notice Cooperative close of a final state.
    event ChannelClosed(bytes32 indexed channelId, uint256 version, uint256 clientPayout, uint256 providerPayout);
    event ForceCloseInitiated(
        bytes32 indexed channelId, uint256 version, uint256 clientBalance, uint256 providerBalance, uint256 deadline
    );
    event ForceCloseChallenged(
        bytes32 indexed channelId, uint256 version, uint256 clientBalance, uint256 providerBalance
    );
    event ForceCloseFinalized(
        bytes32 indexed channelId, uint256 version, uint256 clientPayout, uint256 providerPayout
    );
    /// @notice The provider settled with its completed adaptor signature (e, s). The vault
    ///         extracts t = s − ŝ from this log (or from the calldata) and opens the result.
    event ProviderForceClosed(
        bytes32 indexed channelId,
        uint256 indexed requestId,
        uint256 version,
        uint256 amount,
        bytes32 resultHash,
        bytes32 e,
        uint256 s,
        uint256 clientPayout,
        uint256 providerPayout
    );

    /// @notice A batch member that could not proceed: `reason` is the error its single call
    ///         (`createASC`, `closeASC`) would have reverted with. Nothing of it changed.
    event BatchMemberSkipped(uint256 indexed index, bytes reason);
    /// @notice A payout the token refused to transfer, kept for `account` to withdraw.
    event PayoutCredited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice `amount` credited to `client`'s pool balance with `vault`.
    event PoolDeposited(address indexed vault, address indexed client, uint256 amount);
    /// @notice `owner` took `amount` of its pool balance with `vault` out, to `to`.
    event PoolWithdrawn(address indexed vault, address indexed owner, address to, uint256 amount);

    error InvalidTerms();
    error NotAuthorized();
    error ChannelExists(bytes32 channelId);
    error WrongStatus(bytes32 channelId, Status status);
    error BadSignature(address signer);
    error BalanceMismatch();
    error VersionOutOfRange();
    error NotFinal();
    error StaleState(uint256 version, uint256 recordedVersion);
    error DisputeWindowOpen(uint256 deadline);
    error DisputeWindowClosed(uint256 deadline);
    error PaymentAlreadyIncluded(uint256 requestId, uint256 version);
    error PaymentExceedsBalance(uint256 amount, uint256 clientBalance);
    error InvalidPaymentSignature();
    error EmptyBatch();
    /// @notice The escrow grew by `received` instead of the deposit `expected`.
    error DepositNotReceived(uint256 expected, uint256 received);
    error NothingOwed();
    error OrderExpired(uint256 deadline);
    /// @notice The vault's approval (to open, to force-close) lapsed at `deadline`.
    error ApprovalExpired(uint256 deadline);
    /// @notice Too little gas left to give a client wallet its `CONSENT_CHECK_GAS` in a batch.
    error InsufficientGas();
    /// @notice A batch's arrays differ in length: `channels` channels but `other` entries.
    error LengthMismatch(uint256 channels, uint256 other);
    /// @notice The client's pool balance with the vault, `available`, is below `needed`.
    error InsufficientPool(uint256 available, uint256 needed);
    /// @notice A signed order carries nonce `given`, but the owner's next is `expected`.
    error WrongNonce(uint256 given, uint256 expected);

    constructor(IERC20 token_, uint256 disputeWindow_) EIP712("A402", "1") {
        if (address(token_).code.length == 0 || disputeWindow_ == 0 || disputeWindow_ > 365 days) {
            revert InvalidTerms();
        }
        token = token_;
        disputeWindow = disputeWindow_;
    }

    // ------------------------------------------------------------------ open

    /// @notice Open a channel, pulling the deposit from the client with `transferFrom` (the
    ///         client has approved this contract). The vault approves by sending or with
    ///         `vaultApproval` = its ECDSA signature over A402Open(channelId, deadline)
    ///         (`openApprovalDigest`) ‖ deadline, good while `block.timestamp <= deadline` (so
    ///         its host, or anyone, may submit it, but not after the deadline); the client
    ///         consents by sending or with `clientSignature`, an EIP-712 signature over the id
    ///         (EOA or EIP-1271 wallet), and needs neither when it is the vault itself (the
    ///         vault's approval is its consent). Both approvals name every term, so an allowance
    ///         given to this contract cannot be spent on a channel the client did not choose, nor
    ///         a channel opened that the vault did not.
    function createASC(Channel calldata c, bytes calldata clientSignature, bytes calldata vaultApproval)
        external
        nonReentrant
        returns (bytes32 channelId_)
    {
        channelId_ = channelId(c);
        _raise(_openFailure(c, channelId_, clientSignature, vaultApproval, false));
        _open(c, channelId_);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(c.client, address(this), c.deposit);
        _checkReceived(before, c.deposit);
    }

    /// @notice Open many channels at once, each exactly as `createASC` would (same checks, same
    ///         approval rules, one `ChannelOpened` each), then pull the deposits with one
    ///         `transferFrom` per maximal run of consecutive channels with the same client.
    ///         `clientSignatures[i]` is the client's consent to `cs[i]` and `vaultApprovals[i]`
    ///         the vault's approval of it, signature ‖ deadline as for `createASC` (either empty
    ///         where that party is the caller, or the client is the vault). A member that fails a
    ///         check — the vault's approval missing (`NotAuthorized()`), not its signature
    ///         (`BadSignature(vault)`) or lapsed (`ApprovalExpired(deadline)`) among them; a
    ///         client wallet's EIP-1271 check gets `CONSENT_CHECK_GAS` — or whose run's deposits
    ///         cannot be pulled (no allowance, no balance), is skipped (`BatchMemberSkipped`, its
    ///         id returned as zero) and left unopened; the others open. Deposits that arrive
    ///         short (a fee-on-transfer token) revert the batch: that is the token's doing, so
    ///         every run would be short.
    function createASCBatch(
        Channel[] calldata cs,
        bytes[] calldata clientSignatures,
        bytes[] calldata vaultApprovals
    ) external nonReentrant returns (bytes32[] memory channelIds) {
        uint256 n = _batchSize(cs.length, clientSignatures.length);
        _batchSize(n, vaultApprovals.length);
        channelIds = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            bytes32 cid = channelId(cs[i]);
            bytes memory failure = _openFailure(cs[i], cid, clientSignatures[i], vaultApprovals[i], true);
            if (failure.length != 0) {
                emit BatchMemberSkipped(i, failure);
            } else {
                // Recorded now, so a duplicate later in this batch fails as ChannelExists.
                channelIds[i] = cid;
                _records[cid] = uint256(Status.Open);
            }
        }
        uint256 start;
        while (start < n) {
            // The run: members start..end-1 with the client of `start` (skipped ones ignored).
            address client = cs[start].client;
            uint256 end = start;
            uint256 amount;
            while (end < n && cs[end].client == client) {
                if (channelIds[end] != 0) amount += cs[end].deposit;
                ++end;
            }
            bool arrived = amount == 0 || _pull(client, amount);
            for (uint256 i = start; i < end; ++i) {
                if (channelIds[i] == 0) continue;
                Channel calldata c = cs[i];
                if (arrived) {
                    emit ChannelOpened(channelIds[i], c.client, c.provider, c.vault, c.providerKey, c.deposit, c.salt);
                } else {
                    delete _records[channelIds[i]];
                    channelIds[i] = 0;
                    emit BatchMemberSkipped(i, abi.encodeWithSelector(DepositNotReceived.selector, c.deposit, 0));
                }
            }
            start = end;
        }
    }

    /// @notice Open a channel whose deposit moves by EIP-3009 `receiveWithAuthorization` (no
    ///         approval, nothing for the client to send): the authorization's nonce is the
    ///         channel id, so the client's one signature fixes every term and is single-use.
    ///         The vault approves as for `createASC` (sending, or `vaultApproval`, its signed
    ///         A402Open(id, deadline) ‖ deadline); when the client is the vault, the
    ///         authorization it signed with nonce = id is that approval (checked by the token,
    ///         and it lapses at `validBefore`) and `vaultApproval` is not needed (ignored).
    function createASCWithAuthorization(
        Channel calldata c,
        uint256 validAfter,
        uint256 validBefore,
        uint8 v,
        bytes32 r,
        bytes32 s,
        bytes calldata vaultApproval
    ) external nonReentrant returns (bytes32 channelId_) {
        channelId_ = channelId(c);
        if (c.client != c.vault) _raise(_vaultFailure(c, channelId_, vaultApproval, false));
        _raise(_termsFailure(c, channelId_));
        _open(c, channelId_);
        uint256 before = token.balanceOf(address(this));
        IERC3009Receive(address(token)).receiveWithAuthorization(
            c.client, address(this), c.deposit, validAfter, validBefore, channelId_, v, r, s
        );
        // receiveWithAuthorization returns nothing; make sure the deposit really arrived.
        _checkReceived(before, c.deposit);
    }

    // ------------------------------------------------------------------ pool

    /// @notice Credit `client`'s pool balance with `vault` with `amount`, pulled from the sender
    ///         (who approved this contract). Refused unless exactly `amount` arrives.
    function depositToPool(address vault, address client, uint256 amount) external nonReentrant {
        _checkPoolDeposit(vault, client, amount);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        _checkReceived(before, amount);
        _creditPool(vault, client, amount);
    }

    /// @notice Credit `client`'s pool balance with `vault` with `amount` moved from `from` by
    ///         EIP-3009 `receiveWithAuthorization` (gasless for `from`; anyone relays it). The
    ///         authorization's nonce is `poolDepositNonce(vault, client, amount, salt)`, so
    ///         `from`'s one signature fixes the vault, the beneficiary and the amount, once: a
    ///         relayer that changes any of them presents a nonce the signature does not cover,
    ///         and the token refuses it. The token lets only this contract (`to`) use it.
    function depositToPoolWithAuthorization(
        address vault,
        address client,
        address from,
        uint256 amount,
        bytes32 salt,
        ReceiveAuthorization calldata auth
    ) external nonReentrant {
        _checkPoolDeposit(vault, client, amount);
        bytes32 nonce = poolDepositNonce(vault, client, amount, salt);
        uint256 before = token.balanceOf(address(this));
        IERC3009Receive(address(token)).receiveWithAuthorization(
            from, address(this), amount, auth.validAfter, auth.validBefore, nonce, auth.v, auth.r, auth.s
        );
        _checkReceived(before, amount);
        _creditPool(vault, client, amount);
    }

    /// @notice Open a channel funded from `c.client`'s pool balance with `c.vault` (no token
    ///         moves: the balance is debited, the escrow was already here). The vault approves
    ///         by sending, or with `vaultApproval` = its signed A402PoolOpen(id, deadline) ‖
    ///         deadline — never an A402Open, which approves only wallet opens (whose client
    ///         consents on-chain), so that an approval seen in the mempool for a wallet open
    ///         cannot be turned into an open from the pool. The client gave its consent to the
    ///         vault when it pooled its tokens with it: the vault's enclave signs a pool open
    ///         only for a call the client signed. Every exit of the channel credits the client's share
    ///         back to that pool balance (see `_payout`). Reverts `InsufficientPool` beyond it.
    function createASCFromPool(Channel calldata c, bytes calldata vaultApproval)
        external
        nonReentrant
        returns (bytes32 channelId_)
    {
        channelId_ = channelId(c);
        _raise(_poolOpenFailure(c, channelId_, vaultApproval));
        _openFromPool(c, channelId_);
    }

    /// @notice Open many pool-funded channels, each exactly as `createASCFromPool` would; a
    ///         member that cannot (no vault approval, invalid terms, id used, the client's pool
    ///         balance short, counting the members before it) is skipped (`BatchMemberSkipped`
    ///         with the error its single call would raise, its id returned as zero) and the
    ///         others open. Only a malformed batch reverts.
    function createASCFromPoolBatch(Channel[] calldata cs, bytes[] calldata vaultApprovals)
        external
        nonReentrant
        returns (bytes32[] memory channelIds)
    {
        uint256 n = _batchSize(cs.length, vaultApprovals.length);
        channelIds = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            bytes32 cid = channelId(cs[i]);
            bytes memory failure = _poolOpenFailure(cs[i], cid, vaultApprovals[i]);
            if (failure.length != 0) {
                emit BatchMemberSkipped(i, failure);
            } else {
                channelIds[i] = cid;
                _openFromPool(cs[i], cid);
            }
        }
    }

    /// @dev Why `createASCFromPool` would refuse `c`: the vault's approval, the terms, the id,
    ///      then the client's pool balance.
    function _poolOpenFailure(Channel calldata c, bytes32 cid, bytes calldata vaultApproval)
        private
        view
        returns (bytes memory failure)
    {
        failure = _vaultFailure(c, cid, vaultApproval, true);
        if (failure.length == 0) failure = _termsFailure(c, cid);
        if (failure.length != 0) return failure;
        uint256 available = pooled[c.vault][c.client];
        if (available < c.deposit) return abi.encodeWithSelector(InsufficientPool.selector, available, c.deposit);
        return "";
    }

    /// @dev Debit the client's pool balance (checked) and record `c` open and pool-funded.
    function _openFromPool(Channel calldata c, bytes32 cid) private {
        unchecked {
            pooled[c.vault][c.client] -= c.deposit; // checked by _poolOpenFailure
        }
        _records[cid] = uint256(Status.Open) | _POOL_BIT;
        emit ChannelOpened(cid, c.client, c.provider, c.vault, c.providerKey, c.deposit, c.salt);
    }

    function _checkPoolDeposit(address vault, address client, uint256 amount) private pure {
        if (vault == address(0) || client == address(0) || amount == 0) revert InvalidTerms();
    }

    function _creditPool(address vault, address client, uint256 amount) private {
        pooled[vault][client] += amount;
        emit PoolDeposited(vault, client, amount);
    }

    /// @dev Why `createASC` would refuse to open `c` (id `cid`; an encoded error, empty if it
    ///      would open): the vault has not approved, the terms are invalid, the id was used, or
    ///      the client (unless it is the sender or the vault) has not consented with its
    ///      EIP-712 signature over the id (EOA or EIP-1271; with `capped`, the wallet's check
    ///      gets `CONSENT_CHECK_GAS` instead of all the gas left).
    function _openFailure(
        Channel calldata c,
        bytes32 cid,
        bytes calldata clientSignature,
        bytes calldata vaultApproval,
        bool capped
    ) private view returns (bytes memory) {
        bytes memory failure = _vaultFailure(c, cid, vaultApproval, false);
        if (failure.length == 0) failure = _termsFailure(c, cid);
        if (failure.length != 0) return failure;
        if (
            msg.sender != c.client && c.client != c.vault
                && !_consents(c.client, cid, clientSignature, capped)
        ) return abi.encodeWithSelector(BadSignature.selector, c.client);
        return "";
    }

    /// @dev Why the vault's approval to open `cid` is missing: it neither sent the transaction
    ///      nor gave `vaultApproval` = its ECDSA signature over A402Open(cid, deadline) ‖
    ///      deadline with the deadline not passed. No approval at all is `NotAuthorized()`, as
    ///      for a stranger calling; one that is not the vault's signature (a signature over the
    ///      bare id, over another id or deadline, of another kind, malformed) is
    ///      `BadSignature(vault)`; the vault's own, lapsed, is `ApprovalExpired(deadline)`.
    ///      With `pool` the approval must be an A402PoolOpen, else an A402Open: neither
    ///      stands in for the other.
    function _vaultFailure(Channel calldata c, bytes32 cid, bytes calldata vaultApproval, bool pool)
        private
        view
        returns (bytes memory)
    {
        if (msg.sender == c.vault) return "";
        if (vaultApproval.length == 0) return abi.encodeWithSelector(NotAuthorized.selector);
        if (vaultApproval.length != _APPROVAL_LENGTH) return abi.encodeWithSelector(BadSignature.selector, c.vault);
        uint256 deadline = uint256(bytes32(vaultApproval[_SIGNATURE_LENGTH:]));
        bytes32 digest = pool ? poolOpenApprovalDigest(cid, deadline) : openApprovalDigest(cid, deadline);
        return _approvalFailure(c.vault, digest, deadline, vaultApproval);
    }

    /// @dev Why an approval that lapses (`approval` = signature ‖ `deadline`, its length
    ///      checked) does not hold: not `signer`'s signature over `digest` (which names the
    ///      deadline, so a changed deadline fails here), or the deadline has passed.
    function _approvalFailure(address signer, bytes32 digest, uint256 deadline, bytes calldata approval)
        private
        view
        returns (bytes memory)
    {
        if (!_signs(signer, digest, approval[:_SIGNATURE_LENGTH])) {
            return abi.encodeWithSelector(BadSignature.selector, signer);
        }
        if (block.timestamp > deadline) return abi.encodeWithSelector(ApprovalExpired.selector, deadline);
        return "";
    }

    /// @dev Whether `client` consented to open `cid`: its ECDSA signature over the id, or, for a
    ///      contract, its EIP-1271 `isValidSignature` — with all the gas left, or, `capped` (in a
    ///      batch), with `CONSENT_CHECK_GAS`, so that one wallet cannot consume the batch's gas.
    ///      Only 32 bytes of its answer are copied, so no answer can inflate memory either.
    function _consents(address client, bytes32 cid, bytes calldata signature, bool capped)
        private
        view
        returns (bool result)
    {
        if (client.code.length == 0) return _signs(client, cid, signature);
        if (!capped) return SignatureChecker.isValidERC1271SignatureNowCalldata(client, cid, signature);
        bytes4 selector = IERC1271.isValidSignature.selector;
        uint256 stipend = CONSENT_CHECK_GAS;
        bytes4 starved = InsufficientGas.selector;
        assembly ("memory-safe") {
            // isValidSignature(cid, signature), ABI-encoded at the free memory pointer.
            let ptr := mload(0x40)
            let length := signature.length
            mstore(ptr, selector)
            mstore(add(ptr, 0x04), cid)
            mstore(add(ptr, 0x24), 0x40)
            mstore(add(ptr, 0x44), length)
            calldatacopy(add(ptr, 0x64), signature.offset, length)
            mstore(add(add(ptr, 0x64), length), 0)
            length := shl(5, shr(5, add(length, 0x1F)))
            // The call forwards at most 63/64 of what is left after its own cost (EIP-150): unless
            // the stipend fits whole, revert, so that no gas limit can make a good consent fail.
            if lt(gas(), add(add(stipend, div(stipend, 63)), 5000)) {
                mstore(0x00, starved)
                revert(0x00, 0x04)
            }
            let success := staticcall(stipend, client, ptr, add(length, 0x64), 0x00, 0x20)
            result := and(success, and(gt(returndatasize(), 0x1f), eq(mload(0x00), selector)))
        }
    }

    function _termsFailure(Channel calldata c, bytes32 cid) private view returns (bytes memory) {
        uint256 px = uint256(c.providerKey);
        if (
            c.client == address(0) || c.vault == address(0) || c.provider == address(0)
                || c.provider == c.client || c.provider == c.vault || c.deposit == 0 || c.deposit > type(uint128).max
                || px == 0 || px > Schnorr.HALF_N
        ) return abi.encodeWithSelector(InvalidTerms.selector);
        if (_records[cid] != 0) return abi.encodeWithSelector(ChannelExists.selector, cid);
        return "";
    }

    /// @dev Record `c` (id `cid`, its checks passed) open and announce it.
    function _open(Channel calldata c, bytes32 cid) private {
        _records[cid] = uint256(Status.Open);
        emit ChannelOpened(cid, c.client, c.provider, c.vault, c.providerKey, c.deposit, c.salt);
    }

    // ----------------------------------------------------------- cooperative

    /// @notice Close with the final state both vault and provider approved. While a client
    ///         force-close is pending, the final state must be newer than the recorded one.
    ///         Anyone may send it: the two signatures over a final state are the approval, and
    ///         a vault whose key never sends (an enclave's) has its gas payer submit it.
    function closeASC(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) external nonReentrant {
        uint256 record = _close(c, s, vaultSignature, providerSignature);
        _payout(c, record, s.clientBalance, s.providerBalance);
    }

    /// @notice Close many channels at once, each exactly as `closeASC` would (same checks, anyone
    ///         may send it, one `ChannelClosed` each, every record CLOSED
    ///         before any token moves), then pay out with one `transfer` per maximal run of
    ///         consecutive equal client addresses and one per run of equal provider addresses.
    ///         A member `closeASC` would refuse is skipped (`BatchMemberSkipped`) and stays as it
    ///         was; a run whose transfer the token refuses is credited (`PayoutCredited`).
    function closeASCBatch(
        Channel[] calldata cs,
        State[] calldata ss,
        bytes[] calldata vaultSignatures,
        bytes[] calldata providerSignatures
    ) external nonReentrant {
        uint256 n = _batchSize(cs.length, ss.length);
        _batchSize(n, vaultSignatures.length);
        _batchSize(n, providerSignatures.length);
        // Per member: 0 skipped, else its record before closing with bit 0 set (closed).
        uint256[] memory closed = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            bytes memory failure = _closeFailure(cs[i], ss[i], vaultSignatures[i], providerSignatures[i]);
            if (failure.length != 0) {
                emit BatchMemberSkipped(i, failure);
                continue;
            }
            closed[i] = _closeRecorded(cs[i], ss[i]) | 1;
        }
        Run memory toClients;
        Run memory toProviders;
        for (uint256 i; i < n; ++i) {
            if (closed[i] == 0) continue;
            // A pool channel's client share goes back to the pool (no token moves), as `_payout`.
            if (closed[i] & _POOL_BIT != 0) _creditClient(cs[i], ss[i].clientBalance);
            else _addToRun(toClients, cs[i].client, ss[i].clientBalance);
            _addToRun(toProviders, cs[i].provider, ss[i].providerBalance);
        }
        _send(toClients.account, toClients.amount);
        _send(toProviders.account, toProviders.amount);
    }

    /// @dev closeASC's checks and effects: a final state approved by vault and provider, sent by
    ///      a party; while Closing, newer than the recorded state. Leaves the record CLOSED and
    ///      returns it as it was.
    function _close(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) private returns (uint256) {
        _raise(_closeFailure(c, s, vaultSignature, providerSignature));
        return _closeRecorded(c, s);
    }

    /// @dev Why closeASC would refuse (an encoded error), or empty.
    function _closeFailure(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) private view returns (bytes memory) {
        if (!s.isFinal) return abi.encodeWithSelector(NotFinal.selector);
        bytes32 cid = channelId(c);
        uint256 record = _records[cid];
        Status status = _status(record);
        if (status == Status.Closing) {
            if (s.version <= _version(record)) {
                return abi.encodeWithSelector(StaleState.selector, s.version, _version(record));
            }
        } else if (status != Status.Open) {
            return abi.encodeWithSelector(WrongStatus.selector, cid, status);
        }
        return _stateFailure(c, cid, s, vaultSignature, providerSignature);
    }

    function _closeRecorded(Channel calldata c, State calldata s) private returns (uint256 record) {
        bytes32 cid = channelId(c);
        record = _records[cid];
        _records[cid] = _CLOSED | (record & _POOL_BIT);
        emit ChannelClosed(cid, s.version, s.clientBalance, s.providerBalance);
    }

    // ---------------------------------------------------- client force-close

    /// @notice Start the client's unilateral close with the latest state it holds (version 0,
    ///         the opening state, needs no signatures). Opens the dispute window. Sent by the
    ///         client or the vault; see `initForceCloseFor` for a vault that does not send.
    function initForceClose(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) external nonReentrant {
        if (msg.sender != c.client && msg.sender != c.vault) revert NotAuthorized();
        _initForceClose(c, channelId(c), s, vaultSignature, providerSignature);
    }

    /// @notice `initForceClose` at the vault's request, sent by anyone (the vault's host, which
    ///         pays gas but holds no channel key): `forceCloseRequest` is the vault's ECDSA
    ///         signature over A402ForceClose(channelId, version, deadline) (`forceCloseDigest`)
    ///         ‖ deadline (a 32-byte word), good while `block.timestamp <= deadline`, and `s`
    ///         must still be approved by vault and provider exactly as in `initForceClose`.
    ///         The request is its own EIP-712 type, so no state signature — in particular none
    ///         the provider holds — can start a force close; and both the request and the
    ///         vault's state signature are needed, so a sender with a request for version v
    ///         cannot pair it with another state of version v that only the provider signed.
    ///         A channel force-closes once, so a used request cannot be replayed; and one that
    ///         failed or was withheld lapses at its deadline, so it cannot end, later, a channel
    ///         the vault went on using (which would cut it short and make the vault answer a
    ///         dispute it never wanted).
    function initForceCloseFor(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature,
        bytes calldata forceCloseRequest
    ) external nonReentrant {
        bytes32 cid = channelId(c);
        if (forceCloseRequest.length != _APPROVAL_LENGTH) revert BadSignature(c.vault);
        uint256 deadline = uint256(bytes32(forceCloseRequest[_SIGNATURE_LENGTH:]));
        bytes32 digest = forceCloseDigest(cid, s.version, deadline);
        _raise(_approvalFailure(c.vault, digest, deadline, forceCloseRequest));
        _initForceClose(c, cid, s, vaultSignature, providerSignature);
    }

    function _initForceClose(
        Channel calldata c,
        bytes32 cid,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) private {
        uint256 record = _records[cid];
        Status status = _status(record);
        if (status != Status.Open) revert WrongStatus(cid, status);
        _checkState(c, cid, s, vaultSignature, providerSignature);
        uint256 deadline = block.timestamp + disputeWindow;
        _records[cid] = _pack(Status.Closing, deadline, s.version, s.providerBalance) | (record & _POOL_BIT);
        emit ForceCloseInitiated(cid, s.version, s.clientBalance, s.providerBalance, deadline);
    }

    /// @notice Replace the recorded state with a strictly newer co-signed one, before the
    ///         deadline. The deadline does not move, so disputes cannot be prolonged.
    function challengeForceClose(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) external nonReentrant {
        bytes32 cid = channelId(c);
        uint256 record = _records[cid];
        Status status = _status(record);
        if (status != Status.Closing) revert WrongStatus(cid, status);
        uint256 deadline = _deadline(record);
        if (block.timestamp >= deadline) revert DisputeWindowClosed(deadline);
        if (s.version <= _version(record)) revert StaleState(s.version, _version(record));
        _checkState(c, cid, s, vaultSignature, providerSignature);
        _records[cid] = _pack(Status.Closing, deadline, s.version, s.providerBalance) | (record & _POOL_BIT);
        emit ForceCloseChallenged(cid, s.version, s.clientBalance, s.providerBalance);
    }

    /// @notice Pay out the recorded state once the dispute window has passed.
    function finalForceClose(Channel calldata c) external nonReentrant {
        bytes32 cid = channelId(c);
        uint256 record = _records[cid];
        Status status = _status(record);
        if (status != Status.Closing) revert WrongStatus(cid, status);
        uint256 deadline = _deadline(record);
        if (block.timestamp < deadline) revert DisputeWindowOpen(deadline);
        uint256 providerBalance = _providerBalance(record);
        uint256 clientBalance = c.deposit - providerBalance;
        _records[cid] = _CLOSED | (record & _POOL_BIT);
        emit ForceCloseFinalized(cid, _version(record), clientBalance, providerBalance);
        _payout(c, record, clientBalance, providerBalance);
    }

    // -------------------------------------------------- provider force-close

    /// @notice The provider's unilateral close: state `s` (approved by the vault; the provider
    ///         approves by sending) plus the pending payment `p`, paid on top of it. Requires
    ///         * p.requestId ≥ s.version (the payment is not already in the state) and
    ///           p.amount ≤ s.clientBalance;
    ///         * (p.e, p.s) a valid Schnorr signature by `providerKey` on
    ///           m = A402Payment(channelId, requestId, amount, resultHash) — the provider's
    ///           pre-signature completed with t;
    ///         * `authorization` = σ_U, the vault's ECDSA signature over
    ///           A402PaymentAuthorization(m, amount, e). Binding e means the only signature that
    ///           passes is the completion of the very pre-signature the vault saw, so t is
    ///           extractable from it.
    ///         Allowed while Open, or while Closing before the deadline on a state at least as new
    ///         as the recorded one (the provider answers a client force-close by claiming).
    ///         No dispute window: settles at once.
    function forceClose(
        Channel calldata c,
        State calldata s,
        bytes calldata vaultSignature,
        Payment calldata p,
        bytes calldata authorization
    ) external nonReentrant {
        if (msg.sender != c.provider) revert NotAuthorized();
        bytes32 cid = channelId(c);
        uint256 record = _records[cid];
        Status status = _status(record);
        if (status == Status.Closing) {
            uint256 deadline = _deadline(record);
            if (block.timestamp >= deadline) revert DisputeWindowClosed(deadline);
            if (s.version < _version(record)) revert StaleState(s.version, _version(record));
        } else if (status != Status.Open) {
            revert WrongStatus(cid, status);
        }
        _checkState(c, cid, s, vaultSignature, msg.data[0:0]); // the provider approves by sending
        if (p.requestId < s.version) revert PaymentAlreadyIncluded(p.requestId, s.version);
        if (p.amount > s.clientBalance) revert PaymentExceedsBalance(p.amount, s.clientBalance);
        _checkPayment(c, cid, p, authorization);

        uint256 clientPayout = s.clientBalance - p.amount;
        uint256 providerPayout = s.providerBalance + p.amount;
        _records[cid] = _CLOSED | (record & _POOL_BIT);
        emit ProviderForceClosed(
            cid, p.requestId, s.version, p.amount, p.resultHash, p.e, p.s, clientPayout, providerPayout
        );
        _payout(c, record, clientPayout, providerPayout);
    }

    function _checkPayment(Channel calldata c, bytes32 cid, Payment calldata p, bytes calldata authorization)
        private
        view
    {
        bytes32 domain = _domainSeparatorV4();
        bytes32 m = A402Message.paymentMessage(domain, cid, p.requestId, p.amount, p.resultHash);
        if (!Schnorr.verify(c.providerKey, m, p.e, p.s)) revert InvalidPaymentSignature();
        // σ_U is always a signature: the vault never sends forceClose (only the provider may).
        _requireSignature(c.vault, A402Message.authorizationDigest(domain, m, p.amount, p.e), authorization);
    }

    // ----------------------------------------------------------- withdrawals

    /// @notice Take everything owed to the sender (payouts its token refused) to `to`, which
    ///         may be any address: a blocklisted receiver names another.
    function withdraw(address to) external nonReentrant returns (uint256 amount) {
        return _withdraw(msg.sender, to, owed[msg.sender]);
    }

    /// @notice Carry out `owner`'s signed order to withdraw `amount` of what it is owed to `to`,
    ///         for a receiver that does not send transactions itself (an enclave's address, a
    ///         wallet without gas). The EIP-712 order A402Withdrawal(owner, to, amount, nonce,
    ///         deadline), in this manager's domain, signed by `owner` (EOA or EIP-1271), is
    ///         good once: its nonce is the owner's next.
    function withdrawWithSignature(
        address owner,
        address to,
        uint256 amount,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant {
        if (block.timestamp > deadline) revert OrderExpired(deadline);
        bytes32 digest = withdrawalDigest(owner, to, amount, withdrawalNonces[owner], deadline);
        if (!SignatureChecker.isValidSignatureNow(owner, digest, signature)) revert BadSignature(owner);
        ++withdrawalNonces[owner];
        _withdraw(owner, to, amount);
    }

    /// @notice The digest an owner signs to order a withdrawal.
    function withdrawalDigest(address owner, address to, uint256 amount, uint256 nonce, uint256 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(WITHDRAWAL_TYPEHASH, owner, to, amount, nonce, deadline)));
    }

    function _withdraw(address owner, address to, uint256 amount) private returns (uint256) {
        if (amount == 0 || amount > owed[owner]) revert NothingOwed();
        owed[owner] -= amount;
        emit Withdrawn(owner, to, amount);
        token.safeTransfer(to, amount);
        return amount;
    }

    /// @notice Take `amount` of the sender's pool balance with `vault` out, to `to`: the pool
    ///         client's exit, which needs nothing of the vault (not its approval, not its host,
    ///         not its being online). A transfer the token refuses reverts: nothing moved, the
    ///         balance is still in the pool, and the sender names another `to`.
    function withdrawFromPool(address vault, address to, uint256 amount) external nonReentrant {
        _withdrawFromPool(vault, msg.sender, to, amount);
    }

    /// @notice Carry out `owner`'s signed order to take `amount` of its pool balance with `vault`
    ///         out, to `to`, relayed by anyone (the vault's gas account, for a client without
    ///         gas). The order is the EIP-712 A402PoolWithdrawal(vault, owner, to, amount, nonce,
    ///         deadline) in this manager's domain, signed by `owner` (EOA or EIP-1271); `nonce`
    ///         must be the owner's next (`poolWithdrawalNonces`), so an order is good once and,
    ///         of two orders with one nonce (one to a `to` the token refused, then another), at
    ///         most one ever goes through. A refused transfer reverts and uses no nonce.
    function withdrawFromPoolWithSignature(
        address vault,
        address owner,
        address to,
        uint256 amount,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant {
        if (block.timestamp > deadline) revert OrderExpired(deadline);
        uint256 expected = poolWithdrawalNonces[owner];
        if (nonce != expected) revert WrongNonce(nonce, expected);
        bytes32 digest = poolWithdrawalDigest(vault, owner, to, amount, nonce, deadline);
        if (!SignatureChecker.isValidSignatureNow(owner, digest, signature)) revert BadSignature(owner);
        poolWithdrawalNonces[owner] = expected + 1;
        _withdrawFromPool(vault, owner, to, amount);
    }

    function _withdrawFromPool(address vault, address owner, address to, uint256 amount) private {
        uint256 available = pooled[vault][owner];
        if (amount == 0 || amount > available) revert InsufficientPool(available, amount);
        pooled[vault][owner] = available - amount;
        emit PoolWithdrawn(vault, owner, to, amount);
        token.safeTransfer(to, amount);
    }

    /// @notice The digest `owner` signs to order a pool withdrawal.
    function poolWithdrawalDigest(
        address vault,
        address owner,
        address to,
        uint256 amount,
        uint256 nonce,
        uint256 deadline
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(POOL_WITHDRAWAL_TYPEHASH, vault, owner, to, amount, nonce, deadline))
        );
    }

    /// @notice The EIP-3009 nonce of a pool deposit crediting `client` with `vault` by `amount`.
    function poolDepositNonce(address vault, address client, uint256 amount, bytes32 salt)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(POOL_DEPOSIT_TYPEHASH, vault, client, amount, salt)));
    }

    // ----------------------------------------------------------------- views

    /// @notice The id of the channel with these terms (its EIP-712 typed-data hash).
    /// @dev Hashes the six words straight from calldata (no per-field copy into memory), after
    ///      the same check the ABI decoder makes: the three addresses have clean upper bits.
    function channelId(Channel calldata c) public view returns (bytes32) {
        bytes32 typeHash = CHANNEL_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            if shr(160, or(calldataload(c), or(calldataload(add(c, 0x20)), calldataload(add(c, 0x40))))) {
                revert(0, 0)
            }
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            calldatacopy(add(ptr, 0x20), c, 0xc0)
            structHash := keccak256(ptr, 0xe0)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @notice The EIP-712 digest that vault and provider sign for state `s` of channel `cid`.
    /// @dev Like `channelId`, hashes the state's four words from calldata after checking that
    ///      `isFinal` is a clean bool.
    function stateDigest(bytes32 cid, State calldata s) public view returns (bytes32) {
        bytes32 typeHash = STATE_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            if gt(calldataload(add(s, 0x60)), 1) { revert(0, 0) }
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), cid)
            calldatacopy(add(ptr, 0x40), s, 0x80)
            structHash := keccak256(ptr, 0xc0)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @notice The digest the vault signs to approve opening `cid` until `deadline`.
    function openApprovalDigest(bytes32 cid, uint256 deadline) public view returns (bytes32) {
        return _approvalDigest(OPEN_TYPEHASH, cid, deadline);
    }

    /// @notice The digest the vault signs to approve opening `cid` from the client's pool balance
    ///         until `deadline` (`createASCFromPool`, `createASCFromPoolBatch` only).
    function poolOpenApprovalDigest(bytes32 cid, uint256 deadline) public view returns (bytes32) {
        return _approvalDigest(POOL_OPEN_TYPEHASH, cid, deadline);
    }

    /// @dev The EIP-712 digest of a `typeHash(bytes32 channelId, uint256 deadline)` approval,
    ///      hashing the struct at the free memory pointer without allocating (no `abi.encode`
    ///      copy): it is on the path of every open a vault approves by signature.
    function _approvalDigest(bytes32 typeHash, bytes32 cid, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        bytes32 structHash;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), cid)
            mstore(add(ptr, 0x40), deadline)
            structHash := keccak256(ptr, 0x60)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @notice The digest the vault signs to request a force close of `cid` at `version`, until
    ///         `deadline`.
    function forceCloseDigest(bytes32 cid, uint256 version, uint256 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(FORCE_CLOSE_TYPEHASH, cid, version, deadline)));
    }

    /// @notice The payment message m the provider pre-signs, in this contract's domain.
    function paymentMessage(bytes32 cid, uint256 requestId, uint256 amount, bytes32 resultHash)
        external
        view
        returns (bytes32)
    {
        return A402Message.paymentMessage(_domainSeparatorV4(), cid, requestId, amount, resultHash);
    }

    /// @notice The digest of σ_U for payment message `m`, in this contract's domain.
    function authorizationDigest(bytes32 m, uint256 amount, bytes32 challenge) external view returns (bytes32) {
        return A402Message.authorizationDigest(_domainSeparatorV4(), m, amount, challenge);
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice A channel's on-chain status and, while Closing, the recorded state and deadline.
    function channel(bytes32 cid)
        external
        view
        returns (Status status, uint256 deadline, uint256 version, uint256 providerBalance)
    {
        uint256 record = _records[cid];
        return (_status(record), _deadline(record), _version(record), _providerBalance(record));
    }

    /// @notice Whether channel `cid` was opened from the pool (`createASCFromPool`): its exits
    ///         credit the client's share to `pooled[vault][client]`.
    function poolFunded(bytes32 cid) external view returns (bool) {
        return _records[cid] & _POOL_BIT != 0;
    }

    // --------------------------------------------------------------- helpers

    /// @dev Conservation, version range, and approval of `s` by vault and provider.
    function _checkState(
        Channel calldata c,
        bytes32 cid,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) private view {
        _raise(_stateFailure(c, cid, s, vaultSignature, providerSignature));
    }

    /// @dev Why `_checkState` would refuse `s` (an encoded error), or empty.
    function _stateFailure(
        Channel calldata c,
        bytes32 cid,
        State calldata s,
        bytes calldata vaultSignature,
        bytes calldata providerSignature
    ) private view returns (bytes memory) {
        // Each balance ≤ deposit < 2^128 first, so the sum cannot overflow.
        if (s.clientBalance > c.deposit || s.clientBalance + s.providerBalance != c.deposit) {
            return abi.encodeWithSelector(BalanceMismatch.selector);
        }
        if (s.version > type(uint64).max) return abi.encodeWithSelector(VersionOutOfRange.selector);
        // The opening state (version 0, nothing paid, not final) is approved by createASC.
        if (s.version == 0 && s.providerBalance == 0 && !s.isFinal) return "";
        bytes32 digest = stateDigest(cid, s);
        if (!_approves(c.vault, digest, vaultSignature)) return abi.encodeWithSelector(BadSignature.selector, c.vault);
        if (!_approves(c.provider, digest, providerSignature)) {
            return abi.encodeWithSelector(BadSignature.selector, c.provider);
        }
        return "";
    }

    /// @dev A party approves by signing or by being the sender.
    function _approves(address signer, bytes32 digest, bytes calldata signature) private view returns (bool) {
        return msg.sender == signer || _signs(signer, digest, signature);
    }

    function _requireSignature(address signer, bytes32 digest, bytes calldata signature) private pure {
        if (!_signs(signer, digest, signature)) revert BadSignature(signer);
    }

    function _signs(address signer, bytes32 digest, bytes calldata signature) private pure returns (bool) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        return err == ECDSA.RecoverError.NoError && recovered == signer;
    }

    /// @dev Revert with an encoded error, if there is one.
    function _raise(bytes memory failure) private pure {
        if (failure.length != 0) {
            assembly ("memory-safe") {
                revert(add(failure, 0x20), mload(failure))
            }
        }
    }

    /// @dev Every exit's payout (`closeASCBatch` aggregates the same two steps): the client's
    ///      share goes back to its pool balance if `record` (the channel's, before it closed) is
    ///      pool-funded, else to the client; the provider's share is paid, or owed on failure.
    function _payout(Channel calldata c, uint256 record, uint256 clientAmount, uint256 providerAmount) private {
        if (record & _POOL_BIT != 0) _creditClient(c, clientAmount);
        else _send(c.client, clientAmount);
        _send(c.provider, providerAmount);
    }

    /// @dev A pool channel's client share, back into `pooled[vault][client]`: no token moves,
    ///      so nothing the token does (a blocklist, a pause) can hold it up.
    function _creditClient(Channel calldata c, uint256 amount) private {
        if (amount != 0) pooled[c.vault][c.client] += amount;
    }

    /// @dev Pay `amount` to `to`, or, if the token refuses (a blocklist, a pause), credit it to
    ///      `to` for a later `withdraw`: a payout never reverts the settlement it belongs to.
    function _send(address to, uint256 amount) private {
        if (amount == 0 || token.trySafeTransfer(to, amount)) return;
        owed[to] += amount;
        emit PayoutCredited(to, amount);
    }

    /// @dev Pull `amount` from `from` into the escrow: true if exactly that much arrived.
    function _pull(address from, uint256 amount) private returns (bool) {
        uint256 before = token.balanceOf(address(this));
        if (!token.trySafeTransferFrom(from, address(this), amount)) return false;
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert DepositNotReceived(amount, received);
        return true;
    }

    /// @dev The escrow, `before` a deposit of `amount`, must have grown by exactly `amount`.
    function _checkReceived(uint256 before, uint256 amount) private view {
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert DepositNotReceived(amount, received);
    }

    /// @dev Extend `run` with `amount` for `account`, first paying the run out if it is another
    ///      account's. The sum is checked arithmetic, so an overflow reverts the batch (it cannot
    ///      happen: every deposit is below 2^128 and every balance at most its deposit).
    function _addToRun(Run memory run, address account, uint256 amount) private {
        if (account != run.account) {
            _send(run.account, run.amount);
            run.account = account;
            run.amount = amount;
        } else {
            run.amount += amount;
        }
    }

    /// @dev A batch's size `n`, checked to be non-zero and equal to an argument's length `m`.
    function _batchSize(uint256 n, uint256 m) private pure returns (uint256) {
        if (n == 0) revert EmptyBatch();
        if (m != n) revert LengthMismatch(n, m);
        return n;
    }

    function _pack(Status status, uint256 deadline, uint256 version, uint256 providerBalance)
        private
        pure
        returns (uint256)
    {
        // deadline < 2^40 for 34,000 years; version < 2^64 and providerBalance ≤ deposit < 2^128
        // are checked by the callers.
        return uint256(status) | (deadline << _DEADLINE_SHIFT) | (version << _VERSION_SHIFT)
            | (providerBalance << _BALANCE_SHIFT);
    }

    function _status(uint256 record) private pure returns (Status) {
        return Status(uint8(record));
    }

    function _deadline(uint256 record) private pure returns (uint256) {
        return uint40(record >> _DEADLINE_SHIFT);
    }

    function _version(uint256 record) private pure returns (uint256) {
        return uint64(record >> _VERSION_SHIFT);
    }

    function _providerBalance(uint256 record) private pure returns (uint256) {
        return (record >> _BALANCE_SHIFT) & _BALANCE_MASK;
    }
}
