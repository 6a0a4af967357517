"""Typed bindings for ``A402Vault.sol``, the Liquidity Vault contract (does I/O).

Thin, like :mod:`a402.asc_manager`: each method is one contract call built from the
pure encodings of :mod:`a402.crypto.vault_messages` and sent with
:func:`a402.chain.tx.transact`. The vault key never sends: whoever sends here (a gas
payer, a participant, a watchtower) carries signatures the enclave made over the
digests of :mod:`a402.crypto.vault_messages`.

A layer of its own, beside :mod:`a402.asc_manager` (README, "Layout"): above
:mod:`a402.chain` and the pure layers, below the vault, client and provider.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, Hash32
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import BlockIdentifier, TxReceipt

from a402.chain.artifacts import load_artifact
from a402.chain.create2 import (
    create2_address,
    create2_deploy,
    ensure_transfer_prover,
    transfer_prover_address,
)
from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.crypto import PaymentDomain
from a402.crypto.vault_messages import (
    NO_LEDGER,
    BalanceStatement,
    ClaimRecord,
    VaultChannelTerms,
    claim_key,
    exit_order_digest,
    pack_tail,
    pull_nonce,
)
from a402.evm.address import to_checksum
from a402.evm.eip3009 import receive_authorization_digest
from a402.evm.keccak import keccak256


def _init_code(chain: Chain, token: str, vault_signer: str, settle_window: int) -> bytes:
    """This release's A402Vault creation code with its constructor's arguments (the
    release's :func:`transfer_prover_address` among them)."""
    artifact = load_artifact("A402Vault")
    factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    data = factory.constructor(to_checksum(token), to_checksum(vault_signer), settle_window,
                               transfer_prover_address()).data_in_transaction
    return bytes.fromhex(data.removeprefix("0x"))


class AccountStatus(IntEnum):
    ACTIVE = 0
    SETTLING = 1
    SETTLED = 2


@dataclass(frozen=True, slots=True)
class Lane:
    """``A402Vault.lane(index)``: the last settlement that paid that participant, and
    whether a force-settle froze it."""

    last_paid_epoch: int
    frozen: bool


@dataclass(frozen=True, slots=True)
class RecordedForceSettle:
    """``A402Vault.forceSettle(p)``: the statement recorded for ``p``, the deadline, and what
    the claims and contests against it take off (``deducted``); ``pulling`` comes off too if
    the statement's ``pull`` is not made when it is paid."""

    balance: int
    locked: int
    deposited: int
    transferred: int
    epoch: int
    nonce: int
    deadline: int
    index: int
    pull: int
    deducted: int
    pulling: int


@dataclass(frozen=True, slots=True)
class ClaimSum:
    """``A402Vault.claimSumOf(client)``: the claims made against a client, summed, and the
    range of the client nonces they name."""

    total: int
    min_nonce: int
    max_nonce: int


class DigestSigner(Protocol):
    """A participant key that signs a 32-byte digest (e.g. :class:`a402.crypto.EcdsaSigner`)."""

    def sign_digest(self, digest: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """A provider's claim for one pending payment: the completed adaptor signature
    ``(e, s)`` on ``m``, σ_U, and the enclave's pending record (client nonce, epoch,
    deadline)."""

    request_id: int
    amount: int
    result_hash: bytes
    e: bytes
    s: int
    client_nonce: int
    epoch: int
    deadline: int
    authorization: bytes
    pending_signature: bytes

    def payment_tuple(self) -> tuple[int, int, bytes, bytes, int, int, int, int]:
        """The contract's ``Payment`` tuple."""
        return (self.request_id, self.amount, self.result_hash, self.e, self.s,
                self.client_nonce, self.epoch, self.deadline)


class A402Vault:
    """One deployed ``A402Vault``: its domain, token, vault key and entry points."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract: Contract = contract_at(chain, "A402Vault", address)
        self.address: ChecksumAddress = self.contract.address
        self.domain = PaymentDomain(chain.chain_id, self.address)
        self.token: str = self.contract.functions.token().call()
        self.vault_signer: str = self.contract.functions.vaultSigner().call()
        self.settle_window: int = int(self.contract.functions.settleWindow().call())
        self._token_domain: bytes | None = None
        #: The CREATE2 salt it was deployed with, when this process deployed it (:meth:`deploy`).
        self.salt: bytes | None = None

    @classmethod
    def deploy(cls, chain: Chain, account: LocalAccount, token: str, vault_signer: str,
               settle_window: int, *, salt: bytes | None = None) -> A402Vault:
        """Deployed by ``account`` through :data:`~a402.chain.create2.CREATE2_PROXY` with
        ``salt`` (default: a random one, kept as :attr:`salt`): publish the salt with the
        address, and a participant can check how it was created (:meth:`created_with`).
        Creates the chain's ``TransferProver`` first if it is not there."""
        salt = os.urandom(32) if salt is None else salt
        ensure_transfer_prover(chain, account)
        vault = cls(chain, create2_deploy(chain, account, salt,
                                          _init_code(chain, token, vault_signer, settle_window)))
        vault.salt = salt
        return vault

    def created_with(self, salt: bytes) -> bool:
        """Whether this contract is the one :data:`~a402.chain.create2.CREATE2_PROXY` creates
        with ``salt`` from this release's A402Vault init code for the token, vault key and
        window its getters name (and the chain's ``TransferProver``), and holds code: then its
        address can only be that creation's, so the
        constructor that ran is this release's — its code is A402Vault's and its storage was
        set by nothing but A402Vault's own rules (review s16-rev2-1: equal runtime code alone
        says nothing of storage a constructor of the host's could have preset). A participant
        about to sign money over to it checks this (``a402 vault deposit``)."""
        if len(salt) != 32:
            return False
        init = _init_code(self.chain, self.token, self.vault_signer, self.settle_window)
        return (create2_address(salt, init) == self.address
                and bool(self.chain.w3.eth.get_code(self.address)))

    # -- deposits ----------------------------------------------------------------

    def deposit(self, sender: LocalAccount, participant: str, amount: int) -> TxReceipt:
        """``deposit``: ``sender`` (who approved this contract) credits ``participant``."""
        call = self.contract.functions.deposit(to_checksum(participant), amount)
        return transact(self.chain, sender, call)

    def checkpoint(self, sender: LocalAccount, number: int) -> TxReceipt:
        """``checkpoint``: keep block ``number``'s hash for good (one of the last 8,191)."""
        return transact(self.chain, sender, self.contract.functions.checkpoint(number))

    def block_hash(self, number: int) -> bytes:
        """The hash the contract keeps for block ``number`` (32 zero bytes: none)."""
        return bytes(self.contract.functions.blockHashes(number).call())

    def prove_transfer(self, sender: LocalAccount, receipt_proof: bytes) -> TxReceipt:
        """``proveTransfer``: record a plain transfer to the vault for its sender's exit
        (``receipt_proof``: :func:`a402.chain.receipts.receipt_proof`)."""
        return transact(self.chain, sender, self.contract.functions.proveTransfer(receipt_proof))

    # -- settlement ----------------------------------------------------------------

    def settle(self, sender: LocalAccount, packed_payouts: bytes, epoch: int, claims: int,
               vault_signature: bytes, claim_tail: bytes = b"", not_before: int = 0, *,
               prev_epoch: int | None = None, packed_confirms: bytes = b"",
               packed_pulls: bytes = b"", pull_signatures: bytes = b"",
               packed_pull_checks: bytes = b"", ledger: bytes = NO_LEDGER,
               anchor: int = 0, anchor_hash: bytes = bytes(32)) -> TxReceipt:
        """``settle``: make every packed pull (:func:`~a402.crypto.vault_messages.pack_pulls`,
        with the participants' intent signatures ``pull_signatures``, :func:`~a402.crypto.
        vault_messages.pack_pull_signatures`; one that cannot be made is skipped), check the
        packed pull checks, pay every packed payout (:func:`~a402.crypto.vault_messages.
        pack_payouts`) and confirm every packed deposit total (:func:`~a402.crypto.
        vault_messages.pack_confirms`) with the vault key's signature over
        ``settlement_digest`` (which names ``prev_epoch``, by default ``epoch - 1``, the
        enclave's claim state ``claims`` and ``not_before``); ``claim_tail``: the claims
        mined since that state (:meth:`claims_since`); ``ledger``: the ledger life that
        signed it (the first settlement pins it); ``anchor``: a block whose hash must be
        ``anchor_hash`` (0: none)."""
        prev = epoch - 1 if prev_epoch is None else prev_epoch
        header = (prev, epoch, claims, not_before, ledger, anchor, anchor_hash)
        call = self.contract.functions.settle(
            header, packed_payouts, packed_confirms,
            (packed_pulls, pull_signatures, packed_pull_checks), claim_tail, vault_signature)
        return transact(self.chain, sender, call)

    def pulled(self, pull: int, block: BlockIdentifier = "latest") -> bool:
        """Whether a landed settlement made pull ``pull`` (its transfer happened), as of
        ``block``."""
        return bool(self.contract.functions.pulled(pull).call(block_identifier=block))

    def pull_authorization_digest(self, address: str, amount: int, pull: int, deadline: int,
                                  ledger: bytes = NO_LEDGER) -> bytes:
        """What ``address`` signs to let a settlement pull ``amount`` from it as pull
        ``pull`` of the ledger life ``ledger`` until ``deadline``: the token's EIP-3009
        ``ReceiveWithAuthorization`` to this contract with :func:`~a402.crypto.
        vault_messages.pull_nonce` (no approval, no gas of its own)."""
        if self._token_domain is None:  # the token's domain never changes
            token = contract_at(self.chain, "TestUSDC", self.token)  # USDC's ABI for this
            self._token_domain = bytes(token.functions.DOMAIN_SEPARATOR().call())
        return receive_authorization_digest(
            self._token_domain, payer=address, to=self.address, value=amount, valid_after=0,
            valid_before=deadline, nonce=pull_nonce(pull, ledger))

    def sign_pull(self, participant: LocalAccount | DigestSigner, address: str, amount: int,
                  pull: int, deadline: int, ledger: bytes = NO_LEDGER) -> bytes:
        """``participant``'s signature (:meth:`pull_authorization_digest`) letting a
        settlement pull ``amount`` from ``address`` (its own, or its EIP-1271 wallet's) as
        pull ``pull`` until ``deadline``, an id of the ledger life ``ledger``."""
        digest = self.pull_authorization_digest(address, amount, pull, deadline, ledger)
        if isinstance(participant, LocalAccount):
            return bytes(participant.unsafe_sign_hash(Hash32(digest)).signature)
        return participant.sign_digest(digest)

    def claim_state(self) -> int:
        """The contract's claim chain: ``count ‖ head`` (:func:`~a402.crypto.vault_messages.
        fold_claim`)."""
        return int(self.contract.functions.claimState().call())

    def resolved_until(self) -> int:
        """The highest ``notBefore`` of a landed settlement (claims up to it are refused)."""
        return int(self.contract.functions.resolvedUntil().call())

    def chain_records(self, from_block: int = 0) -> list[tuple[ClaimRecord, int]]:
        """Every claim the claim chain folded from ``from_block`` on, in chain order, with the
        state after it (``PaymentClaimed`` events)."""
        found: list[tuple[tuple[int, int], ClaimRecord, int]] = []
        for ev in self.contract.events.PaymentClaimed().get_logs(from_block=from_block):
            a = ev["args"]
            found.append(((ev["blockNumber"], ev["logIndex"]),
                          ClaimRecord(claim_key(bytes(a["channelId"]), int(a["requestId"])),
                                      int(a["deadline"])),
                          int(a["claimState"])))
        found.sort(key=lambda f: f[0])
        return [(record, after) for _, record, after in found]

    def deposits(self, from_block: int = 0) -> list[tuple[str, int, int]]:
        """Every ``Deposited(participant, amount, deposited)`` from ``from_block`` on, in chain
        order; ``deposited`` is the participant's cumulative total after it."""
        logs = sorted(self.contract.events.Deposited().get_logs(from_block=from_block),
                      key=lambda ev: (ev["blockNumber"], ev["logIndex"]))
        return [(str(ev["args"]["participant"]), int(ev["args"]["amount"]),
                 int(ev["args"]["deposited"])) for ev in logs]

    def claims_since(self, state: int, from_block: int = 0) -> bytes:
        """The ``claimTail`` a settlement signed at claim state ``state`` needs now: the claims
        mined after the one that produced ``state`` (packed)."""
        found = self.chain_records(from_block)
        tail: list[ClaimRecord] = []
        for record, after in reversed(found):
            if after == state:
                break
            tail.append(record)
        else:
            if state != 0 and found:
                raise ValueError("that claim state is not on this chain")
        return pack_tail(reversed(tail))

    # -- force-settle ----------------------------------------------------------------

    def init_force_settle(self, sender: LocalAccount, statement: BalanceStatement,
                          signature: bytes, order: bytes = b"") -> TxReceipt:
        """Start ``statement.participant``'s exit: ``sender`` is the participant, or
        ``order`` is its signature (:meth:`exit_order`)."""
        call = self.contract.functions.initForceSettle(_statement(statement), signature, order)
        return transact(self.chain, sender, call)

    def exit_order(self, participant: LocalAccount | DigestSigner, statement: BalanceStatement
                   ) -> bytes:
        """``participant``'s order letting anyone start its exit with ``statement``."""
        digest = exit_order_digest(self.domain, statement, self.ledger())
        if isinstance(participant, LocalAccount):
            return bytes(participant.unsafe_sign_hash(Hash32(digest)).signature)
        return participant.sign_digest(digest)

    def contest_force_settle(self, sender: LocalAccount, terms: VaultChannelTerms,
                             claim: PendingClaim) -> TxReceipt:
        """``contestForceSettle``: a resolved payment the force-settling client's recorded
        statement still counts comes off its exit (pays nobody)."""
        call = self.contract.functions.contestForceSettle(
            _channel(terms), claim.payment_tuple(), claim.authorization, claim.pending_signature)
        return transact(self.chain, sender, call)

    def challenge_force_settle(self, sender: LocalAccount, statement: BalanceStatement,
                               signature: bytes) -> TxReceipt:
        call = self.contract.functions.challengeForceSettle(_statement(statement), signature)
        return transact(self.chain, sender, call)

    def final_force_settle(self, sender: LocalAccount, participant: str) -> TxReceipt:
        call = self.contract.functions.finalForceSettle(to_checksum(participant))
        return transact(self.chain, sender, call)

    def claim_payment(self, sender: LocalAccount, terms: VaultChannelTerms, claim: PendingClaim
                      ) -> TxReceipt:
        """``claimPayment``: the provider's pending payment, paid while the vault is dark."""
        call = self.contract.functions.claimPayment(
            _channel(terms), claim.payment_tuple(), claim.authorization, claim.pending_signature)
        return transact(self.chain, sender, call)

    # -- payouts the token refused ------------------------------------------------------

    def owed(self, account: str) -> int:
        return int(self.contract.functions.owed(to_checksum(account)).call())

    def withdraw(self, owner: LocalAccount, to: str) -> TxReceipt:
        return transact(self.chain, owner, self.contract.functions.withdraw(to_checksum(to)))

    def withdrawal_order(self, owner: LocalAccount, to: str, amount: int, deadline: int
                         ) -> bytes:
        """``owner``'s signed order paying ``amount`` of what it is owed to ``to``."""
        nonce = int(self.contract.functions.withdrawalNonces(owner.address).call())
        digest = bytes(self.contract.functions.withdrawalDigest(
            owner.address, to_checksum(to), amount, nonce, deadline).call())
        return bytes(owner.unsafe_sign_hash(Hash32(digest)).signature)

    def withdraw_for(self, sender: LocalAccount, owner: str, to: str, amount: int,
                     deadline: int, order: bytes) -> TxReceipt:
        call = self.contract.functions.withdrawWithSignature(
            to_checksum(owner), to_checksum(to), amount, deadline, order)
        return transact(self.chain, sender, call)

    # -- reading ---------------------------------------------------------------------

    def last_epoch(self, block: BlockIdentifier = "latest") -> int:
        return int(self.contract.functions.lastEpoch().call(block_identifier=block))

    def ledger(self) -> bytes:
        """The ledger life the first landed settlement pinned (16 zero bytes: none yet)."""
        return bytes(self.contract.functions.ledger().call())

    def available(self) -> int:
        return int(self.contract.functions.available().call())

    def status(self, participant: str) -> AccountStatus:
        return AccountStatus(self.contract.functions.statusOf(to_checksum(participant)).call())

    def lane(self, index: int) -> Lane:
        epoch, frozen = self.contract.functions.lane(index).call()
        return Lane(int(epoch), bool(frozen))

    def force_settle(self, participant: str) -> RecordedForceSettle:
        record = self.contract.functions.forceSettle(to_checksum(participant)).call()
        return RecordedForceSettle(*(int(x) for x in record))

    def is_voided(self, epoch: int) -> bool:
        """Whether a replacement settlement skipped ``epoch`` (statements naming it are void)."""
        return bool(self.contract.functions.isVoided(epoch).call())

    def deposited(self, participant: str) -> int:
        """Everything ever deposited for ``participant``."""
        return int(self.contract.functions.depositedOf(to_checksum(participant)).call())

    def claim_sum(self, client: str) -> ClaimSum:
        total, low, high = self.contract.functions.claimSumOf(to_checksum(client)).call()
        return ClaimSum(int(total), int(low), int(high))

    def transferred(self, participant: str) -> int:
        """The plain transfers ``proveTransfer`` recorded for ``participant``, summed."""
        return int(self.contract.functions.transferredOf(to_checksum(participant)).call())

    def settlement_of(self, participant: str) -> int:
        return int(self.contract.functions.settlementOf(to_checksum(participant)).call())

    def events(self, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The arguments of this vault's ``name`` events in ``receipt``."""
        found = getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD)
        return [dict(ev["args"]) for ev in found if ev["address"] == self.address]

    # the contract's own digests, for checking the pure encoders against it
    def settlement_digest(self, epoch: int, packed_payouts: bytes, claims: int,
                          not_before: int = 0, *, prev_epoch: int | None = None,
                          packed_confirms: bytes = b"", packed_pulls: bytes = b"",
                          packed_pull_checks: bytes = b"", ledger: bytes = NO_LEDGER,
                          anchor: int = 0, anchor_hash: bytes = bytes(32)) -> bytes:
        prev = epoch - 1 if prev_epoch is None else prev_epoch
        return bytes(self.contract.functions.settlementDigest(
            (prev, epoch, claims, not_before, ledger, anchor, anchor_hash),
            keccak256(packed_payouts),
            keccak256(packed_confirms), keccak256(packed_pulls),
            keccak256(packed_pull_checks)).call())

    def pull_nonce(self, pull: int, ledger: bytes = NO_LEDGER) -> bytes:
        return bytes(self.contract.functions.pullNonce(pull, ledger).call())

    def statement_digest(self, statement: BalanceStatement) -> bytes:
        return bytes(self.contract.functions.statementDigest(_statement(statement)).call())

    def channel_id(self, terms: VaultChannelTerms) -> bytes:
        return bytes(self.contract.functions.channelId(_channel(terms)).call())

    def pending_digest(self, channel_id: bytes, request_id: int, client_nonce: int, epoch: int,
                       deadline: int) -> bytes:
        return bytes(self.contract.functions.pendingDigest(
            channel_id, request_id, client_nonce, epoch, deadline).call())



def _statement(statement: BalanceStatement
               ) -> tuple[str, int, int, int, int, int, int, int, int, int]:
    return (to_checksum(statement.participant), *statement.as_tuple()[1:])


def _channel(terms: VaultChannelTerms) -> tuple[str, str, bytes, int, bytes]:
    return (to_checksum(terms.client), to_checksum(terms.provider), terms.provider_key,
            terms.capacity, terms.salt)
