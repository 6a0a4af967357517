"""Vault mode's host: the enclave's accounts, durable and sealed, fed by the chain, settled
in batches, watched.

:class:`VaultModeService` is what runs around :mod:`a402.vault_accounts` (the enclave code
that holds every participant's ``(free, locked)``, the channels and the statements) on an
``A402Vault`` contract (:mod:`a402.vault_contract`):

* **Deposits** are read from the contract's ``Deposited`` events and reported to the
  enclave in chain order (:meth:`VaultModeService.observe_deposits`); the enclave counts
  them as unconfirmed until a settlement it signs names the chain state they produced.
* **Channels** open and close against accounts inside the enclave with no transaction,
  and run the one A402 exchange (:class:`~a402.asc.VaultChannel`, the machine standard
  mode runs too): :meth:`open_channel`, :meth:`request`, :meth:`receive`, :meth:`close`.
  A provider's earnings accrue to its account.
* **Settlement**: participants ask for payouts (:meth:`withdraw`); the
  :class:`~a402.vault.settlement_schedule.SettlementScheduler` decides the batches (window,
  jitter, minimum participants, maximum per transaction); the worker
  (:meth:`tick`, :class:`VaultModeWorker`) has the enclave sign each and lands it, and
  lands every signed settlement the chain does not have yet, in epoch order.
  :meth:`settle_now` is the operator's override (it ignores the window and the minimum).
* **Watchtower**: :class:`~a402.vault.watchtower.VaultWatchtower` polls in the same tick.
* **Statements**: every change returns the signed statements of the participants it
  changed (what the participant keeps for the escape hatch); the latest one is also
  retrievable on demand (:meth:`statement`, ``GET /v1/vault/statement``).

Safety argument (host side): *durable before acknowledged*. Every call that changes the
enclave's ledger runs under one lock and returns only after a ledger the enclave sealed
(:meth:`~a402.vault_accounts.VaultAccountsCode.export_ledger`, encrypted and authenticated
under the enclave's key: the host cannot read it) at that change or a later one is written
to the store; a statement, a σ_U or a settlement therefore never leaves before the state
that produced it is on disk. The write itself runs outside the lock (group commit,
:meth:`VaultModeService._durable`): calls on other channels change the enclave meanwhile,
and one write stores all of them; the writes are one at a time, each of the newest export
(the stored ledger never goes back), and a write is over (the next may start, its callers
are answered) only once the store's COMMIT of it has returned: its caller's own thread
sees it return, or (a coroutine, :meth:`VaultModeService._adurable`, which parks no thread
on the store) the store's writer thread reports it through the write's future, and any
failure of it breaks the service as below, and what is read for an answer (a balance, a
statement, a withdrawal's check) is read only once everything before it is stored; so is
what goes on-chain (a settlement landed, :meth:`land`, even by another thread than the one
that signed it; a statement the watchtower answers a force-settle with).
If a write fails the service stops taking calls (``broken``): the enclave ran ahead of
the store, and only a restart from the stored ledger is consistent. The payout queue is
sealed too (under the host's seal with the enclave, :meth:`Enclave.seal`) and stored
before a withdrawal is acknowledged. The host moves no money: what it can do with the
enclave is in :mod:`a402.vault_accounts` (it cannot make it sign money that is not there),
and its gas key pays for transactions that anyone may send.

Paid calls over HTTP (``POST /v1/invoke``) run through :mod:`a402.vault.mode_invoke`, which
opens channels and pays requests with this class's methods over the standard tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from asyncio import CancelledError
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.exceptions import BlockNotFound, Web3RPCError

from a402.asc import ASCError, Exec, Status
from a402.asc.messages import Message as AscMessage
from a402.chain.node import Chain
from a402.chain.receipts import block_receipts_trie, trie_proof
from a402.chain.tx import TransactionFailed
from a402.crypto.authorization import recover_signer
from a402.crypto.vault_messages import (
    MAX_PAYOUT,
    BalanceStatement,
    claim_count,
    unpack_payouts,
)
from a402.evm.address import address_key, to_checksum
from a402.evm.keccak import keccak256
from a402.evm.receipts import MAX_ITEM, TRANSFER_TOPIC, ProofError, header_rlp
from a402.tee import Enclave, EnclaveError
from a402.tee.chains import check_backends
from a402.vault_accounts import (
    MAX_HEADERS,
    Changed,
    SignedSettlement,
    SignedStatement,
    VaultAccounts,
    VaultAccountsCode,
)
from a402.vault_contract import A402Vault, AccountStatus
from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api

from .landing import land
from .settlement_schedule import Batch, SchedulePolicy, SettlementScheduler
from .store import VaultStore
from .watchtower import Answer, VaultWatchtower

log = logging.getLogger("a402.vault.mode")
T = TypeVar("T")

#: The store's meta rows: the enclave's sealed ledger, the sealed payout queue, the
#: host's own record of what it landed (no secret: transaction hashes and epochs).
LEDGER_KEY = "vault-mode/ledger"
#: The sealed journal: one row per write since the ledger row was last written whole (what
#: the calls of that write changed, :meth:`~a402.vault_accounts.VaultAccountsCode.
#: export_changes`), keyed by a zero-padded sequence number so that key order is write order.
JOURNAL_PREFIX = "vault-mode/journal/"
#: After this many journal rows the next write stores the whole ledger and deletes them
#: (compaction): bounds what a restart or a standby replays.
JOURNAL_MAX = 256
PAYOUTS_KEY = "vault-mode/payouts"
LANDED_KEY = "vault-mode/landed"
#: Where the host's search for the first plain transfer to the vault resumes (a block number).
TRANSFERS_FROM_KEY = "vault-mode/transfers-from"
#: A participant's signed authorization for a pull (EIP-3009), by pull id (no secret: the token
#: checks it).
PULL_INTENT_PREFIX = "vault-mode/pull-intent/"
#: How long a pull's intent holds (its deadline): past it, the contract skips the pull.
PULL_LIFETIME = 86_400
_PAYOUTS_LABEL = "a402/vault-mode-payouts"
#: How many withdrawal idempotency keys the sealed queue remembers (the most recent ones):
#: a client retries a withdrawal whose answer it lost within seconds or minutes, long
#: before this many later withdrawals have been asked for.
WITHDRAW_KEYS_KEPT = 4096
#: How many dropped payout requests (:meth:`VaultModeService._payable`) the sealed queue
#: remembers, the most recent ones: what a participant and the operator are shown
#: (``payoutsDropped``, ``droppedPayouts``), after a restart or a fail-over too.
DROPPED_KEPT = 100
#: An idempotency key: 1 to 64 of these characters (a UUID, hex, base64url).
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_DECIMALS_ABI = [{"type": "function", "name": "decimals", "stateMutability": "view",
                  "inputs": [], "outputs": [{"name": "", "type": "uint8"}]}]
_FUNDS_ABI = [
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
]


class TransfersUnread(Exception):
    """Plain transfers not read this round (the node, or the enclave's refusal): why."""


class VaultModeError(Exception):
    """A call vault mode refuses: ``status`` (HTTP) and a machine-readable ``reason``."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status, self.reason, self.detail = status, reason, detail

    def body(self) -> dict[str, Any]:
        return {"error": self.reason, "message": self.detail}


_STATUS_OF = {"insufficient_balance": 402, "debt_outstanding": 402,
              "unknown_participant": 404, "no_statement": 404,
              "unknown_channel": 404, "participant_exiting": 409, "channel_busy": 409,
              "funds_settling": 409, "pull_outstanding": 409, "unknown_pull": 404,
              "nothing_to_settle": 409, "settlement_dead": 503, "replayed_call": 401,
              "stale_call": 401, "wrong_life": 401, "bad_signature": 401}


def refused(e: EnclaveError) -> VaultModeError:
    """The enclave's refusal, with its own reason (nothing moved)."""
    return VaultModeError(_STATUS_OF.get(e.reason, 400), e.reason, e.detail)


@dataclass(frozen=True, kw_only=True)
class VaultModeConfig:
    """``contract``: the ``A402Vault`` whose vault signer is ``enclave``'s key;
    ``account``: the host's gas key (moves no money; also the operator's identity for
    ``settle-now`` and ``status``); ``store``: where the sealed ledger lives."""

    chain: Chain
    account: LocalAccount
    contract: str
    #: The CREATE2 salt ``contract`` was deployed with (:meth:`~a402.vault_contract.
    #: A402Vault.deploy`), published in ``/v1/info`` so that a participant can check how it
    #: was created before depositing (None: unknown, not published).
    contract_salt: bytes | None = None
    store: VaultStore
    enclave: Enclave
    schedule: SchedulePolicy = field(default_factory=SchedulePolicy)
    poll_interval: float = 1.0
    auth_window: int = api.DEFAULT_AUTH_WINDOW
    lock_timeout: float = 30.0
    rng: random.Random | None = None
    #: How deep a chain record must be before it is reported to the enclave (review S9-7):
    #: ``None`` (the default) reads up to the chain's ``finalized`` block (``safe`` on a node
    #: without that tag); ``n`` up to ``n`` blocks behind the head (0: the head, for dev
    #: chains whose blocks nobody reorganises). A deposit reported and then dropped by a
    #: reorg would fork the enclave's deposit chain from the contract's for good.
    confirmations: int | None = None


@dataclass(slots=True)
class NonceHold:
    """A signed request's nonce a call in flight holds (:meth:`VaultModeService.hold_nonce`):
    ``row`` (client, nonce, seen at); ``stored`` once recorded."""

    row: tuple[str, str, float]
    stored: bool = False


@dataclass(frozen=True, slots=True)
class _Lead:
    """One ledger write (:meth:`VaultModeService._durable_step`): the ledger version it
    stores, its export (``blob`` empty: none, the ledger is stored already), the rows and
    nonces it takes with it, and the last row ticket among them."""

    exported: int
    whole: bool
    blob: bytes
    extra: Mapping[str, bytes]
    upto: int
    nonces: Sequence[tuple[str, str, float]]


def _wake(woken: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """On the waiters' loop: resolve each (a cancelled one is skipped: it gave up)."""
    for waiter, error in woken:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


@dataclass(frozen=True, slots=True)
class Landed:
    """A settlement this host landed: its epoch, transaction, and how many it paid."""

    epoch: int
    tx_hash: str
    payees: int
    block: int


class VaultModeService:
    """One vault-mode vault: the enclave's accounts and everything its host does."""

    def __init__(self, config: VaultModeConfig) -> None:
        # A simulated enclave proves nothing: only on a development chain (as the standard
        # vault and the provider runtime refuse it), whatever builds this service.
        check_backends(config.chain.chain_id, [config.enclave.kind])
        self.config = config
        self.chain = config.chain
        self.store = config.store
        self.contract = A402Vault(config.chain, config.contract)
        stored = config.store.get_meta(LEDGER_KEY)
        if stored is None and self.contract.last_epoch() > 0:
            # S9-5: a first boot now would start a new ledger life, which the contract
            # (pinned to the first one) refuses: nothing it signed would land or verify.
            raise ValueError(
                "the stored vault-mode ledger is missing but the A402Vault has settlements "
                f"(epoch {self.contract.last_epoch()}): restore the ledger; a new one could "
                "sign nothing the contract takes (participants can exit with their statements)")
        self.accounts: VaultAccounts = VaultAccountsCode.start(
            config.enclave, domain=self.contract.domain, network=config.chain.network,
            auth_window=config.auth_window, first_boot=stored is None,
            token=self.contract.token)
        if address_key("0x" + bytes(self.accounts.address).hex()) != address_key(
                self.contract.vault_signer):
            raise ValueError(f"the A402Vault's vault signer is {self.contract.vault_signer}, "
                             "not this enclave's key")
        self._lock = threading.RLock()
        self._landing = threading.Lock()
        self.broken: str | None = None
        self._saved = -1  # the ledger version last stored
        #: One ledger write at a time (``_writing``, guarded by ``_io``): see :meth:`_durable`.
        self._io = threading.Condition(threading.Lock())
        self._writing = False
        #: Coroutines waiting for the write in flight to end (:meth:`_adurable`), under ``_io``.
        self._waiting: list[asyncio.Future[None]] = []
        #: Rows waiting for the next ledger write (:meth:`store_rows`), numbered: the last
        #: number taken, and the last one stored.
        self._rows: dict[str, bytes] = {}
        self._row_nonces: list[tuple[str, str, float]] = []
        self._row_ticket = 0
        self._rows_saved = 0
        #: Signed requests' nonces taken by a call in flight (:meth:`hold_nonce`), and every
        #: nonce recorded in the store, with when it was seen, oldest first: those stored
        #: when this service started serving, and those it recorded since (see
        #: :meth:`hold_nonce`). Both under ``_nonce_lock`` (never held while waiting).
        self._nonce_lock = threading.Lock()
        self._nonces_held: set[tuple[str, str]] = set()
        self._nonces_known: OrderedDict[tuple[str, str], float] = OrderedDict(
            ((client, nonce), seen) for client, nonce, seen in config.store.nonces())
        self._scan_from = 0  # the block of the last chain record reported (this process)
        #: Where the search for a first plain transfer resumes while none was read (stored:
        #: a restart does not scan the chain from block 0 again), and why the last read
        #: failed (None: it did not).
        self._transfers_from = int(config.store.get_meta(TRANSFERS_FROM_KEY) or b"0")
        self._transfers_stored = self._transfers_from
        self.transfers_error: str | None = None
        #: One reader of the chain's records at a time (:meth:`observe_deposits`).
        self._observing = threading.Lock()
        self._journal_seq = 0  # the last journal row's number
        self._journal_rows = 0  # journal rows since the ledger row was written whole
        if stored is not None:
            self.accounts.restore_ledger(stored)
            for key, entry in config.store.get_metas(JOURNAL_PREFIX):
                self.accounts.replay_changes(entry)
                self._journal_seq = int(key.removeprefix(JOURNAL_PREFIX))
                self._journal_rows += 1
            self._saved = self.accounts.ledger_version
        else:  # first boot: this life is stored before anything is issued under it
            self._save()
        self.accounts.chain_epoch(self.contract.last_epoch())  # what has landed: see land()
        self.scheduler = SettlementScheduler(config.schedule, config.rng or random.SystemRandom())
        #: When the pulls waiting for a settlement started waiting (:meth:`_pulls_ripe`).
        self._pulls_since: float | None = None
        #: ``(participant, idempotency key)`` -> the answer of the withdrawal it queued;
        #: stored sealed with the payout queue, in the same write (:meth:`_payouts_blob`).
        self.withdrawals: dict[tuple[str, str], dict[str, str]] = {}
        #: Payout requests dropped unpaid, and why (:meth:`_payable`): the last
        #: :data:`DROPPED_KEPT`, sealed with the payout queue in the write that drops them.
        self.dropped: list[dict[str, str]] = []
        #: The idempotency keys of the withdrawals each participant asked since its last
        #: payout was taken into a batch (``_open_keys``), and those of the batch being
        #: signed (``_batch_keys``): a batch that drops the payout marks its keys' answers
        #: (:meth:`_mark_dropped`), so that asking again says so. Stored with the queue.
        self._open_keys: dict[str, list[str]] = {}
        self._batch_keys: dict[str, list[str]] = {}
        self._load_payouts()
        self.watchtower = VaultWatchtower(self.contract, self.accounts, config.account)
        self.landed: list[Landed] = self._load_landed()
        self.answers: list[Answer] = []
        #: Who serves: this process (vault mode is one process, under the store's lock).
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._decimals: int | None = None

    # ------------------------------------------------------------------ durability

    def _save(self, signing: Batch | None = None) -> None:
        """Store the ledger now, under the lock (held by the caller): after a write in
        flight, so that the stored ledger never goes back to an older export. With
        ``signing``, the payout queue without that batch in the same transaction."""
        with self._io:
            while self._writing:  # its writer needs only _io, never the lock we hold
                self._io.wait()
            self._writing = True
        try:
            whole, blob = self._export()
            lead = _Lead(self.accounts.ledger_version, whole, blob,
                         {} if signing is None else {PAYOUTS_KEY: self._payouts_blob(signing)},
                         self._rows_saved, [])
        except BaseException as e:
            if isinstance(e, Exception):  # the enclave ran ahead of the store
                self.broken = f"the sealed ledger could not be stored: {type(e).__name__}: {e}"
            self._wrote(None, None)
            raise
        # with signing: the signed settlement and the queue without its batch, together
        try:
            values, prefix = self._ledger_rows(lead)
            self.store.put_metas(values, delete_prefix=prefix)
        except BaseException as e:
            self._wrote(lead, e)
            raise
        self._wrote(lead, None)

    def _durable(self, version: int, rows: Mapping[str, bytes] | None = None,
                 nonces: Sequence[tuple[str, str, float]] = ()) -> None:
        """Return once a ledger of ``version`` or later is stored (group commit), and with
        it ``rows`` (sealed rows of the caller's, e.g. a paid call's answer: in the same
        transaction as a ledger write, or a later one).

        The caller that finds no write in flight exports the newest ledger under the lock
        (with every row waiting: :meth:`_durable_step`) and writes it after releasing the
        lock; callers whose change and rows that write covers return when it is stored, the
        others wait for it and write the next one. Writes are one at a time and each is of
        an export newer than the last stored, so the stored ledger only moves forward. Lock
        order: the service lock, then ``_io``; a writer holds neither while it writes.
        :meth:`_adurable` is the same wait for a coroutine."""
        ticket = 0
        while True:
            with self._lock:
                ticket, lead = self._durable_step(version, ticket, rows, nonces, None)
            if lead is True:
                return
            if lead is False:
                with self._io:
                    while self._writing:
                        self._io.wait()
                continue
            try:
                values, prefix = self._ledger_rows(lead)
                self.store.put_metas(values, delete_prefix=prefix, nonces=lead.nonces)
            except BaseException as e:
                self._wrote(lead, e)
                raise
            self._wrote(lead, None)

    async def _adurable(self, version: int, rows: Mapping[str, bytes] | None = None,
                        nonces: Sequence[tuple[str, str, float]] = ()) -> None:
        """:meth:`_durable` for a coroutine, with no thread parked on the store: the same
        steps under the lock (:meth:`_durable_step`, on the event loop when the lock is
        free), but the lead *submits* its write there and the store's writer thread ends
        it (:meth:`_wrote`, a callback of the write's future, run once the COMMIT is
        durable or failed: the lead's coroutine may even be gone by then); every caller
        waiting, the lead too, awaits a future of its loop that :meth:`_wrote` resolves,
        then looks again. Same guarantee: it returns only once a ledger of ``version`` or
        later, and ``rows``, are stored; the lead's write failing raises its error."""
        loop = asyncio.get_running_loop()
        ticket = 0
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            ticket, done = await self.alocked(partial(
                self._durable_step, version, ticket, rows, nonces, waiter))
            if done is True:
                return
            await waiter

    def _durable_step(self, version: int, ticket: int, rows: Mapping[str, bytes] | None,
                      nonces: Sequence[tuple[str, str, float]],
                      waiter: asyncio.Future[None] | None) -> tuple[int, _Lead | bool]:
        """Under the lock, one look of a wait for the store: the caller's ticket for its
        ``rows`` and ``nonces`` (taken on the first look: they join the next write), and
        True if a ledger of ``version`` or later and those rows are stored; else False if a
        write is in flight (``waiter``, if given, is resolved when it ends), or this caller
        leads the next write: with ``waiter`` None the :class:`_Lead` to write; with a
        ``waiter`` it is submitted here already (False: ``waiter`` gets its outcome)."""
        if (rows or nonces) and not ticket:
            self._row_ticket += 1
            ticket = self._row_ticket
            self._rows.update(rows or {})
            self._row_nonces.extend(nonces)
        if self._saved >= version and self._rows_saved >= ticket:
            return ticket, True
        if self.broken is not None:
            raise VaultModeError(503, "vault_broken", self.broken + "; restart the vault")
        with self._io:
            if self._writing:
                if waiter is not None:
                    self._waiting.append(waiter)
                return ticket, False
            self._writing = True
        try:
            exported = self.accounts.ledger_version
            whole, blob = self._export() if exported > self._saved else (False, b"")
            lead = _Lead(exported, whole, blob, self._rows, self._row_ticket, self._row_nonces)
            self._rows, self._row_nonces = {}, []
        except BaseException:
            self._wrote(None, None)  # nothing taken: the next caller leads instead
            raise
        if waiter is None:
            return ticket, lead
        try:
            values, prefix = self._ledger_rows(lead)
            write = self.store.submit_metas(values, delete_prefix=prefix, nonces=lead.nonces)
        except BaseException as e:
            self._wrote(lead, e)
            raise
        if write is None:
            self._wrote(lead, None, waiter)
        else:
            write.add_done_callback(partial(self._written, lead, waiter))
        return ticket, False

    def _written(self, lead: _Lead, waiter: asyncio.Future[None],
                 write: Future[list[int]]) -> None:
        """The write :meth:`_durable_step` submitted ended (on the thread that ended it)."""
        self._wrote(lead, (CancelledError() if write.cancelled() else write.exception()),
                    waiter)

    def _wrote(self, lead: _Lead | None, error: BaseException | None,
               waiter: asyncio.Future[None] | None = None) -> None:
        """The write in flight ended: ``lead``'s, stored (``error`` None) or not (the
        service is broken: the enclave ran ahead of the store); None: nothing was written.
        The next caller may write; every waiting one looks again (``waiter``, the lead's,
        gets ``error``)."""
        if lead is not None:
            if error is None:
                self._saved, self._rows_saved = max(self._saved, lead.exported), lead.upto
                if lead.blob:
                    self._journal_rows = 0 if lead.whole else self._journal_rows + 1
            else:
                self.broken = ("the sealed ledger could not be stored: "
                               f"{type(error).__name__}: {error}")
        with self._io:
            self._writing = False
            self._io.notify_all()
            waiting, self._waiting = self._waiting, []
        answers: list[tuple[asyncio.Future[None], BaseException | None]] = [
            (w, None) for w in waiting]
        if waiter is not None:
            answers.append((waiter, error))
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[None], BaseException | None]]] = {}
        for w, e in answers:
            by_loop.setdefault(w.get_loop(), []).append((w, e))
        for loop, woken in by_loop.items():  # one wake-up of each loop, not one per waiter
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits any more
                loop.call_soon_threadsafe(_wake, woken)

    async def alocked(self, fn: Callable[[], T]) -> T:
        """``fn()`` under the service lock, for a coroutine: on the event loop if the lock
        is free (no hop to a thread), else on a thread that waits for it (the loop never
        blocks on the lock, which a thread may hold across a store write)."""
        if self._lock.acquire(blocking=False):
            try:
                return fn()
            finally:
                self._lock.release()

        def locked() -> T:
            with self._lock:
                return fn()
        return await asyncio.to_thread(locked)

    def _export(self) -> tuple[bool, bytes]:
        """Under the lock, by the one writer: the enclave's changes since the last write
        (whole every :data:`JOURNAL_MAX` rows)."""
        whole, blob = self.accounts.export_changes(full=self._journal_rows >= JOURNAL_MAX)
        return bool(whole), bytes(blob)

    def _ledger_rows(self, lead: _Lead) -> tuple[dict[str, bytes], str | None]:
        """By the one writer (``_writing``), in export order: what ``lead`` writes, in one
        transaction, and the prefix it deletes. A whole ledger replaces the ledger row and
        deletes the journal (a crash keeps either the old row and its journal, or the new
        row alone); a journal entry is one new row; no export (the ledger is stored
        already): the rows alone. With ``lead.extra`` rows in the same transaction. Its
        failure breaks the service (:meth:`_wrote`: the enclave's next entry would follow
        one never stored): only a restart is consistent."""
        if not lead.blob:
            return dict(lead.extra), None
        if lead.whole:
            return {LEDGER_KEY: lead.blob, **lead.extra}, JOURNAL_PREFIX
        self._journal_seq += 1
        return {f"{JOURNAL_PREFIX}{self._journal_seq:016d}": lead.blob, **lead.extra}, None

    def _settled_reads(self) -> None:
        """Under the lock: store what the enclave holds before reading it for an answer."""
        self._durable(self.accounts.ledger_version)

    def store_rows(self, rows: Mapping[str, bytes], nonce: NonceHold | None = None) -> None:
        """Store ``rows`` with everything the enclave holds now (its changes so far and
        these rows, in one ledger write shared with other callers): what a paid call
        answers is stored with the REVEAL and the statement it hands out, in one
        transaction (:mod:`a402.vault.mode_invoke`), and with the nonce of the request
        that asked for it (``nonce``, :meth:`hold_nonce`). :meth:`astore_rows` for a
        coroutine."""
        with self._lock:
            version = self.accounts.ledger_version
        self._durable(version, rows, () if nonce is None or nonce.stored else [nonce.row])
        if nonce is not None:
            nonce.stored = True

    async def astore_rows(self, rows: Mapping[str, bytes], nonce: NonceHold | None = None
                          ) -> None:
        """:meth:`store_rows`, awaited (:meth:`_adurable`)."""
        await self._adurable(self.accounts.ledger_version, rows,
                             () if nonce is None or nonce.stored else [nonce.row])
        if nonce is not None:
            nonce.stored = True

    def hold_nonce(self, client: str, nonce: str, now: float) -> NonceHold | None:
        """Take a signed request's nonce for a call in flight, or None if it was used (it is
        recorded, or another call in flight holds it). The call stores it in its answer's
        write (:meth:`store_rows`), else :meth:`release_nonce` records it on its own: in
        every case before the call answers, so a replay is refused as with
        :meth:`~a402.vault.store.VaultStore.remember_nonce`, one write fewer per paid call.

        No read of the store: the service knows every recorded nonce (``_nonces_known``).
        Safety argument: one process serves a store at a time (SQLite: the store's lock;
        PostgreSQL: the lease, and a replica builds its service only after its take-over
        fenced the store, :mod:`a402.vault.mode_lease`), and nonces are recorded only
        through a service. So the store's nonces are those it held when this service was
        built, which the service loaded then (:meth:`~a402.vault.store.VaultStore.nonces`),
        and those this service recorded since, each added here when its call answers
        (:meth:`release_nonce`, :meth:`remember_nonce`; while in flight it is held). A
        process that takes over after this one builds its own service and loads them all
        from the store (a nonce this one held but never recorded, having ended first, is not
        among them: as before, its call was unanswered, and a retry of it is paid at most
        once, the enclave refusing a second σ_U: ``replayed_call``). A nonce is forgotten
        here only once seen more than ``keep`` before a later answer's ``now``, as the store
        forgets it: a request that carries it is past the auth window by then (refused as
        stale), so forgetting it lets no replay through.
        """
        key = (address_key(client), nonce)
        with self._nonce_lock:
            if key in self._nonces_held or key in self._nonces_known:
                return None
            self._nonces_held.add(key)
        return NonceHold((client, nonce, now))

    async def release_nonce(self, hold: NonceHold, keep: float) -> None:
        """The call holding ``hold`` answers: its nonce is recorded (now, if its answer's
        write did not), then known instead of held (known even if that write failed: a
        replay is refused all the same)."""
        client, nonce, now = hold.row
        try:
            if not hold.stored:
                await self.store.remember_nonce(client, nonce, now=now, keep=keep)
                hold.stored = True
            else:
                await self.store.forget_nonces(now, keep)
        finally:
            self._known_nonce(hold, keep)

    async def remember_nonce(self, client: str, nonce: str, now: float, keep: float) -> bool:
        """Record a signed request's nonce before its handler runs (every call but a paid
        one: :meth:`hold_nonce`); False if it was used (refused here, or by the store)."""
        hold = self.hold_nonce(client, nonce, now)
        if hold is None:
            return False
        try:
            return await self.store.remember_nonce(client, nonce, now=now, keep=keep)
        finally:
            self._known_nonce(hold, keep)

    def _known_nonce(self, hold: NonceHold, keep: float) -> None:
        """``hold``'s nonce is known (no longer held); the nonces seen more than ``keep``
        before its ``now`` are forgotten (see :meth:`hold_nonce`)."""
        client, nonce, now = hold.row
        key = (address_key(client), nonce)
        with self._nonce_lock:
            known = self._nonces_known
            known[key] = now
            self._nonces_held.discard(key)
            while known:
                oldest, seen = next(iter(known.items()))
                if seen >= now - keep:
                    break
                del known[oldest]

    def change(self, op: Callable[[], T], signing: Batch | None = None, *,
               stored: bool = True) -> T:
        """Run ``op`` in the enclave and return its result once the sealed ledger with its
        change is stored (durable before acknowledged; the write is shared with the
        changes made meanwhile: :meth:`_durable`). An enclave refusal changes nothing. With
        ``signing`` (``op`` signs that batch's settlement), the payout queue without the
        batch is stored in the same transaction as the ledger, under the lock.

        ``stored=False``: return at once; the caller lets nothing that depends on the
        change leave before a later :meth:`store_rows` (or any wait for a version at least
        this one's) returns."""
        with self._lock:
            result, version = self._apply(op, stored or signing is not None)
            if version is None:
                return result
            if signing is not None:
                self._save(signing)
                return result
        self._durable(version)  # under an outer hold of the lock (RLock) it writes under it
        return result

    async def achange(self, op: Callable[[], T], *, stored: bool = True) -> T:
        """:meth:`change` (without ``signing``) for a coroutine: ``op`` runs under the lock
        on the event loop, or on a thread if the lock is taken (:meth:`alocked`), and the
        wait for the store is awaited (:meth:`_adurable`): the same guarantee, durable
        before it returns, with no hop to a thread nor a thread parked on the store."""
        result, version = await self.alocked(partial(self._apply, op, stored))
        if version is not None:
            await self._adurable(version)
        return result

    def _apply(self, op: Callable[[], T], stored: bool) -> tuple[T, int | None]:
        """Under the lock: ``op`` in the enclave; its result, and the ledger version to wait
        for (None: nothing to wait for, or ``stored`` False, see :meth:`change`)."""
        if self.broken is not None:
            raise VaultModeError(503, "vault_broken", self.broken + "; restart the vault")
        try:
            result = op()
        except EnclaveError as e:
            raise refused(e) from None
        version = self.accounts.ledger_version
        return result, (version if stored and version > self._saved else None)

    def _save_payouts(self) -> None:
        """Store the payout requests (sealed): the waiting ones and those in a batch not
        signed yet. A batch leaves the stored queue only in the transaction that stores the
        ledger with its signed settlement (:meth:`_sign`): a crash before it keeps the
        requests (signed again after the restart), a crash after it keeps the settlement
        (landed after the restart); neither loses a request nor pays one twice."""
        self.store.put_meta(PAYOUTS_KEY, self._payouts_blob())

    def _payouts_blob(self, signing: Batch | None = None) -> bytes:
        skip = set() if signing is None else {p.participant.lower() for p in signing.payouts}
        queue = [[p.participant, str(p.amount), p.asked] for p in (
            *self.scheduler.pending(),
            *(p for p in self.scheduler.in_flight() if p.participant.lower() not in skip))]
        keys = [[who, key, answer] for (who, key), answer in self.withdrawals.items()]
        open_keys = [[who, key] for q in (self._batch_keys, self._open_keys)
                     for who, ks in q.items() for key in ks]
        return self.config.enclave.seal(_PAYOUTS_LABEL, json.dumps(
            {"queue": queue, "withdrawals": keys, "dropped": self.dropped[-DROPPED_KEPT:],
             "openKeys": open_keys}).encode())

    def _load_payouts(self) -> None:
        blob = self.store.get_meta(PAYOUTS_KEY)
        if blob is None:
            return
        stored = json.loads(self.config.enclave.unseal(_PAYOUTS_LABEL, blob))
        if isinstance(stored, list):  # written before withdrawals had idempotency keys
            stored = {"queue": stored, "withdrawals": []}
        for participant, amount, asked in stored["queue"]:
            self.scheduler.request(participant, int(amount), now=float(asked))
        for who, key, answer in stored["withdrawals"]:
            self.withdrawals[(str(who), str(key))] = {k: str(v) for k, v in answer.items()}
        self.dropped = [{k: str(v) for k, v in d.items()} for d in stored.get("dropped", [])]
        for who, key in stored.get("openKeys", []):  # a batch in flight waits again: open
            self._open_keys.setdefault(str(who), []).append(str(key))

    def _load_landed(self) -> list[Landed]:
        raw = self.store.get_meta(LANDED_KEY)
        return [] if raw is None else [Landed(*row) for row in json.loads(raw)]

    def _record_landed(self, landed: Landed) -> None:
        self.landed.append(landed)
        self.store.put_meta(LANDED_KEY, json.dumps(
            [[x.epoch, x.tx_hash, x.payees, x.block] for x in self.landed[-100:]]).encode())

    # ------------------------------------------------------------------ facts

    @property
    def address(self) -> str:
        """The vault's address: the enclave's key, the contract's vault signer."""
        return to_checksum(self.contract.vault_signer)

    def chain_time(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: ``mode`` tells a client it pays from its account here; the
        token as the standard vault names it (address, decimals)."""
        if self._decimals is None:
            self._decimals = int(self.chain.w3.eth.contract(
                address=self.chain.w3.to_checksum_address(self.contract.token), abi=_DECIMALS_ABI
            ).functions.decimals().call())
        return {"vault": self.address, "mode": "vault", "network": self.chain.network,
                "chainId": self.chain.chain_id, "a402Vault": self.contract.address,
                **({"a402VaultSalt": "0x" + self.config.contract_salt.hex()}
                   if self.config.contract_salt else {}),
                "token": {"address": self.contract.token, "decimals": self._decimals},
                "settleWindow": self.contract.settle_window,
                "life": self.accounts.life_id, "ledger": "0x" + self.accounts.ledger.hex(),
                "authWindow": self.config.auth_window,
                "operator": self.config.account.address}

    def balance(self, participant: str) -> dict[str, Any]:
        with self._lock:  # the ledger and the queue of one moment (see _sign)
            self._settled_reads()
            free, locked, unconfirmed = self.accounts.balance(participant)
            pull, pulling = self.accounts.pulling(participant)
            queued = self._queued(participant)
            debt = self._debt(participant)
            who = address_key(participant)
            dropped = [d for d in self.dropped if address_key(d["participant"]) == who][-5:]
        return {"participant": to_checksum(participant), "free": str(free),
                "locked": str(locked), "unconfirmed": str(unconfirmed),
                "pulling": str(pulling), "pull": pull,
                "payoutRequested": str(queued), "debt": str(debt),
                "payoutsDropped": dropped,
                "owedOnChain": str(self.contract.owed(participant))}

    def _queued(self, participant: str) -> int:
        return self.scheduler.queued(participant)

    def statement(self, participant: str) -> SignedStatement:
        """The latest statement the enclave signed for ``participant`` (stored first).

        A participant with none yet gets one signed now, as a change (review S10): handed
        out before it is stored, a restart would sign another statement of the same nonce,
        and a nonce is what the contract and the watchtower rank statements by."""
        with self._lock:
            self._settled_reads()
            return self.change(lambda: self.accounts.statement(participant))

    def statement_unstored(self, participant: str) -> SignedStatement:
        """:meth:`statement` without waiting for the store: the caller hands it out only
        after a :meth:`store_rows` that began after this returned (which stores it)."""
        return self.change(lambda: self.accounts.statement(participant), stored=False)

    def status(self) -> dict[str, Any]:
        """What the operator sees: totals, open channels, queued payouts, last settlement."""
        with self._lock:
            self._settled_reads()
        totals = self.accounts.totals()
        last = self.landed[-1] if self.landed else None
        landed_epoch = self.contract.last_epoch()
        return {
            "vault": self.address, "a402Vault": self.contract.address,
            "epoch": self.accounts.epoch, "landedEpoch": landed_epoch,
            "unlanded": [self._unlanded_json(e)
                         for e in range(landed_epoch + 1, self.accounts.epoch + 1)],
            "totals": {k: str(v) for k, v in totals.items()},
            "accounts": [self._account_json(p) for p in self.accounts.participants()],
            "leaseHolder": self.holder,
            "onChain": str(self.contract.available()),
            "channels": [{"channelId": "0x" + cid.hex(), "client": client, "provider": provider,
                          "status": st.value, "balance": str(bal)}
                         for cid, client, provider, st, bal in self.accounts.channels()],
            "pendingPayouts": [{"participant": p.participant, "amount": str(p.amount)}
                               for p in self.scheduler.pending()],
            "lastSettlement": None if last is None else {
                "epoch": last.epoch, "tx": last.tx_hash, "payees": last.payees,
                "block": last.block},
            "droppedPayouts": self.dropped[-20:],
            "broken": self.broken,
            "transfersError": self.transfers_error,
        }

    def _unlanded_json(self, epoch: int) -> dict[str, Any]:
        signed = self.accounts.settlement(epoch)
        return {"epoch": epoch, "payees": len(unpack_payouts(signed.payouts)),
                "notBefore": signed.not_before}

    def _account_json(self, participant: str) -> dict[str, str]:
        free, locked, unconfirmed = self.accounts.balance(participant)
        return {"participant": participant, "free": str(free), "locked": str(locked),
                "unconfirmed": str(unconfirmed)}

    # ------------------------------------------------------------------ deposits

    def observe_deposits(self) -> int:
        """Report what the chain recorded that the enclave has not seen, in chain order:
        ``Deposited`` (credited, unconfirmed until the next settlement; the enclave counts
        each participant's cumulative total once, so reporting one again changes nothing)
        and ``PaymentClaimed`` (a provider paid on-chain with its pending record: the
        enclave credits that payment to nobody again, extracts ``t`` and ends the channel;
        the claim chain's count tells which are new). Returns how many records were new.

        One caller at a time (the worker's tick and the operator's settle-now both call it):
        the claim count is read before the scan, so two scans at once both took the same
        ``PaymentClaimed`` for new, and the second report, not following the claim chain the
        first one extended, was refused (a Deposited reported twice is merely ignored)."""
        with self._observing:
            return self._observe_deposits()

    def _observe_deposits(self) -> int:
        known = claim_count(self.accounts.claim_state)
        events = self.contract.contract.events
        found: list[tuple[tuple[int, int], Any]] = []
        to_block = self._reported_head()  # no reorg undoes what is reported (S9-7)
        try:
            self._observe_transfers(to_block)
            self.transfers_error = None
        except TransfersUnread as e:
            # Deposits, claims and the watchtower go on (review s17b-4): a transfer not read
            # now is read later, or its sender's exit pays it back; the status says why. (A
            # store that fails is no such case: it stops the round as everywhere else.)
            self.transfers_error = str(e)
            log.warning("plain transfers not read: %s", self.transfers_error)
        if to_block < self._scan_from:
            return 0
        for name in ("Deposited", "PaymentClaimed"):
            for ev in getattr(events, name)().get_logs(from_block=self._scan_from,
                                                        to_block=to_block):
                found.append(((int(ev["blockNumber"]), int(ev["logIndex"])), ev))
        found.sort(key=lambda f: f[0])
        new = 0
        for (block, _), ev in found:
            a = ev["args"]
            if ev["event"] == "Deposited":
                if not self.change(partial(self.accounts.credit_deposit, str(a["participant"]),
                                           int(a["amount"]), int(a["deposited"]))):
                    continue
            else:
                state = int(a["claimState"])
                if claim_count(state) <= known:
                    continue
                signature = bytes(a["e"]) + int(a["s"]).to_bytes(32, "big")
                self.change(partial(self.accounts.claim_landed, bytes(a["channelId"]),
                                    int(a["requestId"]), signature, deadline=int(a["deadline"]),
                                    state_after=state))
                known = claim_count(state)
            self._scan_from = block  # later records are in this block or after
            new += 1
        return new

    def _observe_transfers(self, head: int) -> int:
        """Hand the enclave the chain up to ``head`` with the receipt proofs of the plain
        transfers to the vault in it (:meth:`~a402.vault_accounts.VaultAccountsCode.
        read_transfers`): every header after the last one it read, none before the first
        transfer, and never the newest block (a settlement anchored there could not land in
        the block after it: ``BLOCKHASH`` knows no hash of the block being built, and a node
        estimates a transaction on the newest block). Returns how many it credited."""
        w3 = self.chain.w3
        head = min(head, int(w3.eth.block_number) - 1)
        tip = self.accounts.transfer_tip
        start = self._transfers_from if tip is None else tip[0] + 1
        credited = 0
        while start <= head:
            end = min(head, start + MAX_HEADERS - 1)
            try:
                found = self._transfers_in(start, end, first=tip is None)
            except Exception as e:  # the node's answers: read again next round
                raise TransfersUnread(f"{type(e).__name__}: {e}") from e
            if found is None:  # nothing read yet and nothing to read: no chain to keep
                self._transfers_from = start = end + 1
                if start - self._transfers_stored >= MAX_HEADERS:  # a write per ~2,000
                    self.store.put_meta(TRANSFERS_FROM_KEY, str(start).encode())
                    self._transfers_stored = start
                continue
            try:
                credited += self.change(partial(self.accounts.read_transfers, *found))
            except VaultModeError as e:
                if e.reason not in ("bad_transfers", "no_token"):
                    raise  # a store that fails, a broken vault: as anywhere else
                raise TransfersUnread(f"the enclave refused: {e}") from e  # nothing changed
            tip, start = self.accounts.transfer_tip, end + 1
        return credited

    def _transfers_in(self, start: int, end: int, *, first: bool
                      ) -> tuple[list[bytes], list[tuple[int, int, list[bytes]]]] | None:
        """Blocks ``start``..``end`` read from the node: their headers (from the first block
        with a plain transfer to the vault, if ``first``: None if there is none) and the
        receipt proofs of those transfers' transactions. Reads only. A transaction in which
        the vault logs (a deposit, a settlement's pulls) holds no plain transfer: not sent
        (the enclave would find none), and no reason to start reading headers."""
        w3 = self.chain.w3
        logs = w3.eth.get_logs({
            "address": w3.to_checksum_address(self.contract.token),
            "topics": [HexBytes(TRANSFER_TOPIC), None, HexBytes(bytes(12) + bytes.fromhex(
                self.contract.address[2:]))],
            "fromBlock": start, "toBlock": end})
        own = {bytes(log["transactionHash"]) for log in w3.eth.get_logs({
            "address": self.contract.address, "fromBlock": start, "toBlock": end})}
        txs = sorted({(int(log["blockNumber"]), int(log["transactionIndex"]))
                      for log in logs
                      if not log.get("removed") and bytes(log["transactionHash"]) not in own})
        if first:
            if not txs:
                return None
            start = txs[0][0]
        headers: list[bytes] = []
        receipts: list[tuple[int, int, list[bytes]]] = []
        for number in range(start, end + 1):
            wanted = [i for b, i in txs if b == number]
            if wanted:
                header, trie = block_receipts_trie(self.chain, number)
                for i in wanted:
                    nodes = trie_proof(trie, i)
                    # one the enclave would refuse whole is left to its sender's exit
                    if max(map(len, nodes)) <= MAX_ITEM:
                        receipts.append((number, i, nodes))
            else:
                block = w3.eth.get_block(number)
                header = header_rlp(block)
                if keccak256(header) != bytes(block["hash"]):
                    raise ProofError(f"block {number}: its header does not hash to its hash")
            headers.append(header)
        return headers, receipts

    def _reported_head(self) -> int:
        """The last block whose records may be reported (``config.confirmations``)."""
        w3 = self.chain.w3
        depth = self.config.confirmations
        if depth is not None:
            return int(w3.eth.block_number) - depth
        for tag in ("finalized", "safe"):
            try:
                return int(w3.eth.get_block(tag)["number"])
            except (Web3RPCError, BlockNotFound, ValueError):
                continue  # a node without this tag: the next one
        raise VaultModeError(503, "chain_unsafe", "the node knows no finalized or safe block: "
                             "set confirmations to read deposits at a depth")

    # ------------------------------------------------------------------ channels

    def open_channel(self, client: str, provider: str, provider_key: bytes, capacity: int
                     ) -> tuple[bytes, tuple[SignedStatement, ...]]:
        """Open a channel of ``client``'s to ``provider`` inside the enclave: ``capacity``
        moves from the client's free balance to its locked. No transaction.

        Refused (402, nothing locked) above what the client's queued payouts leave
        (:meth:`spare`): a withdrawal acknowledged as queued is paid, never dropped because
        a channel took its money after it was asked (the check and the opening under one
        hold of the lock, as a withdrawal's check and queueing are)."""
        with self._lock:
            spare = self.spare(client)
            if capacity > spare:
                raise VaultModeError(
                    402, "insufficient_balance",
                    f"nothing was paid: {spare} free in your vault account for a channel "
                    f"(confirmed deposits, less payouts you asked for), {capacity} needed")
            return self.change(lambda: self.accounts.open_channel(
                client, provider, provider_key, capacity,
                lock_timeout=self.config.lock_timeout))

    def spare(self, participant: str) -> int:
        """What ``participant`` may lock in a new channel: its free balance, less what its
        queued payouts need beyond its unconfirmed deposits (a payout is signed against
        free + unconfirmed less its debt, :meth:`_payable`)."""
        with self._lock:
            free, _, unconfirmed = self.accounts.balance(participant)
            return max(0, min(free, free + unconfirmed - self._debt(participant)
                              - self._queued(participant)))

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        return self.change(lambda: self.accounts.bind_tunnel(handle, channel_id))

    def request(self, channel_id: bytes, call: SignedCall, amount: int,
                now: float | None = None) -> Exec:
        """Step ① for a call the client signed (EXEC to send the provider)."""
        at = time.time() if now is None else now
        return self.change(lambda: self.accounts.request(channel_id, call, amount, at))

    def receive(self, channel_id: bytes, message: AscMessage, now: float | None = None, *,
                stored: bool = True) -> Changed:
        """The provider's REPLY / REVEAL / CLOSE_ACK; the result carries the statements.
        ``stored=False``: see :meth:`change` (the caller stores before anything leaves)."""
        at = time.time() if now is None else now
        return self.change(lambda: self.accounts.receive(channel_id, message, at),
                           stored=stored)

    async def arequest(self, channel_id: bytes, call: SignedCall, amount: int) -> Exec:
        """:meth:`request` for a coroutine (:meth:`alocked`), with no wait for the store:
        the enclave's request step changes nothing of the sealed ledger (the price is
        locked in the channel's machine, and stored with σ_U's change: pinned by
        ``tests/vault_mode/test_invoke_http.py``), and what its EXEC carries rests on no
        unstored change (the channel's open and binding, and its last REVEAL, were stored
        before: :mod:`a402.vault.mode_invoke`). A wait here would only store other calls'
        changes early; σ_U's step (:meth:`areceive`) waits for everything before it."""
        at = time.time()
        return await self.achange(lambda: self.accounts.request(channel_id, call, amount, at),
                                  stored=False)

    async def areceive(self, channel_id: bytes, message: AscMessage) -> Changed:
        """:meth:`receive`, awaited (:meth:`achange`)."""
        at = time.time()
        return await self.achange(lambda: self.accounts.receive(channel_id, message, at))

    def close(self, channel_id: bytes) -> tuple[Any, tuple[SignedStatement, ...]]:
        """Close a channel inside the enclave: the unspent rest back to the client's free."""
        return self.change(lambda: self.accounts.close_channel(channel_id))

    # ------------------------------------------------------------------ settlement

    def withdraw(self, participant: str, amount: int, key: str | None = None
                 ) -> dict[str, Any]:
        """Queue a payout of ``amount`` to ``participant`` (paid to its own address in the
        next batch). Refused if it is above the free balance (confirmed or about to be).

        ``key`` (the client's idempotency key, inside the body it signed): a withdrawal
        asked again with a key already used answers what the first one answered and queues
        nothing, whether the first is still queued or already paid, and on whichever
        replica. Safety argument: the key and its answer are sealed into the payout-queue
        row in the same write that queues the payout (:meth:`_save_payouts`), so no stored
        queue holds the payout without the key or the key without the payout; that write is
        fenced by the lease on PostgreSQL (a replica that lost the lease writes nothing),
        and the replica that takes over reads the row after the fence. The same key with
        another amount is refused (409 ``idempotency_conflict``): nothing is queued."""
        if amount <= 0:
            raise VaultModeError(400, "bad_request", "the amount is positive")
        if key is not None and not (0 < len(key) <= 64 and set(key) <= _KEY_CHARS):
            raise VaultModeError(400, "bad_request", "nothing was queued: idempotencyKey is "
                                 "1 to 64 characters of A-Z a-z 0-9 - _")
        who = address_key(participant)
        with self._lock:
            self._settled_reads()  # the balance checked below is stored
            if key is not None and (first := self.withdrawals.get((who, key))) is not None:
                if first["queued"] != str(amount):
                    raise VaultModeError(
                        409, "idempotency_conflict",
                        f"nothing was queued: idempotency key {key} already queued a "
                        f"withdrawal of {first['queued']}, not {amount}")
                return {**first, "replayed": True}
            free, _, unconfirmed = self.accounts.balance(participant)
            debt = self._debt(participant)
            have = free + unconfirmed - debt - self._queued(participant)
            if amount > have and amount <= have + debt:
                raise VaultModeError(
                    402, "debt_outstanding",
                    f"nothing was queued: you owe {debt} (a payment credited to you by a "
                    "settlement that never landed was paid to you on-chain by your claim), "
                    f"taken from your next money; {max(0, have)} free to pay out now")
            if amount > have:
                raise VaultModeError(
                    402, "insufficient_balance",
                    f"nothing was queued: {amount} asked, {max(0, have)} free to pay out "
                    "(earnings of a payment are free once its claim window has passed and a "
                    "settlement resolved it)")
            self.scheduler.request(to_checksum(participant), amount, now=time.time())
            answer = {"participant": to_checksum(participant), "queued": str(amount)}
            if key is not None:
                answer["idempotencyKey"] = key
                self.withdrawals[(who, key)] = answer
                self._open_keys.setdefault(who, []).append(key)
                while len(self.withdrawals) > WITHDRAW_KEYS_KEPT:  # the oldest first
                    del self.withdrawals[next(iter(self.withdrawals))]
            self._save_payouts()
        return {**answer, "wakeup": self.scheduler.next_wakeup()}

    def prepare_pull(self, participant: str, amount: int) -> dict[str, Any]:
        """``POST /v1/vault/pull``: a deposit the next settlement pulls from
        ``participant``'s wallet by the token's EIP-3009 ``receiveWithAuthorization``, with
        no transaction (no approval, no gas) of its own. Answers the pull's id and deadline
        and the participant's new statement, which counts the amount (a force-settle pays it
        only if the pull was made), stored before it is answered: the participant signs its
        authorization only once it holds it (:meth:`authorize_pull`; contract docs,
        "Pulled deposits")."""
        if not 0 < amount <= MAX_PAYOUT:
            raise VaultModeError(400, "bad_request",
                                 "nothing was asked: the amount is positive, at most 2^96 - 1")
        self._check_funds(participant, amount)
        # the contract compares it with the chain's clock, which may run ahead of this host's
        deadline = max(int(time.time()), self.chain_time()) + PULL_LIFETIME
        pull, statement = self.change(partial(
            self.accounts.prepare_pull, participant, amount, deadline, now=time.time()))
        return {"participant": to_checksum(participant), "pull": pull, "amount": str(amount),
                "deadline": deadline, "a402Vault": self.contract.address,
                "statement": statement_json(statement)}

    def authorize_pull(self, participant: str, pull: int, signature: bytes) -> dict[str, Any]:
        """``POST /v1/vault/pull/{id}``: ``participant``'s EIP-3009 authorization for its pull
        (:meth:`~a402.vault_contract.A402Vault.pull_authorization_digest`), checked here
        (:meth:`_check_funds` refuses a wallet with code), stored, then the pull joins the
        next settlement.
        Nothing moves until that settlement lands; the amount is spendable once the one
        after it has confirmed the pull."""
        try:  # the chain reads below run outside the service's lock
            owner, amount, deadline = self.accounts.pull_terms(pull)
        except EnclaveError as e:
            raise refused(e) from None
        if address_key(owner) != address_key(participant):
            raise VaultModeError(404, "unknown_pull", "no pull of yours has this id")
        digest = self.contract.pull_authorization_digest(owner, amount, pull, deadline,
                                                         self.accounts.ledger)
        self._check_funds(owner, amount)
        if len(signature) != 65 or recover_signer(digest, signature) != bytes.fromhex(owner[2:]):
            raise VaultModeError(400, "bad_signature", "nothing was queued: the "
                                 f"authorization is not {owner}'s signature for pull {pull}")
        self.store.put_meta(PULL_INTENT_PREFIX + str(pull), signature)  # before it is sent
        self.change(partial(self.accounts.pull_authorized, pull))
        return {"participant": to_checksum(owner), "pull": pull, "amount": str(amount),
                "deadline": deadline, "queued": True}

    def _check_funds(self, participant: str, amount: int) -> None:
        """A pull the participant's wallet cannot make now is refused before the ledger keeps
        it (review s15-1: a key holding nothing would otherwise cost every settlement the
        gas of a skipped pull, and the ledger an account, for free), and so is a wallet with
        code (a contract, or a key delegated by EIP-7702): the token would run its EIP-1271
        check, whose gas (up to the contract's ``PULL_GAS``, 250,000) the vault pays whether
        or not it lets the pull through (review s16-1). A key that delegates only after its
        pull was authorized costs one settlement that gas once (its pull is then dropped, and
        it cannot ask again); ``MAX_PULLS`` keeps even a settlement full of them landable."""
        owner = self.chain.w3.to_checksum_address(participant)
        if self.chain.w3.eth.get_code(owner):
            raise VaultModeError(400, "pull_from_contract", (
                f"nothing was queued: {owner} has code (a contract wallet, or a key delegated "
                "by EIP-7702); deposit by transaction instead (`a402 vault deposit` without "
                "--pull)"))
        token = self.chain.w3.eth.contract(
            address=self.chain.w3.to_checksum_address(self.contract.token), abi=_FUNDS_ABI)
        has = int(token.functions.balanceOf(owner).call())
        if has < amount:
            raise VaultModeError(402, "pull_unfunded", (
                f"nothing was queued: the wallet holds {has}; a pull of {amount} needs "
                "that much in it"))

    def _debt(self, participant: str) -> int:
        """What ``participant`` owes (a claimed payment a voided settlement had credited it
        and it had spent): taken from its next money, so not payable before."""
        return int(self.accounts.payable(participant, 0)[1])

    def _sign(self, batch: Batch | None) -> SignedSettlement | None:
        """Have the enclave sign a settlement paying ``batch`` (and confirming deposits,
        resolving pending payments past their deadline).

        Liveness: the enclave refuses a whole settlement if one payout in it is above what
        its payee can be paid (:meth:`~a402.vault_accounts.VaultAccountsCode.settle`), so the
        batch is first filtered by the enclave's own check (:meth:`_payable`), read under the
        same hold of the lock and at the same ``now`` as the signing: nothing can change in
        between, so a payout it keeps is one the enclave pays, and one payee's debt or
        shortfall drops that payee's request (with its reason), never everybody's. A dropped
        request leaves the queue with the batch (nothing was paid for it; its money stays
        in its account); if signing fails otherwise, the kept requests wait again.

        The batch was taken out of the queue (in flight) by the caller: every failure here
        puts it back (:meth:`_unsigned`), a node's error before the signing included (review
        S11: it stayed in flight, never taken into a batch again nor paid before a restart).
        Nothing was signed then, so waiting again pays nobody twice."""
        try:
            now = self.chain_time()
            active = set() if batch is None else self._force_settling(batch)  # RPC: unlocked
        except BaseException:
            self._unsigned(batch)
            raise
        # one hold of the lock from signing to the queue's update: nobody reads the ledger
        # already paying the batch while the queue still lists it (counted twice)
        with self._lock:
            pairs = [] if batch is None else self._payable(batch, now, active)
            try:
                settled = self.change(lambda: self.accounts.settle(pairs, now=now),
                                      signing=batch)
            except BaseException as e:  # not signed (or its write failed: service broken)
                if batch is not None:
                    kept = {address_key(p) for p, _ in pairs}
                    self.scheduler.done(Batch(tuple(
                        p for p in batch.payouts if address_key(p.participant) not in kept),
                        batch.due))
                    self._unsigned(Batch(tuple(
                        p for p in batch.payouts if address_key(p.participant) in kept),
                        batch.due))
                if isinstance(e, VaultModeError) and e.reason == "nothing_to_settle":
                    return None
                raise
            if batch is not None:
                self.scheduler.done(batch)
                for p in batch.payouts:  # paid (or dropped and marked already)
                    self._batch_keys.pop(address_key(p.participant), None)
                self._save_payouts()
        return settled.settlement

    def _take_keys(self, batch: Batch | None) -> None:
        """Under the lock: ``batch`` was taken out of the queue; the keys of the withdrawals
        its payouts sum are those asked until now (a later one waits in the queue apart)."""
        for p in () if batch is None else batch.payouts:
            who = address_key(p.participant)
            self._batch_keys[who] = self._batch_keys.get(who, []) + self._open_keys.pop(who, [])

    def _mark_dropped(self, participant: str, error: str, why: str) -> None:
        """Under the lock: the batch dropped ``participant``'s payout: the withdrawals it
        summed answer so when asked again (review S11: they answered ``queued`` for ever,
        while nothing would be paid for them)."""
        for key in self._batch_keys.pop(address_key(participant), []):
            answer = self.withdrawals.get((address_key(participant), key))
            if answer is not None:
                answer.update({"payoutDropped": error, "message": (
                    why if why.startswith("nothing was paid") else f"nothing was paid: {why}")})

    def _unsigned(self, batch: Batch | None) -> None:
        """``batch`` (taken for a signing that failed; less the requests dropped) waits
        again, in the stored queue too (best effort: that queue still holds it in flight,
        which a restart loads as waiting)."""
        if batch is None:
            return
        with self._lock:
            self.scheduler.failed(batch)
            for p in batch.payouts:
                who = address_key(p.participant)
                back = self._batch_keys.pop(who, [])
                if back:
                    self._open_keys[who] = back + self._open_keys.get(who, [])
            try:
                self._save_payouts()
            except Exception as e:  # the signing's own error is the one raised
                log.warning("payout queue not stored after a failed signing: %s", e)

    def _force_settling(self, batch: Batch) -> set[str]:
        """The batch's payees whose force-settle the contract records (read on-chain)."""
        return {address_key(p.participant) for p in batch.payouts
                if self.contract.status(p.participant) is not AccountStatus.ACTIVE}

    def _payable(self, batch: Batch, now: int, exiting: set[str]) -> list[tuple[str, int]]:
        """Under the lock: the batch's payouts the enclave signs at ``now``
        (:meth:`~a402.vault_accounts.VaultAccountsCode.payable`, the check ``settle`` makes).
        A request above what its participant can be paid now (a channel cannot take it
        since it asked, :meth:`open_channel`; a deposit it counted on that the chain then
        dropped; a debt from a claim reported after it asked), or of a participant that is
        force-settling, is dropped with its machine-readable ``error`` and its reason in
        :attr:`dropped` (nothing was paid for it): one such request must not hold back
        everybody else's payout."""
        out = []
        for p in batch.payouts:
            most, debt = self.accounts.payable(p.participant, now)
            error = why = None
            if address_key(p.participant) in exiting:
                error, why = "participant_exiting", "the participant is force-settling"
            elif p.amount > most and p.amount <= most + debt:
                error, why = "debt_outstanding", (
                    f"nothing was paid: {p.amount} asked; the participant owes {debt} (a "
                    "payment credited to it by a settlement that never landed was paid to it "
                    f"on-chain by its claim), taken from its next money; {most} payable now")
            elif p.amount > most:
                error, why = "insufficient_balance", (
                    f"nothing was paid: {p.amount} asked, {most} payable now")
            if error is None:
                out.append((p.participant, p.amount))
            else:
                log.warning("payout to %s dropped: %s", p.participant, why)
                self.dropped.append({"participant": p.participant, "amount": str(p.amount),
                                     "error": str(error), "reason": str(why)})
                del self.dropped[:-DROPPED_KEPT]
                self._mark_dropped(p.participant, str(error), str(why))
        return out

    def land(self) -> list[Landed]:
        """Send every settlement the enclave signed that the chain does not have yet, in
        epoch order (idempotent: the chain takes each epoch once)."""
        out: list[Landed] = []
        with self._landing:  # the worker and settle-now: one sender at a time
            while True:
                landed = self.contract.last_epoch()
                # what the chain has: accounts whose money rests on it may pay again
                self.accounts.chain_epoch(landed)
                self._report_pulls()
                signed = self._stored_settlement_after(landed)
                if signed is None:
                    return out
                out.append(self._land_next(signed))

    def _stored_settlement_after(self, landed: int) -> SignedSettlement | None:
        """The settlement to land after epoch ``landed``, once a ledger holding it is stored.

        Read under the lock, after everything before it is stored: a settlement another
        thread is signing is in the enclave before its ledger is written (:meth:`_sign`
        writes under the lock); landed before that write commits, a crash would restore a
        ledger that does not know the chain's epoch (review S10: its payees paid on-chain and
        still credited, the enclave signing that epoch again)."""
        with self._lock:
            self._settled_reads()
            if landed >= self.accounts.epoch:
                return None
            return self.accounts.settlement_after(landed)

    def _report_pulls(self) -> None:
        """The chain's word on each pull of a landed settlement (review s15-4): ``lastEpoch``
        and every ``pulled`` read at one block, at the depth deposits are read at
        (``config.confirmations``): a lagging node or a reorg cannot have the enclave sign a
        pull check the chain then refuses for good."""
        if not self.accounts.pulls_sent(self.accounts.epoch):
            return
        head = self._reported_head()
        reported = self.accounts.pulls_sent(self.contract.last_epoch(head))
        for pull in reported:
            made = self.contract.pulled(pull, head)
            self.change(partial(self.accounts.pull_landed, pull, made))
        # a pull is tried in the one settlement that lands it (the next one checks it): its
        # authorization is spent either way, once that settlement is as deep as this read
        # (deleted at its receipt, a reorganisation that dropped it had it sent again with
        # no authorization: the pull skipped, the participant to ask again)
        self.store.delete_metas(PULL_INTENT_PREFIX + str(pull) for pull in reported)

    def _land_next(self, signed: SignedSettlement) -> Landed:
        receipt = land(self.contract, self.config.account, signed,
                       lambda pull: self.store.get_meta(PULL_INTENT_PREFIX + str(pull)))
        landed = Landed(signed.epoch, _hex(receipt["transactionHash"]),
                        len(unpack_payouts(signed.payouts)), int(receipt["blockNumber"]))
        self._record_landed(landed)
        return landed

    def tick(self, now: float | None = None) -> list[Landed]:
        """One worker round: deposits, a due batch (or a settlement that only confirms
        deposits / resolves payments past their deadline), landing, the watchtower."""
        at = time.time() if now is None else now
        self.observe_deposits()
        self._expire_requests(at)
        with self._lock:
            batch = self.scheduler.due(now=at)
            if batch is not None:
                self._take_keys(batch)
                self._save_payouts()  # kept in the stored queue (in flight) until signed
        totals = self.accounts.totals()
        # a payment is pending for its whole claim window: only one past its deadline (by
        # the chain's clock, which the signing reads) calls for a settlement (review
        # s16-rev2-2: any pending one had every round sign, pulls never waited their window)
        if (batch is not None or totals["unconfirmed"] or self.accounts.replacement_due
                or (totals["pending"] and self.accounts.payments_due(self.chain_time()))
                or self._pulls_ripe(at)):
            self._sign(batch)  # nothing_to_settle (nothing else due): nothing signed
            # the pulls waiting went along and the next ones wait anew; but pulls still due
            # now are those past MAX_PULLS (none is reported made before landing, below):
            # they have waited already and go in the next round's settlement, full itself
            self._pulls_since = (at - self.config.schedule.window
                                 if self.accounts.pulls_due else None)
        try:
            landed = self._land_quietly()
        finally:
            # Whatever landing did (review s16-2: a settlement the node refuses, e.g. over
            # the gas cap, raised here every round and the watchtower never ran: a stale
            # exit went unanswered). exiting() marks accounts in the enclave: stored like
            # every other change; and the watchtower may land settlements itself: one sender
            # at a time (lock order: landing, then the ledger's)
            with self._landing:
                # the last 100 (a force-settle it cannot answer yet is retried every round)
                self.answers = (self.answers + self.change(self._watch))[-100:]
        return landed

    def _pulls_ripe(self, now: float) -> bool:
        """Whether the pulls waiting for a settlement (to be made, or to be checked) call for
        one now: once the first of them has waited the scheduler's window, so that one
        settlement carries many (its own cost shared; up to ``MAX_PULLS`` made in each). A
        settlement sent earlier for payouts, deposits or payments takes them along. The wait
        is this process's: a restarted one waits a window again (a pull's deadline is a day
        away; the enclave drops one that passed)."""
        if not self.accounts.pulls_due:
            self._pulls_since = None
            return False
        if self._pulls_since is None:
            self._pulls_since = now
        return now - self._pulls_since >= self.config.schedule.window

    def _watch(self) -> list[Answer]:
        """The watchtower's poll (under the lock), once everything before it is stored: the
        statement it answers a force-settle with goes on-chain, so it must be one no restart
        can forget (review S10: a σ_U's statement in a group write still in flight, sent as
        the answer, then the write lost: the chain names a statement the restored ledger
        does not know, and the client's exit loses the δ no provider was ever paid)."""
        self._settled_reads()
        return self.watchtower.poll()

    def _expire_requests(self, now: float) -> None:
        """Apply Δ_lock to every LOCKED channel (review S9-8): a request whose provider never
        replied expires (no σ_U was signed, nothing can be claimed for it) and the channel
        is OPEN again, so its client can pay on it or close it."""
        for channel_id, _, _, status, _ in self.accounts.channels():
            if status is Status.LOCKED:
                try:
                    self.change(partial(self.accounts.poll, channel_id, now))
                except (EnclaveError, ASCError) as e:  # logged; the next round tries again
                    log.warning("vault mode: Δ_lock of channel %s: %s", channel_id.hex(), e)

    def _land_quietly(self) -> list[Landed]:
        try:
            return self.land()
        except (TransactionFailed, ValueError) as e:  # too early (notBefore) or a fork
            log.warning("settlement not landed yet: %s", e)
            return []

    def settle_now(self, progress: Callable[[str], None] | None = None) -> list[Landed]:
        """The operator's override: every queued payout (and deposit, and payment past its
        deadline) in settlements now, ignoring the window, the jitter and the minimum (fewer
        payees per batch: weaker privacy, the operator's choice); landed before returning."""
        say = progress or (lambda _: None)
        say("reading deposits")
        self.observe_deposits()
        with self._lock:
            batches: list[Batch | None] = [*self.scheduler.take_all(now=time.time())] or [None]
            for taken in batches:
                self._take_keys(taken)
            self._save_payouts()  # kept in the stored queue (in flight) until signed
        for n, batch in enumerate(batches, 1):
            say(f"the enclave signs settlement {n} of {len(batches)}")
            try:
                self._sign(batch)
            except BaseException:  # the batches not tried yet wait again (review S11)
                for rest in batches[n:]:
                    self._unsigned(rest)
                raise
        say("landing on-chain")
        return self.land()


def _hex(value: Any) -> str:
    text = bytes(value).hex() if isinstance(value, bytes | bytearray) else str(value)
    return text if text.startswith("0x") else "0x" + text


class VaultModeWorker:
    """Runs :meth:`VaultModeService.tick` every ``poll_interval`` seconds."""

    def __init__(self, service: VaultModeService) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None
        self.last_tick: float | None = None
        self.errors = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="a402-vault-mode-worker")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.service.tick)
                self.last_tick = time.time()
            except Exception:  # logged; the next round tries again
                self.errors += 1
                log.exception("vault-mode worker round failed")
            await asyncio.sleep(self.service.config.poll_interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def statement_json(signed: SignedStatement) -> dict[str, Any]:
    """A statement as handed to its participant (what ``initForceSettle`` takes)."""
    s = signed.statement
    return {"participant": s.participant, "index": s.index, "balance": str(s.balance),
            "locked": str(s.locked), "epoch": s.epoch, "nonce": s.nonce,
            "deposited": str(s.deposited), "pull": s.pull, "pulling": str(s.pulling),
            "transferred": str(s.transferred), "signature": "0x" + signed.signature.hex()}


def statement_from_json(kept: Mapping[str, Any]) -> SignedStatement:
    """A statement as :func:`statement_json` wrote it (``KeyError``, ``ValueError`` or
    ``TypeError`` for anything else)."""
    return SignedStatement(
        BalanceStatement(str(kept["participant"]), int(kept["index"]), int(kept["balance"]),
                         int(kept["locked"]), int(kept["epoch"]), int(kept["nonce"]),
                         int(kept["deposited"]), int(kept["pull"]), int(kept["pulling"]),
                         int(kept.get("transferred", 0))),
        bytes.fromhex(str(kept["signature"]).removeprefix("0x")))


def statements_json(statements: Sequence[SignedStatement]) -> list[dict[str, Any]]:
    return [statement_json(s) for s in statements]


__all__ = [
    "Landed",
    "NonceHold",
    "VaultModeConfig",
    "VaultModeError",
    "VaultModeService",
    "VaultModeWorker",
    "statement_json",
]
