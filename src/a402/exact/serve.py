"""The server side of one ``exact`` payment, as one sans-IO flow (pure).

In the style of the client's ``httpx`` auth flow (:mod:`a402.client.auth`) and
the channel state machine (:mod:`a402.asc.machine`): :func:`exact_flow` is a
generator that yields the operations it needs, receives their results, and
returns an :data:`Outcome`. It does no I/O and reads no clock (``now`` is passed
in). Every protocol question is answered here: what to refuse, when to verify,
when to serve, when to settle, what the replay ledger must record and when. One
driver, :class:`a402.provider.exact_call.ExactCall`, runs the operations with a
replay ledger and a facilitator (:func:`drive`) for every medium (the HTTP
middleware, the MCP paywall, the A2A agent), which gives it only what to serve and
renders the outcome in its own form (a 402, a tool result, a failed task, a served
response with its receipt).

One payment::

    Acquire ─▶ REFUSED ............................ Reused            (nothing changed)
            ─▶ OTHER_TERMS ........................ OtherTerms        (still pending)
            ─▶ RESUMED ─▶ Resumable? no ........... NotResumable      (restored to pending)
                                     yes ─────────────────────────────▶ Settle
            ─▶ FRESH ─▶ Verify ─▶ invalid ......... Rejected          (released)
                               ─▶ no verdict ...... Unanswered / RequestRefused (released)
                               ─▶ valid, settle first ───────────────▶ Settle
                               ─▶ valid ─▶ Serve ─▶ failed ... NotServed (released)
                                                ─▶ served ───────────▶ Settle
    Settle ─▶ success ............................. Paid              (MarkSettled)
           ─▶ settlement_pending .................. SettlePending     (MarkPending)
           ─▶ failure ............................. SettleFailed      (released)
           ─▶ no verdict .......................... Unanswered        (MarkPending(None))
           ─▶ refused as malformed (400) .......... RequestRefused    (released; unless
                                                                       resumed: Unanswered)

Each outcome's ``label`` names, for a log line and metrics, what became of the money:
``settled`` charged, ``pending`` may be charged, every other nothing moved.

Safety arguments, which the callers used to state each on their own:

- A request is served before settling only after ``/verify`` accepted the
  payment; a resumed payment (resent after ``settlement_pending`` or a lost
  settle answer) is not verified again, which would now answer "nonce already
  used": it is settled again (x402 facilitators settle idempotently) and served
  only once that reports success. The ledger's ``terms`` keep a resumption to
  the resource and terms the payment was first admitted for.
- Whatever interrupts the flow (an exception or a cancellation thrown in at an
  operation), the ledger is left right: before a settle was attempted nothing
  moved, so the authorization is released; while settling, money may be moving,
  so it is marked pending (resumable only with the same payload on the same
  terms); once the outcome is recorded nothing is undone.
- A successful settlement is final before it is recorded: the payer is charged,
  so the response is due whatever the ledger says. If :class:`MarkSettled`
  fails (the caller throws its exception in), the outcome is still :class:`Paid`
  (with ``unrecorded``): the entry stays IN_FLIGHT, never PENDING (which a resend
  could resume for a second response), and refuses this authorization until it
  expires, past ``validBefore``, when the facilitator and the chain refuse the
  used nonce. The same holds for a cancellation there.
- A facilitator that gave no verdict on ``/settle`` may have moved the money: the
  payment is marked pending. A facilitator that refused our ``/settle`` request
  as malformed (HTTP 400) moved nothing: x402 keeps 400 for a request it cannot
  read (a negative verdict is a 200 ``success: false``), and ours answers it
  before it claims the payment or signs anything (:mod:`a402.facilitator.app`).
  A payment just verified had no earlier settle, so the payment is released
  (nothing moved; left pending, it would ask the payer to resend a payment that
  can only be refused again, and tell it its money may be moving). Never a
  resumed payment: its earlier settle may be moving the money.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from a402.exact.eip3009 import ExactEvmPayload
from a402.exact.replay import Admission, Admit, LedgerState, PaymentKey, payment_fingerprint
from a402.exact.upto import UptoEvmPayload
from a402.wire.errors import SETTLEMENT_PENDING
from a402.wire.x402 import SettleResponse, VerifyResponse

MAX_REMEMBERED_VALIDITY: Final = 24 * 3600
"""Remember an authorization at most this long past now, whatever its ``validBefore`` says."""


@dataclass(frozen=True)
class ExactPayment:
    """A decoded payment as the replay ledger knows it (the caller keeps the payload)."""

    key: PaymentKey
    fingerprint: str
    valid_before: int
    terms: str = ""
    """:func:`~a402.exact.replay.payment_terms` of the offer it answers ("" if one offer)."""

    @classmethod
    def of(cls, payload: ExactEvmPayload | UptoEvmPayload, *, network: str, asset: str,
           terms: str = "") -> ExactPayment:
        """The ledger's view of a decoded payment of ``asset`` on ``network``: an EIP-3009
        authorization is known by its nonce and expires at its ``validBefore``; an
        ``upto`` Permit2 permit by ``permit2:<nonce>`` (its own key space: a Permit2 nonce
        is not an EIP-3009 one), and expires at its deadline. One authorization, one
        entry: its fingerprint (signature and signed fields) tells a resend of the same
        payment from another signature over the same nonce."""
        if isinstance(payload, UptoEvmPayload):
            permit = payload.permit2_authorization
            return cls(PaymentKey.of(network, asset, permit.from_address,
                                     f"permit2:{permit.nonce}"),
                       payment_fingerprint(payload.signature, permit.to_wire()),
                       int(permit.deadline), terms)
        auth = payload.authorization
        return cls(PaymentKey.of(network, asset, auth.from_address, auth.nonce),
                   payment_fingerprint(payload.signature, auth.to_wire()),
                   int(auth.valid_before), terms)


def remembered_until(payment: ExactPayment, *, now: float, retention: float) -> float:
    """Until when (Unix time) the ledger remembers ``payment``, and what it delivered: its
    ``validBefore`` (at most :data:`MAX_REMEMBERED_VALIDITY` past ``now``) plus
    ``retention``; past that the token contract itself refuses the authorization."""
    return min(payment.valid_before, now + MAX_REMEMBERED_VALIDITY) + retention


@dataclass(frozen=True)
class NoVerdict:
    """The facilitator gave no verdict on our ``/verify`` or ``/settle`` call."""

    reason: str
    message: str
    unavailable: bool
    """Unreachable, timed out, or 5xx: it may answer later."""
    status: int | None = None
    """The HTTP status of its answer, if it answered."""

    @property
    def refused_as_malformed(self) -> bool:
        """It answered 400: it refused to look at the request, so nothing can have moved."""
        return not self.unavailable and self.status == 400


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Acquire:
    """Admit the payment in the replay ledger. Result: its :class:`Admit`."""

    key: PaymentKey
    fingerprint: str
    expires_at: float
    terms: str


@dataclass(frozen=True)
class Resumable:
    """May this resumed payment still be served here? Result: ``bool``.

    An HTTP server answers yes (it serves again once settled); an agent that
    holds the result it computed answers whether it holds one for this request.
    """

    settlement: SettleResponse | None


@dataclass(frozen=True)
class Verify:
    """``/verify`` the payment. Result: :class:`VerifyResponse`, or :class:`NoVerdict`."""


@dataclass(frozen=True)
class Serve:
    """Serve the request before settling. Result: ``True`` if it was served (worth paying
    for), ``False`` if it failed (nothing will be settled)."""


@dataclass(frozen=True)
class Settle:
    """``/settle`` the payment. Result: :class:`SettleResponse`, or :class:`NoVerdict`."""


@dataclass(frozen=True)
class Release:
    """Forget the ledger entry: no money moved. Result: ``None``."""

    key: PaymentKey


@dataclass(frozen=True)
class MarkPending:
    """Money may be moving: allow only resumption. Result: ``None``."""

    key: PaymentKey
    settlement: SettleResponse | None


@dataclass(frozen=True)
class MarkSettled:
    """The payment bought its response. Result: ``None``; a failure may be thrown in."""

    key: PaymentKey
    settlement: SettleResponse


Operation: TypeAlias = (
    Acquire | Resumable | Verify | Serve | Settle | Release | MarkPending | MarkSettled
)


# -------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Reused:
    """The ledger refused the authorization: in use right now, pending under another
    signature, or already sold a response (``state`` says which). Nothing changed."""

    label: ClassVar[str] = "refused"

    state: LedgerState | None
    settlement: SettleResponse | None


@dataclass(frozen=True)
class OtherTerms:
    """The same pending payment, resent for another resource or other terms: nothing
    served or charged; the entry stays pending for its own terms."""

    label: ClassVar[str] = "refused"

    settlement: SettleResponse | None


@dataclass(frozen=True)
class NotResumable:
    """A pending payment this server can no longer serve: the entry is left pending, as
    it was found."""

    label: ClassVar[str] = "refused"

    settlement: SettleResponse | None


@dataclass(frozen=True)
class Rejected:
    """``/verify`` said the payment is invalid: released, nothing served."""

    label: ClassVar[str] = "rejected"

    verdict: VerifyResponse

    @property
    def reason(self) -> str:
        """The refusal's reason, as the facilitator gave it."""
        return self.verdict.invalid_reason or "invalid_payment"


