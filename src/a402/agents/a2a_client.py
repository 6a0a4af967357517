"""The paying side of A2A + x402: discover an agent on-chain, check its card, pay per task.

    source = ...                                 # a CardSource over the chain
    agent = await discover("0xAgent...", source) # refuses a served card that differs
    async with PayingAgentClient(key, max_per_request=token_units_max("0.05"),
                                 budget=Budget({usdc: 1_000_000})) as client:
        result = await client.send(agent, "translate: hello")
        print(result.text, result.receipt.transaction)

What is trusted, and why:
- The card comes from the chain; the endpoint's card is only *checked* against
  it (``a2a_card``), so a compromised web server cannot change who is paid.
- Each offer in ``payment-required`` must equal the on-chain card's terms
  (scheme, network, asset, amount, payTo) before the paying client's usual
  rules apply (wallet allow-lists, per-request maximum, budget: ``a402.client``).
  A refusal is answered with ``payment-rejected`` so the agent can close the task,
  and raised as ``PaymentRefused``; nothing was signed (a mandate's refusal at its
  commit discards a payment signed in memory, never sent).
- With an owner's mandate (``mandate=MandateGuard(...)``), every offer is also judged
  by it, as an ``exact`` payment for the task's skill (``send(..., skill=...)``) at
  the card's URL: a task whose skill the mandate does not allow (or that names
  none when the mandate lists skills) is refused with ``mandate_skill_not_allowed``
  before anything is signed, and so is any offer outside the mandate's other
  limits; the mandate's budget is reserved durably before signing.
- One task gets at most one signature. When the agent says "try again"
  (``facilitator_unavailable``, ``settlement_pending``) or the connection drops
  after submitting, the *same* payload is resent: a second authorization could
  settle next to the first one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

import anyio
import httpx
from a2a.client import A2AClientError, ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import get_message_text
from a2a.types import (
    AgentCard,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, TransportProtocol
from a2a.utils.errors import A2AError
from eth_account.signers.local import LocalAccount
from google.protobuf.json_format import MessageToDict

from a402.agents import a2a_x402
from a402.agents.a2a_card import (
    CardError,
    CardMismatch,
    CardSource,
    card_differences,
    major_minor,
    parse_card,
    payment_terms,
)
from a402.client import errors as client_errors
from a402.client.budget import Budget
from a402.client.choose import choose_within
from a402.client.errors import PaymentError, PaymentRefused
from a402.client.limits import MaxAmount, as_max_amount
from a402.client.wallet import Wallet
from a402.evm.address import address_key
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object
from a402.wire.x402 import PaymentPayload, PaymentRequired, SettleResponse, parse_payment_required

if TYPE_CHECKING:  # the guard loads the spend store (SQLAlchemy): only a mandate needs it
    from a402.mandate.guard import MandateGuard

log = logging.getLogger(__name__)

WireVersion = Literal["1.0", "0.3"]

OFFER_NOT_ON_CARD: Final = "offer_not_on_card"
"""``PaymentRefused`` reason: the agent asked for terms its on-chain card does not state."""
SKILL_NOT_ON_CARD: Final = "skill_not_on_card"
"""``PaymentRefused`` reason: the task names a skill the agent's card does not declare."""
DEFAULT_TIMEOUT: Final = 60.0
"""The paid answer waits for an on-chain settlement; httpx's 5 s default is too short."""
MAX_CARD_BYTES: Final = 1 << 20
DEFAULT_MAX_VALIDITY: Final = 300


class A2APaymentFailed(PaymentError):
    """The agent reported ``payment-failed`` (or ``payment-rejected``) for the task.

    ``reason`` is the agent's ``x402.payment.error``; ``receipt`` its last
    receipt, whose ``errorReason`` is the facilitator's exact reason.
    """

    def __init__(self, reason: str, message: str, *, task: Task,
                 receipt: SettleResponse | None) -> None:
        super().__init__(reason, message)
        self.task = task
        self.receipt = receipt


class A2AProtocolError(PaymentError):
    """The agent answered something the x402 A2A flow does not allow (e.g. no receipt)."""


class PaymentUnresolved(PaymentError):
    """A payment was sent and no outcome could be learned; it may still settle.

    ``payload`` is what was signed (valid until its ``validBefore``); ``task_id``
    lets the caller ask the agent later (``GetTask``).
    """

    def __init__(self, message: str, *, task_id: str, payload: PaymentPayload) -> None:
        super().__init__("payment_unresolved", message)
        self.task_id = task_id
        self.payload = payload


