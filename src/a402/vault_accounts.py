"""Vault mode inside the enclave: pooled accounts, private channels, statements, settlements.

The Liquidity Vault of the A402 paper (§4.3, Alg. 3) on ``A402Vault.sol``. Every
participant — client or provider — has an account ``(free, locked)`` here, and
nowhere else: the chain sees deposits and aggregated settlements only. Channels
open and close against accounts with no transaction, and run the very same
exchange as standard mode (:class:`~a402.asc.VaultChannel`, with
``ChannelTerms(vault_mode=True)``, whose id is the one ``claimPayment``
recomputes): one exchange code path, two funding modes. A provider is a
participant like any other; what it earns accrues to its account.

This is enclave code: :meth:`VaultAccountsCode.start` runs it with the
:class:`~a402.tee.EnclaveKernel`, and the host gets a :class:`VaultAccounts`,
which offers no way to sign a digest of its choosing. What the key signs here
(purpose :data:`~a402.tee.VAULT_ACCOUNTS`, except σ_U and channel states, which
the machines sign as in standard mode), each in the exact format
``A402Vault.sol`` checks (:mod:`a402.crypto.vault_messages`):

* a **balance statement** ``(participant, index, balance = free, locked, epoch,
  nonce, deposited, pull, pulling, transferred)`` for every participant an operation
  changed, after the change (what ``initForceSettle``/``challengeForceSettle`` take); the
  latest one is kept and handed out again on demand (:meth:`VaultAccountsCode.statement`);
* a **settlement** ``(prevEpoch, epoch, keccak(payouts), keccak(confirms), keccak(pulls),
  keccak(pullChecks), claims, notBefore, ledger, anchor, anchorHash)``, each following the
  one before (a replacement follows the last one that can still land), each payee debited
  when it is signed;
* a **pending record** ``(channelId, requestId, clientNonce, epoch, deadline)``
  with each σ_U, so that the provider can ``claimPayment`` if the vault goes dark.

Safety argument: the host's reports cannot create money.

The enclave cannot see the chain; its host reports deposits. A host that
reported an invented deposit (for a key of its own) would, in a naive ledger,
have the enclave sign statements, payments and payouts out of everybody else's
pooled money; ``available()`` bounds only the total. So:

1. The contract keeps each participant's cumulative ``deposited``; every
   ``Deposited`` event carries the total after it, and the enclave takes a report
   only if it extends the total it holds for that participant by the amount
   (reports come in order per participant, once each). That check is for the
   host's own mistakes; the safety is the next step.
2. A reported deposit is *unconfirmed*: it is in no statement, funds no channel
   and is paid to nobody. It is *confirmed* when the enclave signs a settlement
   (with no payouts if need be) that lists ``(participant, confirmed total)``;
   ``settle`` lands only if each total is at most the contract's ``deposited`` —
   so every deposit the enclave counted was made, for that participant, and no
   unit of it twice. The check is a lower bound on a total that only grows: a
   deposit mined in front of the settlement (dust, by anyone) cannot make it fail
   (review F7).
3. Everything signed on the strength of confirmed money names a settlement epoch
   no earlier than the one that confirmed it: a statement is usable on-chain only
   if ``epoch ≤ lastEpoch``, a pending record only if its ``epoch ≤ lastEpoch``, a
   payout only inside its settlement. So nothing pays before the settlement that
   proved the deposits behind it has landed. That epoch is the *account's* (the
   last settlement that changed its money: confirmed a deposit of its, credited it a
   pending payment, or paid it), not the last one signed: a statement is net of
   every payout up to the account's epoch and no later settlement pays it, so it is
   gross of them too, and the double-pay rule (``lastPaidEpoch ≤ epoch``) holds as
   with the global epoch. What it buys: a settlement withheld or made unlandable
   voids the later statements and pending records of the accounts it touched only,
   not everybody's. A host that lies about a deposit makes the settlement that
   confirms it unlandable, and with it every later one: no later statement or claim
   is usable, and the participants leave with their last usable statements
   (force-settle), which count real money only.
4. Every statement names ``deposited``, the confirmed total it counts, and a
   force-settle pays ``deposited`` on-chain minus that on top of the statement: a
   deposit no statement counts yet (made or reported just before the vault went
   dark) is paid back to its participant, and a participant with unconfirmed
   deposits only gets an empty statement on demand (:meth:`VaultAccountsCode.
   statement`) to exit with (review F2).
5. Plain transfers (a token ``transfer`` straight to the vault: no contract record, the
   least gas) are read, not reported: the host hands the headers after the last one read
   and receipt proofs, and the enclave checks that the headers link, that each receipt is
   under its block's ``receiptsRoot`` and that the transfer is a plain one of its token to
   the vault (:meth:`VaultAccountsCode.read_transfers`). What it credits is *unanchored*
   until a settlement is signed whose ``anchor`` is the last header read, committing to the
   token; that settlement lands only if the chain knows that header, and everything signed
   on the strength of the transfers names its epoch (3.). Statements count them as
   ``transferred``; a transfer no statement counts is paid back by the exit once proven on
   the chain (``proveTransfer``), so one the host hides is not lost.

Conservation inside: every operation moves amounts between ``free``,
``locked``, pending payments and the payouts of signed settlements, and
:meth:`VaultAccountsCode.totals` checks, in the tests, that deposits = Σ free +
Σ locked + Σ unconfirmed + Σ pending + Σ paid out − Σ debt (a debt is a claimed
payment a voided settlement had credited and its account had spent, below).

Pending payments. When σ_U is signed for δ, δ leaves the client's ``locked``
(its new statement, nonce n+1, no longer counts it; the pending record names
``clientNonce = n``, the last statement that did) and is held pending, in no
statement, until its ``deadline`` (``CLAIM_WINDOW`` after the host's ``now``)
is behind the enclave's clock: then, in the next settlement the enclave signs
(whose ``notBefore`` is that deadline), it is credited to the provider if it
revealed ``t`` (REVEAL), back to the client if not — unless the host reported a
claim that landed (:meth:`VaultAccountsCode.claim_landed`), which paid the
provider on-chain. The claim window is the chain's, not the host's clock (review
F5): the contract refuses a claim only once a landed settlement's ``notBefore``
reaches its deadline (``resolvedUntil``), i.e. once a settlement that resolved
it landed — pending payments resolve in deadline order, since deadlines follow
the enclave's monotone clock — so a host whose clock lags hands out records that
stay claimable; and ``settle`` lands only after ``notBefore`` on the chain's
clock, so a host whose clock runs ahead cannot shorten the window either.

What the host can and cannot do besides (stated, not hidden):

* **Claims** are the chain's word too. Claims fold the contract's claim chain, and
  a settlement names the chain state it saw: a claim that landed before a settlement
  resolving the same payment makes that settlement unlandable (``ClaimInTail``)
  instead of paying twice. Liveness is kept (review F1): told of the claim, the
  enclave voids that settlement and every later one it signed, debits the account it
  had credited δ (down to a debt taken from its next money), and its next
  :meth:`~VaultAccountsCode.settle` is their *replacement* — it follows the last
  epoch before them, carries their payouts, confirmations and resolutions (the
  over-credited account's payout cut by what the claim paid), and the contract records
  the epochs it skips as void: no statement naming one is usable, so none that counted
  the claimed payment off-chain ever pays (even in a challenge by a participant already
  frozen), and every account whose statements named one gets a new statement naming
  the replacement. A host that reports a claim that never landed
  forks the claim chain (nothing lands). A claim of a payment never pending here is
  such a fork: settlements stop (``settlement_dead``).
* **Signed calls** are checked against the host's ``now`` (± the auth window) and each
  idempotency key pays once, for good; the standard vault's stricter freshness (a call
  withheld then paid days later, :mod:`a402.vault_enclave`) is not carried over yet. The
  host opens channels (the client signs none), so a call names its payee (``payTo``) and
  pays only on a channel to that provider (review S9-3): the host cannot spend it at a
  provider of its own.
* **Force-settles.** Only the participant (or its signed exit order) can start one
  (review F6). The host reports them (:meth:`exiting`); the contract withholds
  settlements from a frozen participant, and the watchtower
  (:mod:`a402.vault.watchtower`) answers a stale statement with the latest. With the
  vault dark, a provider answers a client's stale statement itself: the pending record,
  σ_U and its completed adaptor signature of each payment the statement still counts
  (``contestForceSettle``, review F3). Once a participant's exit is reported nothing
  moves its money: no σ_U for a request of its in flight (review S9-1: its exit
  statement still counts δ), and a pending payment resolved to it after that is paid
  at once as an *exit credit* (a payout record whose index has bit 31 set: no lane
  moves, none of its statements counts it; review S9-6), not credited to its frozen
  account.
* **Liveness.** The host can stop, withhold settlements (then the statements
  that name them stay unusable, and participants use earlier ones) or drop
  messages; it cannot make the enclave sign money that is not there.
* **Ledger life** (review S9-5). Each ledger draws a random life at its first boot
  (sealed with it); its 16-byte public name (:attr:`VaultAccountsCode.ledger`) is in
  every settlement, statement of epoch > 0 and pending record, and the contract pins
  the first landed settlement's. A host that deletes the ledger and starts the code on
  a first boot under the same key gets a new life: nothing it signs lands or verifies.
  (It still loses the newer statements the watchtower answers with: as if the vault
  had gone dark.)
* **Sealing** has no rollback protection (:mod:`a402.tee.sealing`): the ledger
  carries a version, and a running instance refuses an older one, as in
  :mod:`a402.vault_enclave`; but a host that restarts the code on a ledger from
  before a settlement it signed gets that settlement's payees paid again (in the
  next epoch, or by statements that do not know the payout). The chain cannot
  catch that alone: it needs a monotonic counter or a ledger replicated outside the
  host's reach (issue 13, failover).

Not built here yet: the host (service, store, scheduler and watchtower wiring),
per-channel sealed records (channels are sealed inside the one ledger), and the
once-rule's pruning (consumed idempotency keys are kept for good, and so are the records
of resolved payments, which a claim would void).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coincurve import PublicKey

from a402 import jsonbytes
from a402.asc import (
    Ack,
    ChannelTerms,
    Close,
    Exec,
    LocalProtocolError,
    PaymentAuthorized,
    Reason,
    Reply,
    RequestAbandoned,
    RequestExpired,
    ResultDelivered,
    Status,
    Step,
    VaultChannel,
)
from a402.asc.messages import Message as AscMessage
from a402.crypto import PaymentDomain
from a402.crypto.vault_messages import (
    EXIT_CREDIT,
    MAX_EPOCH,
    MAX_PAYOUT,
    NO_LEDGER,
    PULL_VOID,
    BalanceStatement,
    PullRecord,
    anchor_commitment,
    claim_key,
    fold_claim,
    pack_confirms,
    pack_payouts,
    pack_pull_checks,
    pack_pulls,
    pending_digest,
    settlement_digest,
    statement_digest,
    unpack_payouts,
    unpack_pull_checks,
    unpack_pulls,
)
from a402.evm.address import address_key, to_checksum
from a402.evm.ecdsa import public_key_address
from a402.evm.receipts import (
    Header,
    PlainTransfer,
    ProofError,
    link_headers,
    plain_transfers,
    proven_receipt,
)
from a402.tee import (
    CHANNEL_STATE,
    TUNNEL_BINDING,
    VAULT_ACCOUNTS,
    Enclave,
    EnclaveError,
    EnclaveKernel,
    TeeError,
)
from a402.vault_enclave import INVOKE_PATH, SignedCall, life_id, paid_request
from a402.wire import jsonstrict
from a402.wire import vault_api as api
from a402.wire.a402 import binding_digest
from a402.wire.errors import WireError

#: How many calls the enclave keeps the signature check of (:meth:`VaultAccountsCode.
#: authenticate`): the newest ones, oldest dropped first (a paid call reaches
#: :meth:`~VaultAccountsCode.request` within its own handling; one dropped is only recovered
#: again).
AUTHENTICATED_KEPT = 4096

_LEDGER_FORMAT = "a402/vault-mode-ledger/v2"
_LEDGER_LABEL = "a402/vault-mode-ledger"
#: A sealed journal entry: what changed since the export it follows (:meth:`VaultAccountsCode.
#: export_changes`), under its own label (neither can be taken for the other).
_DELTA_FORMAT = "a402/vault-mode-ledger-delta/v1"
_DELTA_LABEL = "a402/vault-mode-ledger-delta"
#: How long a pending payment stays claimable on-chain (seconds of chain time).
CLAIM_WINDOW = 3_600
#: A pull is put in a settlement only while its intent's deadline is at least this far
#: ahead of the enclave's clock (the contract skips a pull landing after its deadline).
PULL_MARGIN = 300
#: At most this many pulls are made per settlement, oldest first (the rest wait for the
#: next): each costs the settlement gas even when skipped (review s15-1), up to the
#: contract's ``PULL_GAS`` (250,000) for a wallet that burns what it is given (review s16-1:
#: a key delegated by EIP-7702 after its pull was authorized). 32 of those take 8.1M gas, so
#: a settlement with them and a full batch of payouts still fits in one transaction under
#: EIP-7825's cap (2^24) with the sender's headroom.
MAX_PULLS = 32
#: The most headers (and receipts) one :meth:`VaultAccountsCode.read_transfers` report holds.
MAX_HEADERS = 2_048
#: The most bytes of headers and proof nodes one report holds.
MAX_REPORT_BYTES = 64 << 20


# ------------------------------------------------------------ what the host gets


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """A balance statement and the vault key's signature: what the participant keeps."""

    statement: BalanceStatement
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedSettlement:
    """A settlement to submit (``A402Vault.settle``): anyone may send it.

    ``claims``: the claim chain state it was signed at (its ``claimTail`` is the claims
    mined since); ``confirms``: the packed deposit totals it confirms; ``prev_epoch``: the
    settlement it follows (``epoch - 1``, or earlier for a replacement)."""

    epoch: int
    payouts: bytes
    claims: int
    signature: bytes
    not_before: int = 0  # chain time after which it may land (the deadlines it resolves)
    prev_epoch: int = -1  # -1: epoch - 1
    confirms: bytes = b""
    ledger: bytes = NO_LEDGER  # the ledger life that signed it (the first landed one pins it)
    #: The packed pulls it makes (:func:`~a402.crypto.vault_messages.pack_pulls`; the host
    #: sends each with the participant's intent signature) and the pull checks it proves.
    pulls: bytes = b""
    pull_checks: bytes = b""
    #: The block that anchors the plain transfers it confirms (0: none) and its commitment
    #: (:func:`~a402.crypto.vault_messages.anchor_commitment`).
    anchor: int = 0
    anchor_hash: bytes = bytes(32)

    @property
    def prev(self) -> int:
        return self.epoch - 1 if self.prev_epoch < 0 else self.prev_epoch

    def to_json(self) -> list[Any]:
        return [self.payouts.hex(), str(self.claims), self.signature.hex(), self.not_before,
                self.prev, self.confirms.hex(), self.ledger.hex(), self.pulls.hex(),
                self.pull_checks.hex(), self.anchor, self.anchor_hash.hex()]

    @classmethod
    def from_json(cls, epoch: int, v: list[Any]) -> SignedSettlement:
        return cls(epoch, bytes.fromhex(v[0]), int(v[1]), bytes.fromhex(v[2]), int(v[3]),
                   int(v[4]), bytes.fromhex(v[5]),
                   bytes.fromhex(v[6]) if len(v) > 6 else NO_LEDGER,
                   bytes.fromhex(v[7]) if len(v) > 7 else b"",
                   bytes.fromhex(v[8]) if len(v) > 8 else b"",
                   int(v[9]) if len(v) > 9 else 0,
                   bytes.fromhex(v[10]) if len(v) > 10 else bytes(32))


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """The enclave's record of a pending payment, signed with σ_U (for ``claimPayment``)."""

    channel_id: bytes
    request_id: int
    amount: int
    client_nonce: int
    epoch: int
    deadline: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Changed:
    """The outcome of one operation: what to send the provider, the machine's events,
    the statements of every participant it changed (hand each to its participant),
    and the pending record it signed, if any."""

    step: Step = field(default_factory=Step)
    statements: tuple[SignedStatement, ...] = ()
    pending: PendingRecord | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """A signed settlement and the statements of the participants it changed."""

    settlement: SignedSettlement
    statements: tuple[SignedStatement, ...]


