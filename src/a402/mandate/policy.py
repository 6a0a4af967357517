"""Does a mandate allow this payment? One pure function, one machine-readable answer.

:func:`decide` takes a verified mandate (a :class:`SignedMandate` exists only with
the owner's valid signature), a proposed payment, what was spent so far and the
time, and answers :class:`Decision`: allowed, or refused with one of the
``MANDATE_*`` reasons below. It has no I/O and no clock of its own, so the paying
client, the spend store (which calls it inside its locked transaction, with the
spend it just read) and later the vault enclave reach the same answer from the
same inputs.

The safety argument: every check compares the payment with a limit the owner
signed, and a payment passes only if *every* check passes; there is no
default-allow path. Amounts are Python ints (atomic units), never floats, so
``spent + amount <= budget`` is exact. URLs are compared after the same
normalization the mandate's origins got (lowercase scheme and host, default
port dropped, userinfo dropped), so ``https://api.example.com@evil.example/``
is judged as ``evil.example``. URL patterns know one wildcard, ``*`` (any run of
characters); everything else matches literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from a402.evm.address import address_bytes, address_key, is_address
from a402.mandate.document import Confirmation, Mandate, SignedMandate, normalize_origin

MANDATE_REVOKED: Final = "mandate_revoked"
MANDATE_WRONG_AGENT: Final = "mandate_wrong_agent"
MANDATE_NOT_YET_VALID: Final = "mandate_not_yet_valid"
MANDATE_EXPIRED: Final = "mandate_expired"
MANDATE_SCHEME_NOT_ALLOWED: Final = "mandate_scheme_not_allowed"
MANDATE_NETWORK_NOT_ALLOWED: Final = "mandate_network_not_allowed"
MANDATE_ASSET_NOT_ALLOWED: Final = "mandate_asset_not_allowed"
MANDATE_PAYEE_NOT_ALLOWED: Final = "mandate_payee_not_allowed"
MANDATE_ORIGIN_NOT_ALLOWED: Final = "mandate_origin_not_allowed"
MANDATE_URL_NOT_ALLOWED: Final = "mandate_url_not_allowed"
MANDATE_SKILL_NOT_ALLOWED: Final = "mandate_skill_not_allowed"
MANDATE_CAP_EXCEEDED: Final = "mandate_cap_exceeded"
MANDATE_BUDGET_EXHAUSTED: Final = "mandate_budget_exhausted"
MANDATE_PERIOD_BUDGET_EXHAUSTED: Final = "mandate_period_budget_exhausted"
MANDATE_NEEDS_CONFIRMATION: Final = "mandate_needs_confirmation"
MANDATE_BAD_CONFIRMATION: Final = "mandate_bad_confirmation"
MANDATE_INVALID_PAYMENT: Final = "mandate_invalid_payment"

#: Every reason :func:`decide` can give, in the order it checks them.
REASONS: Final = (
    MANDATE_INVALID_PAYMENT, MANDATE_REVOKED, MANDATE_WRONG_AGENT, MANDATE_NOT_YET_VALID,
    MANDATE_EXPIRED, MANDATE_SCHEME_NOT_ALLOWED, MANDATE_NETWORK_NOT_ALLOWED,
    MANDATE_ASSET_NOT_ALLOWED, MANDATE_PAYEE_NOT_ALLOWED, MANDATE_ORIGIN_NOT_ALLOWED,
    MANDATE_URL_NOT_ALLOWED, MANDATE_SKILL_NOT_ALLOWED, MANDATE_CAP_EXCEEDED,
    MANDATE_BUDGET_EXHAUSTED, MANDATE_PERIOD_BUDGET_EXHAUSTED, MANDATE_NEEDS_CONFIRMATION,
    MANDATE_BAD_CONFIRMATION,
)


@dataclass(frozen=True)
class ProposedPayment:
    """What the agent is about to sign. ``agent`` is the key that would sign it;
    ``url`` is the paid resource (HTTP), ``skill`` the A2A skill (None for HTTP)."""

    agent: str
    payee: str
    network: str
    asset: str
    scheme: str
    amount: int
    url: str | None = None
    skill: str | None = None

    @property
    def resource(self) -> str:
        """What a :class:`Confirmation` names: the skill for A2A, else the URL."""
        return self.skill if self.skill is not None else (self.url or "")


@dataclass(frozen=True)
class Spent:
    """Reserved so far under one mandate: in total, and in the period of ``now``."""

    total: int = 0
    period: int = 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str | None = None
    detail: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED: Final = Decision(True)


class MandateRefused(Exception):
    """The mandate does not allow this payment; nothing was reserved or signed.
    ``reason`` is one of the ``MANDATE_*`` codes."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @classmethod
    def of(cls, decision: Decision) -> MandateRefused:
        assert decision.reason is not None
        return cls(decision.reason, decision.detail)


def _no(reason: str, detail: str) -> Decision:
    return Decision(False, reason, detail)


def period_index(mandate: Mandate, now: int) -> int:
    """Which period ``now`` falls in (periods of ``mandate.period`` s from ``valid_after``)."""
    if mandate.period == 0 or now < mandate.valid_after:
        return 0
    return (now - mandate.valid_after) // mandate.period