@dataclass(frozen=True)
class DiscoveredAgent:
    """An agent whose served card was checked against its on-chain card."""

    agent: str
    card: AgentCard
    card_url: str
    terms: a2a_x402.PaymentTerms | None
    """The on-chain payment terms; None for an agent whose card declares no x402 extension."""
    extension_uri: str | None


@dataclass(frozen=True)
class PaidResult:
    text: str
    receipt: SettleResponse | None
    """The settlement of this task's payment; None only if the agent asked for none."""
    task: Task
    payload: PaymentPayload | None = None


# ------------------------------------------------------------------------ discovery


def card_url_for(card: AgentCard) -> str:
    """``/.well-known/agent-card.json`` at the origin of the card's first JSON-RPC interface."""
    for iface in card.supported_interfaces:
        if iface.protocol_binding == TransportProtocol.JSONRPC:
            parts = urlsplit(iface.url)
            if parts.scheme in ("http", "https") and parts.netloc:
                return f"{parts.scheme}://{parts.netloc}{AGENT_CARD_WELL_KNOWN_PATH}"
    raise CardError("the card names no http(s) JSON-RPC interface")


async def fetch_card(url: str, http: httpx.AsyncClient) -> dict[str, Any]:
    """The card served at ``url``, as JSON. Redirects are not followed: the card must be
    served where the chain says the agent is."""
    try:
        response = await http.get(url, follow_redirects=False)
    except httpx.HTTPError as e:
        raise CardError(f"cannot fetch the card at {url}: {e!r}") from e
    if response.status_code != 200:
        raise CardError(f"{url} answered HTTP {response.status_code}")
    if len(response.content) > MAX_CARD_BYTES:
        raise CardError(f"the card at {url} is larger than {MAX_CARD_BYTES} bytes")
    try:  # bounded: an agent is a peer, its card could be nested deep enough to crash us
        return loads_object(response.content)
    except WireError as e:
        raise CardError(f"the card at {url} is not a JSON object: {e.message}") from e


async def discover(
    agent: str,
    source: CardSource,
    *,
    http: httpx.AsyncClient | None = None,
    card_url: str | None = None,
) -> DiscoveredAgent:
    """Look ``agent`` up in ``source``, fetch the card its endpoint serves, demand equality.

    Raises ``UnknownAgent``, ``CardError`` (unreachable, malformed) or
    ``CardMismatch`` (with the differing fields). ``card_url`` overrides where
    the card is fetched (e.g. an ERC-8004 ``A2A`` service endpoint).
    """
    onchain = await anyio.to_thread.run_sync(source.onchain_card, agent)
    onchain_card = parse_card(onchain)
    url = card_url or card_url_for(onchain_card)
    own = http is None
    client = http if http is not None else httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
    try:
        served = await fetch_card(url, client)
    finally:
        if own:
            await client.aclose()
    differences = card_differences(served, onchain)
    if differences:
        raise CardMismatch(agent, differences)
    card = parse_card(served)
    found = payment_terms(card)
    return DiscoveredAgent(
        agent=agent, card=card, card_url=url,
        terms=found[1] if found else None, extension_uri=found[0] if found else None,
    )


# ---------------------------------------------------------------------- the client


