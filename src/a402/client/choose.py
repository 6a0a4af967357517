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

from a402.client import errors
from a402.client.budget import Budget, Reservation
from a402.client.errors import BudgetExceeded, PaymentRefused, Rejection
from a402.client.limits import MaxAmount
from a402.client.wallet import Wallet
from a402.wire.convert import to_v2_requirements
from a402.wire.x402 import AnyPaymentRequired, AnyPaymentRequirements, PaymentRequirements

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
    required: AnyPaymentRequired, wallet: Wallet, max_amount: MaxAmount
) -> tuple[list[Offer], list[Rejection]]:
    """Split ``accepts`` into payable offers (best first) and rejections."""
    offers: list[Offer] = []
    rejections: list[Rejection] = []
    accepts: Sequence[AnyPaymentRequirements] = required.accepts
    for index, req in enumerate(accepts):
        refused = wallet.refusal(req)
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
    """The reason closest to payable: a caller can act on it (top up, raise the cap)."""
    reasons = {r.reason for r in rejections}
    for reason in (errors.BUDGET_EXHAUSTED, errors.PRICE_ABOVE_MAXIMUM):
        if reason in reasons:
            return reason
    return errors.NO_ACCEPTABLE_REQUIREMENT


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
    offers, rejections = evaluate(required, wallet, max_amount)
    for offer in offers:
        if budget is None:
            return offer, None
        try:
            return offer, budget.reserve(offer.asset, offer.amount)
        except BudgetExceeded as e:
            rejections.append(
                Rejection(offer.index, offer.requirements, errors.BUDGET_EXHAUSTED, e.message)
            )
    rejections.sort(key=lambda r: r.index)
    reason = overall_reason(rejections)
    details = "; ".join(f"#{r.index} {r.reason} ({r.detail})" for r in rejections) or "empty"
    raise PaymentRefused(
        reason,
        f"{len(required.accepts)} requirement(s) offered: {details}",
        url=url,
        offered=required.accepts,
        rejections=rejections,
    )
