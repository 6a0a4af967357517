"""Vault replicas over one PostgreSQL: kill -9 the active under load, pause it, race standbys.

Real ``a402 vault`` processes (:class:`~tests.vault.crash.VaultProcess`) share one
PostgreSQL schema, the same gas key and the same enclave identity; one holds the lease
(:mod:`a402.vault.lease`). Clients are given every replica's URL and fail over on
their own (:mod:`a402.client.vault`). Every scenario ends with the money checked on
the chain and in the store.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from a402.asc import Auth, Exec
from a402.asc.messages import Message
from a402.background import serve_in_thread
from a402.client.vault import VaultClient, VaultResult
from a402.vault import store as vault_store
from a402.vault.tables import RequestRow, request_record
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World, fresh_account

from .crash import GatedProvider, VaultProcess
from .helpers import assert_conserved, fresh_schema, wait_for

pytestmark = pytest.mark.anvil

PRICE = 1_000
FUNDS = 20_000


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


@contextmanager
def replicas(world: World, tmp_path: Path, db: str, n: int) -> Iterator[list[VaultProcess]]:
    """``n`` replicas of one vault over ``db``: the first started is the active one."""
    account = fresh_account(world.chain)
    procs = [VaultProcess(world, account, tmp_path / f"replica{i}", db=db) for i in range(n)]
    try:
        procs[0].start()
        for p in procs[1:]:
            p.start(standby=True)
        yield procs
    finally:
        for p in procs:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGCONT)
            p.stop()


def _clients(world: World, procs: list[VaultProcess], n: int, timeout: float = 120.0
             ) -> list[tuple[LocalAccount, VaultClient]]:
    urls = [p.url for p in procs]
    made = []
    for _ in range(n):
        account = world.client(FUNDS)
        client = VaultClient(urls, account, failover_wait=60, timeout=timeout,
                             trust_on_first_use=True)
        assert client.deposit(FUNDS)["state"] == "credited"
        made.append((account, client))
    return made


def _requests(store: vault_store.VaultStore) -> list[vault_store.Request]:
    with store._read() as s:
        return [request_record(r) for r in s.scalars(select(RequestRow))]


def _settle_all(store: vault_store.VaultStore, clients: list[tuple[LocalAccount, VaultClient]]
                ) -> None:
    for account, client in clients:
        for row in store.channels(client=account.address):
            if row.phase == vault_store.OPEN:
                client.close_channel(row.cid)
    wait_for(lambda: all(c.phase == vault_store.SETTLED for c in store.channels()),
             timeout=60, what="every channel settled")


@pytest.mark.parametrize(("hold", "state"), [
    (Exec, vault_store.LOCKED),  # δ locked, EXEC out, no REPLY yet
    (Auth, vault_store.AUTHORIZED),  # σ_U out: PENDING
], ids=["locked", "pending"])
def test_the_active_vault_killed_under_load_a_standby_takes_over_and_answers_every_call_once(
    world: World, tmp_path: Path, postgres_url: str, hold: type[Message], state: str,
) -> None:
    """Four clients call in a loop; one call is held by the provider in the state under test
    (so at least one channel is LOCKED, or PENDING, when the active dies), then the active
    is SIGKILLed. One of the two standbys takes over, resumes that channel and the others,
    and every call is answered and paid exactly once."""
    clients_n, calls_n = 4, 6
    gate = GatedProvider.gate(hold)
    provider = world.provider(runtime_cls=gate)
    escrow = world.balance(world.manager.address)
    db = fresh_schema(postgres_url)
    with serve_in_thread(provider.app) as site, replicas(world, tmp_path, db, 3) as procs:
        active, standbys = procs[0], procs[1:]
        address = active.address
        clients = _clients(world, procs, clients_n)
        answered: list[tuple[float, str, VaultResult]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def load(index: int, client: VaultClient) -> None:
            try:
                for i in range(calls_n):
                    result = client.invoke(f"{site}/weather", max_price=PRICE,
                                           idempotency_key=f"c{index}-{i}")
                    with lock:
                        answered.append((time.monotonic(), f"c{index}-{i}", result))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=load, args=(i, c)) for i, (_, c) in enumerate(clients)]
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= clients_n, what="some calls answered")
        gate.armed = True
        assert gate.reached.wait(30), "the provider never saw the message"
        store = active.store()
        try:
            held = wait_for(lambda: [r.key for r in _requests(store) if r.state == state],
                            what="the held call's checkpoint")
        finally:
            store.close()
        killed_at = time.monotonic()
        active.kill()  # SIGKILL, with calls in flight
        gate.release.set()
        for t in threads:
            t.join(120)
        assert not errors, errors
        after = [at for at, _, _ in answered if at > killed_at]
        failover = min(after) - killed_at if after else None
        roles = [p.health().get("role") for p in standbys]
        store = active.store()
        try:
            requests = [store.request(f"{a.address.lower()}:c{i}-{k}")
                        for i, (a, _) in enumerate(clients) for k in range(calls_n)]
            assert_conserved(world, store, address, escrow)
            _settle_all(store, clients)
            assert_conserved(world, store, address, escrow)
            balances = [store.balance(a.address) for a, _ in clients]
        finally:
            store.close()
    total = clients_n * calls_n
    # Every call answered exactly once, and paid once.
    assert len(answered) == total
    assert sorted(key for _, key, _ in answered) == sorted(
        f"c{i}-{k}" for i in range(clients_n) for k in range(calls_n))
    assert all((r.outcome, r.amount) == (api.PAID, PRICE) for _, _, r in answered)
    assert sorted(json.loads(r.content)["n"] for _, _, r in answered) == list(range(1, total + 1))
    assert provider.calls["weather"] == total  # every call's service ran once
    assert all(r is not None and (r.state, r.outcome) == (vault_store.DONE, api.PAID)
               for r in requests)
    assert held and all(any(r is not None and r.key == k for r in requests) for k in held)
    # One standby took over; the other is still a standby.
    assert sorted(roles, key=str) == ["active", "standby"], roles
    assert failover is not None and failover < 15, failover
    # The money: each client paid exactly its calls, the provider got every one of them.
    assert balances == [FUNDS - calls_n * PRICE] * clients_n
    assert world.balance(provider.address) == total * PRICE


def test_a_paused_active_that_lost_the_lease_neither_answers_nor_writes_when_resumed(
    world: World, tmp_path: Path, postgres_url: str,
) -> None:
    """SIGSTOP the active; the standby takes over; calls sent to the paused one wait in its
    socket (one of them, timed out there, is made again through the new active). SIGCONT:
    the resumed process answers none of them but 503 vault_standby (or drops the
    connection), records nothing, and exits; the stalled call made again through the new
    active is paid once."""
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    db = fresh_schema(postgres_url)
    with serve_in_thread(provider.app) as site, replicas(world, tmp_path, db, 2) as procs:
        old, new = procs
        address = old.address
        # A paused replica holds a call until the client's timeout; then it fails over.
        [(account, client)] = _clients(world, procs, 1, timeout=8.0)
        client.invoke(f"{site}/weather", max_price=PRICE)
        old.signal(signal.SIGSTOP)
        stalled: list[httpx.Response | BaseException] = []
        # No fail-over: the old one only.
        direct = VaultClient(old.url, account, timeout=60, trust_on_first_use=True)
        direct._info = client._info

        def call_the_paused_one() -> None:
            try:
                stalled.append(direct.http.send(direct._request(
                    "POST", api.API_PREFIX + "/invoke", api.InvokeRequest(
                        url=f"{site}/weather", method="GET", headers=(), body=b"",
                        max_price=PRICE, idempotency_key="stalled", funding=api.POOL,
                        deposit=None).to_json())))
            except BaseException as e:
                stalled.append(e)

        caller = threading.Thread(target=call_the_paused_one)
        caller.start()
        wait_for(lambda: new.health().get("role") == "active", timeout=30,
                 what="the standby's take-over")
        during = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="during")
        store = new.store()
        try:
            before = (store.ledger(), [(c.cid, c.version, c.checkpoint) for c in store.channels()])
            old.signal(signal.SIGCONT)
            caller.join(30)
            assert old.proc is not None
            code = old.proc.wait(15)  # it finds the lease gone and exits
            after = (store.ledger(), [(c.cid, c.version, c.checkpoint) for c in store.channels()])
            assert store.request(f"{account.address.lower()}:stalled") is None
            again = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="stalled")
            repeat = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="stalled")
            _settle_all(store, [(account, client)])
            assert_conserved(world, store, address, escrow)
            balance = store.balance(account.address)
        finally:
            store.close()
    [answer] = stalled
    if isinstance(answer, httpx.Response):
        assert answer.status_code == 503 and answer.json()["error"] == api.VAULT_STANDBY
    else:
        assert isinstance(answer, httpx.HTTPError)
    assert code == 75
    assert after == before  # the resumed process wrote nothing
    assert (during.outcome, json.loads(during.content)["n"]) == (api.PAID, 2)
    assert (again.outcome, json.loads(again.content)["n"]) == (api.PAID, 3)
    assert repeat.content == again.content  # answered from the record, not paid again
    assert provider.calls["weather"] == 3
    assert balance == FUNDS - 3 * PRICE
    assert world.balance(provider.address) == 3 * PRICE


def test_a_standby_answers_503_with_the_active_replica_and_does_nothing(
    world: World, tmp_path: Path, postgres_url: str,
) -> None:
    db = fresh_schema(postgres_url)
    with replicas(world, tmp_path, db, 2) as (active, standby):
        account = world.client(FUNDS)
        client = VaultClient(standby.url, account, trust_on_first_use=True)  # one URL: no fail-over
        info = client.info()  # info is the same on every replica
        with pytest.raises(Exception) as refused:
            client.deposit(FUNDS)
        health = httpx.get(standby.url + "/healthz", timeout=5)
        store = standby.store()
        try:
            deposits = store.totals().deposits
        finally:
            store.close()
        address = active.address
        assert world.balance(address) == 0
    assert info["vault"] == address
    error = refused.value
    assert getattr(error, "status", None) == 503
    assert getattr(error, "body", {}).get("error") == api.VAULT_STANDBY
    assert getattr(error, "body", {}).get("active") == active.url
    assert health.status_code == 503 and health.json()["role"] == "standby"
    assert health.json()["lease"]["url"] == active.url
    assert deposits == 0