class PayingAgentClient:
    """Sends tasks to discovered agents over a2a-sdk, paying ``payment-required`` with x402.

    ``max_per_request`` / ``budget`` / the wallet's allow-lists are the paying
    client's (``a402.client``); ``mandate``: the owner's mandate every payment must
    also fit (then ``max_per_request`` may be left out: the mandate's cap is the cap);
    ``wire`` picks the A2A protocol version spoken on the wire (``"1.0"``, or ``"0.3"``
    for agents that only speak that).
    """

    def __init__(
        self,
        wallet: Wallet | str | bytes | LocalAccount,
        *,
        max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
        budget: Budget | None = None,
        wire: WireVersion = "1.0",
        timeout: float = DEFAULT_TIMEOUT,
        max_validity: int = DEFAULT_MAX_VALIDITY,
        retries: int = 5,
        retry_delay: float = 1.0,
        http: httpx.AsyncClient | None = None,
        mandate: MandateGuard | None = None,
    ) -> None:
        if wire not in ("1.0", "0.3"):
            raise ValueError(f"wire must be '1.0' or '0.3', not {wire!r}")
        self.wallet = wallet if isinstance(wallet, Wallet) else Wallet(wallet)
        if mandate is not None and address_key(mandate.agent) != address_key(
                self.wallet.address):
            raise ValueError(f"the mandate is for {mandate.agent}, the wallet is "
                             f"{self.wallet.address}")
        self.mandate = mandate
        if max_per_request is None:
            if mandate is None:
                raise TypeError("max_per_request is required (or a mandate, whose cap it "
                                "then is)")
            max_per_request = 1 << 256  # the mandate's cap judges (mandate_cap_exceeded)
        self.max_amount = as_max_amount(max_per_request)
        self.budget = budget
        self.wire = wire
        self.max_validity = max_validity
        self.retries = retries
        self.retry_delay = retry_delay
        self._own_http = http is None
        self.http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> PayingAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (if this made it) and write the mandate's queued payment
        outcomes (:meth:`MandateGuard.close`)."""
        if self.mandate is not None:
            self.mandate.close()
        if self._own_http:
            await self.http.aclose()

    async def send(self, agent: DiscoveredAgent, text: str, *, skill: str | None = None
                   ) -> PaidResult:
        """Run one task: send ``text``, pay what the on-chain card says, return result + receipt.
        ``skill``: the card's skill the task is for (what a mandate's skill list judges); a
        skill the card does not declare is refused before anything is sent."""
        if skill is not None and skill not in {s.id for s in agent.card.skills}:
            raise PaymentRefused(SKILL_NOT_ON_CARD, f"the agent's card declares no skill "
                                 f"{skill!r:.60}; nothing was sent, signed or paid",
                                 url=agent.card_url)
        paid_task = _PaidTask(self, agent, skill)
        try:
            return await paid_task.run(text)
        finally:
            await paid_task.close()


class _PaidTask:
    """One task with one agent: the a2a-sdk client and the per-task payment state."""

    def __init__(self, owner: PayingAgentClient, agent: DiscoveredAgent,
                 skill: str | None = None) -> None:
        self.owner, self.agent, self.skill = owner, agent, skill
        self.held: Any = None  # the mandate's committed payment (guard.Committed), if any
        self._text = ""  # the task's text, recorded with its payment
        config = ClientConfig(streaming=False, httpx_client=owner.http,
                              supported_protocol_bindings=[TransportProtocol.JSONRPC])
        self.client = ClientFactory(config).create(card_for_wire(agent.card, owner.wire))
        uri = agent.extension_uri or a2a_x402.X402_EXTENSION_URI
        self.uri = uri
        self.call = ClientCallContext(
            service_parameters=dict.fromkeys(a2a_x402.EXTENSION_HEADERS, uri))

    async def close(self) -> None:
        await self.client.close()

    async def run(self, text: str) -> PaidResult:
        self._text = text
        task = await self._send(_user_message(text, self.uri))
        if _state(task) == TaskState.TASK_STATE_COMPLETED:
            return PaidResult(_result_text(task), None, task)
        meta = _status_metadata(task)
        if _state(task) != TaskState.TASK_STATE_INPUT_REQUIRED or (
            a2a_x402.status_of(meta) != a2a_x402.PAYMENT_REQUIRED
        ):
            raise A2AProtocolError("unexpected_state",
                                   f"task {task.id} is {TaskState.Name(_state(task))}, "
                                   f"payment status {a2a_x402.status_of(meta)!r}")
        try:
            payload = self._sign(meta)
        except PaymentRefused:
            await self._decline(task)
            raise
        try:
            result = await self._submit(task, payload)
        except PaymentError as e:
            self._evidence(text, payload, None, f"failed: {e}", None)
            raise
        receipt = None if result.receipt is None else json.loads(
            result.receipt.model_dump_json(by_alias=True, exclude_none=True))
        self._evidence(text, payload, receipt, "completed", result.text)
        return result

    def _evidence(self, text: str, payload: PaymentPayload, settlement: dict[str, Any] | None,
                  status: str, result: str | None) -> None:
        """Queue the task's outcome record in the mandate's evidence chain
        (:meth:`MandateGuard.settle`; the payment's own record committed before it was
        submitted): the payment was sent, so a failure to write is logged, not raised."""
        mandate = self.owner.mandate
        if mandate is None or self.held is None:
            return
        from a402.client.audit import sha256_hex

        try:
            mandate.settle(self.held, {
                "mandate": mandate.mandate_hash, "agent": self.owner.wallet.address,
                "scheme": "exact", "settlement": settlement, "status": status[:200],
                "result": None if result is None else sha256_hex(result.encode())},
                self.owner.wallet.sign_evidence)
        except Exception as e:
            log.error("a paid task's payment was signed and sent, but its outcome could not "
                      "be recorded (%s: %s)", type(e).__name__, e)

    # --- paying

    def _sign(self, meta: Mapping[str, Any]) -> PaymentPayload:
        owner, terms = self.owner, self.agent.terms
        try:
            required = parse_payment_required(meta.get(a2a_x402.REQUIRED_KEY))
        except WireError as e:
            raise PaymentRefused(client_errors.MALFORMED_PAYMENT_REQUIRED, e.message) from e
        if not isinstance(required, PaymentRequired):
            raise PaymentRefused(client_errors.MALFORMED_PAYMENT_REQUIRED,
                                 "x402Version 1 offers are not taken")
        on_card = [r for r in required.accepts if terms is not None and terms.admits(r)]
        if not on_card:
            raise PaymentRefused(
                OFFER_NOT_ON_CARD,
                "no offered requirement equals the terms of the on-chain card"
                if terms is not None else "the on-chain card states no payment terms",
                url=self.agent.card_url, offered=required.accepts,
            )
        required = required.model_copy(update={"accepts": on_card})
        offer, reservation, held = choose_within(
            required, owner.wallet, owner.max_amount, owner.budget, owner.mandate,
            url=self.agent.card_url, skill=self.skill)
        try:
            payload = owner.wallet.sign(
                offer.requirements, resource=required.resource,
                extensions=copy.deepcopy(required.extensions),
                valid_for=min(offer.view.max_timeout_seconds, owner.max_validity),
            )
            auth = payload.payload["authorization"]
            if (int(auth["value"]) != offer.amount
                    or address_key(auth["to"]) != address_key(offer.pay_to)):
                raise ValueError("signed value/recipient differ from the offer")
        except Exception as e:
            # Nothing left this process, so the budget's reservation may go back (the
            # mandate's admission wrote nothing).
            if reservation is not None and owner.budget is not None:
                owner.budget.release(reservation)
            raise PaymentRefused(client_errors.SIGNING_FAILED, f"{type(e).__name__}: {e}",
                                 offered=required.accepts) from e
        assert isinstance(payload, PaymentPayload)
        self.held = None
        if held is not None and owner.mandate is not None:
            # Signed in memory only: the mandate's reservation (already signed) and the
            # payment's record commit before it is submitted (a402.mandate.guard); a
            # refusal discards the signature unsent.
            from a402.client.audit import a2a_record
            from a402.mandate.spend import MandateRefused

            try:
                self.held = owner.mandate.commit(held, a2a_record(
                    mandate=owner.mandate.mandate_hash, agent=owner.wallet.address,
                    card_url=self.agent.card_url, skill=self.skill, text=self._text,
                    payload=payload, settlement=None, status="sending", result=None),
                    owner.wallet.sign_evidence,
                    payment_ref=str(payload.payload["authorization"]["nonce"]))
            except Exception as e:
                if reservation is not None and owner.budget is not None:
                    owner.budget.release(reservation)
                reason = e.reason if isinstance(e, MandateRefused) \
                    else client_errors.MANDATE_SPEND_UNAVAILABLE
                raise PaymentRefused(reason, f"{e}; the payment signed in memory was "
                                     "discarded unsent: nothing was paid",
                                     offered=required.accepts) from e
        return payload

    async def _submit(self, task: Task, payload: PaymentPayload) -> PaidResult:
        metadata = a2a_x402.submitted_metadata(payload)
        attempts = 0
        while True:
            message = _user_message("Payment for the task.", self.uri, task=task,
                                    metadata=metadata)
            lost = False
            try:
                task = await self._send(message)
            except (A2AClientError, A2AError) as e:
                # No usable answer: ask for the task's state instead. If the submission
                # may never have arrived (a transport error), resending it is safe.
                task = await self._recover(task.id, payload, e)
                lost = isinstance(e, A2AClientError)
            state, meta = _state(task), _status_metadata(task)
            if state == TaskState.TASK_STATE_COMPLETED:
                return self._completed(task, meta, payload)
            if state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED,
                         TaskState.TASK_STATE_CANCELED):
                receipts = a2a_x402.receipts_of(meta)
                reason = meta.get(a2a_x402.ERROR_KEY) or a2a_x402.status_of(meta) or "task_failed"
                raise A2APaymentFailed(str(reason), get_message_text(task.status.message),
                                       task=task, receipt=receipts[-1] if receipts else None)
            retryable = state == TaskState.TASK_STATE_INPUT_REQUIRED and (
                lost or meta.get(a2a_x402.ERROR_KEY) in a2a_x402.RETRYABLE_ERRORS)
            if not retryable or attempts >= self.owner.retries:
                raise PaymentUnresolved(
                    f"task {task.id} is {TaskState.Name(state)} after payment "
                    f"(error {meta.get(a2a_x402.ERROR_KEY)!r}); not paying again",
                    task_id=task.id, payload=payload,
                )
            attempts += 1
            await anyio.sleep(self.owner.retry_delay)

    async def _recover(self, task_id: str, payload: PaymentPayload, cause: Exception) -> Task:
        """The submission got no answer: learn the task's state before doing anything else."""
        try:
            return await self.client.get_task(GetTaskRequest(id=task_id), context=self.call)
        except (A2AClientError, A2AError) as e:
            raise PaymentUnresolved(
                f"no answer to the payment for task {task_id} ({cause!r}), nor to GetTask ({e!r})",
                task_id=task_id, payload=payload,
            ) from e

    def _completed(
        self, task: Task, meta: Mapping[str, Any], payload: PaymentPayload
    ) -> PaidResult:
        receipts = a2a_x402.receipts_of(meta)
        receipt = receipts[-1] if receipts else None
        accepted = payload.accepted
        payer = address_key(self.owner.wallet.address)
        if (
            a2a_x402.status_of(meta) != a2a_x402.PAYMENT_COMPLETED or receipt is None
            or not receipt.success
            or not receipt.transaction or receipt.network != accepted.network
            or (receipt.payer is not None and address_key(receipt.payer) != payer)
        ):
            raise A2AProtocolError("missing_receipt",
                                   f"task {task.id} completed without a receipt for our payment")
        return PaidResult(_result_text(task), receipt, task, payload)

    async def _decline(self, task: Task) -> None:
        """Tell the agent we will not pay, so the task ends; best effort."""
        message = _user_message("Declining the payment.", self.uri, task=task,
                                metadata=a2a_x402.rejected_metadata())
        with contextlib.suppress(A2AClientError, A2AError, A2AProtocolError):
            await self._send(message)

    async def _send(self, message: Message) -> Task:
        request = SendMessageRequest(message=message)
        async for event in self.client.send_message(request, context=self.call):
            if event.HasField("task"):
                return event.task
            if event.HasField("message"):
                raise A2AProtocolError("unexpected_message", "the agent answered without a task")
        raise A2AProtocolError("no_response", "the agent sent nothing back")


