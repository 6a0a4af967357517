"""What the vault enclave signs in vault mode, byte for byte as ``A402Vault.sol`` checks it.

Pure (no I/O): the enclave signs with these, the bindings (:mod:`a402.vault_contract`)
send what they encode, and the tests compare every digest with the contract's own
view. All digests are EIP-712 typed-data hashes in the vault contract's domain
(``"A402"``, ``"1"``, chain id, the vault contract), i.e. :class:`PaymentDomain` of
the vault's address, so a pending payment's ``m`` and ``σ_U``
(:mod:`a402.crypto.message`) are the very ones ASCManager uses, in that domain.

* :func:`pack_payouts` — a settlement's payouts, 36 bytes each: ``address (20) ‖
  uint32 index (4) ‖ uint96 amount (12)``, ``index`` being the participant's stable
  number that the enclave assigns (its lane in the contract); sorted by index, eight
  neighbouring participants share one storage word;
* :func:`pack_confirms` — a settlement's deposit confirmations, 32 bytes each:
  ``address (20) ‖ uint96 cumulative`` (the participant's deposits the enclave counts;
  the contract checks each against its ``deposited``);
* :class:`PullRecord` / :func:`pack_pulls` — a settlement's pulled deposits, 48 bytes
  each: ``address participant (20) ‖ uint32 index (4) ‖ uint96 amount (12) ‖ uint32 pull (4)
  ‖ uint64 deadline (8)``, ``pull`` the id the enclave assigned (dense, from 1), with the
  participants' EIP-3009 ``ReceiveWithAuthorization`` signatures beside them
  (:func:`pack_pull_signatures`, 65 bytes each, not in the vault's digest; the token checks
  them); :func:`pull_nonce` — the authorization's nonce, ``keccak256(abi.encode(
  keccak256("A402VaultPull(uint32 pull,bytes16 ledger)"), pull, ledger))``, which binds it
  to one pull id of one ledger life;
* :func:`pack_pull_checks` — a settlement's pull checks, 4 bytes each: a pull id the
  settlement proves made, or with bit 31 set (:data:`PULL_VOID`) one it proves not made;
* :func:`fold_claim` / :func:`pack_tail` — the contract's claim chain (``claimState =
  count (32 bits) ‖ low 224 bits of keccak(state ‖ 0x01 ‖ key ‖ uint64 deadline)``, ``key =
  keccak(channelId, requestId)``) and a settlement's tail of the claims mined since (64
  bytes each: ``key``, then ``deadline`` as a word);
* :func:`settlement_digest` — ``A402VaultSettlement(uint64 prevEpoch, uint64 epoch, bytes32
  payouts, bytes32 confirms, bytes32 pulls, bytes32 pullChecks, bytes32 claims, uint64
  notBefore)``, ``payouts``, ``confirms``, ``pulls`` and ``pullChecks`` the keccak of the
  packed records, ``claims`` the enclave's claim state,
  ``notBefore`` the latest deadline of the pending payments it resolves (the contract lands
  it only after); ``prevEpoch`` the settlement it follows (``epoch - 1`` unless it replaces
  settlements that can never land); ``bytes16 ledger`` (last) the ledger life that signed it
  (pinned by the first landed settlement);
* :class:`BalanceStatement` / :func:`statement_digest` — ``A402VaultBalance(address
  participant, uint32 index, uint256 balance, uint256 locked, uint64 epoch, uint64 nonce,
  uint256 deposited, uint32 pull, uint256 pulling, bytes16 ledger)`` (ledger 0 for epoch 0;
  ``balance`` includes ``pulling``, the amount of the unconfirmed pull ``pull``, which a
  force-settle pays only if that pull was made); :func:`exit_order_digest` —
  ``A402VaultExit(address participant, bytes32 statement)``, the participant's order to
  start its exit with that statement;
* :class:`VaultChannelTerms` / :func:`vault_channel_id` — ``A402VaultChannel(address
  client, address provider, bytes32 providerKey, uint256 capacity, bytes32 salt)``;
* :func:`pending_digest` — ``A402VaultPending(bytes32 channelId, uint256 requestId,
  uint64 clientNonce, uint64 epoch, uint64 deadline, bytes16 ledger)``.

What each one means (and the rule that keeps settlements, force-settles and claims
from paying anything twice) is the contract's docstring, ``contracts/A402Vault.sol``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from a402.evm.address import address_bytes
from a402.evm.keccak import keccak256

from ._secp import b32
from .message import PaymentDomain

SETTLEMENT_TYPE = (
    "A402VaultSettlement(uint64 prevEpoch,uint64 epoch,bytes32 payouts,bytes32 confirms,"
    "bytes32 pulls,bytes32 pullChecks,bytes32 claims,uint64 notBefore,bytes16 ledger,"
    "uint64 anchor,bytes32 anchorHash)"
)
BALANCE_TYPE = (
    "A402VaultBalance(address participant,uint32 index,uint256 balance,uint256 locked,uint64 epoch,"
    "uint64 nonce,uint256 deposited,uint32 pull,uint256 pulling,uint256 transferred,"
    "bytes16 ledger)"
)
PULL_TYPE = "A402VaultPull(uint32 pull,bytes16 ledger)"
EXIT_TYPE = "A402VaultExit(address participant,bytes32 statement)"
CHANNEL_TYPE = (
    "A402VaultChannel(address client,address provider,bytes32 providerKey,uint256 capacity,"
    "bytes32 salt)"
)
PENDING_TYPE = (
    "A402VaultPending(bytes32 channelId,uint256 requestId,uint64 clientNonce,uint64 epoch,"
    "uint64 deadline,bytes16 ledger)"
)

SETTLEMENT_TYPEHASH = keccak256(SETTLEMENT_TYPE.encode())
BALANCE_TYPEHASH = keccak256(BALANCE_TYPE.encode())
CHANNEL_TYPEHASH = keccak256(CHANNEL_TYPE.encode())
PENDING_TYPEHASH = keccak256(PENDING_TYPE.encode())
EXIT_TYPEHASH = keccak256(EXIT_TYPE.encode())
PULL_TYPEHASH = keccak256(PULL_TYPE.encode())

PAYOUT_SIZE = 36
CONFIRM_SIZE = 32
PULL_SIZE = 48
PULL_SIGNATURE_SIZE = 65
PULL_CHECK_SIZE = 4
PULL_VOID = 1 << 31
"""Set in a pull check: the settlement proves that pull was NOT made (its bit is clear);
pull ids stay below it (1 ≤ id < 2^31)."""
MAX_PAYOUT = (1 << 96) - 1
EXIT_CREDIT = 1 << 31
"""Set in a payout record's index: an exit credit, paid at once and moving no lane (money
credited to a participant after its exit was reported, counted by none of its statements);
participant indices stay below it."""
MAX_EPOCH = (1 << 31) - 1
"""Settlement epochs fit a lane's 31 bits (the 32nd marks a frozen participant)."""
_UINT32 = 1 << 32
_UINT128 = 1 << 128
_UINT64 = 1 << 64
_UINT256 = 1 << 256
_HEAD_MASK = (1 << 224) - 1


