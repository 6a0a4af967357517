"""The decision function: every limit refuses with its own reason; nothing allows by default."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.crypto.authorization import EcdsaSigner
from a402.mandate import Confirmation, ProposedPayment, Spent, decide
from a402.mandate import policy as p
from tests.mandate.helpers import DOMAIN, NETWORK, PAYEE, USDC, Keys, signed

KEYS = Keys()
NOW = int(time.time())
WINDOW = {"valid_after": NOW - 60, "valid_before": NOW + 3600}
"""Every mandate here is valid around NOW, whenever its test runs (a long collection
must not make a mandate made later 'not yet valid' at NOW)."""
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def pay(**kw: object) -> ProposedPayment:
    fields: dict = dict(agent=KEYS.agent.address, payee=PAYEE, network=NETWORK, asset=USDC,
                        scheme="exact", amount=1_000, url="https://api.example.com/v1/search?q=1")
    fields.update(kw)
    return ProposedPayment(**fields)


BASE = signed(KEYS, **WINDOW, payees=(PAYEE,), origins=("https://api.example.com",),
              url_patterns=("https://api.example.com/v1/*",), period=3600, period_budget=50_000,
              confirm_above=8_000)


def test_a_payment_inside_every_limit_is_allowed() -> None:
    assert decide(BASE, pay(), Spent(), now=NOW) == p.ALLOWED


@pytest.mark.parametrize(("payment", "spent", "kw", "reason"), [
    (pay(amount=1_000_000), Spent(), {}, p.MANDATE_CAP_EXCEEDED),
    (pay(payee=OTHER), Spent(), {}, p.MANDATE_PAYEE_NOT_ALLOWED),
    (pay(agent=OTHER), Spent(), {}, p.MANDATE_WRONG_AGENT),
    (pay(), Spent(), {"revoked": True}, p.MANDATE_REVOKED),
    (pay(), Spent(), {"now": NOW + 7200}, p.MANDATE_EXPIRED),
    (pay(), Spent(), {"now": NOW - 7200}, p.MANDATE_NOT_YET_VALID),
    (pay(scheme="upto"), Spent(), {}, p.MANDATE_SCHEME_NOT_ALLOWED),
    (pay(network="eip155:1"), Spent(), {}, p.MANDATE_NETWORK_NOT_ALLOWED),
    (pay(asset=OTHER), Spent(), {}, p.MANDATE_ASSET_NOT_ALLOWED),
    (pay(url="https://evil.example/v1/x"), Spent(), {}, p.MANDATE_ORIGIN_NOT_ALLOWED),
    (pay(url="https://api.example.com@evil.example/v1/x"), Spent(), {},
     p.MANDATE_ORIGIN_NOT_ALLOWED),
    (pay(url="https://api.example.com/v2/x"), Spent(), {}, p.MANDATE_URL_NOT_ALLOWED),
    (pay(url=None), Spent(), {}, p.MANDATE_URL_NOT_ALLOWED),
    (pay(), Spent(total=999_500), {}, p.MANDATE_BUDGET_EXHAUSTED),
    (pay(), Spent(total=10, period=49_500), {}, p.MANDATE_PERIOD_BUDGET_EXHAUSTED),
    (pay(amount=9_000), Spent(), {}, p.MANDATE_NEEDS_CONFIRMATION),
    (pay(amount=-1), Spent(), {}, p.MANDATE_INVALID_PAYMENT),
])
def test_each_limit_refuses_with_its_reason(payment, spent, kw, reason) -> None:
    kw = {"now": NOW, **kw}
    decision = decide(BASE, payment, spent, **kw)
    assert not decision and decision.reason == reason, decision


def test_skills_limit_a2a_payments_and_refuse_plain_http_ones() -> None:
    s = signed(KEYS, **WINDOW, skills=("translate",))
    assert decide(s, pay(skill="translate"), Spent(), now=NOW)
    assert decide(s, pay(skill="mine-bitcoin"), Spent(), now=NOW).reason \
        == p.MANDATE_SKILL_NOT_ALLOWED
    assert decide(s, pay(), Spent(), now=NOW).reason == p.MANDATE_SKILL_NOT_ALLOWED


def _confirm(payment: ProposedPayment, signer: EcdsaSigner, **kw: object) -> Confirmation:
    c = Confirmation(BASE.hash, payment.payee, payment.network, payment.asset, payment.scheme,
                     payment.amount, payment.resource, os.urandom(32), NOW + 60)
    for k, v in kw.items():
        object.__setattr__(c, k, v)
    object.__setattr__(c, "signature", signer.sign_digest(c.digest(DOMAIN)))
    return c


def test_above_the_threshold_the_owners_confirmation_of_this_payment_allows_it() -> None:
    big = pay(amount=9_000)
    assert decide(BASE, big, Spent(), now=NOW, confirmation=_confirm(big, KEYS.owner_signer))


@pytest.mark.parametrize("what", ["stranger", "amount", "payee", "expired", "mandate"])
def test_a_confirmation_not_the_owners_or_for_other_terms_is_refused(what: str) -> None:
    big = pay(amount=9_000)
    signer = EcdsaSigner(os.urandom(32)) if what == "stranger" else KEYS.owner_signer
    kw: dict = {"amount": {"amount": 8_999}, "payee": {"payee": OTHER},
                "expired": {"valid_before": NOW}, "mandate": {"mandate": bytes(32)}}.get(what, {})
    decision = decide(BASE, big, Spent(), now=NOW, confirmation=_confirm(big, signer, **kw))
    assert decision.reason == p.MANDATE_BAD_CONFIRMATION


def test_url_patterns_have_one_wildcard_and_match_whole_urls() -> None:
    assert p.url_matches("https://a.example/v1/*", "https://a.example/v1/x?y=1")
    assert not p.url_matches("https://a.example/v1/*", "https://a.example/v10")
    assert not p.url_matches("https://a.example/v?", "https://a.example/v1")
    assert not p.url_matches("https://a.example/[v]", "https://a.example/v")
    assert p.normalize_url("HTTPS://User@A.Example:443/x") == ("https://a.example",
                                                               "https://a.example/x")


# ------------------------------------------------------------------ properties

amounts = st.integers(min_value=0, max_value=2_000_000)
PLAIN = signed(KEYS, **WINDOW, period=3600, period_budget=60_000, max_per_payment=20_000,
               budget=500_000)


@settings(max_examples=300, deadline=None)
@given(amount=amounts, total=amounts, period=amounts,
       now=st.integers(min_value=NOW - 10_000, max_value=NOW + 10_000),
       revoked=st.booleans(), payee=st.sampled_from([PAYEE, OTHER]),
       agent=st.sampled_from([KEYS.agent.address, OTHER]))
def test_allowed_means_every_signed_limit_holds(amount, total, period, now, revoked, payee,
                                                agent) -> None:
    m = PLAIN.mandate
    d = decide(PLAIN, pay(amount=amount, payee=payee, agent=agent), Spent(total, period),
               now=now, revoked=revoked)
    holds = (not revoked and agent == m.agent and m.valid_after <= now < m.valid_before
             and amount <= m.max_per_payment and total + amount <= m.budget
             and period + amount <= m.period_budget)
    assert bool(d) == holds
    assert d.allowed == (d.reason is None)
    assert d.reason is None or d.reason in p.REASONS


@settings(max_examples=200, deadline=None)
@given(amount=amounts, smaller=amounts, total=amounts, period=amounts)
def test_a_smaller_payment_is_allowed_whenever_a_larger_one_is(amount, smaller, total,
                                                                period) -> None:
    smaller = min(smaller, amount)
    if decide(PLAIN, pay(amount=amount), Spent(total, period), now=NOW):
        assert decide(PLAIN, pay(amount=smaller), Spent(total, period), now=NOW)


@settings(max_examples=100, deadline=None)
@given(amounts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=60))
def test_spending_what_decide_allows_never_passes_the_budget(amounts) -> None:
    spent = 0
    for amount in amounts:
        if decide(PLAIN, pay(amount=amount), Spent(spent, spent), now=NOW):
            spent += amount
    assert spent <= PLAIN.mandate.period_budget <= PLAIN.mandate.budget
