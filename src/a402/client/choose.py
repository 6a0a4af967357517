"""Choosing what to pay from a 402's ``accepts`` (pure: no I/O).

The rules, in order: a requirement must be something the wallet may sign
(scheme ``exact``, an allowed EVM network and asset, an EIP-712 domain), cost
no more than the per-request maximum, and fit the budget. Among those, the
cheapest wins; ties go to a payment flow that settles only after the resource
is served, then to the server's order. Nothing is ever chosen by position
alone: when no requirement qualifies the answer is a refusal, not
``accepts[0]`` (x402 issue #2991).

"Cheapest" compares atomic units, which is meaningful between offers in the
same token and between tokens of equal decimals (the usual USD stablecoins);
to rule out tokens you do not want compared that way, use the wallet's asset
allow-list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from a402.client import errors
from a402.client.budget import Budget, Reservation
from a402.client.errors import BudgetExceeded, PaymentRefused, Rejection
from a402.client.limits import MaxAmount
from a402.client.wallet import Wallet
from a402.exact.upto import SCHEME_UPTO
from a402.mandate.policy import MANDATE_NEEDS_CONFIRMATION, MandateRefused, ProposedPayment
from a402.wire.convert import to_v2_requirements
from a402.wire.x402 import AnyPaymentRequired, AnyPaymentRequirements, PaymentRequirements

if TYPE_CHECKING:  # the guard loads the spend store (SQLAlchemy): only a mandate needs it
    from a402.mandate.guard import Admission, MandateGuard

_FLOW_RANK = {None: 0, "authorization": 0}  # settle-after-serve first; others rank 1


@dataclass(frozen=True)
class Offer:
    """A requirement the client is willing to pay."""

    index: int
    """Position in the server's ``accepts``."""
    requirements: AnyPaymentRequirements
    """As received; a v2 payload echoes it verbatim in ``accepted``."""
    view: PaymentRequirements
    """The v2 form (CAIP-2 network, ``amount``), whatever version the server spoke."""
    amount: int
    maximum: int

    @property
    def version(self) -> int:
        return 2 if isinstance(self.requirements, PaymentRequirements) else 1

    @property
    def network(self) -> str:
        return self.view.network

    @property
    def asset(self) -> str:
        return self.view.asset

    @property
    def pay_to(self) -> str:
        return self.view.pay_to

    def sort_key(self) -> tuple[int, int, int]:
        flow = (self.view.extra or {}).get("paymentFlow")
        return self.amount, _FLOW_RANK.get(flow, 1), self.index


def evaluate(
    required: AnyPaymentRequired, wallet: Wallet, max_amount: MaxAmount, *,
    assets_bounded: bool = False,
) -> tuple[list[Offer], list[Rejection]]:
    """Split ``accepts`` into payable offers (best first) and rejections.

    An ``upto`` offer is payable only in an asset someone named: the wallet's
    allow-list, or (``assets_bounded``) a mandate's. Permit2 moves *any* ERC-20 the
    wallet has allowed it (wallets that used Uniswap have many), and a cap given in
    atomic units means a fortune in a token with few decimals, so a 402 naming such a
    token must not get a signature; ``exact`` signs only EIP-3009 tokens."""
    offers: list[Offer] = []
    rejections: list[Rejection] = []
    accepts: Sequence[AnyPaymentRequirements] = required.accepts
    for index, req in enumerate(accepts):
        refused = wallet.refusal(req)
        if refused is None and req.scheme == SCHEME_UPTO and wallet.assets is None \
                and not assets_bounded:
            refused = (errors.ASSET_NOT_ALLOWED,
                       "upto (Permit2) can move any token the wallet allowed Permit2: name "
                       "the tokens to pay upto in (assets=[...], a402 pay --asset ADDRESS)")
        if refused is not None:
            rejections.append(Rejection(index, req, *refused))
            continue
        view = to_v2_requirements(req)  # refusal() proved this converts
        amount = view.amount_int
        cap = max_amount(view)
        if cap is None:
            rejections.append(Rejection(index, req, errors.ASSET_NOT_ALLOWED,
                                        "no maximum for asset"))
        elif amount > cap:
            rejections.append(
                Rejection(index, req, errors.PRICE_ABOVE_MAXIMUM, f"{amount} > maximum {cap}")
            )
        else:
            offers.append(Offer(index, req, view, amount, cap))
    offers.sort(key=Offer.sort_key)
    return offers, rejections


def overall_reason(rejections: list[Rejection]) -> str:
    """The reason closest to payable: a caller can act on it (top up, raise the cap).

    After the client's own budget and cap, the mandate's reason of the first
    offer the mandate refused (``mandate_cap_exceeded``, ...): that is the limit
    the owner set, and the one a person has to hear about."""
    reasons = {r.reason for r in rejections}
    for reason in (errors.BUDGET_EXHAUSTED, errors.PRICE_ABOVE_MAXIMUM):
        if reason in reasons:
            return reason
    for rejection in sorted(rejections, key=lambda r: r.index):
        if rejection.reason.startswith("mandate_"):
            return rejection.reason
    return errors.NO_ACCEPTABLE_REQUIREMENT