def _uint(value: int, limit: int, what: str) -> bytes:
    if not 0 <= value < limit:
        raise ValueError(f"{what} out of range")
    return b32(value)


def _address_word(address: str | bytes) -> bytes:
    return bytes(12) + address_bytes(address)


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


NO_LEDGER = bytes(16)
"""The ledger life of nothing: what a statement of epoch 0 names (it is empty), and what
the contract holds before its first settlement."""


def _ledger(value: bytes) -> bytes:
    """A ``bytes16`` EIP-712 word: the 16 bytes, left-aligned."""
    if len(value) != 16:
        raise ValueError("a ledger life is 16 bytes")
    return bytes(value) + bytes(16)


def _typed(domain: PaymentDomain, struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + domain.separator + struct_hash)


# ------------------------------------------------------------------ settlement


def pack_payouts(payouts: Iterable[tuple[str | bytes, int, int]]) -> bytes:
    """``(payee, index, amount)`` as the contract reads them: ``address ‖ uint32 ‖ uint96``.

    Give them sorted by index: the contract writes one storage word per run of payees
    whose indices share it (``index // 8``)."""
    out = bytearray()
    for payee, index, amount in payouts:
        if not 0 <= amount <= MAX_PAYOUT:
            raise ValueError("a payout must fit in uint96")
        if not 0 <= index < _UINT32:
            raise ValueError("a participant index must fit in uint32")
        out += address_bytes(payee) + index.to_bytes(4, "big") + amount.to_bytes(12, "big")
    return bytes(out)


