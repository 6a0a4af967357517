"""``POST /v1/invoke`` in vault mode: a client's signed call, paid from its pooled account.

The same exchange as standard mode, with the other funding: the channel is opened
inside the vault enclave against the client's account in the ``A402Vault``
(:meth:`VaultModeService.open_channel <a402.vault.mode.VaultModeService.open_channel>`,
no transaction), and each paid request runs the one machine
(:class:`~a402.asc.VaultChannel`, in the enclave's :mod:`a402.vault_accounts`) over the
same attested tunnel and frames as standard mode (:class:`~a402.vault.tunnel.ProviderTunnel`:
``…/info`` attested, Noise XX, OPEN with the vault's binding signature, EXEC → REPLY →
AUTH → REVEAL → ACK). One call, in a straight line:

1. the target's 402 names an ``a402`` offer whose ``extra.a402Vault`` is this vault's
   contract (the provider admits its vault-mode channels), on this chain and token, with
   an endpoint on the target's origin; its price within the call's ``maxPrice``;
2. the provider is attested (its key and address, as in standard mode) and the tunnel
   opened; the client's open channel with that provider is reused, or one is opened
   with ``deposit`` (the call's, else :data:`DEFAULT_CHANNEL_CALLS` × the price, at most
   the client's free balance) and bound (OPEN) to one of the provider's tunnels (as in
   standard mode, up to :data:`TUNNELS_PER_PROVIDER`, each attested and checked alike:
   one frame is in flight on a tunnel, so channels spread over them do not wait for each
   other's frames; a channel stays on the tunnel it was given);
3. EXEC for the call *as the client signed it* (the enclave checks the signature, the
   price against ``maxPrice``, the channel's owner, and pays each idempotency key once),
   REPLY checked by the machine in the enclave, AUTH with σ_U, REVEAL, the result opened
   and checked to answer this request, ACK; the answer carries the client's latest
   signed statement (what ``a402 vault exit`` needs).

Safety argument: this host signs nothing and moves no money. Whatever it does, the enclave
signs σ_U only for a call the client signed, on a REPLY whose pre-signature is by the
attested provider key of the channel
(:meth:`~a402.vault_accounts.VaultAccountsCode.bind_tunnel`), and every change is stored
sealed before anything leaves (:meth:`~a402.vault.mode.VaultModeService.change`). A
failure before σ_U releases the locked price (:meth:`abandon`); after σ_U the payment is
pending and settles by the enclave's rules (REVEAL later, the provider's on-chain claim,
or back to the client after the claim window): the call answers 202 ``payment_pending``
and nothing is retried here.

Answers are durable: each paid call's answer is sealed (under the host's seal with the
enclave) and stored before it is returned (:meth:`ModeInvoker.remember`), so a retry of the
same idempotency key after a restart or on the replica that took over answers it again, and
``GET /v1/requests/{key}`` serves it (to the client that signed the call only). Not built
(stated): a process that dies between σ_U and that write stored no answer (the retry is
refused ``replayed_call``: never paid twice).

What one paid call stores, and when (counted: ``bench/vault_mode_http.py``'s rounds): two
writes, each in a group commit shared with the other calls' writes and awaited on the event
loop, the enclave's step too when the service's lock is free (:meth:`VaultModeService.achange
<a402.vault.mode.VaultModeService.achange>`, :meth:`~a402.vault.mode.VaultModeService.
_adurable`: no thread hop, no thread parked on the store, the same durability): σ_U's before
AUTH leaves (durable before the money can move); the answer's, with the REVEAL's change, the
statement it carries and the request's nonce, before the answer leaves. EXEC waits for no
write (:meth:`~a402.vault.mode.VaultModeService.arequest`): the enclave's request step does
not change the sealed ledger (the price is locked in the channel's machine, written with
σ_U), and the channel's open, its binding and its last REVEAL were stored before (the last
ACK is owed only once stored, under the pair's lock). A vault killed after EXEC left
restarts with that request id unused, and its next EXEC on the channel
reuses it, which the provider refuses (``replayed``: nothing paid); the refusal burns the id,
and the call after goes through once the provider's lock on the lost request has run out
(Δ_lock). A vault killed after σ_U's write has the payment pending, settled by the enclave's
rules, and the call's retry is answered from the stored answer or refused ``replayed_call``,
never paid twice. Not done (a bigger step, which needs kill/restart tests at its new
points): a write at EXEC that keeps the restarted channel in step with the provider, or σ_U's
write folded into the wait for the REPLY (EXEC's write marking the request "σ_U may be out",
a restarted enclave then settling it by the claim window instead of releasing it, and σ_U
released with no write of its own once that marker is stored).

The ACK, as in standard mode (:mod:`a402.vault.tunnel`), rides on the channel's next EXEC
(one frame, ``ASC_ACKED``) or leaves on its own (:meth:`ModeInvoker.send_ack`) after a
quarter of the provider's Δ_ack (at most :data:`ACK_DELAY_MAX` seconds) if no EXEC comes:
a busy channel saves a round trip per call. It is sent only after the REVEAL's change is
stored (it is made then), under the channel's lock (never between an EXEC and its REPLY),
and re-owed if the EXEC it rode on failed (the provider ignores an ACK it already has).
A channel replaced (too little left for the price) sends its owed ACK first, before it is
closed, under the lock the new channel's call holds: it does not wait for that call (which
can hold the lock up to the provider's Δ_lock, past a short Δ_ack). A host that starts
re-sends the last ACK of every channel whose payment is still pending
(:meth:`ModeInvoker.start`), at the provider endpoint stored with the channel's first paid
answer (:func:`endpoint_row`), without waiting for a call to bind it: an ACK lost in a
crash reaches the provider if the vault is back within Δ_ack. An ACK lost all the same
(the vault stays down longer) leaves the provider to claim the payment on-chain, which
pays it once: the safety of money does not rest on the ACK.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from a402.asc import (
    Ack,
    ASCError,
    Auth,
    Reason,
    Reply,
    ResultDelivered,
    Reveal,
    Status,
    decode,
)
from a402.asc.errors import MessageError
from a402.asc.terms import ChannelTerms
from a402.crypto import PaymentDomain
from a402.evm.address import address_key, to_checksum
from a402.tee import (
    AttestationError,
    AttestationPolicy,
    AttestationVerifier,
    Enclave,
    TeeError,
)
from a402.tee.chains import check_backends
from a402.vault_accounts import Changed, PendingRecord, SignedStatement
from a402.vault_enclave import SignedCall, request_headers
from a402.wire import vault_api as api
from a402.wire.a402 import (
    Envelope,
    FrameError,
    HttpResponse,
    HttpResult,
    Kind,
    OpenChannel,
    PendingNote,
    Refusal,
    request_digest,
)

from . import records
from .mode import NonceHold, VaultModeError, VaultModeService, statement_json
from .offers import Offer, OfferCache, OfferError, origin, pick_offer
from .targets import TargetCheck, TargetRefused, TargetUnresolved
from .tunnel import ProtocolViolation, ProviderTunnel, ProviderUnavailable, TunnelError

log = logging.getLogger("a402.vault.mode")

#: A new channel's capacity, in calls at the offer's price, when the call names no deposit.
DEFAULT_CHANNEL_CALLS = 100

#: Attested tunnels kept with each provider by default, as standard mode keeps
#: (``tunnels_per_provider``, :class:`~a402.vault.settings.Connections`): one frame is in
#: flight on a tunnel at a time, so the calls of several channels on one tunnel wait for
#: each other's frames; spread over several, they do not.
TUNNELS_PER_PROVIDER = 4


class _Authority:
    """The vault (its enclave's key) as the tunnel's authority: OPEN's binding is signed
    by the enclave's accounts code, only for a channel it holds with that attested peer."""

    def __init__(self, service: VaultModeService) -> None:
        self.service = service
        self.address = bytes.fromhex(service.address.removeprefix("0x"))

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        return self.service.bind_tunnel(handle, channel_id)


class ModeTunnel(ProviderTunnel):
    """The standard tunnel, whose OPEN names a vault-mode channel by its id in the
    ``A402Vault``'s domain (the provider recomputes it there: it knows that contract)."""

    def __init__(self, endpoint: str, *, contract_domain: PaymentDomain, **kwargs: Any
                 ) -> None:
        super().__init__(endpoint, **kwargs)
        self.contract_domain = contract_domain

    async def _open(self, terms: ChannelTerms) -> None:
        assert self._handle is not None
        cid = terms.channel_id(self.contract_domain)
        signature = self.vault.bind_tunnel(self._handle, cid)
        answer = await self._exchange_once(OpenChannel(
            terms.client, terms.vault, terms.provider, terms.provider_key, terms.deposit,
            terms.salt, signature).envelope())
        if answer.kind is not Kind.OK:
            refusal = _refusal(answer)
            raise ModeRefused(502, api.PROVIDER_REFUSED, f"{refusal.reason}: {refusal.detail}")

    async def bind(self, terms: ChannelTerms) -> None:
        """OPEN for ``terms`` (again after a new handshake: the tunnel remembers it)."""
        await self._open(terms)
        self._bound[terms.channel_id(self.contract_domain)] = terms


#: The store's meta rows of paid calls' answers: this prefix and a hash of (client, key), in
#: base64url (43 characters): the row name fits the meta table's 64-character key, which
#: PostgreSQL enforces (a hex digest did not: every answer's write failed there, after σ_U).
ANSWER_ROW = "vault-mode/answer/"
_ANSWER_LABEL = "a402/vault-mode-answer"


def answer_row(client: str, key: str) -> str:
    """The meta row of ``client``'s call ``key`` (hashed: the row name says nothing)."""
    digest = hashlib.sha256(f"{address_key(client)}\n{key}".encode()).digest()
    return ANSWER_ROW + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hex_answer_row(client: str, key: str) -> str:
    """The row name answers had before (hex, 82 characters: too long for PostgreSQL's key,
    so only SQLite vaults hold such rows); read still, so a retry finds an answer stored
    before the upgrade."""
    return ANSWER_ROW + hashlib.sha256(f"{address_key(client)}\n{key}".encode()).hexdigest()


#: The longest an ACK waits for its channel's next EXEC before it is sent on its own.
ACK_DELAY_MAX = 5.0

#: The store's meta rows of each channel's provider endpoint (sealed; the row named by a
#: hash of the channel id, 63 characters): where a host that starts re-sends owed ACKs.
ENDPOINT_ROW = "vault-mode/endpoint/"
_ENDPOINT_LABEL = "a402/vault-mode-endpoint"


def endpoint_row(channel_id: bytes) -> str:
    """The meta row of the endpoint ``channel_id`` is bound at (hashed: says nothing)."""
    digest = hashlib.sha256(_ENDPOINT_LABEL.encode() + b"\n" + channel_id).digest()
    return ENDPOINT_ROW + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _endpoint_label(channel_id: bytes) -> str:
    """The seal label of ``channel_id``'s endpoint row: the channel id is in the seal's
    associated data, so the blob opens for this channel only."""
    return f"{_ENDPOINT_LABEL}/{channel_id.hex()}"


def seal_endpoint(enclave: Enclave, channel_id: bytes, endpoint: str) -> bytes:
    """The sealed value of :func:`endpoint_row` for ``channel_id``: its provider endpoint,
    bound to the channel (:func:`open_endpoint` refuses it under any other channel)."""
    return enclave.seal(_endpoint_label(channel_id), endpoint.encode())


def open_endpoint(enclave: Enclave, channel_id: bytes, blob: bytes) -> str | None:
    """The endpoint in ``channel_id``'s stored row, or None (logged) if the blob is not
    one sealed for this channel: another channel's blob moved here by the host, a cut or
    foreign blob, an endpoint that is not text. Such a row counts as absent; it never
    raises, so a bad row cannot stop a host that starts. (A moved endpoint could never
    get the ACK to another provider: the re-send's OPEN is signed only for a peer
    attested with the channel's provider key. The binding keeps the host from steering
    the re-send at all.)"""
    try:
        return enclave.unseal(_endpoint_label(channel_id), blob).decode()
    except (TeeError, UnicodeDecodeError) as e:
        log.warning("the stored endpoint of channel %s is ignored: not sealed for it (%s)",
                    channel_id.hex(), e)
        return None


class ModeRefused(VaultModeError):
    """A refused call (``status``, machine-readable ``reason``; ``provider_reason``: the
    provider's, when it refused). Nothing was paid, unless raised after σ_U (AUTH):
    :meth:`ModeInvoker._exchange` then answers 202 ``payment_pending``."""

    def __init__(self, status: int, reason: str, detail: str = "", *,
                 provider_reason: str | None = None) -> None:
        super().__init__(status, reason, detail)
        self.provider_reason = provider_reason


class _ChannelEnded(Exception):
    """The provider refused EXEC: its side of the channel is closed (nothing was paid)."""


class ModeInvoker:
    """Runs vault-mode ``/v1/invoke`` calls for one :class:`VaultModeService`."""

    def __init__(self, service: VaultModeService, *, verifiers: Sequence[AttestationVerifier],
                 policy: AttestationPolicy, http: httpx.AsyncClient | None = None,
                 allow_private_targets: bool = False, tunnel_timeout: float = 30.0,
                 tunnels_per_provider: int = TUNNELS_PER_PROVIDER) -> None:
        # The verifiers' kinds, as the standard vault checks them: simulated quotes are
        # believed only on a development chain.
        check_backends(service.chain.chain_id, [v.kind for v in verifiers])
        self.service = service
        self.verifiers = list(verifiers)
        self.policy = policy
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self.targets = TargetCheck(allow_private=allow_private_targets)
        self.offers = OfferCache()
        self.authority = _Authority(service)
        self.tunnel_timeout = tunnel_timeout
        #: The tunnels with each provider (by origin, and slot: ``tunnels_per_provider``
        #: of them, connected on first use), and the slot each channel is bound on.
        self.tunnels_per_provider = max(1, tunnels_per_provider)
        self._tunnels: dict[tuple[str, int], ModeTunnel] = {}
        self._slots: dict[tuple[str, bytes], int] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tunnel_lock = asyncio.Lock()
        #: Answers of the calls paid here, by (client key, idempotency key).
        self._answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        #: The ACK each channel owes its provider (the newest), with its tunnel and the
        #: (client, provider) pair whose lock its channel's calls hold; and their flushes.
        self._unacked: dict[bytes, tuple[ModeTunnel, Ack, tuple[str, str]]] = {}
        self._ack_flushes: dict[bytes, asyncio.Task[None]] = {}
        #: The endpoint stored for each channel (:func:`endpoint_row`), as far as known here.
        self._endpoints: dict[bytes, str] = {}
        self._resending: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Re-send, in the background, the ACKs a process before this one may have owed
        (:meth:`resend_owed_acks`): called when the app starts serving (a replica: when it
        takes the lease over, :mod:`a402.vault.mode_lease`, the holder before may have died
        owing some). Safe to call at each take-over: a re-send still running is not
        doubled (two would only send the same ACKs twice), one that finished runs again
        (it reads the ACKs owed now). Nothing after :meth:`aclose`."""
        if self._closing or (self._resending is not None and not self._resending.done()):
            return
        self._resending = asyncio.get_running_loop().create_task(self.resend_owed_acks())
        self._resending.add_done_callback(_log_resend_failure)

    async def aclose(self) -> None:
        """Stop the re-send and the ACK flushes, send the ACKs still owed (best effort),
        close the tunnels. The re-send's own end (cancelled, or failed: logged) is not
        raised here; a cancellation of ``aclose`` itself is."""
        self._closing = True
        if self._resending is not None:
            self._resending.cancel()
            await asyncio.wait([self._resending])  # raises only if aclose is cancelled
        for task in list(self._ack_flushes.values()):
            task.cancel()
        for cid in list(self._unacked):  # best effort: the provider gets them now
            await self._flush_ack(cid)
        for tunnel in self._tunnels.values():
            await tunnel.aclose()
        self._tunnels.clear()

    # ------------------------------------------------------------------ the call

    async def invoke(self, client: str, call: api.InvokeRequest, signed: SignedCall, *,
                     nonce: NonceHold | None = None) -> tuple[int, dict[str, Any]]:
        """Pay for ``call`` (signed by ``client``) from the client's account; the answer.
        ``nonce``: the signed request's, recorded with the answer (:meth:`remember`)."""
        once = (address_key(client), call.idempotency_key)
        known = self._answers.get(once)
        if known is not None:
            return known
        # An answer is stored only for a call that paid (after σ_U, whose write holds the
        # consumed key): a call the enclave never paid has none to look for.
        if self.service.accounts.has_paid(client, call.idempotency_key):
            known = await asyncio.to_thread(self.answer_of, client, call.idempotency_key)
            if known is not None:
                return known
            # σ_U is out for it, its answer was lost (a process ended between the two):
            # said before any channel is looked for, which might refuse it as unpaid
            raise _answer_lost()
        await self._check_target(call.url)
        offer = await self._offer(call)
        if isinstance(offer, tuple):
            return offer
        await self._check_target(offer.endpoint)
        if offer.amount > call.max_price:
            raise ModeRefused(402, api.PRICE_ABOVE_MAXIMUM,
                              f"nothing was paid: the price is {offer.amount}, the maximum "
                              f"{call.max_price}")
        attested = await self._tunnel(offer)  # the provider, attested: its key picks the channel
        pair = (address_key(client), address_key(offer.pay_to))
        lock = self._locks.setdefault(pair, asyncio.Lock())
        async with lock:
            cid, tunnel = await self._channel(client, call, offer, attested)
            try:
                answer, ack = await self._exchange(client, call, signed, offer, tunnel, cid)
            except _ChannelEnded:
                # The provider ended the channel (it claimed a payment on-chain): nothing was
                # paid for this call; close ours (the rest goes back to the client's free
                # balance) and pay through a new one.
                await self._close(cid)
                cid, tunnel = await self._channel(client, call, offer, attested)
                answer, ack = await self._exchange(client, call, signed, offer, tunnel, cid)
            # one write: the answer, with the REVEAL's change and the statement it carries
            # (and where the channel's provider is, if not stored yet: for its ACK's re-send)
            where = ({} if ack is None or self._endpoints.get(cid) == tunnel.endpoint
                     else {cid: tunnel.endpoint})
            try:
                await self.remember(once, answer, nonce, where)
            except Exception as e:  # σ_U is stored: paid, or may be; the answer is not
                if answer[0] != 200 and answer[0] != 202:
                    raise
                log.warning("answer of a paid call not stored: %s", e)
                return 202, {
                    "outcome": api.PAYMENT_PENDING, "error": api.PAYMENT_PENDING,
                    "idempotencyKey": call.idempotency_key, "message": (
                        "paid, or may have been paid (σ_U is out), but its record could "
                        f"not be stored: {type(e).__name__}: {e}; the payment settles by "
                        "the vault's rules")}
            if ack is not None:  # the REVEAL's change is stored: the ACK may leave
                self._owe_ack(cid, tunnel, ack, pair)
        return answer

    async def remember(self, once: tuple[str, str], answer: tuple[int, dict[str, Any]],
                       nonce: NonceHold | None = None,
                       endpoints: dict[bytes, str] | None = None) -> None:
        """Store a paid call's answer, sealed, before it is returned, in the ledger write
        that stores everything the enclave holds now (:meth:`VaultModeService.astore_rows
        <a402.vault.mode.VaultModeService.astore_rows>`): the REVEAL's change and the
        statement the answer carries, which were not waited for. The write is fenced by
        the lease on PostgreSQL: a replica that lost it stores, and answers, nothing.
        ``endpoints``: channels' provider endpoints to store in the same write (sealed)."""
        seal = self.service.config.enclave.seal
        blob = seal(_ANSWER_LABEL, json.dumps([answer[0], answer[1]]).encode())
        rows = {answer_row(*once): blob}
        for cid, endpoint in (endpoints or {}).items():
            rows[endpoint_row(cid)] = seal_endpoint(self.service.config.enclave, cid, endpoint)
        await self.service.astore_rows(rows, nonce)
        self._endpoints.update(endpoints or {})
        self._answers[once] = answer

    def outcome_of(self, client: str, key: str) -> tuple[int, dict[str, Any]] | None:
        """What ``client``'s call ``key`` came to (``GET /v1/requests/{key}``): its stored
        answer; None if no call of the client's with this key paid here (nothing was paid:
        σ_U's write, which the enclave makes before AUTH leaves, precedes any payment).

        A call whose σ_U is out but whose answer was lost (its process ended between the
        two) is not "none": it is refused as a retry of it is (``replayed_call``: paid, or
        may have been). A 404 there would tell a client who may have paid that nothing
        was: the client reads a 4xx, but for ``replayed_call``, as nothing paid."""
        known = self.answer_of(client, key)
        if known is None and self.service.accounts.has_paid(client, key):
            raise _answer_lost()
        return known

    def answer_of(self, client: str, key: str) -> tuple[int, dict[str, Any]] | None:
        """The answer of ``client``'s paid call ``key``: from this process, else the store
        (stored by this process before a restart, or by the replica before a fail-over)."""
        once = (address_key(client), key)
        if once in self._answers:
            return self._answers[once]
        blob = self.service.store.get_meta(answer_row(client, key))
        if blob is None:
            blob = self.service.store.get_meta(_hex_answer_row(client, key))
        if blob is None:
            return None
        status, body = json.loads(self.service.config.enclave.unseal(_ANSWER_LABEL, blob))
        self._answers[once] = (int(status), dict(body))
        return self._answers[once]

    async def _check_target(self, url: str) -> None:
        try:
            await self.targets(url)
        except TargetRefused as e:
            raise ModeRefused(403, api.TARGET_NOT_ALLOWED, str(e)) from None
        except TargetUnresolved as e:
            raise ModeRefused(503, api.PROVIDER_UNAVAILABLE, str(e)) from None

    async def _offer(self, call: api.InvokeRequest) -> Offer | tuple[int, dict[str, Any]]:
        cached = self.offers.get(call.method, call.url)
        if cached is not None:
            return cached
        try:
            response = await self.http.request(
                call.method, call.url, headers=list(request_headers(call.headers)),
                content=call.body)
        except httpx.HTTPError as e:
            raise ModeRefused(503, api.PROVIDER_UNAVAILABLE,
                              f"nothing was paid: {type(e).__name__}: {e}") from None
        if response.status_code != 402:  # nothing to pay: the answer is the answer
            free = HttpResponse(response.status_code, tuple(response.headers.raw),
                                response.content)
            return 200, records.answer_json(api.FREE, call.idempotency_key, response=free)
        contract = self.service.contract
        try:
            offer = pick_offer(response, call.url, network=self.service.chain.network,
                               manager=contract.address, token=contract.token,
                               contract_field="a402Vault")
        except OfferError as e:
            raise ModeRefused(422, e.reason, "nothing was paid: " + e.detail) from None
        self.offers.put(call.method, call.url, offer)
        return offer

    async def _tunnel(self, offer: Offer, slot: int = 0) -> ModeTunnel:
        """The offer's provider's tunnel ``slot`` (:data:`TUNNELS_PER_PROVIDER`), connected
        and attested on first use; each is checked against the offer alike (payTo, key,
        asset), so every slot's peer is the one enclave the offer names."""
        key = (origin(offer.endpoint), slot)
        tunnel = self._tunnels.get(key)
        if tunnel is not None:  # connected: no lock to take
            return tunnel
        async with self._tunnel_lock:
            tunnel = self._tunnels.get(key)
            if tunnel is not None:
                return tunnel
            tunnel = self._new_tunnel(offer.endpoint)
            try:
                info = await tunnel.connect()
            except AttestationError as e:
                await tunnel.aclose()
                raise ModeRefused(502, api.ATTESTATION_FAILED, f"nothing was paid: {e}"
                                  ) from None
            except (TunnelError, httpx.HTTPError) as e:
                await tunnel.aclose()
                raise ModeRefused(503, api.PROVIDER_UNAVAILABLE, f"nothing was paid: {e}"
                                  ) from None
            wrong = [what for what, ok in (
                ("payTo", address_key(offer.pay_to) == address_key("0x" + info.provider.hex())),
                ("providerKey", offer.provider_key.lower() == "0x" + info.provider_key.hex()),
                ("asset", address_key(offer.asset) == address_key("0x" + info.token.hex())),
            ) if not ok]
            if wrong:
                await tunnel.aclose()
                self.offers.drop("GET", offer.endpoint)
                raise ModeRefused(502, api.OFFER_MISMATCH, "nothing was paid: the 402 "
                                  "disagrees with the attested provider on " + ", ".join(wrong))
            self._tunnels[key] = tunnel
            return tunnel

    def _new_tunnel(self, endpoint: str) -> ModeTunnel:
        return ModeTunnel(
            endpoint, contract_domain=self.service.contract.domain,
            enclave=self.service.config.enclave, verifiers=self.verifiers,
            policy=self.policy, vault=self.authority, network=self.service.chain.network,
            timeout=self.tunnel_timeout)

    def _slot(self, offer: Offer, cid: bytes) -> int:
        """The tunnel slot ``cid`` is bound on with the offer's provider: the one it was
        given, else the slot with the fewest channels (the calls of different channels
        spread over the provider's tunnels; a channel stays on its own)."""
        where = origin(offer.endpoint)
        slot = self._slots.get((where, cid))
        if slot is None:
            load = [0] * self.tunnels_per_provider
            for (other, _), taken in self._slots.items():
                if other == where and taken < len(load):
                    load[taken] += 1
            slot = self._slots[(where, cid)] = load.index(min(load))
        return slot

    async def _close(self, cid: bytes) -> None:
        """Close ``cid`` in the enclave (its rest back to the client's free balance); its
        tunnel slot is free for another channel."""
        await asyncio.to_thread(self.service.close, cid)
        for key in [k for k in self._slots if k[1] == cid]:
            del self._slots[key]

    async def _channel(self, client: str, call: api.InvokeRequest, offer: Offer,
                       attested: ModeTunnel) -> tuple[bytes, ModeTunnel]:
        """The client's OPEN channel with the offer's provider (as the enclave holds them:
        found again after a restart) that can pay the price, else a new one; and its
        tunnel (:meth:`_slot`), the channel bound there. An OPEN channel left with less
        than the price is closed first (its rest goes back to the client's free balance).
        ``attested``: a tunnel with the offer's provider (its attested key picks the
        channel)."""
        assert attested.info is not None
        pair = (address_key(client), address_key(offer.pay_to))
        cid: bytes | None = None
        for found, status, left, provider_key in self.service.accounts.channels_of(
                client, offer.pay_to):
            if status is not Status.OPEN or provider_key != attested.info.provider_key:
                continue
            if left >= offer.amount and cid is None:
                cid = found
            elif left < offer.amount:
                # Its owed ACK first (under this pair's lock, which the flush would wait
                # for: up to this call's whole exchange, maybe past the provider's Δ_ack).
                await self._flush_ack(found)
                await self._close(found)
        if cid is None:
            free = await asyncio.to_thread(self.service.spare, client)
            capacity = call.deposit or min(free, DEFAULT_CHANNEL_CALLS * offer.amount)
            if capacity < offer.amount:
                raise ModeRefused(
                    402, api.INSUFFICIENT_BALANCE,
                    f"nothing was paid: {free} free in your vault account (confirmed "
                    f"deposits, less payouts you asked for), {offer.amount} needed")
            cid, _ = await asyncio.to_thread(
                self.service.open_channel, to_checksum(client), to_checksum(offer.pay_to),
                attested.info.provider_key, capacity)
        assert cid is not None
        tunnel = await self._tunnel(offer, self._slot(offer, cid))
        if cid not in tunnel._bound:
            try:
                await tunnel.bind(self.service.accounts.terms(cid))
            except TunnelError as e:
                raise ModeRefused(503, api.PROVIDER_UNAVAILABLE, f"nothing was paid: {e}"
                                  ) from None
            # A channel bound anew (a new process, a new tunnel): its last ACK may never
            # have left (owed, then the process ended): owed again, it rides on this EXEC.
            last = self.service.accounts.last_ack(cid)
            if last is not None and cid not in self._unacked:
                self._owe_ack(cid, tunnel, last, pair)
        return cid, tunnel

    async def _exchange(self, client: str, call: api.InvokeRequest, signed: SignedCall,
                        offer: Offer, tunnel: ModeTunnel, cid: bytes
                        ) -> tuple[tuple[int, dict[str, Any]], Ack | None]:
        """EXEC → REPLY → AUTH → REVEAL: the answer, and the ACK to owe once it is stored.
        The REVEAL's change and the statement are not waited for here: nothing leaves
        before :meth:`remember` stored them with the answer (the ACK is owed after it)."""
        service = self.service
        try:
            exec_ = await service.arequest(cid, signed, offer.amount)
        except ASCError as e:  # the machine holds an earlier payment still: nothing moved
            raise ModeRefused(409, api.CHANNEL_BUSY, f"nothing was paid: {e.detail}") from None
        owed = self._unacked.pop(cid, None)  # the last call's ACK rides on this EXEC
        envelope = (Envelope.asc(exec_.encode()) if owed is None
                    else Envelope.acked(owed[1].encode(), exec_.encode()))
        try:
            reply = await self._ask(tunnel, envelope, Reply)
            authorized = await service.areceive(cid, reply)
        except BaseException as e:  # no σ_U exists: the locked price goes back to the channel
            if owed is not None:  # maybe not delivered: owed again (a repeat is harmless)
                self._owe_ack(cid, *owed)
            await asyncio.to_thread(self._abandon, cid)
            if isinstance(e, ASCError):  # a REPLY the machine refused (e.g. a bad σ̂)
                raise ModeRefused(502, api.PROTOCOL_VIOLATION,
                                  f"nothing was paid: {e.reason}: {e.detail}") from None
            if isinstance(e, TunnelError):
                raise ModeRefused(503, api.PROVIDER_UNAVAILABLE,
                                  f"nothing was paid: {e}") from None
            raise
        (auth,) = authorized.step.send
        assert isinstance(auth, Auth)
        try:
            reveal = await self._ask(tunnel, self.auth_envelope(auth, authorized.pending),
                                     Reveal)
            # the REVEAL and the client's statement under one hold of the lock (both
            # unstored: nothing of either leaves before remember's write, which stores them)
            delivered, statement = await service.alocked(partial(
                self._take_reveal, cid, reveal, client))
        except (VaultModeError, TunnelError, ASCError) as e:
            log.warning("payment %d of %s pending: %s", exec_.request_id, cid.hex(), e)
            why = e.provider_reason if isinstance(e, ModeRefused) else None
            return (202, {"outcome": api.PAYMENT_PENDING, "error": api.PAYMENT_PENDING,
                         "idempotencyKey": call.idempotency_key,
                         **({"providerReason": why} if why else {}), "message": (
                             "paid, or may have been paid (σ_U is out), but the result is "
                             f"not in: {e}; the payment settles by the vault's rules (the "
                             "provider's REVEAL or claim, or back to you after the claim "
                             "window)")}), None
        event = next(e for e in delivered.step.events if isinstance(e, ResultDelivered))
        (ack,) = delivered.step.send
        assert isinstance(ack, Ack)
        try:
            result = HttpResult.decode(event.result)
        except FrameError as e:
            raise ModeRefused(502, api.PROTOCOL_VIOLATION,
                              f"paid, but the result is malformed: {e}") from None
        matches = result.request_digest == request_digest(exec_.request)
        # the charge δ' the REVEAL paid (a metered route's, at most the δ locked)
        payment = records.Payment(event.amount, service.contract.token, service.chain.network,
                                  to_checksum(offer.pay_to), cid, exec_.request_id, None)
        body = records.answer_json(api.PAID, call.idempotency_key, response=result.response,
                                   payment=payment,
                                   reason=None if matches else api.RESULT_MISMATCH,
                                   detail="" if matches else "paid; the sealed result is for "
                                   "another request")
        body["mode"] = "vault"
        if isinstance(statement, VaultModeError):  # σ_U is stored: paid all the same
            return (202, {"outcome": api.PAYMENT_PENDING, "error": api.PAYMENT_PENDING,
                          "idempotencyKey": call.idempotency_key,
                          "message": f"paid, or may have been paid (σ_U is out): {statement}"}
                    ), None
        body["statement"] = statement_json(statement)
        return (200, body), ack

    def _take_reveal(self, cid: bytes, reveal: Reveal, client: str
                     ) -> tuple[Changed, SignedStatement | VaultModeError]:
        """Under the service's lock: the REVEAL through the enclave (unstored), then the
        client's latest statement (unstored; the refusal to sign one instead, if it
        refused: the payment stands). Neither leaves before :meth:`remember`'s write has
        stored them both (:meth:`VaultModeService.change
        <a402.vault.mode.VaultModeService.change>` with ``stored=False``)."""
        delivered = self.service.receive(cid, reveal, stored=False)
        try:
            return delivered, self.service.statement_unstored(client)
        except VaultModeError as e:
            return delivered, e

    def _abandon(self, cid: bytes) -> None:
        """Release the request in flight if no σ_U exists for it (else: nothing to do)."""
        def op() -> None:
            with contextlib.suppress(ASCError):  # not LOCKED: σ_U is out, or nothing was
                self.service.accounts.abandon(cid)
        self.service.change(op)

    # ------------------------------------------------------------------ seams

    def auth_envelope(self, auth: Auth, pending: PendingRecord | None) -> Envelope:
        """AUTH as it leaves, with the enclave's signed pending record of the payment: the
        provider reveals only with it (its on-chain claim if this vault goes dark)."""
        if pending is None:  # the enclave signs one with every σ_U
            raise ModeRefused(500, "internal_error", "σ_U came without its pending record")
        return Envelope.with_pending(PendingNote(
            pending.channel_id, pending.request_id, pending.client_nonce, pending.epoch,
            pending.deadline, pending.signature, self.service.accounts.ledger), auth.encode())

    def _owe_ack(self, cid: bytes, tunnel: ModeTunnel, ack: Ack, pair: tuple[str, str]
                 ) -> None:
        """Remember the channel's ACK (the newest wins) for its next EXEC, and make sure it
        leaves on its own in time if no EXEC comes (module docstring)."""
        current = self._unacked.get(cid)
        if current is None or current[1].request_id <= ack.request_id:
            self._unacked[cid] = (tunnel, ack, pair)
        if cid in self._ack_flushes or self._closing:
            return
        info = tunnel.info
        delay = min(ACK_DELAY_MAX, info.ack_timeout / 4) if info is not None else 0.0

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
                async with self._locks.setdefault(pair, asyncio.Lock()):
                    await self._flush_ack(cid)
            finally:
                self._ack_flushes.pop(cid, None)
                # owed again meanwhile (an EXEC it rode on failed): flushed later
                if cid in self._unacked and not self._closing:
                    self._owe_ack(cid, *self._unacked[cid])
        self._ack_flushes[cid] = asyncio.get_running_loop().create_task(later())

    async def _flush_ack(self, cid: bytes) -> None:
        owed = self._unacked.pop(cid, None)
        if owed is not None:
            await self.send_ack(owed[0], owed[1])

    async def send_ack(self, tunnel: ModeTunnel, ack: Ack) -> None:
        """Send an ACK on its own (a seam: a test's vault withholds it). Best effort: a lost
        ACK leaves the provider to claim the payment on-chain, which pays it once."""
        try:
            answer = await tunnel.exchange(Envelope.asc(ack.encode()))
            if answer.kind is Kind.ERROR:
                log.warning("ACK refused: %s", _refusal(answer).reason)
        except TunnelError as e:
            log.warning("ACK not delivered: %s", e)

    async def resend_owed_acks(self) -> None:
        """Send each ACK that may still be owed after a restart
        (:meth:`~a402.vault_accounts.VaultAccountsCode.acks_owed`: its payment is pending),
        without waiting for a call to bind its channel. At the endpoint stored with the
        channel's paid answer, on a tunnel of its own, closed after it (attested; its OPEN
        is signed by the enclave only if the attested peer holds the channel's provider
        key); each channel's on its own (one provider gone dark delays no other's), the
        provider attested outside the channel's pair lock and the lock taken only to bind
        the channel and send the ACK (a call to that provider is not held up for the
        re-send's whole timeout); skipped if a call here bound the channel meanwhile (it
        owes the ACK itself). Moves no money and changes no balance: best effort (the
        provider ignores an ACK it has; one it never gets leads to its on-chain claim, which
        pays once). A channel with no stored endpoint (paid before they were stored) is
        left to its next call."""
        owed = await asyncio.to_thread(self.service.accounts.acks_owed)
        await asyncio.gather(*(self._resend_owed_ack(*entry) for entry in owed))

    async def _resend_owed_ack(self, cid: bytes, client: str, provider: str, ack: Ack) -> None:
        if self._closing:
            return
        pair = (address_key(client), address_key(provider))
        lock = self._locks.setdefault(pair, asyncio.Lock())

        def bound_here() -> bool:
            return cid in self._unacked or any(cid in t._bound for t in self._tunnels.values())

        try:
            blob = await asyncio.to_thread(self.service.store.get_meta, endpoint_row(cid))
            if blob is None or bound_here():
                return
            endpoint = open_endpoint(self.service.config.enclave, cid, blob)
            if endpoint is None:  # not this channel's (logged): as if none was stored
                return
            await self._check_target(endpoint)
            tunnel = self._new_tunnel(endpoint)
            try:
                await tunnel.connect()  # attestation and handshake: no lock held
                async with lock:
                    if bound_here() or self._closing:
                        return
                    await tunnel.bind(self.service.accounts.terms(cid))
                    await self.send_ack(tunnel, ack)
            finally:
                await tunnel.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # best effort: the provider's claim pays it otherwise
            log.warning("owed ACK of %s not re-sent: %s: %s", cid.hex(), type(e).__name__, e)

    async def _ask(self, tunnel: ModeTunnel, envelope: Envelope, kind: type[Any]) -> Any:
        answer = await tunnel.exchange(envelope)
        if answer.kind is Kind.ERROR:
            refusal = _refusal(answer)
            if refusal.reason == Reason.CHANNEL_CLOSED.value and kind is Reply:
                raise _ChannelEnded(refusal.detail)
            # Before σ_U (EXEC refused) nothing was paid; after it, the caller says so.
            said = "nothing was paid: " if kind is Reply else ""
            raise ModeRefused(502, api.PROVIDER_REFUSED,
                              f"{said}{refusal.reason}: {refusal.detail}",
                              provider_reason=refusal.reason)
        if answer.kind is not Kind.ASC:
            raise ProtocolViolation("unexpected_answer", answer.kind.name)
        try:
            message = decode(answer.body)
        except MessageError as e:
            raise ProtocolViolation("malformed", str(e)) from None
        if not isinstance(message, kind):
            raise ProtocolViolation("unexpected_message", type(message).__name__)
        return message


def _log_resend_failure(task: asyncio.Task[None]) -> None:
    """A re-send that failed as a whole (reading the owed ACKs): logged (best effort, as
    each ACK's), so that nothing waits to raise it."""
    if not task.cancelled() and (e := task.exception()) is not None:
        log.warning("owed ACKs not re-sent: %s: %s", type(e).__name__, e)


def _answer_lost() -> ModeRefused:
    """The answer to a call (or a look-up of it) whose σ_U is out but whose answer was
    lost: ``replayed_call``, which the client reads as paid, or may have been."""
    return ModeRefused(401, api.REPLAYED_CALL,
                       "this call has paid already (σ_U was signed for it) and its "
                       "answer was lost; the payment settles by the vault's rules")


def _refusal(answer: Envelope) -> Refusal:
    try:
        return Refusal.from_body(answer.body)
    except FrameError as e:
        return Refusal("malformed", str(e))


__all__ = ["DEFAULT_CHANNEL_CALLS", "TUNNELS_PER_PROVIDER", "ModeInvoker", "ModeRefused",
           "ModeTunnel", "ProviderUnavailable", "endpoint_row", "open_endpoint",
           "seal_endpoint"]
