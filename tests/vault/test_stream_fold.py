"""The held DELIVERED of a stream group (:mod:`a402.vault.call`, step 5) when the next
group's checkpoint fails before its write: the ledger write the step needs fails (the
database went away while a mandate's budget, or any change of the enclave's ledger, was
to be stored with it).

The held checkpoint was taken for that write and is not durable: its ACK must never leave
(the provider would take the group as final while the vault's record says AUTHORIZED),
and the machine that ran ahead (LOCKED for the failed group) must not be resumed under the
key the database still names. Real vault, provider enclave, anvil; balances asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest

from a402.asc import Status
from a402.background import serve_in_thread
from a402.client.vault import VaultClient, VaultResult
from a402.client.vault_stream import paid_stream
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import Vault, client_of, running_vault, wait_for
from .test_paid_stream import GROUP, PER_GROUP, ROUTES, Upstream, llm_service

pytestmark = pytest.mark.anvil


def _first_group(world: World, vault: Vault, site: str
                 ) -> tuple[VaultClient, Any, Any, str, Any]:
    """A funded client's stream with its first group received: ``(client, stream, first
    group, the group's record key, the one channel's row)``."""
    account, client = client_of(world, vault, funds=20_000, deposit=20_000)
    stream = paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                         max_price=PER_GROUP)
    first = next(stream)
    key = f"{account.address.lower()}:{first.result.idempotency_key}"
    [row] = vault.store.channels()
    return client, stream, first, key, row


def test_a_held_group_whose_next_checkpoint_fails_before_its_write_is_never_acked_unrecorded(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream), ack_timeout=8.0)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        client, stream, first, key, row = _first_group(world, vault, site)
        assert first.amount == PER_GROUP and not first.last
        slot = provider.runtime.channels.slot(bytes.fromhex(row.cid[2:]))
        assert slot is not None and slot.channel.status is Status.PENDING  # ACK not out yet

        # The next group's step changes the enclave's ledger, and storing it fails once.
        service = vault.service
        with service.vault._code.lock:
            service.vault._code._changed()
        ledger_store = service.ledger.store
        real = ledger_store.put_ledger
        failed: list[bool] = []

        def put_ledger(*args: Any, **kwargs: Any) -> bool:
            if not failed:
                failed.append(True)
                raise ConnectionError("the database went away")
            return real(*args, **kwargs)

        monkeypatch.setattr(ledger_store, "put_ledger", put_ledger)
        with contextlib.suppress(Exception):  # the second group was not sold
            next(stream)
        assert failed
        stream.close()

        # Whenever the provider holds the first group's ACK, the vault recorded it paid,
        # with the result the client received (never the failed group's).
        def acked() -> bool:
            if slot.channel.status is not Status.OPEN or slot.channel.state.version < 1:
                return False
            record = vault.store.request(key)
            assert record is not None and record.state == vault_store.DONE, (
                f"the provider has the ACK; the vault's record is {record and record.state}")
            return True

        wait_for(acked, timeout=30.0, what="the first group's ACK")
        record = vault.store.request(key)
        assert record is not None and (record.outcome, record.amount) == (
            api.PAID, str(PER_GROUP))
        status, body = client.outcome(first.result.idempotency_key)
        assert status == 200 and body["outcome"] == api.PAID
        again = VaultResult.from_json(body)
        assert again.content == first.content
        # the provider was paid on this channel for the one group the client received
        assert slot.channel.state.provider_balance == PER_GROUP
        assert client.account_info()["paid"] == str(PER_GROUP)
        client.close()


def test_a_provider_claiming_a_held_group_on_chain_leaves_it_recorded_paid_not_aborted(
    world: World,
) -> None:
    """The provider may claim a revealed payment on-chain at once (before its ACK is due):
    the vault's watchtower then settles the channel while the group's DELIVERED is still
    held. The group was paid (by the claim) and received: its record must say so, never
    "aborted, nothing was paid"; the chain pays the provider exactly that group."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream), ack_timeout=60.0)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        client, stream, first, key, row = _first_group(world, vault, site)
        assert first.amount == PER_GROUP and not first.last
        cid = bytes.fromhex(row.cid[2:])
        runtime = provider.runtime
        slot = runtime.channels.slot(cid)
        assert slot is not None and slot.channel.status is Status.PENDING  # ACK not out yet
        before = world.balance(provider.address)
        world.manager.force_close(runtime.operator, slot.channel.terms,
                                  runtime.onchain.provider_enclave.claim(cid))

        settled = wait_for(lambda: (r := vault.store.channel(row.cid)) is not None
                           and r.phase == vault_store.SETTLED and r, what="the settlement")
        record = vault.store.request(key)
        assert record is not None and (record.state, record.outcome, record.amount) == (
            vault_store.DONE, api.PAID, str(PER_GROUP))
        status, body = client.outcome(first.result.idempotency_key)
        assert status == 200 and VaultResult.from_json(body).content == first.content
        assert settled.provider_payout == str(PER_GROUP)
        assert world.balance(provider.address) - before == PER_GROUP
        assert client.account_info()["paid"] == str(PER_GROUP)
        stream.close()
        client.close()


