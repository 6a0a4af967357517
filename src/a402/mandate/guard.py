"""One mandate, enforced: revocation read, decision and reservation, for any paying path.

A payer holds a :class:`MandateGuard`. The ``exact`` payers (the httpx client,
``a402 pay``, the A2A client) pay with **one durable commit per payment**:

1. :meth:`MandateGuard.admit` before signing: the owner's confirmation is
   obtained if the amount needs it, and the registry read starts (on a worker
   thread). Nothing is written.
2. The payer signs **in memory** (an EIP-3009 authorization by the wallet's key
   in this process).
3. :meth:`MandateGuard.commit` before the signed payload leaves the process: in
   one write transaction (SQLite ``BEGIN IMMEDIATE``; ``SELECT ... FOR UPDATE``
   on the mandate's row on PostgreSQL) the spend store decides against the
   totals it reads under that lock and reserves the amount already marked
   ``signed``, the payment's evidence record (with the payload as it will be
   sent) is appended, and, before ``COMMIT``, the registry's answer is awaited (read
   again there if it was asked for more than ``PREFETCH_MAX_AGE`` seconds before,
   e.g. while the payer queued behind others for the lock): a
   revoked or unreadable mandate, or a refusal by the store, rolls everything
   back and raises :class:`MandateRefused`. Only after the commit returns is the
   payload sent.
4. :meth:`MandateGuard.settle` queues the outcome (the settlement or the
   receipt, the status, the result's hash) as a second, signed record naming the
   first. It is written in the next payment's commit, or by :meth:`flush` (after
   ``flush_after`` seconds with no payment, at :meth:`close`, at interpreter exit).

Why the signature may come before the reservation. A signature made in memory
moves nothing until someone other than this process holds it. A crash before
step 3's commit leaves a signature nobody ever saw: nothing was sent, nothing is
reserved, nothing is spent. A crash after it leaves a payment reserved (its
amount counts against the budget) and recorded, with no outcome: the audit
shows it as sent with no outcome recorded, which errs toward spending less. A
refusal at step 3 (a concurrent payer took the rest of the budget, the owner
revoked) discards the signature, which never left. This holds only for a signer
inside this process: a remote signer that keeps what it signs is outside it.

What a crash loses of step 4: the outcomes queued since the last commit (for a
payer paying one request at a time, the last payment's). Its money state is not
lost: the payment is reserved and recorded, and its EIP-3009 nonce (in the
record) says on-chain whether it settled (``a402 receipt``).

The older order (:meth:`MandateGuard.reserve` before signing, then
:meth:`MandateGuard.record` marking it signed with the evidence, or
:meth:`MandateGuard.release` if signing failed) stays for payers that sign
outside this process (the vault pays ``a402`` calls in its enclave).

The guard refuses at construction a mandate that is not for the payer's key
(``mandate_wrong_agent``), so a misconfigured agent finds out before its
first 402, not at it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from a402.evm.address import address_key
from a402.mandate.document import Confirmation, SignedMandate
from a402.mandate.evidence import EvidenceLog
from a402.mandate.policy import (
    MANDATE_NEEDS_CONFIRMATION,
    MANDATE_WRONG_AGENT,
    Decision,
    ProposedPayment,
    Spent,
    decide,
    period_index,
)
from a402.mandate.registry import RevocationCheck, RevocationUnknown
from a402.mandate.spend import SIGNED, MandateRefused, Reservation, SpendStore

log = logging.getLogger(__name__)

_READS_LOCK = threading.Lock()
_ATTEMPTS = 20
PREFETCH_MAX_AGE = 1.0
"""Seconds a prefetched registry read stays usable (:meth:`MandateGuard.prefetch`)."""
DEFAULT_FLUSH_AFTER = 1.0
"""Seconds without a payment after which queued outcomes are written on their own."""

_PENDING: weakref.WeakSet[MandateGuard] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:  # outcomes still queued when the interpreter exits
    for guard in list(_PENDING):
        try:
            guard.flush()
        except Exception as e:  # pragma: no cover - logged, the payments stand
            log.error("queued payment outcomes could not be written at exit: %s", e)


@dataclass
class Admission:
    """A payment admitted for signing (:meth:`MandateGuard.admit`): nothing written yet."""

    payment: ProposedPayment
    confirmation: Confirmation | None
    read: Future[bool] | None
    read_started: float = 0.0
    """When ``read`` was started (``time.monotonic``): :meth:`MandateGuard.commit` reads
    again, under its lock, a read older than ``PREFETCH_MAX_AGE`` by then."""


@dataclass(frozen=True)
class Committed:
    """A payment reserved, marked signed and recorded in one commit: its reservation
    and the sequence number of its evidence record."""

    reservation: Reservation
    seq: int
_READS: ThreadPoolExecutor | None = None


def _registry_reads() -> ThreadPoolExecutor:
    """The workers that read registries while the spend store reserves (shared)."""
    global _READS
    with _READS_LOCK:
        if _READS is None:
            _READS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mandate-registry")
        return _READS


Confirm = Callable[[ProposedPayment], Confirmation | None]
"""Asks the owner to confirm a payment above the threshold: their signed
:class:`Confirmation`, or None (then the payment is refused)."""


class MandateGuard:
    """``signed`` enforced for ``agent`` with ``store``'s durable spend.

    ``revocation``: the registry check (:meth:`RevocationCheck.for_mandate`).
    Passing None skips it, and with it the owner's brake: only for a mandate
    whose registry cannot be reached by design (an offline test), never by default.
    ``confirm``: how to obtain the owner's confirmation above ``confirm_above``.
    """

    def __init__(
        self,
        signed: SignedMandate,
        *,
        agent: str,
        store: SpendStore,
        revocation: RevocationCheck | None,
        confirm: Confirm | None = None,
        clock: Callable[[], float] = time.time,
        flush_after: float | None = DEFAULT_FLUSH_AFTER,
    ) -> None:
        if address_key(agent) != address_key(signed.mandate.agent):
            raise MandateRefused(MANDATE_WRONG_AGENT, f"the mandate is for "
                                 f"{signed.mandate.agent}, this payer is {agent}")
        self.signed_mandate = signed
        self.agent = agent
        self.store = store
        self.revocation = revocation
        self.confirm = confirm
        self.clock = clock
        self.flush_after = flush_after
        self._evidence: EvidenceLog | None = None
        self._pending: list[tuple[dict[str, Any], Callable[[bytes], bytes]]] = []
        self._pending_lock = threading.Lock()
        self._writing = 0  # outcomes a writer took from the queue and has not committed
        self._timer: threading.Timer | None = None
        self._last_write = 0.0  # (monotonic) the last commit or queued outcome
        self._seen: tuple[int, Spent] | None = None  # (period, totals) after the last commit
        self._prefetched: tuple[float, Future[bool]] | None = None
        self._latest_fresh: tuple[float, Future[bool]] | None = None  # (:meth:`_fresh`)

    @property
    def evidence(self) -> EvidenceLog:
        """The evidence chain next to the spend store (:mod:`a402.mandate.evidence`)."""
        with self._pending_lock:  # one log per guard, even when payers start at once
            if self._evidence is None:
                self._evidence = EvidenceLog(self.store.engine)
            return self._evidence

    @property
    def mandate_hash(self) -> str:
        return self.signed_mandate.hash_hex

    def precheck(self, payment: ProposedPayment) -> Decision:
        """The decision with the spend as last committed, without the registry, the
        owner's confirmation, a lock or a reservation: to set aside offers the mandate
        cannot allow. :meth:`reserve` decides for real. A ``mandate_needs_confirmation``
        here means "ask the owner at reserve time"."""
        now = int(self.clock())
        index = period_index(self.signed_mandate.mandate, now)
        with self._pending_lock:
            seen = self._seen
        if seen is not None and seen[0] == index:
            # The totals this guard's last commit left (another payer may have spent
            # since: the commit decides under the lock). A refusal is made on a fresh read.
            decision = decide(self.signed_mandate, payment, seen[1], now=now)
            if decision:
                return decision
        spent = self.store.spent(self.signed_mandate, now=now)
        return decide(self.signed_mandate, payment, spent, now=now)

    def _confirmation(self, payment: ProposedPayment) -> Confirmation | None:
        m = self.signed_mandate.mandate
        if not m.confirm_above or payment.amount <= m.confirm_above or self.confirm is None:
            return None
        return self.confirm(payment)

    def reserve(self, payment: ProposedPayment) -> Reservation:
        """Reserve ``payment`` under the mandate or raise ``MandateRefused`` (module doc).

        The registry read and the spend store's transaction run at the same time (the
        read on a worker thread, from the moment this is called, as fresh as before),
        and nothing is returned, so nothing can be signed, before both answered: a
        reservation made while the registry says revoked or cannot be read is
        released again (nothing was signed for it) and the payment refused as
        ``mandate_revoked`` or ``mandate_revocation_unknown``. A crash between the two
        leaves a ``reserved`` row that still counts: the budget errs toward less.
        A refusal by the store is reported as the registry's when the registry
        refuses too (the owner's brake is the reason that matters)."""
        confirmation = self._confirmation(payment)
        if self.revocation is None:
            return self.store.reserve(self.signed_mandate, payment, now=int(self.clock()),
                                      revoked=False, confirmation=confirmation)
        read = _registry_reads().submit(self.revocation.revoked, self.signed_mandate)
        try:
            reservation = self.store.reserve(self.signed_mandate, payment,
                                             now=int(self.clock()), revoked=False,
                                             confirmation=confirmation)
        except BaseException:
            self._brake(read, payment)
            raise
        try:
            self._brake(read, payment)
        except BaseException:
            self.store.release(reservation)
            raise
        return reservation

    def _brake(self, read: Future[bool], payment: ProposedPayment) -> None:
        """Raise ``MandateRefused`` if the registry read says revoked or failed."""
        try:
            revoked = read.result()
        except RevocationUnknown as e:
            raise MandateRefused(e.reason, f"the mandate's registry could not be read "
                                 f"({e}), so it is treated as revoked") from e
        if revoked:
            decision = decide(self.signed_mandate, payment, Spent(), now=int(self.clock()),
                              revoked=True)
            raise MandateRefused.of(decision)

    def signed(self, reservation: Reservation, payment_ref: str | None = None) -> None:
        self.store.signed(reservation, payment_ref)

    def record(self, fields: dict[str, Any], sign_digest: Callable[[bytes], bytes], *,
               reservation: Reservation | None = None, payment_ref: str | None = None) -> int:
        """Append the payment's evidence record (:mod:`a402.mandate.evidence`) and, in
        the same transaction, mark its ``reservation`` signed (step 2 above, done here
        after sending instead of before: until this commits the reservation is
        ``reserved``, whose amount counts all the same, and nothing releases it once
        the payment left)."""
        also = None
        if reservation is not None:
            held = reservation
            # The record names its reservation: the audit finds a signed payment whose
            # record was deleted (:mod:`a402.mandate.evidence`).
            fields = {**fields, "reservation": held.id}

            def also(conn: Connection) -> None:
                self.store.mark_signed(conn, held, payment_ref)
        return self.evidence.append(fields, sign_digest, also=also)

    def release(self, reservation: Reservation) -> bool:
        return self.store.release(reservation)

    # --- one commit per payment (module doc, steps 1-4)

    def prefetch(self) -> None:
        """Start the registry read now, for a payment that may follow shortly (the paying
        client calls this as it sends a request, so the read overlaps the round trip that
        may bring a 402). :meth:`admit` uses it if it started at most
        ``PREFETCH_MAX_AGE`` seconds before; otherwise it reads afresh. The brake is then
        as fresh as the request: a revocation in a block that appears during that round
        trip stops the next payment, not this one."""
        if self.revocation is None:
            return
        read = _registry_reads().submit(self.revocation.revoked, self.signed_mandate)
        with self._pending_lock:
            self._prefetched = (time.monotonic(), read)

    def _registry_read(self) -> tuple[Future[bool] | None, float]:
        """The read to brake with, and when it started."""
        if self.revocation is None:
            return None, 0.0
        with self._pending_lock:
            taken, self._prefetched = self._prefetched, None
        if taken is not None and time.monotonic() - taken[0] <= PREFETCH_MAX_AGE:
            return taken[1], taken[0]
        started = time.monotonic()
        return _registry_reads().submit(self.revocation.revoked, self.signed_mandate), started

    def admit(self, payment: ProposedPayment) -> Admission:
        """Step 1: the owner's confirmation (if the amount needs it) and the registry
        read started. Nothing is written; a payment refused later leaves nothing."""
        confirmation = self._confirmation(payment)
        m = self.signed_mandate.mandate
        if m.confirm_above and payment.amount > m.confirm_above and confirmation is None:
            raise MandateRefused(MANDATE_NEEDS_CONFIRMATION, f"{payment.amount} is above the "
                                 f"confirmation threshold {m.confirm_above} and the owner did "
                                 "not confirm it")
        return Admission(payment, confirmation, *self._registry_read())

    def commit(self, admission: Admission, fields: dict[str, Any],
               sign_digest: Callable[[bytes], bytes], *,
               payment_ref: str | None = None) -> Committed:
        """Step 3: reserve ``admission``'s payment as signed, append its evidence record
        (``fields``, plus the reservation's id) and any queued outcomes, all in one
        transaction that commits only if the registry, awaited before ``COMMIT``, says
        the mandate stands. ``MandateRefused`` (the store's or the registry's reason):
        nothing was written, the signature must be discarded unsent.

        The write lock is held until the registry answered: the read started at
        :meth:`admit`, so the wait is what the read takes beyond the signing and the
        transaction's own work; payers sharing the store queue behind it."""
        payment = admission.payment
        with self.store.writer:  # this process's payers queue here, not in the pool
            return self._commit(admission, payment, fields, sign_digest, payment_ref)

    def _commit(self, admission: Admission, payment: ProposedPayment, fields: dict[str, Any],
                sign_digest: Callable[[bytes], bytes], payment_ref: str | None) -> Committed:
        self.store.register(self.signed_mandate)
        self.evidence.ready()
        queued = self._take_pending()
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    with self.store.engine.begin() as conn:
                        reservation = self.store.reserve_in(
                            conn, self.signed_mandate, payment, now=int(self.clock()),
                            confirmation=admission.confirmation, state=SIGNED,
                            payment_ref=payment_ref)
                        record = {**fields, "reservation": reservation.id}
                        seqs = self.evidence.append_in(conn, [*queued, (record, sign_digest)])
                        if admission.read is not None:
                            self._fresh(admission)
                            self._brake(admission.read, payment)  # raises: rolled back
                    break
                except IntegrityError:
                    if attempt == _ATTEMPTS - 1:
                        raise
            self._written(queued)
        except MandateRefused:
            self._give_back(queued)
            with self._pending_lock:
                self._seen = None  # the next pre-check reads the store
            raise
        except BaseException:
            self._give_back(queued)
            if admission.read is not None:  # the brake is the reason that matters
                self._brake(admission.read, payment)
            raise
        with self._pending_lock:
            self._last_write = time.monotonic()
            if reservation.spent_after is not None:
                self._seen = (reservation.period_index, reservation.spent_after)
        return Committed(reservation, seqs[-1])

    def _fresh(self, admission: Admission) -> None:
        """Replace ``admission``'s registry read by a new one if it started more than
        ``PREFETCH_MAX_AGE`` ago. Called under the write lock, just before the brake is
        awaited: however long the payer signed or queued behind other payers, the
        answer it commits on was asked for at most that long before, so a revocation
        in a block older than that stops it."""
        assert self.revocation is not None
        now = time.monotonic()
        if now - admission.read_started <= PREFETCH_MAX_AGE:
            return
        with self._pending_lock:
            latest = self._latest_fresh
            if latest is None or now - latest[0] > PREFETCH_MAX_AGE:
                # (one read a second at most for payers queued behind each other)
                latest = (now, _registry_reads().submit(self.revocation.revoked,
                                                        self.signed_mandate))
                self._latest_fresh = latest
        admission.read_started, admission.read = latest

    def _take_pending(self) -> list[tuple[dict[str, Any], Callable[[bytes], bytes]]]:
        """The queued outcomes, now this writer's (so two commits never write one twice).
        They count as :attr:`pending` until :meth:`_written` or :meth:`_give_back`."""
        with self._pending_lock:
            queued, self._pending = self._pending, []
            self._writing += len(queued)
        return queued

    def _written(self, queued: list[tuple[dict[str, Any], Callable[[bytes], bytes]]]) -> None:
        """Outcomes a committed transaction wrote: durable, no longer pending."""
        if queued:
            with self._pending_lock:
                self._writing -= len(queued)

    def _give_back(self, queued: list[tuple[dict[str, Any], Callable[[bytes], bytes]]]
                   ) -> None:
        """Outcomes a rolled-back transaction did not write: queued again, first."""
        if queued:
            with self._pending_lock:
                self._writing -= len(queued)
                self._pending[:0] = queued

    def settle(self, committed: Committed, fields: dict[str, Any],
               sign_digest: Callable[[bytes], bytes]) -> None:
        """Step 4: queue the outcome of ``committed`` (``fields``: settlement, status,
        result) as a record naming the payment's record (``of``) and reservation. It
        is written with the next :meth:`commit` or by :meth:`flush` (module doc: what a
        crash before then loses)."""
        record = {**fields, "kind": "outcome", "of": committed.seq,
                  "reservation": committed.reservation.id}
        with self._pending_lock:
            self._pending.append((record, sign_digest))
            self._last_write = time.monotonic()
            _PENDING.add(self)
            self._arm(self.flush_after)

    def _arm(self, delay: float | None) -> None:
        """Start the idle timer if none runs (holding ``_pending_lock``)."""
        if delay is not None and self._timer is None:
            self._timer = threading.Timer(delay, self._idle_flush)
            self._timer.daemon = True
            self._timer.start()

    def _idle_flush(self) -> None:
        """The timer: write the queue once ``flush_after`` seconds passed with no commit
        and no new outcome (while payments keep coming, their commits write it)."""
        assert self.flush_after is not None
        with self._pending_lock:
            self._timer = None
            quiet = time.monotonic() - self._last_write
            if not self._pending:
                return
            if quiet < self.flush_after:
                self._arm(self.flush_after - quiet)
                return
        try:
            self._write_pending()
        except Exception as e:  # the payments stand; the next commit tries again
            log.error("queued payment outcomes could not be written: %s: %s",
                      type(e).__name__, e)

    @property
    def pending(self) -> int:
        """Outcomes not yet durable: queued, or taken by a writer whose commit has not
        returned (so ``pending == 0`` means every settled outcome is in the log)."""
        with self._pending_lock:
            return len(self._pending) + self._writing

    def flush(self) -> None:
        """Write the queued outcomes now, in one commit."""
        self._write_pending()

    def _write_pending(self) -> None:
        """The queue is taken under the store's write lock, which a writer holds until its
        commit returned: a flush (``close``, the exit flush) that finds the queue empty
        because the idle timer or a payment's commit took it returns only once that
        write is durable (or failed and gave the outcomes back, which it then writes)."""
        with self.store.writer:
            queued = self._take_pending()
            if not queued:
                return
            try:
                self.evidence.ready()
                for attempt in range(_ATTEMPTS):
                    try:
                        with self.store.engine.begin() as conn:
                            self.evidence.append_in(conn, queued)
                        self._written(queued)
                        return
                    except IntegrityError:
                        if attempt == _ATTEMPTS - 1:
                            raise
            except BaseException:
                self._give_back(queued)
                raise

    def close(self) -> None:
        """Flush the queued outcomes and stop the idle timer (the store stays open)."""
        with self._pending_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()
