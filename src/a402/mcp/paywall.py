"""The server side of a paid MCP tool call: offer, verify, run, settle once.

:class:`ToolPaywall` knows what each tool costs and who is paid; :meth:`ToolPaywall.call`
takes one ``tools/call`` (the tool's name, the request's ``_meta`` and a coroutine that
runs the tool) and returns the ``CallToolResult`` to send back, in the x402 MCP wire
form (:mod:`a402.mcp.wire`). It is transport-free: the server helper
(:mod:`a402.mcp.server`) and the paywall proxy (:mod:`a402.mcp.proxy`) both call it.

The payment decisions are the one server-side ``exact`` flow (:mod:`a402.exact.serve`),
run by its one driver, :class:`~a402.provider.exact_call.ExactCall`, as for the HTTP
middleware and the A2A agent, with this paywall's replay ledger and facilitator. What
that means for a tool call:

- **Settle after success** (as ``x402.mcp``): the payment is verified, then the tool
  runs, then the payment is settled; the tool's output leaves only with a successful
  settlement, its receipt in ``_meta["x402/payment-response"]``. A tool that fails
  (raises, or returns ``isError: true``) is not charged: the payment is released and
  the tool's error goes back as it is, with no receipt. A failed settlement withholds
  the output and answers payment-required with the failed receipt.
- **Exactly once, across processes**: every payment is admitted by the replay ledger
  (a shared :class:`~a402.provider.ledger.SqlLedger` for several processes) before it
  is verified, under terms that include the tool's resource URL. One authorization
  buys one tool call: a replay runs nothing (refused, ``payment_already_used``, unless
  it is the very call whose answer was lost, below), the same payment for another tool
  neither (``payment_terms_mismatch``).
- **No verdict is not a refusal**: a facilitator that did not answer a settle (or a
  settle call that failed unexpectedly) may have moved the money, so the payment stays
  pending and the computed output is kept in the replay ledger (shared by every
  process that shares the ledger); the payer resends the *same* payment for the same
  call and gets it once the settlement is known (if the output was not kept, or the
  resend of an ``exact`` payment asks for other arguments, the tool runs again for the
  settled payment).
- **A lost result is sent again**: the result a settled payment bought is kept in the
  replay ledger (:mod:`a402.provider.deliveries`: at most 1 MiB as JSON, until the
  authorization expires) before it is returned. The identical resend (same signed
  payment, same tool and arguments) gets it again with its receipt: the tool does not
  run again and nothing is settled again. Another call with that payment is refused; a
  result too large to keep is answered with ``response_not_kept``: paid and settled,
  not kept.
- **upto** (a tool priced ``upto:MAX``): the offer is x402 ``upto`` (Permit2, the
  facilitator named in ``extra.facilitatorAddress`` as the SDKs offer it); the payer
  signs for at most the maximum. The tool runs first, its usage report
  (:mod:`a402.mcp.usage`) sets the charge (capped at the maximum), and that charge is
  written to the replay ledger entry (``note_charge``) *before* ``/settle`` is asked for
  it: a lost settle answer leaves the entry pending with that amount, and the payer's
  resend resumes it for exactly that amount (a re-run's new report is ignored), so a
  payer is charged once and never above the signed maximum. The output and the call it
  answers are kept with that charge, and a resend of the payment with *other* arguments
  is refused (``payment_terms_mismatch``), never run: the charge is the first call's
  usage, and another call could use far more. A charge of 0 sends no
  transaction; an unreadable report withholds the output and charges nothing.
- **a402** (a tool priced ``a402:PRICE``): never sold over the session. Its call is
  answered with the ``a402`` offer of the :class:`ChannelOffers` registered
  (:class:`a402.mcp.channels.ToolChannels`) and never runs the tool; a payment sent with
  it is refused (it would buy nothing). Without channels the tool answers
  ``a402_unavailable``.
- The resource is the paywall's to name (``mcp://tool/<name>`` by default), never the
  client's unsigned copy: the facilitator binds a settlement to it. A paywall with a
  process-local ledger adds a random fragment of its own to the resource it names to
  the facilitator, so that a payment raced to two such paywalls is sold once
  (:meth:`ToolPaywall._settled_as`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
import anyio.lowlevel
from mcp import types

from a402.chain.deploy import TokenInfo
from a402.evm.address import address_key, is_address, to_checksum
from a402.exact.eip3009 import ExactEvmPayload
from a402.exact.replay import LedgerState, PaymentKey, payment_terms
from a402.exact.serve import (
    ExactPayment,
    NotResumable,
    NotServed,
    OtherTerms,
    Paid,
    Rejected,
    RequestRefused,
    Reused,
    SettleFailed,
    SettlePending,
    Unanswered,
)
from a402.exact.upto import SCHEME_UPTO, TRANSFER_METHOD_PERMIT2, UptoEvmPayload
from a402.facilitator.client import FacilitatorClient, FacilitatorError
from a402.mcp import wire
from a402.mcp.prices import ToolPrice, price_table
from a402.mcp.usage import USAGE_UNREADABLE, UsageError, collecting, take_usage, without_usage
from a402.observe import Observer
from a402.provider import responses
from a402.provider.deliveries import MAX_KEPT_BODY, RESPONSE_NOT_KEPT, Delivery, request_digest
from a402.provider.exact_call import ExactCall
from a402.provider.ledger import DeliveryLedger, InMemoryLedger, PaymentLedger, SqlLedger
from a402.provider.routes import Price
from a402.wire import errors as wire_errors
from a402.wire.a402 import SCHEME_A402
from a402.wire.errors import WireError
from a402.wire.networks import evm_chain_id
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)

log = logging.getLogger("a402.mcp")


class ChannelOffers(Protocol):
    """Where a tool priced ``a402`` is sold (:class:`a402.mcp.channels.ToolChannels`)."""

    def requirement(self, tool: str, base_url: str | None) -> PaymentRequirements:
        """The ``a402`` offer for one call of ``tool``; WireError if it cannot be made."""
        ...

RunTool = Callable[[], Awaitable[types.CallToolResult]]
"""Runs the tool once and returns its result (an exception counts as a tool failure)."""

DEFAULT_RESOURCE_PREFIX: Final = "mcp://tool/"
"""As ``x402.mcp`` names a tool's resource."""
DEFAULT_RETENTION: Final = 600.0
TOOL_FAILED: Final = "tool_failed"
"""Reason: the tool raised after the payment was verified; nothing was charged."""
RETRYABLE: Final = frozenset({responses.FACILITATOR_UNAVAILABLE, responses.FACILITATOR_ERROR,
                              wire_errors.SETTLEMENT_PENDING, "payment_in_use"})
