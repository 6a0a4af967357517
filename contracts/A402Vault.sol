// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Blockhash} from "@openzeppelin/contracts/utils/Blockhash.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {A402Message} from "./A402Message.sol";
import {Schnorr} from "./SchnorrVerifier.sol";
import {IERC3009Receive} from "./ASCManager.sol";
import {TransferProver} from "./TransferProver.sol";

/// @title A402Vault: the Liquidity Vault, vault mode (A402 paper §4.3, Alg. 3, §6.2)
/// @notice Participants (clients and providers) fund one pool; channels open and close inside
///         the vault's enclave with no transaction; the chain sees deposits and aggregated
///         settlements only, and every participant has an exit that does not need the vault:
///         * `deposit` (the paper's initVault): anyone credits a
///           participant; the contract keeps each participant's cumulative `deposited`;
///         * a plain token `transfer` to the contract: credited by the enclave once a
///           settlement anchors the blocks it read it from, and `proveTransfer` pays it back in
///           its sender's exit if no statement counts it ("Plain transfers");
///         * `settle` (settleVault): many payouts in one transaction, from a compact encoding,
///           authorised only by the vault key's signature; it also pulls deposits that
///           participants signed intents for (one approval each, then no transaction of theirs:
///           see "Pulled deposits");
///         * `initForceSettle` → (`challengeForceSettle` | `contestForceSettle`)* →
///           `finalForceSettle`: a participant (or its signed order) exits with the latest
///           balance statement the enclave signed, after a dispute window in which a newer
///           statement, or a provider's proof of a payment the statement still counts, wins;
///         * `claimPayment`: a provider is paid a pending payment (its completed adaptor
///           signature, σ_U, and the enclave's signed pending record) while the vault is dark.
/// @dev The vault key. `vaultSigner` is one address fixed at deployment: the attested key of
///      the vault's enclave, which signs but never sends. Every signature it checks is plain
///      ECDSA over an EIP-712 digest in the domain ("A402", "1", chainid, this contract), the
///      same domain (so the same `A402Payment` m and σ_U digest) as `ASCManager` at this
///      address. The key is trusted to sign only what the enclave's ledger allows; the contract
///      makes sure that no ordering of deposits, settlements, force-settles, contests and claims
///      pays any unit of that ledger twice, and that it never pays out more than it holds.
///
///      Participants. Each has a stable `index` (uint32) that the enclave assigns and names in
///      every payout and statement. Per index the contract keeps one 32-bit lane (the last
///      settlement that paid it, and a frozen bit), eight lanes per storage word. Per address it
///      keeps one word: the cumulative `deposited` (uint96) and the exit status. Per pull id
///      (assigned by the enclave) one bit: whether a settlement made that pull.
///
///      Settlements. A402VaultSettlement(prevEpoch, epoch, payouts, confirms, pulls, pullChecks,
///      claims, notBefore, ledger, anchor, anchorHash):
///      * `payouts` = keccak of packed 36-byte records `address ‖ uint32 index ‖ uint96 amount`
///        (an amount may be 0: it only moves the payee's lane, see "Replacing a settlement");
///      * `confirms` = keccak of packed 32-byte records `address ‖ uint96 cumulative`: for each
///        participant whose deposits the settlement confirms, the total the enclave counts; the
///        settlement lands only if every such total is at most the participant's `deposited`;
///      * `pulls` = keccak of packed 48-byte pull records `address participant ‖ uint32 index ‖
///        uint96 amount ‖ uint32 pull ‖ uint64 deadline`, made (or skipped) before the payouts;
///        the participants' intent signatures travel beside them, outside the digest;
///      * `pullChecks` = keccak of packed uint32 pull ids: with bit 31 clear the pull must have
///        been made (`PullNotMade`), with bit 31 set (id in the low 31 bits) it must not
///        (`PullMade`), checked against the bits the settlement leaves (after its own pulls);
///      * `claims` = the enclave's view of the claim chain, `notBefore` the latest deadline of
///        the pending payments it resolved (it lands only when block.timestamp > notBefore);
///      * `anchor` (0: none) = the last block of the header chain the enclave read plain
///        transfers from, and `anchorHash` = keccak256(abi.encode(that block's hash as that
///        chain has it, the token the enclave read the transfers of)): the settlement lands
///        only if it is the chain's own block (`BLOCKHASH`, EIP-2935: one of the last 8,191)
///        and the enclave read this contract's token (see "Plain transfers").
///      It lands only if `prevEpoch == lastEpoch < epoch < 2^31`: a signature is good once and
///      the settlements the enclave signed land in the order it signed them; normally
///      `epoch = prevEpoch + 1`. No per-payee event; calldata and the one `Settled` event carry
///      no channel id, no client–provider pair and no per-request amount.
///
///      Exit credits (review S9-6). A payout record whose index has bit 31 set is an exit
///      credit: money the enclave credited a participant after it learned of its exit (a
///      pending payment resolved to an exiting provider, or back to an exiting client), which
///      it counts in none of that participant's statements (it signs it none counting it) and
///      so no force-settle pays. It is paid to the payee at once, whatever its lane, and moves
///      no lane (the participant's statements stay as usable as before). Without it, that money
///      would be credited to a frozen account whose recorded statement predates it: stranded.
///
///      Balance statements. A402VaultBalance(participant, index, balance, locked, epoch, nonce,
///      deposited, pull, pulling, transferred, ledger): `balance` (free) and `locked` are what
///      the vault owes the participant if it stopped now, counting its deposits up to the
///      cumulative `deposited` (confirmed by a settlement with epoch ≤ `epoch`) and its plain
///      transfers that sum to `transferred` (see "Plain transfers"), net of its payouts in
///      every settlement up to `epoch` and gross of every later one; `balance` includes
///      `pulling`, the amount of pull `pull` (0: none) that no settlement has confirmed yet,
///      which an exit pays only if that pull was made (see "Pulled deposits"); `nonce` rises
///      with every change, `epoch` never falls.
///      A statement is usable (to start or challenge a force-settle) only if
///          lastPaidEpoch[index] ≤ statement.epoch ≤ lastEpoch   and   deposited ≤ deposited[p].
///      The right inequality: every settlement the statement is net of has landed; the left:
///      no landed settlement paid the participant money the statement still counts. A
///      force-settle freezes the lane: later settlements withhold its payouts (`PayoutWithheld`,
///      tagged with the first epoch the settlement covers, prevEpoch + 1), added to the exit
///      iff the recorded statement is net of them (tag ≤ statement.epoch).
///
///      Deposits are the chain's word (review F2, F7). The enclave learns deposits from its host;
///      a host that invented one would have the enclave sign statements and payouts out of other
///      participants' money. So the enclave counts a reported deposit in no statement, payment
///      or payout until a settlement that confirms it (`confirms`) is signed, and names that
///      settlement's epoch in what it signs: nothing it signed on the strength of a deposit is
///      usable before the settlement proving `deposited[p] ≥ total` has landed. That check is
///      monotone (`deposited` only grows, and freezes at a force-settle), so a deposit mined in
///      front of a settlement can never make it fail (no exact-state match to break). A deposit
///      no statement counts yet is still the participant's: its force-settle pays
///      `deposited[p] − statement.deposited` on top of the statement, so a top-up made just
///      before the vault went dark, or a first deposit that no settlement confirmed (the
///      enclave signs every new participant an empty statement), is paid back.
///
///      Pulled deposits. A deposit transaction costs the participant 21,000 gas of its own and
///      creates its `deposited` word; a pull rides in a settlement the vault already sends, and
///      needs neither an approval nor any gas of the participant's. The participant signs the
///      token's EIP-3009 ReceiveWithAuthorization(from = itself, to = this contract, value =
///      amount, validAfter = 0, validBefore = deadline, nonce = `pullNonce(pull, ledger)`):
///      `to` = this contract means only this contract can use it (the token requires
///      `to == msg.sender`), and only `settle` does, for a record the vault key signed; `pull`
///      is an id the enclave assigns (dense, from 1, below 2^31) and `ledger` the life it
///      assigned it in: only an authorization naming the pinned life is made (review s15-3: a
///      second instance of the same enclave on a wiped ledger numbers its pulls from 1 again,
///      and would otherwise hand out statements of its own life for pulls the pinned life then
///      makes, which those statements cannot pay). The settlement carries the pull record and
///      the signature; for each record in order the contract reverts `PullRepeated` if the id's
///      bit is set, and otherwise makes the pull — sets the bit and has the token move `amount`
///      from the participant by `receiveWithAuthorization` (its `bytes` signature form, which
///      takes EOA and EIP-1271 signatures; given at most `PULL_GAS`) — unless the record's lane
///      (its index, as for payouts) is frozen or the token refuses (the deadline passed, the
///      signature is not the participant's for exactly this amount, deadline, pull and life,
///      the participant cancelled the authorization, its balance is short): then the record
///      is skipped and its bit stays clear. The token's nonce and this contract's bit are
///      separate records on purpose: a cancelled authorization uses the nonce and moves
///      nothing, so only the bit says a pull was made. A token without the `bytes` form (an
///      older USDC) refuses every pull: each is skipped, nothing moves. The vault's balance
///      must grow by exactly the sum made (else the settlement reverts, as deposits refuse
///      fee-on-transfer tokens). A pull moves no lane and no `deposited`: no storage word per
///      participant. Later, a pull
///      check proves the pull made (the enclave credits it) or not made (it voids it), the way
///      `confirms` proves deposits: a statement naming that settlement's epoch is usable only
///      once it landed. Why this is safe:
///      * a host cannot choose amounts: the vault key signs keccak of the records, so the
///        participant, its lane, the amount and the id are the enclave's; the participant's
///        own signature binds (amount, id, deadline, life) to it, so an authorization is good
///        for one amount under one id, and the bit (and the token's nonce) make each id move
///        money at most once;
///      * a failed pull loses nobody money: nothing moved and its bit stays clear; the
///        participant's statements that count it (`pull` = its id) pay `pulling` less while the
///        bit is clear, so it is not paid money it never put in; the enclave credits nothing on
///        a pull before a check proves it made (it spends none of `pulling` meanwhile);
///      * the statement field is self-correcting: the enclave signs the participant a statement
///        counting the pull (`pull`, `pulling`) when it assigns the id, and every later one
///        counts it until a check confirms or voids it; the participant signs its intent only
///        once it holds such a statement (so no host can land the pull and withhold the
///        statement: there is no `deposited` word to fall back on). Whichever way the pull
///        went, that statement pays exactly what the participant owns (made: the money is in
///        the pool and paid back; not made: left out). A pull moves no lane, so such a
///        statement stays usable after the settlement lands, and the enclave makes a pull only
///        in a settlement that follows the epoch its statement names (review s15-2): a claim
///        that voids that epoch voids the pull with it (dropped, its id never used again),
///        so the pull is never made with the statement counting it unusable. One unconfirmed pull per
///        participant at a time (a statement names one); an id once voided is never put in a
///        settlement again (its intent may still be unexpired);
///      * skip, not revert: whether a pull can be made is the participant's to change (its
///        balance, its cancellation, its wallet), after the enclave signed; reverting would let
///        any participant stop every settlement it rides in. No wallet can consume the
///        settlement's gas (the token call gets at most `PULL_GAS`), and the sender cannot
///        starve a good pull into a skip: the call gets its whole `PULL_GAS` or the settlement
///        reverts (`InsufficientGas`);
///      * exits: a frozen participant's pulls are skipped, so once its exit started its bits no
///        longer change and `finalForceSettle` reads the same answer `initForceSettle` could.
///
///      Plain transfers. A token `transfer` straight to this contract (no function of it
///      called, 34,700 gas: the cheapest way in) names nobody on-chain; the enclave credits
///      its sender only after reading it itself: its host hands it the transaction's receipt,
///      the receipt proof to its block's `receiptsRoot` and the header chain from that block
///      to a later one, `anchor`, whose hash a settlement carries (`anchorHash`); it counts
///      the transfer in no statement, payment or payout until such a settlement is signed and
///      names that settlement's epoch in what it signs, so nothing it signed on the strength of
///      a transfer is usable before the chain has said, by landing it, that the headers the
///      enclave read are its own (a host that invented a transfer, or a chain, makes that
///      settlement, and every later one, fail: as with `confirms`). Each statement counts the
///      sender's credited transfers as the sum `transferred`.
///      The sender's escape does not need the vault: `proveTransfer` (anyone sends it) records
///      a transfer for its sender from a receipt proof (`TransferProver`: the receipt of a
///      successful transaction, the token's Transfer log to this contract, and no log of this
///      contract in it, so the transfers `deposit` and the pulls of `settle` make are never
///      counted as plain ones) under a chain of headers from the transfer's block to one whose
///      hash is known: the chain's own for 8,191 blocks, or one kept here for good (every
///      landed settlement's anchor, and any block `checkpoint` kept), so a transfer the enclave
///      counted can always be proven (through the anchor of the settlement that confirmed
///      it), once per log; the sender's
///      force-settle pays, on top of its statement, what its proven transfers exceed the
///      statement's `transferred` by (nothing if they do not), and a proof made after the
///      sender's exit is final pays at once what it adds to that excess. Why it never pays
///      twice or someone else's money: the enclave counts only transfers it read with their
///      sender, so the statement's `transferred` is a sum of the sender's real transfers, and
///      the proven sum is too (each log once); proven − counted is then at most the sender's
///      transfers no statement counts, which no ledger holds and which sit in the pool. A
///      transfer the host hid from the enclave is paid back this way; one the sender does not
///      prove is its own loss only (it makes the excess smaller, never larger).