def normalize_url(url: str) -> tuple[str, str] | None:
    """``(origin, url)`` as the mandate compares them, or None for a URL it cannot read."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    origin = normalize_origin(f"{parts.scheme}://{host}" + (f":{port}" if port else ""))
    rest = parts.path or "/"
    if parts.query:
        rest += "?" + parts.query
    return origin, origin + rest


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


def url_matches(pattern: str, url: str) -> bool:
    """``*`` matches any run of characters; the rest literally; the whole URL must match."""
    return _pattern(pattern).fullmatch(url) is not None


def _confirmation_problem(signed: SignedMandate, payment: ProposedPayment,
                          confirmation: Confirmation, now: int) -> str | None:
    if confirmation.mandate != signed.hash:
        return "it confirms another mandate"
    if confirmation.signer(signed.domain) != address_bytes(signed.mandate.owner):
        return "it is not signed by the mandate's owner"
    if confirmation.valid_before <= now:
        return "it has expired"
    terms = (
        is_address(confirmation.payee)
        and address_key(confirmation.payee) == address_key(payment.payee),
        confirmation.network == payment.network,
        is_address(confirmation.asset)
        and address_key(confirmation.asset) == address_key(payment.asset),
        confirmation.scheme == payment.scheme,
        confirmation.amount == payment.amount,
        confirmation.resource == payment.resource,
    )
    if not all(terms):
        return "its terms differ from this payment's"
    return None


def decide(
    signed: SignedMandate,
    payment: ProposedPayment,
    spent: Spent,
    *,
    now: int,
    revoked: bool = False,
    confirmation: Confirmation | None = None,
) -> Decision:
    """Allowed, or the first limit the payment breaks (see the module doc).

    ``revoked`` is what the registry said; ``confirmation`` the owner's approval
    of this payment if it is above ``confirm_above`` (its nonce's single use is
    the spend store's to enforce).
    """
    m = signed.mandate
    amount = payment.amount
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return _no(MANDATE_INVALID_PAYMENT, f"amount {amount!r:.40} is not atomic units")
    if not (is_address(payment.payee) and is_address(payment.asset)
            and is_address(payment.agent)):
        return _no(MANDATE_INVALID_PAYMENT, "payee, asset and agent must be addresses")
    if revoked:
        return _no(MANDATE_REVOKED, "the owner revoked this mandate on-chain")
    if address_key(payment.agent) != address_key(m.agent):
        return _no(MANDATE_WRONG_AGENT, f"the mandate is for {m.agent}, not {payment.agent}")
    if now < m.valid_after:
        return _no(MANDATE_NOT_YET_VALID, f"valid from {m.valid_after}, now {now}")
    if now >= m.valid_before:
        return _no(MANDATE_EXPIRED, f"valid until {m.valid_before}, now {now}")
    if payment.scheme not in m.schemes:
        return _no(MANDATE_SCHEME_NOT_ALLOWED, f"{payment.scheme!r:.40} not in {list(m.schemes)}")
    if payment.network not in m.networks:
        return _no(MANDATE_NETWORK_NOT_ALLOWED,
                   f"{payment.network!r:.60} not in {list(m.networks)}")
    if address_key(payment.asset) not in {address_key(a) for a in m.assets}:
        return _no(MANDATE_ASSET_NOT_ALLOWED, f"{payment.asset} not in {list(m.assets)}")
    if m.payees and address_key(payment.payee) not in {address_key(p) for p in m.payees}:
        return _no(MANDATE_PAYEE_NOT_ALLOWED, f"{payment.payee} not in the allowed payees")
    if m.origins or m.url_patterns:
        normal = normalize_url(payment.url) if payment.url is not None else None
        if normal is None:
            return _no(MANDATE_URL_NOT_ALLOWED, "the mandate limits URLs and this payment "
                       "names no readable http(s) URL")
        origin, url = normal
        if m.origins and origin not in m.origins:
            return _no(MANDATE_ORIGIN_NOT_ALLOWED, f"{origin!r:.80} not in {list(m.origins)}")
        if m.url_patterns and not any(url_matches(p, url) for p in m.url_patterns):
            return _no(MANDATE_URL_NOT_ALLOWED, f"{url!r:.120} matches no allowed pattern")
    if m.skills and payment.skill not in m.skills:
        return _no(MANDATE_SKILL_NOT_ALLOWED,
                   f"skill {payment.skill!r:.60} not in {list(m.skills)}")
    if amount > m.max_per_payment:
        return _no(MANDATE_CAP_EXCEEDED,
                   f"{amount} asked, the mandate allows {m.max_per_payment} per payment")
    if spent.total + amount > m.budget:
        return _no(MANDATE_BUDGET_EXHAUSTED,
                   f"{amount} asked, {max(m.budget - spent.total, 0)} of {m.budget} left")
    if m.period and spent.period + amount > m.period_budget:
        return _no(MANDATE_PERIOD_BUDGET_EXHAUSTED,
                   f"{amount} asked, {max(m.period_budget - spent.period, 0)} of "
                   f"{m.period_budget} left this period")
    if m.confirm_above and amount > m.confirm_above:
        if confirmation is None:
            return _no(MANDATE_NEEDS_CONFIRMATION,
                       f"{amount} is above {m.confirm_above}: the owner must confirm it")
        problem = _confirmation_problem(signed, payment, confirmation, now)
        if problem is not None:
            return _no(MANDATE_BAD_CONFIRMATION, f"the owner's confirmation is refused: "
                       f"{problem}")
    return ALLOWED
