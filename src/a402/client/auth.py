"""Paying x402 servers from ``httpx``: an ``Auth`` that answers 402 with a payment.

One ``X402Auth`` works for ``httpx.Client`` and ``httpx.AsyncClient`` alike,
because the whole exchange is the generator ``auth_flow``: send; on a 402
parse what is asked, choose, reserve budget, sign, and resend ONCE with the
payment header of the server's version (``PAYMENT-SIGNATURE`` for v2,
``X-PAYMENT`` for v1). The receipt (``PAYMENT-RESPONSE`` or
``X-PAYMENT-RESPONSE``) is decoded onto the returned response.

Retries and double charges (x402 issue #808). Three rules:

1. One call to ``send`` signs at most one payment. A 402 to the paid attempt
   is returned to the caller, never answered with a second signature.
2. A paid attempt that ends with no response at all (timeout, dropped
   connection) leaves its payment *unresolved*: it may or may not have been
   settled. If the caller retries the same request (same method, URL and
   body) while that authorization is still valid, the retry carries the very
   same signed payload instead of a new one. An EIP-3009 nonce can be used
   only once on-chain, so the retry cannot pay a second time: a server that
   remembers payments answers it with the resource, one that does not answers
   402 (its facilitator sees the nonce used) and that 402 is returned as is.
3. Once an unresolved authorization has expired it can no longer move money,
   so a later retry pays afresh. The budget still counts the expired one (see
   ``budget.py``): whether it settled is something only the chain can say.

Also, when the server declares the ``payment-identifier`` extension, the
payload carries a fresh id, so servers that deduplicate by id can do so.

Redirects: the paid retry goes to the URL that answered 402. If the paid
request is itself redirected and the client follows redirects, httpx forwards
the payment header; the payload can only pay the payee and amount already
agreed, so the most a redirect target can do with it is settle it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from a402.client import errors
from a402.client.budget import Budget
from a402.client.choose import choose_within
from a402.client.errors import PaymentRefused
from a402.client.limits import MaxAmount, as_max_amount
from a402.client.records import (
    PAYMENT_EXTENSION,
    Payment,
    PaymentStatus,
    conclude,
    payment_of,
    payment_required_of,
    receipt_of,
)
from a402.client.wallet import Wallet
from a402.evm.address import address_key
from a402.wire.headers import PAYMENT_SIGNATURE, X_PAYMENT, encode_header
from a402.wire.x402 import AnyPaymentPayload, AnyPaymentRequired, PaymentPayloadV1, PaymentRequired

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from a402.mandate.guard import MandateGuard

log = logging.getLogger(__name__)

__all__ = [
    "PAYMENT_EXTENSION",
    "Payment",
    "PaymentStatus",
    "X402Auth",
    "async_paying_client",
    "paying_auth",
    "paying_client",
    "payment_of",
    "payment_required_of",
    "receipt_of",
]

PAYMENT_IDENTIFIER: Final = "payment-identifier"
DEFAULT_MAX_VALIDITY: Final = 300
"""Cap on an authorization's lifetime, whatever ``maxTimeoutSeconds`` asks: a
signed authorization is spendable until it expires, so a server asking for a
day would hold a day-long claim on our budget."""
REPLAY_MARGIN: Final = 6
"""Facilitators refuse an authorization expiring within 6 s (reference §3.1)."""
DEFAULT_HISTORY: Final = 10_000
"""How many payment records ``X402Auth.payments`` keeps (a long-lived agent pays a lot)."""
DEFAULT_TIMEOUT: Final = 60.0
"""Servers settle on-chain before answering; httpx's 5 s default cuts them off (#1062)."""
_NO_CLIENT_CAP: Final = 1 << 256
"""With a mandate and no ``max_per_request``, the mandate's own cap is the cap (so a
refusal names it: ``mandate_cap_exceeded``)."""


def _fingerprint(request: httpx.Request) -> str:
    """What makes two requests 'the same request' for replaying a payment."""
    digest = hashlib.sha256(request.content).hexdigest()
    return f"{request.method} {request.url} {digest}"


def _echo_extensions(declared: dict[str, Any] | None) -> dict[str, Any] | None:
    """Echo the server's extensions (x402: echo, may append, never delete).

    For ``payment-identifier`` the client's part is ``info.id``; a fresh one
    per signed payment, so a replayed payload keeps its id.
    """
    if not declared:
        return None
    out = copy.deepcopy(declared)
    ext = out.get(PAYMENT_IDENTIFIER)
    if isinstance(ext, dict):
        info = ext.get("info")
        info = dict(info) if isinstance(info, Mapping) else {}
        info["id"] = f"pay_{uuid.uuid4().hex}"
        out[PAYMENT_IDENTIFIER] = {**ext, "info": info}
    return out


