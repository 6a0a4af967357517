"""``POST /v1/invoke``: one client request, paid inside a channel, answered exactly once.

The order of operations is the safety argument:

1. **Claim the idempotency key** (client-scoped) in the store, with the call's
   signature nonce. A retry of the same call finds the claim: it gets the
   recorded answer, waits for the call in progress, or — if the first attempt
   paid nothing (refused for a transient reason, or interrupted before EXEC) —
   runs again. The same key with a different call is a 409. A new call whose
   offer is cached and whose channel is open is claimed by the channel's
   LOCKED checkpoint instead (one commit fewer), since nothing before that
   checkpoint reaches the target, the provider's service or the chain; if the
   key or nonce was taken, that checkpoint writes nothing and the call is
   claimed on its own as above.
2. **The offer**: the unpaid request (or a cached offer) yields the 402's
   ``a402`` requirement; the price must be within the client's ``maxPrice``,
   and the 402's claims must match the provider's attested ``/info``.
3. **The channel**: the client's open channel with this provider, or a new
   one (see :mod:`a402.vault.channels`), all under a per-(client, provider)
   lock: a second concurrent call waits its turn (bounded) and never shares a
   request slot.
4. **The exchange** through :class:`ProviderTunnel`, whose checkpoints carry
   this call's progress (LOCKED → AUTHORIZED → DELIVERED). The channel's machine
   runs in the vault enclave, which gets the call exactly as the client signed it
   (:class:`~a402.vault_enclave.SignedCall`): it checks the signature, the price
   against ``maxPrice`` and the channel's owner, builds the paid request from the
   call itself, and signs σ_U at most once per signed call.
5. **The answer** is sealed and recorded, then returned. A call whose σ_U is
   out but whose result is not in (PENDING) answers 202; the vault's worker
   finishes it and a later retry (or ``GET /v1/requests/{key}``) returns it.
"""

from __future__ import annotations

import asyncio
import logging
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
from .channels import Channels, NoUsableChannel, VaultError
from .offers import Offer, OfferCache, OfferError, check_against_info, pick_offer
from .targets import TargetCheck, TargetRefused, TargetUnresolved
from .tunnel import (
    PaidResponse,
    PaymentPending,
    ProtocolViolation,
    ProviderRefused,
    ProviderUnavailable,
    ResultMismatch,
)

log = logging.getLogger("a402.vault")

#: Provider refusals that mean "the price or the route changed": ask for a fresh offer.
_STALE_OFFER = frozenset({"amount_mismatch", "not_a_paid_route"})


class _ClaimFirst(Exception):
    """A call not recorded yet reached a step that needs it recorded (see Invoker.invoke);
    ``claimed`` is the outcome of its claim if that was already made."""

    def __init__(self, claimed: tuple[bool, vault_store.Request] | None = None) -> None:
        super().__init__()
        self.claimed = claimed


def http_response(response: httpx.Response) -> HttpResponse:
    return HttpResponse(response.status_code, tuple(response.headers.raw), response.content)