///      Pending payments and claims. A vault-mode channel is A402VaultChannel(client, provider,
///      providerKey, capacity, salt), its id the EIP-712 hash. With σ_U for δ of `requestId`
///      the enclave moves δ out of the client's statements and signs A402VaultPending(channelId,
///      requestId, clientNonce, epoch, deadline): the client's statements with nonce ≤
///      `clientNonce` still count δ. After `deadline` (the enclave's clock) it credits δ to the
///      provider (it revealed t) or back to the client, in a settlement whose `notBefore` is at
///      least `deadline`. The landing-time rule (review F1, F5): the contract keeps
///      `resolvedUntil`, the highest `notBefore` of a landed settlement; a claim is refused once
///      `deadline ≤ resolvedUntil` (a landed settlement resolved it), and accepted otherwise,
///      whatever the clock says, so a host whose clock lags the chain cannot hand out records
///      that are expired on-chain (the enclave resolves pending payments in deadline order,
///      so every payment with deadline ≤ resolvedUntil was resolved). A claim that lands before
///      the settlement resolving it would make that settlement pay δ twice: every claim folds
///      the claim chain `claimState = count ‖ low224(keccak(claimState ‖ 0x01 ‖ key ‖ uint64
///      deadline))`, and a settlement lands only if its `claims` extended by the claims mined
///      since (`claimTail`, 64 bytes each: key, deadline) is `claimState`, with no claim in the
///      tail of a payment it resolved (`ClaimInTail`). Only claims fold the chain (a deposit
///      does not), and a claim needs a vault-signed record: nobody can grief settlements with
///      dust.
///
///      Replacing a settlement (review F1). A settlement refused for a claim in its tail never
///      lands, nor any later one (each names its predecessor). The enclave, told of the claim,
///      signs a replacement with `prevEpoch` = the last epoch before the refused one and a new
///      `epoch` above every epoch it signed: it carries every payout, confirmation and
///      resolution of the settlements it replaces except the claimed payment, whose off-chain
///      beneficiary it debits (and whose carried payout it cuts by what the claim paid). The
///      epochs it skips are recorded as void: no statement naming one is usable (`VoidedEpoch`),
///      so a statement that counted the claimed payment off-chain (or is net of a replaced
///      payout) never pays, not even in a challenge by a participant already frozen; the
///      enclave hands every account those settlements touched a statement naming the
///      replacement's epoch. The over-credited account also gets a zero payout (its lane moves).
///      Pending records naming a void epoch stay claimable: the deposits behind them are
///      confirmed again by the replacement, and their clientNonce rule is about statements.
///
///      Claims against a client's exit, in O(1) (review F3, F8). Each claim (or contest) adds
///      δ to the client's running sum and widens its [minNonce, maxNonce] of clientNonces. A
///      statement of nonce N counts exactly the claims with clientNonce ≥ N; the contract
///      accepts a statement only if N ≤ minNonce (it counts all: the whole sum comes off) or
///      N > maxNonce (it counts none), never in between (`StatementStraddlesClaims`): the
///      client always holds one that is not (the statement the enclave signs with each σ_U
///      has nonce clientNonce + 1 and an epoch already landed). Claims that land while the
///      client is force-settling are compared with the recorded nonce one by one. So
///      `finalForceSettle` reads a fixed number of words however many claims were made.
///      `contestForceSettle` (review F3): with the vault dark, a client may start its exit with
///      a statement older than its payments, and nobody holds its newer statements. The
///      provider answers with its own evidence, the same as a claim's (completed adaptor
///      signature, σ_U, pending record), for a payment already resolved off-chain
///      (`deadline ≤ resolvedUntil`, so not claimable any more): the payment comes off the
///      client's exit if the recorded statement counts it, and pays nobody (the provider is
///      paid through its own statements, which count it once the resolving settlement landed).
///      Each (channel, request) is claimed or contested once.
///
///      Ledger life (review S9-5). The enclave's ledger is sealed by its host, who can delete
///      it: the same enclave (same key) then starts on a first boot with an empty ledger and
///      would sign settlements "epoch 1, 2, ..." and statements naming epochs that the old
///      ledger's settlements already used; a client that spent its deposit under the old ledger
///      would get a statement counting all of it, usable since its epoch has "landed". So every
///      ledger draws a random life at its first boot (sealed with it; its public 16-byte name is
///      `ledger`), every settlement names it, the first landed settlement pins it here, and
///      every later settlement, every statement of epoch > 0 and every pending record is checked
///      against the pinned life (the digest is computed with it: a signature of another life
///      does not verify). A wiped ledger's settlements never land and its statements and
///      pending records never verify: a first boot after the chain has a settlement can sign
///      nothing that moves money. A statement of epoch 0 is empty (no deposit is counted before
///      a settlement confirms it) and pays only the chain's own `deposited`, so it names no life
///      — unless it counts a pull (`pull` ≠ 0), whose id is the life's own: then it names it.
///      Not covered (the dark-vault limit): the wipe also loses the newer statements a
///      watchtower answers stale ones with, so a participant whose counterparties do not contest
///      can exit with an old statement of the pinned life, as if the vault had gone dark.
///
///      Exits are the participant's (review F6): `initForceSettle` is sent by the participant
///      or carries its signature (EOA or EIP-1271) over A402VaultExit(participant, statement
///      digest); nobody else can start an exit with an old statement of its.
///
///      Solvency. Every payout (settlement total, force-settle, claim) must fit in
///      `available()` = token balance − `totalOwed`, or the call reverts. Deposits that do not
///      arrive whole are refused. Payouts never block: a transfer the token refuses is credited
///      to `owed[receiver]`. Transient reentrancy guard on every state-changing entry.
///
///      Out of scope (documented, not enforced here): the enclave's ledger itself, its view of
///      the chain, a committee key, cooperative channel closes on-chain. Known limits: a
///      payment pending when the vault goes dark that its provider never claims stays in the
///      pool; the withheld list of a frozen participant grows with the settlements that pay it
///      while it exits (the enclave pays none).
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
        uint256 deposited;
        uint32 pull;
        uint256 pulling;
        uint256 transferred;
    }

    /// @notice A settlement's pulled deposits (see "Pulled deposits" in the contract docs):
    ///         `records`, 48 bytes each, `address participant ‖ uint32 index ‖ uint96 amount ‖
    ///         uint32 pull ‖ uint64 deadline` (the vault key signs their keccak); `signatures`,
    ///         the participants' EIP-3009 ReceiveWithAuthorization signatures, 65 bytes each in
    ///         the same order (not signed by the vault key: the token checks each);
    ///         `checks`, packed uint32 pull ids the settlement proves made (bit 31 clear) or not
    ///         made (bit 31 set) once its own pulls are done (the vault key signs their keccak).
    struct Pulls {
        bytes records;
        bytes signatures;
        bytes checks;
    }

    /// @notice What the vault key signs about a settlement besides its payouts and confirmations.
    struct SettlementHeader {
        uint64 prevEpoch;
        uint64 epoch;
        uint256 claims;
        uint64 notBefore;
        bytes16 ledger;
        uint64 anchor;
        bytes32 anchorHash;
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

    /// @notice A participant's force-settle: the recorded statement, its deadline, and what
    ///         claims on it come off its payout.
    ///         `pull`/`pulling` are the statement's unconfirmed pull: `pulling` comes off the
    ///         payout too if that pull's bit is clear when it is paid. Five words: the last
    ///         three are (deposited, transferred), (epoch, nonce, deadline, index, pull) and
    ///         (deducted, pulling).
    struct ForceSettle {
        uint256 balance;
        uint256 locked;
        uint128 deposited;
        uint128 transferred;
        uint64 epoch;
        uint64 nonce;
        uint64 deadline;
        uint32 index;
        uint32 pull;
        uint128 deducted;
        uint128 pulling;
    }

    /// @notice The claims (and contests) made against a client: their sum and clientNonce range.
    struct ClaimSum {
        uint128 total;
        uint64 minNonce;
        uint64 maxNonce;
    }

    struct Participant {
        uint96 deposited;
        Status status;
        uint128 transferred;
    }

    enum Status {
        Active,
        Settling,
        Settled
    }

    bytes32 public constant SETTLEMENT_TYPEHASH = keccak256(
        "A402VaultSettlement(uint64 prevEpoch,uint64 epoch,bytes32 payouts,bytes32 confirms,bytes32 pulls,bytes32 pullChecks,bytes32 claims,uint64 notBefore,bytes16 ledger,uint64 anchor,bytes32 anchorHash)"
    );
    bytes32 public constant BALANCE_TYPEHASH = keccak256(
        "A402VaultBalance(address participant,uint32 index,uint256 balance,uint256 locked,uint64 epoch,uint64 nonce,uint256 deposited,uint32 pull,uint256 pulling,uint256 transferred,bytes16 ledger)"
    );
    bytes32 public constant CHANNEL_TYPEHASH = keccak256(
        "A402VaultChannel(address client,address provider,bytes32 providerKey,uint256 capacity,bytes32 salt)"
    );
    bytes32 public constant PENDING_TYPEHASH =
        keccak256(
        "A402VaultPending(bytes32 channelId,uint256 requestId,uint64 clientNonce,uint64 epoch,uint64 deadline,bytes16 ledger)"
    );
    bytes32 public constant PULL_TYPEHASH = keccak256("A402VaultPull(uint32 pull,bytes16 ledger)");
    bytes32 public constant EXIT_TYPEHASH = keccak256("A402VaultExit(address participant,bytes32 statement)");
    bytes32 public constant WITHDRAWAL_TYPEHASH = keccak256(
        "A402Withdrawal(address owner,address to,uint256 amount,uint256 nonce,uint256 deadline)"
    );

    /// @notice The most gas the token's `receiveWithAuthorization` gets for one pull (an
    ///         EIP-1271 wallet's check included).
    uint256 public constant PULL_GAS = 250_000;

    /// @notice The pooled asset (one per vault).
    IERC20 public immutable token;
    /// @notice The vault enclave's key: the only signer of settlements, statements and pending
    ///         records (and σ_U).
    address public immutable vaultSigner;
    /// @notice Δ_settle: how long a force-settle stays open to challenges, in seconds.
    uint256 public immutable settleWindow;
    /// @notice Checks the receipt proofs of plain transfers (`proveTransfer`).
    TransferProver public immutable transferProver;

    /// @notice The epoch of the last settlement (0: none yet).
    uint64 public lastEpoch;
    /// @notice The highest `notBefore` of a landed settlement: pending payments with a deadline
    ///         up to it were resolved off-chain and can no longer be claimed.
    uint64 public resolvedUntil;
    /// @notice The ledger life the first landed settlement named (0: none landed yet): every
    ///         later settlement, every statement of epoch > 0 and every pending record must
    ///         name it (see "Ledger life" in the contract docs). Packed with the two above.
    bytes16 public ledger;
    /// @notice Payouts the token refused, kept for their receivers (backed by the balance).
    uint256 public totalOwed;
    /// @notice The claim chain: `count (32 bits) ‖ head (224 bits)`, folded by every claim.
    uint256 public claimState;

    // Eight 32-bit lanes per word, by participant index: frozen (bit 31) | lastPaidEpoch.
    mapping(uint256 laneWord => uint256 lanes) private _lanes;
    mapping(address participant => Participant) private _participants;
    mapping(address participant => ForceSettle) private _forceSettles;
    // Payouts withheld from a frozen participant: tag epoch << 192 | amount.
    mapping(address participant => uint256[]) private _withheld;
    mapping(address client => ClaimSum) private _claimSums;
    mapping(bytes32 paymentKey => bool) public claimed;
    // Epochs a replacement settlement skipped (void: never landed), 256 per word.
    mapping(uint256 word => uint256 bits) private _voided;
    // Pull ids whose transfer a landed settlement made, 256 per word (see "Pulled deposits").
    mapping(uint256 word => uint256 bits) private _pulled;

    /// @notice Payouts the token refused to transfer when due, by receiver.
    mapping(address account => uint256 amount) public owed;
    /// @notice Plain transfers `proveTransfer` counted, by position (see "Plain transfers").
    mapping(uint256 position => bool) public transferProven;
    /// @notice Block hashes kept for good: every landed settlement's anchor, and any block
    ///         `checkpoint` was called for (see "Plain transfers").
    mapping(uint256 number => bytes32) public blockHashes;
    /// @notice The next nonce of each account's signed withdrawal order.
    mapping(address account => uint256 nonce) public withdrawalNonces;

    uint256 private constant _FROZEN = 1 << 31;
    uint256 private constant _LANE_MASK = 0xffffffff;
    uint256 private constant _PAYOUT_SIZE = 36;
    uint256 private constant _CONFIRM_SIZE = 32;
    uint256 private constant _CLAIM_SIZE = 64;
    uint256 private constant _PULL_SIZE = 48;
    uint256 private constant _PULL_SIGNATURE_SIZE = 65;
    uint256 private constant _TAG_SHIFT = 192;
    uint256 private constant _AMOUNT_MASK = (1 << 192) - 1;
    uint256 private constant _HEAD_MASK = (1 << 224) - 1;

    event Deposited(address indexed participant, uint256 amount, uint256 deposited);
    event Settled(uint64 indexed epoch, uint256 count, uint256 total);
    /// @notice A settlement's payout to a frozen (force-settling) participant, kept in the pool.
    event PayoutWithheld(address indexed participant, uint64 indexed epoch, uint256 amount);
    event ForceSettleInitiated(
        address indexed participant, uint256 balance, uint256 locked, uint64 epoch, uint64 nonce, uint256 deadline
    );
    event ForceSettleChallenged(
        address indexed participant, uint256 balance, uint256 locked, uint64 epoch, uint64 nonce
    );
    /// @notice A provider's proof that the recorded statement counts a payment: `deducted` is
    ///         what now comes off the participant's exit in all.
    event ForceSettleContested(address indexed participant, uint256 deducted);
    event ForceSettleFinalized(address indexed participant, uint256 payout);
    /// @notice A provider's claim: the vault extracts t = s − ŝ from (e, s).
    event PaymentClaimed(
        bytes32 indexed channelId,
        uint256 indexed requestId,
        uint256 amount,
        bytes32 e,
        uint256 s,
        uint64 deadline,
        uint256 claimState
    );
    event PayoutCredited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    event TransferProven(address indexed from, uint256 amount, uint256 position);

    error InvalidTerms();
    error BadSignature(address signer);
    error DepositNotReceived(uint256 expected, uint256 received);
    error MalformedPayouts();
    error WrongEpoch(uint64 epoch, uint64 lastEpoch);
    error InsufficientFunds(uint256 needed, uint256 available);
    error WrongStatus(address participant, Status status);
    /// @notice The statement's epoch is outside [lastPaidEpoch, lastEpoch].
    error StaleStatement(uint64 epoch, uint64 lastPaidEpoch, uint64 lastEpoch);
    /// @notice The statement names an epoch a replacement settlement voided.
    error VoidedEpoch(uint64 epoch);
    /// @notice The statement counts deposits the chain has not seen for that participant.
    error DepositsNotMade(address participant, uint256 counted, uint256 deposited);
    error NotNewer(uint64 nonce, uint64 recordedNonce);
    error DisputeWindowOpen(uint256 deadline);
    error DisputeWindowClosed(uint256 deadline);
    /// @notice A landed settlement resolved this payment off-chain (deadline ≤ resolvedUntil).
    error ClaimResolved(uint64 deadline, uint64 resolvedUntil);
    /// @notice The payment is still claimable: claim it (`claimPayment`) rather than contest.
    error ClaimOpen(uint64 deadline, uint64 resolvedUntil);
    error AlreadyClaimed(bytes32 channelId, uint256 requestId);
    error ExceedsCapacity(uint256 amount, uint256 capacity);
    error InvalidPaymentSignature();
    /// @notice The client already left with a statement that counted this payment.
    error ClientAlreadyPaid(address client);
    /// @notice The statement counts some of the claims made against the client and not others.
    error StatementStraddlesClaims(uint64 nonce, uint64 minNonce, uint64 maxNonce);
    error NothingOwed();
    /// @notice The index's lane is frozen by another participant's force-settle.
    error IndexFrozen(uint32 index);
    error OrderExpired(uint256 deadline);
    /// @notice The vault's view of the claims, extended by the tail given, is not the chain's.
    error ClaimsMismatch(uint256 claimed, uint256 onChain);
    /// @notice The signed record names a settlement epoch that has not landed yet.
    error EpochNotSettled(uint64 epoch, uint64 lastEpoch);
    /// @notice A settlement that resolves pending payments waits until their deadline.
    error TooEarly(uint64 notBefore);
    /// @notice A claim of a payment this settlement resolved landed after the vault signed it.
    error ClaimInTail(uint64 deadline, uint64 notBefore);
    /// @notice The settlement names another ledger life than the one the first settlement pinned.
    error WrongLedger(bytes16 ledger, bytes16 pinned);
    /// @notice A landed settlement already made this pull (each pull id is made at most once).
    error PullRepeated(uint32 pull);
    /// @notice This plain transfer was proven already.
    error TransferAlreadyProven(uint256 position);
    /// @notice The settlement's anchor is not the chain's block (or is older than 8,191
    ///         blocks), or the enclave read another token's transfers.
    error UnknownAnchor(uint64 anchor);
    /// @notice The settlement's pull checks say this pull was made; its bit is clear.
    error PullNotMade(uint32 pull);
    /// @notice The settlement's pull checks say this pull was not made; its bit is set.
    error PullMade(uint32 pull);
    /// @notice Too little gas left to give a pull its `PULL_GAS`.
    error InsufficientGas();

    constructor(IERC20 token_, address vaultSigner_, uint256 settleWindow_, TransferProver transferProver_)
        EIP712("A402", "1")
    {
        if (
            address(token_).code.length == 0 || vaultSigner_ == address(0) || settleWindow_ == 0
                || settleWindow_ > 365 days || address(transferProver_).code.length == 0
        ) revert InvalidTerms();
        token = token_;
        vaultSigner = vaultSigner_;
        settleWindow = settleWindow_;
        transferProver = transferProver_;
    }

    // --------------------------------------------------------------- deposits

    /// @notice Credit `participant` with `amount`, pulled from the sender (who approved this
    ///         contract). Refused unless exactly `amount` arrives.
    function deposit(address participant, uint256 amount) external nonReentrant {
        Participant storage part = _checkDeposit(participant, amount);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        _checkReceived(before, amount);
        _recordDeposit(part, participant, amount);
    }

    /// @notice Record a plain `transfer` of the token to this contract (see "Plain
    ///         transfers"), proven by `transferProver` from a receipt proof and headers up to a
    ///         block whose hash the chain or this contract knows: its sender's exit pays it back
    ///         if no statement counts it (once the exit is final: paid now). Anyone may send
    ///         it; each transfer counts once.
    ///         `receiptProof`: see `TransferProver.provenTransfer`.
    function proveTransfer(bytes calldata receiptProof) external nonReentrant {
        (address from, uint256 amount, uint256 position, uint256 last, bytes32 lastHash) =
            transferProver.provenTransfer(address(token), address(this), receiptProof);
        if (_knownHash(last) != lastHash) revert UnknownAnchor(uint64(last));
        if (transferProven[position]) revert TransferAlreadyProven(position);
        transferProven[position] = true;
        emit TransferProven(from, amount, position);
        Participant storage part = _participants[from];
        uint128 before = part.transferred;
        part.transferred = before + uint128(amount); // below 2^128: the prover's bound
        if (part.status != Status.Settled) return;
        // Final already: pay what this proof adds to what the final statement did not count.
        uint128 counted = _forceSettles[from].transferred;
        uint256 due = _uncounted(part.transferred, counted) - _uncounted(before, counted);
        uint256 available_ = available();
        if (due > available_) revert InsufficientFunds(due, available_);
        _send(from, due);
    }

    /// @notice Keep the hash of block `number` (one of the last 8,191) for good: a settlement
    ///         anchored there can still land, and transfers proven through it, after the
    ///         chain itself has forgotten it. Anyone may send it.
    function checkpoint(uint256 number) external {
        bytes32 known = Blockhash.blockHash(number);
        if (known == 0) revert UnknownAnchor(uint64(number));
        blockHashes[number] = known;
    }

    /// @dev The hash of block `number` as stored here, else as the chain still knows it (0:
    ///      neither: too old, or not mined yet).
    function _knownHash(uint256 number) private view returns (bytes32 known) {
        known = blockHashes[number];
        if (known == 0) known = Blockhash.blockHash(number);
    }

    /// @dev The plain transfers proven on-chain beyond those a statement counts (0 if fewer).
    function _uncounted(uint128 proven, uint128 counted) private pure returns (uint256) {
        return proven > counted ? proven - counted : 0;
    }

    // ------------------------------------------------------------- settlement

    /// @notice Make every pull of `pulls.records` (skipping those that cannot be made), check
    ///         `pulls.checks`, pay every (payee, index, amount) of `payouts` and confirm every
    ///         (participant, cumulative) of `confirms`, authorised by the vault key's
    ///         `vaultSignature` over A402VaultSettlement(h.prevEpoch, h.epoch, keccak(payouts),
    ///         keccak(confirms), keccak(pulls.records), keccak(pulls.checks), h.claims,
    ///         h.notBefore, h.ledger). `h.prevEpoch` must be `lastEpoch` and `h.epoch` above it;
    ///         `h.claims` extended by `claimTail` (the claims mined since) must be `claimState`.
    ///         Sent by anyone. A frozen payee's payout is withheld; a payout the token refuses is
    ///         credited to `owed`. Reverts if the total exceeds `available()`.
    function settle(
        SettlementHeader calldata h,
        bytes calldata payouts,
        bytes calldata confirms,
        Pulls calldata pulls,
        bytes calldata claimTail,
        bytes calldata vaultSignature
    ) external nonReentrant {
        uint64 last = lastEpoch;
        if (h.prevEpoch != last || h.epoch <= last || h.epoch >= _FROZEN) revert WrongEpoch(h.epoch, last);
        if (
            payouts.length % _PAYOUT_SIZE != 0 || confirms.length % _CONFIRM_SIZE != 0
                || pulls.records.length % _PULL_SIZE != 0 || pulls.checks.length % 4 != 0
                || pulls.signatures.length != pulls.records.length / _PULL_SIZE * _PULL_SIGNATURE_SIZE
        ) revert MalformedPayouts();
        if (block.timestamp <= h.notBefore) revert TooEarly(h.notBefore);
        if (h.anchorHash != 0) {
            bytes32 known = _knownHash(h.anchor); // 0: too old and not stored, or not mined
            if (known == 0 || keccak256(abi.encode(known, token)) != h.anchorHash) revert UnknownAnchor(h.anchor);
            blockHashes[h.anchor] = known; // proofs through it never expire
        }
        if (last == 0) {
            ledger = h.ledger; // the first settlement pins the ledger life
        } else if (h.ledger != ledger) {
            revert WrongLedger(h.ledger, ledger);
        }
        _requireVault(
            _headerDigest(h, keccak256(payouts), keccak256(confirms), keccak256(pulls.records), keccak256(pulls.checks)),
            vaultSignature
        );
        _checkClaims(h.claims, claimTail, h.notBefore);
        _checkConfirms(confirms);
        lastEpoch = h.epoch;
        for (uint256 e = uint256(last) + 1; e < h.epoch; ++e) {
            _voided[e >> 8] |= 1 << (e & 255);
        }
        if (h.notBefore > resolvedUntil) resolvedUntil = h.notBefore;
        if (pulls.records.length != 0) _pullAll(pulls.records, pulls.signatures);
        _checkPulls(pulls.checks);
        _payAll(payouts, h.epoch, last + 1);
    }

    function _headerDigest(
        SettlementHeader calldata h,
        bytes32 payoutsHash,
        bytes32 confirmsHash,
        bytes32 pullsHash,
        bytes32 checksHash
    ) private view returns (bytes32) {
        return settlementDigest(h, payoutsHash, confirmsHash, pullsHash, checksHash);
    }

    /// @dev The pull loop (see "Pulled deposits"): each record's id must be new (else the whole
    ///      settlement reverts); a pull that cannot be made is skipped, its bit left clear; a
    ///      made one sets its bit. The bitmap word is kept in hand while the next record's id
    ///      shares it. The vault's balance must grow by exactly what was pulled.
    function _pullAll(bytes calldata records, bytes calldata signatures) private {
        uint256 before = token.balanceOf(address(this));
        uint256 sum;
        uint256 bitKey = type(uint256).max;
        uint256 bits;
        for (uint256 i; i < records.length / _PULL_SIZE; ++i) {
            uint256 head;
            uint256 tail;
            assembly ("memory-safe") {
                let pos := add(records.offset, mul(i, 48))
                head := calldataload(pos)
                tail := calldataload(add(pos, 16))
            }
            // tail = (last 16 bytes of the address) ‖ uint32 index ‖ uint96 amount ‖ uint32 pull
            // ‖ uint64 deadline
            uint256 pull = uint32(tail >> 64);
            if (pull == 0 || pull & _FROZEN != 0) revert MalformedPayouts();
            if (pull >> 8 != bitKey) {
                if (bitKey != type(uint256).max) _pulled[bitKey] = bits;
                bitKey = pull >> 8;
                bits = _pulled[bitKey];
            }
            if (bits & (1 << (pull & 255)) != 0) revert PullRepeated(uint32(pull));
            if (!_pullOne(head, tail, signatures[i * _PULL_SIGNATURE_SIZE:(i + 1) * _PULL_SIGNATURE_SIZE])) {
                continue;
            }
            bits |= 1 << (pull & 255);
            sum += uint96(tail >> 96);
        }
        _pulled[bitKey] = bits;
        _checkReceived(before, sum);
    }

    /// @dev One pull record (`head`, `tail`: its words at bytes 0 and 16): made unless the
    ///      participant's lane is frozen (it is exiting: once its exit started its bits never
    ///      change) or the token refuses its `receiveWithAuthorization` (deadline, signature,
    ///      cancellation, balance, or more than `PULL_GAS`). Returns whether it was made; never
    ///      reverts for those.
    function _pullOne(uint256 head, uint256 tail, bytes calldata signature) private returns (bool) {
        uint32 index = uint32(tail >> 192);
        if (index & _FROZEN != 0) revert MalformedPayouts();
        if (_lane(index) & _FROZEN != 0) return false;
        // The call forwards at most 63/64 of what is left after its own cost (EIP-150).
        if (gasleft() < PULL_GAS + PULL_GAS / 63 + 5000) revert InsufficientGas();
        try IERC3009Receive(address(token)).receiveWithAuthorization{gas: PULL_GAS}(
            address(uint160(head >> 96)), address(this), uint96(tail >> 96), 0, uint64(tail),
            pullNonce(uint32(tail >> 64), ledger), signature
        ) {
            return true;
        } catch {
            return false;
        }
    }

    /// @dev Each check, against the bitmap this settlement leaves (after its own pulls): an id
    ///      with bit 31 clear must be made, with bit 31 set (id in the low 31 bits) must not.
    function _checkPulls(bytes calldata checks) private view {
        uint256 key = type(uint256).max;
        uint256 bits;
        for (uint256 pos; pos < checks.length; pos += 4) {
            uint256 word;
            assembly ("memory-safe") {
                word := shr(224, calldataload(add(checks.offset, pos)))
            }
            uint256 pull = word & ~_FROZEN;
            if (pull >> 8 != key) {
                key = pull >> 8;
                bits = _pulled[key];
            }
            bool made = (bits >> (pull & 255)) & 1 != 0;
            if (word & _FROZEN == 0) {
                if (!made) revert PullNotMade(uint32(pull));
            } else if (made) {
                revert PullMade(uint32(pull));
            }
        }
    }

    /// @dev Every confirmed total must be on-chain already (`deposited` only grows).
    function _checkConfirms(bytes calldata confirms) private view {
        for (uint256 pos; pos < confirms.length; pos += _CONFIRM_SIZE) {
            uint256 word;
            assembly ("memory-safe") {
                word := calldataload(add(confirms.offset, pos))
            }
            address who = address(uint160(word >> 96));
            uint256 onChain = _participants[who].deposited;
            if (uint96(word) > onChain) revert DepositsNotMade(who, uint96(word), onChain);
        }
    }

    /// @dev `claims`, extended by `tail` (64 bytes a claim: key, uint64 deadline), must be the
    ///      claim chain now: then the enclave's view is one of its prefixes and it missed no claim
    ///      before it. A claim in the tail must be of a payment this settlement did not resolve
    ///      (deadline after `notBefore`).
    function _checkClaims(uint256 claims, bytes calldata tail, uint64 notBefore) private view {
        if (tail.length % _CLAIM_SIZE != 0) revert MalformedPayouts();
        uint256 state = claims;
        for (uint256 pos; pos < tail.length; pos += _CLAIM_SIZE) {
            bytes32 key;
            uint256 word;
            assembly ("memory-safe") {
                key := calldataload(add(tail.offset, pos))
                word := calldataload(add(tail.offset, add(pos, 32)))
            }
            uint64 deadline = uint64(word);
            if (deadline <= notBefore) revert ClaimInTail(deadline, notBefore);
            state = _foldClaim(state, key, deadline);
        }
        uint256 onChain = claimState;
        if (state != onChain) revert ClaimsMismatch(claims, onChain);
    }

    /// @dev One claim's link: count + 1 ‖ low224(keccak(state ‖ 0x01 ‖ key ‖ uint64 deadline)).
    function _foldClaim(uint256 state, bytes32 key, uint64 deadline) private pure returns (uint256) {
        uint256 head =
            uint256(keccak256(abi.encodePacked(state, bytes1(0x01), key, deadline))) & _HEAD_MASK;
        return (((state >> 224) + 1) << 224) | head;
    }

    function _recordDeposit(Participant storage part, address participant, uint256 amount) private {
        uint256 total = uint256(part.deposited) + amount;
        if (total > type(uint96).max) revert InvalidTerms();
        part.deposited = uint96(total);
        emit Deposited(participant, amount, total);
    }

    /// @dev The settlement loop: pay or withhold each record, keeping the lane word in hand
    ///      until the next record's index leaves it. Reverts if what it pays exceeds what was
    ///      `available()` before it.
    function _payAll(bytes calldata payouts, uint64 epoch, uint64 tag) private {
        uint256 available_ = available();
        uint256 total;
        uint256 count;
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
            if (index & _FROZEN != 0) {
                // An exit credit (review S9-6): paid to the payee now, its lane untouched.
                uint256 credit = uint96(tail);
                total += credit;
                ++count;
                _send(address(uint160(head >> 96)), credit);
                continue;
            }
            if (index >> 3 != key) {
                if (key != type(uint256).max) _lanes[key] = lanes;
                key = index >> 3;
                lanes = _lanes[key];
            }
            uint256 shift = (index & 7) << 5;
            if ((lanes >> shift) & _FROZEN != 0) {
                if (uint96(tail) != 0) _withhold(address(uint160(head >> 96)), tag, uint96(tail));
                continue;
            }
            lanes = (lanes & ~(_LANE_MASK << shift)) | (uint256(epoch) << shift);
            total += uint96(tail);
            ++count;
            _send(address(uint160(head >> 96)), uint96(tail));
        }
        if (key != type(uint256).max) _lanes[key] = lanes;
        if (total > available_) revert InsufficientFunds(total, available_);
        emit Settled(epoch, count, total);
    }

    /// @dev A frozen payee (force-settling or settled): keep its payout for the force-settle.
    function _withhold(address payee, uint64 tag, uint256 amount) private {
        _withheld[payee].push((uint256(tag) << _TAG_SHIFT) | amount);
        emit PayoutWithheld(payee, tag, amount);
    }

    // ----------------------------------------------------------- force-settle

    /// @notice Start `st.participant`'s exit with a statement the vault key signed. Sent by the
    ///         participant itself, or by anyone with `order`, the participant's signature (EOA or
    ///         EIP-1271) over `exitDigest(st)`; the payout always goes to the participant.
    ///         Freezes the account: later settlements withhold its payouts. Opens Δ_settle.
    function initForceSettle(Statement calldata st, bytes calldata signature, bytes calldata order)
        external
        nonReentrant
    {
        address p = st.participant;
        if (msg.sender != p && !SignatureChecker.isValidSignatureNow(p, exitDigest(st), order)) {
            revert BadSignature(p);
        }
        Participant storage part = _participants[p];
        Status current = part.status;
        if (current != Status.Active) revert WrongStatus(p, current);
        uint256 lane_ = _lane(st.index);
        if (lane_ & _FROZEN != 0) revert IndexFrozen(st.index);
        _checkStatement(st, signature, uint64(lane_), part.deposited);
        uint128 deducted = _deductionAt(p, st.nonce);
        uint256 deadline = block.timestamp + settleWindow;
        _setLane(st.index, lane_ | _FROZEN);
        part.status = Status.Settling;
        _forceSettles[p] = ForceSettle(
            st.balance,
            st.locked,
            uint128(st.deposited),
            uint128(st.transferred),
            st.epoch,
            st.nonce,
            uint64(deadline),
            st.index,
            st.pull,
            deducted,
            uint128(st.pulling)
        );
        emit ForceSettleInitiated(p, st.balance, st.locked, st.epoch, st.nonce, deadline);
    }

    /// @notice Replace the recorded statement with a newer one (higher nonce) before the
    ///         deadline; anyone may send it (a watchtower). The deadline does not move.
    function challengeForceSettle(Statement calldata st, bytes calldata signature) external nonReentrant {
        address p = st.participant;
        Participant storage part = _participants[p];
        Status current = part.status;
        if (current != Status.Settling) revert WrongStatus(p, current);
        ForceSettle storage fs = _forceSettles[p];
        if (block.timestamp >= fs.deadline) revert DisputeWindowClosed(fs.deadline);
        if (st.nonce <= fs.nonce || st.epoch < fs.epoch) revert NotNewer(st.nonce, fs.nonce);
        if (st.index != fs.index) revert IndexFrozen(st.index);
        _checkStatement(st, signature, uint64(_lane(st.index) & ~_FROZEN), part.deposited);
        (fs.balance, fs.locked, fs.deposited, fs.transferred, fs.epoch, fs.nonce) =
            (st.balance, st.locked, uint128(st.deposited), uint128(st.transferred), st.epoch, st.nonce);
        (fs.pull, fs.deducted, fs.pulling) = (st.pull, _deductionAt(p, st.nonce), uint128(st.pulling));
        emit ForceSettleChallenged(p, st.balance, st.locked, st.epoch, st.nonce);
    }

    /// @notice Answer a force-settling client's statement with a payment it still counts (its
    ///         provider's evidence, as for `claimPayment`) that a landed settlement already
    ///         resolved off-chain: the payment comes off the client's exit if the recorded
    ///         statement counts it (clientNonce ≥ its nonce). Pays nobody. Once per payment;
    ///         anyone may send it, before the client's dispute window closes.
    function contestForceSettle(
        Channel calldata c,
        Payment calldata p,
        bytes calldata authorization,
        bytes calldata pendingSignature
    ) external nonReentrant {
        uint64 resolved = resolvedUntil;
        if (p.deadline > resolved) revert ClaimOpen(p.deadline, resolved);
        address client = c.client;
        Status current = _participants[client].status;
        if (current != Status.Settling) revert WrongStatus(client, current);
        uint256 windowEnd = _forceSettles[client].deadline;
        if (block.timestamp >= windowEnd) revert DisputeWindowClosed(windowEnd);
        bytes32 key = _checkPayment(c, p, authorization, pendingSignature);
        claimed[key] = true;
        _claimAgainst(client, p.clientNonce, p.amount);
        emit ForceSettleContested(client, _forceSettles[client].deducted);
    }

    /// @notice After the window, pay `participant` what its recorded statement says (see
    ///         `settlementOf`). The account stays frozen for good.
    function finalForceSettle(address participant) external nonReentrant returns (uint256 payout) {
        Participant storage part = _participants[participant];
        Status current = part.status;
        if (current != Status.Settling) revert WrongStatus(participant, current);
        ForceSettle storage fs = _forceSettles[participant];
        if (block.timestamp < fs.deadline) revert DisputeWindowOpen(fs.deadline);
        payout = settlementOf(participant);
        part.status = Status.Settled; // its lane stays frozen: no settlement pays it again
        uint256 available_ = available();
        if (payout > available_) revert InsufficientFunds(payout, available_);
        emit ForceSettleFinalized(participant, payout);
        _send(participant, payout);
    }

    /// @notice What `finalForceSettle` would pay `participant` now (0 if none is recorded):
    ///         balance + locked − the claims the statement counts − its pull's `pulling` if that
    ///         pull is not made (down to zero), + the deposits it does not count (`deposited`
    ///         on-chain − the statement's), + its proven plain transfers, + payouts withheld
    ///         that the statement is net of.
    function settlementOf(address participant) public view returns (uint256) {
        ForceSettle storage fs = _forceSettles[participant];
        if (fs.deadline == 0) return 0;
        uint256 counted = fs.balance + fs.locked;
        uint256 deducted = fs.deducted;
        uint32 pull = fs.pull;
        // The participant's lane is frozen: its pulls are skipped, so this bit no longer moves.
        if (pull != 0 && !pulled(pull)) deducted += fs.pulling;
        uint256 payout = deducted >= counted ? 0 : counted - deducted;
        Participant storage part = _participants[participant];
        payout += uint256(part.deposited) - fs.deposited + _uncounted(part.transferred, fs.transferred);
        uint64 epoch = fs.epoch;
        uint256[] storage withheld = _withheld[participant];
        for (uint256 i; i < withheld.length; ++i) {
            if (withheld[i] >> _TAG_SHIFT <= epoch) payout += withheld[i] & _AMOUNT_MASK;
        }
        return payout;
    }

    function _checkStatement(Statement calldata st, bytes calldata signature, uint64 lastPaid, uint256 deposited)
        private
        view
    {
        uint64 last = lastEpoch;
        if (st.epoch < lastPaid || st.epoch > last) revert StaleStatement(st.epoch, lastPaid, last);
        if (_voided[st.epoch >> 8] & (1 << (st.epoch & 255)) != 0) revert VoidedEpoch(st.epoch);
        if (st.deposited > deposited) revert DepositsNotMade(st.participant, st.deposited, deposited);
        if (st.pulling > type(uint128).max || st.transferred > type(uint128).max || st.pull & _FROZEN != 0) {
            revert InvalidTerms();
        }
        _requireVault(statementDigest(st), signature);
    }

    /// @dev What the claims against `client` take off a statement of nonce `nonce`: all of them
    ///      (it counts every one), none, or the statement is refused (it counts some).
    function _deductionAt(address client, uint64 nonce) private view returns (uint128) {
        ClaimSum storage s = _claimSums[client];
        uint128 total = s.total;
        if (total == 0 || nonce > s.maxNonce) return 0;
        if (nonce <= s.minNonce) return total;
        revert StatementStraddlesClaims(nonce, s.minNonce, s.maxNonce);
    }

    /// @dev Record δ claimed against `client` (payment counted by its statements ≤ clientNonce).
    function _claimAgainst(address client, uint64 clientNonce, uint256 amount) private {
        Status current = _participants[client].status;
        if (current == Status.Settled && _forceSettles[client].nonce <= clientNonce) {
            revert ClientAlreadyPaid(client);
        }
        if (current == Status.Settling) {
            ForceSettle storage fs = _forceSettles[client];
            if (clientNonce >= fs.nonce) fs.deducted += uint128(amount);
        }
        ClaimSum storage s = _claimSums[client];
        if (s.total == 0) {
            (s.minNonce, s.maxNonce) = (clientNonce, clientNonce);
        } else if (clientNonce < s.minNonce) {
            s.minNonce = clientNonce;
        } else if (clientNonce > s.maxNonce) {
            s.maxNonce = clientNonce;
        }
        s.total += uint128(amount);
    }

    // --------------------------------------------------------- provider claim

    /// @notice Pay the provider of channel `c` its pending payment `p` while the vault is dark:
    ///         `p.(e, s)` is the provider's completed adaptor signature on
    ///         m = A402Payment(channelId, requestId, amount, resultHash) (Schnorr under
    ///         `c.providerKey`), `authorization` is σ_U, and `pendingSignature` the vault key's
    ///         A402VaultPending(channelId, requestId, clientNonce, epoch, deadline). Accepted
    ///         until a landed settlement resolved the payment (`deadline ≤ resolvedUntil`), once
    ///         per (channel, request); the amount comes off the client's exit if its statement
    ///         counts it. Anyone may send it; the provider is paid.
    function claimPayment(
        Channel calldata c,
        Payment calldata p,
        bytes calldata authorization,
        bytes calldata pendingSignature
    ) external nonReentrant {
        uint64 resolved = resolvedUntil;
        if (p.deadline <= resolved) revert ClaimResolved(p.deadline, resolved);
        bytes32 key = _checkPayment(c, p, authorization, pendingSignature);
        // The client's funds are the enclave's word only once the settlement that confirmed
        // its deposits (epoch `p.epoch` or earlier) has landed.
        if (p.epoch > lastEpoch) revert EpochNotSettled(p.epoch, lastEpoch);
        uint256 available_ = available();
        if (p.amount > available_) revert InsufficientFunds(p.amount, available_);
        claimed[key] = true;
        _claimAgainst(c.client, p.clientNonce, p.amount);
        uint256 state = _foldClaim(claimState, key, p.deadline);
        claimState = state;
        emit PaymentClaimed(channelId(c), p.requestId, p.amount, p.e, p.s, p.deadline, state);
        _send(c.provider, p.amount);
    }

    /// @dev The evidence of a pending payment: the provider's completed adaptor signature, σ_U
    ///      and the pending record, all for this channel and request, not claimed before.
    ///      Returns the payment's key.
    function _checkPayment(
        Channel calldata c,
        Payment calldata p,
        bytes calldata authorization,
        bytes calldata pendingSignature
    ) private view returns (bytes32 key) {
        if (p.amount == 0 || p.amount > c.capacity || p.amount > type(uint96).max) {
            revert ExceedsCapacity(p.amount, c.capacity);
        }
        bytes32 cid = channelId(c);
        key = keccak256(abi.encode(cid, p.requestId));
        if (claimed[key]) revert AlreadyClaimed(cid, p.requestId);
        bytes32 domain = _domainSeparatorV4();
        bytes32 m = A402Message.paymentMessage(domain, cid, p.requestId, p.amount, p.resultHash);
        if (!Schnorr.verify(c.providerKey, m, p.e, p.s)) revert InvalidPaymentSignature();
        _requireVault(A402Message.authorizationDigest(domain, m, p.amount, p.e), authorization);
        _requireVault(pendingDigest(cid, p.requestId, p.clientNonce, p.epoch, p.deadline), pendingSignature);
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
        return _participants[participant].status;
    }

    /// @notice Whether a replacement settlement skipped `epoch` (its statements are void).
    function isVoided(uint64 epoch) external view returns (bool) {
        return _voided[epoch >> 8] & (1 << (epoch & 255)) != 0;
    }

    /// @notice Whether a landed settlement made pull `pull` (its transfer happened).
    function pulled(uint32 pull) public view returns (bool) {
        return (_pulled[pull >> 8] >> (pull & 255)) & 1 != 0;
    }

    /// @notice Everything ever deposited for `participant` (what its statements' `deposited`
    ///         is compared with).
    function depositedOf(address participant) external view returns (uint256) {
        return _participants[participant].deposited;
    }

    /// @notice The plain transfers of `participant` that `proveTransfer` recorded, summed.
    function transferredOf(address participant) external view returns (uint256) {
        return _participants[participant].transferred;
    }

    /// @notice The claims (and contests) made against `client`: their sum and clientNonce range.
    function claimSumOf(address client) external view returns (ClaimSum memory) {
        return _claimSums[client];
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

    /// @notice The digest the vault key signs for a settlement of header `h` whose packed
    ///         payouts, confirms, pull records and pull checks hash to the four given.
    function settlementDigest(
        SettlementHeader calldata h,
        bytes32 payoutsHash,
        bytes32 confirmsHash,
        bytes32 pullsHash,
        bytes32 checksHash
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                bytes.concat(
                    abi.encode(SETTLEMENT_TYPEHASH, h.prevEpoch, h.epoch, payoutsHash, confirmsHash),
                    abi.encode(pullsHash, checksHash, h.claims, h.notBefore, h.ledger, h.anchor, h.anchorHash)
                )
            )
        );
    }

    /// @notice The EIP-3009 nonce of pull `pull` in the ledger life `ledger_`: a participant's
    ///         ReceiveWithAuthorization to this contract with it lets a settlement make that
    ///         pull (only while `ledger_` is the pinned life: pull ids are a life's).
    function pullNonce(uint32 pull, bytes16 ledger_) public pure returns (bytes32) {
        return keccak256(abi.encode(PULL_TYPEHASH, pull, ledger_));
    }

    /// @notice The digest the vault key signed for `st`: it names the pinned ledger life, or
    ///         none (0) for a statement of epoch 0 that counts no pull (empty: it counts no
    ///         deposit). A statement counting a pull names the life even at epoch 0: pull ids
    ///         are a life's own, so another life's statement naming an id this life made would
    ///         otherwise be paid its `pulling` (a wiped ledger numbers its pulls from 1 again).
    function statementDigest(Statement calldata st) public view returns (bytes32) {
        bytes16 life = st.epoch == 0 && st.pull == 0 ? bytes16(0) : ledger;
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    BALANCE_TYPEHASH,
                    st.participant,
                    st.index,
                    st.balance,
                    st.locked,
                    st.epoch,
                    st.nonce,
                    st.deposited,
                    st.pull,
                    st.pulling,
                    st.transferred,
                    life
                )
            )
        );
    }

    /// @notice What a participant signs to let someone else start its exit with `st`.
    function exitDigest(Statement calldata st) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(EXIT_TYPEHASH, st.participant, statementDigest(st))));
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
            keccak256(abi.encode(PENDING_TYPEHASH, cid, requestId, clientNonce, epoch, deadline, ledger))
        );
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
    ///      good (no settlement pays it again), so money sent to it would be stranded; and an
    ///      exit's `deposited` must not move under it.
    function _checkDeposit(address participant, uint256 amount) private view returns (Participant storage part) {
        if (participant == address(0) || amount == 0 || amount > type(uint96).max) revert InvalidTerms();
        part = _participants[participant];
        Status current = part.status;
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
