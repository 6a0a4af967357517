"""A paid A2A agent: any ``async (text) -> text`` function, charged per task with x402.

    agent = PaidAgent(translate, name="Translator", description="...", url="https://t.example/",
                      price="0.01", pay_to=PROVIDER, token=usdc, network="eip155:8453",
                      facilitator="https://facilitator.example")
    app = agent.app()            # Starlette: JSON-RPC (A2A 1.0 + 0.3) and the agent card
    agent.onchain_model()        # the card for the Agent contract (.to_abi()); clients refuse a
                                 # served card that differs from what the chain then renders

One task, as the agent sees it (metadata on the status message; task states
in A2A 1.0 spelling, v0.3 clients see ``input-required`` etc.)::

    new message ................ INPUT_REQUIRED  payment-required + x402.payment.required
    payment-submitted + payload  (payload checked against our terms, then the replay ledger)
      facilitator /verify ok ... WORKING         payment-verified
      run the function
      facilitator /settle ok ... COMPLETED       payment-completed + receipts, artifact = result
    verify says invalid ........ FAILED          payment-failed + error + receipt(success=false)
    payload already used ....... FAILED          payment-failed, DUPLICATE_NONCE
    function raised ............ FAILED          payment-failed, service_failed (nothing settled)
    settle failed .............. FAILED          payment-failed + the facilitator's errorReason
    facilitator refused our
    request as malformed (400) . FAILED          payment-failed + its reason (nothing moved)
    facilitator unreachable,
    or settlement pending ...... INPUT_REQUIRED  payment-required + error; resend the SAME payload
    payment-rejected ........... FAILED          payment-rejected

The payment decisions are made by the one server-side ``exact`` flow
(:mod:`a402.exact.serve`), run by its one driver,
:class:`~a402.provider.exact_call.ExactCall` (with the replay ledger and the
facilitator), as for the HTTP middleware and the MCP paywall; the executor gives it
the function to run and renders its outcome as task states.

The result leaves the agent only with a successful settlement: a failed or
pending settle never delivers the artifact, and the function never runs before
``/verify`` has accepted the payment. A pending payment's result is held (in
memory, per task) and delivered when the same payload is resent to the same
task and settles; the same payload in another task is refused.

The extension is declared ``required`` on the card: a request that activates
none of ``X402_EXTENSION_URIS`` (``A2A-Extensions`` / ``X-A2A-Extensions``
header, or the message's ``extensions``) is answered with
``ExtensionSupportRequiredError``; activated URIs are echoed in both headers.
Either header activates on either wire: A2A 1.0 names the header
``A2A-Extensions``, but the x402 A2A transport spec tells clients to send
``X-A2A-Extensions``, so a 1.0 client following it must not be refused (a2a-sdk
reads the ``X-`` name only on its 0.3 path). The gate and the echo read the
same headers (``EXTENSION_HEADERS``), so an echoed URI is always one the gate
counted as activated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from a2a.extensions.common import get_requested_extensions
from a2a.helpers import get_message_text
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import Event, EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.tasks import InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol
from a2a.utils.errors import ExtensionSupportRequiredError
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from a402.agents import a2a_x402
from a402.agents.card import OnchainCard, Skill
from a402.chain.deploy import TokenInfo
from a402.evm.address import is_address, to_checksum
from a402.exact.eip3009 import SCHEME_EXACT, ExactEvmPayload
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
from a402.facilitator.client import FacilitatorClient
from a402.provider.asgi import adding_headers, header_values
from a402.provider.exact_call import ExactCall
from a402.provider.ledger import (
    InMemoryLedger,
    PaymentKey,
    PaymentLedger,
)
from a402.provider.routes import Price, to_atomic
from a402.serving import BoundedJsonBodies, JsonErrors, json_http_errors
from a402.wire import errors as wire_errors
from a402.wire.errors import WireError
from a402.wire.networks import evm_chain_id
from a402.wire.x402 import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    parse_payment_payload,
)

log = logging.getLogger("a402.agents.a2a")

Handler = Callable[[str], Awaitable[str]]
"""The business function: the task's request text in, the result text out."""