# ----------------------------------------------------------------------- helpers


def card_for_wire(card: AgentCard, wire: WireVersion) -> AgentCard:
    """A copy of ``card`` listing only its JSON-RPC interface of protocol version ``wire``,
    so a2a-sdk's client factory (which prefers 1.0) speaks the version asked for."""
    want = major_minor(wire)
    chosen = [
        iface for iface in card.supported_interfaces
        if iface.protocol_binding == TransportProtocol.JSONRPC
        # a2a-sdk reads an interface without a version as 0.3
        and major_minor(iface.protocol_version or "0.3") == want
    ]
    if not chosen:
        raise CardError(f"the agent offers no JSON-RPC interface for A2A {wire}")
    narrowed = AgentCard()
    narrowed.CopyFrom(card)
    del narrowed.supported_interfaces[:]
    narrowed.supported_interfaces.append(chosen[0])
    return narrowed


def _user_message(
    text: str, uri: str, *, task: Task | None = None, metadata: dict[str, Any] | None = None
) -> Message:
    message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)],
                      metadata=metadata, extensions=[uri])
    if task is not None:
        message.task_id, message.context_id = task.id, task.context_id
    return message


def _state(task: Task) -> TaskState:
    return task.status.state


def _status_metadata(task: Task) -> dict[str, Any]:
    message = task.status.message
    if not task.status.HasField("message") or not message.HasField("metadata"):
        return {}
    return a2a_x402.from_struct(MessageToDict(message.metadata))


def _result_text(task: Task) -> str:
    texts = [part.text for artifact in task.artifacts for part in artifact.parts
             if part.HasField("text")]
    return "".join(texts) if texts else get_message_text(task.status.message)