def proposed(offer: Offer, wallet: Wallet, url: str | None, skill: str | None = None
             ) -> ProposedPayment:
    """The payment a mandate judges: an ``exact`` transfer of this offer, or an ``upto``
    authorization of its maximum (counted whole: the settled amount, known only after
    the response, may be anything up to it), signed by the wallet (``skill``: the A2A
    skill the task is for, None for HTTP)."""
    return ProposedPayment(agent=wallet.address, payee=offer.pay_to, network=offer.network,
                           asset=offer.asset, scheme=offer.view.scheme, amount=offer.amount,
                           url=url, skill=skill)


def choose(
    required: AnyPaymentRequired,
    wallet: Wallet,
    max_amount: MaxAmount,
    budget: Budget | None = None,
    *,
    url: str | None = None,
) -> tuple[Offer, Reservation | None]:
    """The best payable offer, with its budget already reserved; else ``PaymentRefused``.

    The reservation is taken here, before anything is signed, so concurrent
    requests sharing ``budget`` cannot together exceed it. When the best offer
    does not fit, the next one (another asset with room left) is tried.
    """
    offer, reservation, _ = choose_within(required, wallet, max_amount, budget, None, url=url)
    return offer, reservation


def _unavailable(error: Exception, required: AnyPaymentRequired, url: str | None
                 ) -> PaymentRefused:
    return PaymentRefused(
        errors.MANDATE_SPEND_UNAVAILABLE,
        f"the mandate's spend store failed ({type(error).__name__}: {error}); nothing was "
        "signed, nothing was paid", url=url, offered=required.accepts)


def choose_within(
    required: AnyPaymentRequired,
    wallet: Wallet,
    max_amount: MaxAmount,
    budget: Budget | None,
    mandate: MandateGuard | None,
    *,
    url: str | None = None,
    skill: str | None = None,
) -> tuple[Offer, Reservation | None, Admission | None]:
    r"""``choose``, and inside the owner's ``mandate`` too: offers the mandate cannot
    allow with the spend as last committed are set aside, and the chosen one is
    admitted (:meth:`MandateGuard.admit`: registry read started, owner's confirmation
    obtained) after the budget's reservation; the caller signs, then
    :meth:`MandateGuard.commit`\ s before sending. An offer the mandate refuses gives
    its budget reservation back (nothing was signed) and the next is tried. A refusal
    says, in its message, that nothing was signed or paid."""
    offers, rejections = evaluate(required, wallet, max_amount,
                                  assets_bounded=mandate is not None)
    if mandate is not None:
        allowed = []
        for offer in offers:
            try:
                decision = mandate.precheck(proposed(offer, wallet, url, skill))
            except Exception as e:  # the store cannot be read: refuse, never pay unrecorded
                raise _unavailable(e, required, url) from e
            if decision or decision.reason == MANDATE_NEEDS_CONFIRMATION:
                allowed.append(offer)
            else:
                assert decision.reason is not None
                rejections.append(Rejection(offer.index, offer.requirements, decision.reason,
                                            decision.detail))
        offers = allowed
    for offer in offers:
        reservation = None
        if budget is not None:
            try:
                reservation = budget.reserve(offer.asset, offer.amount)
            except BudgetExceeded as e:
                rejections.append(
                    Rejection(offer.index, offer.requirements, errors.BUDGET_EXHAUSTED,
                              e.message)
                )
                continue
        if mandate is None:
            return offer, reservation, None
        try:
            return offer, reservation, mandate.admit(proposed(offer, wallet, url, skill))
        except MandateRefused as e:
            if reservation is not None and budget is not None:
                budget.release(reservation)  # nothing was signed for it
            rejections.append(Rejection(offer.index, offer.requirements, e.reason, e.detail))
        except Exception as e:
            # The store failed mid-reserve: whether it committed is unknown, so the
            # mandate's amount may stay counted (the safe side); nothing was signed.
            if reservation is not None and budget is not None:
                budget.release(reservation)
            raise _unavailable(e, required, url) from e
    rejections.sort(key=lambda r: r.index)
    reason = overall_reason(rejections)
    details = "; ".join(f"#{r.index} {r.reason} ({r.detail})" for r in rejections) or "empty"
    message = f"{len(required.accepts)} requirement(s) offered: {details}"
    if mandate is not None:
        message += "; nothing was signed, nothing was paid"
    raise PaymentRefused(
        reason,
        message,
        url=url,
        offered=required.accepts,
        rejections=rejections,
    )
