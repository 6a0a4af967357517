"""The vault killed (SIGKILL) in each state of a paid call and restarted on the same database.

Every scenario ends the same way: the call that was in flight is answered exactly once
with the right outcome, the provider's service ran once for it, the channel is usable
(or settled) afterwards, and the ledger and the chain agree to the unit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from a402.asc import Ack, Auth, Close, Exec, Status
from a402.asc.messages import Message
from a402.asc_manager import OnChainStatus
from a402.background import serve_in_thread
from a402.client.vault import VaultClient
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.faulty import WithholdingProvider
from tests.a402_exchange.helpers import World, fresh_account

from .crash import GatedProvider, OfflineProvider, VaultProcess, vault_process
from .helpers import assert_conserved, client_of, fresh_schema, wait_for

pytestmark = pytest.mark.anvil

PRICE = 1_000
DEPOSIT = 10 * PRICE  # the vault runs with --deposit-multiple 10


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


def _in_background(call: Callable[[], Any]) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def _crash_at(vault: VaultProcess, gate: type[GatedProvider], call: Callable[[], Any],
              reached: Callable[[vault_store.VaultStore], bool], *, answered: bool = False) -> None:
    """Run ``call``; when the provider holds the message and the vault's database shows the
    state under test, SIGKILL the vault and let the provider go on. Unless the call was
    ``answered`` before the held message, its caller loses the answer with the process."""
    future = _in_background(call)
    if answered:
        future.result(60)  # the held message comes after the caller has its answer
    assert gate.reached.wait(30), "the provider never saw the message"
    store = vault.store()
    try:
        wait_for(lambda: reached(store), what="the checkpoint under test")
    finally:
        store.close()
    vault.kill()
    gate.release.set()
    if not answered:
        with pytest.raises(httpx.HTTPError):
            future.result(30)


@pytest.mark.parametrize(("hold", "state"), [
    (Exec, vault_store.LOCKED),  # δ locked, EXEC out, no REPLY yet
    (Auth, vault_store.AUTHORIZED),  # σ_U out: PENDING
    # REVEAL checked, δ credited, the answer recorded and returned; the ACK, sent on its
    # own because no next request came, is held: the provider has no co-signed state yet.
    (Ack, vault_store.DONE),
], ids=["locked", "pending", "answered-unacked"])
def test_killed_mid_call_the_restarted_vault_answers_it_exactly_once(
    world: World, tmp_path: Path, hold: type[Message], state: str,
) -> None:
    gate = GatedProvider.gate(hold)
    provider = world.provider(runtime_cls=gate)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)  # the channel exists, n = 1
        gate.armed = True
        key = f"{account.address.lower()}:crash"
        _crash_at(vault, gate,
                  lambda: client.invoke(f"{site}/weather", max_price=PRICE,
                                        idempotency_key="crash"),
                  lambda store: (r := store.request(key)) is not None and r.state == state,
                  answered=state == vault_store.DONE)

        vault.start()
        again = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="crash")
        later = client.invoke(f"{site}/weather", max_price=PRICE)
        store = vault.store()
        [channel] = store.channels()
        slot = provider.runtime.channels.slot(bytes.fromhex(channel.cid[2:]))
        assert_conserved(world, store, vault.address, escrow)
        assert slot is not None
        # The last ACK goes out on its own once no next request came to carry it.
        wait_for(lambda: slot.channel.state.version == 3, what="the last ACK")
    assert (again.outcome, again.amount) == (api.PAID, PRICE)
    assert json.loads(again.content)["n"] == 2 and json.loads(later.content)["n"] == 3
    assert provider.calls["weather"] == 3  # the interrupted call's service ran once
    assert (channel.status, channel.version, channel.provider_balance) == (
        Status.OPEN.value, 3, str(3 * PRICE))


def test_killed_while_closing_the_restarted_vault_settles_the_channel(
    world: World, tmp_path: Path,
) -> None:
    gate = GatedProvider.gate(Close)
    provider = world.provider(runtime_cls=gate)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path) as vault:
        _, client = client_of(world, vault, funds=20_000, deposit=20_000)
        for _ in range(2):
            client.invoke(f"{site}/weather", max_price=PRICE)
        [row] = vault.store().channels()
        gate.armed = True
        _crash_at(vault, gate, lambda: client.close_channel(row.cid),
                  lambda store: store.channel(row.cid).phase == vault_store.CLOSING)

        vault.start()
        store = vault.store()
        settled = wait_for(lambda: (c := store.channel(row.cid)).phase == vault_store.SETTLED and c,
                           what="settlement")
        balance = client.account_info()["balance"]
        assert_conserved(world, store, vault.address, escrow)
    assert (settled.provider_payout, settled.client_payout) == (str(2 * PRICE),
                                                                str(DEPOSIT - 2 * PRICE))
    assert balance == str(20_000 - 2 * PRICE)
    assert world.balance(provider.address) == 2 * PRICE


def test_killed_before_create_asc_is_mined_the_channel_opens_once(
    world: World, tmp_path: Path,
) -> None:
    provider = world.provider()
    w3 = world.chain.w3
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path,
                          "--chain-timeout", "60") as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        try:
            future = _in_background(lambda: client.invoke(f"{site}/weather", max_price=PRICE,
                                                          idempotency_key="open"))
            store = vault.store()
            row = wait_for(lambda: next(iter(store.channels()), None), what="a channel")
            wait_for(lambda: store.tx(f"open:{row.cid}") is not None, what="createASC journaled")
            assert (store.channel(row.cid).phase, store.balance(account.address)) == (
                vault_store.OPENING, 20_000 - DEPOSIT)  # debited before the transaction was signed
            vault.kill()
            with pytest.raises(httpx.HTTPError):
                future.result(30)
        finally:
            w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

        vault.start()
        result = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="open")
        store = vault.store()
        channels = store.channels()
        assert_conserved(world, store, vault.address, escrow)
    assert result.outcome == api.PAID and json.loads(result.content)["n"] == 1
    assert [(c.phase, c.deposit) for c in channels] == [(vault_store.OPEN, str(DEPOSIT))]


def test_a_claim_made_while_the_vault_was_down_is_recovered_at_restart(
    world: World, tmp_path: Path,
) -> None:
    """PENDING when killed; the provider withholds t and claims on-chain meanwhile."""
    gate = GatedProvider.gate(Auth, WithholdingProvider)
    # Δ_ack long enough for the first request's ACK to arrive in time on a loaded machine.
    provider = world.provider(runtime_cls=gate, ack_timeout=5.0)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)
        gate.armed = True
        key = f"{account.address.lower()}:claimed"
        _crash_at(vault, gate,
                  lambda: client.invoke(f"{site}/weather", max_price=PRICE,
                                        idempotency_key="claimed"),
                  lambda store: (r := store.request(key)) is not None
                  and r.state == vault_store.AUTHORIZED)
        [row] = vault.store().channels()
        cid = bytes.fromhex(row.cid[2:])
        wait_for(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSED,
                 timeout=60, what="the provider's claim")

        vault.start()
        client = VaultClient(vault.url, account, trust_on_first_use=True)
        result = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="claimed")
        store = vault.store()
        settled = store.channel(row.cid)
        assert_conserved(world, store, vault.address, escrow)
    assert result.outcome == api.PAID and result.payment and result.payment["onChain"]
    assert json.loads(result.content)["n"] == 2
    assert settled is not None and (settled.phase, settled.provider_payout) == (
        vault_store.SETTLED, str(2 * PRICE))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_killed_between_answer_and_ack_the_restarted_vault_acks_then_pays_the_next_call(
    world: World, tmp_path: Path, request: pytest.FixtureRequest, backend: str,
) -> None:
    """The answer is recorded and returned; its ACK, waiting for a next EXEC to ride on, dies
    with the process. The restarted vault's recovery cannot reach the provider at first, so
    the ACK may still be missing when the next call comes: that call carries it (unless the
    recovery pass, trying again, delivered it first), and every call is paid once."""
    gate = type("OfflineAtRestart", (OfflineProvider,), {"offline": False})
    # Δ_ack of 60 s: the vault holds an ACK up to 5 s for a next EXEC, and the provider
    # does not claim on-chain while this test runs (the claim is another scenario).
    provider = world.provider(runtime_cls=gate, ack_timeout=60.0)
    db = fresh_schema(request.getfixturevalue("postgres_url")) if backend == "postgres" else None
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path, db=db) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)  # the channel exists, n = 1
        answered = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="answered")
        vault.kill()
        [row] = vault.store().channels()
        slot = provider.runtime.channels.slot(bytes.fromhex(row.cid[2:]))
        assert slot is not None and slot.channel.status is Status.PENDING  # no ACK came
        assert (row.checkpoint, row.provider_balance) == ("delivered", str(2 * PRICE))

        gate.offline = True  # the restarted vault's recovery pass cannot re-send the ACK
        vault.start()
        gate.offline = False
        after = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="after")
        again = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="after")
        later = client.invoke(f"{site}/weather", max_price=PRICE)
        store = vault.store()
        outcome = store.request(f"{account.address.lower()}:after")
        client.close_channel(row.cid)
        settled = wait_for(lambda: (c := store.channel(row.cid)).phase == vault_store.SETTLED and c,
                           what="settlement")
        balance = client.account_info()["balance"]
        assert_conserved(world, store, vault.address, escrow)
    assert answered.outcome == api.PAID and json.loads(answered.content)["n"] == 2
    assert (after.outcome, after.amount, json.loads(after.content)["n"]) == (api.PAID, PRICE, 3)
    assert again.content == after.content and again.payment == after.payment  # answered once
    assert json.loads(later.content)["n"] == 4
    assert outcome is not None and (outcome.state, outcome.outcome) == (vault_store.DONE, api.PAID)
    assert provider.calls["weather"] == 4  # every call's service ran once
    assert (settled.version, settled.provider_payout, settled.client_payout) == (
        4, str(4 * PRICE), str(DEPOSIT - 4 * PRICE))
    assert balance == str(20_000 - 4 * PRICE)
    assert world.balance(provider.address) == 4 * PRICE


def test_killed_between_answer_and_ack_the_restarted_vault_acks_once_the_provider_is_back(
    world: World, tmp_path: Path,
) -> None:
    """As above, with no call after the restart: the recovery pass, which failed at start-up,
    keeps trying until the provider has the ACK (before Δ_ack, so the provider never claims)."""
    gate = type("OfflineAtRestart", (OfflineProvider,), {"offline": False})
    provider = world.provider(runtime_cls=gate, ack_timeout=60.0)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path) as vault:
        _, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)
        client.invoke(f"{site}/weather", max_price=PRICE)
        vault.kill()
        [row] = vault.store().channels()
        slot = provider.runtime.channels.slot(bytes.fromhex(row.cid[2:]))
        assert slot is not None and slot.channel.status is Status.PENDING

        gate.offline = True
        vault.start()
        time.sleep(1.0)  # a few ticks of the worker, all failing to reach the provider
        assert slot.channel.status is Status.PENDING
        gate.offline = False
        wait_for(lambda: slot.channel.status is Status.OPEN, what="the re-sent ACK")
        store = vault.store()
        assert_conserved(world, store, vault.address, escrow)
        channel = store.channel(row.cid)
    assert (slot.channel.state.version, slot.channel.state.provider_balance) == (2, 2 * PRICE)
    assert channel is not None and (channel.phase, channel.provider_balance) == (
        vault_store.OPEN, str(2 * PRICE))
    assert provider.calls["weather"] == 2
    assert world.manager.channel(bytes.fromhex(row.cid[2:])).status is OnChainStatus.OPEN


def test_killed_after_a_metered_auth_the_restarted_vault_records_the_charge_not_delta(
    world: World, tmp_path: Path,
) -> None:
    """A metered route (1 unit a byte, δ = 1,000): the vault is killed with σ_U out for
    the charge δ' (the body's length); restarted, it completes the exchange and answers the
    call from its record: the answer and the record say δ', what the channel paid, not the
    δ it locked."""
    from a402.metering import parse_rule
    from a402.provider.routes import RouteConfig

    rule = parse_rule("per-byte:0.000001,max=0.001", 6)
    gate = GatedProvider.gate(Auth)
    provider = world.provider(runtime_cls=gate,
                              routes={"GET /weather": RouteConfig(price=PRICE, meter=rule)})
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            vault_process(world, fresh_account(world.chain), tmp_path) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        first = client.invoke(f"{site}/weather", max_price=PRICE)
        assert first.amount == len(first.content) < PRICE
        gate.armed = True
        key = f"{account.address.lower()}:crash"
        _crash_at(vault, gate,
                  lambda: client.invoke(f"{site}/weather", max_price=PRICE,
                                        idempotency_key="crash"),
                  lambda store: (r := store.request(key)) is not None
                  and r.state == vault_store.AUTHORIZED)
        vault.start()
        store = vault.store()  # the worker completes and answers it, nobody asking
        wait_for(lambda: (r := store.request(key)) is not None and r.state == vault_store.DONE,
                 what="the worker's answer")
        again = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="crash")
        record = store.request(key)
        [channel] = store.channels()
        assert_conserved(world, store, vault.address, escrow)
    charge = len(again.content)
    assert (again.outcome, again.amount) == (api.PAID, charge)
    assert record is not None and record.amount == str(charge)
    assert channel.provider_balance == str(len(first.content) + charge)
