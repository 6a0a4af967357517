"""``PaymentMiddleware``: x402 ``exact`` payments in front of any ASGI app.

One paid request, default (serve, then settle) order::

    no payment header ............................ 402 + offer
    header undecodable / matches no offer ........ 402, error = reason
    settled payment resent for the same request .. its kept response again   (ledger; not
                                                    run, not charged; 410 response_not_kept
                                                    if it was too large to keep)
    authorization already used or in use ......... 402 payment_already_used   (ledger)
    pending authorization resent elsewhere ....... 402 payment_terms_mismatch (ledger)
    POST /verify → invalid ....................... 402, error = invalidReason
    run the app, response buffered
    body over MAX_BUFFERED_BODY .................. 502 upstream_too_large, nothing settled
    app answered >= 400 .......................... app's response, nothing settled
    POST /settle → success ....................... app's response + PAYMENT-RESPONSE
                 → settlement_pending ............ 402 + PAYMENT-RESPONSE (tx); resend same header
                 → failure ....................... 402 + PAYMENT-RESPONSE + reason in the body
    facilitator unreachable / 5xx ................ 503 facilitator_unavailable + Retry-After
    facilitator answered nonsense, or the settle
    call failed unexpectedly ..................... 502 facilitator_error (settle attempted:
                                                    resend the same header)

Every decision in that table (and what the replay ledger records, and when) is
made by the one server-side ``exact`` flow, :mod:`a402.exact.serve`, run by its one
driver, :class:`~a402.provider.exact_call.ExactCall` (with the replay ledger and the
facilitator), as for the MCP paywall and the A2A agent; this middleware gives it the
app to serve and renders its outcome as HTTP.

x402 ``upto`` (``RouteConfig(scheme="upto")``): the app runs first (whatever
``settle_before_serve`` says), its usage report (or, for a route with a metering rule,
``RouteConfig(meter=...)``, what that rule measures: :meth:`PaymentMiddleware._usage`)
sets the charge, and that charge
is written to the ledger entry (:meth:`PaymentLedger.note_charge`) *before*
``/settle`` is asked. If the settle's answer is then lost (facilitator
unreachable, crashed after sending the transaction), the entry is pending with
that amount, and the same payment header resent resumes it: ``/settle`` is asked
again for exactly the recorded amount (the facilitator's journal answers that
one settlement, never a second), and once it succeeds the response computed the
first time (kept in the ledger, :mod:`a402.provider.deliveries`) is delivered; were
it not kept, the app runs again and its new usage report is ignored and removed:
the recorded amount wins, the payer is charged once, and receives a response. The
recorded amount is the usage of the request first sent: the same header resent with
another body is refused (402 ``payment_terms_mismatch``, not served), never run for
that charge (it could use far more).

With ``settle_before_serve=True`` the app runs only after a successful settle
(and its response streams instead of being buffered): the payer carries the
risk that the app then fails, the provider no longer carries the risk of
serving for a payment that then fails (x402 issue #1169).

Resending the same header after ``settlement_pending`` (or after a 503 that
interrupted a settle) does not call ``/verify`` again, which would now answer
"nonce already used"; it calls ``/settle`` again, which an x402 facilitator
must answer idempotently, and serves once that reports success. That retry is
settle-first whatever the mode: the decision to pay was already made. It is
taken only for the resource and on the terms (scheme, network, amount, asset,
payTo) the payment was first admitted for: the client's ``accepted`` is not
signed, so a pending payment resent to a dearer route with ``accepted.amount``
edited would otherwise be settled for its signed value and buy the dearer
response; and a facilitator that binds a settlement to its first resource
would refuse the resumed settle, which must not cost the pending payment its
place in the ledger.

What the middleware sends the facilitator names the resource *it* offers for
this request (v2: the payload's ``resource``, overwritten with the one in its
own 402; v1: the requirements' ``resource``), never the client's unsigned
copy, so a facilitator that binds a settlement to one resource tells two
providers (or two routes) apart. It is derived from ``public_url`` (or the
request's Host) and the path, so every replica of one gateway names it alike.
Without ``public_url`` the Host header is the payer's to choose: sent to two
services with the same Host, one payment names one resource at both, and only
a shared ledger (not the facilitator's resource binding) stops the second sale.

What a settled payment delivered is kept in the replay ledger before it is
released (:mod:`a402.provider.deliveries` states the safety argument), so a
response lost on the way after settling is not paid for in vain; the response
computed for a payment whose settlement is not known yet is held there the same
way, and the resend that resumes it delivers it rather than running the app again.

Use with Starlette or FastAPI: ``app.add_middleware(PaymentMiddleware, routes=...,
pay_to=..., token=..., network=..., facilitator="http://...")``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal, Unpack

import anyio
from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from a402.chain.deploy import TokenInfo
from a402.evm.address import is_address, same_address, to_checksum
from a402.exact.eip3009 import SCHEME_EXACT, ExactEvmPayload
from a402.exact.serve import (
    ExactPayment,
    NotResumable,
    NotServed,
    NoVerdict,
    OtherTerms,
    Outcome,
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
from a402.metering import MeterRule, Unit, UsageUnreadable, readable_request
from a402.observe import Observer, new_request_id
from a402.provider import responses
from a402.provider.alternatives import AlternativeScheme
from a402.provider.asgi import (
    MAX_BUFFERED_BODY,
    BufferedResponse,
    ResponseTooLarge,
    adding_headers,
    header_values,
    run_buffered,
)
from a402.provider.deliveries import MAX_KEPT_BODY, RESPONSE_NOT_KEPT, Delivery, request_digest
from a402.provider.exact_call import ExactCall
from a402.provider.ledger import (
    DeliveryLedger,
    InMemoryLedger,
    LedgerState,
    PaymentKey,
    PaymentLedger,
    SqlLedger,
    payment_terms,
)
from a402.provider.routes import RouteMatch, RouteSpecs, RouteTable
from a402.provider.settings import PaymentSettings, PaymentTiming, Paywall, payment_settings
from a402.provider.usage import (
    Meter,
    MeteredResponse,
    UsageError,
    charge_for,
    without_reports,
)
from a402.wire.errors import (
    INVALID_NETWORK,
    INVALID_PAYLOAD,
    UNSUPPORTED_SCHEME,
    WireError,
)
from a402.wire.headers import PAYMENT_SIGNATURE, X_PAYMENT, decode_payment_payload
from a402.wire.networks import EIP155, evm_chain_id, parse_caip2, to_caip2, v1_name
from a402.wire.x402 import (
    AnyPaymentPayload,
    AnyPaymentRequirements,
    PaymentPayload,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
)

log = logging.getLogger("a402.provider")

UPTO_LOOKUP_RETRY_SECONDS: Final = 5.0
"""How long a failed lookup of the facilitator's upto address is remembered before it is
asked again: a down facilitator costs one timeout per period, not one per request."""

UPSTREAM_TOO_LARGE: Final = "upstream_too_large"
"""The error of a response withheld, unpaid, for exceeding the buffering limit."""

@dataclass(frozen=True)
class _Payment:
    """A decoded payment that answers this request's offer."""

    version: Literal[1, 2]
    payload: AnyPaymentPayload
    requirements: AnyPaymentRequirements
    payment: ExactPayment
    """As the ledger knows it; its ``terms`` are those of the offer it answers (a
    resumption must be for these)."""
    upto: bool = False
    """x402 ``upto``: the requirements' amount is the maximum; the usage is settled."""

    @property
    def key(self) -> PaymentKey:
        return self.payment.key

    @property
    def fingerprint(self) -> str:
        return self.payment.fingerprint

    @property
    def terms(self) -> str:
        return self.payment.terms


