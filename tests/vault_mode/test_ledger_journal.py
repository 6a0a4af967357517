"""The sealed ledger journal (session 11): a paid call stores what it changed, not the ledger.

Every write used to store the whole sealed ledger (every account, statement, channel and
consumed call), so a paid call cost more the more the vault held. Now a write stores a
sealed journal entry of the items the calls since the last write touched; a settlement, a
deposit, a claim or an exit (and every :data:`~a402.vault.mode.JOURNAL_MAX` entries) writes
the ledger whole and drops the journal in the same transaction. A restart (or a standby)
restores the ledger row and replays the entries in order: the state it rebuilds is the one
acknowledged. On anvil, balances and statements compared with what was acknowledged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from a402.chain.node import Chain
from a402.tee import EnclaveError
from a402.vault import mode
from a402.vault.mode import JOURNAL_PREFIX, LEDGER_KEY, VaultModeService

from .accounts_setup import PRICE
from .helpers import balance
from .test_service import Harness

pytestmark = pytest.mark.anvil


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def _journal(service: VaultModeService) -> list[tuple[str, bytes]]:
    return service.store.get_metas(JOURNAL_PREFIX)


def _picture(service: VaultModeService, who: list[str]) -> dict[str, Any]:
    """What a participant and the operator can see, for comparison across a restart."""
    return {
        "balances": [service.balance(w) for w in who],
        "statements": [service.statement(w) for w in who],
        "totals": service.accounts.totals(),
        "channels": service.accounts.channels(),
        "version": service.accounts.ledger_version,
    }


def _many(h: Harness, n: int) -> list[Any]:
    """``n`` participants with a confirmed deposit each: a ledger worth writing."""
    crowd = [Account.create() for _ in range(n)]
    for who in crowd:
        h.deposit(who.address, 1_000)
    h.service.tick()
    return crowd


def test_a_paid_call_writes_a_small_sealed_journal_entry_and_a_restart_replays_it_exactly(
    h: Harness,
) -> None:
    crowd = _many(h, 40)
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()  # a settlement: written whole, no journal
    assert _journal(h.service) == []
    base = h.service.store.get_meta(LEDGER_KEY)
    assert base is not None
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    for i in range(3):
        h.pay(cid, side, client, f"call-{i}")
    entries = _journal(h.service)
    assert len(entries) >= 4  # the open and each paid call: one write each (or grouped)
    assert h.service.store.get_meta(LEDGER_KEY) == base  # the ledger row was not rewritten
    # proportional to what a call changed: far below the 40-account ledger
    assert max(len(blob) for _, blob in entries) < len(base) / 4
    # sealed: no participant's address, no balance in the clear
    for _, blob in entries:
        for who in (client.address, provider.address):
            assert who[2:].lower().encode() not in blob.lower()
        assert b"4000" not in blob and b'"free"' not in blob
    who = [client.address, provider.address, crowd[0].address]
    before = _picture(h.service, who)
    again = h.start()  # the ledger row, then the journal in order
    assert _picture(again, who) == before
    # the restored channel goes on: a fourth call on it, then a restart again
    h.service = again
    h.pay(cid, side, client, "call-3")
    assert again.balance(client.address)["locked"] == str(5 * PRICE - 4 * PRICE)
    third = h.start()
    assert _picture(third, who) == _picture(again, who)
    t = third.accounts.totals()
    assert t["free"] + t["locked"] + t["pending"] + t["unconfirmed"] == (
        balance(h.usdc, h.contract.address))


def test_the_journal_is_compacted_into_the_ledger_row_in_one_transaction(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mode, "JOURNAL_MAX", 3)
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    cid, side, _ = h.open(client, provider, 8 * PRICE)
    seen = []
    for i in range(6):
        h.pay(cid, side, client, f"call-{i}")
        seen.append(len(_journal(h.service)))
    assert max(seen) <= 3 and seen != sorted(seen)  # a whole write dropped the rows
    who = [client.address, provider.address]
    before = _picture(h.service, who)
    assert _picture(h.start(), who) == before
    assert h.service.balance(client.address)["locked"] == str(2 * PRICE)


def test_a_journal_with_an_entry_missing_or_moved_does_not_load(h: Harness) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    for i in range(2):
        h.pay(cid, side, client, f"call-{i}")
    entries = _journal(h.service)
    assert len(entries) >= 3
    # the host swaps two entries: neither follows what is restored before it
    (k1, b1), (k2, b2) = entries[0], entries[1]
    h.service.store.put_metas({k1: b2, k2: b1})
    with pytest.raises(EnclaveError, match="journal_gap"):
        h.start()
    h.service.store.put_metas({k1: b1, k2: b2})
    with h.service.store._tx() as s:  # the host deletes one in the middle
        from a402.vault.tables import MetaRow
        s.delete(s.get(MetaRow, k2))
    with pytest.raises(EnclaveError, match="journal_gap"):
        h.start()


def test_a_ledger_stored_before_the_journal_existed_loads_and_takes_entries_after_it(
    h: Harness,
) -> None:
    client = Account.create()
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    h.pay(cid, side, client, "call-0")
    who = [client.address, provider.address]
    before = _picture(h.service, who)
    # what the previous code stored: the whole ledger, with no export id, and no journal
    code = h.service.accounts._code
    record = json.loads(code._kernel.unseal("a402/vault-mode-ledger",
                                            h.service.accounts.export_ledger()))
    del record["id"]
    h.service.store.put_metas({LEDGER_KEY: code._kernel.seal(
        "a402/vault-mode-ledger", json.dumps(record).encode())}, delete_prefix=JOURNAL_PREFIX)
    old = h.start()
    assert _picture(old, who) | {"version": 0} == before | {"version": 0}
    h.service = old
    h.pay(cid, side, client, "call-1")  # a journal entry that follows the legacy row
    assert len(_journal(old)) >= 1
    again = h.start()
    assert _picture(again, who) == _picture(old, who)
    assert again.balance(client.address)["locked"] == str(3 * PRICE)


def test_a_pull_asked_and_authorized_is_journalled_and_a_restart_makes_and_credits_it(
    h: Harness,
) -> None:
    """Asking for a pull and handing in its authorization write journal entries, not the
    ledger (they used to make the next write whole: 51 ms and 1.9 MB per pull asked at 4,000
    accounts); a restart replays them and its settlements make the pull and credit it."""
    from .helpers import funded

    _many(h, 40)
    base = h.service.store.get_meta(LEDGER_KEY)
    assert base is not None and _journal(h.service) == []
    alice = funded(h.chain, h.usdc, 3_000, eth=0)
    asked = h.service.prepare_pull(alice.address, 3_000)
    pull = int(asked["pull"])
    h.service.authorize_pull(alice.address, pull, h.contract.sign_pull(
        alice, alice.address, 3_000, pull, int(asked["deadline"]), h.service.accounts.ledger))
    entries = _journal(h.service)
    assert len(entries) == 2 and h.service.store.get_meta(LEDGER_KEY) == base
    assert max(len(blob) for _, blob in entries) < len(base) / 4
    before = _picture(h.service, [alice.address])
    again = h.start()
    assert _picture(again, [alice.address]) == before
    assert again.accounts.pulling(alice.address) == (pull, 3_000) and again.accounts.pulls_due
    h.service = again
    again.tick()  # makes it
    assert h.contract.pulled(pull) and balance(h.usdc, alice.address) == 0
    again.tick()  # checks it: credited
    assert again.balance(alice.address)["free"] == "3000"
    assert balance(h.usdc, h.contract.address) == 40 * 1_000 + 3_000