# ------------------------------------------------------------------ inside


class _Signer:
    """The machines' :class:`~a402.asc.terms.DigestSigner` over the kernel (σ_U, states)."""

    __slots__ = ("_kernel", "address")

    def __init__(self, kernel: EnclaveKernel) -> None:
        self._kernel = kernel
        self.address = public_key_address(PublicKey(kernel.signing_public_key))

    def sign_digest(self, digest: bytes) -> bytes:
        return self._kernel.sign(CHANNEL_STATE, digest)


@dataclass(slots=True)
class _Account:
    participant: str  # checksum address
    index: int
    free: int = 0
    locked: int = 0
    unconfirmed: int = 0
    nonce: int = 0
    exiting: bool = False
    #: The last settlement that changed this account's money (confirmed a deposit of its,
    #: credited it a pending payment, paid it): what its statements and the pending records
    #: of its payments name (module docstring, 3).
    epoch: int = 0
    #: Deposits reported (the contract's cumulative ``deposited``) and confirmed by a signed
    #: settlement (what its statements name): ``unconfirmed`` is the difference.
    deposited: int = 0
    confirmed: int = 0
    #: A payment credited here by a settlement that a claim made unlandable, already spent
    #: when the claim was reported: taken from the next money the account receives.
    debt: int = 0
    #: Its pull not confirmed yet (:meth:`VaultAccountsCode.prepare_pull`; 0: none) and its
    #: amount: counted in its statements' balance (with ``pull``, so that a force-settle
    #: pays it only if it was made), spendable once a settlement confirmed it.
    pull: int = 0
    pulling: int = 0
    #: Its plain transfers to the vault read from the chain (:meth:`VaultAccountsCode.
    #: read_transfers`): confirmed by a settlement anchoring the blocks they were read from
    #: (what its statements count as ``transferred``), and those no settlement anchored yet
    #: (spendable, like deposits, once one does).
    transferred: int = 0
    unanchored: int = 0

    def to_json(self) -> list[Any]:
        return [self.participant, self.index, str(self.free), str(self.locked),
                str(self.unconfirmed), self.nonce, self.exiting, self.epoch,
                str(self.deposited), str(self.confirmed), str(self.debt), self.pull,
                str(self.pulling), str(self.transferred), str(self.unanchored)]

    @classmethod
    def from_json(cls, v: list[Any]) -> _Account:
        return cls(str(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), bool(v[6]),
                   int(v[7]), int(v[8]), int(v[9]), int(v[10]),
                   *(int(x) for x in v[11:15]))


#: A pull's life (:class:`_Pull`): its statement handed out, waiting for the intent; the
#: host holds the intent; in a signed settlement; the chain's word on it, as reported.
_PREPARED, _AUTHORIZED, _SENT, _MADE, _FAILED = "prepared", "authorized", "sent", "made", "failed"


@dataclass(slots=True)
class _Pull:
    """A deposit to be pulled from ``participant`` (address key) inside a settlement."""

    participant: str
    amount: int
    deadline: int
    state: str = _PREPARED
    epoch: int = 0  # the settlement that carries it (state sent and after)
    #: The epoch its statement names (the account's when it was asked for): it is made only
    #: in a settlement that follows that epoch, so never with that statement voided.
    named: int = 0

    def to_json(self) -> list[Any]:
        return [self.participant, str(self.amount), self.deadline, self.state, self.epoch,
                self.named]

    @classmethod
    def from_json(cls, v: list[Any]) -> _Pull:
        return cls(str(v[0]), int(v[1]), int(v[2]), str(v[3]), int(v[4]),
                   int(v[5]) if len(v) > 5 else 0)


@dataclass(slots=True)
class _Resolved:
    """A pending payment credited off-chain by settlement ``epoch`` (to ``beneficiary``)."""

    epoch: int
    beneficiary: str
    amount: int
    exit: bool = False  # paid as an exit credit (the beneficiary was exiting)

    def to_json(self) -> list[Any]:
        return [self.epoch, self.beneficiary, str(self.amount), self.exit]

    @classmethod
    def from_json(cls, v: list[Any]) -> _Resolved:
        return cls(int(v[0]), str(v[1]), int(v[2]), bool(v[3]) if len(v) > 3 else False)


@dataclass(slots=True)
class _Pending:
    client: str
    provider: str
    amount: int
    client_nonce: int
    deadline: int
    revealed: bool = False

    def to_json(self) -> list[Any]:
        return [self.client, self.provider, str(self.amount), self.client_nonce,
                self.deadline, self.revealed]

    @classmethod
    def from_json(cls, v: list[Any]) -> _Pending:
        return cls(str(v[0]), str(v[1]), int(v[2]), int(v[3]), int(v[4]), bool(v[5]))


@dataclass(slots=True)
class _Held:
    channel: VaultChannel
    client: str
    provider: str
    attested: bool = False
    call: tuple[str, str] | None = None  # (client, idempotency key) of the request in flight