def test_a_next_group_queued_behind_a_held_write_that_fails_is_not_written_over_it(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of the client's records writes the held DELIVERED on its own
    (``write_held``), and that write fails (the database went away for one transaction),
    while the next group's LOCKED, made from the machine that had the group delivered,
    waits for the channel's write lock. That LOCKED must not be written afterwards: its
    snapshot has the group credited while the group's record was not written (it would
    stay AUTHORIZED for good, the channel's row naming the next request). The machine
    restarts from AUTHORIZED instead, and the group is recorded paid, once."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream), ack_timeout=60.0)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        client, stream, first, key, row = _first_group(world, vault, site)
        cid = bytes.fromhex(row.cid[2:])
        channels = vault.service.channels
        store = channels.store
        real = store.save_checkpoint
        failed: list[bool] = []

        async def save_checkpoint(*args: Any, **kwargs: Any) -> None:
            if not failed:  # the held DELIVERED, on its own: once the next group is LOCKED
                failed.append(True)
                async with asyncio.timeout(30):
                    while (m := channels.live.get(cid)) is None or m.status is not Status.LOCKED:
                        await asyncio.sleep(0.02)
                raise ConnectionError("the database went away")
            await real(*args, **kwargs)

        monkeypatch.setattr(store, "save_checkpoint", save_checkpoint)
        reader = threading.Thread(target=client.account_info)  # writes what is held
        reader.start()
        wait_for(lambda: failed, what="the held write")
        with contextlib.suppress(Exception):  # the second group: not sold, or sold
            next(stream)
        reader.join(timeout=60)
        stream.close()

        record = wait_for(lambda: (r := vault.store.request(key)) is not None
                          and r.state == vault_store.DONE and r, what="the first group's record")
        assert (record.outcome, record.amount) == (api.PAID, str(PER_GROUP))
        status, body = client.outcome(first.result.idempotency_key)
        assert status == 200 and VaultResult.from_json(body).content == first.content
        slot = provider.runtime.channels.slot(cid)
        assert slot is not None
        paid = int(client.account_info()["paid"])
        wait_for(lambda: slot.channel.status is Status.OPEN, what="the ACKs")
        assert slot.channel.state.provider_balance == paid
        client.close()


def test_a_read_of_the_records_waits_for_a_held_group_another_read_is_writing(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two reads of the client's account while a stream's group is held (its DELIVERED
    not written yet): the first writes it (``write_held``) and that write is slow. The
    second finds nothing held any more, but the group is not recorded either: it must
    wait for the write under way, not report the account without the group (it read
    ``paid`` one group short, once in a loaded run)."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream), ack_timeout=60.0)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        client, stream, _, _, row = _first_group(world, vault, site)
        cid = bytes.fromhex(row.cid[2:])
        channels = vault.service.channels
        store = channels.store
        real = store.save_checkpoint
        writing, release = threading.Event(), threading.Event()

        async def save_checkpoint(*args: Any, **kwargs: Any) -> None:
            if not writing.is_set():  # the held DELIVERED, written by the first read
                writing.set()
                async with asyncio.timeout(60):
                    while not release.is_set():
                        await asyncio.sleep(0.02)
            await real(*args, **kwargs)

        monkeypatch.setattr(store, "save_checkpoint", save_checkpoint)
        seen: dict[str, str] = {}
        first_read = threading.Thread(target=client.account_info)
        first_read.start()
        wait_for(writing.is_set, what="the held write under way")
        second_read = threading.Thread(
            target=lambda: seen.update(paid=client.account_info()["paid"]))
        second_read.start()
        # The second read either waits for the channel's write (a second writer of it)
        # or has answered already.
        wait_for(lambda: not second_read.is_alive() or channels._writers.get(cid, 0) >= 2,
                 what="the second read")
        release.set()
        first_read.join(timeout=60)
        second_read.join(timeout=60)
        assert seen["paid"] == str(PER_GROUP)
        stream.close()
        client.close()
