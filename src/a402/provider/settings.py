"""What an operator may tune in a provider, in typed groups (:mod:`a402.settings`).

For ``exact`` (:class:`~a402.provider.middleware.PaymentMiddleware`): :class:`Paywall`
(what a 402 names and when a payment is settled) and :class:`PaymentTiming` (how long
offers, retries and ledger records last). For ``a402``
(:class:`~a402.provider.a402_config.A402Config`): :class:`ChannelTimeouts` (the
protocol's Δ_ack and lock, announced in the offer), :class:`Watching` (the on-chain
watcher's pace) and :class:`Limits` (how many tunnels, for how long).

``a402 gateway`` generates a flag for each field of :class:`Paywall` and
:class:`ChannelTimeouts` (``lock_timeout`` is ``--lock-timeout``, same default and help);
the others are for code that builds a provider itself.

Kept apart from the middleware and the runtime so that building the command line does
not load them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypedDict

from a402.settings import setting

__all__ = ["ChannelTimeouts", "Limits", "PaymentSettings", "PaymentTiming", "Paywall",
           "Watching", "payment_settings"]


@dataclass(frozen=True, kw_only=True)
class Paywall:
    """Which URL a 402 names as the resource, and whether payment settles before serving.

    With ``settle_before_serve`` the app runs only after a successful settle: the payer
    carries the risk that the app then fails, the provider no longer carries the risk of
    serving for a payment that then fails. Without ``public_url`` the resource's URL is
    what the request says (scheme + Host header), and the Host header is the payer's to
    choose (see :mod:`a402.provider.middleware`)."""

    settle_before_serve: bool = setting(
        False, help="settle on-chain before calling the upstream")
    public_url: str | None = setting(
        None, help="external base URL, for resource URLs behind a proxy")


@dataclass(frozen=True, kw_only=True)
class PaymentTiming:
    """How long an ``exact`` offer, a retry and a ledger record last, in seconds."""

    max_timeout_seconds: int = setting(
        60, help="the offer's maxTimeoutSeconds: how long the payer gives the provider "
                 "to settle")
    retry_after_seconds: int = setting(
        2, help="Retry-After of an answer that asks the payer to resend (settlement "
                "pending, payment in use, facilitator unavailable)")
    ledger_retention_seconds: int = setting(
        600, help="seconds the replay ledger remembers a payment beyond its "
                  "authorization's validity")
    facilitator_timeout: float = setting(
        30.0, help="seconds one call to the facilitator may take")


class PaymentSettings(TypedDict, total=False):
    """The fields of :class:`Paywall` and :class:`PaymentTiming` one by one, as keyword
    arguments (``PaymentMiddleware(..., settle_before_serve=True)``); each overrides the
    group's field of that name."""

    settle_before_serve: bool
    public_url: str | None
    max_timeout_seconds: int
    retry_after_seconds: int
    ledger_retention_seconds: int
    facilitator_timeout: float


def payment_settings(paywall: Paywall | None, timing: PaymentTiming | None,
                     settings: PaymentSettings) -> tuple[Paywall, PaymentTiming]:
    """The two groups (their defaults if ``None``), with the fields named in ``settings``
    replaced; a name that is a field of neither is a ``TypeError``."""
    groups: list[Any] = [paywall or Paywall(), timing or PaymentTiming()]
    left: dict[str, Any] = dict(settings)
    for index, group in enumerate(groups):
        names = {field.name for field in dataclasses.fields(group)}
        chosen = {name: left.pop(name) for name in list(left) if name in names}
        groups[index] = dataclasses.replace(group, **chosen)
    if left:
        raise TypeError(f"no such payment setting: {', '.join(sorted(left))}")
    return groups[0], groups[1]


@dataclass(frozen=True, kw_only=True)
class ChannelTimeouts:
    """The A402 protocol's timeouts, in seconds; the offer tells vaults both.

    ``ack_timeout`` is Δ_ack: no ACK that long after REVEAL, and the provider claims
    on-chain. ``lock_timeout``: how long the provider refuses a new EXEC while one
    executes; keep it below the vaults' Δ_lock (a vault refuses a provider whose lock is
    not below its own)."""

    ack_timeout: float = setting(
        30.0, metavar="SECONDS",
        help="Δ_ack: no ACK that long after REVEAL, and the provider claims on-chain "
             "(default: %(default)s)")
    lock_timeout: float = setting(
        20.0, metavar="SECONDS",
        help="how long one EXEC holds a channel; keep it below the vaults' Δ_lock "
             "(default: %(default)s)")


@dataclass(frozen=True, kw_only=True)
class Watching:
    """The on-chain watcher's pace, in seconds (:mod:`a402.provider.a402_watch`).

    ``close_grace``: how long after co-signing a final state the provider waits for
    someone else to submit ``closeASC`` before submitting it itself."""

    poll_interval: float = setting(1.0, help="seconds between the watcher's rounds")
    close_grace: float = setting(
        60.0, help="seconds after a final state before the provider submits closeASC itself")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How many vault tunnels a provider keeps, and how long an idle one lives.

    Past ``max_tunnels`` the least recently used tunnel is forgotten (its vault opens
    another)."""

    max_tunnels: int = setting(
        1024, help="tunnels kept at most (the least recently used is evicted)")
    tunnel_idle_timeout: float = setting(
        3600.0, help="seconds an unused tunnel is kept")