@dataclass(frozen=True)
class NotServed:
    """Serving failed: released, nothing settled; the caller answers with its failure."""

    label: ClassVar[str] = "not_served"


@dataclass(frozen=True)
class RequestRefused:
    """The facilitator refused our request as malformed (400): released, nothing moved."""

    label: ClassVar[str] = "error"

    failure: NoVerdict
    settle_attempted: bool


@dataclass(frozen=True)
class Unanswered:
    """No verdict: released if it was ``/verify``, marked pending if it was ``/settle``
    (it may have gone through). The payer may resend the same payment."""

    label: ClassVar[str] = "error"

    failure: NoVerdict
    settle_attempted: bool


@dataclass(frozen=True)
class SettlePending:
    """Settlement not final yet: marked pending; resend the same payment to finish."""

    label: ClassVar[str] = "pending"

    settlement: SettleResponse


NOTHING_CHARGED = "nothing was charged"
"""The first words of every message to a payer whose payment moved no money."""


@dataclass(frozen=True)
class SettleFailed:
    """Settlement failed: released, nothing charged, nothing to deliver."""

    label: ClassVar[str] = "failed"

    settlement: SettleResponse

    @property
    def reason(self) -> str:
        """The failure's reason, as the facilitator gave it."""
        return self.settlement.error_reason or "settlement_failed"

    @property
    def message(self) -> str:
        """What the payer reads, the money first: "nothing was charged: " and the
        facilitator's own message (or a generic one naming its reason).

        True here and only here: this outcome is a settle *verdict* (``success`` false, not
        ``settlement_pending``), so the authorization was not executed and the flow has
        released it. A settle without a verdict (lost answer, unreachable facilitator) is
        :class:`Unanswered` and a pending one :class:`SettlePending`: their messages say
        the payment may have settled, never this."""
        detail = (self.settlement.error_message
                  or f"the settlement was refused ({self.reason})")
        if detail.lower().startswith(NOTHING_CHARGED):
            return detail  # the facilitator already says it first
        return f"{NOTHING_CHARGED}: {detail}"


