"""A crash on either side of the moment a payout batch is signed: no request lost, none
paid twice (the payout queue leaves the store in the ledger's own transaction)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from .test_service import Harness, h

pytestmark = pytest.mark.anvil
__all__ = ["h"]


def test_a_vault_that_dies_before_its_signed_settlement_is_stored_pays_the_request_after_restart(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Account.create(), Account.create()
    for who in (alice, bob):
        h.deposit(who.address, 2_000)
    h.service.tick()
    h.service.withdraw(alice.address, 700)
    h.service.withdraw(bob.address, 300)

    def killed(*_: Any, **__: Any) -> None:
        raise OSError("the process died here")
    monkeypatch.setattr(h.service.store, "put_metas", killed)
    with pytest.raises(OSError):  # the batch was taken and signed in memory, never stored
        h.service.tick()
    monkeypatch.undo()
    again = h.start()
    assert again.balance(alice.address)["payoutRequested"] == "700"
    assert again.balance(bob.address)["payoutRequested"] == "300"
    assert [x.payees for x in again.tick()] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    assert again.tick() == [] and h.paid_to(alice.address) == 700


def test_a_vault_that_dies_after_storing_its_signed_settlement_lands_it_once_after_restart(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Account.create(), Account.create()
    for who in (alice, bob):
        h.deposit(who.address, 2_000)
    h.service.tick()
    h.service.withdraw(alice.address, 700)
    h.service.withdraw(bob.address, 300)

    def killed(*_: Any, **__: Any) -> None:
        raise OSError("the process died here")
    monkeypatch.setattr(h.service.contract, "settle", killed)
    with pytest.raises(OSError):  # signed and stored, not landed
        h.service.tick()
    monkeypatch.undo()
    assert h.paid_to(alice.address) == 0
    again = h.start()
    # out of the queue (the signed settlement pays it), not asked a second time
    assert again.balance(alice.address)["payoutRequested"] == "0"
    assert [x.payees for x in again.tick()] == [2]
    assert (h.paid_to(alice.address), h.paid_to(bob.address)) == (700, 300)
    assert again.tick() == [] and h.paid_to(alice.address) == 700
    assert again.balance(alice.address)["free"] == "1300"
