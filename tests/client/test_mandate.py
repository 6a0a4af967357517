"""A mandate-bound client on anvil: it pays inside the owner's mandate and refuses,
before signing, everything outside it; balances on the chain say what moved.
"""

from __future__ import annotations

import os
import time

import pytest
from eth_account.signers.local import LocalAccount

from a402.client import PaymentRefused, paying_client, payment_of
from a402.crypto.authorization import EcdsaSigner
from a402.mandate import Domain, Mandate, SignedMandate, sign_mandate
from a402.mandate.guard import MandateGuard
from a402.mandate.registry import MandateRegistry, RevocationCheck
from a402.mandate.spend import SpendStore
from tests.client.conftest import Stack

PRICE = 10_000  # 0.01 of a 6-decimal token
CAP = PRICE

pytestmark = pytest.mark.anvil


def _mandate(stack: Stack, owner: LocalAccount, agent: LocalAccount, **kw) -> SignedMandate:
    now = int(time.time())
    fields = dict(owner=owner.address, agent=agent.address, max_per_payment=CAP,
                  budget=10 * CAP, valid_after=now - 60, valid_before=now + 3600,
                  nonce=os.urandom(32), networks=(stack.manifest.network,),
                  assets=(stack.token,), payees=(stack.pay_to,))
    fields.update(kw)
    domain = Domain(stack.manifest.chain_id, stack.manifest.contracts["MandateRegistry"])
    return sign_mandate(Mandate(**fields), domain, EcdsaSigner(bytes(owner.key)).sign_digest)


def _guard(stack: Stack, signed: SignedMandate, agent: LocalAccount, tmp_path) -> MandateGuard:
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    return MandateGuard(signed, agent=agent.address, store=store,
                        revocation=RevocationCheck.for_mandate(stack.chain, signed))


def test_a_402_asking_100_times_the_mandates_cap_is_refused_before_anything_is_signed(
    stack: Stack, served, tmp_path,
) -> None:
    """The prompt injection: a provider (or whatever talked the agent into calling it)
    asks for 100× the per-payment cap. Nothing is signed, nothing moves, the budget
    is untouched, and the refusal says so with a machine-readable reason."""
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 1000)
    signed = _mandate(stack, owner, agent)
    guard = _guard(stack, signed, agent, tmp_path)
    server = stack.server(100 * CAP)
    url = served(server)
    payer_before, payee_before = stack.balance(agent.address), stack.balance(stack.pay_to)
    with paying_client(agent, mandate=guard) as http, pytest.raises(PaymentRefused) as e:
        http.get(f"{url}/paid")
    assert e.value.reason == "mandate_cap_exceeded"
    assert "nothing was signed, nothing was paid" in e.value.message
    assert [r.reason for r in e.value.rejections] == ["mandate_cap_exceeded"]
    assert http.auth.payments == []  # type: ignore[union-attr]
    assert server.payloads == [] and server.unpaid_requests == 1
    assert guard.store.spent(signed).total == 0
    assert guard.store.count(signed, "reserved") + guard.store.count(signed, "signed") == 0
    assert stack.balance(agent.address) == payer_before
    assert stack.balance(stack.pay_to) == payee_before


def test_inside_the_mandate_the_client_pays_and_the_spend_is_recorded(
    stack: Stack, served, tmp_path,
) -> None:
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent)
    guard = _guard(stack, signed, agent, tmp_path)
    url = served(stack.server(PRICE))
    payee_before = stack.balance(stack.pay_to)
    with paying_client(agent, mandate=guard) as http:
        response = http.get(f"{url}/paid")
    assert response.status_code == 200 and payment_of(response) is not None
    assert stack.balance(agent.address) == PRICE * 4
    assert stack.balance(stack.pay_to) - payee_before == PRICE
    assert guard.store.spent(signed).total == PRICE
    assert guard.store.count(signed, "signed") == 1


def test_a_payee_outside_the_allow_list_is_refused(stack: Stack, served, tmp_path) -> None:
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent, payees=(owner.address,))
    guard = _guard(stack, signed, agent, tmp_path)
    url = served(stack.server(PRICE))
    with paying_client(agent, mandate=guard) as http, pytest.raises(PaymentRefused) as e:
        http.get(f"{url}/paid")
    assert e.value.reason == "mandate_payee_not_allowed"
    assert stack.balance(agent.address) == PRICE * 5