@dataclass(frozen=True)
class Paid:
    """Settled: the response is due. ``serve_now``: nothing was served yet (settle-first,
    or a resumed payment), so serve it now; else deliver what :class:`Serve` produced.
    ``unrecorded``: the ledger failed to record the settlement (log it; serve anyway)."""

    label: ClassVar[str] = "settled"

    settlement: SettleResponse
    serve_now: bool
    unrecorded: Exception | None = None


Outcome: TypeAlias = (
    Reused | OtherTerms | NotResumable | Rejected | NotServed | RequestRefused | Unanswered
    | SettlePending | SettleFailed | Paid
)

Flow: TypeAlias = Generator[Operation, Any, Outcome]


# ------------------------------------------------------------------------ flow


def exact_flow(
    payment: ExactPayment, *, now: float, retention: float, settle_first: bool = False,
) -> Flow:
    """The flow for one paid request (see the module doc).

    ``now`` is Unix time; the ledger remembers the payment until ``retention``
    seconds past its ``validBefore`` (or past ``now`` plus
    :data:`MAX_REMEMBERED_VALIDITY`, whichever is sooner), after which the
    token contract itself refuses the authorization. ``settle_first``: settle
    before serving (the payer carries the risk that serving then fails, rather
    than the server the risk of serving for a payment that then fails).
    """
    key = payment.key
    expires_at = remembered_until(payment, now=now, retention=retention)
    admit: Admit = yield Acquire(key, payment.fingerprint, expires_at, payment.terms)
    if admit.admission is Admission.REFUSED:
        return Reused(admit.state, admit.settlement)
    if admit.admission is Admission.OTHER_TERMS:
        return OtherTerms(admit.settlement)
    resumed = admit.admission is Admission.RESUMED
    if resumed and not (yield Resumable(admit.settlement)):
        yield MarkPending(key, admit.settlement)  # leave it as we found it
        return NotResumable(admit.settlement)

    settling = False
    settlement: SettleResponse | None = None
    try:
        if not resumed:
            verdict: VerifyResponse | NoVerdict = yield Verify()
            if isinstance(verdict, NoVerdict):
                yield Release(key)
                if verdict.refused_as_malformed:
                    return RequestRefused(verdict, settle_attempted=False)
                return Unanswered(verdict, settle_attempted=False)
            if not verdict.is_valid:
                yield Release(key)
                return Rejected(verdict)
            if not settle_first and not (yield Serve()):
                yield Release(key)
                return NotServed()

        settling = True
        answer: SettleResponse | NoVerdict = yield Settle()
        if isinstance(answer, NoVerdict):
            if answer.refused_as_malformed and not resumed:
                yield Release(key)
                return RequestRefused(answer, settle_attempted=True)
            yield MarkPending(key, None)  # it may have gone through
            return Unanswered(answer, settle_attempted=True)
        settlement = answer
        if settlement.success:
            settling = False  # final: from here on nothing is undone
            try:
                yield MarkSettled(key, settlement)
            except Exception as failure:
                return Paid(settlement, serve_now=settle_first or resumed, unrecorded=failure)
            return Paid(settlement, serve_now=settle_first or resumed)
        if settlement.error_reason == SETTLEMENT_PENDING:
            yield MarkPending(key, settlement)
            return SettlePending(settlement)
        yield Release(key)
        return SettleFailed(settlement)
    except GeneratorExit:
        raise
    except BaseException:
        # Interrupted at an operation (or by a caller's exception thrown in there).
        if settling:
            yield MarkPending(key, settlement)  # money may be moving
        elif settlement is None:
            yield Release(key)  # nothing was settled: nothing moved
        raise


async def drive(flow: Flow, run: Callable[[Operation], Awaitable[Any]]) -> Outcome:
    """Run ``flow`` to its outcome, with ``run`` doing each operation's I/O.

    An exception from ``run`` (a cancellation, a ledger or app failure) is thrown
    into the flow at that operation, which yields what the ledger needs before it
    propagates (module doc, "interrupted").
    """
    operation = next(flow)
    while True:
        try:
            result = await run(operation)
        except BaseException as exc:
            try:
                operation = flow.throw(exc)
            except StopIteration as done:
                return _outcome(done)
            continue
        try:
            operation = flow.send(result)
        except StopIteration as done:
            return _outcome(done)


def _outcome(done: StopIteration) -> Outcome:
    outcome: Outcome = done.value
    return outcome