class VaultAccountsCode:
    """Vault-mode accounts, channels, statements and settlements, run inside the enclave.

    ``domain``: the A402Vault contract's EIP-712 domain; ``network``: its chain (CAIP-2),
    for the account clients sign their calls to; ``first_boot``: start from an empty
    ledger (otherwise every call waits for :meth:`restore_ledger`).
    """

    def __init__(self, kernel: EnclaveKernel, *, domain: PaymentDomain, network: str,
                 auth_window: int = api.DEFAULT_AUTH_WINDOW, first_boot: bool = False,
                 token: str | None = None) -> None:
        self._kernel = kernel
        self._signer = _Signer(kernel)
        self.address = self._signer.address
        self.domain = domain
        self.account = api.vault_account(network, "0x" + self.address.hex())
        self.window = auth_window
        self._accounts: dict[str, _Account] = {}
        self._next_index = 0
        self._claims = 0  # the claim chain as reported
        self._confirmed = 0  # the claim chain named by the last settlement signed
        self._epoch = 0
        #: The chain's ``lastEpoch`` as the host last reported it (:meth:`chain_epoch`):
        #: an account whose money rests on a later settlement pays nothing until it lands.
        self._landed = 0
        #: Payments resolved off-chain, by the settlement that did it (until it is known to
        #: have landed: a claim of one voids that settlement, see :meth:`claim_landed`).
        self._resolved: dict[tuple[bytes, int], _Resolved] = {}
        #: The first signed epoch that can never land (a claim is in its tail), and the
        #: accounts whose statements naming the voided epochs over-count a claimed payment.
        self._void_from: int | None = None
        self._bumped: set[str] = set()
        #: Exit credits a claim made unlandable, by account: cut from the carried exit credit.
        self._exit_cuts: dict[str, int] = {}
        self._paid_out = 0
        #: Deposits pulled inside settlements (:meth:`prepare_pull`), by id, until a
        #: settlement checks the chain's word on them; the next id; what confirmed ones
        #: brought in (the pulls' part of the conservation sum).
        self._pulls: dict[int, _Pull] = {}
        self._next_pull = 1
        self._pulled_in = 0
        #: Plain transfers (:meth:`read_transfers`): the token whose transfers are read (the
        #: first boot's, sealed with the ledger: a restart naming another is refused), the
        #: last header of the one chain of headers read so far, and what confirmed ones
        #: brought in (their part of the conservation sum).
        self.token = None if token is None else to_checksum(token)
        self._tip: Header | None = None
        self._transferred_in = 0
        self._settlements: dict[int, SignedSettlement] = {}
        self._statements: dict[str, SignedStatement] = {}
        self._held: dict[bytes, _Held] = {}
        self._pending: dict[tuple[bytes, int], _Pending] = {}
        self._consumed: set[tuple[str, str]] = set()
        #: Calls whose signature this code checked (:meth:`authenticate`), by a digest of
        #: everything the check read (:func:`_call_digest`): :meth:`request` takes its call's
        #: from here instead of recovering it again. Written without :attr:`lock` (the host
        #: API's check runs on its event loop): each operation on it is one C call
        #: (``OrderedDict`` set, ``pop``, ``popitem``), whole under the GIL.
        self._authenticated: OrderedDict[bytes, api.Authenticated] = OrderedDict()
        self._clock = 0
        #: Why no settlement can be signed any more (a claim made an earlier one unlandable).
        self._dead: str | None = None
        self._version = 0
        self._unsaved = False
        #: What the next :meth:`export_changes` writes: everything (``_full``: a first boot,
        #: or a change not tracked item by item — settlements, deposits, claims, exits), or
        #: only the items the hot path marked since the last export (accounts with their
        #: statements, channels, pending payments, consumed calls, pulls) and the scalars.
        self._export_id = ""  # the last export's: a journal entry names the one it follows
        self._full = True
        self._dirty_accounts: set[str] = set()
        self._dirty_channels: set[bytes] = set()
        self._dirty_pending: set[tuple[bytes, int]] = set()
        self._dirty_pulls: set[int] = set()
        self._new_consumed: list[tuple[str, str]] = []
        self._ready = first_boot
        #: This life (drawn at the first boot, sealed in the ledger): every client call is
        #: signed for its public id (:func:`~a402.vault_enclave.life_id`), so a new life,
        #: which has no record of what an earlier one paid, pays none of its calls.
        self._life = os.urandom(32) if first_boot else b""
        self.lock = threading.RLock()

    @classmethod
    def start(cls, enclave: Enclave, *, domain: PaymentDomain, network: str,
              auth_window: int = api.DEFAULT_AUTH_WINDOW, first_boot: bool = False,
              token: str | None = None) -> VaultAccounts:
        """Run this code in ``enclave``; the host gets only the :class:`VaultAccounts`.
        ``token``: the A402Vault's token, whose plain transfers it reads (none: it reads
        none)."""
        return enclave.start(lambda kernel: VaultAccounts(cls(
            kernel, domain=domain, network=network, auth_window=auth_window,
            first_boot=first_boot, token=token)), host_tunnels=True)

    # ---------------------------------------------------------------- helpers

    def _check_ready(self) -> None:
        if not self._ready:
            raise EnclaveError("ledger_needed", "restore the ledger first (or a first boot)")

    def _changed(self) -> None:
        if not self._unsaved:
            self._version += 1
            self._unsaved = True

    def _tick(self, now: float) -> int:
        self._clock = max(self._clock, int(now))
        return self._clock

    def _account(self, participant: str, *, create: bool = False) -> _Account:
        key = address_key(participant)
        found = self._accounts.get(key)
        if found is None:
            if not create:
                raise EnclaveError("unknown_participant", "no account for this participant")
            if self._next_index >= EXIT_CREDIT:
                raise EnclaveError("participants_exhausted", "no participant index is left")
            found = _Account(to_checksum(key), self._next_index)
            self._next_index += 1
            self._accounts[key] = found
            self._dirty_accounts.add(key)
            self._changed()
        return found

    def _active(self, participant: str) -> _Account:
        account = self._account(participant)
        if account.exiting:
            raise EnclaveError("participant_exiting",
                               "this participant is force-settling: nothing moves its money")
        return account

    def _sign_statements(self, accounts: Iterable[_Account]) -> tuple[SignedStatement, ...]:
        """A new statement for each changed account (nonce + 1, the current epoch)."""
        out = []
        for account in sorted({a.index: a for a in accounts}.values(), key=lambda a: a.index):
            if account.debt:  # a claimed payment credited here by a voided settlement
                taken = min(account.debt, account.free)
                account.free -= taken
                account.debt -= taken
            account.nonce += 1
            self._dirty_accounts.add(address_key(account.participant))
            st = BalanceStatement(account.participant, account.index,
                                  account.free + account.pulling, account.locked,
                                  account.epoch, account.nonce, account.confirmed,
                                  account.pull, account.pulling, account.transferred)
            signed = SignedStatement(
                st, self._kernel.sign(VAULT_ACCOUNTS,
                                      statement_digest(self.domain, st, self.ledger)))
            self._statements[address_key(account.participant)] = signed
            out.append(signed)
        self._changed()
        return tuple(out)

    # ---------------------------------------------------------------- reading

    def pulling(self, participant: str) -> tuple[int, int]:
        """``(pull id, amount)`` of ``participant``'s pull not confirmed yet (zeros: none)."""
        a = self._accounts.get(address_key(participant))
        return (0, 0) if a is None else (a.pull, a.pulling)

    def balance(self, participant: str) -> tuple[int, int, int]:
        """``(free, locked, unconfirmed)`` of ``participant`` (zeros if unknown;
        ``unconfirmed``: its deposits and plain transfers no settlement confirmed yet)."""
        a = self._accounts.get(address_key(participant))
        return (0, 0, 0) if a is None else (a.free, a.locked, a.unconfirmed + a.unanchored)

    def index_of(self, participant: str) -> int:
        return self._account(participant).index

    def statement(self, participant: str) -> SignedStatement:
        """The latest statement signed for ``participant`` (what the escape hatch needs)."""
        self._check_ready()
        key = address_key(participant)
        found = self._statements.get(key)
        if found is None:
            account = self._accounts.get(key)
            if account is None:
                raise EnclaveError("no_statement", "no statement was signed for this participant")
            # A participant whose deposits no settlement confirmed yet: its statement counts
            # none of them (deposited 0), and with it the contract pays them all back.
            (found,) = self._sign_statements([account])
        return found

    def totals(self) -> dict[str, int]:
        """Conservation: deposits + pulled + transferred + unanchored = free + locked +
        unconfirmed + pending + paid out − debt (``pulled``: the pulls a settlement
        confirmed; ``pulling``, those not confirmed yet, are in no balance but their own
        account's statements; ``transferred``: the plain transfers a settlement confirmed;
        ``unconfirmed`` counts those read but not anchored yet, ``unanchored``, with the
        deposits not confirmed yet)."""
        return {
            "pulled": self._pulled_in,
            "transferred": self._transferred_in,
            "unanchored": sum(a.unanchored for a in self._accounts.values()),
            "pulling": sum(a.pulling for a in self._accounts.values()),
            "free": sum(a.free for a in self._accounts.values()),
            "locked": sum(a.locked for a in self._accounts.values()),
            "unconfirmed": sum(a.unconfirmed + a.unanchored for a in self._accounts.values()),
            "pending": sum(p.amount for p in self._pending.values()),
            "paid_out": self._paid_out,
            "debt": sum(a.debt for a in self._accounts.values()),
        }

    def participants(self) -> list[str]:
        """Every participant with an account, by index (for the operator's status)."""
        return [a.participant for a in sorted(self._accounts.values(), key=lambda a: a.index)]

    def channels(self) -> list[tuple[bytes, str, str, Status, int]]:
        """Every channel held: ``(id, client, provider, status, client's balance in it)``
        (for the operator's status; no money moves)."""
        return [(cid, to_checksum(h.client), to_checksum(h.provider), h.channel.status,
                 h.channel.state.client_balance) for cid, h in self._held.items()]

    def channels_of(self, client: str, provider: str) -> list[tuple[bytes, Status, int, bytes]]:
        """``client``'s channels with ``provider``: ``(id, status, client's balance in it,
        provider key)`` (what a paid call looks for; no money moves, nothing is marked)."""
        c, p = address_key(client), address_key(provider)
        return [(cid, h.channel.status, h.channel.state.client_balance,
                 h.channel.terms.provider_key)
                for cid, h in self._held.items() if h.client == c and h.provider == p]

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def life_id(self) -> str:
        """This life's public name: every client call must be signed for it."""
        return life_id(self._life)

    @property
    def ledger(self) -> bytes:
        """This ledger life's 16-byte name (the public life id): every settlement, every
        statement of epoch > 0 and every pending record names it, and the contract pins the
        first landed settlement's, so a ledger the host deleted and started afresh (a first
        boot under the same key) signs nothing the contract takes (review S9-5)."""
        return bytes.fromhex(self.life_id[2:])

    @property
    def claim_state(self) -> int:
        """The claim chain as reported so far (the host resumes its claim reports from here)."""
        return self._claims

    def deposited(self, participant: str) -> int:
        """The participant's cumulative deposits as reported so far (the host resumes its
        deposit reports from here: the contract's ``Deposited.deposited``)."""
        a = self._accounts.get(address_key(participant))
        return 0 if a is None else a.deposited

    def settlement(self, epoch: int) -> SignedSettlement:
        """Settlement ``epoch`` as signed (to submit again: it is good once on-chain)."""
        found = self._settlements.get(epoch)
        if found is None:
            raise EnclaveError("unknown_settlement", f"no settlement {epoch} was signed")
        return found

    def settlement_after(self, epoch: int) -> SignedSettlement:
        """The settlement to land after ``epoch`` (the chain's ``lastEpoch``): the one signed
        to follow it, the latest if a replacement superseded an earlier one."""
        found = [s for s in self._settlements.values() if s.prev == epoch]
        if not found:
            raise EnclaveError("unknown_settlement", f"no settlement follows epoch {epoch}")
        return max(found, key=lambda s: s.epoch)

    # ---------------------------------------------------------------- deposits

    def credit_deposit(self, participant: str, amount: int, deposited_after: int) -> bool:
        """The host reports ``Deposited(participant, amount, deposited_after)``, the
        participant's cumulative total on-chain after it; counted once, in order per
        participant, as *unconfirmed* until the next settlement, which confirms the total
        (module docstring). Returns False for a deposit reported already."""
        self._check_ready()
        if not 0 < amount <= MAX_PAYOUT or deposited_after > MAX_PAYOUT:
            raise EnclaveError("bad_deposit", "a deposit is positive and fits in uint96")
        account = self._accounts.get(address_key(participant))
        known = 0 if account is None else account.deposited
        if deposited_after <= known:
            return False
        if deposited_after != known + amount:
            raise EnclaveError(
                "deposit_out_of_order",
                f"a deposit bringing the total to {deposited_after} does not follow the "
                f"{known} reported here: report each participant's deposits in order")
        account = self._account(participant, create=True)
        account.deposited = deposited_after
        account.unconfirmed += amount
        self._full = True
        self._changed()
        return True

    # ---------------------------------------------------------------- plain transfers

    @property
    def transfer_tip(self) -> tuple[int, bytes] | None:
        """``(number, hash)`` of the last header read (:meth:`read_transfers`; None: none):
        the host's next headers start at the block after it."""
        return None if self._tip is None else (self._tip.number, self._tip.hash)

    def read_transfers(self, headers: Sequence[bytes],
                       receipts: Sequence[tuple[int, int, Sequence[bytes]]]) -> int:
        """The host hands the chain's headers after the last one read (all of them, each the
        parent of the next; the first ever may be any block) and, for transactions of those
        blocks, ``(block, txIndex, trie nodes)``: the receipt proof to that block's
        ``receiptsRoot``. Each plain transfer of :attr:`token` to the vault in those
        receipts (the contract's rule: :func:`~a402.evm.receipts.plain_transfers`) is
        credited to its sender, *unanchored*: in no statement, payment or payout until a
        settlement is signed whose ``anchor`` is a header of this chain at or after its
        block (:meth:`settle`), which lands only if that header is the chain's own (contract
        docs, "Plain transfers"). Returns how many were credited.

        Safety argument: the headers link by their hashes, so the last one's vouches for
        all, and a settlement carries it; every receipt is read through its proof, so the
        host cannot invent a transfer, change its sender or amount, or give a chain of its
        own, without making the settlement that would confirm it (and every later one)
        fail. The chain only grows (one chain for the ledger's life: its host reads final
        blocks only; a reorganisation past the last header read stops the reading for good,
        which the host's status reports, and leaves later transfers to their senders' exits),
        so every header and transfer is read once: no transfer is credited twice, and any
        later anchor vouches for every earlier credit (a replacement settlement carries them).
        A transfer the host does not hand over is not credited: its sender's exit pays it
        back (``proveTransfer``). A sender that is exiting, or an amount above a payout's
        uint96, is left to that escape too; a transfer of 0 is ignored. All or nothing: one
        bad item refuses the whole report. Block 0 is never read (review s17b-1)."""
        self._check_ready()
        if self.token is None:
            raise EnclaveError("no_token", "this vault reads no plain transfers (no token)")
        if not headers or len(headers) > MAX_HEADERS or len(receipts) > MAX_HEADERS:
            raise EnclaveError("bad_transfers",
                               f"between 1 and {MAX_HEADERS} headers and receipts a report")
        size = sum(len(h) for h in headers) + sum(len(n) for r in receipts for n in r[2])
        if size > MAX_REPORT_BYTES:
            raise EnclaveError("bad_transfers", f"a report holds at most {MAX_REPORT_BYTES} "
                               "bytes of headers and proofs")
        try:
            chain = link_headers(headers, after=self._tip)
            # Block 0 is no anchor (review s17b-1: "anchor 0" once meant none), and an anchor
            # is a uint64.
            if chain[0].number == 0 or chain[-1].number >> 64:
                raise ProofError("a header numbered 0 or beyond uint64")
            by_number = {h.number: h for h in chain}
            found: list[PlainTransfer] = []
            seen: set[tuple[int, int]] = set()
            for block, tx_index, nodes in receipts:
                header = by_number.get(block)
                if header is None or (block, tx_index) in seen:
                    raise ProofError(f"receipt {block}/{tx_index}: not of a header reported "
                                     "with it, or twice")
                seen.add((block, tx_index))
                found += plain_transfers(proven_receipt(header, tx_index, nodes),
                                         token=self.token,
                                         to="0x" + bytes(self.domain.verifying_contract).hex(),
                                         block=block, tx_index=tx_index)
        except (ProofError, TypeError, ValueError) as e:
            raise EnclaveError("bad_transfers", str(e)) from None
        credited = 0
        for t in found:
            if not 0 < t.amount <= MAX_PAYOUT:  # nothing, or the escape's (no account made)
                continue
            account = self._account(t.sender, create=True)
            if account.exiting:
                continue
            account.unanchored += t.amount
            self._dirty_accounts.add(address_key(account.participant))
            credited += 1
        self._tip = chain[-1]  # a journal entry carries it (and the accounts credited)
        self._changed()
        return credited

    # ---------------------------------------------------------------- pulled deposits

    def prepare_pull(self, participant: str, amount: int, deadline: int, *, now: float
                     ) -> tuple[int, SignedStatement]:
        """A deposit pulled inside a settlement (contract docs, "Pulled deposits"), step one:
        ``participant`` will let a settlement take ``amount`` from its wallet until
        ``deadline``. Returns the pull's id and the participant's new statement, which counts
        the amount with that id (a force-settle pays it only if the pull was made). The
        participant signs its authorization (the token's EIP-3009, nonce
        :func:`~a402.crypto.vault_messages.pull_nonce`) only once it holds that statement:
        no pull can take its money without a statement that counts it, whatever the host
        withholds later.

        One pull per account at a time: a new one replaces one not in any settlement yet (its
        id is never used again, so its bit can never be set); one in a settlement that no
        later settlement has checked yet refuses it (``pull_outstanding``)."""
        self._check_ready()
        clock = self._tick(now)
        if not 0 < amount <= MAX_PAYOUT:
            raise EnclaveError("bad_amount", "a pull is positive and fits in uint96")
        if not clock + PULL_MARGIN <= deadline < 1 << 64:
            raise EnclaveError("bad_deadline",
                               f"a pull's deadline is at least {PULL_MARGIN} s ahead")
        if self._next_pull >= PULL_VOID:
            raise EnclaveError("pulls_exhausted", "no pull id is left")
        self._account(participant, create=True)
        account = self._active(participant)
        if account.pull:
            earlier = self._pulls[account.pull]
            if earlier.state not in (_PREPARED, _AUTHORIZED):
                raise EnclaveError("pull_outstanding", (
                    f"pull {account.pull} is in settlement {earlier.epoch}; the next "
                    "settlement checks it, then another can be asked for"))
            del self._pulls[account.pull]
            self._dirty_pulls.add(account.pull)
        pull = self._next_pull
        self._next_pull += 1
        self._pulls[pull] = _Pull(address_key(account.participant), amount, deadline,
                                  named=account.epoch)
        self._dirty_pulls.add(pull)
        account.pull, account.pulling = pull, amount
        (signed,) = self._sign_statements([account])  # marks the account
        return pull, signed

    def pull_authorized(self, pull: int) -> None:
        """The host holds the participant's signed intent for ``pull``: the next settlement
        makes it. (Said falsely, the pull is skipped on-chain, then dropped.)"""
        self._check_ready()
        found = self._pulls.get(pull)
        if found is None or found.state not in (_PREPARED, _AUTHORIZED):
            raise EnclaveError("unknown_pull", f"pull {pull} is not waiting for its intent")
        found.state = _AUTHORIZED
        self._dirty_pulls.add(pull)
        self._changed()

    def pull_landed(self, pull: int, made: bool) -> None:
        """The chain's word on ``pull`` once the settlement carrying it landed (the host read
        ``A402Vault.pulled``): the next settlement proves it (a pull check) and, made,
        credits the amount, spendable from then on; not made, drops it. A host that reports
        it wrongly makes that settlement unlandable (``PullNotMade`` / ``PullMade``), and
        every later one: nothing is credited that did not arrive."""
        self._check_ready()
        found = self._pulls.get(pull)
        if found is None or found.state not in (_SENT, _MADE, _FAILED):
            raise EnclaveError("unknown_pull", f"pull {pull} is in no settlement")
        if found.epoch > self._landed:
            raise EnclaveError("not_landed", f"settlement {found.epoch} has not landed")
        if found.state == _SENT:
            found.state = _MADE if made else _FAILED
            self._dirty_pulls.add(pull)
            self._changed()
        elif (found.state == _MADE) != made:
            raise EnclaveError("pull_reported", f"pull {pull} was reported the other way")

    def pull_terms(self, pull: int) -> tuple[str, int, int]:
        """``(participant, amount, deadline)`` of a pull waiting for its intent."""
        found = self._pulls.get(pull)
        if found is None or found.state not in (_PREPARED, _AUTHORIZED):
            raise EnclaveError("unknown_pull", f"pull {pull} is not waiting for its intent")
        return self._accounts[found.participant].participant, found.amount, found.deadline

    @property
    def pulls_due(self) -> bool:
        """Whether the next settlement has a pull to make or to check."""
        return any(p.state in (_AUTHORIZED, _MADE, _FAILED) for p in self._pulls.values())

    def pulls_sent(self, epoch: int) -> list[int]:
        """The pulls settlement ``epoch`` carries whose chain word is not reported yet."""
        return sorted(k for k, p in self._pulls.items() if p.state == _SENT and p.epoch <= epoch)

    def _pulls_for(self, clock: int) -> tuple[list[int], list[int], list[_Account]]:
        """For the next settlement: the pulls to make (intent held, deadline far enough,
        participant not exiting), the pulls to check, and the accounts whose pull expired
        unsent (dropped here: never in a settlement, its bit can never be set)."""
        sending: list[int] = []
        checking: list[int] = []
        expired: list[_Account] = []
        for k, p in sorted(self._pulls.items()):
            account = self._accounts[p.participant]
            if p.state in (_MADE, _FAILED):
                checking.append(k)
            elif p.state in (_PREPARED, _AUTHORIZED) and (
                    account.exiting or p.deadline < clock + PULL_MARGIN):
                del self._pulls[k]
                account.pull, account.pulling = 0, 0
                if not account.exiting:  # its statement counting it is self-correcting
                    expired.append(account)
            elif p.state == _AUTHORIZED and len(sending) < MAX_PULLS:
                sending.append(k)
        return sending, checking, expired

    # ---------------------------------------------------------------- settlement

    def settle(self, payouts: Sequence[tuple[str, int]], *, now: int) -> Settled:
        """Sign the next settlement: first resolve the pending payments whose deadline the
        clock (advanced to ``now``) has passed and confirm every reported deposit, then
        debit and pay each ``(participant, amount)`` — to the participant's own address,
        never elsewhere (so the host choosing who is paid out when moves nobody's money to
        anyone else). Refused if it would change nothing.

        After a claim made signed settlements unlandable (:meth:`claim_landed`), this is
        their *replacement*: it follows the last epoch before them (``prev_epoch``), takes a
        new epoch above every one signed (the contract voids those it skips), and carries all
        their payouts, confirmations and resolutions, plus a zero payout to every account
        that had been credited the claimed payment; every account whose statements name a
        voided epoch gets a new one (contract docs, "Replacing a settlement")."""
        self._check_ready()
        if self._dead is not None:
            raise EnclaveError("settlement_dead", self._dead)
        clock = self._tick(now)
        wanted: dict[str, int] = {}
        for participant, amount in payouts:
            key = address_key(participant)
            if key in wanted:
                raise EnclaveError("bad_payouts", "a participant appears twice")
            if not 0 < amount <= MAX_PAYOUT:
                raise EnclaveError("bad_payouts", "a payout is positive and fits in uint96")
            wanted[key] = amount
        if self._epoch + 1 > MAX_EPOCH:
            raise EnclaveError("epochs_exhausted", "no settlement epoch is left")
        # Check before changing anything: payouts come from free balances, confirmed ones
        # included (they are confirmed by this very settlement, which lands atomically).
        resolved = self._resolvable(clock)
        for key, amount in wanted.items():
            account = self._active(key)
            if amount > self._room(account, resolved):
                raise EnclaveError(
                    "debt_outstanding" if amount <= self._room(account, resolved, debt=False)
                    else "insufficient_balance",
                    f"{amount} > {self._room(account, resolved)} payable to {key} (debt "
                    f"{account.debt})")
        touched = [a for a in self._accounts.values() if a.unconfirmed or a.unanchored]
        voided = self._voided()
        sending, checking, expired = self._pulls_for(clock)
        if not (wanted or touched or resolved or voided or sending or checking):
            if expired:
                self._full = True
                self._sign_statements(expired)
            raise EnclaveError("nothing_to_settle", "no payout, no deposit, no payment due")
        self._full = True  # a settlement changes much: the next export is whole
        prev = self._epoch if not voided else voided[0].prev
        # Every account whose statements name a voided epoch gets one naming this settlement
        # (the contract refuses statements naming a voided epoch).
        renamed = [a for a in self._accounts.values() if voided and a.epoch >= voided[0].epoch]
        self._epoch += 1
        not_before = max([self._pending[k].deadline for k in resolved]
                         + [v.not_before for v in voided], default=0)
        exits: dict[str, int] = {}
        touched += self._resolve(resolved, exits) + renamed
        confirmed: dict[str, _Account] = {}
        # Plain transfers are confirmed by the anchor: the last header read, whose chain holds
        # every block a transfer was read from (this settlement's and any it replaces).
        anchored = any(v.anchor_hash != bytes(32) for v in voided)
        for account in touched:
            if account.unconfirmed:
                account.free += account.unconfirmed
                account.confirmed += account.unconfirmed
                account.unconfirmed = 0
                confirmed[address_key(account.participant)] = account
            if account.unanchored:
                account.free += account.unanchored
                account.transferred += account.unanchored
                self._transferred_in += account.unanchored
                account.unanchored = 0
                anchored = True
        self._confirmed = self._claims
        amounts: dict[str, int] = {}
        for v in voided:  # carried over: already debited when first signed
            for payee, index, amount in unpack_payouts(v.payouts):
                key = address_key("0x" + payee.hex())
                into = exits if index & EXIT_CREDIT else amounts
                into[key] = into.get(key, 0) + amount
            # and their confirmations: a payout carried without the confirmation of the
            # deposit behind it would land even if the host invented that deposit
            for i in range(0, len(v.confirms), 32):
                key = address_key("0x" + v.confirms[i:i + 20].hex())
                confirmed.setdefault(key, self._accounts[key])
        pulls: dict[int, PullRecord] = {}
        checks: dict[int, bool] = {}
        for v in voided:  # their pulls were never made (they never land): made here instead
            for carried in unpack_pulls(v.pulls):
                pulls[carried.pull] = carried
            for k, made in unpack_pull_checks(v.pull_checks):  # the credits they justified
                checks[k] = made
        for k in sending:
            pull = self._pulls[k]
            account = self._accounts[pull.participant]
            pulls[k] = PullRecord(account.participant, account.index, pull.amount, k,
                                  pull.deadline)
        for k in list(pulls):
            held = self._pulls.get(k)
            if held is not None and held.named <= prev:
                held.state, held.epoch = _SENT, self._epoch
                continue
            # Its statement names an epoch this replacement voids (review s15-2): made now,
            # the pull would be counted by no usable statement the participant surely holds.
            # Dropped instead, its id never used again (its bit can never be set).
            del pulls[k]
            if held is not None:
                del self._pulls[k]
                account = self._accounts[held.participant]
                if account.pull == k:
                    account.pull, account.pulling = 0, 0
                touched.append(account)
        for k in checking:
            pull = self._pulls.pop(k)
            account = self._accounts[pull.participant]
            if account.pull == k:
                account.pull, account.pulling = 0, 0
            if account.exiting:  # its exit pays the pull iff it was made (statement docs)
                continue
            checks[k] = pull.state == _MADE
            if pull.state == _MADE:
                account.free += pull.amount
                self._pulled_in += pull.amount
            touched.append(account)
        for key, owed in self._exit_cuts.items():  # an exit credit a claim paid already
            exits[key] = exits.get(key, 0) - min(owed, exits.get(key, 0))
        for key in self._bumped:
            # Its over-credit paid out by a voided settlement: the replacement pays that much
            # less (it was already paid by the claim), down to a zero payout, which still moves
            # its lane past its statements naming the voided epochs.
            account = self._accounts[key]
            cut = min(account.debt, amounts.get(key, 0))
            amounts[key] = amounts.get(key, 0) - cut
            account.debt -= cut
            self._paid_out -= cut
        for key, amount in wanted.items():
            account = self._accounts[key]
            account.free -= amount
            self._paid_out += amount
            amounts[key] = amounts.get(key, 0) + amount
        if any(a > MAX_PAYOUT for a in (*amounts.values(), *exits.values())):
            raise EnclaveError("bad_payouts", "a carried payout does not fit in uint96")
        records = []
        for key, amount in amounts.items():
            account = self._accounts[key]
            touched.append(account)
            records.append((account.participant, account.index, amount))
        for key, amount in exits.items():  # no lane moves, no statement counts them
            if amount:
                account = self._accounts[key]
                records.append((account.participant, account.index | EXIT_CREDIT, amount))
        for account in touched:  # their money now rests on this settlement
            account.epoch = self._epoch
        for r in self._resolved.values():  # a claim of a carried resolution voids this one
            if voided and r.epoch >= voided[0].epoch:
                r.epoch = self._epoch
        packed = pack_payouts(sorted(records, key=lambda r: r[1]))
        confirms = pack_confirms(sorted((a.participant, a.confirmed) for a in confirmed.values()))
        packed_pulls = pack_pulls(pulls[k] for k in sorted(pulls))
        packed_checks = pack_pull_checks(sorted(checks.items()))
        anchor, anchor_hash = 0, bytes(32)
        if anchored and self._tip is not None and self.token is not None:
            anchor = self._tip.number
            anchor_hash = anchor_commitment(self._tip.hash, self.token)
        digest = settlement_digest(self.domain, self._epoch, packed, self._confirmed, not_before,
                                   prev_epoch=prev, packed_confirms=confirms,
                                   packed_pulls=packed_pulls, packed_pull_checks=packed_checks,
                                   ledger=self.ledger, anchor=anchor, anchor_hash=anchor_hash)
        signed = SignedSettlement(self._epoch, packed, self._confirmed,
                                  self._kernel.sign(VAULT_ACCOUNTS, digest), not_before, prev,
                                  confirms, self.ledger, packed_pulls, packed_checks, anchor,
                                  anchor_hash)
        self._settlements[self._epoch] = signed
        self._void_from, self._bumped, self._exit_cuts = None, set(), {}
        return Settled(signed, self._sign_statements([*touched, *expired]))

    def _room(self, account: _Account, resolved: Sequence[tuple[bytes, int]], *,
              debt: bool = True) -> int:
        """The most :meth:`settle` pays ``account`` (the check it makes, and
        :meth:`payable`'s): its free balance, its deposits this settlement confirms, the
        pending payments it resolves to it, less its debt (with ``debt``)."""
        key = address_key(account.participant)
        credit = account.unconfirmed + sum(
            self._pending[k].amount for k in resolved if self._beneficiary(k) == key)
        return account.free + credit - (account.debt if debt else 0)

    def payable(self, participant: str, now: int) -> tuple[int, int]:
        """``(most, debt)``: the largest payout to ``participant`` that :meth:`settle` at
        ``now`` signs (the very check it makes; 0 for a participant unknown or exiting), and
        what the participant owes (a claimed payment a voided settlement had credited it and
        it had spent, taken from its next money). Reads only: the host filters a batch with
        it, so that one payee's debt refuses that payee's payout, not everybody's."""
        self._check_ready()
        account = self._accounts.get(address_key(participant))
        if account is None or account.exiting:
            return 0, 0 if account is None else account.debt
        resolved = self._resolvable(max(self._clock, int(now)))
        return max(0, self._room(account, resolved)), account.debt

    def payments_due(self, now: float) -> bool:
        """Whether a pending payment's deadline has passed at ``now`` (or at this code's
        clock, if ahead): what :meth:`settle` at ``now`` would resolve. A payment stays
        pending for its whole claim window: the host asks for a settlement only once one is
        due, not whenever one is pending (review s16-rev2-2: that signed one every round
        and no pull waited its window)."""
        return bool(self._resolvable(max(self._clock, int(now))))

    @property
    def replacement_due(self) -> bool:
        """True while signed settlements are voided (a claim landed before them) and their
        replacement is not signed yet: the host's next round asks :meth:`settle` for it."""
        return bool(self._voided())

    def _voided(self) -> list[SignedSettlement]:
        """The signed settlements that can never land, oldest first (see :meth:`claim_landed`):
        the line from ``_void_from`` up to the last one signed."""
        if self._void_from is None:
            return []
        line = []
        epoch = self._epoch
        while epoch >= self._void_from and epoch in self._settlements:
            line.append(self._settlements[epoch])
            epoch = self._settlements[epoch].prev
        return list(reversed(line))

    def _resolvable(self, clock: int) -> list[tuple[bytes, int]]:
        return [k for k, p in self._pending.items() if p.deadline < clock]

    def _beneficiary(self, key: tuple[bytes, int]) -> str:
        p = self._pending[key]
        return p.provider if p.revealed else p.client

    def _resolve(self, keys: Sequence[tuple[bytes, int]], exits: dict[str, int]
                 ) -> list[_Account]:
        """Credit each pending payment past its deadline: to the provider if it revealed,
        back to the client if not (its channel then ends: its machine stays PENDING).

        A beneficiary whose exit was reported (review S9-6) is credited nothing here: its
        recorded statement predates the credit and no settlement may pay its frozen lane,
        so δ goes into ``exits`` and this settlement pays it as an exit credit (paid at
        once, counted by none of its statements)."""
        touched = []
        for key in keys:
            p = self._pending.pop(key)
            beneficiary = self._beneficiary_of(p)
            account = self._accounts[beneficiary]
            if account.exiting:
                exits[beneficiary] = exits.get(beneficiary, 0) + p.amount
                self._paid_out += p.amount
                self._resolved[key] = _Resolved(self._epoch, beneficiary, p.amount, exit=True)
            else:
                account.free += p.amount
                self._resolved[key] = _Resolved(self._epoch, beneficiary, p.amount)
                touched.append(account)
            if not p.revealed:  # the machine stays PENDING: the channel ends here
                touched += self._end_channel(key[0], exclude=p.amount)
        return touched

    @staticmethod
    def _beneficiary_of(p: _Pending) -> str:
        return p.provider if p.revealed else p.client

    # ---------------------------------------------------------------- channels

    def open_channel(self, client: str, provider: str, provider_key: bytes, capacity: int,
                     *, lock_timeout: float) -> tuple[bytes, tuple[SignedStatement, ...]]:
        """Open a channel of ``client``'s to ``provider`` inside the enclave (no transaction):
        ``capacity`` moves from the client's confirmed free balance to its locked. Pays
        nobody (σ_U needs a call the client signed, :meth:`request`). The provider gets an
        account if it has none: its earnings accrue there."""
        self._check_ready()
        account = self._active(client)
        if not 0 < capacity <= account.free:
            raise EnclaveError("insufficient_balance",
                               f"capacity {capacity} > free {account.free}")
        if lock_timeout <= 0:
            raise EnclaveError("bad_request", "lock_timeout must be positive")
        payee = self._account(provider, create=True)
        if payee.exiting:
            raise EnclaveError("participant_exiting", "the provider is force-settling")
        try:
            terms = ChannelTerms(account.participant, self.address, payee.participant,
                                 provider_key, capacity, os.urandom(32), vault_mode=True)
            channel = VaultChannel(terms, self.domain, self._signer, lock_timeout=lock_timeout)
        except ValueError as e:
            raise EnclaveError("bad_terms", str(e)) from None
        account.free -= capacity
        account.locked += capacity
        self._held[channel.channel_id] = _Held(channel, address_key(client),
                                               address_key(provider))
        self._dirty_channels.add(channel.channel_id)
        return channel.channel_id, self._sign_statements([account])

    def _get(self, channel_id: bytes) -> _Held:
        """The channel, marked for the next export (whoever gets it may step its machine)."""
        held = self._held.get(channel_id)
        if held is None:
            raise EnclaveError("unknown_channel", "no such vault-mode channel")
        self._dirty_channels.add(channel_id)
        return held

    def terms(self, channel_id: bytes) -> ChannelTerms:
        return self._get(channel_id).channel.terms

    def channel_status(self, channel_id: bytes) -> Status:
        return self._get(channel_id).channel.status

    def has_paid(self, client: str, key: str) -> bool:
        """Whether ``client``'s signed call ``key`` has paid (σ_U was signed for it): the
        host answers a retry of it so (``replayed_call``) before it looks for a channel."""
        return (address_key(client), key) in self._consumed

    def last_ack(self, channel_id: bytes) -> Ack | None:
        """The channel's ACK of its last completed request (no secret: it went, or goes, to
        the provider): owed again by a host that binds the channel to a new tunnel (its
        process, or the one before it, may have ended before the ACK left)."""
        held = self._held.get(channel_id)
        return None if held is None else held.channel.last_ack()

    def acks_owed(self) -> list[tuple[bytes, str, str, Ack]]:
        """``(channel, client, provider, ACK)`` for each channel whose last ACK may still
        matter to its provider: the payment it acknowledges is pending (within its claim
        window). A host that starts re-sends them (its process, or the one before it, may
        have ended before they left); older ACKs are moot (settled or claimed)."""
        owed = []
        for channel_id, held in self._held.items():
            ack = held.channel.last_ack()
            if ack is not None and (channel_id, ack.request_id) in self._pending:
                owed.append((channel_id, held.client, held.provider, ack))
        return owed

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        """OPEN: as in standard mode, σ_U only once the tunnel's attested peer (verified in
        the handshake, not as the host says) holds the channel's provider key."""
        held = self._get(channel_id)
        try:
            peer = self._kernel.channel_peer(handle)
        except TeeError as e:
            raise EnclaveError("unknown_tunnel", str(e)) from None
        if peer.signing_key != b"\x02" + held.channel.terms.provider_key:
            raise EnclaveError("provider_not_attested",
                               "the tunnel's attested peer does not hold the provider key")
        held.attested = True
        return self._kernel.sign(
            TUNNEL_BINDING, binding_digest(self._kernel.channel_binding(handle), channel_id))

    def authenticate(self, call: SignedCall, now: float, window: int) -> api.Authenticated:
        """The host API's check of a paid call (:func:`~a402.wire.vault_api.verify_request`:
        signed by the named client for this vault and life, within ``window`` of ``now``;
        :class:`~a402.wire.vault_api.AuthError` otherwise), made here so that its signature
        is recovered once: the enclave keeps what it recovered, keyed by a digest of
        everything the check read (:func:`_call_digest`), and :meth:`request`'s own check of
        the same call takes it from there (its freshness checked again, against its own
        ``now`` and window). As :meth:`~a402.vault_enclave.VaultEnclaveCode.authenticate` in
        standard mode: the memory is the enclave's, the host can neither add to it nor change
        it, so a call found there was verified here, byte for byte. Reads nothing that
        changes once the ledger is restored (the account, the life): the host calls it
        without :attr:`lock` (:class:`VaultAccounts`)."""
        life = self.life_id
        signed = api.verify_request(call.headers, self.account, call.method, call.path,
                                    call.body, life=life, now=now, window=window)
        kept = self._authenticated
        kept[_call_digest(life, call)] = signed
        while len(kept) > AUTHENTICATED_KEPT:
            with contextlib.suppress(KeyError):  # emptied meanwhile by request's pops
                kept.popitem(last=False)
        return signed

    def _verified(self, call: SignedCall, now: float) -> api.Authenticated:
        """``call``'s signer as :meth:`authenticate` found it (taken: used once), fresh
        within this code's window of ``now``; else its signature checked now."""
        life = self.life_id
        known = self._authenticated.pop(_call_digest(life, call), None)
        if known is not None:
            if abs(now - known.timestamp) > self.window:
                raise api.AuthError(api.STALE_REQUEST, f"timestamp {known.timestamp} is more "
                                    f"than {self.window}s away")
            return known
        return api.verify_request(call.headers, self.account, call.method, call.path,
                                  call.body, life=life, now=now, window=self.window)

    def chain_epoch(self, landed: int) -> None:
        """The host read ``lastEpoch`` = ``landed`` on the chain (it only grows here).

        Liveness, not safety (issue 13, review s14-rev12): a pending record names the
        client account's epoch, and ``claimPayment`` pays only once that settlement landed,
        so a record naming a settlement the host withholds pays its provider nothing while
        the client can leave with an earlier statement. The provider's enclave therefore
        reveals only for a record whose epoch it reads landed (:mod:`a402.provider_enclave`),
        whatever this host says; here, :meth:`request` refuses, before anything is locked,
        a call of a client whose account's epoch is past what the host reports landed, so
        an honest vault never hands out a record its providers refuse. A host that reports
        an epoch too high only gets its clients' AUTHs refused by the providers (each
        payment then goes back to its client after the claim window); too low, their calls
        refused here. Not sealed: the host reports it again when it starts."""
        self._landed = max(self._landed, landed)

    def request(self, channel_id: bytes, call: SignedCall, amount: int, now: float) -> Exec:
        """Step ① for a call the channel's client signed (``POST /v1/invoke`` to this
        vault, fresh within the auth window of ``now``, ``maxPrice ≥ amount``, ``payTo``
        the channel's provider); each ``(client, idempotency key)`` pays at most once, and
        only once the settlement its account's money rests on has landed
        (:meth:`chain_epoch`)."""
        self._check_ready()
        held = self._get(channel_id)
        payer = self._active(held.client)
        if (call.method, call.path) != ("POST", INVOKE_PATH):
            raise EnclaveError("wrong_call", f"not a signed POST {INVOKE_PATH}")
        try:
            signed = self._verified(call, now)  # recovered once (:meth:`authenticate`)
            invoke = api.InvokeRequest.from_json(jsonstrict.loads_object(call.body))
        except api.AuthError as e:
            raise EnclaveError(e.reason, e.detail) from None
        except (ValueError, WireError) as e:
            raise EnclaveError("bad_request", str(e)) from None
        client = address_key(signed.client)
        if client != held.client:
            raise EnclaveError("not_your_channel", "the channel serves another client")
        once = (client, invoke.idempotency_key)
        if once in self._consumed:
            raise EnclaveError("replayed_call", "this call has paid already")
        if invoke.max_price < amount:
            raise EnclaveError("price_above_maximum",
                               f"{amount} > the call's maximum {invoke.max_price}")
        # S9-3: the host opens channels (the client signs none) and relays every call; the
        # call itself names whom the client pays, so the host cannot spend it at a
        # provider of its own choosing.
        if invoke.pay_to is None:
            raise EnclaveError("payee_unsigned",
                               "a vault-mode call must name its payee (payTo); nothing paid")
        if address_key(invoke.pay_to) != held.provider:
            raise EnclaveError("wrong_payee",
                               "the call names another payee than this channel's provider; "
                               "nothing paid")
        if payer.epoch > self._landed:
            raise EnclaveError("funds_settling", (
                f"nothing was paid: your account's money rests on settlement {payer.epoch}, "
                f"which has not landed yet (the chain has {self._landed}); retry in a few "
                "seconds"))
        exec_ = held.channel.request(paid_request(invoke).encode(), amount, now=now)
        held.call = once
        return exec_

    def receive(self, channel_id: bytes, message: AscMessage, now: float) -> Changed:
        """A provider message (REPLY, REVEAL, CLOSE_ACK) for the channel's machine. On σ_U,
        δ leaves the client's statements and a pending record is signed. A REPLY for a
        client whose exit was reported is refused (``participant_exiting``): its exit
        statement still counts δ, so σ_U would pay δ twice."""
        self._check_ready()
        held = self._get(channel_id)
        if isinstance(message, Reply):
            if held.channel.status is Status.LOCKED and (held.call is None or not held.attested):
                raise LocalProtocolError(Reason.NOT_ALLOWED,
                                         "no signed call, or the provider key was not attested")
            if held.channel.status is Status.LOCKED:
                # S9-1: σ_U moves δ out of the client's statements; once its exit is reported
                # the statement it exits with still counts δ, so δ would be paid twice (to it
                # and, at the deadline, to the provider). The request ends unpaid instead.
                payer = self._active(held.client)
                # A settlement touching the client signed since its EXEC: the pending record
                # would name it, and the provider reveals only once it landed (review s15-5).
                if payer.epoch > self._landed:
                    raise EnclaveError("funds_settling", (
                        f"nothing was paid: your account's money rests on settlement "
                        f"{payer.epoch}, signed while this call ran and not landed yet; "
                        "retry in a few seconds"))
            if held.call is not None and held.call in self._consumed:
                raise LocalProtocolError(Reason.NOT_ALLOWED, "this signed call has paid already")
        return self._after(channel_id, held, held.channel.receive(message, now=now), now)

    def poll(self, channel_id: bytes, now: float) -> Changed:
        held = self._get(channel_id)
        return self._after(channel_id, held, held.channel.poll(now=now), now)

    def abandon(self, channel_id: bytes) -> Changed:
        held = self._get(channel_id)
        return self._after(channel_id, held, held.channel.abandon(), self._clock)

    def _after(self, channel_id: bytes, held: _Held, step: Step, now: float) -> Changed:
        statements: tuple[SignedStatement, ...] = ()
        pending = None
        for event in step.events:
            if isinstance(event, PaymentAuthorized):
                pending, statements = self._authorized(channel_id, held, event, now)
            elif isinstance(event, ResultDelivered):
                found = self._pending.get((channel_id, event.request_id))
                if found is not None:
                    found.revealed = True
                    self._dirty_pending.add((channel_id, event.request_id))
                    self._changed()
                held.call = None
            elif isinstance(event, RequestExpired | RequestAbandoned):
                held.call = None
        return Changed(step, statements, pending)

    def _authorized(self, channel_id: bytes, held: _Held, event: PaymentAuthorized,
                    now: float) -> tuple[PendingRecord, tuple[SignedStatement, ...]]:
        client = self._accounts[held.client]
        if held.call is not None:
            self._consumed.add(held.call)
            self._new_consumed.append(held.call)
        client_nonce = client.nonce  # the last statement that still counts δ
        client.locked -= event.amount
        deadline = self._tick(now) + CLAIM_WINDOW
        self._pending[(channel_id, event.request_id)] = _Pending(
            held.client, held.provider, event.amount, client_nonce, deadline)
        self._dirty_pending.add((channel_id, event.request_id))
        # The client's money here rests on settlements up to its account's epoch: the record
        # is claimable once that one landed, whatever later settlement is withheld.
        digest = pending_digest(self.domain, channel_id, event.request_id, client_nonce,
                                client.epoch, deadline, self.ledger)
        record = PendingRecord(channel_id, event.request_id, event.amount, client_nonce,
                               client.epoch, deadline, self._kernel.sign(VAULT_ACCOUNTS, digest))
        return record, self._sign_statements([client])

    def claim_landed(self, channel_id: bytes, request_id: int, signature: bytes, *,
                     deadline: int, state_after: int) -> Changed:
        """The host reports ``PaymentClaimed`` (the provider's ``e ‖ s``, the record's
        ``deadline``, the claim chain after it), in chain order: δ was paid on-chain, so it
        is credited to nobody here; the machine extracts ``t`` and opens the result (if the
        REVEAL never came), and the channel ends, what the client did not spend going back
        to its free balance.

        A claim of a payment a signed settlement already resolved (the contract accepts one
        only while no landed settlement resolved it) makes that settlement, and every later
        one, unlandable (``ClaimInTail``). They are *voided*: the account credited δ is
        debited (down to a debt taken from its next money if it spent it), and the next
        :meth:`settle` signs their replacement (contract docs, "Replacing a settlement"), so
        nobody's deposits, payouts or credited payments are stranded."""
        self._check_ready()
        key = (channel_id, request_id)
        try:
            folded = fold_claim(self._claims, claim_key(channel_id, request_id), deadline)
        except ValueError as e:
            raise EnclaveError("bad_claim", str(e)) from None
        if folded != state_after:
            raise EnclaveError("deposit_out_of_order",
                               "the claim does not follow the chain held here: report in order")
        p = self._pending.get(key)
        if p is not None and p.deadline != deadline:
            raise EnclaveError("bad_claim", "not the deadline this payment's record names")
        self._claims = folded
        self._full = True
        self._changed()
        if p is None:
            resolved = self._resolved.pop(key, None)
            if resolved is None:
                self._dead = (f"a claim of payment {request_id} of channel {channel_id.hex()}, "
                              "never pending here, landed: the claim chain held here is not "
                              "the contract's")
                return Changed()
            if resolved.exit:
                # Paid as an exit credit (counted paid out when signed): the claim pays it
                # instead, and the replacement carries that credit less δ.
                key_ = address_key(resolved.beneficiary)
                self._exit_cuts[key_] = self._exit_cuts.get(key_, 0) + resolved.amount
            else:
                self._paid_out += resolved.amount
                beneficiary = self._accounts[resolved.beneficiary]
                taken = min(beneficiary.free, resolved.amount)
                beneficiary.free -= taken
                beneficiary.debt += resolved.amount - taken
                self._bumped.add(resolved.beneficiary)
            if self._void_from is None or resolved.epoch < self._void_from:
                self._void_from = resolved.epoch
            return Changed()
        held = self._held.get(channel_id)
        step = Step()
        touched: list[_Account] = []
        if held is not None and not p.revealed:
            step = held.channel.provider_force_closed(request_id, signature)
            touched = self._end_channel(channel_id, exclude=p.amount)
        del self._pending[key]
        self._paid_out += p.amount
        return Changed(step, self._sign_statements(touched) if touched else ())

    def close_channel(self, channel_id: bytes) -> tuple[Close, tuple[SignedStatement, ...]]:
        """Close an OPEN channel inside the enclave: what the client did not spend goes back
        to its free balance (no transaction). Refused while a request is in flight (LOCKED:
        wait for Δ_lock or abandon; PENDING: wait for REVEAL or the deadline)."""
        self._check_ready()
        held = self._get(channel_id)
        if held.channel.status is not Status.OPEN:
            raise EnclaveError("channel_busy", f"the channel is {held.channel.status}")
        close = held.channel.close()
        return close, self._sign_statements(self._end_channel(channel_id))

    def _end_channel(self, channel_id: bytes, *, exclude: int = 0) -> list[_Account]:
        """The channel ends: the client's balance in it, less ``exclude`` (a pending δ the
        machine still counts as the client's, settled apart), goes back to its free."""
        held = self._held.pop(channel_id)
        channel = held.channel
        remaining = channel.state.client_balance - exclude
        if channel.status is not Status.CLOSED:
            channel.closed_on_chain()
        client = self._accounts[held.client]
        client.locked -= remaining
        client.free += remaining
        self._dirty_channels.add(channel_id)
        self._dirty_accounts.add(held.client)
        self._changed()
        return [client]

    # ---------------------------------------------------------------- exits

    def exiting(self, participant: str) -> SignedStatement | None:
        """The host reports ``ForceSettleInitiated`` for ``participant``: nothing moves its
        money from now on (no channel, no request, no payout). Returns its latest statement:
        the watchtower's answer if the one on-chain is older."""
        self._check_ready()
        account = self._account(participant)
        account.exiting = True
        found = self._pulls.get(account.pull)
        if found is not None and found.state in (_PREPARED, _AUTHORIZED):
            # never in a settlement: never made (its statements pay it only if it was)
            del self._pulls[account.pull]
            account.pull, account.pulling = 0, 0
        self._full = True
        self._changed()
        return self._statements.get(address_key(participant))

    # ---------------------------------------------------------------- persistence

    @property
    def ledger_version(self) -> int:
        return self._version

    def export_ledger(self) -> bytes:
        """Everything, sealed under the code's own key (the host's ``unseal`` cannot)."""
        self._check_ready()
        self._unsaved = False
        self._export_id = os.urandom(16).hex()
        self._full = False
        self._dirty_accounts, self._dirty_channels, self._dirty_pending = set(), set(), set()
        self._dirty_pulls = set()
        self._new_consumed = []
        record = {
            "format": _LEDGER_FORMAT, "version": self._version, "id": self._export_id,
            "accounts": {k: a.to_json() for k, a in self._accounts.items()},
            "nextIndex": self._next_index, "claims": str(self._claims),
            "confirmed": str(self._confirmed), "epoch": self._epoch,
            "paidOut": str(self._paid_out), "clock": self._clock, "dead": self._dead,
            "pulls": {str(k): p.to_json() for k, p in self._pulls.items()},
            "nextPull": self._next_pull, "pulledIn": str(self._pulled_in),
            "token": self.token, "transferredIn": str(self._transferred_in),
            "tip": None if self._tip is None else [self._tip.number, self._tip.hash.hex()],
            "settlements": {str(e): s.to_json() for e, s in self._settlements.items()},
            "resolved": {f"{cid.hex()}:{rid}": r.to_json()
                         for (cid, rid), r in self._resolved.items()},
            "voidFrom": self._void_from, "bumped": sorted(self._bumped),
            "exitCuts": {k: str(v) for k, v in self._exit_cuts.items()},
            "statements": {k: _statement_json(s) for k, s in self._statements.items()},
            "channels": {cid.hex(): _held_json(h) for cid, h in self._held.items()},
            "pending": {f"{cid.hex()}:{rid}": p.to_json()
                        for (cid, rid), p in self._pending.items()},
            "consumed": sorted(list(c) for c in self._consumed),
            "life": self._life.hex(),
        }
        return self._kernel.seal(_LEDGER_LABEL, jsonbytes.dumps(record))

    def export_changes(self, *, full: bool = False) -> tuple[bool, bytes]:
        """``(whole, blob)``: what changed since the last export, sealed — the whole ledger
        (:meth:`export_ledger`) if ``full`` (the host compacts its journal), after a change
        not tracked item by item (a settlement, a deposit, a claim, an exit) or on the first
        export; otherwise a *journal entry* holding only the accounts (with their latest
        statements), channels, pending payments and pulls the calls since then touched (a
        deleted one as null), the calls they consumed, and the clock, the next index, the
        next pull id, the last header read (:meth:`read_transfers`) and the version. Its
        size is what those calls changed, not the ledger's (a pull's steps used to make it
        whole: 51 ms and 1.9 MB per pull asked at 4,000 accounts, review s15-1).

        Safety argument: every mutation of an item a journal entry carries marks that item
        (:meth:`_get` marks a channel whenever it is taken to be stepped; a statement marks
        its account; a pending payment and a consumed call are marked where they are
        added or revealed), and every other mutation makes the next export whole, so base +
        entries in order restores exactly what one whole export would have. Each entry names
        the export it follows (a random id sealed inside both), so the host can replay
        entries only in the order they were made, on the export they follow: it can withhold
        the tail (an older ledger, which it could always present) but not splice, reorder or
        skip. Sealed under the code's key, like the ledger: the host sees sizes only."""
        self._check_ready()
        if full or self._full or not self._export_id:
            return True, self.export_ledger()
        self._unsaved = False
        after, self._export_id = self._export_id, os.urandom(16).hex()
        accounts: dict[str, Any] = {}
        for k in self._dirty_accounts:
            account = self._accounts.get(k)
            statement = self._statements.get(k)
            accounts[k] = None if account is None else [
                account.to_json(), None if statement is None else _statement_json(statement)]
        channels = {cid.hex(): None if (h := self._held.get(cid)) is None else _held_json(h)
                    for cid in self._dirty_channels}
        pending = {f"{cid.hex()}:{rid}": None if (p := self._pending.get((cid, rid))) is None
                   else p.to_json() for cid, rid in self._dirty_pending}
        record = {
            "format": _DELTA_FORMAT, "version": self._version, "after": after,
            "id": self._export_id, "nextIndex": self._next_index, "clock": self._clock,
            "accounts": accounts, "channels": channels, "pending": pending,
            "consumed": [list(c) for c in self._new_consumed],
            "pulls": {str(k): None if (q := self._pulls.get(k)) is None else q.to_json()
                      for k in self._dirty_pulls},
            "nextPull": self._next_pull,
            "tip": None if self._tip is None else [self._tip.number, self._tip.hash.hex()],
        }
        self._dirty_accounts, self._dirty_channels, self._dirty_pending = set(), set(), set()
        self._dirty_pulls = set()
        self._new_consumed = []
        return False, self._kernel.seal(_DELTA_LABEL, jsonbytes.dumps(record))

    def replay_changes(self, blob: bytes) -> None:
        """Apply a journal entry of :meth:`export_changes` to the ledger restored so far
        (refused unless it follows the last export restored: ``journal_gap``)."""
        self._check_ready()
        try:
            r = json.loads(self._kernel.unseal(_DELTA_LABEL, blob))
            if r.get("format") != _DELTA_FORMAT:
                raise ValueError("not a vault-mode journal entry")
            version, after, new_id = int(r["version"]), str(r["after"]), str(r["id"])
            accounts = {}
            statements = {}
            for k, v in r["accounts"].items():
                if v is None:
                    continue
                accounts[str(k)] = _Account.from_json(v[0])
                if v[1] is not None:
                    statements[str(k)] = _statement_from_json(v[1])
            channels = {bytes.fromhex(cid): None if v is None else self._held_from_json(v)
                        for cid, v in r["channels"].items()}
            pending: dict[tuple[bytes, int], _Pending | None] = {}
            for key, v in r["pending"].items():
                cid, rid = key.split(":")
                pending[(bytes.fromhex(cid), int(rid))] = (
                    None if v is None else _Pending.from_json(v))
            consumed = [(str(c[0]), str(c[1])) for c in r["consumed"]]
            next_index, clock = int(r["nextIndex"]), int(r["clock"])
            # entries written before pulls were journalled carry none (a pull made the
            # next export whole then)
            pulls = {int(k): None if v is None else _Pull.from_json(v)
                     for k, v in r.get("pulls", {}).items()}
            next_pull = int(r.get("nextPull", self._next_pull))
            tip = self._tip if r.get("tip") is None else Header(
                int(r["tip"][0]), bytes.fromhex(r["tip"][1]), b"", b"")
        except (ValueError, KeyError, TypeError, IndexError, TeeError) as e:
            raise EnclaveError("malformed", str(e)) from None
        if after != self._export_id or version < self._version:
            raise EnclaveError("journal_gap", "this journal entry does not follow the ledger "
                               "restored so far: replay the entries in order after their base")
        self._accounts.update(accounts)
        self._statements.update(statements)
        for cid, held in channels.items():
            if held is None:
                self._held.pop(cid, None)
            else:
                self._held[cid] = held
        for key, p in pending.items():
            if p is None:
                self._pending.pop(key, None)
            else:
                self._pending[key] = p
        self._consumed.update(consumed)
        for k, pulled in pulls.items():
            if pulled is None:
                self._pulls.pop(k, None)
            else:
                self._pulls[k] = pulled
        self._next_index, self._next_pull = next_index, next_pull
        self._tip = tip
        self._clock = max(self._clock, clock)
        self._version, self._unsaved, self._export_id = version, False, new_id

    def _held_from_json(self, v: list[Any]) -> _Held:
        channel = VaultChannel.restore(v[0].encode(), self._signer)
        return _Held(channel, v[1], v[2], bool(v[3]), None if v[4] is None else (v[4][0], v[4][1]))

    def restore_ledger(self, blob: bytes) -> None:
        """The ledger from :meth:`export_ledger`; refused if older than the one held."""
        try:
            r = json.loads(self._kernel.unseal(_LEDGER_LABEL, blob))
            if r.get("format") != _LEDGER_FORMAT:
                raise ValueError("not a vault-mode ledger")
            version = int(r["version"])
            accounts = {k: _Account.from_json(v) for k, v in r["accounts"].items()}
            settlements = {int(e): SignedSettlement.from_json(int(e), v)
                           for e, v in r["settlements"].items()}
            resolved = {}
            for key, v in r["resolved"].items():
                cid, rid = key.split(":")
                resolved[(bytes.fromhex(cid), int(rid))] = _Resolved.from_json(v)
            void_from = None if r["voidFrom"] is None else int(r["voidFrom"])
            bumped = {str(k) for k in r["bumped"]}
            exit_cuts = {str(k): int(v) for k, v in r.get("exitCuts", {}).items()}
            statements = {k: _statement_from_json(v) for k, v in r["statements"].items()}
            held = {bytes.fromhex(cid): self._held_from_json(v)
                    for cid, v in r["channels"].items()}
            life = bytes.fromhex(r["life"])
            pulls = {int(k): _Pull.from_json(v) for k, v in r.get("pulls", {}).items()}
            token = r.get("token")
            tip = None if r.get("tip") is None else Header(
                int(r["tip"][0]), bytes.fromhex(r["tip"][1]), b"", b"")
            pending = {}
            for key, v in r["pending"].items():
                cid, rid = key.split(":")
                pending[(bytes.fromhex(cid), int(rid))] = _Pending.from_json(v)
        except (ValueError, KeyError, TypeError, IndexError, TeeError) as e:
            raise EnclaveError("malformed", str(e)) from None
        if version < self._version:
            raise EnclaveError("stale_ledger",
                               f"version {version} is older than the {self._version} held")
        if token is not None and self.token is not None and to_checksum(token) != self.token:
            # review s17: transfers read as another token's, then anchored as this one's
            raise EnclaveError("wrong_token", f"this ledger reads the plain transfers of "
                               f"{token}, not of {self.token}")
        self._version, self._unsaved = version, False
        if token is not None:
            self.token = to_checksum(token)
        self._tip, self._transferred_in = tip, int(r.get("transferredIn", 0))
        self._accounts, self._settlements, self._statements = accounts, settlements, statements
        self._held, self._pending = held, pending
        self._next_index = int(r["nextIndex"])
        self._claims, self._confirmed = int(r["claims"]), int(r["confirmed"])
        self._resolved, self._void_from, self._bumped = resolved, void_from, bumped
        self._exit_cuts = exit_cuts
        self._epoch, self._paid_out = int(r["epoch"]), int(r["paidOut"])
        self._clock = max(self._clock, int(r["clock"]))
        self._dead = r.get("dead")
        self._consumed = {(c[0], c[1]) for c in r["consumed"]}
        self._life = life
        self._pulls, self._next_pull = pulls, int(r.get("nextPull", 1))
        self._pulled_in = int(r.get("pulledIn", 0))
        # written before journal entries existed (no id): named by its own bytes, which the
        # first entry written after it then names
        self._export_id = str(r.get("id") or hashlib.sha256(blob).hexdigest()[:32])
        self._full = False
        self._dirty_accounts, self._dirty_channels, self._dirty_pending = set(), set(), set()
        self._dirty_pulls = set()
        self._new_consumed = []
        self._ready = True


