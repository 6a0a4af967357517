"""Durable spend: reserve before signing, release only unsigned, no overshoot, restarts keep it.

The headline: 200 payers at once against a budget that admits 150 → exactly 150
signed, on SQLite and on a real PostgreSQL, with the store restarted halfway.
"""

from __future__ import annotations

import os
import threading

import pytest

from a402.crypto.authorization import EcdsaSigner
from a402.mandate import Confirmation, ProposedPayment
from a402.mandate.guard import MandateGuard
from a402.mandate.spend import MandateRefused, ReleaseRefused, SpendStore
from tests.mandate.helpers import DOMAIN, NETWORK, PAYEE, USDC, Keys, signed

PRICE = 1_000


def _payment(keys: Keys, amount: int = PRICE) -> ProposedPayment:
    return ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK, asset=USDC,
                           scheme="exact", amount=amount, url="https://api.example.com/x")


def _guard(keys: Keys, store: SpendStore, s, **kw) -> MandateGuard:
    return MandateGuard(s, agent=keys.agent.address, store=store, revocation=None, **kw)


def _pay_concurrently(guard: MandateGuard, keys: Keys, n: int) -> tuple[int, list[str]]:
    """``n`` threads each reserve, sign (for real, with the agent's key) and mark signed."""
    agent = EcdsaSigner(bytes(keys.agent.key))
    paid, refusals, lock = [0], [], threading.Lock()
    start = threading.Barrier(n)

    def one() -> None:
        start.wait()
        try:
            reservation = guard.reserve(_payment(keys))
        except MandateRefused as e:
            with lock:
                refusals.append(e.reason)
            return
        agent.sign_digest(os.urandom(32))  # the payment's signature
        guard.signed(reservation, "0x" + os.urandom(32).hex())
        with lock:
            paid[0] += 1

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return paid[0], refusals


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spend.db'}"
    return request.getfixturevalue("postgres_url")


def test_200_concurrent_payments_against_a_budget_for_150_pay_exactly_150_across_a_restart(
    store_url: str,
) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=150 * PRICE)
    first = SpendStore(store_url)
    paid_before, refused_before = _pay_concurrently(_guard(keys, first, s), keys, 100)
    assert (paid_before, refused_before) == (100, [])
    first.close()  # the agent restarts halfway
    second = SpendStore(store_url)
    assert second.spent(s).total == 100 * PRICE
    paid_after, refused_after = _pay_concurrently(_guard(keys, second, s), keys, 100)
    assert paid_before + paid_after == 150
    assert refused_after == ["mandate_budget_exhausted"] * 50
    assert second.spent(s).total == 150 * PRICE
    assert second.count(s, "signed") == 150 and second.count(s, "reserved") == 0
    second.close()


def test_a_crash_between_reserve_and_sign_keeps_the_amount_spent_after_restart(
    store_url: str,
) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=3 * PRICE)
    first = SpendStore(store_url)
    guard = _guard(keys, first, s)
    guard.reserve(_payment(keys))  # ... and the process dies before signing or releasing
    first.close()
    second = SpendStore(store_url)
    guard = _guard(keys, second, s)
    assert second.spent(s).total == PRICE
    guard.reserve(_payment(keys))
    guard.reserve(_payment(keys))
    with pytest.raises(MandateRefused) as e:
        guard.reserve(_payment(keys))
    assert e.value.reason == "mandate_budget_exhausted"
    second.close()


def test_only_an_unsigned_reservation_is_released(tmp_path) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=2 * PRICE)
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = _guard(keys, store, s)
    unsigned = guard.reserve(_payment(keys))
    paid = guard.reserve(_payment(keys))
    guard.signed(paid, "nonce")
    assert guard.release(unsigned) is True
    assert guard.release(unsigned) is False  # twice: no inflation
    with pytest.raises(ReleaseRefused):
        guard.release(paid)
    assert store.spent(s).total == PRICE


def test_a_refusal_changes_nothing(tmp_path) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=10 * PRICE)
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = _guard(keys, store, s)
    with pytest.raises(MandateRefused) as e:
        guard.reserve(_payment(keys, 100 * PRICE))
    assert e.value.reason == "mandate_cap_exceeded"
    assert store.spent(s).total == 0 and store.count(s, "reserved") == 0


def test_the_period_budget_resets_in_the_next_period_and_the_total_does_not(tmp_path) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=3 * PRICE, period=60, period_budget=2 * PRICE)
    now = [float(s.mandate.valid_after)]
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = _guard(keys, store, s, clock=lambda: now[0])
    guard.reserve(_payment(keys))
    guard.reserve(_payment(keys))
    with pytest.raises(MandateRefused) as e:
        guard.reserve(_payment(keys))
    assert e.value.reason == "mandate_period_budget_exhausted"
    now[0] += 60
    guard.reserve(_payment(keys))
    with pytest.raises(MandateRefused) as e:
        guard.reserve(_payment(keys))
    assert e.value.reason == "mandate_budget_exhausted"


def test_an_owners_confirmation_pays_once(tmp_path) -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=10 * PRICE, budget=100 * PRICE, confirm_above=PRICE)
    owner = keys.owner_signer
    asked: list[ProposedPayment] = []

    def confirm(payment: ProposedPayment) -> Confirmation:
        asked.append(payment)
        c = Confirmation(s.hash, payment.payee, payment.network, payment.asset, payment.scheme,
                         payment.amount, payment.resource, b"\x01" * 32,
                         s.mandate.valid_before)
        object.__setattr__(c, "signature", owner.sign_digest(c.digest(DOMAIN)))
        return c

    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = _guard(keys, store, s, confirm=confirm)
    guard.reserve(_payment(keys, PRICE))  # at the threshold: not asked
    assert asked == []
    guard.reserve(_payment(keys, 5 * PRICE))
    assert len(asked) == 1
    with pytest.raises(MandateRefused) as e:  # the same confirmation (same nonce) again
        guard.reserve(_payment(keys, 5 * PRICE))
    assert e.value.reason == "mandate_confirmation_used"
    unconfirmed = _guard(keys, store, s)
    with pytest.raises(MandateRefused) as e:
        unconfirmed.reserve(_payment(keys, 5 * PRICE))
    assert e.value.reason == "mandate_needs_confirmation"
    assert store.spent(s).total == 6 * PRICE


def test_a_guard_for_another_agents_key_is_refused_at_once(tmp_path) -> None:
    keys = Keys()
    s = signed(keys)
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    with pytest.raises(MandateRefused) as e:
        MandateGuard(s, agent=Keys().agent.address, store=store, revocation=None)
    assert e.value.reason == "mandate_wrong_agent"