class PaymentMiddleware:
    """Charge for the routes in ``routes``; let every other request through untouched.

    - ``routes``: a ``RouteTable`` or ``{"GET /path/*": "0.001", ...}`` (prices in
      token units, converted with ``token.decimals``; ints are atomic units).
    - ``pay_to``: the provider's address; ``token``: the EIP-3009 token asked for
      (its ``name``/``version`` go to ``extra`` so clients can sign);
      ``network``: CAIP-2, e.g. ``"eip155:84532"``.
    - ``facilitator``: a URL, or a ``FacilitatorClient`` you own.
    - ``ledger``: replay memory, a :class:`PaymentLedger` or a SQLAlchemy URL
      for a :class:`SqlLedger` (``sqlite:///path``, ``postgresql+psycopg://…``).
      Every process that can receive the same payment header (workers,
      replicas, other gateways paid to the same ``pay_to``) must share one;
      the default, an :class:`InMemoryLedger` per middleware instance, is
      right for one process only (see :mod:`a402.provider.ledger`).
    - ``paywall`` (:class:`~a402.provider.settings.Paywall`): ``public_url``, the
      externally visible base URL for ``resource.url`` (defaults to what the request
      says: scheme + Host header), and ``settle_before_serve``.
    - ``timing`` (:class:`~a402.provider.settings.PaymentTiming`): the offer's
      ``max_timeout_seconds``, ``retry_after_seconds``, ``ledger_retention_seconds``
      and ``facilitator_timeout``.
    - Each field of those two groups may also be given on its own
      (``settle_before_serve=True``, ``public_url=...``): it overrides the group's.

    To also accept A402 channel payments, wrap it in
    :class:`~a402.provider.a402_payments.A402Payments`: every 402 then lists the
    schemes in ``alternatives`` after ``exact`` (see :mod:`a402.provider.alternatives`);
    ``exact`` behaves exactly as without them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: RouteTable | RouteSpecs,
        pay_to: str,
        token: TokenInfo,
        network: str,
        facilitator: str | FacilitatorClient,
        ledger: PaymentLedger | str | None = None,
        paywall: Paywall | None = None,
        timing: PaymentTiming | None = None,
        observer: Observer | None = None,
        meter: Meter | None = None,
        **settings: Unpack[PaymentSettings],
    ) -> None:
        self.app = app
        #: The largest response body buffered before it is paid for (serve-then-settle
        #: ``exact``, and every ``upto``): more, and the response is withheld and nothing
        #: is charged (502 ``upstream_too_large``; :func:`a402.provider.asgi.run_buffered`).
        self.max_buffered_body = MAX_BUFFERED_BODY
        #: ``upto`` routes: the usage of a response that reports none in its headers.
        self.meter = meter
        self._upto_facilitator: str | None = None
        #: The last failed lookup of that address and until when (monotonic) it stands.
        self._upto_failure: tuple[float, FacilitatorError] | None = None
        #: One JSON log line and metrics per paid request (:mod:`a402.observe`).
        self.observer = observer if observer is not None else Observer("gateway")
        self.paywall, self.timing = payment_settings(paywall, timing, settings)
        settle_before_serve = self.paywall.settle_before_serve
        public_url = self.paywall.public_url
        max_timeout_seconds = self.timing.max_timeout_seconds
        if not is_address(pay_to):
            raise ValueError(f"pay_to is not an EVM address: {pay_to!r}")
        if not is_address(token.address):
            raise ValueError(f"token address is not an EVM address: {token.address!r}")
        try:
            if parse_caip2(network)[0] != EIP155:
                raise ValueError(f"exact/EIP-3009 needs an eip155 network, got {network!r}")
            chain_id = evm_chain_id(network)
        except WireError as exc:
            raise ValueError(exc.message) from exc
        if isinstance(max_timeout_seconds, bool) or not (
            isinstance(max_timeout_seconds, int) and max_timeout_seconds > 0
        ):
            raise ValueError("max_timeout_seconds must be a positive int")
        self.routes = (
            routes if isinstance(routes, RouteTable)
            else RouteTable.build(routes, decimals=token.decimals)
        )
        self.pay_to = to_checksum(pay_to)
        self.token = token
        self.asset = to_checksum(token.address)
        self.network = network
        # v1 peers only know legacy names. A chain v1 never named (a devnet, a
        # new L2) is announced to v1 clients under its CAIP-2 id instead: the v2
        # SDKs read v1 bodies with CAIP-2 ids fine, a strict legacy client just
        # finds no network it can pay on, which is the truth.
        self.network_v1 = v1_name(chain_id) or network
        self.settle_before_serve = settle_before_serve
        self.max_timeout_seconds = max_timeout_seconds
        if isinstance(ledger, str):
            self._own_ledger: SqlLedger | None = SqlLedger(ledger)
            self.ledger: PaymentLedger = self._own_ledger
        else:
            self._own_ledger = None
            self.ledger = ledger if ledger is not None else InMemoryLedger()
        self.public_url = public_url.rstrip("/") if public_url else None
        self.retry_after = self.timing.retry_after_seconds
        self.retention = self.timing.ledger_retention_seconds
        self._facilitator_timeout = self.timing.facilitator_timeout
        if isinstance(facilitator, FacilitatorClient):
            self._facilitator_url: str | None = None
            self._client: FacilitatorClient | None = facilitator
        else:
            self._facilitator_url = facilitator
            self._client = None
        #: Further schemes every 402 lists after ``exact`` (:meth:`offer_also`).
        self.alternatives: list[AlternativeScheme] = []

    def offer_also(self, scheme: AlternativeScheme) -> None:
        """List ``scheme``'s requirement after ``exact`` in every 402 from now on."""
        self.alternatives.append(scheme)

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._on_shutdown(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = self.routes.match(scope["method"], scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = header_values(scope, PAYMENT_SIGNATURE) or header_values(scope, X_PAYMENT)
        if match.route.scheme == SCHEME_UPTO and self._upto_facilitator is None:
            try:
                self._upto_facilitator = await self._upto_address()
            except FacilitatorError as exc:
                if self.alternatives and not headers:
                    # A channel payment (a402) never goes through the facilitator: its
                    # offer is still made; only the x402 upto one, which names the
                    # facilitator's address, cannot be. Nothing is taken either way.
                    await responses.payment_required(
                        self.offer(scope, match, x402=False),
                        responses.PAYMENT_REQUIRED_REASON,
                        f"this resource costs at most {match.amount} atomic units of "
                        f"{self.token.symbol}; x402 upto payments cannot be taken now (the "
                        f"payment facilitator did not say which address settles them: "
                        f"{exc.reason}): pay by one of the schemes listed").send(send)
                    return
                await responses.facilitator_failed(
                    503 if exc.no_verdict().unavailable else 502,
                    responses.FACILITATOR_UNAVAILABLE,
                    f"the payment facilitator did not say which address settles upto "
                    f"payments ({exc.reason}); nothing was charged",
                    retry_after=self.retry_after, settle_attempted=False).send(send)
                return
        offer = self.offer(scope, match)
        if not headers:
            await responses.payment_required(
                offer, responses.PAYMENT_REQUIRED_REASON,
                f"this resource costs {match.amount} atomic units of {self.token.symbol}; "
                f"send a signed payment in the {PAYMENT_SIGNATURE} (v2) or {X_PAYMENT} (v1) header",
            ).send(send)
            return
        try:
            if len(headers) > 1:
                raise WireError(INVALID_PAYLOAD, "more than one payment header")
            payment = self._accept(decode_payment_payload(headers[0]), offer)
        except WireError as exc:
            await responses.payment_required(offer, exc.reason, exc.message).send(send)
            return
        await self._pay_and_serve(scope, receive, send, offer, payment,
                                  rule=match.route.meter if payment.upto else None)

    def _on_shutdown(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self._own_ledger is not None:
                self._own_ledger.close()
            if message["type"] == "lifespan.shutdown" and self._facilitator_url is not None:
                client, self._client = self._client, None
                if client is not None:
                    await client.aclose()
            return message

        return wrapped

    @property
    def facilitator(self) -> FacilitatorClient:
        if self._client is None:
            assert self._facilitator_url is not None
            self._client = FacilitatorClient(
                self._facilitator_url, timeout=self._facilitator_timeout
            )
        return self._client

    async def _upto_address(self) -> str:
        """:meth:`_facilitator_address`, with a failure remembered for
        :data:`UPTO_LOOKUP_RETRY_SECONDS`: while the facilitator is down, one request per
        period waits out its timeout and the others get the same answer at once (the
        a402-only offer, or 503). Nothing is charged either way, and a success is kept
        for good (the address a facilitator settles with does not change under it)."""
        now = time.monotonic()
        if self._upto_failure is not None and now < self._upto_failure[0]:
            raise self._upto_failure[1].with_traceback(None)
        try:
            address = await self._facilitator_address()
        except FacilitatorError as exc:
            self._upto_failure = (time.monotonic() + UPTO_LOOKUP_RETRY_SECONDS, exc)
            raise
        self._upto_failure = None
        return address

    async def _facilitator_address(self) -> str:
        """The address our facilitator settles ``upto`` with (its ``/supported``), which
        payers bind their signature to; FacilitatorError if it settles no upto here."""
        supported = await self.facilitator.supported()
        for kind in supported.kinds:
            address = (kind.extra or {}).get("facilitatorAddress")
            if kind.scheme == SCHEME_UPTO and kind.network == self.network and \
                    isinstance(address, str) and is_address(address):
                return to_checksum(address)
        raise FacilitatorError(UNSUPPORTED_SCHEME,
                               f"the facilitator settles no upto payments on {self.network}")

    # -------------------------------------------------------------------- the offer

    def offer(self, scope: Scope, match: RouteMatch, *, x402: bool = True) -> responses.Offer:
        """The requirements for this request, in v2 and v1 form (``x402=False``: the
        alternatives only, for an upto route whose facilitator is not known)."""
        url = f"{self.public_url}{scope['path']}" if self.public_url else str(URL(scope=scope))
        if self.public_url and scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        resource = ResourceInfo(
            url=url, description=match.route.description, mime_type=match.route.mime_type
        )
        scheme, extra = SCHEME_EXACT, dict(self.token.eip712_extra())
        if match.route.scheme == SCHEME_UPTO:
            # As the SDK's upto server: Permit2, and the facilitator payers bind to.
            assert self._upto_facilitator is not None or not x402
            scheme = SCHEME_UPTO
            extra = {"assetTransferMethod": TRANSFER_METHOD_PERMIT2, **extra}
            if self._upto_facilitator is not None:  # else not offered (x402=False)
                extra["facilitatorAddress"] = self._upto_facilitator
        requirements = PaymentRequirements(
            scheme=scheme, network=self.network, amount=str(match.amount),
            asset=self.asset, pay_to=self.pay_to, max_timeout_seconds=self.max_timeout_seconds,
            extra=extra,
        )
        requirements_v1 = PaymentRequirementsV1(
            scheme=scheme, network=self.network_v1, max_amount_required=str(match.amount),
            resource=url, description=resource.description, mime_type=resource.mime_type,
            pay_to=self.pay_to, max_timeout_seconds=self.max_timeout_seconds, asset=self.asset,
            extra=extra,
        )
        if not self.alternatives:
            return responses.Offer(requirements, resource, requirements_v1, x402=x402)
        base = self.public_url or _base_url(scope)
        return responses.Offer(
            requirements, resource, requirements_v1,
            alternatives=tuple(scheme.requirement(
                match.amount, base, max_timeout_seconds=self.max_timeout_seconds)
                for scheme in self.alternatives),
            alternatives_v1=tuple(scheme.requirement_v1(
                match.amount, base, network_v1=self.network_v1, resource=resource,
                max_timeout_seconds=self.max_timeout_seconds)
                for scheme in self.alternatives),
            x402=x402,
        )

    def _accept(self, payment: AnyPaymentPayload, offer: responses.Offer) -> _Payment:
        """Check the payment answers ``offer``; raise WireError with the reason if not."""
        requirements: AnyPaymentRequirements
        version: Literal[1, 2]
        if isinstance(payment, PaymentPayload):
            _match_v2(payment.accepted, offer.requirements)
            requirements, version = offer.requirements, 2
            # The resource is ours to name, not the client's (its copy is unsigned).
            payment = payment.model_copy(update={"resource": offer.resource})
        else:
            if payment.scheme != SCHEME_EXACT:
                raise WireError(
                    UNSUPPORTED_SCHEME, f"only 'exact' is accepted, not {payment.scheme!r}"
                )
            try:
                same_network = to_caip2(payment.network) == self.network
            except WireError:
                same_network = False
            if not same_network:
                raise WireError(
                    INVALID_NETWORK, f"payments go on {self.network_v1}, not {payment.network!r}"
                )
            requirements, version = offer.requirements_v1, 1
        terms = offer.requirements
        upto = terms.scheme == SCHEME_UPTO
        decoded = (UptoEvmPayload.from_wire(payment.payload, reason=INVALID_PAYLOAD) if upto
                   else ExactEvmPayload.from_wire(payment.payload, reason=INVALID_PAYLOAD))
        return _Payment(
            version=version, payload=payment, requirements=requirements,
            payment=ExactPayment.of(
                decoded, network=self.network, asset=self.asset,
                terms=payment_terms(scheme=terms.scheme, network=terms.network,
                                    amount=terms.amount, asset=terms.asset,
                                    pay_to=terms.pay_to, resource=offer.resource.url)),
            upto=upto,
        )

    # ------------------------------------------------------------- pay, then serve

    async def _pay_and_serve(
        self, scope: Scope, receive: Receive, send: Send, offer: responses.Offer, p: _Payment,
        *, rule: MeterRule | None = None,
    ) -> None:
        """Drive the one server-side ``exact`` flow (:mod:`a402.exact.serve`) with this
        middleware's ledger, facilitator and app, then answer what it decided. ``rule``:
        the upto route's metering rule, which then sets the charge (:meth:`_usage`)."""
        started = time.perf_counter()
        if rule is not None and rule.unit in (Unit.FIELD, Unit.EVENT):
            # The rule reads the body decoded: the app is asked only for codings it can
            # decode (a browser's ``br`` would be unreadable: withheld, never paid).
            scope = {**scope, "headers": readable_request(scope.get("headers", []))}
        receive = body = _HashedBody(receive)
        buffered: list[BufferedResponse] = []
        unreadable: list[UsageError] = []
        too_large: list[ResponseTooLarge] = []

        async def serve() -> bool:
            ran_from = time.monotonic()
            try:
                response = await run_buffered(self.app, scope, receive,
                                              limit=self.max_buffered_body)
            except ResponseTooLarge as exc:
                # Cut off, never paid for: the flow releases the payment unsettled.
                too_large.append(exc)
                return False
            ran = time.monotonic() - ran_from
            buffered.append(response)
            if p.upto and response.status < 400:
                try:
                    charge = self._usage(response, p, rule, ran)
                except UsageError as exc:
                    unreadable.append(exc)
                    return False
                await call.note_charge(charge)
            return response.status < 400

        call = ExactCall(
            p.payment, p.payload, p.requirements, ledger=self.ledger,
            facilitator=lambda: self.facilitator, serve=serve, upto=p.upto,
            first_call_differs=lambda: self._other_request(scope, body, p))
        # upto: the charge is known only once the app has answered.
        settle_first = self.settle_before_serve and not p.upto
        outcome = await call.run(now=time.time(), retention=self.retention,
                                 settle_first=settle_first)
        keep_until = call.keep_until
        match outcome:
            case Reused(LedgerState.SETTLED, settlement) if await self._redeliver(
                    send, scope, body, p, settlement):
                self._observe(scope, p, outcome, time.perf_counter() - started,
                              label="redelivered")
                return
            case Reused(state, settlement):
                await self._refuse_reuse(send, offer, state, settlement)
            case NotResumable(settlement) if call.refused_charge is not None:
                await responses.payment_required(
                    offer, responses.PAYMENT_TERMS_MISMATCH,
                    f"this payment is settled, or being settled, for {call.refused_charge} atomic "
                    "units: the charge of the request it was first sent with (another body); "
                    "it buys that request only: resend that request unchanged for its "
                    "response. This request was not served and nothing more was charged",
                    transaction=settlement.transaction if settlement else None,
                ).send(send)
            case OtherTerms(settlement) | NotResumable(settlement):
                # Nothing taken, nothing settled: the pending entry waits for its own terms.
                await responses.payment_required(
                    offer, responses.PAYMENT_TERMS_MISMATCH,
                    "this payment is pending settlement for another resource or other terms "
                    "(price, payee, asset, network); nothing was served or charged for this "
                    "request: resend it unchanged to the URL it was first sent to",
                    transaction=settlement.transaction if settlement else None,
                ).send(send)
            case Rejected(verdict):
                await responses.payment_required(
                    offer, outcome.reason,
                    verdict.invalid_message or "the facilitator rejected the payment",
                    payer=verdict.payer,
                ).send(send)
            case NotServed() if unreadable:
                log.error("upto response withheld, nothing charged: %s", unreadable[0])
                await responses.Reply(502, json.dumps({
                    "error": "usage_unreadable", "message": str(unreadable[0]),
                    "charged": False}).encode(),
                    [("content-type", "application/json")]).send(send)
            case NotServed() if too_large:
                log.error("response withheld, nothing charged: %s", too_large[0])
                await responses.Reply(502, json.dumps({
                    "error": UPSTREAM_TOO_LARGE, "charged": False, "settled": False,
                    "message": "nothing was charged: the response was withheld because its "
                               f"body exceeds {too_large[0].limit} bytes, the most this "
                               "provider holds before it is paid for"}).encode(),
                    [("content-type", "application/json")]).send(send)
            case NotServed():
                await buffered[0].replay(send)
            case RequestRefused(failure, settle_attempted) | Unanswered(failure, settle_attempted):
                if settle_attempted and buffered and isinstance(outcome, Unanswered):
                    await self._hold(scope, body, p, buffered[0], keep_until)
                await self._facilitator_failed(send, offer, failure, settle_attempted,
                                               refused=isinstance(outcome, RequestRefused))
            case SettlePending(settlement):
                log.info("settlement pending for %s: %s", p.key.payer, settlement.transaction)
                if buffered:
                    await self._hold(scope, body, p, buffered[0], keep_until)
                await self._settle_failed(send, offer, p, outcome)
            case SettleFailed(settlement):
                log.info("settlement failed for %s: %s", p.key.payer, settlement.error_reason)
                await self._settle_failed(send, offer, p, outcome)
            case Paid(settlement, serve_now, unrecorded):
                if unrecorded is not None:
                    # The payer is charged: the response is due whatever the ledger says
                    # (the entry stays IN_FLIGHT until it expires; see a402.exact.serve).
                    log.error("settled %s but the replay ledger did not record it",
                              settlement.transaction, exc_info=unrecorded)
                log.info("settled %s for %s: %s", p.requirements.scheme, p.key.payer,
                         settlement.transaction)
                paid_headers = self._paid_headers(settlement, p.version)
                held = (await self._held(scope, body, p)
                        if serve_now and not settle_first else None)
                if held is not None:  # resumed: the response computed before it settled
                    await self._serve_paid(send, held, settlement, p.version)
                elif serve_now:
                    paid = adding_headers(send, paid_headers,
                                          defaults=[("cache-control", "private")])
                    if p.upto:  # resumed: charged what was recorded; its new report is moot
                        paid = _without_usage_reports(paid)
                    await self.app(scope, receive, self._keeping(scope, body, p, paid,
                                                                 keep_until))
                else:
                    response = buffered[0]
                    await self._keep(scope, body, p, response.status, response.headers,
                                     b"".join(response.body), keep_until)
                    await self._serve_paid(send, response, settlement, p.version)
        self._observe(scope, p, outcome, time.perf_counter() - started)

    def _usage(self, response: BufferedResponse, p: _Payment, rule: MeterRule | None = None,
               seconds: float = 0.0) -> int:
        """The amount an upto response used; its report headers are removed from what the
        payer receives.

        A route with a metering rule (:mod:`a402.metering`, the same rule and code an A402
        channel charges by) is charged what the rule measures on this response, and only
        that: ``min(⌊units × rate⌋, δ)``, so never above the maximum the payer signed for
        (δ is the offer's amount: the route's price is the rule's maximum), and a report
        header the upstream may also send does not override it. ``seconds`` is how long
        the app ran (``per-second``). A response the rule cannot read
        (:class:`~a402.metering.UsageUnreadable`) is a :class:`UsageError`: withheld, and
        nothing charged. Without a rule: :func:`a402.provider.usage.charge_for`."""
        assert isinstance(p.requirements, PaymentRequirements)
        body = b"".join(response.body)
        if rule is not None:
            try:
                amount = rule.charge(response.status, response.headers, body, seconds)
            except UsageUnreadable as exc:
                raise UsageError(f"the metering rule cannot read this response: {exc}") \
                    from exc
            amount = min(amount, p.requirements.amount_int)
        else:
            amount = charge_for(MeteredResponse(response.status, response.headers, body,
                                                p.requirements.amount_int), self.meter)
        response.headers = without_reports(response.headers)
        return amount

    # ------------------------------------------------- delivered once, kept for a resend

    async def _request(self, scope: Scope, body: _HashedBody, p: _Payment) -> str:
        """:func:`request_digest` of this request: method, the resource we named for it
        (in ``terms``: path and query), and its body."""
        return request_digest("http", method=scope["method"], terms=p.terms,
                              body=await body.digest())

    async def _other_request(self, scope: Scope, body: _HashedBody, p: _Payment) -> bool:
        """Was this resumed payment first sent with another request (its kept response
        answers another one)? Read where the flow cannot be interrupted (the entry is
        IN_FLIGHT: an exception or a cancellation here would leave it so, unresumable);
        a failed read is "not known to differ"."""
        if not isinstance(self.ledger, DeliveryLedger):
            return False
        differs = False
        try:
            with anyio.CancelScope(shield=True):
                first = await self.ledger.delivery(p.key)
                differs = first is not None and not first.answers(
                    p.fingerprint, await self._request(scope, body, p))
        except Exception:
            log.exception("could not read the first request of payment %s", p.key.nonce)
        return differs

    async def _keep(self, scope: Scope, body: _HashedBody, p: _Payment, status: int,
                    headers: list[tuple[bytes, bytes]], content: bytes, until: float, *,
                    kept: bool = True) -> None:
        """Durably keep what this settled payment delivers, before it is released (see
        :mod:`a402.provider.deliveries`). A failure to keep is logged, not raised: the
        payer is charged and the response is due."""
        if not isinstance(self.ledger, DeliveryLedger):
            return
        try:
            delivery = Delivery.of(
                fingerprint=p.fingerprint, request=await self._request(scope, body, p),
                status=status, body=content,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                limit=MAX_KEPT_BODY if kept else -1)
            await self.ledger.keep_delivery(p.key, delivery, expires_at=until)
        except Exception:
            log.exception("could not keep the response of settled payment %s", p.key.nonce)

    async def _hold(self, scope: Scope, body: _HashedBody, p: _Payment,
                    response: BufferedResponse, until: float) -> None:
        """Keep the response computed for a payment whose settlement is not known yet, so
        the resend that resumes it, at any replica sharing the ledger, delivers it rather
        than running the app again."""
        await self._keep(scope, body, p, response.status, response.headers,
                         b"".join(response.body), until)

    async def _held(self, scope: Scope, body: _HashedBody, p: _Payment
                    ) -> BufferedResponse | None:
        """The response held for this resumed payment and request, if one was kept."""
        if not isinstance(self.ledger, DeliveryLedger):
            return None
        delivery = await self.ledger.delivery(p.key)
        if delivery is None or not delivery.kept or not delivery.answers(
                p.fingerprint, await self._request(scope, body, p)):
            return None
        return _buffered(delivery)

    def _keeping(self, scope: Scope, body: _HashedBody, p: _Payment, send: Send,
                 until: float) -> Send:
        """A ``send`` that holds the response back until it is complete (then keeps it and
        sends it) or larger than :data:`MAX_KEPT_BODY` (then records that it was not kept
        and streams it on)."""
        held: list[Message] = []
        size = 0
        released = False

        async def keeping(message: Message) -> None:
            nonlocal size, released
            if released:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.start" and not _fits(message):
                # Streamed (no length) or too large: record that it is not kept, then
                # stream it as it comes, never held back.
                released = True
                await self._keep(scope, body, p, int(message["status"]), [], b"",
                                 until, kept=False)
                await send(held.pop())
                return
            if message["type"] != "http.response.body":
                return
            size += len(message.get("body", b""))
            if size <= MAX_KEPT_BODY and message.get("more_body", False):
                return
            released = True
            start = next(m for m in held if m["type"] == "http.response.start")
            content = b"".join(m.get("body", b"") for m in held
                               if m["type"] == "http.response.body")
            await self._keep(scope, body, p, int(start["status"]),
                             list(start.get("headers", [])), content, until)
            for waiting in held:
                await send(waiting)
            held.clear()

        return keeping

    async def _redeliver(self, send: Send, scope: Scope, body: _HashedBody, p: _Payment,
                         settlement: SettleResponse | None) -> bool:
        """The identical resend of a settled payment: send what it bought again (or say it
        settled and was not kept). False if this is not that resend: refuse it as used."""
        if not isinstance(self.ledger, DeliveryLedger):
            return False
        delivery = await self.ledger.delivery(p.key)
        if delivery is None or not delivery.answers(p.fingerprint,
                                                    await self._request(scope, body, p)):
            return False
        extra = self._paid_headers(settlement, p.version) if settlement is not None else []
        if not delivery.kept:
            await responses.Reply(410, json.dumps({
                "error": RESPONSE_NOT_KEPT, "settled": True, "charged": True,
                "transaction": settlement.transaction if settlement else None,
                "message": "this payment was paid and settled and its response delivered; "
                           f"the response was streamed or larger than {MAX_KEPT_BODY} bytes "
                           "and was not kept, so it cannot be sent again; nothing more was "
                           "charged"}).encode(),
                [("content-type", "application/json"), *extra]).send(send)
            return True
        log.info("redelivered the response of settled payment %s", p.key.nonce)
        again = _buffered(delivery)
        if settlement is not None:
            await self._serve_paid(send, again, settlement, p.version)
        else:
            await again.replay(send, [("cache-control", "private")])
        return True

    def _observe(self, scope: Scope, p: _Payment, outcome: Outcome, latency: float, *,
                 label: str | None = None) -> None:
        """The paid request's log line and metrics: its outcome names what became of the
        money (``settled``: charged; ``pending``: may be charged; every other: nothing
        moved)."""
        settlement = getattr(outcome, "settlement", None)
        amount = p.requirements.amount if isinstance(p.requirements, PaymentRequirements) \
            else p.requirements.max_amount_required
        if p.upto and settlement is not None and settlement.amount is not None:
            amount = settlement.amount  # what was charged, not the maximum
        self.observer.paid(
            request_id=new_request_id(scope), payer=p.key.payer, amount=amount,
            scheme=p.requirements.scheme,
            outcome=label or outcome.label,
            latency=latency, payee=self.pay_to, asset=p.key.asset, network=p.key.network,
            nonce=p.key.nonce, method=scope.get("method"), path=scope.get("path"),
            transaction=(settlement.transaction or None) if settlement is not None else None)

    # ------------------------------------------------------------------- answers

    def _receipt(self, settlement: SettleResponse, version: int) -> SettleResponse:
        """v1 payers get the network under the name they paid on."""
        if version == 1 and settlement.network == self.network:
            return settlement.model_copy(update={"network": self.network_v1})
        return settlement

    def _paid_headers(self, settlement: SettleResponse, version: int) -> list[tuple[str, str]]:
        return [
            responses.receipt_header(self._receipt(settlement, version), version),
            ("access-control-expose-headers", responses.EXPOSED_HEADERS),
        ]

    async def _serve_paid(
        self, send: Send, response: BufferedResponse, settlement: SettleResponse, version: int
    ) -> None:
        extra = self._paid_headers(settlement, version)
        if not response.has_header("cache-control"):
            # A shared cache must not hand a paid response to the next, unpaying, client.
            extra.append(("cache-control", "private"))
        await response.replay(send, extra)

    async def _settle_failed(
        self, send: Send, offer: responses.Offer, p: _Payment,
        outcome: SettlePending | SettleFailed,
    ) -> None:
        receipt = self._receipt(outcome.settlement, p.version)
        if isinstance(outcome, SettlePending):
            await responses.settlement_pending(receipt, p.version, self.retry_after).send(send)
            return
        await responses.payment_required(
            offer, outcome.reason, outcome.message, settlement=receipt, version=p.version,
            transaction=outcome.settlement.transaction or None,
        ).send(send)

    async def _refuse_reuse(
        self, send: Send, offer: responses.Offer, state: LedgerState | None,
        settlement: SettleResponse | None,
    ) -> None:
        if state == LedgerState.SETTLED:
            # Spent for good: only a new payment can buy another response.
            await responses.payment_required(
                offer, responses.PAYMENT_ALREADY_USED,
                "this payment authorization has already bought a response; sign a new one",
                transaction=settlement.transaction if settlement else None,
            ).send(send)
            return
        # In use by a request in progress, or pending on chain: money may be
        # moving, so offering a fresh payment could make an honest client pay twice.
        message = (
            "this payment authorization is being used by another request right now; "
            "if it is yours, resend the same payment header later"
            if state == LedgerState.IN_FLIGHT
            else "this payment authorization is pending settlement under another signature"
        )
        await responses.payment_in_use(message, self.retry_after).send(send)

    async def _facilitator_failed(
        self, send: Send, offer: responses.Offer, failure: NoVerdict, settle_attempted: bool, *,
        refused: bool,
    ) -> None:
        """No verdict from the facilitator; the flow has already released the payment, or
        marked it pending if a settle was attempted (it may have gone through)."""
        log.warning("facilitator failed while %s: %s: %s",
                    "settling" if settle_attempted else "verifying",
                    failure.reason, failure.message)
        if refused:
            # The facilitator refused the request as malformed: nothing can have moved.
            await responses.payment_required(offer, failure.reason, failure.message).send(send)
            return
        if failure.unavailable:
            status, error = 503, responses.FACILITATOR_UNAVAILABLE
            message = f"the payment facilitator could not be reached ({failure.reason})"
        else:
            status, error = 502, responses.FACILITATOR_ERROR
            message = f"the payment facilitator gave no usable answer ({failure.reason})"
        await responses.facilitator_failed(
            status, error, message, retry_after=self.retry_after,
            settle_attempted=settle_attempted,
        ).send(send)


def _match_v2(accepted: PaymentRequirements, offered: PaymentRequirements) -> None:
    """Does the requirement the client echoed agree with what we offer? WireError if not.

    The money terms must be equal (addresses compared case-insensitively);
    ``maxTimeoutSeconds`` is not compared because the signed ``validBefore`` is
    what bounds the payment, and our ``extra`` must be contained in theirs
    (their signature was made over the domain it names).
    """
    if accepted.scheme != offered.scheme:
        raise WireError(UNSUPPORTED_SCHEME,
                        f"only {offered.scheme!r} is accepted here, not {accepted.scheme!r}")
    if accepted.network != offered.network:
        raise WireError(
            INVALID_NETWORK, f"payments go on {offered.network}, not {accepted.network!r}"
        )
    differ = [
        name
        for name, same in (
            ("amount", accepted.amount == offered.amount),
            ("asset", same_address(accepted.asset, offered.asset)),
            ("payTo", same_address(accepted.pay_to, offered.pay_to)),
            ("extra", _contains(accepted.extra or {}, offered.extra or {})),
        )
        if not same
    ]
    if differ:
        raise WireError(
            responses.NO_MATCHING_REQUIREMENTS,
            f"the accepted requirement differs from the offer in: {', '.join(differ)}",
        )


def _without_usage_reports(send: Send) -> Send:
    """A ``send`` that drops the handler's usage report headers (:mod:`a402.provider.usage`)."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": without_reports(list(message.get("headers", [])))}
        await send(message)

    return wrapped


def _fits(start: Message) -> bool:
    """Does this response state a length that may be kept (else it is streamed on)?"""
    for name, value in start.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value) <= MAX_KEPT_BODY
            except ValueError:
                return False
    return False


def _buffered(delivery: Delivery) -> BufferedResponse:
    return BufferedResponse(status=delivery.status, started=True, body=[delivery.body],
                            headers=[(k.encode("latin-1"), v.encode("latin-1"))
                                     for k, v in delivery.headers])


class _HashedBody:
    """The request's ``receive``, hashing the body as the app reads it; :meth:`digest`
    reads whatever the app left unread (nothing is read twice) and keeps it for the app,
    which still receives the whole body if it runs after the digest was taken (a resumed
    payment whose kept response answers another request: without this, the app would
    wait for a body already read, and the payer, charged, would get no response)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._hash = hashlib.sha256()
        self._done = False
        self._unread: list[Message] = []

    async def __call__(self) -> Message:
        if self._unread:
            return self._unread.pop(0)
        return await self._read()

    async def _read(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._hash.update(message.get("body", b""))
            self._done = self._done or not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self._done = True
        return message

    async def digest(self) -> str:
        while not self._done:
            self._unread.append(await self._read())
        return self._hash.hexdigest()


def _base_url(scope: Scope) -> str:
    """``scheme://host[:port]`` plus the mount point, as the request addressed us."""
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}{scope.get('root_path', '')}"


def _contains(theirs: dict[str, Any], ours: dict[str, Any]) -> bool:
    return all(k in theirs and theirs[k] == v for k, v in ours.items())


__all__ = ["PaymentMiddleware"]