"""Reasons of a payment-required answer to a paid call after which the payer must resend
the *same* payment (never sign another: the first may still settle)."""


@dataclass(frozen=True)
class _Accepted:
    payload: PaymentPayload
    requirements: PaymentRequirements
    payment: ExactPayment
    request: str
    """:func:`~a402.provider.deliveries.request_digest` of the call: tool and arguments."""
    price: ToolPrice


class ToolPaywall:
    """Prices for tools, who is paid, and the ledger and facilitator that enforce them.

    ``prices``: :class:`~a402.mcp.prices.ToolPrice` values or ``{tool: price}`` (token
    units as strings, atomic units as ints); tools not listed are free. ``facilitator``:
    a URL or a :class:`FacilitatorClient` you own. ``ledger``: a
    :class:`~a402.provider.ledger.PaymentLedger` or the SQLAlchemy URL of a shared one;
    in memory by default, which is right for one process only. ``observer`` logs one JSON
    line per paid call (:mod:`a402.observe`; its outcome says what became of the money).
    """

    def __init__(
        self,
        prices: Iterable[ToolPrice] | Mapping[str, Price],
        *,
        pay_to: str,
        token: TokenInfo,
        network: str,
        facilitator: str | FacilitatorClient,
        ledger: PaymentLedger | str | None = None,
        resource_prefix: str = DEFAULT_RESOURCE_PREFIX,
        max_timeout_seconds: int = 60,
        retention: float = DEFAULT_RETENTION,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
    ) -> None:
        if not is_address(pay_to) or not is_address(token.address):
            raise ValueError("pay_to and the token address must be EVM addresses")
        try:
            evm_chain_id(network)
        except WireError as e:
            raise ValueError(e.message) from e
        if isinstance(max_timeout_seconds, bool) or max_timeout_seconds <= 0:
            raise ValueError("max_timeout_seconds must be a positive int")
        self.prices = price_table(prices, token.decimals)
        self.pay_to = to_checksum(pay_to)
        self.token = token
        self.asset = to_checksum(token.address)
        self.network = network
        self.resource_prefix = resource_prefix
        self.max_timeout_seconds = max_timeout_seconds
        self.retention = retention
        self.clock = clock
        self._own_ledger = isinstance(ledger, str)
        self.ledger: PaymentLedger = (SqlLedger(ledger) if isinstance(ledger, str)
                                      else ledger if ledger is not None else InMemoryLedger())
        if isinstance(facilitator, FacilitatorClient):
            self._facilitator_url: str | None = None
            self._facilitator: FacilitatorClient | None = facilitator
        else:
            self._facilitator_url = facilitator
            self._facilitator = None
        #: Where results are kept for a resend: the replay ledger (shared), or, for a
        #: ledger that keeps none, this process's memory.
        self.deliveries: DeliveryLedger = (self.ledger if isinstance(self.ledger, DeliveryLedger)
                                           else InMemoryLedger(clock=clock))
        self._settle_tag: str | None = (uuid.uuid4().hex if isinstance(self.ledger, InMemoryLedger)
                                        else None)
        self.observer = observer if observer is not None else Observer("mcp")
        #: The address our facilitator settles ``upto`` with (its ``/supported``), which
        #: payers bind their signature to; asked on the first call of an upto tool.
        self._upto_facilitator: str | None = None
        #: Tools priced ``a402``: their channel offers (set by :class:`ToolChannels`).
        self.channels: ChannelOffers | None = None

    @property
    def facilitator(self) -> FacilitatorClient:
        """Created on first use, so it binds to the event loop that serves the calls."""
        if self._facilitator is None:
            assert self._facilitator_url is not None
            self._facilitator = FacilitatorClient(self._facilitator_url)
        return self._facilitator

    @property
    def facilitator_given(self) -> FacilitatorClient | str:
        """The facilitator as it was given: a client, or its URL (for another user of it,
        such as :class:`~a402.mcp.channels.ToolChannels`, which then opens its own)."""
        if self._facilitator_url is not None:
            return self._facilitator_url
        assert self._facilitator is not None
        return self._facilitator

    async def aclose(self) -> None:
        """Close what this paywall opened (the facilitator client, a ledger from a URL)."""
        if self._facilitator_url is not None and self._facilitator is not None:
            client, self._facilitator = self._facilitator, None
            await client.aclose()
        if self._own_ledger and isinstance(self.ledger, SqlLedger):
            self.ledger.close()

    # ------------------------------------------------------------------ the offer

    def price_of(self, tool: str) -> ToolPrice | None:
        return self.prices.get(tool)

    def resource(self, tool: str) -> ResourceInfo:
        price = self.prices[tool]
        return ResourceInfo(url=f"{self.resource_prefix}{tool}",
                            description=price.description or f"Tool: {tool}",
                            mime_type="application/json")

    def requirements(self, tool: str) -> PaymentRequirements:
        price = self.prices[tool]
        extra = dict(self.token.eip712_extra())
        if price.scheme == SCHEME_UPTO:
            # As the SDK's upto server: Permit2, and the facilitator payers bind to.
            assert self._upto_facilitator is not None, "call _upto_ready() first"
            extra = {"assetTransferMethod": TRANSFER_METHOD_PERMIT2, **extra,
                     "facilitatorAddress": self._upto_facilitator}
        return PaymentRequirements(
            scheme=price.scheme, network=self.network, amount=str(price.amount),
            asset=self.asset, pay_to=self.pay_to, max_timeout_seconds=self.max_timeout_seconds,
            extra=extra,
        )

    async def _upto_ready(self) -> str | None:
        """Learn which address our facilitator settles ``upto`` with (once); None if it
        is known, else the reason it could not be learnt."""
        if self._upto_facilitator is not None:
            return None
        try:
            supported = await self.facilitator.supported()
        except FacilitatorError as e:
            return f"the facilitator did not answer /supported ({e.reason})"
        for kind in supported.kinds:
            address = (kind.extra or {}).get("facilitatorAddress")
            if kind.scheme == SCHEME_UPTO and kind.network == self.network and \
                    isinstance(address, str) and is_address(address):
                self._upto_facilitator = to_checksum(address)
                return None
        return f"the facilitator settles no upto payments on {self.network}"

    def _costs(self, tool: str) -> str:
        price = self.prices[tool]
        unit = self.token.symbol or self.asset
        if price.scheme == SCHEME_UPTO:
            return (f"tool {tool!r} costs what it uses ({price.unit} atomic units of {unit} "
                    f"per unit), at most {price.amount}")
        return f"tool {tool!r} costs {price.amount} atomic units of {unit}"

    def payment_required(self, tool: str, reason: str, message: str) -> PaymentRequired:
        return PaymentRequired(error=reason, resource=self.resource(tool),
                               accepts=[self.requirements(tool)], message=message)

    def _ask(self, tool: str, reason: str, message: str, **extra: Any) -> types.CallToolResult:
        required = self.payment_required(tool, reason, message)
        if extra:
            required = required.model_copy(update=extra)
        return wire.payment_required_result(required)

    def _channel_offer(self, tool: str, meta: Mapping[str, Any] | None,
                       base_url: str | None) -> types.CallToolResult:
        """A tool priced ``a402`` is sold only inside a channel, at its own endpoint
        (:mod:`a402.mcp.channels`): its call here never runs it; it is answered with the
        ``a402`` offer (a payment sent here is refused: it would buy nothing)."""
        if self.channels is None:
            return wire.error_result("a402_unavailable", f"tool {tool!r} is priced 'a402' but "
                                     "this server takes no channel payments; nothing was run "
                                     "or charged")
        try:
            offer = self.channels.requirement(tool, base_url)
        except WireError as e:
            return wire.error_result(e.reason, e.message)
        price = self.prices[tool]
        endpoint = (offer.extra or {}).get("mcpUrl")
        paid = meta is not None and wire.PAYMENT_META_KEY in meta
        reason = wire_errors.UNSUPPORTED_SCHEME if paid else responses.PAYMENT_REQUIRED_REASON
        required = PaymentRequired(
            error=reason, resource=self.resource(tool), accepts=[offer],
            message=(f"tool {tool!r} costs {price.amount} atomic units of "
                     f"{self.token.symbol or self.asset}, paid only inside an A402 channel "
                     f"through a vault: invoke POST {endpoint}"
                     + ("; the payment in _meta was not used: nothing was charged"
                        if paid else "")))
        return wire.payment_required_result(required)

    # ------------------------------------------------------------------ one call

    async def call(self, tool: str, meta: Mapping[str, Any] | None, run: RunTool,
                   arguments: Mapping[str, Any] | None = None, *,
                   base_url: str | None = None) -> types.CallToolResult:
        """Answer one ``tools/call`` of ``tool`` whose request ``_meta`` is ``meta``;
        ``run`` runs the tool (at most once per call, only after ``/verify`` accepted the
        payment). ``arguments`` are the call's: a resend of a settled payment gets the
        kept result only for the same tool and arguments. A free tool just runs. Never
        raises for anything the caller sent."""
        if tool not in self.prices:
            return await run()
        if self.prices[tool].scheme == SCHEME_A402:
            return self._channel_offer(tool, meta, base_url)
        if self.prices[tool].scheme == SCHEME_UPTO:
            unknown = await self._upto_ready()
            if unknown is not None:
                return wire.error_result(responses.FACILITATOR_UNAVAILABLE,
                                         f"nothing was run or charged: {unknown}; try again "
                                         "later")
        try:
            payload = wire.payment_of(meta)
        except WireError as e:
            return self._ask(tool, e.reason, f"the payment in _meta['{wire.PAYMENT_META_KEY}'] "
                             f"was refused: {e.message}")
        if payload is None:
            return self._ask(tool, responses.PAYMENT_REQUIRED_REASON,
                             f"{self._costs(tool)}; pay in _meta['{wire.PAYMENT_META_KEY}']")
        try:
            accepted = self._accept(tool, payload, arguments)
        except WireError as e:
            return self._ask(tool, e.reason, e.message)
        result = await self._pay_and_run(tool, accepted, run)
        # A call cancelled while its settlement was seen through (shielded) ends cancelled,
        # as its transport expects (it already answered the cancellation); what it sold
        # is kept for the payer's resend.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    def _accept(self, tool: str, payload: PaymentPayload,
                arguments: Mapping[str, Any] | None = None) -> _Accepted:
        """Check the payment answers this tool's offer; WireError with the reason if not."""
        offered = self.requirements(tool)
        accepted = payload.accepted
        if accepted.scheme != offered.scheme:
            raise WireError(wire_errors.UNSUPPORTED_SCHEME,
                            f"this tool is paid with {offered.scheme!r}, not "
                            f"{accepted.scheme!r:.40}")
        if accepted.network != offered.network:
            raise WireError(wire_errors.INVALID_NETWORK,
                            f"payments go on {offered.network}, not {accepted.network!r:.60}")
        differ = [name for name, same in (
            ("amount", accepted.amount == offered.amount),
            ("asset", address_key(accepted.asset) == address_key(offered.asset)),
            ("payTo", address_key(accepted.pay_to) == address_key(offered.pay_to)),
            ("extra", all((accepted.extra or {}).get(k) == v
                          for k, v in (offered.extra or {}).items())),
        ) if not same]
        if differ:
            raise WireError(responses.NO_MATCHING_REQUIREMENTS,
                            f"the accepted requirement differs from this tool's offer in: "
                            f"{', '.join(differ)}")
        resource = self.resource(tool)
        terms = payment_terms(scheme=offered.scheme, network=offered.network,
                              amount=offered.amount, asset=offered.asset,
                              pay_to=offered.pay_to, resource=resource.url)
        upto = offered.scheme == SCHEME_UPTO
        decoded = (UptoEvmPayload.from_wire(payload.payload, reason=wire_errors.INVALID_PAYLOAD)
                   if upto else
                   ExactEvmPayload.from_wire(payload.payload, reason=wire_errors.INVALID_PAYLOAD))
        payment = ExactPayment.of(decoded, network=self.network, asset=self.asset, terms=terms)
        return _Accepted(
            payload=payload.model_copy(update={"resource": self._settled_as(resource)}),
            requirements=offered, payment=payment,
            request=request_digest("mcp", tool=tool, arguments=dict(arguments or {})),
            price=self.prices[tool],
        )

    def _settled_as(self, resource: ResourceInfo) -> ResourceInfo:
        """The resource named to the facilitator, which binds a settlement to it and
        answers a repeated ``/settle`` of the same payload and resource with the first
        one's success. A process-local ledger cannot see another paywall's admissions:
        two such paywalls (``protect()`` in two stdio processes) would both verify a
        payment raced to them before either settled, both run the tool, and both be
        told "settled". So a paywall with its own ledger names itself in the resource
        (a fragment of a random tag): the second settle is refused as "for another
        resource" and its output withheld. Paywalls sharing a ledger (a shared
        :class:`SqlLedger`) keep the plain resource, so that any of them can resume a
        pending payment; replicas must therefore share one ledger."""
        if self._settle_tag is None:
            return resource
        return resource.model_copy(update={"url": f"{resource.url}#{self._settle_tag}"})

    async def _pay_and_run(self, tool: str, p: _Accepted, run: RunTool
                           ) -> types.CallToolResult:
        key = p.payment.key
        served: list[types.CallToolResult] = []
        failure: list[BaseException] = []
        upto = p.requirements.scheme == SCHEME_UPTO
        usage: list[int] = []  # upto: what the tool's run used
        unreadable: list[UsageError] = []

        async def run_once(charging: bool = True) -> types.CallToolResult | None:
            """Run the tool; for upto, read its usage into ``usage`` (``charging``) or
            drop it (a re-run for a charge already recorded)."""
            try:
                with collecting() as reports:
                    result = await run()
            except Exception as e:  # the tool's failure is the call's, not the paywall's
                log.warning("paid tool %s failed: %r", tool, e)
                failure.append(e)
                return None
            if upto and (not charging or result.isError):
                result = without_usage(result)
            elif upto and not result.isError:
                try:
                    units, result = take_usage(result, reports)
                except UsageError as e:
                    log.error("paid tool %s: output withheld, nothing charged: %s", tool, e)
                    unreadable.append(e)
                    return None
                usage.append(p.price.amount if units is None else p.price.charge(units))
            served.append(result)
            return result

        async def serve() -> bool:
            result = await run_once()
            served_ok = result is not None and not result.isError
            if served_ok and upto:
                await call.note_charge(usage[0])
                # And the output it is charged for, with the call it answers: a resend
                # resumes this charge for this call only (first_call_differs).
                assert result is not None
                await self._keep(p, result, call.keep_until)
            return served_ok

        async def first_call_differs() -> bool:
            first = await self._first_call(key)
            return first is not None and not first.answers(p.payment.fingerprint, p.request)

        # A held output is delivered once a resumed payment settles, else the tool runs
        # again. The ledger writes and the settle are seen through even if the call is
        # cancelled (the client's notifications/cancelled, its stdio transport closing).
        call = ExactCall(p.payment, p.payload, p.requirements, ledger=self.ledger,
                         facilitator=lambda: self.facilitator, serve=serve, upto=upto,
                         first_call_differs=first_call_differs, shield=True)
        started = time.perf_counter()
        outcome = await call.run(now=self.clock(), retention=self.retention)
        keep_until = call.keep_until
        settlement = getattr(outcome, "settlement", None)
        again = (await self._redeliver(tool, p, settlement)
                 if isinstance(outcome, Reused) and outcome.state == LedgerState.SETTLED
                 else None)
        self.observer.paid(
            request_id=uuid.uuid4().hex, payer=key.payer,
            amount=str(call.charge) if upto and call.charge is not None
            else p.requirements.amount,
            scheme=p.requirements.scheme,
            outcome="redelivered" if again is not None else outcome.label,
            latency=time.perf_counter() - started, payee=self.pay_to, asset=key.asset,
            network=key.network, nonce=key.nonce, tool=tool,
            transaction=(settlement.transaction or None) if settlement is not None else None)
        match outcome:
            case Paid(settlement, serve_now, unrecorded):
                if unrecorded is not None:
                    log.error("tool %s settled %s but the replay ledger did not record it",
                              tool, settlement.transaction, exc_info=unrecorded)
                log.info("tool %s paid by %s: %s", tool, key.payer, settlement.transaction)
                if serve_now:
                    held = await self._held(p)
                    result = held if held is not None else await run_once(charging=False)
                    if result is None:  # charged, and the re-run failed: say so, with receipt
                        result = wire.error_result(TOOL_FAILED, "the payment settled but the "
                                                   "tool failed when run for it")
                else:
                    result = served[0]
                await self._keep(p, result, keep_until)  # before it leaves
                return wire.with_receipt(result, settlement)
            case NotServed():
                if unreadable:
                    return wire.error_result(USAGE_UNREADABLE, f"tool {tool!r} answered, but "
                                             f"its usage report was unreadable "
                                             f"({unreadable[0]}): its output was withheld "
                                             "and nothing was charged")
                if served:  # the tool's own error result, uncharged
                    return served[0]
                return wire.error_result(TOOL_FAILED, f"tool {tool!r} failed "
                                         f"({type(failure[0]).__name__}); nothing was charged")
            case Reused(state, settlement):
                if again is not None:
                    return again
                if state == LedgerState.SETTLED:
                    return self._ask(tool, responses.PAYMENT_ALREADY_USED,
                                     "this payment authorization has already bought a tool "
                                     "call; sign a new one")
                return self._ask(tool, "payment_in_use",
                                 "this payment authorization is in use by another call, or "
                                 "pending settlement under another signature; if it is yours, "
                                 "resend it unchanged later")
            case NotResumable() if call.refused_charge is not None:
                return self._ask(tool, responses.PAYMENT_TERMS_MISMATCH, (
                    f"this payment is settled, or being settled, for {call.refused_charge} atomic "
                    "units: the charge of the call it was first sent with (other arguments); "
                    "it buys "
                    "that call only: resend that call unchanged for its output. This call was "
                    "not run and nothing more was charged"))
            case OtherTerms() | NotResumable():
                return self._ask(tool, responses.PAYMENT_TERMS_MISMATCH,
                                 "this payment is pending settlement for another tool or other "
                                 "terms; nothing was run or charged: resend it to the tool it "
                                 "was first sent to")
            case Rejected(verdict):
                return self._ask(tool, outcome.reason,
                                 verdict.invalid_message or "the facilitator rejected the payment")
            case RequestRefused(no_verdict, settle_attempted) | Unanswered(
                    no_verdict, settle_attempted):
                if settle_attempted and served:
                    await self._keep(p, served[0], keep_until)
                reason = (responses.FACILITATOR_UNAVAILABLE if no_verdict.unavailable
                          else responses.FACILITATOR_ERROR)
                if isinstance(outcome, RequestRefused):
                    reason = no_verdict.reason
                return self._ask(tool, reason, (
                    f"no verdict from the facilitator while "
                    f"{'settling' if settle_attempted else 'verifying'} ({no_verdict.reason}); "
                    + ("it may have settled: resend the same payment (it is not charged twice)"
                       if settle_attempted and not isinstance(outcome, RequestRefused)
                       else "nothing was charged")))
            case SettlePending(settlement):
                if served:
                    await self._keep(p, served[0], keep_until)
                return wire.payment_required_result(
                    self.payment_required(tool, wire_errors.SETTLEMENT_PENDING,
                                          "the settlement is not final yet: resend the same "
                                          "payment for the output"), settlement)
            case SettleFailed(settlement):
                return wire.payment_required_result(
                    self.payment_required(tool, outcome.reason, outcome.message), settlement)
        raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover

    # ------------------------------------------------ kept for a resend, in the ledger

    async def _keep(self, p: _Accepted, result: types.CallToolResult, until: float) -> None:
        """Durably keep ``result`` for this payment and call (a settled payment's, before
        it is returned; a pending one's, until it settles). A failure to keep is logged,
        not raised: the result is due. Seen through even if the call is cancelled (the
        money moved: the payer's resend must find it)."""
        try:
            delivery = Delivery.of(fingerprint=p.payment.fingerprint, request=p.request,
                                   status=200, headers=(),
                                   body=result.model_dump_json(by_alias=True).encode())
            with anyio.CancelScope(shield=True):
                await self.deliveries.keep_delivery(p.payment.key, delivery, expires_at=until)
        except Exception:
            log.exception("could not keep the result of payment %s", p.payment.key.nonce)

    async def _first_call(self, key: PaymentKey) -> Delivery | None:
        """What a resumed ``upto`` payment's first call was answered with, if known. Read
        where the flow cannot be interrupted (the entry is IN_FLIGHT: an exception or a
        cancellation here would leave it so, unresumable); a failed read is "unknown"."""
        first: Delivery | None = None
        try:
            with anyio.CancelScope(shield=True):
                first = await self.deliveries.delivery(key)
        except Exception:
            log.exception("could not read the first call of payment %s", key.nonce)
        return first

    async def _kept(self, p: _Accepted) -> Delivery | None:
        """What this payment's identical call was answered with (or held for), if kept."""
        delivery = await self.deliveries.delivery(p.payment.key)
        if delivery is None or not delivery.answers(p.payment.fingerprint, p.request):
            return None
        return delivery

    async def _held(self, p: _Accepted) -> types.CallToolResult | None:
        """The output computed for this pending call before its settlement was known."""
        delivery = await self._kept(p)
        if delivery is None or not delivery.kept:
            return None
        return types.CallToolResult.model_validate_json(delivery.body)

    async def _redeliver(self, tool: str, p: _Accepted, settlement: SettleResponse | None
                         ) -> types.CallToolResult | None:
        """The identical resend of a settled call: its kept result again with its receipt
        (or, if not kept, that it was paid and settled); None if it is not that resend."""
        delivery = await self._kept(p)
        if delivery is None:
            return None
        if not delivery.kept:
            result = wire.error_result(
                RESPONSE_NOT_KEPT, f"this payment was paid and settled and tool {tool!r} "
                f"answered; its result ({delivery.size} bytes or more) was larger than "
                f"{MAX_KEPT_BODY} bytes and was not kept, so it cannot be sent again; nothing "
                "more was charged")
        else:
            log.info("tool %s: redelivered the result of payment %s", tool, p.payment.key.nonce)
            result = types.CallToolResult.model_validate_json(delivery.body)
        return wire.with_receipt(result, settlement) if settlement is not None else result
