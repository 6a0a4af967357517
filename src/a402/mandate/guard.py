"""One mandate, enforced: revocation read, decision and reservation, for any paying path.

A payer (the httpx client, ``a402 pay``; later the vault and the A2A client)
holds a :class:`MandateGuard` and, for every payment, in this order:

1. :meth:`MandateGuard.reserve` before signing: the registry is read (a
   revoked or unreadable mandate refuses) while the spend store decides and
   reserves atomically; it returns once both answered. A refusal is :class:`MandateRefused` with a
   ``mandate_*`` reason, and nothing was reserved or signed.
2. sign, then :meth:`MandateGuard.signed`;
3. or, only if signing failed, :meth:`MandateGuard.release`.

The guard refuses at construction a mandate that is not for the payer's key
(``mandate_wrong_agent``), so a misconfigured agent finds out before its
first 402, not at it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection

from a402.evm.address import address_key
from a402.mandate.document import Confirmation, SignedMandate
from a402.mandate.evidence import EvidenceLog
from a402.mandate.policy import (
    MANDATE_WRONG_AGENT,
    Decision,
    ProposedPayment,
    Spent,
    decide,
)
from a402.mandate.registry import RevocationCheck, RevocationUnknown
from a402.mandate.spend import MandateRefused, Reservation, SpendStore

_READS_LOCK = threading.Lock()
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
        self._evidence: EvidenceLog | None = None

    @property
    def evidence(self) -> EvidenceLog:
        """The evidence chain next to the spend store (:mod:`a402.mandate.evidence`)."""
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
