"""The vault's store on SQLite and on PostgreSQL: balances never go negative or lose an
update under concurrency, deposits and withdrawals count once, nonces are single-use, and
the conservation terms add up through a channel's whole life."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from a402.vault import store as vault_store
from a402.vault.store import InsufficientBalance, VaultStore

from .helpers import fresh_schema


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[VaultStore]:
    if request.param == "postgres":
        url = fresh_schema(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path}/vault.db"
    store = VaultStore(url)
    yield store
    store.close()


def _client() -> str:
    return "0x" + secrets.token_hex(20)


def test_concurrent_credits_and_debits_lose_nothing(store: VaultStore) -> None:
    client = _client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.credit_deposit(f"t:{client}:{i}", client, 10, "transfer",
                                                     None), range(40)))
    assert store.balance(client) == 400

    def withdraw(i: int) -> bool:
        try:
            store.claim_withdrawal(f"{client}:{i}", client=client, recipient=client, amount=30)
        except InsufficientBalance:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(withdraw, range(20)))
    assert granted == 13 and store.balance(client) == 400 - 13 * 30  # never below zero
    assert store.totals(client).conserved


def test_deposits_withdrawals_and_nonces_count_once(store: VaultStore) -> None:
    client = _client()
    assert store.credit_deposit(f"t:{client}", client, 500, "transfer", "0x01")
    assert not store.credit_deposit(f"t:{client}", client, 500, "transfer", "0x01")
    first, record = store.claim_withdrawal(f"{client}:w", client=client, recipient=client,
                                           amount=200)
    again, _ = store.claim_withdrawal(f"{client}:w", client=client, recipient=client, amount=200)
    assert (first, again, store.balance(client)) == (True, False, 300)
    assert store.finish_withdrawal(record.key, ok=False, tx_hash=None)  # failed: refunded
    assert not store.finish_withdrawal(record.key, ok=True, tx_hash="0x02")  # once
    assert store.balance(client) == 500
    now = time.time()
    assert asyncio.run(store.remember_nonce(client, "n1", now=now, keep=120))
    assert not asyncio.run(store.remember_nonce(client, "n1", now=now, keep=120))
    assert asyncio.run(store.remember_nonce(_client(), "n1", now=now, keep=120))


def test_conservation_through_a_channel_life(store: VaultStore) -> None:
    client, cid = _client(), "0x" + secrets.token_hex(32)
    store.credit_deposit(f"t:{cid}", client, 1_000, "transfer", None)
    with pytest.raises(InsufficientBalance):
        _claim(store, client, "0x" + secrets.token_hex(32), deposit=5_000)
    _claim(store, client, cid, deposit=600)
    assert (store.balance(client), store.totals(client).in_channels) == (400, 600)
    assert store.open_channel(cid)
    asyncio.run(store.save_checkpoint(cid, {"status": "open", "version": 2, "free": "350",
                                            "provider_balance": "250"}, None, None))
    assert store.totals(client) == vault_store.Totals(1_000, 400, 350, 250, 0)
    assert store.settle_channel(cid, client_payout=350, provider_payout=250, tx_hash="0x03")
    assert not store.settle_channel(cid, client_payout=350, provider_payout=250, tx_hash="0x03")
    totals = store.totals(client)
    assert totals == vault_store.Totals(1_000, 750, 0, 250, 0) and totals.conserved

    failed = "0x" + secrets.token_hex(32)
    _claim(store, client, failed, deposit=700)
    assert store.fail_channel(failed) and not store.fail_channel(failed)
    assert store.balance(client) == 750


def test_a_call_moves_through_its_states_once(store: VaultStore) -> None:
    client, cid = _client(), "0x" + secrets.token_hex(32)
    key = f"{client}:call-1"
    created, row = asyncio.run(store.claim_request(_new_call(key, client, fingerprint="f")))
    assert created and row.state == vault_store.RECEIVED
    again, same = asyncio.run(store.claim_request(_new_call(key, client, fingerprint="g")))
    assert not again and same.fingerprint == "f"
    store.credit_deposit(f"t:{cid}", client, 1_000, "transfer", None)
    _claim(store, client, cid, deposit=1_000)
    asyncio.run(store.save_checkpoint(cid, {"version": 0, "locked": "10", "request_key": key},
                                      key, {"state": vault_store.LOCKED, "channel_id": cid,
                                            "amount": "10", "request_id": 0}))
    assert (store.request(key).state, store.channel(cid).request_key) == (vault_store.LOCKED, key)
    assert not store.restart_request(key, vault_store.RECEIVED)  # it is past RECEIVED
    done = dict(outcome="paid", reason=None, retryable=False, answer=b"sealed", amount="10",
                transaction="0x" + "ab" * 32)
    assert asyncio.run(store.finish_request(key, from_states=(vault_store.LOCKED,
                                                              vault_store.DELIVERED), **done))
    assert not asyncio.run(store.finish_request(key, from_states=(vault_store.LOCKED,),
                                                **done))  # once
    final = store.request(key)
    assert final is not None and (final.state, final.transaction, final.answer) == (
        vault_store.DONE, done["transaction"], b"sealed")


def _new_call(key: str, client: str, *, fingerprint: str = "f", nonce: str | None = None
              ) -> vault_store.Claim:
    return vault_store.Claim(key=key, client=client, fingerprint=fingerprint, url="http://p/x",
                   method="GET", nonce=nonce, nonce_keep=120.0)


def test_a_new_call_is_recorded_with_its_channels_locked_checkpoint(store: VaultStore) -> None:
    client, cid = _client(), "0x" + secrets.token_hex(32)
    store.credit_deposit(f"t:{cid}", client, 1_000, "transfer", None)
    _claim(store, client, cid, deposit=1_000)

    def lock(key: str, nonce: str, version: int) -> vault_store.Claim:
        claim = _new_call(f"{client}:{key}", client, nonce=nonce)
        asyncio.run(store.save_checkpoint(
            cid, {"version": version, "locked": "10", "request_key": claim.key}, claim.key,
            {"state": vault_store.LOCKED, "channel_id": cid, "amount": "10", "request_id": version},
            claim=claim))
        return claim

    first = lock("call-1", "n0000001", 1)
    row = store.request(first.key)
    assert first.recorded and row is not None and (row.state,
                                                   row.channel_id) == (vault_store.LOCKED, cid)
    assert store.channel(cid).version == 1
    # The same key again, or the same nonce for another call: the whole checkpoint is
    # refused, so the channel stays where the recorded call left it.
    for key, nonce in (("call-1", "n0000002"), ("call-2", "n0000001")):
        with pytest.raises(vault_store.ClaimTaken):
            lock(key, nonce, 2)
        assert store.channel(cid).version == 1
    assert store.request(f"{client}:call-2") is None
    # Neither refused checkpoint remembered its nonce.
    assert asyncio.run(store.remember_nonce(client, "n0000002", now=time.time(), keep=120))


def _claim(store: VaultStore, client: str, cid: str, *, deposit: int) -> vault_store.Channel:
    return store.claim_channel(
        debit=True, cid=cid, client=client, provider=_client(), endpoint="http://p",
        funding="pool", deposit=str(deposit), lock_timeout=30.0, terms={}, status="open",
        version=0, free=str(deposit), proposal=None)


def test_one_live_process_serves_a_vault(store: VaultStore) -> None:
    vault = _client()
    store.lock_for(vault)
    second = VaultStore(store.url)
    try:
        with pytest.raises(vault_store.VaultBusy):
            second.lock_for(vault)
        store.close()  # the holder goes away (a killed process releases it the same way)
        second.lock_for(vault)
    finally:
        second.close()


def test_a_claim_records_its_nonce_in_the_same_write(store: VaultStore) -> None:
    client = _client()

    def claim(key: str, nonce: str) -> tuple[bool, vault_store.Request]:
        return asyncio.run(store.claim_request(_new_call(f"{client}:{key}", client,
                                                         nonce=nonce)))

    assert claim("call-1", "n0000001")[0]
    with pytest.raises(vault_store.ReplayedNonce):  # the nonce again, even for another call
        claim("call-2", "n0000001")
    assert store.request(f"{client}:call-2") is None  # nothing of the refused claim stays
    again, first = claim("call-1", "n0000002")  # a retry of the call, freshly signed
    assert not again and first.key == f"{client}:call-1"
    with pytest.raises(vault_store.ReplayedNonce):  # the retry's nonce was remembered all the same
        claim("call-3", "n0000002")
    assert not asyncio.run(store.remember_nonce(client, "n0000002", now=time.time(), keep=120))


def test_meta_rows_of_a_vault_mode_write_land_together_with_their_nonces(
    store: VaultStore,
) -> None:
    """``put_metas`` (vault mode's ledger, journal and answer writes, plain SQL): rows
    upserted, a prefix deleted (only keys that start with it: ``_`` and ``%`` in a key are
    not wildcards), nonces recorded once, all in one transaction, durable on return; a
    write that fails stores nothing of itself."""
    client = _client()
    store.put_metas({"vault-mode/journal/0001": b"a", "vault-mode/journal/0002": b"b",
                     "vault-mode/journalX": b"keep", "vault_mode/journal/0001": b"keep",
                     "vault-mode/ledger": b"old"}, nonces=[(client, "n1", time.time())])
    assert store.nonce_seen(client, "n1") and not store.nonce_seen(client, "n2")
    assert [k for k, _ in store.get_metas("vault-mode/journal/")] == [
        "vault-mode/journal/0001", "vault-mode/journal/0002"]
    # compaction: the whole ledger replaces the row and the journal goes, in one write; a
    # nonce already recorded stays as it is, a new one is recorded
    store.put_metas({"vault-mode/ledger": b"new", "vault-mode/answer/x": b"answer"},
                    delete_prefix="vault-mode/journal/",
                    nonces=[(client, "n1", 0.0), (client, "n2", time.time())])
    assert store.get_metas("vault-mode/journal/") == []
    assert store.get_meta("vault-mode/journalX") == b"keep"
    assert store.get_meta("vault_mode/journal/0001") == b"keep"  # "_" is no wildcard
    assert store.get_meta("vault-mode/ledger") == b"new"
    assert store.get_meta("vault-mode/answer/x") == b"answer"
    assert store.nonce_seen(client, "n1") and store.nonce_seen(client, "n2")
    # a write one of whose rows the database refuses (a nonce with no time: NOT NULL)
    # stores nothing of itself: the ledger row keeps its value, no row or nonce is added
    unseen: Any = None
    with pytest.raises(IntegrityError):
        store.put_metas({"vault-mode/ledger": b"newer", "vault-mode/answer/y": b"y"},
                        delete_prefix="vault-mode/", nonces=[(client, "n3", unseen)])
    assert store.get_meta("vault-mode/ledger") == b"new"
    assert store.get_meta("vault-mode/answer/x") == b"answer"
    assert store.get_meta("vault-mode/answer/y") is None
    assert not store.nonce_seen(client, "n3")


def test_old_nonces_are_forgotten_in_the_write_that_remembers_a_new_one(
    store: VaultStore,
) -> None:
    """Now and then (one write in 64, by the clock) the write that remembers a nonce also
    forgets those older than ``keep``: one transaction, no write of its own. A nonce still
    inside ``keep`` stays refused; a write refused as a replay forgets nothing."""
    client = _client()
    prunes = 1_700_000_000.0  # int(now * 1000) % 64 == 0: this write prunes
    quiet = prunes + 0.001  # ... and this one does not
    assert int(prunes * 1000) % 64 == 0 and int(quiet * 1000) % 64 != 0
    assert asyncio.run(store.remember_nonce(client, "old", now=prunes - 500, keep=120))
    assert asyncio.run(store.remember_nonce(client, "recent", now=prunes - 60, keep=120))
    assert asyncio.run(store.remember_nonce(client, "n1", now=quiet, keep=120))
    assert store.nonce_seen(client, "old")  # not pruned yet
    # A replayed nonce in a pruning write: refused, and the whole write undone.
    assert not asyncio.run(store.remember_nonce(client, "n1", now=prunes, keep=120))
    assert store.nonce_seen(client, "old")
    assert asyncio.run(store.remember_nonce(client, "n2", now=prunes, keep=120))
    assert not store.nonce_seen(client, "old")
    assert store.nonce_seen(client, "recent") and store.nonce_seen(client, "n2")
    assert not asyncio.run(store.remember_nonce(client, "recent", now=prunes, keep=120))


def test_a_prefix_matches_keys_that_start_with_it_in_the_same_case_only(
    store: VaultStore,
) -> None:
    """SQLite's LIKE ignores ASCII case: compacting the journal (``delete_prefix``) must not
    delete, nor a restore's journal read (``get_metas``) replay, a row whose key starts with
    the prefix in another case. Keys match byte for byte on both databases."""
    store.put_metas({"vault-mode/journal/0001": b"a", "Vault-Mode/Journal/0002": b"other",
                     "VAULT-MODE/JOURNAL/0003": b"other"})
    assert [k for k, _ in store.get_metas("vault-mode/journal/")] == ["vault-mode/journal/0001"]
    store.put_metas({"vault-mode/ledger": b"whole"}, delete_prefix="vault-mode/journal/")
    assert store.get_metas("vault-mode/journal/") == []
    assert store.get_meta("Vault-Mode/Journal/0002") == b"other"
    assert store.get_meta("VAULT-MODE/JOURNAL/0003") == b"other"
    assert store.get_meta("vault-mode/ledger") == b"whole"