class Invoker:
    """Runs ``/v1/invoke`` calls for one vault."""

    def __init__(
        self, channels: Channels, *, http: httpx.AsyncClient, offers: OfferCache,
        queue_timeout: float, retry_wait: float, allow_private_targets: bool = False,
        nonce_keep: float = 2 * api.DEFAULT_AUTH_WINDOW,
    ) -> None:
        self.channels = channels
        self.nonce_keep = nonce_keep
        self.targets = TargetCheck(allow_private=allow_private_targets)
        self.store = channels.store
        self.http = http
        self.offers = offers
        self.queue_timeout = queue_timeout
        self.retry_wait = retry_wait
        #: Calls being handled by this process (a retry of one waits for its answer).
        self._running: dict[str, asyncio.Event] = {}
        #: Calls this process is executing now (the worker leaves their records alone).
        self._executing: set[str] = set()
        #: The running calls as their clients signed them (what the enclave pays for).
        self._signed: dict[str, SignedCall] = {}

    def is_running(self, key: str) -> bool:
        """Whether this process is executing the call with this key now."""
        return key in self._executing

    # ---------------------------------------------------------------- answers

    def answer_of(self, row: vault_store.Request) -> tuple[int, dict[str, Any]]:
        """What a recorded (or in-flight) call answers now."""
        if row.state == vault_store.DONE and row.answer is not None:
            stored = records.unseal_json(self.channels.enclave, "answer", row.key, row.answer)
            return int(stored["status"]), stored["body"]
        body = {"outcome": api.PENDING, "idempotencyKey": row.key.split(":", 1)[1],
                "state": row.state, "channelId": row.channel_id, "requestId": row.request_id}
        return 202, body

    async def record(
        self, key: str, status: int, body: dict[str, Any], *, outcome: str,
        reason: str | None = None, retryable: bool = False, amount: int | None = None,
        transaction: str | None = None,
        from_states: tuple[str, ...] = (vault_store.RECEIVED, vault_store.LOCKED,
                                        vault_store.AUTHORIZED, vault_store.DELIVERED,
                                        vault_store.RELEASED),
    ) -> tuple[int, dict[str, Any]]:
        """Seal and store a final answer (once); returns it."""
        values = self._final(key, status, body, outcome=outcome, reason=reason,
                             retryable=retryable, amount=amount, transaction=transaction)
        if await self.store.finish_request(key, from_states=from_states, **values):
            return status, body
        row = await asyncio.to_thread(self.store.request, key)  # answered before: that answer
        assert row is not None
        return self.answer_of(row)

    def _final(self, key: str, status: int, body: dict[str, Any], *, outcome: str,
               reason: str | None = None, retryable: bool = False, amount: int | None = None,
               transaction: str | None = None) -> dict[str, Any]:
        """The columns of a call's final record: the sealed answer and how it ended."""
        sealed = records.seal_json(self.channels.enclave, "answer", key,
                                   {"status": status, "body": body})
        values: dict[str, Any] = {"state": vault_store.DONE, "outcome": outcome, "reason": reason,
                                  "retryable": retryable, "answer": sealed}
        if amount is not None:
            values["amount"] = str(amount)
        if transaction is not None:
            values["transaction"] = transaction
        return values

    def _paid_answer(self, key: str, paid: PaidResponse, channel_id: bytes,
                     provider: str) -> dict[str, Any]:
        receipt = None if paid.receipt is None else records.receipt_json(channel_id, paid.receipt)
        payment = records.Payment(
            paid.amount, self.channels.manager.token, self.channels.network, provider, channel_id,
            paid.request_id, receipt, paid.transaction)
        return records.answer_json(api.PAID, _client_key(key), response=paid.response,
                                   payment=payment)

    async def record_paid(self, key: str, paid: PaidResponse, channel_id: bytes,
                          provider: str) -> tuple[int, dict[str, Any]]:
        body = self._paid_answer(key, paid, channel_id, provider)
        return await self.record(key, 200, body, outcome=api.PAID, amount=paid.amount,
                                 transaction=paid.transaction)

    async def record_aborted(self, key: str, tx_hash: str | None) -> None:
        """The channel settled on-chain without this call's payment: δ went back."""
        body = {"outcome": api.ABORTED, "idempotencyKey": _client_key(key),
                "reason": "channel_settled", "message": "the channel was settled on-chain "
                "without this request's payment: nothing was paid", "transaction": tx_hash}
        await self.record(key, 200, body, outcome=api.ABORTED, reason="channel_settled",
                          transaction=tx_hash)

    async def record_refusal(self, key: str, error: VaultError) -> tuple[int, dict[str, Any]]:
        body = {**error.body(), "outcome": api.REFUSED, "idempotencyKey": _client_key(key)}
        # Only from states in which nothing can have been paid: a call whose σ_U may be
        # out is never answered "refused"; it stays pending until the worker settles it.
        return await self.record(key, error.status, body, outcome=api.REFUSED,
                                 reason=error.reason, retryable=error.retryable,
                                 from_states=(vault_store.RECEIVED, vault_store.RELEASED))

    # ------------------------------------------------------------------- calls

    async def invoke(self, client: str, call: api.InvokeRequest, *, nonce: str | None = None,
                     signed: SignedCall | None = None) -> tuple[int, dict[str, Any]]:
        """Run one call; ``nonce`` (the call's signature nonce) is recorded with its claim,
        and :class:`~a402.wire.vault_api.AuthError` raised if it was used before. ``signed``
        is the call as the client signed it: without it the enclave pays nothing.

        A new call on a channel that can pay it is recorded together with that channel's
        LOCKED checkpoint: before it, nothing is sent to the target, the provider's
        service or the chain. Anything else (a call seen before, a replayed nonce, an offer
        to fetch, a channel to open or close, a refusal) claims the call in a write of its
        own first.
        """
        await self._check_target(call.url)  # refused before anything is recorded
        key = f"{address_key(client)}:{call.idempotency_key}"
        while key in self._running:  # the same call is running here: its answer is ours
            await self._running[key].wait()
        # Taken before the first await, so no other task of this process can run this key
        # (and the store's lock keeps other processes out of this vault's database).
        event = self._running[key] = asyncio.Event()
        if signed is not None:
            self._signed[key] = signed
        claim = vault_store.Claim(key=key, client=client, fingerprint=call.fingerprint(),
                                  url=call.url,
                        method=call.method, nonce=nonce, nonce_keep=self.nonce_keep)
        try:
            try:
                return await self._run(key, client, call, claim)
            except _ClaimFirst as first:
                claimed = first.claimed
            return await self._claim_and_run(key, client, call, claimed or await self._claim(claim))
        finally:
            event.set()
            self._running.pop(key, None)
            self._signed.pop(key, None)

    async def _claim_and_run(self, key: str, client: str, call: api.InvokeRequest,
                             claimed: tuple[bool, vault_store.Request]) -> tuple[int, dict[str,
                                                                                           Any]]:
        created, row = claimed
        if not created:
            if row.fingerprint != call.fingerprint():
                raise VaultError(409, api.IDEMPOTENCY_KEY_REUSED,
                                 "this idempotency key named another call")
            row = await self._settled(row)
            # Runs again only if the first attempt paid nothing.
            restartable = (row.state == vault_store.DONE and row.retryable) or row.state in (
                vault_store.RECEIVED, vault_store.RELEASED)
            if not restartable or not await asyncio.to_thread(
                    self.store.restart_request, key, row.state):
                fresh = await asyncio.to_thread(self.store.request, key)
                return self.answer_of(fresh or row)
        return await self._run(key, client, call)

    async def _claim(self, claim: vault_store.Claim) -> tuple[bool, vault_store.Request]:
        try:
            return await self.store.claim_request(claim)
        except vault_store.ReplayedNonce:
            raise api.AuthError(api.REPLAYED_REQUEST, "this nonce was already used") from None

    async def _settled(self, row: vault_store.Request) -> vault_store.Request:
        """Wait (boundedly) for the worker to finish a call a previous process left in flight."""
        deadline = asyncio.get_running_loop().time() + self.retry_wait
        while row.state in vault_store.IN_FLIGHT and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            fresh = await asyncio.to_thread(self.store.request, row.key)
            assert fresh is not None
            row = fresh
        return row

    async def _run(self, key: str, client: str, call: api.InvokeRequest,
                   claim: vault_store.Claim | None = None) -> tuple[int, dict[str, Any]]:
        """Pay for the call; with ``claim``, the call is not recorded yet (see :meth:`invoke`)
        and :class:`_ClaimFirst` means it must be claimed on its own first."""
        self._executing.add(key)
        try:
            return await self._pay(key, client, call, fresh_offer=False, claim=claim)
        except (vault_store.ClaimTaken, NoUsableChannel):
            raise _ClaimFirst from None
        except VaultError as e:
            if claim is not None and not claim.recorded:
                claimed = await self._claim(claim)
                if not claimed[0]:  # seen before: answered as such
                    raise _ClaimFirst(claimed) from None
            return await self.record_refusal(key, e)
        except PaymentPending as e:
            log.warning("call %s is pending: %s", key, e)
            row = await asyncio.to_thread(self.store.request, key)
            assert row is not None
            status, body = self.answer_of(row)
            return status, {**body, "reason": api.PAYMENT_PENDING, "message": str(e)}
        finally:
            self._executing.discard(key)

    async def _offer(self, key: str, call: api.InvokeRequest, fresh: bool,
                     claim: vault_store.Claim | None = None) -> Offer | tuple[int, dict[str, Any]]:
        if not fresh and (cached := self.offers.get(call.method, call.url)) is not None:
            return cached
        if claim is not None and not claim.recorded:
            raise _ClaimFirst  # the target is asked only for a recorded call
        try:
            response = await self.http.request(
                call.method, call.url, headers=list(request_headers(call.headers)),
                content=call.body)
        except httpx.HTTPError as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, f"{type(e).__name__}: {e}",
                             retryable=True) from None
        if response.status_code != 402:  # nothing to pay: the answer is the answer
            body = records.answer_json(api.FREE, _client_key(key),
                                       response=http_response(response))
            return await self.record(key, 200, body, outcome=api.FREE, amount=0)
        manager = self.channels.manager
        try:
            offer = pick_offer(response, call.url, network=self.channels.network,
                               manager=manager.address, token=manager.token)
        except OfferError as e:
            raise VaultError(422, e.reason, e.detail, extra={
                "response": records.response_json(http_response(response))}) from None
        self.offers.put(call.method, call.url, offer)
        return offer

    async def _check_target(self, url: str) -> None:
        try:
            await self.targets(url)
        except TargetRefused as e:
            raise VaultError(403, api.TARGET_NOT_ALLOWED, str(e)) from None
        except TargetUnresolved as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None

    async def _pay(self, key: str, client: str, call: api.InvokeRequest, *, fresh_offer: bool,
                   claim: vault_store.Claim | None) -> tuple[int, dict[str, Any]]:
        offer = await self._offer(key, call, fresh_offer, claim)
        if not isinstance(offer, Offer):
            return offer
        await self._check_target(offer.endpoint)  # the provider names it: same rule
        if offer.amount > call.max_price:
            raise VaultError(402, api.PRICE_ABOVE_MAXIMUM,
                             f"the price is {offer.amount}, the maximum {call.max_price}",
                             extra={"price": str(offer.amount)})
        try:
            tunnel = await self.channels.tunnel(offer.endpoint)
        except AttestationError as e:
            raise VaultError(502, api.ATTESTATION_FAILED, f"{e}") from None
        except (ProviderUnavailable, ProtocolViolation, httpx.HTTPError) as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, f"{e}", retryable=True) from None
        assert tunnel.info is not None
        try:
            check_against_info(offer, tunnel.info)
        except OfferError as e:
            self.offers.drop(call.method, call.url)
            raise VaultError(502, e.reason, e.detail) from None
        lock = self.channels.pair_lock(client, offer.pay_to)
        try:
            await asyncio.wait_for(lock.acquire(), self.queue_timeout)
        except TimeoutError:
            raise VaultError(409, api.CHANNEL_BUSY, "another call to this provider is in flight",
                             retryable=True) from None
        try:
            return await self._exchange(key, client, call, offer, fresh_offer, claim)
        finally:
            lock.release()

    async def _exchange(
        self, key: str, client: str, call: api.InvokeRequest, offer: Offer, fresh_offer: bool,
        claim: vault_store.Claim | None = None,
    ) -> tuple[int, dict[str, Any]]:
        channels = self.channels
        unrecorded = claim is not None and not claim.recorded
        try:
            tunnel = await channels.tunnel(offer.endpoint)
            channel = await channels.find_or_open(
                client, tunnel, offer.amount, funding=call.funding,
                wallet_deposit=call.deposit, authorization=call.channel_authorization,
                reuse_only=unrecorded)
        except (ProviderRefused, ProtocolViolation) as e:
            raise VaultError(502, api.PROVIDER_REFUSED, str(e)) from None
        except (ProviderUnavailable, httpx.HTTPError) as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None
        except LocalProtocolError as e:
            raise VaultError(409, api.CONFLICT, str(e), retryable=True) from None
        tunnel = await channels.tunnel(offer.endpoint, channel.channel_id)
        signed = self._signed.get(key)
        if signed is None:
            raise VaultError(401, api.UNAUTHENTICATED, "the vault pays only for a signed call")
        try:
            await channels.prepare(client)
        except ChannelsNeeded as e:  # pragma: no cover - prepare loads them all
            raise VaultError(503, api.CHANNEL_RECOVERING, str(e), retryable=True) from None
        answered: list[dict[str, Any]] = []

        def answer(paid: PaidResponse) -> dict[str, Any]:
            """The final record, written with the DELIVERED checkpoint (Channels.persist)."""
            answered.append(self._paid_answer(key, paid, channel.channel_id, offer.pay_to))
            return self._final(key, 200, answered[0], outcome=api.PAID, amount=paid.amount,
                               transaction=paid.transaction)

        channels.current[channel.channel_id] = key
        channels.answers[channel.channel_id] = answer
        if unrecorded:
            assert claim is not None
            channels.claims[channel.channel_id] = claim
        try:
            paid = await tunnel.request(channel, signed, offer.amount)
        except ProviderRefused as e:
            if e.reason in _STALE_OFFER and not fresh_offer:
                # The provider answered EXEC, so the LOCKED checkpoint recorded the call.
                assert claim is None or claim.recorded
                self.offers.drop(call.method, call.url)
                channels.current.pop(channel.channel_id, None)
                channels.answers.pop(channel.channel_id, None)
                return await self._exchange(key, client, call,
                                            await self._fresh(key, call, offer), True)
            if e.reason == Reason.REQUEST_IN_FLIGHT:
                # The provider holds an earlier request of this channel: the vault's own
                # state to finish (the tunnel re-sent its last ACK), not the call's fault.
                # Nothing was paid (no σ_U), so the same key may run again.
                raise VaultError(503, api.CHANNEL_RECOVERING, f"{e.reason}: {e.detail}",
                                 retryable=True, extra={"providerReason": e.reason}) from None
            if e.response is not None:  # the service failed: its answer, unpaid
                body = records.answer_json(api.UNPAID, _client_key(key), response=e.response,
                                           reason=e.reason, detail=e.detail)
                return await self.record(key, 200, body, outcome=api.UNPAID, reason=e.reason)
            raise VaultError(502, api.PROVIDER_REFUSED, f"{e.reason}: {e.detail}",
                             extra={"providerReason": e.reason}) from None
        except ProtocolViolation as e:
            raise VaultError(502, api.PROTOCOL_VIOLATION, f"{e.reason}: {e.detail}") from None
        except ProviderUnavailable as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None
        except ResultMismatch as e:
            status, body = await self.record_paid(key, e.paid, channel.channel_id, offer.pay_to)
            return status, {**body, "reason": api.RESULT_MISMATCH, "message": str(e)}
        except LocalProtocolError as e:
            raise VaultError(409, api.CONFLICT, str(e), retryable=True) from None
        except ChannelsNeeded as e:
            raise VaultError(503, api.CHANNEL_RECOVERING, str(e), retryable=True) from None
        except EnclaveError as e:  # the enclave refused the call: nothing was signed
            status = {"price_above_maximum": 402, "replayed_call": 401,
                      "stale_call": 401}.get(e.reason, 403)
            raise VaultError(status, e.reason, e.detail) from None
        finally:
            channels.current.pop(channel.channel_id, None)
            channels.answers.pop(channel.channel_id, None)
            channels.claims.pop(channel.channel_id, None)
        if answered:  # recorded with the checkpoint that made the payment durable
            return 200, answered[0]
        return await self.record_paid(key, paid, channel.channel_id, offer.pay_to)

    async def _fresh(self, key: str, call: api.InvokeRequest, old: Offer) -> Offer:
        """The offer again, after the provider refused the cached one's price or route."""
        offer = await self._offer(key, call, True)
        if not isinstance(offer, Offer) or (offer.pay_to, offer.endpoint) != (
                old.pay_to, old.endpoint):
            raise VaultError(409, api.CONFLICT, "the target's offer changed; call again",
                             retryable=True)
        if offer.amount > call.max_price:
            raise VaultError(402, api.PRICE_ABOVE_MAXIMUM,
                             f"the price is {offer.amount}, the maximum {call.max_price}",
                             extra={"price": str(offer.amount)})
        return offer


def _client_key(key: str) -> str:
    """The client's idempotency key (the store prefixes it with the client's address)."""
    return key.split(":", 1)[1]