def _with_header(request: httpx.Request, name: str, value: str) -> httpx.Request:
    """A copy carrying the payment; the caller's request object is left as it was,
    so sending it again later does not silently resend an old payment."""
    headers = request.headers.copy()
    headers[name] = value
    return httpx.Request(request.method, request.url, headers=headers, content=request.content,
                         extensions=dict(request.extensions))


def _header_for(payload: AnyPaymentPayload) -> str:
    return X_PAYMENT if isinstance(payload, PaymentPayloadV1) else PAYMENT_SIGNATURE


@dataclass(frozen=True)
class _Signed:
    """What a signed payload commits the payer to: at most ``amount`` to ``pay_to``."""

    amount: int
    pay_to: str
    nonce: str
    valid_before: int


def _signed_terms(inner: dict[str, Any]) -> _Signed:
    """exact: the EIP-3009 value (the price); upto: the Permit2 maximum, which is what
    the payer risks, hence what the cap, the budget and the mandate count."""
    if "permit2Authorization" in inner:
        permit = inner["permit2Authorization"]
        return _Signed(int(permit["permitted"]["amount"]), permit["witness"]["to"],
                       f"permit2:{permit['nonce']}", int(permit["deadline"]) + 1)
    auth = inner["authorization"]
    return _Signed(int(auth["value"]), auth["to"], auth["nonce"], int(auth["validBefore"]))


# ------------------------------------------------------------------------ the auth


