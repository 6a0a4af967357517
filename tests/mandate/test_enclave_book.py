"""The vault enclave's mandate book (pure): reserve before EXEC, spent with σ_U, given back
only without it, sealed across a restart."""

from __future__ import annotations

import time

import pytest

from a402.mandate import MandateRefused, ProposedPayment
from a402.mandate.enclave import MAX_READ_AGE, MandateBook, RegistryRead
from tests.mandate.helpers import NETWORK, PAYEE, USDC, Keys, signed


def _pay(keys: Keys, amount: int) -> ProposedPayment:
    return ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK, asset=USDC,
                           scheme="a402", amount=amount, url="https://api.example/x")


def _check(book: MandateBook, keys: Keys, doc: dict | None, amount: int, key: str | None
           ) -> str | None:
    now = int(time.time())
    return book.check(agent=keys.agent.address, document=doc, confirmation=None,
                      payment=_pay(keys, amount), now=now, signed_at=now, key=key)


def test_a_budget_is_reserved_spent_and_given_back_only_without_a_signature() -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=400, budget=1_000)
    doc, now = s.to_json(), int(time.time())
    book = MandateBook()
    book.read(RegistryRead(s.hash, 10, now, False))
    assert _check(book, keys, doc, 400, "a") == s.hash_hex
    assert _check(book, keys, doc, 400, "b") == s.hash_hex
    with pytest.raises(MandateRefused, match="mandate_budget_exhausted"):
        _check(book, keys, doc, 400, "c")
    book.spent("a")
    book.release("a")  # delivered: forgotten, still spent
    book.release("b")  # expired without σ_U: given back
    assert book.spend[s.hash_hex].total == 400
    # Sealed and restored (a vault restart): the spend and the binding stay.
    again = MandateBook.from_json(book.to_json())
    again.read(RegistryRead(s.hash, 11, now, False))
    assert _check(again, keys, doc, 400, "d") == s.hash_hex
    with pytest.raises(MandateRefused, match="mandate_budget_exhausted"):
        _check(again, keys, doc, 400, "e")
    with pytest.raises(MandateRefused, match="mandate_required"):
        _check(again, keys, None, 1, "f")


def test_without_a_fresh_registry_read_or_after_a_revocation_nothing_is_reserved() -> None:
    keys = Keys()
    s = signed(keys)
    doc, now = s.to_json(), int(time.time())
    book = MandateBook()
    with pytest.raises(MandateRefused, match="mandate_revocation_unknown"):
        _check(book, keys, doc, 1, "a")
    book.read(RegistryRead(s.hash, 5, now - MAX_READ_AGE - 1, False))
    with pytest.raises(MandateRefused, match="mandate_revocation_unknown"):
        _check(book, keys, doc, 1, "a")
    book.read(RegistryRead(s.hash, 6, now, True))
    book.read(RegistryRead(s.hash, 7, now, False))  # a revocation is final
    with pytest.raises(MandateRefused, match="mandate_revoked"):
        _check(book, keys, doc, 1, "a")
    assert MandateBook.from_json(book.to_json()).reads[s.hash_hex][2] is True
    assert book.reserved == {}


def test_an_agent_never_bound_pays_as_before_and_a_bad_signature_is_refused() -> None:
    keys = Keys()
    book = MandateBook()
    assert _check(book, keys, None, 5, "a") is None
    doc = signed(keys).to_json()
    doc["mandate"]["budget"] = doc["mandate"]["budget"] * 10  # not what the owner signed
    with pytest.raises(MandateRefused, match="mandate_bad_signature"):
        _check(book, keys, doc, 5, "b")
    assert book.bound == {}


def test_a_retry_of_one_call_at_another_price_is_decided_again_not_added_twice() -> None:
    keys = Keys()
    s = signed(keys, max_per_payment=600, budget=1_000)
    doc, now = s.to_json(), int(time.time())
    book = MandateBook()
    book.read(RegistryRead(s.hash, 10, now, False))
    assert _check(book, keys, doc, 400, "a") == s.hash_hex
    assert _check(book, keys, doc, 400, "a") == s.hash_hex  # the same: counted once
    assert book.spend[s.hash_hex].total == 400
    assert _check(book, keys, doc, 600, "a") == s.hash_hex  # a fresh offer, dearer
    assert book.spend[s.hash_hex].total == 600
    assert _check(book, keys, doc, 400, "b") == s.hash_hex
    with pytest.raises(MandateRefused, match="mandate_budget_exhausted"):
        _check(book, keys, doc, 1, "c")
