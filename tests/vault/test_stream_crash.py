"""A vault killed (SIGKILL) between two groups of a paid stream, restarted on its database.

A stream's group that is not its last is answered before its DELIVERED checkpoint is
written: that checkpoint is held, to be written with the next group's LOCKED in one
commit (:mod:`a402.vault.call`, step 5). Killed in that window, the database shows the
last group received AUTHORIZED (σ_U out, its result not recorded). The restarted vault
must get that group's result again (the provider, which has no ACK for it, answers the
re-sent AUTH from its record), record it paid once, acknowledge it, and settle the
channel to the unit: the client pays exactly the groups it received, the provider is
paid exactly those, and the ledger and the chain agree. Real vault process, provider
enclave, anvil.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from a402.asc import Status
from a402.background import serve_in_thread
from a402.client import vault_stream
from a402.client.vault import VaultResult
from a402.client.vault_stream import paid_stream
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World, fresh_account

from .crash import vault_process
from .helpers import assert_conserved, client_of, fresh_schema, wait_for
from .test_paid_stream import GROUP, PER_GROUP, ROUTES, Upstream, llm_service

pytestmark = pytest.mark.anvil

#: The vault holds a stream group's DELIVERED at most this long (its ACK's delay, with
#: the provider's Δ_ack of 60 s) unless a next group comes first.
HELD_AT_MOST = 5.0


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_vault_killed_between_stream_groups_records_the_last_group_paid_exactly_once(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest, backend: str,
) -> None:
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream), ack_timeout=60.0)
    provider.runtime.driver.executor.streams.idle = 1.0
    monkeypatch.setattr(vault_stream, "stop", lambda *a, **k: None)  # it dies with the vault
    db = fresh_schema(request.getfixturevalue("postgres_url")) if backend == "postgres" else None
    escrow = world.balance(world.manager.address)
    # A worker tick every 30 s: none writes the held group before the kill (the ACK timer's
    # 5 s is the only other writer); the restart's own recovery pass runs at once.
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path,
                          "--poll-interval", "30", db=db) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        stream = paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                             max_price=PER_GROUP)
        received = [next(stream) for _ in range(3)]
        answered = time.monotonic()
        vault.kill()
        killed_within = time.monotonic() - answered
        assert [g.amount for g in received] == [PER_GROUP] * 3
        assert not any(g.last for g in received)
        last_key = f"{account.address.lower()}:{received[-1].result.idempotency_key}"

        store = vault.store()
        [row] = store.channels()
        slot = provider.runtime.channels.slot(bytes.fromhex(row.cid[2:]))
        assert slot is not None and slot.channel.status is Status.PENDING  # no ACK left
        if killed_within < HELD_AT_MOST - 1:  # the held DELIVERED cannot have been written
            last = store.request(last_key)
            assert (row.checkpoint, row.status) == ("authorized", Status.PENDING.value)
            assert row.provider_balance == str(2 * PER_GROUP)  # group 3 not credited yet
            assert last is not None and last.state == vault_store.AUTHORIZED
        store.close()

        vault.start()  # its recovery pass re-sends AUTH: the same REVEAL, recorded once
        store = vault.store()
        last = wait_for(lambda: (r := store.request(last_key)) is not None
                        and r.state == vault_store.DONE and r, what="the last group recorded")
        assert (last.outcome, last.amount) == (api.PAID, str(PER_GROUP))
        status, body = client.outcome(received[-1].result.idempotency_key)
        again = VaultResult.from_json(body)
        assert status == 200 and again.outcome == api.PAID
        assert again.content == received[-1].content  # the result the client received
        # the same payment (the worker's record spells the provider's address in lower case)
        assert again.payment is not None and received[-1].result.payment is not None
        assert {**again.payment, "provider": again.payment["provider"].lower()} == {
            **received[-1].result.payment,
            "provider": received[-1].result.payment["provider"].lower()}
        wait_for(lambda: slot.channel.status is Status.OPEN, what="the group's ACK")
        assert slot.channel.state.provider_balance == 3 * PER_GROUP
        assert client.account_info()["paid"] == str(3 * PER_GROUP)

        before = world.balance(provider.address)
        assert client.close_channel(row.cid)["phase"] == vault_store.SETTLED
        settled = store.channel(row.cid)
        balance = client.account_info()["balance"]
        assert_conserved(world, store, vault.address, escrow)
        store.close()
        client.close()
    assert settled is not None and (settled.provider_payout, settled.version) == (
        str(3 * PER_GROUP), 3)
    assert world.balance(provider.address) - before == 3 * PER_GROUP
    assert balance == str(20_000 - 3 * PER_GROUP)