class X402Auth(httpx.Auth):
    """Pays x402 ``exact`` 402s within a per-request maximum and an optional total budget.

    ``max_per_request``: atomic units (int, for every asset), a mapping of
    asset → atomic units, or a ``MaxAmount`` such as ``token_units_max("0.01")``.
    It is required unless a ``mandate`` is given: a paying client without a cap is
    not offered.

    ``mandate``: a :class:`~a402.mandate.guard.MandateGuard` for the wallet's key.
    Every payment is then also inside the owner's signed mandate, checked and
    durably reserved before anything is signed (its registry read, its spend store
    locked); a payment it refuses raises ``PaymentRefused`` with the mandate's
    reason (``mandate_cap_exceeded``, ``mandate_payee_not_allowed``, ...), nothing
    signed, nothing reserved. Without ``max_per_request`` the mandate's
    per-payment maximum is the cap. The guard's registry read and spend-store
    writes are blocking calls (a few ms each); on an ``httpx.AsyncClient`` they
    run on the event loop's thread.

    Because a v1 server states its price in the 402 body, every response body
    is read before it is returned (``requires_response_body``); streaming a
    paid response therefore buffers it.
    """

    requires_request_body = True  # the paid retry resends the body
    requires_response_body = True  # a v1 402 states its price in the body

    def __init__(
        self,
        wallet: Wallet | str | bytes | LocalAccount,
        *,
        max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
        budget: Budget | None = None,
        max_validity: int = DEFAULT_MAX_VALIDITY,
        history: int | None = DEFAULT_HISTORY,
        mandate: MandateGuard | None = None,
    ) -> None:
        self.wallet = wallet if isinstance(wallet, Wallet) else Wallet(wallet)
        if max_per_request is None:
            if mandate is None:
                raise TypeError("max_per_request is required (or a mandate, whose cap it "
                                "then is)")
            max_per_request = _NO_CLIENT_CAP
        if mandate is not None and mandate.agent.lower() != self.wallet.address.lower():
            raise ValueError(f"the mandate is for {mandate.agent}, the wallet is "
                             f"{self.wallet.address}")
        self.max_amount = as_max_amount(max_per_request)
        self.budget = budget
        self.mandate = mandate
        if max_validity < REPLAY_MARGIN + 1:
            raise ValueError(f"max_validity must exceed {REPLAY_MARGIN} s")
        self.max_validity = max_validity
        self._lock = threading.Lock()
        self._payments: deque[Payment] = deque(maxlen=history)
        self._unresolved: dict[str, Payment] = {}

    @property
    def payments(self) -> list[Payment]:
        """Payments signed so far, oldest first (the last ``history`` of them)."""
        with self._lock:
            return list(self._payments)

    @property
    def unresolved(self) -> list[Payment]:
        """Payments that got no answer and may still settle (see the module doc)."""
        with self._lock:
            return list(self._unresolved.values())

    # --- httpx plumbing: like the base class, but the inner flow is always closed,
    # so an abandoned paid attempt is seen (as GeneratorExit) deterministically.

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self.auth_flow(request)
        try:
            request = next(flow)
            while True:
                response = yield request
                response.read()
                try:
                    request = flow.send(response)
                except StopIteration:
                    return
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self.auth_flow(request)
        try:
            request = next(flow)
            while True:
                response = yield request
                await response.aread()
                try:
                    request = flow.send(response)
                except StopIteration:
                    return
        finally:
            flow.close()

    # --- the exchange

    def auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        key = _fingerprint(request)
        earlier = self._take_unresolved(key)
        if earlier is not None:
            yield from self._send_paid(request, earlier, key)
            return
        if self.mandate is not None:
            # The registry read for a payment this request may need, overlapping its round
            # trip (MandateGuard.prefetch): one read per request sent, paid or not.
            self.mandate.prefetch()
        response = yield request
        if response.status_code != 402:
            return
        target = response.request  # after redirects: the URL that asked to be paid
        payment = self._pay(payment_required_of(response), target)
        yield from self._send_paid(target, payment, key)

    def _pay(self, required: AnyPaymentRequired, request: httpx.Request) -> Payment:
        url = str(request.url)
        offer, reservation, admitted = choose_within(required, self.wallet, self.max_amount,
                                                     self.budget, self.mandate, url=url)

        def give_back() -> None:
            # Nothing left this process, so nothing can move: the budget's reservation may
            # go back (the mandate's admission wrote nothing).
            if reservation is not None and self.budget is not None:
                self.budget.release(reservation)

        try:
            payload = self.wallet.sign(
                offer.requirements,
                resource=required.resource if isinstance(required, PaymentRequired) else None,
                extensions=_echo_extensions(
                    required.extensions if isinstance(required, PaymentRequired) else None
                ),
                valid_for=min(offer.view.max_timeout_seconds, self.max_validity),
            )
        except Exception as e:
            give_back()
            raise PaymentRefused(
                errors.SIGNING_FAILED, f"{type(e).__name__}: {e}", url=url,
                offered=required.accepts,
            ) from e
        signed = _signed_terms(payload.payload)
        if (signed.amount != offer.amount
                or address_key(signed.pay_to) != address_key(offer.pay_to)):
            # Cannot happen with our signer; if it ever did, the payload never left
            # this process, so giving the reservation back is safe.
            give_back()
            raise PaymentRefused(errors.SIGNING_FAILED,
                                 "signed value/recipient differ from the offer",
                                 url=url, offered=required.accepts)
        payment = Payment(
            method=request.method, url=url, offer=offer, payer=self.wallet.address,
            nonce=signed.nonce, valid_before=signed.valid_before,
            header_name=_header_for(payload), header_value=encode_header(payload),
            reservation=reservation,
        )
        if admitted is not None:
            # Signed in memory only. The mandate's reservation, already marked signed, and
            # the payment's evidence record commit now, before the payload leaves: a
            # refusal (or a crash) here discards a signature nobody saw
            # (:mod:`a402.mandate.guard`).
            payment.mandate_reservation = self._commit(admitted, request, payment, required,
                                                       give_back)
        with self._lock:
            self._payments.append(payment)
        return payment

    def _commit(self, admitted: Any, request: httpx.Request, payment: Payment,
                required: AnyPaymentRequired, give_back: Any) -> Any:
        from a402.client.audit import exact_payment_record  # the store's tables
        from a402.mandate.spend import MandateRefused

        assert self.mandate is not None
        url = str(request.url)
        try:
            fields = exact_payment_record(
                mandate=self.mandate.mandate_hash, agent=self.wallet.address,
                request=request, header_value=payment.header_value, amount=payment.amount,
                payee=payment.pay_to, network=payment.network, asset=payment.asset,
                scheme=payment.offer.view.scheme)
            return self.mandate.commit(admitted, fields, self.wallet.sign_evidence,
                                       payment_ref=payment.nonce)
        except MandateRefused as e:
            give_back()
            raise PaymentRefused(e.reason, f"{e.detail}; the payment signed in memory was "
                                 "discarded unsent: nothing was paid", url=url,
                                 offered=required.accepts) from e
        except Exception as e:
            # The store failed: whether it committed is unknown, so the mandate's amount
            # may stay counted (the safe side); the payload is not sent.
            give_back()
            raise PaymentRefused(
                errors.MANDATE_SPEND_UNAVAILABLE,
                f"the mandate's spend store failed ({type(e).__name__}: {e}); the payment "
                "signed in memory was discarded unsent: nothing was paid", url=url,
                offered=required.accepts) from e

    def _send_paid(
        self, request: httpx.Request, payment: Payment, key: str
    ) -> Generator[httpx.Request, httpx.Response, None]:
        payment.status = PaymentStatus.SENT
        try:
            response = yield _with_header(request, payment.header_name, payment.header_value)
        except GeneratorExit:  # the attempt died without an answer
            payment.status = PaymentStatus.UNKNOWN
            if self.mandate is not None:  # signed and sent: its outcome is "no answer"
                self._outcome(payment, None)
            with self._lock:
                self._unresolved[key] = payment
            raise
        conclude(payment, response)
        response.extensions[PAYMENT_EXTENSION] = payment
        if self.mandate is not None:
            self._outcome(payment, response)

    def _outcome(self, payment: Payment, response: httpx.Response | None) -> None:
        """Queue the payment's outcome record (:meth:`MandateGuard.settle`: durable with
        the next payment's commit or the guard's flush). The payment was sent whatever
        happens here, so a failure is logged, never raised over the paid response."""
        from a402.client.audit import exact_outcome

        assert self.mandate is not None
        if payment.mandate_reservation is None:  # (committed for every mandated payment)
            return
        try:
            self.mandate.settle(payment.mandate_reservation, exact_outcome(
                mandate=self.mandate.mandate_hash, agent=self.wallet.address,
                response=response, scheme=payment.offer.view.scheme), self.wallet.sign_evidence)
        except Exception as e:
            log.error("a payment of %s to %s was made, but its outcome could not be "
                      "recorded (%s: %s)", payment.amount, payment.pay_to, type(e).__name__, e)

    def _take_unresolved(self, key: str) -> Payment | None:
        """An earlier, unanswered payment for this request that could still settle.

        Expired entries are dropped on the way: they can no longer be replayed
        (they stay in ``payments``, with status ``unknown``).
        """
        horizon = time.time() + REPLAY_MARGIN
        with self._lock:
            payment = self._unresolved.pop(key, None)
            for stale in [k for k, p in self._unresolved.items() if p.valid_before <= horizon]:
                del self._unresolved[stale]
        if payment is not None and payment.valid_before > horizon:
            return payment
        return None