EXTENSION_HEADERS: Final = a2a_x402.EXTENSION_HEADERS
_LEDGER_RETENTION: Final = 600


# ------------------------------------------------------------------------- the agent


class PaidAgent:
    """Configuration, card and ASGI app of an agent that charges ``price`` per task.

    ``url`` is the public JSON-RPC endpoint (its path is where the app mounts
    the endpoint; the card is at ``/.well-known/agent-card.json`` of the same
    origin). ``price`` is token units as a decimal string (converted exactly
    with ``token.decimals``; too many decimals is an error) or an int of
    atomic units. ``facilitator`` is a URL or a ``FacilitatorClient`` you own.
    ``ledger`` is the replay memory (:mod:`a402.provider.ledger`), in-memory by
    default, which is right for one process: replicas of one agent name the same
    resource, so the facilitator cannot tell their settlements apart, and must share
    a :class:`~a402.provider.ledger.SqlLedger` (a result held for a pending payment
    stays in the process that computed it).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str,
        description: str,
        url: str,
        price: Price,
        pay_to: str,
        token: TokenInfo,
        network: str,
        facilitator: str | FacilitatorClient,
        skill: Skill | None = None,
        version: str = "1.0.0",
        max_timeout_seconds: int = 120,
        ledger: PaymentLedger | None = None,
        task_store: TaskStore | None = None,
        require_activation: bool = True,
        extension_uri: str = a2a_x402.X402_EXTENSION_URI,
    ) -> None:
        if not is_address(pay_to) or not is_address(token.address):
            raise ValueError("pay_to and the token address must be EVM addresses")
        try:
            evm_chain_id(network)
        except WireError as e:
            raise ValueError(e.message) from e
        if extension_uri not in a2a_x402.X402_EXTENSION_URIS:
            raise ValueError(f"unknown x402 extension URI {extension_uri!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an absolute http(s) URL, got {url!r}")
        if isinstance(max_timeout_seconds, bool) or max_timeout_seconds <= 0:
            raise ValueError("max_timeout_seconds must be a positive int")
        self.handler = handler
        self.name, self.description, self.version = name, description, version
        self.url = url
        self.rpc_path = parts.path or "/"
        self.token = token
        self.network = network
        self.extension_uri = extension_uri
        self.require_activation = require_activation
        # A2A 1.0 requires at least one tag.
        self.skill = skill or Skill(id="task", name=name, description=description,
                                    tags=("x402",))
        self.terms = a2a_x402.PaymentTerms(
            network=network, asset=to_checksum(token.address),
            amount=to_atomic(price, token.decimals), pay_to=to_checksum(pay_to),
        )
        self.requirements = PaymentRequirements(
            scheme=SCHEME_EXACT, network=network, amount=str(self.terms.amount),
            asset=self.terms.asset, pay_to=self.terms.pay_to,
            max_timeout_seconds=max_timeout_seconds, extra=token.eip712_extra(),
        )
        self.ledger: PaymentLedger = ledger if ledger is not None else InMemoryLedger()
        self.task_store: TaskStore = task_store if task_store is not None else InMemoryTaskStore()
        self.card = self._build_card()
        if isinstance(facilitator, FacilitatorClient):
            self._facilitator_url: str | None = None
            self._facilitator: FacilitatorClient | None = facilitator
        else:
            self._facilitator_url = facilitator
            self._facilitator = None

    @property
    def facilitator(self) -> FacilitatorClient:
        """Created on first use, so it binds to the event loop that serves the app."""
        if self._facilitator is None:
            assert self._facilitator_url is not None
            self._facilitator = FacilitatorClient(self._facilitator_url)
        return self._facilitator

    def payment_required(self, error: str | None = None) -> PaymentRequired:
        resource = ResourceInfo(url=self.url, description=self.skill.description,
                                mime_type="text/plain")
        return PaymentRequired(error=error, resource=resource, accepts=[self.requirements])

    def onchain_model(self) -> OnchainCard:
        """The card as the Agent contract holds it (``to_abi()`` feeds ``updateCard``)."""
        return OnchainCard.from_a2a(agent_card_to_dict(self.card))

    def onchain_card(self) -> dict[str, Any]:
        """The card exactly as ``Agent.cardJSON()`` will render it once registered; clients
        refuse a served card that differs from it."""
        return self.onchain_model().to_a2a()

    def app(self) -> Starlette:
        """The ASGI app: JSON-RPC at ``rpc_path`` (1.0 and 0.3) and the well-known card."""
        handler = _ActivationGate(
            agent_executor=X402Executor(self), task_store=self.task_store, agent_card=self.card,
            required=self.require_activation,
        )

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await handler.aclose()
                if self._facilitator_url is not None and self._facilitator is not None:
                    client, self._facilitator = self._facilitator, None
                    await client.aclose()

        routes = [
            *create_agent_card_routes(self.card),
            *create_jsonrpc_routes(handler, rpc_url=self.rpc_path, enable_v0_3_compat=True,
                                   context_builder=_EitherExtensionHeader()),
        ]
        app = Starlette(routes=routes, lifespan=lifespan)
        app.add_middleware(_EchoExtensions)
        app.add_middleware(_IntegralNumbers)
        # a2a-sdk decodes the JSON-RPC body itself (request.json(), then protobuf): bound
        # every body first (the JSON-RPC route is the only one that takes one), so none can
        # be deep enough to overflow the stack of either, whatever path it is sent to.
        app.add_middleware(BoundedJsonBodies)
        app.add_middleware(JsonErrors)
        json_http_errors(app)
        return app

    def _build_card(self) -> AgentCard:
        interfaces = [
            AgentInterface(url=self.url, protocol_binding=TransportProtocol.JSONRPC,
                           protocol_version=v)
            for v in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
        ]
        extension = AgentExtension(
            uri=self.extension_uri, required=True, params=self.terms.to_params(),
            description="Payment per task with x402 (exact, EIP-3009) in task metadata.",
        )
        return AgentCard(
            name=self.name, description=self.description, version=self.version,
            supported_interfaces=interfaces,
            capabilities=AgentCapabilities(streaming=False, extensions=[extension]),
            default_input_modes=["text/plain"], default_output_modes=["text/plain"],
            skills=[AgentSkill(
                id=self.skill.id, name=self.skill.name, description=self.skill.description,
                tags=list(self.skill.tags), examples=list(self.skill.examples),
            )],
        )


# ---------------------------------------------------------------- the executor


@dataclass
class _Held:
    """A result computed for a payment whose settlement is not known yet."""

    task_id: str
    result: str


class X402Executor(AgentExecutor):
    """Runs the per-task payment state machine of ``PaidAgent`` (see the module doc)."""

    def __init__(self, agent: PaidAgent) -> None:
        self.agent = agent
        self._held: dict[PaymentKey, _Held] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        message = context.message
        assert message is not None
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        uri = _activated_uri(context)
        task = context.current_task
        if task is None:
            await event_queue.enqueue_event(Task(
                id=context.task_id, context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED), history=[message],
            ))
            await self._ask(updater, uri)
            return
        meta = _metadata(message)
        prior = a2a_x402.receipts_of(_metadata(task.status.message))
        status = a2a_x402.status_of(meta)
        if status == a2a_x402.PAYMENT_SUBMITTED:
            await self._pay_and_run(updater, task, meta, uri, prior)
        elif status == a2a_x402.PAYMENT_REJECTED:
            await self._fail(updater, uri, a2a_x402.PAYMENT_REJECTED_BY_CLIENT,
                             "the client declined to pay", prior, status=a2a_x402.PAYMENT_REJECTED)
        else:
            await self._ask(updater, uri, receipts=prior)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

    # --- the payment

    async def _pay_and_run(
        self, updater: TaskUpdater, task: Task, meta: Mapping[str, Any], uri: str,
        prior: list[SettleResponse],
    ) -> None:
        agent = self.agent
        receipts = list(prior)
        try:
            payload = parse_payment_payload(a2a_x402.from_struct(meta.get(a2a_x402.PAYLOAD_KEY)))
            if not isinstance(payload, PaymentPayload):
                raise WireError(wire_errors.INVALID_X402_VERSION,
                                "this agent takes x402Version 2 payloads")
            if not agent.terms.admits(payload.accepted):
                raise WireError(a2a_x402.NO_MATCHING_REQUIREMENTS,
                                "the payload does not answer this agent's terms")
            evm = ExactEvmPayload.from_wire(payload.payload, reason=wire_errors.INVALID_PAYLOAD)
        except WireError as e:
            await self._fail(updater, uri, e.reason, e.message, receipts)
            return
        # The resource is ours to name, not the client's (its copy is unsigned): the
        # facilitator binds a settlement to it, which is what keeps another agent paid to
        # the same payee (no shared ledger) from being paid by this settlement too.
        payload = payload.model_copy(update={"resource": agent.payment_required().resource})
        payer = evm.authorization.from_address
        payment = ExactPayment.of(evm, network=agent.network, asset=agent.terms.asset)
        key = payment.key
        held: _Held | None = None
        failure: Exception | None = None

        async def resumable(_settlement: SettleResponse | None) -> bool:
            nonlocal held
            held = self._held.get(key)
            return held is not None and held.task_id == task.id

        async def serve() -> bool:
            nonlocal held, failure
            await updater.update_status(
                TaskState.TASK_STATE_WORKING,
                message=_agent_message(updater, "Payment verified; working.",
                                       a2a_x402.verified_metadata(), uri),
            )
            try:
                result = await agent.handler(_request_text(task))
            except Exception as e:  # the function's failure is the task's, not ours
                log.warning("paid function failed in task %s: %r", task.id, e)
                failure = e
                return False
            held = _Held(task.id, result)
            return True

        # The one server-side exact flow (a402.exact.serve), driven (ExactCall) with this
        # agent's ledger, facilitator and function. A settle without a verdict (no answer,
        # or an unexpected error: ExactCall) leaves the payment pending with its result
        # held for a resend; raised, it would fail the task for good (a2a-sdk ends a task
        # whose executor raises) and the result could never be delivered.
        call = ExactCall(
            payment, payload, agent.requirements, ledger=agent.ledger,
            facilitator=lambda: agent.facilitator, serve=serve, resumable=resumable)
        match await call.run(now=time.time(), retention=_LEDGER_RETENTION):
            case Reused() | OtherTerms():
                await self._fail(updater, uri, a2a_x402.PAYMENT_ALREADY_USED,
                                 "this authorization was already used", receipts, payer=payer)
            case NotResumable():
                await self._fail(updater, uri, a2a_x402.PAYMENT_ALREADY_USED,
                                 "this authorization is pending for another task "
                                 "(or its result was lost)", receipts, payer=payer)
            case RequestRefused(no_verdict, settle_attempted):
                # The facilitator refused our request unread (400): nothing moved, and the
                # flow released the payment. Resending it would be refused alike: failed.
                await self._fail(updater, uri, no_verdict.reason,
                                 "the facilitator refused the request to "
                                 f"{'settle' if settle_attempted else 'verify'} the payment "
                                 f"as malformed ({no_verdict.reason}); nothing was charged",
                                 receipts, payer=payer)
            case Unanswered(no_verdict, settle_attempted):
                if settle_attempted:
                    assert held is not None
                    self._held[key] = held
                await self._retry_later(updater, uri, a2a_x402.FACILITATOR_UNAVAILABLE,
                                        no_verdict.message, receipts)
            case Rejected(verdict) as rejected:
                await self._fail(updater, uri, rejected.reason,
                                 verdict.invalid_message or "the facilitator refused the payment",
                                 receipts, payer=verdict.payer or payer)
            case NotServed():
                await self._fail(updater, uri, a2a_x402.SERVICE_FAILED,
                                 f"the service failed ({type(failure).__name__}); "
                                 "nothing was charged", receipts, payer=payer)
            case SettlePending(settlement):
                assert held is not None
                self._held[key] = held
                receipts.append(settlement)
                await self._retry_later(updater, uri, wire_errors.SETTLEMENT_PENDING,
                                        settlement.error_message or "not mined yet", receipts)
            case SettleFailed(settlement) as failed:
                self._held.pop(key, None)
                await self._fail(updater, uri, failed.reason, failed.message,
                                 receipts, payer=settlement.payer or payer,
                                 transaction=settlement.transaction)
            case Paid(settlement, _, unrecorded):
                assert held is not None
                if unrecorded is not None:
                    # The entry stays IN_FLIGHT, never PENDING (which could be resumed): it
                    # refuses this authorization until it expires, when the chain refuses it.
                    log.error("task %s settled %s but the replay ledger did not record it",
                              task.id, settlement.transaction, exc_info=unrecorded)
                self._held.pop(key, None)
                log.info("task %s paid: %s", task.id, settlement.transaction)
                await updater.add_artifact([Part(text=held.result)], name="result")
                await updater.complete(_agent_message(
                    updater, held.result, a2a_x402.completed_metadata([*receipts, settlement]), uri,
                ))

    # --- answers

    async def _ask(
        self, updater: TaskUpdater, uri: str, *, error: str | None = None,
        receipts: list[SettleResponse] | None = None,
    ) -> None:
        agent = self.agent
        meta = a2a_x402.payment_required_metadata(agent.payment_required(error), error=error,
                                           receipts=receipts or ())
        text = (f"Payment required: {agent.terms.amount} atomic units of {agent.token.symbol} "
                f"on {agent.network} to {agent.terms.pay_to}.")
        await updater.requires_input(_agent_message(updater, text, meta, uri))

    async def _retry_later(
        self, updater: TaskUpdater, uri: str, reason: str, message: str,
        receipts: list[SettleResponse],
    ) -> None:
        """Nothing final happened: stay in input-required and ask for the same payload again."""
        log.warning("payment for task %s must be resent: %s (%s)", updater.task_id, reason, message)
        await self._ask(updater, uri, error=reason, receipts=receipts)

    async def _fail(
        self, updater: TaskUpdater, uri: str, reason: str, message: str,
        receipts: list[SettleResponse], *, payer: str | None = None, transaction: str = "",
        status: str = a2a_x402.PAYMENT_FAILED,
    ) -> None:
        receipt = a2a_x402.failure_receipt(reason, message, network=self.agent.network, payer=payer,
                                    transaction=transaction)
        meta = a2a_x402.failed_metadata(reason, [*receipts, receipt], status=status)
        await updater.failed(_agent_message(updater, f"Payment failed: {reason}: {message}",
                                            meta, uri))


# ---------------------------------------------------------- request handling glue


class _ActivationGate(DefaultRequestHandler):
    """Refuses messages that activate no x402 extension URI, as a required extension must."""

    def __init__(self, *, required: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._required = required

    def _check(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        if not self._required:
            return
        asked = context.requested_extensions | set(params.message.extensions)
        if not asked & set(a2a_x402.X402_EXTENSION_URIS):
            raise ExtensionSupportRequiredError(
                message="this agent requires the x402 extension: activate "
                        f"{a2a_x402.X402_EXTENSION_URI}"
            )

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        self._check(params, context)
        return await super().on_message_send(params, context)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        self._check(params, context)
        async for event in super().on_message_send_stream(params, context):
            yield event


class _EitherExtensionHeader(DefaultServerCallContextBuilder):
    """Requested extensions from both header names, whatever the wire version.

    a2a-sdk 1.x reads ``A2A-Extensions`` on the 1.0 path and adds
    ``X-A2A-Extensions`` only on its 0.3 path; the x402 A2A transport tells
    clients to send the ``X-`` name, so both count on both paths. Widening what
    activates the extension cannot make a payment easier: activation only
    decides whether the payment flow is offered at all.
    """

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.requested_extensions = get_requested_extensions(
            [v for name in EXTENSION_HEADERS for v in request.headers.getlist(name)])
        return context


class _EchoExtensions:
    """Echo the activated x402 URIs in both extension headers (the a2a-x402 spec asks for it;
    a2a-sdk 1.x no longer echoes activations itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = [v for name in EXTENSION_HEADERS for v in header_values(scope, name)]
            active = sorted(get_requested_extensions(values) & set(a2a_x402.X402_EXTENSION_URIS))
            if active:
                echoed = ",".join(active)
                send = adding_headers(send, [(n, echoed) for n in EXTENSION_HEADERS])
        await self.app(scope, receive, send)


class _IntegralNumbers:
    """Spell the integral numbers of JSON answers as integers (``2``, not ``2.0``).

    A2A 1.0 metadata is a protobuf ``Struct``, whose only number is a double, and
    a2a-sdk renders it with Python's ``json``: the offer's ``"x402Version": 2`` and
    ``"maxTimeoutSeconds": 120`` go out as ``2.0`` and ``120.0``. JSON has a single
    number type, so every A2A (ProtoJSON) reader reads both spellings as the same
    double, but a reader that maps x402 JSON onto integer fields (the x402 SDKs'
    models in strict mode, Go's ``encoding/json``) refuses ``2.0``. Only doubles
    that are exact integers (``|x| <= 2**53``, ``a2a_x402.from_struct``) change, and only
    their spelling: the value every reader sees is unchanged, so nothing about a
    payment can change with it. Other answers (the SSE stream) pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: AsgiMessage | None = None
        chunks: list[bytes] = []

        async def respelling(message: AsgiMessage) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _is_json(message):
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(bytes(message.get("body", b"")))
            if message.get("more_body", False):
                return
            body = _integral_json(b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", [])
                       if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode("latin-1")))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, respelling)


def _is_json(start: AsgiMessage) -> bool:
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip() == b"application/json"
               for k, v in start.get("headers", []))


def _integral_json(body: bytes) -> bytes:
    """``body`` with integral doubles written as integers; anything not JSON is left as is."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    return json.dumps(a2a_x402.from_struct(decoded), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def _activated_uri(context: RequestContext) -> str:
    """The x402 URI the client used (echoed on our messages), else the one we declare."""
    message = context.message
    asked = set(context.requested_extensions) | set(message.extensions if message else ())
    for uri in a2a_x402.X402_EXTENSION_URIS:
        if uri in asked:
            return uri
    return a2a_x402.X402_EXTENSION_URI


def _metadata(message: Message) -> dict[str, Any]:
    if not message.HasField("metadata"):
        return {}
    return a2a_x402.from_struct(MessageToDict(message.metadata))


def _agent_message(updater: TaskUpdater, text: str, metadata: dict[str, Any], uri: str) -> Message:
    message = updater.new_agent_message([Part(text=text)], metadata=metadata)
    message.extensions.append(uri)
    return message


def _request_text(task: Task) -> str:
    """The text of the message that opened the task (the later ones carry the payment)."""
    for message in task.history:
        if message.role == Role.ROLE_USER:
            return get_message_text(message)
    return ""
