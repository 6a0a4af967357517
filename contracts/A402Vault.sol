// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {A402Message} from "./A402Message.sol";
import {Schnorr} from "./SchnorrVerifier.sol";
import {IERC3009Receive} from "./ASCManager.sol";

/// @title A402Vault: the Liquidity Vault, vault mode (A402 paper §4.3, Alg. 3, §6.2)
/// @notice Participants (clients and providers) fund one pool; channels open and close inside
///         the vault's enclave with no transaction; the chain sees deposits and aggregated
///         settlements only, and every participant has an exit that does not need the vault:
///         * `deposit` / `depositWithAuthorization` (the paper's initVault): anyone credits a
///           participant; the enclave reads `Deposited(participant, amount)`;
///         * `settle` (settleVault): many payouts in one transaction, from a compact encoding,
///           authorised only by the vault key's signature, in consecutive epochs;
///         * `initForceSettle` → (`challengeForceSettle`)* → `finalForceSettle`
///           (initForceSettle / finalForceSettle): a participant exits with the latest balance
///           statement the enclave signed, after a dispute window in which a newer one wins;
///         * `claimPayment`: a provider is paid a pending payment (its completed adaptor
///           signature, σ_U, and the enclave's signed pending record) while the vault is dark.
/// @dev The vault key. `vaultSigner` is one address fixed at deployment: the attested key of
///      the vault's enclave, which signs but never sends (its host or anyone pays gas). A
///      committee (the paper's m-of-n) would replace it by a threshold key with the same
///      address-based check; this contract keeps one key. Every signature it checks is plain
///      ECDSA (OpenZeppelin `ECDSA`) over an EIP-712 digest in the domain ("A402", "1",
///      chainid, this contract) — the same domain, so the same `A402Payment` message m and σ_U
///      digest, as `ASCManager` at this address (`A402Message`). The key is trusted to sign
///      only what the enclave's ledger allows; the contract makes sure that no ordering of
///      settlements, force-settles and claims pays any unit of that ledger twice, and that it
///      never pays out more than it holds.
///
///      Participants. Each has a stable `index` (uint32) that the enclave assigns when it first
///      sees it and names in every payout and statement. The contract keeps, per index, one
///      32-bit lane: the last settlement epoch that paid it, and a frozen bit; eight lanes share
///      a storage word, so a settlement of payees with neighbouring indices writes one word per
///      eight payees instead of one per payee (the difference between ~11,000 and ~15,000 gas
///      per payee, and ~13,000 against ~32,000 for a payee's first settlement). The index is
///      the enclave's word like everything else the key signs: a key that gave two participants
///      one index would only make their statements refuse each other (never pay twice).
///
///      Settlements. `payouts` is a packed array of 36-byte records `address (20) ‖ uint32
///      index (4) ‖ uint96 amount (12)`; the vault signs A402VaultSettlement(uint64 epoch,
///      bytes32 payouts = keccak256(payouts), bytes32 deposits, uint64 notBefore) (`deposits`,
///      `notBefore`: see "Deposits and claims are the chain's word"; a settlement may pay
///      nobody and only confirm deposits). Epochs are consecutive (`epoch == lastEpoch + 1`,
///      below 2^31): a signature is good once, and a settlement the enclave signed can never be
///      skipped over by a later one (so "every settlement up to epoch e" is a fact of the chain
///      once `lastEpoch ≥ e`).
///      Privacy: the calldata and the one `Settled(epoch, count, total)` event carry payees and
///      their amounts (the token's own Transfer logs show them anyway) but no channel id, no
///      client–provider pair and no per-request amount: each payout is an aggregate of a
///      participant's balance, batched with others by the enclave's scheduler. No per-payee
///      event: it would add nothing an observer does not already read from Transfer logs and
///      would cost ~1,000 gas per payee.
///
///      Balance statements. The enclave hands every participant, after each change of its
///      account, A402VaultBalance(participant, index, balance, locked, epoch, nonce):
///      * `balance` (free) and `locked` (in the participant's open channels, as client) are what
///        the vault owes it if it stopped now, counting only deposits confirmed by a settlement
///        with epoch ≤ `epoch` (see "Deposits and claims are the chain's word"), NET of its
///        payouts in every settlement with epoch ≤ `epoch`, and gross of every settlement after;
///        `epoch` is at least the last settlement that changed the participant's money
///        (confirmed a deposit of its, credited it a pending payment, or paid it: the enclave
///        debits a payee when it signs the settlement) and at most the last one signed (the
///        enclave names the first: a settlement that never lands then voids only the later
///        statements of the participants it touched);
///      * `nonce` increases with every change; of two statements, the higher nonce is newer and
///        has an epoch at least as high.
///      The double-pay rule between settlements and statements. A statement is usable on-chain
///      (to start or to challenge a force-settle) only if
///          lastPaidEpoch[index] ≤ statement.epoch ≤ lastEpoch,
///      where `lastPaidEpoch` is the last settlement that paid the participant (recorded by
///      `settle` in the participant's lane). The right inequality says every settlement the
///      statement is net of has landed (with consecutive epochs); the left one that no landed
///      settlement paid the participant money the statement still counts. So
///      * settle, then force-settle with an older statement: refused (`StaleStatement`);
///      * force-settle, then settle: from `initForceSettle` on, the account is frozen and every
///        settlement skips it (the payout is withheld in the pool, `PayoutWithheld`). A withheld
///        payout of epoch E is added to the force-settle's payout iff the statement finally
///        recorded is net of it (E ≤ statement.epoch): either the participant's statement
///        counts the money, or the withheld payout does, never both and never neither. A
///        settlement cannot be blocked by a frozen member: it pays the others.
///
///      Pending payments and the provider's claim (vault dark). A vault-mode channel is
///      A402VaultChannel(client, provider, providerKey, capacity, salt), its id the EIP-712
///      hash (no on-chain record until a claim). When the vault authorizes a payment δ of
///      request `requestId` (σ_U, exactly ASCManager's: A402PaymentAuthorization(m, δ, e) over
///      m = A402Payment(channelId, requestId, δ, resultHash)), the enclave moves δ out of the
///      client's statement (it is in no statement of the client with a higher nonce) and signs
///      A402VaultPending(channelId, requestId, clientNonce, epoch, deadline), `clientNonce` =
///      the nonce of the client's last statement that still counts δ, `epoch` the client's
///      statement epoch (claimable only once that settlement landed). The provider's statements
///      never count a pending δ before `deadline`; after it, the enclave credits δ to the
///      provider (it revealed t) or back to the client (it did not), unless a claim landed,
///      in a settlement with `notBefore ≥ deadline` (see "Deposits and claims ...").
///      `claimPayment` (until `deadline`) pays δ to the provider and records (clientNonce, δ)
///      against the client; the client's force-settle deducts, from its `balance + locked` (a
///      statement signed before the channel opened counts δ as free), every claim
///      with clientNonce ≥ its recorded statement's nonce (the statements that still count δ),
///      and a claim on a client whose force-settle already paid a statement counting δ is
///      refused. Each (channel, request) is claimed once.
///
///      Deposits and claims are the chain's word, not the host's. The enclave cannot see the
///      chain: its host reports each `Deposited` and `PaymentClaimed` event. A host that
///      invented a deposit (for a key of its own) would have the enclave sign balances,
///      payments and payouts out of other participants' money, which `available()` alone does
///      not stop; one that hid a provider's claim would have the enclave credit that payment
///      to the provider again. So every deposit and every claim folds one hash chain,
///      `depositState = count ‖ low224(keccak(depositState ‖ record))` (a deposit's record is
///      `participant ‖ uint96 amount`, a claim's `0x01 ‖ keccak(channelId, requestId) ‖ uint64
///      deadline`), which the enclave folds too, from the reports, and the vault key's word is
///      only ever usable through a settlement that proves its view of that chain:
///      * a settlement signs the enclave's `deposits` state with its epoch, and lands only if
///        that state, extended by the records mined since (`depositTail`, which anyone reads
///        from the events), is `depositState`: the enclave's chain is a prefix of the chain's,
///        so each deposit it counted was made, for that participant and amount, once, and it
///        missed no deposit or claim before its view (an invented, changed, reordered,
///        repeated or hidden report forks it for good);
///      * the enclave counts a reported deposit in no statement, payment or payout until it
///        has signed a settlement covering it (it *confirms* deposits by signing one, with no
///        payouts if need be), and names that settlement's epoch in what it signs: a statement
///        is usable only with `epoch ≤ lastEpoch` (below), a pending record only with
///        `p.epoch ≤ lastEpoch` (`claimPayment`). So nothing the key signed on the strength of
///        a deposit pays before the settlement that proved the deposit has landed;
///      * a pending payment is claimable until its `deadline` (chain time); the enclave
///        credits it off-chain (to the provider, or back to the client) only in a settlement
///        whose `notBefore` is at least that deadline, and `settle` requires
///        `block.timestamp > notBefore`: by the time such a settlement lands, the claim window
///        is shut. A claim that landed before the enclave's view is in its chain (or the
///        settlement cannot land); one that lands after may ride in the tail only if its
///        deadline is after `notBefore` (a payment this settlement did not resolve), otherwise
///        the settlement can no longer land (`ClaimInTail`). Either way no payment is paid
///        both by a claim and off-chain, whatever time the host reports.
///      A host that lies forks the enclave's chain: no later settlement lands, no later
///      statement or claim is usable (participants leave with the last usable ones), and
///      nobody is paid money that was never deposited, or paid twice.
///      Cost: one storage word rewritten per deposit (~5,400 gas) and per claim, one read and
///      32 bytes of calldata per deposit (64 per claim) in the tail per settlement. A
///      settlement whose tail missed a record mined in between reverts (`DepositsMismatch`)
///      and is sent again with it.
///
///      Solvency. The contract never owes more than it holds: every payout (settlement total,
///      force-settle, claim) must fit in `available()` = token balance − `totalOwed` (payouts
///      the token refused, kept for withdrawal), or the call reverts. Deposits that do not
///      arrive whole (fee-on-transfer) are refused. The token must not rebase.
///
///      Payouts never block: a transfer the token refuses (blocklist, pause) is credited to
///      `owed[receiver]` (`PayoutCredited`), taken later with `withdraw(to)` or a signed
///      `withdrawWithSignature`. Transient reentrancy guard on every state-changing entry.
///
///      What the enclave must keep (the contract cannot see its ledger): one stable index per
///      participant; never two settlements of one epoch, each payee debited when it is signed;
///      statements whose nonce rises with every change and whose epoch never falls; δ out of the
///      client's statements from σ_U on, and into the provider's only after the pending record's
///      deadline and only if no `claimPayment` landed (a provider credited at REVEAL could also
///      claim); no more payouts to a participant it knows is force-settling.
///
///      Out of scope (documented, not enforced here): the enclave's ledger itself (the key signs
///      only balances that exist), its view of the chain (it must learn deposits, claims and
///      force-settles from verified chain data), a committee key, and cooperative channel closes
///      on-chain (vault-mode channels close inside the enclave). Known limit: a payment pending
///      when the vault goes dark, which its provider never claims, stays in the pool (the
///      client's later statements no longer count it; nothing pays it twice, nobody gets it).
///      The per-participant claim and withheld lists are looped over at `finalForceSettle`; they
///      grow only with what the vault key signed.
contract A402Vault is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice A balance statement (see the contract docs for its meaning).
    struct Statement {
        address participant;
        uint32 index;
        uint256 balance;
        uint256 locked;
        uint64 epoch;
        uint64 nonce;
    }

    /// @notice A vault-mode channel's terms; their EIP-712 hash is the channel id.
    struct Channel {
        address client;
        address provider;
        bytes32 providerKey;
        uint256 capacity;
        bytes32 salt;
    }

    /// @notice A pending payment and the provider's completed adaptor signature (e, s) on
    ///         m = A402Payment(channelId, requestId, amount, resultHash).
    struct Payment {
        uint256 requestId;
        uint256 amount;
        bytes32 resultHash;
        bytes32 e;
        uint256 s;
        uint64 clientNonce;
        uint64 epoch;
        uint64 deadline;
    }

    /// @notice An EIP-3009 `receiveWithAuthorization` signature's validity and (v, r, s).
    struct ReceiveAuthorization {
        uint256 validAfter;
        uint256 validBefore;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice A participant's force-settle: the recorded statement and its deadline.
    struct ForceSettle {
        uint256 balance;
        uint256 locked;
        uint64 epoch;
        uint64 nonce;
        uint64 deadline;
        uint32 index;
    }

    enum Status {
        Active,
        Settling,
        Settled
    }

    bytes32 public constant SETTLEMENT_TYPEHASH = keccak256(
        "A402VaultSettlement(uint64 epoch,bytes32 payouts,bytes32 deposits,uint64 notBefore)"
    );
    bytes32 public constant BALANCE_TYPEHASH = keccak256(
        "A402VaultBalance(address participant,uint32 index,uint256 balance,uint256 locked,uint64 epoch,uint64 nonce)"
    );
    bytes32 public constant CHANNEL_TYPEHASH = keccak256(
        "A402VaultChannel(address client,address provider,bytes32 providerKey,uint256 capacity,bytes32 salt)"
    );
    bytes32 public constant PENDING_TYPEHASH =
        keccak256("A402VaultPending(bytes32 channelId,uint256 requestId,uint64 clientNonce,uint64 epoch,uint64 deadline)");
    bytes32 public constant DEPOSIT_TYPEHASH =
        keccak256("A402VaultDeposit(address participant,uint256 amount,bytes32 salt)");
    bytes32 public constant WITHDRAWAL_TYPEHASH = keccak256(
        "A402Withdrawal(address owner,address to,uint256 amount,uint256 nonce,uint256 deadline)"
    );

    /// @notice The pooled asset (one per vault).
    IERC20 public immutable token;
    /// @notice The vault enclave's key: the only signer of settlements, statements and pending
    ///         records (and σ_U).
    address public immutable vaultSigner;
    /// @notice Δ_settle: how long a force-settle stays open to challenges, in seconds.
    uint256 public immutable settleWindow;

    /// @notice The epoch of the last settlement (0: none yet).
    uint64 public lastEpoch;
    /// @notice Payouts the token refused, kept for their receivers (backed by the balance).
    uint256 public totalOwed;
    /// @notice The deposit chain: `count (32 bits) ‖ head (224 bits)`, folded by every deposit
    ///         and every claim (see the contract docs, "Deposits and claims are the chain's
    ///         word").
    uint256 public depositState;

    // Eight 32-bit lanes per word, by participant index: frozen (bit 31) | lastPaidEpoch.
    mapping(uint256 laneWord => uint256 lanes) private _lanes;
    mapping(address participant => Status) private _status;
    mapping(address participant => ForceSettle) private _forceSettles;
    // Payouts withheld from a frozen participant: epoch << 192 | amount.
    mapping(address participant => uint256[]) private _withheld;
    // Claims against a client's locked funds: clientNonce << 192 | amount.
    mapping(address client => uint256[]) private _claims;
    mapping(bytes32 paymentKey => bool) public claimed;

    /// @notice Payouts the token refused to transfer when due, by receiver.
    mapping(address account => uint256 amount) public owed;
    /// @notice The next nonce of each account's signed withdrawal order.
    mapping(address account => uint256 nonce) public withdrawalNonces;

    uint256 private constant _FROZEN = 1 << 31;
    uint256 private constant _LANE_MASK = 0xffffffff;
    uint256 private constant _PAYOUT_SIZE = 36;
    uint256 private constant _TAG_SHIFT = 192;
    uint256 private constant _AMOUNT_MASK = (1 << 192) - 1;
    uint256 private constant _DEPOSIT_SIZE = 32;
    uint256 private constant _HEAD_MASK = (1 << 224) - 1;
    /// @dev The tail word that marks a claim (no deposit can credit this address).
    address private constant _CLAIM_TAG = address(1);

    event Deposited(address indexed participant, uint256 amount, uint256 depositState);
    event Settled(uint64 indexed epoch, uint256 count, uint256 total);
    /// @notice A settlement's payout to a frozen (force-settling) participant, kept in the pool.
    event PayoutWithheld(address indexed participant, uint64 indexed epoch, uint256 amount);
    event ForceSettleInitiated(
        address indexed participant, uint256 balance, uint256 locked, uint64 epoch, uint64 nonce, uint256 deadline
    );
    event ForceSettleChallenged(
        address indexed participant, uint256 balance, uint256 locked, uint64 epoch, uint64 nonce
    );
    event ForceSettleFinalized(address indexed participant, uint256 payout);
    /// @notice A provider's claim: the vault extracts t = s − ŝ from (e, s).
    event PaymentClaimed(
        bytes32 indexed channelId,
        uint256 indexed requestId,
        uint256 amount,
        bytes32 e,
        uint256 s,
        uint64 deadline,
        uint256 depositState
    );
    event PayoutCredited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, address indexed to, uint256 amount);

    error InvalidTerms();
    error BadSignature(address signer);
    error DepositNotReceived(uint256 expected, uint256 received);
    error MalformedPayouts();
    error WrongEpoch(uint64 epoch, uint64 expected);
    error InsufficientFunds(uint256 needed, uint256 available);
    error WrongStatus(address participant, Status status);
    /// @notice The statement's epoch is outside [lastPaidEpoch, lastEpoch].
    error StaleStatement(uint64 epoch, uint64 lastPaidEpoch, uint64 lastEpoch);
    error NotNewer(uint64 nonce, uint64 recordedNonce);
    error DisputeWindowOpen(uint256 deadline);
    error DisputeWindowClosed(uint256 deadline);
    error ClaimExpired(uint256 deadline);
    error AlreadyClaimed(bytes32 channelId, uint256 requestId);
    error ExceedsCapacity(uint256 amount, uint256 capacity);
    error InvalidPaymentSignature();
    /// @notice The client already left with a statement that counted this payment.
    error ClientAlreadyPaid(address client);
    error NothingOwed();
    /// @notice The index's lane is frozen by another participant's force-settle.
    error IndexFrozen(uint32 index);
    error OrderExpired(uint256 deadline);
    /// @notice The vault's view of the deposits, extended by the tail given, is not the chain's.
    error DepositsMismatch(uint256 claimed, uint256 onChain);
    /// @notice The signed record names a settlement epoch that has not landed yet.
    error EpochNotSettled(uint64 epoch, uint64 lastEpoch);
    /// @notice A settlement that resolves pending payments waits until their claims closed.
    error TooEarly(uint64 notBefore);
    /// @notice A claim the settlement may have resolved landed after the vault signed it.
    error ClaimInTail(uint64 deadline, uint64 notBefore);

    constructor(IERC20 token_, address vaultSigner_, uint256 settleWindow_) EIP712("A402", "1") {
        if (
            address(token_).code.length == 0 || vaultSigner_ == address(0) || settleWindow_ == 0
                || settleWindow_ > 365 days
        ) revert InvalidTerms();
        token = token_;
        vaultSigner = vaultSigner_;
        settleWindow = settleWindow_;
    }

    // --------------------------------------------------------------- deposits

    /// @notice Credit `participant` with `amount`, pulled from the sender (who approved this
    ///         contract). Refused unless exactly `amount` arrives.
    function deposit(address participant, uint256 amount) external nonReentrant {
        _checkDeposit(participant, amount);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        _checkReceived(before, amount);
        _recordDeposit(participant, amount);
    }

    /// @notice Credit `participant` with `amount` moved from `from` by EIP-3009
    ///         `receiveWithAuthorization` (gasless for `from`; anyone submits). The
    ///         authorization's nonce is `depositNonce(participant, amount, salt)`, so `from`'s
    ///         one signature fixes who is credited and how much, once.
    function depositWithAuthorization(
        address participant,
        address from,
        uint256 amount,
        bytes32 salt,
        ReceiveAuthorization calldata auth
    ) external nonReentrant {
        _checkDeposit(participant, amount);
        bytes32 nonce = depositNonce(participant, amount, salt);
        uint256 before = token.balanceOf(address(this));
        IERC3009Receive(address(token)).receiveWithAuthorization(
            from, address(this), amount, auth.validAfter, auth.validBefore, nonce, auth.v, auth.r, auth.s
        );
        _checkReceived(before, amount);
        _recordDeposit(participant, amount);
    }

    // ------------------------------------------------------------- settlement

    /// @notice Pay every (payee, index, amount) of `payouts` (packed `address ‖ uint32 ‖
    ///         uint96`, 36 bytes each; sorted by index for the least gas; none for a settlement
    ///         that only confirms deposits), authorised by the vault key's `vaultSignature` over
    ///         A402VaultSettlement(epoch, keccak256(payouts), deposits); `epoch` must be
    ///         `lastEpoch + 1`, and `deposits` (the enclave's deposit chain when it signed),
    ///         folded over `depositTail` (the deposits mined since, packed `address ‖ uint96`,
    ///         32 bytes each, in order), must be `depositState` now. Sent by anyone (the vault's
    ///         gas payer). A frozen payee's payout is withheld (see the contract docs); a payout
    ///         the token refuses is credited to `owed`. Reverts if the total exceeds `available()`.
    function settle(
        bytes calldata payouts,
        uint64 epoch,
        uint256 deposits,
        uint64 notBefore,
        bytes calldata depositTail,
        bytes calldata vaultSignature
    ) external nonReentrant {
        uint64 expected = lastEpoch + 1;
        if (epoch != expected || epoch >= _FROZEN) revert WrongEpoch(epoch, expected);
        if (payouts.length % _PAYOUT_SIZE != 0) revert MalformedPayouts();
        if (block.timestamp <= notBefore) revert TooEarly(notBefore);
        _requireVault(settlementDigest(epoch, keccak256(payouts), deposits, notBefore), vaultSignature);
        _checkDeposits(deposits, depositTail, notBefore);
        lastEpoch = epoch;

        uint256 available_ = available();
        (uint256 total, uint256 count) = _payAll(payouts, epoch);
        if (total > available_) revert InsufficientFunds(total, available_);
        emit Settled(epoch, count, total);
    }

    /// @dev `deposits`, extended by `tail`, must be the chain's deposit state: then it is one
    ///      of its prefixes (keccak is collision-resistant), i.e. every deposit and claim the
    ///      enclave counted was made, as it says, once, and it missed none before its view.
    ///      The tail is deposits (`address ‖ uint96 amount`, one word) and claims
    ///      (`address(1) ‖ uint96 deadline`, then the claim's key: two words); a claim is
    ///      allowed in it only if its deadline is after `notBefore`, i.e. for a payment this
    ///      settlement did not resolve (it resolves only payments whose deadline is at most
    ///      `notBefore`).
    function _checkDeposits(uint256 deposits, bytes calldata tail, uint64 notBefore) private view {
        if (tail.length % _DEPOSIT_SIZE != 0) revert MalformedPayouts();
        uint256 state = deposits;
        for (uint256 pos; pos < tail.length; pos += _DEPOSIT_SIZE) {
            uint256 word;
            assembly ("memory-safe") {
                word := calldataload(add(tail.offset, pos))
            }
            address who = address(uint160(word >> 96));
            if (who == _CLAIM_TAG) {
                pos += _DEPOSIT_SIZE;
                if (pos >= tail.length) revert MalformedPayouts();
                uint64 deadline = uint64(uint96(word));
                if (deadline <= notBefore) revert ClaimInTail(deadline, notBefore);
                bytes32 key;
                assembly ("memory-safe") {
                    key := calldataload(add(tail.offset, pos))
                }
                state = _foldClaim(state, key, deadline);
            } else {
                state = _fold(state, who, uint96(word));
            }
        }
        uint256 onChain = depositState;
        if (state != onChain) revert DepositsMismatch(deposits, onChain);
    }

    /// @dev One deposit's link: count + 1 ‖ the low 224 bits of keccak(state ‖ participant ‖
    ///      uint96 amount) (packed, 64 bytes).
    function _fold(uint256 state, address participant, uint96 amount) private pure returns (uint256) {
        uint256 head = uint256(keccak256(abi.encodePacked(state, participant, amount))) & _HEAD_MASK;
        return (((state >> 224) + 1) << 224) | head;
    }

    /// @dev One claim's link: count + 1 ‖ low224(keccak(state ‖ 0x01 ‖ key ‖ uint64 deadline))
    ///      (packed, 73 bytes: never a deposit's 64).
    function _foldClaim(uint256 state, bytes32 key, uint64 deadline) private pure returns (uint256) {
        uint256 head =
            uint256(keccak256(abi.encodePacked(state, bytes1(0x01), key, deadline))) & _HEAD_MASK;
        return (((state >> 224) + 1) << 224) | head;
    }

    /// @dev The enclave must see this claim before any later settlement of its lands: it folds
    ///      the deposit chain (see `_checkDeposits`).
    function _recordClaim(bytes32 cid, bytes32 key, Payment calldata p) private {
        uint256 state = _foldClaim(depositState, key, p.deadline);
        depositState = state;
        emit PaymentClaimed(cid, p.requestId, p.amount, p.e, p.s, p.deadline, state);
    }

    function _recordDeposit(address participant, uint256 amount) private {
        uint256 state = _fold(depositState, participant, uint96(amount));
        depositState = state;
        emit Deposited(participant, amount, state);
    }

    /// @dev The settlement loop: pay or withhold each record, keeping the lane word in hand
    ///      until the next record's index leaves it. Returns what was paid and to how many.
    function _payAll(bytes calldata payouts, uint64 epoch) private returns (uint256 total, uint256 count) {
        uint256 key = type(uint256).max;
        uint256 lanes;
        for (uint256 pos; pos < payouts.length; pos += _PAYOUT_SIZE) {
            uint256 head;
            uint256 tail;
            assembly ("memory-safe") {
                head := calldataload(add(payouts.offset, pos))
                tail := calldataload(add(payouts.offset, add(pos, 4)))
            }
            uint256 index = (tail >> 96) & _LANE_MASK;
            if (index >> 3 != key) {
                if (key != type(uint256).max) _lanes[key] = lanes;
                key = index >> 3;
                lanes = _lanes[key];
            }
            uint256 shift = (index & 7) << 5;
            if ((lanes >> shift) & _FROZEN != 0) {
                _withhold(address(uint160(head >> 96)), epoch, uint96(tail));
                continue;
            }
            lanes = (lanes & ~(_LANE_MASK << shift)) | (uint256(epoch) << shift);
            total += uint96(tail);
            ++count;
            _send(address(uint160(head >> 96)), uint96(tail));
        }
        _lanes[key] = lanes;
    }

    /// @dev A frozen payee (force-settling or settled): keep its payout for the force-settle.
    function _withhold(address payee, uint64 epoch, uint256 amount) private {
        _withheld[payee].push((uint256(epoch) << _TAG_SHIFT) | amount);
        emit PayoutWithheld(payee, epoch, amount);
    }

    // ----------------------------------------------------------- force-settle

    /// @notice Start `st.participant`'s exit with a statement the vault key signed; sent by
    ///         the participant or anyone for it (the payout always goes to the participant).
    ///         Freezes the account: later settlements withhold its payouts. Opens Δ_settle.
    function initForceSettle(Statement calldata st, bytes calldata signature) external nonReentrant {
        address p = st.participant;
        Status current = _status[p];
        if (current != Status.Active) revert WrongStatus(p, current);
        uint256 lane_ = _lane(st.index);
        if (lane_ & _FROZEN != 0) revert IndexFrozen(st.index);
        _checkStatement(st, signature, uint64(lane_));
        uint256 deadline = block.timestamp + settleWindow;
        _setLane(st.index, lane_ | _FROZEN);
        _status[p] = Status.Settling;
        _forceSettles[p] = ForceSettle(st.balance, st.locked, st.epoch, st.nonce, uint64(deadline), st.index);
        emit ForceSettleInitiated(p, st.balance, st.locked, st.epoch, st.nonce, deadline);
    }

    /// @notice Replace the recorded statement with a newer one (higher nonce) before the
    ///         deadline; anyone may send it (a watchtower). The deadline does not move.
    function challengeForceSettle(Statement calldata st, bytes calldata signature) external nonReentrant {
        address p = st.participant;
        Status current = _status[p];
        if (current != Status.Settling) revert WrongStatus(p, current);
        ForceSettle storage fs = _forceSettles[p];
        if (block.timestamp >= fs.deadline) revert DisputeWindowClosed(fs.deadline);
        if (st.nonce <= fs.nonce || st.epoch < fs.epoch) revert NotNewer(st.nonce, fs.nonce);
        if (st.index != fs.index) revert IndexFrozen(st.index);
        _checkStatement(st, signature, uint64(_lane(st.index) & ~_FROZEN));
        (fs.balance, fs.locked, fs.epoch, fs.nonce) = (st.balance, st.locked, st.epoch, st.nonce);
        emit ForceSettleChallenged(p, st.balance, st.locked, st.epoch, st.nonce);
    }

    /// @notice After the window, pay `participant` what its recorded statement says: balance
    ///         + locked − claims against statements that counted them (down to zero) +
    ///         payouts withheld that the statement is net of. The account stays frozen for good.
    function finalForceSettle(address participant) external nonReentrant returns (uint256 payout) {
        Status current = _status[participant];
        if (current != Status.Settling) revert WrongStatus(participant, current);
        ForceSettle storage fs = _forceSettles[participant];
        if (block.timestamp < fs.deadline) revert DisputeWindowOpen(fs.deadline);
        payout = settlementOf(participant);
        _status[participant] = Status.Settled; // its lane stays frozen: no settlement pays it again
        uint256 available_ = available();
        if (payout > available_) revert InsufficientFunds(payout, available_);
        emit ForceSettleFinalized(participant, payout);
        _send(participant, payout);
    }

    /// @notice What `finalForceSettle` would pay `participant` now (0 if none is recorded).
    function settlementOf(address participant) public view returns (uint256) {
        ForceSettle storage fs = _forceSettles[participant];
        uint64 nonce = fs.nonce;
        uint64 epoch = fs.epoch;
        uint256 claimedAmount;
        uint256[] storage claims = _claims[participant];
        for (uint256 i; i < claims.length; ++i) {
            if (claims[i] >> _TAG_SHIFT >= nonce) claimedAmount += claims[i] & _AMOUNT_MASK;
        }
        // A statement that still counts δ counts it in `balance` (signed before the channel
        // opened) or in `locked`: the claims come off both (never below zero).
        uint256 counted = fs.balance + fs.locked;
        uint256 payout = claimedAmount >= counted ? 0 : counted - claimedAmount;
        uint256[] storage withheld = _withheld[participant];
        for (uint256 i; i < withheld.length; ++i) {
            if (withheld[i] >> _TAG_SHIFT <= epoch) payout += withheld[i] & _AMOUNT_MASK;
        }
        return payout;
    }

    function _checkStatement(Statement calldata st, bytes calldata signature, uint64 lastPaid) private view {
        uint64 last = lastEpoch;
        if (st.epoch < lastPaid || st.epoch > last) revert StaleStatement(st.epoch, lastPaid, last);
        _requireVault(statementDigest(st), signature);
    }

    // --------------------------------------------------------- provider claim

    /// @notice Pay the provider of channel `c` its pending payment `p` while the vault is dark:
    ///         `p.(e, s)` is the provider's completed adaptor signature on
    ///         m = A402Payment(channelId, requestId, amount, resultHash) (Schnorr under
    ///         `c.providerKey`), `authorization` is σ_U (the vault key over
    ///         A402PaymentAuthorization(m, amount, e)), and `pendingSignature` the vault key's
    ///         A402VaultPending(channelId, requestId, clientNonce, deadline). Before `deadline`,
    ///         once per (channel, request); the amount is drawn from the client's locked funds
    ///         (see the contract docs). Anyone may send it; the provider is paid.
    function claimPayment(
        Channel calldata c,
        Payment calldata p,
        bytes calldata authorization,
        bytes calldata pendingSignature
    ) external nonReentrant {
        if (block.timestamp > p.deadline) revert ClaimExpired(p.deadline);
        if (p.amount == 0 || p.amount > c.capacity) revert ExceedsCapacity(p.amount, c.capacity);
        bytes32 cid = channelId(c);
        bytes32 key = keccak256(abi.encode(cid, p.requestId));
        if (claimed[key]) revert AlreadyClaimed(cid, p.requestId);
        bytes32 domain = _domainSeparatorV4();
        bytes32 m = A402Message.paymentMessage(domain, cid, p.requestId, p.amount, p.resultHash);
        if (!Schnorr.verify(c.providerKey, m, p.e, p.s)) revert InvalidPaymentSignature();
        _requireVault(A402Message.authorizationDigest(domain, m, p.amount, p.e), authorization);
        _requireVault(pendingDigest(cid, p.requestId, p.clientNonce, p.epoch, p.deadline), pendingSignature);
        // The client's funds are the enclave's word only once the settlement that confirmed
        // its deposits (epoch `p.epoch` or earlier) has landed (see "Deposits and claims ...").
        if (p.epoch > lastEpoch) revert EpochNotSettled(p.epoch, lastEpoch);
        // A client that already left with a statement counting δ was paid δ: no claim on it.
        if (
            _status[c.client] == Status.Settled
                && _forceSettles[c.client].nonce <= p.clientNonce
        ) revert ClientAlreadyPaid(c.client);
        uint256 available_ = available();
        if (p.amount > available_) revert InsufficientFunds(p.amount, available_);
        claimed[key] = true;
        _claims[c.client].push((uint256(p.clientNonce) << _TAG_SHIFT) | p.amount);
        _recordClaim(cid, key, p);
        _send(c.provider, p.amount);
    }

    // ------------------------------------------------------------ withdrawals

    /// @notice Take everything owed to the sender (payouts its token refused) to `to`.
    function withdraw(address to) external nonReentrant returns (uint256) {
        return _withdraw(msg.sender, to, owed[msg.sender]);
    }

    /// @notice Carry out `owner`'s signed order A402Withdrawal(owner, to, amount, nonce,
    ///         deadline) (EOA or EIP-1271), good once.
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

    function _withdraw(address owner, address to, uint256 amount) private returns (uint256) {
        if (amount == 0 || amount > owed[owner]) revert NothingOwed();
        owed[owner] -= amount;
        totalOwed -= amount;
        emit Withdrawn(owner, to, amount);
        token.safeTransfer(to, amount);
        return amount;
    }

    // ------------------------------------------------------------------ views

    /// @notice What the contract can still pay out: its balance minus what it owes already.
    function available() public view returns (uint256) {
        return token.balanceOf(address(this)) - totalOwed;
    }

    /// @notice A participant's exit status (Active until a force-settle starts).
    function statusOf(address participant) external view returns (Status) {
        return _status[participant];
    }

    /// @notice The lane of participant `index`: the last settlement that paid it, and whether
    ///         a force-settle froze it.
    function lane(uint32 index) external view returns (uint64 lastPaidEpoch, bool frozen) {
        uint256 l = _lane(index);
        return (uint64(l & ~_FROZEN), l & _FROZEN != 0);
    }

    /// @notice The recorded force-settle of `participant` (zeros if none).
    function forceSettle(address participant) external view returns (ForceSettle memory) {
        return _forceSettles[participant];
    }

    function settlementDigest(uint64 epoch, bytes32 payoutsHash, uint256 deposits, uint64 notBefore)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(SETTLEMENT_TYPEHASH, epoch, payoutsHash, deposits, notBefore))
        );
    }

    function statementDigest(Statement calldata st) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(BALANCE_TYPEHASH, st.participant, st.index, st.balance, st.locked, st.epoch, st.nonce)
            )
        );
    }

    function channelId(Channel calldata c) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(CHANNEL_TYPEHASH, c.client, c.provider, c.providerKey, c.capacity, c.salt))
        );
    }

    function pendingDigest(bytes32 cid, uint256 requestId, uint64 clientNonce, uint64 epoch, uint64 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(PENDING_TYPEHASH, cid, requestId, clientNonce, epoch, deadline))
        );
    }

    /// @notice The EIP-3009 nonce of a deposit crediting `participant` with `amount`.
    function depositNonce(address participant, uint256 amount, bytes32 salt) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(DEPOSIT_TYPEHASH, participant, amount, salt)));
    }

    function withdrawalDigest(address owner, address to, uint256 amount, uint256 nonce, uint256 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(WITHDRAWAL_TYPEHASH, owner, to, amount, nonce, deadline)));
    }

    /// @notice The payment message m the provider pre-signs, in this contract's domain.
    function paymentMessage(bytes32 cid, uint256 requestId, uint256 amount, bytes32 resultHash)
        external
        view
        returns (bytes32)
    {
        return A402Message.paymentMessage(_domainSeparatorV4(), cid, requestId, amount, resultHash);
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- helpers

    function _lane(uint32 index) private view returns (uint256) {
        return (_lanes[index >> 3] >> ((uint256(index) & 7) << 5)) & _LANE_MASK;
    }

    function _setLane(uint32 index, uint256 value) private {
        uint256 shift = (uint256(index) & 7) << 5;
        uint256 key = index >> 3;
        _lanes[key] = (_lanes[key] & ~(_LANE_MASK << shift)) | (value << shift);
    }

    function _requireVault(bytes32 digest, bytes calldata signature) private view {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || recovered != vaultSigner) revert BadSignature(vaultSigner);
    }

    /// @dev A deposit credits an active account only: a force-settled account is frozen for
    ///      good (no settlement pays it again), so money sent to it would be stranded.
    function _checkDeposit(address participant, uint256 amount) private view {
        if (participant == address(0) || participant == _CLAIM_TAG || amount == 0 || amount > type(uint96).max) {
            revert InvalidTerms();
        }
        Status current = _status[participant];
        if (current != Status.Active) revert WrongStatus(participant, current);
    }

    function _checkReceived(uint256 before, uint256 amount) private view {
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert DepositNotReceived(amount, received);
    }

    /// @dev Pay `amount` to `to`, or credit it to `owed` if the token refuses.
    function _send(address to, uint256 amount) private {
        if (amount == 0 || token.trySafeTransfer(to, amount)) return;
        owed[to] += amount;
        totalOwed += amount;
        emit PayoutCredited(to, amount);
    }
}