# -------------------------------------------------------------------- constructors


def _client_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "auth" in kwargs:
        raise TypeError("the paying client provides its own auth")
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
    return kwargs


def paying_auth(
    key: Wallet | str | bytes | LocalAccount,
    *,
    max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
    budget: Budget | None = None,
    networks: list[str] | None = None,
    assets: list[str] | None = None,
    max_validity: int = DEFAULT_MAX_VALIDITY,
    mandate: MandateGuard | None = None,
) -> X402Auth:
    """An ``X402Auth``; ``networks``/``assets`` build the wallet's allow-lists."""
    if isinstance(key, Wallet):
        if networks is not None or assets is not None:
            raise TypeError("pass allow-lists to the Wallet, not alongside it")
        wallet = key
    else:
        wallet = Wallet(key, networks=networks, assets=assets)
    return X402Auth(
        wallet, max_per_request=max_per_request, budget=budget, max_validity=max_validity,
        mandate=mandate,
    )


def paying_client(
    key: Wallet | str | bytes | LocalAccount,
    *,
    max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
    budget: Budget | None = None,
    networks: list[str] | None = None,
    assets: list[str] | None = None,
    max_validity: int = DEFAULT_MAX_VALIDITY,
    mandate: MandateGuard | None = None,
    **httpx_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` that pays 402s; its ``X402Auth`` is ``client.auth``."""
    auth = paying_auth(key, max_per_request=max_per_request, budget=budget,
                       networks=networks, assets=assets, max_validity=max_validity,
                       mandate=mandate)
    return httpx.Client(auth=auth, **_client_kwargs(httpx_kwargs))


def async_paying_client(
    key: Wallet | str | bytes | LocalAccount,
    *,
    max_per_request: int | Mapping[str, int] | MaxAmount | None = None,
    budget: Budget | None = None,
    networks: list[str] | None = None,
    assets: list[str] | None = None,
    max_validity: int = DEFAULT_MAX_VALIDITY,
    mandate: MandateGuard | None = None,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of ``paying_client``."""
    auth = paying_auth(key, max_per_request=max_per_request, budget=budget,
                       networks=networks, assets=assets, max_validity=max_validity,
                       mandate=mandate)
    return httpx.AsyncClient(auth=auth, **_client_kwargs(httpx_kwargs))