def test_after_the_owner_revokes_the_next_payment_is_refused(stack: Stack, served,
                                                             tmp_path) -> None:
    owner = stack.chain.accounts[-1]  # pays the revocation's gas
    agent = stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent)
    guard = _guard(stack, signed, agent, tmp_path)
    url = served(stack.server(PRICE))
    with paying_client(agent, mandate=guard) as http:
        assert http.get(f"{url}/paid").status_code == 200
        MandateRegistry(stack.chain, signed.domain.registry).revoke(owner, signed.hash)
        with pytest.raises(PaymentRefused) as e:
            http.get(f"{url}/paid")
    assert e.value.reason == "mandate_revoked"
    assert stack.balance(agent.address) == PRICE * 4
    assert guard.store.spent(signed).total == PRICE


def test_an_expired_mandate_and_one_for_another_agent_are_refused(stack: Stack, served,
                                                                  tmp_path) -> None:
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    now = int(time.time())
    expired = _mandate(stack, owner, agent, valid_after=now - 7200, valid_before=now - 3600)
    url = served(stack.server(PRICE))
    with paying_client(agent, mandate=_guard(stack, expired, agent, tmp_path)) as http, \
            pytest.raises(PaymentRefused) as e:
        http.get(f"{url}/paid")
    assert e.value.reason == "mandate_expired"
    someone = stack.new_payer(0)
    for_someone = _mandate(stack, owner, someone)
    with pytest.raises(Exception) as wrong:
        MandateGuard(for_someone, agent=agent.address, store=SpendStore(
            f"sqlite:///{tmp_path / 'other.db'}"), revocation=None)
    assert getattr(wrong.value, "reason", None) == "mandate_wrong_agent"
    assert stack.balance(agent.address) == PRICE * 5


def test_a_client_without_a_cap_or_a_mandate_is_not_offered(stack: Stack) -> None:
    with pytest.raises(TypeError):
        paying_client(stack.new_payer(0))


def test_a_spend_store_that_fails_refuses_the_payment_and_signs_nothing(
    stack: Stack, served, tmp_path,
) -> None:
    from sqlalchemy import text

    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent)
    guard = _guard(stack, signed, agent, tmp_path)
    with guard.store.engine.begin() as conn:  # the database loses a table under the payer
        conn.execute(text("DROP TABLE a402_mandate_reservations"))
    server = stack.server(PRICE)
    url = served(server)
    with paying_client(agent, mandate=guard) as http, pytest.raises(PaymentRefused) as e:
        http.get(f"{url}/paid")
    assert e.value.reason == "mandate_spend_unavailable"
    # The store failed at the commit, after the payment was signed in memory: the
    # signature was discarded, never sent.
    assert "discarded unsent: nothing was paid" in e.value.message
    assert server.payloads == [] and stack.balance(agent.address) == PRICE * 5


def test_above_the_threshold_the_client_asks_the_owner_and_pays_only_with_their_signature(
    stack: Stack, served, tmp_path,
) -> None:
    from a402.mandate import Confirmation, ProposedPayment

    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent, confirm_above=PRICE // 2)
    asked: list[ProposedPayment] = []

    def owner_confirms(payment: ProposedPayment) -> Confirmation:
        asked.append(payment)
        c = Confirmation(signed.hash, payment.payee, payment.network, payment.asset,
                         payment.scheme, payment.amount, payment.resource, os.urandom(32),
                         int(time.time()) + 60)
        return Confirmation(**{**c.__dict__, "signature": EcdsaSigner(bytes(owner.key))
                               .sign_digest(c.digest(signed.domain))})

    url = served(stack.server(PRICE))
    unconfirmed = _guard(stack, signed, agent, tmp_path)
    with paying_client(agent, mandate=unconfirmed) as http, pytest.raises(PaymentRefused) as e:
        http.get(f"{url}/paid")
    assert e.value.reason == "mandate_needs_confirmation"
    assert stack.balance(agent.address) == PRICE * 5

    confirmed = MandateGuard(signed, agent=agent.address, store=unconfirmed.store,
                             revocation=unconfirmed.revocation, confirm=owner_confirms)
    with paying_client(agent, mandate=confirmed) as http:
        assert http.get(f"{url}/paid").status_code == 200
    assert [p.amount for p in asked] == [PRICE] and asked[0].resource == f"{url}/paid"
    assert stack.balance(agent.address) == PRICE * 4