def unpack_payouts(packed: bytes) -> list[tuple[bytes, int, int]]:
    """The inverse of :func:`pack_payouts` (20-byte addresses)."""
    if len(packed) % PAYOUT_SIZE:
        raise ValueError("packed payouts are a multiple of 36 bytes")
    return [
        (
            packed[i : i + 20],
            int.from_bytes(packed[i + 20 : i + 24], "big"),
            int.from_bytes(packed[i + 24 : i + 36], "big"),
        )
        for i in range(0, len(packed), PAYOUT_SIZE)
    ]


def pack_confirms(confirms: Iterable[tuple[str | bytes, int]]) -> bytes:
    """``(participant, cumulative deposits counted)`` as the contract reads them:
    ``address ‖ uint96``."""
    out = bytearray()
    for participant, total in confirms:
        if not 0 <= total <= MAX_PAYOUT:
            raise ValueError("a confirmed total must fit in uint96")
        out += address_bytes(participant) + total.to_bytes(12, "big")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class PullRecord:
    """One pulled deposit in a settlement: ``amount`` of the token from ``participant``
    (lane ``index``) as pull ``pull``, if its intent (signed until ``deadline``) holds."""

    participant: str
    index: int
    amount: int
    pull: int
    deadline: int

    def packed(self) -> bytes:
        if not 0 <= self.amount <= MAX_PAYOUT:
            raise ValueError("a pull's amount must fit in uint96")
        if not 0 <= self.index < EXIT_CREDIT:
            raise ValueError("a participant index must be below 2^31")
        if not 0 < self.pull < PULL_VOID:
            raise ValueError("a pull id is in [1, 2^31)")
        return (address_bytes(self.participant) + self.index.to_bytes(4, "big")
                + self.amount.to_bytes(12, "big") + self.pull.to_bytes(4, "big")
                + _uint(self.deadline, _UINT64, "deadline")[24:])


def pack_pulls(records: Iterable[PullRecord]) -> bytes:
    """A settlement's pull records, as the contract reads them (48 bytes each)."""
    return b"".join(r.packed() for r in records)


def unpack_pulls(packed: bytes) -> list[PullRecord]:
    """The inverse of :func:`pack_pulls` (addresses as lower-case ``0x`` hex)."""
    if len(packed) % PULL_SIZE:
        raise ValueError("packed pulls are a multiple of 48 bytes")
    return [
        PullRecord(
            "0x" + packed[i : i + 20].hex(),
            int.from_bytes(packed[i + 20 : i + 24], "big"),
            int.from_bytes(packed[i + 24 : i + 36], "big"),
            int.from_bytes(packed[i + 36 : i + 40], "big"),
            int.from_bytes(packed[i + 40 : i + 48], "big"),
        )
        for i in range(0, len(packed), PULL_SIZE)
    ]


def pack_pull_signatures(signatures: Iterable[bytes]) -> bytes:
    """The participants' intent signatures, in the order of the pull records (65 bytes each,
    ``r ‖ s ‖ v``; for an EIP-1271 participant, whatever 65 bytes its wallet accepts)."""
    out = bytearray()
    for signature in signatures:
        if len(signature) != PULL_SIGNATURE_SIZE:
            raise ValueError("a pull's intent signature is 65 bytes")
        out += signature
    return bytes(out)


def pack_pull_checks(checks: Iterable[tuple[int, bool]]) -> bytes:
    """``(pull id, made)`` as the contract reads them: the id, with bit 31 set when the
    settlement proves it was not made (4 bytes each)."""
    out = bytearray()
    for pull, made in checks:
        if not 0 < pull < PULL_VOID:
            raise ValueError("a pull id is in [1, 2^31)")
        out += (pull if made else pull | PULL_VOID).to_bytes(4, "big")
    return bytes(out)


def unpack_pull_checks(packed: bytes) -> list[tuple[int, bool]]:
    """The inverse of :func:`pack_pull_checks`."""
    if len(packed) % PULL_CHECK_SIZE:
        raise ValueError("packed pull checks are a multiple of 4 bytes")
    words = (int.from_bytes(packed[i : i + 4], "big") for i in range(0, len(packed), 4))
    return [(w & ~PULL_VOID, not w & PULL_VOID) for w in words]