def _call_digest(life: str, call: SignedCall) -> bytes:
    """A digest of everything a call's signature check reads: the life it must be signed
    for, its authentication headers (each present or not), method, path and body, each
    part length-prefixed (no two different calls share the bytes hashed)."""
    h = hashlib.sha256()
    parts: list[bytes | None] = [life.encode()]
    parts += [None if (v := call.headers.get(n)) is None else v.encode() for n in _AUTH_HEADERS]
    parts += [call.method.encode(), call.path.encode(), call.body]
    for part in parts:
        h.update(b"-" if part is None else b"+" + len(part).to_bytes(8, "big") + part)
    return h.digest()


_AUTH_HEADERS = (api.CLIENT_HEADER, api.TIMESTAMP_HEADER, api.NONCE_HEADER,
                 api.SIGNATURE_HEADER, api.LIFE_HEADER)


def _statement_json(s: SignedStatement) -> list[Any]:
    return [list(s.statement.as_tuple()), s.signature.hex()]


def _statement_from_json(v: list[Any]) -> SignedStatement:
    return SignedStatement(BalanceStatement(str(v[0][0]), *map(int, v[0][1:])),
                           bytes.fromhex(v[1]))


def _held_json(h: _Held) -> list[Any]:
    return [h.channel.snapshot().decode(), h.client, h.provider, h.attested,
            None if h.call is None else list(h.call)]


