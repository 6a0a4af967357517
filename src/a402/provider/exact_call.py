"""One paid x402 ``exact``/``upto`` call, driven through the one server-side flow.

:func:`a402.exact.serve.exact_flow` decides (pure); :class:`ExactCall` runs what it
decides with a replay ledger (:class:`~a402.provider.ledger.PaymentLedger`) and a
facilitator (:class:`~a402.facilitator.client.FacilitatorClient`), the same way for
every medium that sells a call: the HTTP middleware (:mod:`a402.provider.middleware`),
the MCP paywall (:mod:`a402.mcp.paywall`) and the A2A agent
(:mod:`a402.agents.a2a_provider`). A medium gives only what is its own: how to serve
(run the app, the tool, the function) and whether a resumed payment can still be served
here; it then renders the :data:`~a402.exact.serve.Outcome` in its own form (an HTTP
answer, a tool result, a task state).

What this driver does, hence what every medium does alike:

- the ledger operations are the flow's, as the flow names them (acquire, release, mark
  pending, mark settled); ``/verify`` and ``/settle`` go to the facilitator with the
  payload and the requirements the medium accepted, and a facilitator that gives no
  verdict (:class:`~a402.facilitator.client.FacilitatorError`) is the flow's
  :class:`~a402.exact.serve.NoVerdict`, never an exception;
- a ``/settle`` that fails with anything but a facilitator error (a bug, an error of
  the client or the network that is not a :class:`FacilitatorError`) is a settle of
  unknown outcome, hence a :class:`NoVerdict` too (``unexpected_settle_error``): the
  payment is marked pending, its result held, and the payer told it may be settled and
  to resend the same payment, as for a lost answer; raised, it would reach the payer as
  a bare server error (a 500, a tool error, a failed task) that says nothing of money
  that may have moved, and lose the result it paid for. A cancellation is no error: it
  propagates (the flow marks the payment pending first);
- ``upto``: the charge is what the medium measured once it served
  (:meth:`ExactCall.note_charge`), written to the ledger entry *before* ``/settle`` is
  asked for it, so a lost settle answer leaves the entry pending with that amount; a
  settle answer without ``amount`` (optional in x402, e.g. a ``settlement_pending``
  from a facilitator that knows only its transaction) gets the amount that was asked,
  so the ledger entry and the receipt keep it (replaced by no amount, the pending entry
  could not be resumed, and the payer, maybe charged, would be refused on every resend);
  a resumed payment is settled again for exactly the amount recorded (never one
  measured again), and only for the call it was first sent with
  (``first_call_differs``), else it is refused (:attr:`ExactCall.refused_charge`) and
  nothing runs;
- ``shield``: the ledger writes and the settle are seen through even if the call is
  cancelled (MCP cancels a handler with an anyio scope, under which every later await of
  the flow's recovery would be cancelled too, leaving the entry in flight and a settled
  payment unservable); ``/verify``, serving and the resumption check are not shielded:
  nothing moves if they are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from a402.exact.serve import (
    Acquire,
    ExactPayment,
    MarkPending,
    MarkSettled,
    NoVerdict,
    Operation,
    Outcome,
    Release,
    Resumable,
    Serve,
    Settle,
    Verify,
    drive,
    exact_flow,
    remembered_until,
)
from a402.facilitator.client import FacilitatorClient, FacilitatorError
from a402.provider.ledger import PaymentLedger
from a402.wire.errors import SETTLEMENT_PENDING, UNEXPECTED_SETTLE_ERROR
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequirements,
    PaymentRequirements,
    SettleResponse,
    VerifyResponse,
)

log = logging.getLogger("a402.provider")

ServeOnce = Callable[[], Awaitable[bool]]
"""Serve the request before settling: ``True`` if it was served (worth paying for)."""


async def _always(_settlement: SettleResponse | None) -> bool:
    return True


async def _never_differs() -> bool:
    return False


class ExactCall:
    """One paid call: its payment, what it answers, and where it is recorded and settled.

    ``payment`` is the payment as the ledger knows it, ``payload`` and ``requirements``
    what goes to the facilitator (the resource already the medium's own, never the
    payer's unsigned copy). ``facilitator`` gives the client when ``/verify`` or
    ``/settle`` is first asked (its owner creates it on first use: a call refused by the
    ledger opens none). ``serve`` serves the request before settling (not called
    for a settle-first call or a resumed payment: the medium serves those once
    :class:`~a402.exact.serve.Paid`). ``resumable``: may a resumed payment still be
    served here (default yes: it is served again once settled). ``upto``: the charge is
    set by :meth:`note_charge` once served, or by the amount a resumed payment was
    recorded with; ``first_call_differs`` tells whether a resumed ``upto`` payment was
    first sent with another call. ``shield`` (the MCP paywall): see the module doc.
    """

    def __init__(
        self, payment: ExactPayment, payload: AnyPaymentPayload,
        requirements: AnyPaymentRequirements, *, ledger: PaymentLedger,
        facilitator: Callable[[], FacilitatorClient], serve: ServeOnce,
        resumable: Callable[[SettleResponse | None], Awaitable[bool]] = _always,
        upto: bool = False, first_call_differs: Callable[[], Awaitable[bool]] = _never_differs,
        shield: bool = False,
    ) -> None:
        self.payment = payment
        self.payload = payload
        self.requirements = requirements
        self.ledger = ledger
        self.facilitator = facilitator
        self.upto = upto
        self.shield = shield
        self._serve = serve
        self._resumable = resumable
        self._first_call_differs = first_call_differs
        #: ``upto``: the amount to settle, once known (measured, or recorded before).
        self.charge: int | None = None
        #: ``upto``: the recorded charge of another call, for which this one was refused.
        self.refused_charge: int | None = None
        #: Until when the ledger remembers the payment and what it delivered (set by run).
        self.keep_until = 0.0

    async def run(self, *, now: float, retention: float, settle_first: bool = False
                  ) -> Outcome:
        """The flow's outcome for this call (:func:`~a402.exact.serve.exact_flow`, whose
        options these are)."""
        self.keep_until = remembered_until(self.payment, now=now, retention=retention)
        flow = exact_flow(self.payment, now=now, retention=retention,
                          settle_first=settle_first)
        return await drive(flow, self._operate)

    async def note_charge(self, amount: int) -> None:
        """``upto``: the amount this call used, durable in the ledger before ``/settle`` is
        asked for it: if its answer is lost, the payer's resend resumes it for exactly
        this amount."""
        self.charge = amount
        key = self.payment.key
        await self.ledger.note_charge(key, SettleResponse(
            success=False, error_reason=SETTLEMENT_PENDING,
            error_message="about to be settled for this amount",
            transaction="", network=key.network, payer=key.payer, amount=str(amount)))

    async def _operate(self, operation: Operation) -> Any:
        if not self.shield or isinstance(operation, Verify | Serve | Resumable):
            return await self._act(operation)
        with anyio.CancelScope(shield=True):
            return await self._act(operation)

    async def _act(self, operation: Operation) -> Any:
        match operation:
            case Acquire():
                return await self.ledger.acquire(
                    operation.key, operation.fingerprint, expires_at=operation.expires_at,
                    terms=operation.terms)
            case Resumable():
                return await self._resume(operation.settlement)
            case Verify():
                return await self._verify()
            case Serve():
                return await self._serve()
            case Settle():
                return await self._settle()
            case Release():
                await self.ledger.release(operation.key)
            case MarkPending():
                await self.ledger.mark_pending(operation.key, operation.settlement)
            case MarkSettled():
                await self.ledger.mark_settled(operation.key, operation.settlement)
        return None

    async def _resume(self, settlement: SettleResponse | None) -> bool:
        if self.upto:  # settled again for exactly the amount first asked, if known
            known = settlement.amount if settlement else None
            if known is None or not (known.isascii() and known.isdigit()):
                return False
            # That amount is what the call first sent with this payment used: it buys that
            # call only. Another call (which may use far more) would run for the first
            # one's charge: refused.
            if await self._first_call_differs():
                self.refused_charge = int(known)
                return False
            self.charge = int(known)
        return await self._resumable(settlement)

    async def _verify(self) -> VerifyResponse | NoVerdict:
        try:
            return await self.facilitator().verify(self.payload, self.requirements)
        except FacilitatorError as e:
            return e.no_verdict()

    async def _settle(self) -> SettleResponse | NoVerdict:
        requirements = self.requirements
        if self.upto:
            assert isinstance(requirements, PaymentRequirements) and self.charge is not None
            requirements = requirements.model_copy(update={"amount": str(self.charge)})
        try:
            answer = await self.facilitator().settle(self.payload, requirements)
        except FacilitatorError as e:
            return e.no_verdict()
        except Exception as e:  # not a cancellation (BaseException): that propagates
            # The money may have moved (module doc): a settle without a verdict.
            log.exception("settle of payment %s failed unexpectedly; kept pending",
                          self.payment.key.nonce)
            return NoVerdict(UNEXPECTED_SETTLE_ERROR,
                             f"the settle call failed unexpectedly ({type(e).__name__}): "
                             "the payment may have settled; resend the same payment for "
                             "the result (it is not charged twice)", unavailable=False)
        if self.upto and answer.amount is None:
            # What we asked to settle is what the ledger must keep (a pending entry
            # without it could not be resumed, and the payer, charged, would never get
            # the response).
            answer = answer.model_copy(update={"amount": str(self.charge)})
        return answer