def pull_nonce(pull: int, ledger: bytes = NO_LEDGER) -> bytes:
    """The EIP-3009 nonce of pull ``pull`` of the ledger life ``ledger``: a participant's
    ``ReceiveWithAuthorization`` to the A402Vault with it (value = the pull's amount,
    validAfter = 0, validBefore = its deadline) lets a settlement make that pull, once, and
    only while ``ledger`` is the life the contract pinned."""
    return keccak256(PULL_TYPEHASH + _uint(pull, _UINT32, "pull") + _ledger(ledger))


def claim_key(channel_id: bytes, request_id: int) -> bytes:
    """The contract's key of one (channel, request): ``keccak(abi.encode(cid, rid))``."""
    return keccak256(_bytes32(channel_id, "channel id") + _uint(request_id, _UINT256, "request"))


def fold_claim(state: int, key: bytes, deadline: int) -> int:
    """The claim chain after a ``claimPayment`` of the payment ``key`` (:func:`claim_key`)
    whose pending record has ``deadline``: ``count + 1 ‖ low224(keccak(state ‖ 0x01 ‖ key ‖
    uint64 deadline))``."""
    if not 0 <= state < _UINT256:
        raise ValueError("a deposit state is a uint256")
    digest = keccak256(b32(state) + b"\x01" + _bytes32(key, "claim key")
                       + _uint(deadline, _UINT64, "deadline")[24:])
    head = int.from_bytes(digest, "big") & _HEAD_MASK
    return (((state >> 224) + 1) << 224) | head


def claim_count(state: int) -> int:
    """How many claims a claim state has folded."""
    return state >> 224


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """One ``PaymentClaimed`` event, as the claim chain folds it."""

    key: bytes
    deadline: int

    def fold(self, state: int) -> int:
        return fold_claim(state, self.key, self.deadline)

    def packed(self) -> bytes:
        return _bytes32(self.key, "claim key") + _uint(self.deadline, _UINT64, "deadline")


def pack_tail(records: Iterable[ClaimRecord]) -> bytes:
    """A settlement's ``claimTail``: the claims mined since its claim state, in order."""
    return b"".join(r.packed() for r in records)


def settlement_digest(
    domain: PaymentDomain, epoch: int, packed_payouts: bytes, claims: int, not_before: int = 0,
    *, prev_epoch: int | None = None, packed_confirms: bytes = b"", packed_pulls: bytes = b"",
    packed_pull_checks: bytes = b"", ledger: bytes = NO_LEDGER, anchor: int = 0,
    anchor_hash: bytes = bytes(32),
) -> bytes:
    """What the vault key signs to authorise settlement ``epoch`` (following ``prev_epoch``,
    by default ``epoch - 1``) of ``packed_payouts``, ``packed_confirms``, ``packed_pulls``
    (:func:`pack_pulls`; their intent signatures are not part of it) and
    ``packed_pull_checks`` (any may be empty), with its claim state ``claims``, landable only
    after chain time ``not_before`` and only if block ``anchor`` (0: none) of the chain has
    the hash ``anchor_hash``."""
    prev = epoch - 1 if prev_epoch is None else prev_epoch
    if not 0 <= prev < epoch:
        raise ValueError("a settlement follows an earlier epoch")
    return _typed(
        domain,
        keccak256(
            SETTLEMENT_TYPEHASH
            + _uint(prev, MAX_EPOCH + 1, "previous epoch")
            + _uint(epoch, MAX_EPOCH + 1, "epoch")
            + keccak256(packed_payouts)
            + keccak256(packed_confirms)
            + keccak256(packed_pulls)
            + keccak256(packed_pull_checks)
            + _uint(claims, _UINT256, "claim state")
            + _uint(not_before, _UINT64, "notBefore")
            + _ledger(ledger)
            + _uint(anchor, _UINT64, "anchor")
            + _bytes32(anchor_hash, "anchor hash")
        ),
    )


def anchor_commitment(block_hash: bytes, token: str | bytes) -> bytes:
    """A settlement's ``anchorHash``: keccak256(abi.encode(the anchor block's hash, the
    token whose transfers were read)), which the contract recomputes with the chain's hash
    and its own token."""
    return keccak256(_bytes32(block_hash, "block hash") + _address_word(token))


# ------------------------------------------------------------------ statements