class VaultAccounts:
    """Vault mode as its host sees it: every call checked inside (module docstring).
    Not offered: signing a digest, the key, unsealed state."""

    __slots__ = ("_code",)

    def __init__(self, code: VaultAccountsCode) -> None:
        self._code = code

    def __getattr__(self, name: str) -> Any:
        if name not in _HOST_SURFACE:
            raise AttributeError(name)
        attr = getattr(self._code, name)
        if not callable(attr) or name in _UNLOCKED:
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._code.lock:
                return attr(*args, **kwargs)
        return locked


_HOST_SURFACE = frozenset({
    "address", "account", "domain", "epoch", "life_id", "ledger", "claim_state", "deposited",
    "ledger_version",
    "balance", "payable", "index_of", "statement", "totals", "channels", "channels_of",
    "participants",
    "settlement", "settlement_after", "replacement_due", "payments_due", "credit_deposit",
    "settle",
    "chain_epoch", "token", "transfer_tip", "read_transfers",
    "prepare_pull", "pull_authorized", "pull_landed", "pulls_sent", "pulling",
    "pull_terms", "pulls_due",
    "open_channel", "terms", "channel_status", "last_ack", "acks_owed", "has_paid", "bind_tunnel",
    "authenticate", "request", "receive", "poll", "abandon", "claim_landed", "close_channel",
    "exiting",
    "export_ledger", "restore_ledger", "export_changes", "replay_changes",
})
#: Called without the code's lock: they read nothing a locked call changes (the host API
#: calls them from its event loop, which must not wait for a thread's enclave step).
_UNLOCKED = frozenset({"authenticate"})

__all__ = [
    "CLAIM_WINDOW",
    "Changed",
    "PendingRecord",
    "Settled",
    "SignedSettlement",
    "SignedStatement",
    "VaultAccounts",
    "VaultAccountsCode",
]
