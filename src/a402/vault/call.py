"""One paid call, as one object: claim → offer → channel → exchange → answer.

A :class:`PaidCall` is a client's ``POST /v1/invoke`` from the moment it is
authenticated to its answer. It holds everything the call is: its request key,
its claim, the call as the client signed it, and — once the provider's result
is in — its answer; and it is what the channel's checkpoints read
(:class:`~a402.vault.tunnel.CallRecord`: the tunnel hands it to every
checkpoint of the request it pays for), so no table on the side says which call
a channel carries.

The order of operations is the safety argument:

1. **Claim the idempotency key** (client-scoped) in the store, with the call's
   signature nonce. A retry of the same call finds the claim: it gets the
   recorded answer, waits for the call in progress, or — if the first attempt
   paid nothing (refused for a transient reason, or interrupted before EXEC) —
   runs again. The same key with a different call is a 409. A new call whose
   offer is cached and whose channel is open is claimed by the channel's
   LOCKED checkpoint instead (one commit fewer: :attr:`PaidCall.claim`), since
   nothing before that checkpoint reaches the target, the provider's service or
   the chain; if the key or nonce was taken, that checkpoint writes nothing
   (:class:`~a402.vault.store.ClaimTaken`) and the call is claimed on its own as
   above. Any step that needs the call recorded first (an offer to fetch, a
   channel to open or close, a refusal) sends it back to be claimed on its own.
2. **The offer**: the unpaid request (or a cached offer) yields the 402's
   ``a402`` requirement; the price must be within the client's ``maxPrice``,
   and the 402's claims must match the provider's attested ``/info``.
3. **The channel**: the client's open channel with this provider, or a new
   one (see :mod:`a402.vault.channels`), all under a per-(client, provider)
   lock: a second concurrent call waits its turn (bounded) and never shares a
   request slot.
4. **The exchange** through :class:`~a402.vault.tunnel.ProviderTunnel`, whose
   checkpoints carry this call's progress (LOCKED → AUTHORIZED → DELIVERED), each
   durable before the next message leaves. The channel's machine runs in the
   vault enclave, which gets the call exactly as the client signed it
   (:class:`~a402.vault_enclave.SignedCall`): it checks the signature, the price
   against ``maxPrice`` and the channel's owner, builds the paid request from the
   call itself, and signs σ_U at most once per signed call.
5. **The answer** is sealed and recorded with the DELIVERED checkpoint
   (:meth:`PaidCall.final`), then returned: three commits per paid call. A stream's
   group that is not its last (:meth:`PaidCall.continues`: the provider's answer says
   ``A402-Stream-End: 0``, so the client's next group follows at once) is answered
   before that checkpoint is written: it is held and written with the channel's next
   checkpoint — the next group's LOCKED, in one commit — or on its own before the ACK
   leaves (the ACK timer, a close, the vault's shutdown, or any read of the client's
   records through the vault's API): two commits a group. This is safe because what
   moves the money is durable before its message leaves either way (σ_U: AUTHORIZED,
   before AUTH; δ's credit: DELIVERED, before the ACK, which rides on the next EXEC);
   the client is answered only with a result it received and pays only for it; the
   provider, without that ACK, takes no next request of the channel, so it never
   delivers more than one group unacknowledged; and a vault that dies with the
   checkpoint held restarts at AUTHORIZED, its worker re-sends AUTH and the provider
   answers it from its record with the same REVEAL (it keeps it until the ACK): the
   group is recorded paid once, with its result (:mod:`a402.vault.tunnel`, **A held
   DELIVERED**). Meanwhile a retry of the group's key waits for that record. A call
   whose σ_U is out but whose result is not in (PENDING) answers 202; the
   vault's worker finishes it (as a :class:`ResumedCall`) and a later retry (or
   ``GET /v1/requests/{key}``) returns it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from a402.asc import LocalProtocolError, Reason
from a402.evm.address import address_key
from a402.tee import AttestationError, EnclaveError
from a402.vault_enclave import ChannelsNeeded, SignedCall, request_headers
from a402.wire import vault_api as api
from a402.wire.a402 import HttpResponse

from . import records
from . import store as vault_store
from .answers import Answers, client_key
from .channels import Channels, NoUsableChannel, VaultError, refusal
from .mandates import aread_registry
from .offers import Offer, OfferCache, OfferError, check_against_info, pick_offer
from .tunnel import (
    PaidResponse,
    PaymentPending,
    ProtocolViolation,
    ProviderRefused,
    ProviderUnavailable,
    ResultMismatch,
)

log = logging.getLogger("a402.vault")

#: The provider's stream header saying whether a group is its stream's last
#: (:mod:`a402.provider.a402_streams`): ``0`` means more groups follow.
_STREAM_END = b"a402-stream-end"

#: Provider refusals that mean "the price or the route changed": ask for a fresh offer.
_STALE_OFFER = frozenset({"amount_mismatch", "not_a_paid_route"})

Answer = tuple[int, dict[str, Any]]


@dataclass
class CallContext:
    """What every paid call of one vault uses (built once, by the vault's ``Invoker``)."""

    channels: Channels
    answers: Answers
    offers: OfferCache
    http: httpx.AsyncClient
    #: Refuses a target the vault may not call (raises :class:`VaultError`).
    check_target: Callable[[str], Awaitable[None]]
    queue_timeout: float
    retry_wait: float
    nonce_keep: float
    #: Calls this process is executing now (the worker leaves their records alone).
    executing: set[str] = field(default_factory=set)

    @property
    def store(self) -> vault_store.VaultStore:
        return self.channels.store


class _ClaimFirst(Exception):
    """The call, not recorded yet, reached a step that needs it recorded;
    ``claimed`` is the outcome of its claim if that was already made."""

    def __init__(self, claimed: tuple[bool, vault_store.Request] | None = None) -> None:
        super().__init__()
        self.claimed = claimed


class PaidCall:
    """One client call, paid inside a channel and answered exactly once (see the module).

    :meth:`run` takes it from claim to answer. What the channel's checkpoints read
    (:class:`~a402.vault.tunnel.CallRecord`): :attr:`key`, :attr:`claim` and
    :meth:`final`.
    """

    def __init__(self, context: CallContext, client: str, request: api.InvokeRequest, *,
                 nonce: str | None, signed: SignedCall | None) -> None:
        self.context = context
        self.client = client
        self.request = request
        #: The call as the client signed it: without it the enclave pays nothing.
        self.signed = signed
        #: The call's record (the store's key: client-scoped idempotency key).
        self.key = f"{address_key(client)}:{request.idempotency_key}"
        self._claim = vault_store.Claim(
            key=self.key, client=client, fingerprint=request.fingerprint(), url=request.url,
            method=request.method, nonce=nonce, nonce_keep=context.nonce_keep)
        #: Whether this attempt folds the claim into the LOCKED checkpoint (step 1).
        self._folding = False
        #: The channel and provider the exchange pays through (for the paid answer).
        self._payee: tuple[bytes, str] | None = None
        #: The paid answer, once :meth:`final` made it (recorded with DELIVERED).
        self.answered: dict[str, Any] | None = None

    # ------------------------------------------------------- what checkpoints read

    @property
    def claim(self) -> vault_store.Claim | None:
        """The call's claim while the LOCKED checkpoint is to record it, else ``None``."""
        return self._claim if self._folding and not self._claim.recorded else None

    def final(self, paid: PaidResponse) -> dict[str, Any]:
        """The call's final record once ``paid``: written with the DELIVERED checkpoint."""
        assert self._payee is not None
        channel_id, provider = self._payee
        self.answered = self.context.answers.paid(self.key, paid, channel_id, provider)
        return self.context.answers.final(self.key, 200, self.answered, outcome=api.PAID,
                                          amount=paid.amount, transaction=paid.transaction)

    def continues(self, paid: PaidResponse) -> bool:
        """Whether ``paid`` is a stream's group that is not its last (the provider says
        ``A402-Stream-End: 0``): the client's next group is then expected at once, and
        the DELIVERED checkpoint may wait for its LOCKED (see the module, step 5)."""
        return any(k.lower() == _STREAM_END and v.strip() == b"0"
                   for k, v in paid.response.headers)

    @property
    def _unrecorded(self) -> bool:
        return self.claim is not None

    # ---------------------------------------------------------------- 1. claim

    async def run(self) -> Answer:
        """Claim (with the LOCKED checkpoint if it can, else on its own), pay, answer."""
        try:
            return await self._attempt(folding=True)
        except _ClaimFirst as first:
            claimed = first.claimed
        return await self._after_claim(claimed or await self._claim_alone())

    async def _claim_alone(self) -> tuple[bool, vault_store.Request]:
        self._folding = False
        try:
            return await self.context.store.claim_request(self._claim)
        except vault_store.ReplayedNonce:
            raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used") from None

    async def _after_claim(self, claimed: tuple[bool, vault_store.Request]) -> Answer:
        """Claimed on its own: a call seen before is answered as such, or runs again."""
        created, row = claimed
        store, answers = self.context.store, self.context.answers
        if not created:
            if row.fingerprint != self.request.fingerprint():
                raise VaultError(409, api.IDEMPOTENCY_KEY_REUSED,
                                 "this idempotency key named another call")
            row = await self._settled(row)
            # Runs again only if the first attempt paid nothing.
            restartable = (row.state == vault_store.DONE and row.retryable) or row.state in (
                vault_store.RECEIVED, vault_store.RELEASED)
            if not restartable or not await asyncio.to_thread(
                    store.restart_request, self.key, row.state):
                fresh = await asyncio.to_thread(store.request, self.key)
                return answers.answer_of(fresh or row)
        return await self._attempt(folding=False)

    async def _settled(self, row: vault_store.Request) -> vault_store.Request:
        """Wait (boundedly) for the worker to finish a call a previous process left in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.context.retry_wait
        while row.state in vault_store.IN_FLIGHT and loop.time() < deadline:
            await asyncio.sleep(0.2)
            fresh = await asyncio.to_thread(self.context.store.request, row.key)
            assert fresh is not None
            row = fresh
        return row

    async def _attempt(self, *, folding: bool) -> Answer:
        """Pay for the call; ``folding``: not recorded yet, and :class:`_ClaimFirst` means
        it must be claimed on its own first."""
        self._folding = folding
        executing = self.context.executing
        executing.add(self.key)
        try:
            return await self._pay(fresh_offer=False)
        except (vault_store.ClaimTaken, NoUsableChannel):
            raise _ClaimFirst from None
        except VaultError as e:
            if self._unrecorded:
                claimed = await self._claim_alone()
                if not claimed[0]:  # seen before: answered as such
                    raise _ClaimFirst(claimed) from None
            return await self.context.answers.record_refusal(self.key, e)
        except PaymentPending as e:
            log.warning("call %s is pending: %s", self.key, e)
            row = await asyncio.to_thread(self.context.store.request, self.key)
            assert row is not None
            status, body = self.context.answers.answer_of(row)
            return status, {**body, "reason": api.PAYMENT_PENDING, "message": str(e)}
        finally:
            executing.discard(self.key)

    # ---------------------------------------------------------------- 2. offer

    async def _offer(self, fresh: bool) -> Offer | Answer:
        """The call's offer (cached, or from the unpaid request); or, if the target asks
        for no payment, the call's answer."""
        context, call = self.context, self.request
        if not fresh and (cached := context.offers.get(call.method, call.url)) is not None:
            return cached
        if self._unrecorded:
            raise _ClaimFirst  # the target is asked only for a recorded call
        try:
            response = await context.http.request(
                call.method, call.url, headers=list(request_headers(call.headers)),
                content=call.body)
        except httpx.HTTPError as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, f"{type(e).__name__}: {e}",
                             retryable=True) from None
        if response.status_code != 402:  # nothing to pay: the answer is the answer
            body = records.answer_json(api.FREE, client_key(self.key),
                                       response=http_response(response))
            return await context.answers.record(self.key, 200, body, outcome=api.FREE,
                                                amount=0)
        manager = context.channels.manager
        try:
            offer = pick_offer(response, call.url, network=context.channels.network,
                               manager=manager.address, token=manager.token)
        except OfferError as e:
            raise VaultError(422, e.reason, e.detail, extra={
                "response": records.response_json(http_response(response))}) from None
        context.offers.put(call.method, call.url, offer)
        return offer

    async def _fresh(self, old: Offer) -> Offer:
        """The offer again, after the provider refused the cached one's price or route."""
        offer = await self._offer(True)
        if not isinstance(offer, Offer) or (offer.pay_to, offer.endpoint) != (
                old.pay_to, old.endpoint):
            raise VaultError(409, api.CONFLICT, "the target's offer changed; call again",
                             retryable=True)
        _within_price(offer, self.request)
        return offer

    async def _pay(self, *, fresh_offer: bool) -> Answer:
        """Steps 2–5: the offer checked, then the exchange under the pair's lock."""
        context, call = self.context, self.request
        offer = await self._offer(fresh_offer)
        if not isinstance(offer, Offer):
            return offer
        await context.check_target(offer.endpoint)  # the provider names it: same rule
        _within_price(offer, call)
        try:
            tunnel = await context.channels.tunnel(offer.endpoint)
        except AttestationError as e:
            raise VaultError(502, api.ATTESTATION_FAILED, f"{e}") from None
        except (ProviderUnavailable, ProtocolViolation, httpx.HTTPError) as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, f"{e}", retryable=True) from None
        assert tunnel.info is not None
        try:
            check_against_info(offer, tunnel.info)
        except OfferError as e:
            context.offers.drop(call.method, call.url)
            raise VaultError(502, e.reason, e.detail) from None
        lock = context.channels.pair_lock(self.client, offer.pay_to)
        try:
            async with asyncio.timeout(context.queue_timeout):  # no task per call
                await lock.acquire()
        except TimeoutError:
            raise VaultError(409, api.CHANNEL_BUSY, "another call to this provider is in flight",
                             retryable=True) from None
        try:
            return await self._exchange(offer, fresh_offer)
        finally:
            lock.release()

    # -------------------------------------------------- 3. channel, 4. exchange

    async def _exchange(self, offer: Offer, fresh_offer: bool) -> Answer:
        """Steps 3–5, with the pair's lock held."""
        channels, call = self.context.channels, self.request
        if call.mandate is not None:  # the enclave pays under it only with a fresh read
            await aread_registry(channels.manager.chain, channels.vault, call.mandate)
        try:
            tunnel = await channels.tunnel(offer.endpoint)
            channel = await channels.find_or_open(
                self.client, tunnel, offer.amount, funding=call.funding,
                wallet_deposit=call.deposit, authorization=call.channel_authorization,
                reuse_only=self._unrecorded, call=self.signed)
        except (ProviderRefused, ProtocolViolation) as e:
            raise VaultError(502, api.PROVIDER_REFUSED, str(e)) from None
        except (ProviderUnavailable, httpx.HTTPError) as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None
        except LocalProtocolError as e:
            raise VaultError(409, api.CONFLICT, str(e), retryable=True) from None
        tunnel = await channels.tunnel(offer.endpoint, channel.channel_id)
        if self.signed is None:
            raise VaultError(401, api.UNAUTHENTICATED, "the vault pays only for a signed call")
        try:
            await channels.prepare(self.client)
        except ChannelsNeeded as e:  # pragma: no cover - prepare loads them all
            raise VaultError(503, api.CHANNEL_RECOVERING, str(e), retryable=True) from None
        self._payee, self.answered = (channel.channel_id, offer.pay_to), None
        try:
            paid = await tunnel.request(channel, self.signed, offer.amount, call=self)
        except ProviderRefused as e:
            if e.reason in _STALE_OFFER and not fresh_offer:
                # The provider answered EXEC, so the LOCKED checkpoint recorded the call.
                assert not self._unrecorded
                self.context.offers.drop(call.method, call.url)
                return await self._exchange(await self._fresh(offer), True)
            if e.reason == Reason.REQUEST_IN_FLIGHT:
                # The provider holds an earlier request of this channel: the vault's own
                # state to finish (the tunnel re-sent its last ACK), not the call's fault.
                # Nothing was paid (no σ_U), so the same key may run again.
                raise VaultError(503, api.CHANNEL_RECOVERING, f"{e.reason}: {e.detail}",
                                 retryable=True, extra={"providerReason": e.reason}) from None
            if e.response is not None:  # the service failed: its answer, unpaid
                body = records.answer_json(api.UNPAID, client_key(self.key),
                                           response=e.response, reason=e.reason,
                                           detail=e.detail)
                return await self.context.answers.record(self.key, 200, body,
                                                         outcome=api.UNPAID, reason=e.reason)
            raise VaultError(502, api.PROVIDER_REFUSED, f"{e.reason}: {e.detail}",
                             extra={"providerReason": e.reason}) from None
        except ProtocolViolation as e:
            raise VaultError(502, api.PROTOCOL_VIOLATION, f"{e.reason}: {e.detail}") from None
        except ProviderUnavailable as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None
        except ResultMismatch as e:
            status, body = await self.context.answers.record_paid(
                self.key, e.paid, channel.channel_id, offer.pay_to)
            return status, {**body, "reason": api.RESULT_MISMATCH, "message": str(e)}
        except LocalProtocolError as e:
            raise VaultError(409, api.CONFLICT, str(e), retryable=True) from None
        except ChannelsNeeded as e:
            raise VaultError(503, api.CHANNEL_RECOVERING, str(e), retryable=True) from None
        except EnclaveError as e:  # the enclave refused the call: nothing was signed for it
            raise refusal(e) from None
        # ------------------------------------------------------------ 5. answer
        if self.answered is not None:  # recorded with the checkpoint that made it durable
            return 200, self.answered
        return await self.context.answers.record_paid(self.key, paid, channel.channel_id,
                                                      offer.pay_to)


@dataclass(frozen=True, slots=True)
class ResumedCall:
    """A call the worker takes over (its process ended, or it went PENDING): recorded
    already, and answered after the exchange (:meth:`Answers.record_paid`), so its
    checkpoints write its progress and nothing else."""

    key: str
    claim: None = None

    def final(self, paid: PaidResponse) -> None:
        return None

    def continues(self, paid: PaidResponse) -> bool:
        return False  # recorded at once: nobody is waiting to send a next call


def _within_price(offer: Offer, call: api.InvokeRequest) -> None:
    if offer.amount > call.max_price:
        raise VaultError(402, api.PRICE_ABOVE_MAXIMUM,
                         f"the price is {offer.amount}, the maximum {call.max_price}",
                         extra={"price": str(offer.amount)})


def http_response(response: httpx.Response) -> HttpResponse:
    return HttpResponse(response.status_code, tuple(response.headers.raw), response.content)