@dataclass(frozen=True, slots=True)
class BalanceStatement:
    """What the vault owes ``participant`` (lane ``index``) if it stopped now (free
    ``balance`` and ``locked`` in its open channels as a client), counting its deposits up
    to the cumulative ``deposited`` and plain transfers that sum to ``transferred``, net of
    its payouts in every settlement up to ``epoch``; ``nonce`` increases with every change.
    ``balance`` includes ``pulling``, the amount of pull ``pull`` (0: none) that no
    settlement has confirmed yet: a force-settle pays it only if that pull was made."""

    participant: str
    index: int
    balance: int
    locked: int
    epoch: int
    nonce: int
    deposited: int = 0
    pull: int = 0
    pulling: int = 0
    transferred: int = 0

    def as_tuple(self) -> tuple[str, int, int, int, int, int, int, int, int, int]:
        """The contract's ``Statement`` tuple."""
        return (self.participant, self.index, self.balance, self.locked, self.epoch, self.nonce,
                self.deposited, self.pull, self.pulling, self.transferred)


def statement_digest(domain: PaymentDomain, statement: BalanceStatement,
                     ledger: bytes = NO_LEDGER) -> bytes:
    """What the vault key signs to hand ``statement`` to its participant: it names the
    ledger life ``ledger`` unless its epoch is 0 and it counts no pull (an empty statement
    names none; a pull's id is the life's own, so a statement counting one names it)."""
    return _typed(
        domain,
        keccak256(
            BALANCE_TYPEHASH
            + _address_word(statement.participant)
            + _uint(statement.index, _UINT32, "index")
            + _uint(statement.balance, _UINT256, "balance")
            + _uint(statement.locked, _UINT256, "locked")
            + _uint(statement.epoch, _UINT64, "epoch")
            + _uint(statement.nonce, _UINT64, "nonce")
            + _uint(statement.deposited, _UINT256, "deposited")
            + _uint(statement.pull, PULL_VOID, "pull")
            + _uint(statement.pulling, _UINT128, "pulling")
            + _uint(statement.transferred, _UINT128, "transferred")
            + _ledger(ledger if statement.epoch or statement.pull else NO_LEDGER)
        ),
    )


def exit_order_digest(domain: PaymentDomain, statement: BalanceStatement,
                      ledger: bytes = NO_LEDGER) -> bytes:
    """What ``statement.participant`` signs to let anyone start its exit with ``statement``
    (of ledger life ``ledger``)."""
    return _typed(
        domain,
        keccak256(EXIT_TYPEHASH + _address_word(statement.participant)
                  + statement_digest(domain, statement, ledger)),
    )


# ------------------------------------------------------- channels and claims


@dataclass(frozen=True, slots=True)
class VaultChannelTerms:
    """A vault-mode channel: opened inside the enclave, never on-chain unless claimed."""

    client: str
    provider: str
    provider_key: bytes
    capacity: int
    salt: bytes

    def as_tuple(self) -> tuple[str, str, bytes, int, bytes]:
        """The contract's ``Channel`` tuple."""
        return (self.client, self.provider, self.provider_key, self.capacity, self.salt)


def vault_channel_id(domain: PaymentDomain, terms: VaultChannelTerms) -> bytes:
    """The channel id: the EIP-712 hash of the terms in the vault's domain."""
    return _typed(
        domain,
        keccak256(
            CHANNEL_TYPEHASH
            + _address_word(terms.client)
            + _address_word(terms.provider)
            + _bytes32(terms.provider_key, "provider key")
            + _uint(terms.capacity, _UINT256, "capacity")
            + _bytes32(terms.salt, "salt")
        ),
    )


def pending_digest(
    domain: PaymentDomain, channel_id: bytes, request_id: int, client_nonce: int, epoch: int,
    deadline: int, ledger: bytes = NO_LEDGER,
) -> bytes:
    """What the vault key signs with σ_U: payment ``request_id`` of ``channel_id`` is
    pending, counted by the client's statements up to ``client_nonce``, claimable on-chain
    once settlement ``epoch`` has landed and until ``deadline`` (unix seconds)."""
    return _typed(
        domain,
        keccak256(
            PENDING_TYPEHASH
            + _bytes32(channel_id, "channel id")
            + _uint(request_id, _UINT256, "request id")
            + _uint(client_nonce, _UINT64, "client nonce")
            + _uint(epoch, _UINT64, "epoch")
            + _uint(deadline, _UINT64, "deadline")
            + _ledger(ledger)
        ),
    )
