"""The fail-over lease on a real PostgreSQL: one holder, a growing token, fenced writes.

Each test has a schema of its own; "processes" are :class:`Lease` objects over
stores of their own (their own engines and connections), as two vault processes
would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from a402.vault.lease import Lease, LeaseLost
from a402.vault.store import VaultStore

from .helpers import fresh_schema, wait_for

TTL = 0.9  # short, so that expiries happen within a test
RENEW = 0.3


@pytest.fixture
def db(postgres_url: str) -> str:
    return fresh_schema(postgres_url)


@pytest.fixture
def stores(db: str) -> Iterator[list[VaultStore]]:
    made: list[VaultStore] = []
    yield made
    for store in made:
        store.close()


def _replica(stores: list[VaultStore], db: str, name: str, **kw: object) -> Lease:
    store = VaultStore(db)
    stores.append(store)
    kw.setdefault("ttl", TTL)
    return Lease(store, holder=name, renew_every=RENEW, **kw)  # type: ignore[arg-type]


def test_a_standby_takes_the_lease_only_once_it_expired_and_the_token_grows(
    db: str, stores: list[VaultStore],
) -> None:
    """``a`` renews every 0.3 s a lease of 5 s: on a loaded host its renewal thread may
    stall for seconds without the lease lapsing or ``a`` ceasing to serve (with a 0.9 s
    lease, a 0.7 s stall let ``b`` take it, a false failure). Once ``a`` stops, ``b``
    polls: it takes the lease, and its take-over is dated no earlier than the expiry ``a``
    had last written."""
    a = _replica(stores, db, "a", ttl=5.0)
    b = _replica(stores, db, "b")
    assert a.try_acquire() and a.token == 1
    assert not b.try_acquire()  # not expired: b stays a standby
    a.keep()
    time.sleep(a.ttl + 1.0)  # a renews: still not expired
    assert not b.try_acquire() and a.serving()
    assert a.current().holder == "a"
    a._stop.set()  # a stops renewing (as a killed process would)
    assert a._keeper is not None
    a._keeper.join(30)  # a renewal already under way is written before we read the expiry
    last = a.current()
    assert last.holder == "a"
    wait_for(b.try_acquire, timeout=60, what="b's take-over of the expired lease")
    assert b.token == 2
    holder = b.current()
    assert (holder.holder, holder.token) == ("b", 2)
    assert holder.expires_at - TTL > last.expires_at - 1e-3  # taken only once a's expired


def test_the_old_holder_cannot_write_once_another_took_the_lease(
    db: str, stores: list[VaultStore],
) -> None:
    """A paused active (it stopped renewing) resumes after a take-over: its write is refused
    inside the transaction, and nothing of it is in the database."""
    lost: list[str] = []
    a = _replica(stores, db, "a", on_lost=lost.append)
    b = _replica(stores, db, "b")
    assert a.try_acquire()
    a.fence_store()
    a.store.put_meta("written_by", b"a")  # the active writes
    time.sleep(TTL + 0.2)  # a "paused": no renewal
    assert b.try_acquire()
    b.fence_store()
    with pytest.raises(LeaseLost):
        a.store.put_meta("written_by", b"a, after losing the lease")
    with pytest.raises(LeaseLost):
        a.store.put_ledger(b"forged", 99, expected=None)
    assert lost and a.lost and not a.serving()
    assert not a.renew()  # its renewal finds another token
    assert b.store.get_meta("written_by") == b"a"
    assert b.store.ledger() is None
    b.store.put_meta("written_by", b"b")  # the new active writes
    assert b.store.get_meta("written_by") == b"b"


def test_a_take_over_waits_for_a_write_already_past_its_fence(
    db: str, stores: list[VaultStore],
) -> None:
    """The old active's transaction passed its check; the take-over (needing the row's
    exclusive lock) waits for it, so the new active's first read sees that write."""
    a, b = _replica(stores, db, "a"), _replica(stores, db, "b")
    assert a.try_acquire()
    a.fence_store()
    inside, go = threading.Event(), threading.Event()

    def slow_write() -> None:
        with a.store._tx() as s:  # fenced: the lease row is share-locked from here on
            from a402.vault.tables import MetaRow
            s.add(MetaRow(key="slow", value=b"a"))
            inside.set()
            go.wait(10)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert inside.wait(10)
    time.sleep(TTL + 0.2)  # expired while the write is open
    taken: list[bool] = []
    taker = threading.Thread(target=lambda: taken.append(b.try_acquire()))
    taker.start()
    time.sleep(0.3)
    # blocked on the row lock: not taken (on a loaded host its 1 s lock_timeout may already
    # have ended the round, which is not a take-over either)
    assert True not in taken
    go.set()
    writer.join(10)
    taker.join(10)
    if not taken[0]:  # its lock_timeout may have ended the round: the next one takes it
        assert b.acquire(0.05)
    assert b.store.get_meta("slow") == b"a"


def test_two_standbys_racing_for_an_expired_lease_only_one_becomes_active(
    db: str, stores: list[VaultStore],
) -> None:
    a = _replica(stores, db, "a")
    assert a.try_acquire()
    standbys = [_replica(stores, db, f"s{i}") for i in range(6)]
    time.sleep(TTL + 0.2)
    start = threading.Barrier(len(standbys))
    won: list[str] = []

    def race(lease: Lease) -> None:
        start.wait()
        if lease.try_acquire():
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(s,)) for s in standbys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    assert a.current().holder == won[0] and a.current().token == 2


def test_sqlite_has_no_lease(tmp_path: object) -> None:
    store = VaultStore(f"sqlite:///{tmp_path}/v.db")
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            Lease(store)
    finally:
        store.close()


class _Replica:
    """What the API's guard reads of a vault service: its lease and whether it serves."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.active = True

    def serving(self) -> bool:
        return self.active


def test_an_answer_computed_before_the_lease_lapsed_is_not_sent(
    db: str, stores: list[VaultStore],
) -> None:
    """The guard in front of the API: a call that reached the active process but whose answer
    is ready only after the process stopped serving gets 503 answer_dropped instead (it ran:
    it may have been paid, and the client says so); a call arriving then never reaches the
    handler (503 vault_standby: nothing was done); ``/v1/info`` is answered by any replica."""
    from starlette.testclient import TestClient

    from a402.client.vault import VaultCallError
    from a402.vault.app import _active_only
    from a402.wire import vault_api as api

    a = _replica(stores, db, "a", url="http://a.example")
    replica = _Replica(a)
    reached: list[str] = []

    async def handler(scope: dict[str, object], receive: object, send: object) -> None:
        reached.append(str(scope["path"]))
        if scope["path"] == "/v1/invoke":
            replica.active = False  # the lease lapses while the call runs
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"paid": true}'})  # type: ignore[operator]

    client = TestClient(_active_only(replica, handler))  # type: ignore[arg-type]
    lapsed = client.post("/v1/invoke", content=b"{}")
    later = client.get("/v1/account")
    info = client.get("/v1/info")
    assert lapsed.status_code == 503 and lapsed.json()["error"] == api.ANSWER_DROPPED
    assert lapsed.headers["retry-after"] == "1"
    assert VaultCallError(503, lapsed.json()).may_have_paid  # not "nothing was paid"
    assert later.status_code == 503 and later.json()["error"] == api.VAULT_STANDBY
    assert not VaultCallError(503, later.json()).may_have_paid
    assert info.status_code == 200
    assert reached == ["/v1/invoke", "/v1/info"]  # /v1/account never reached the handler


def test_a_tunnel_of_a_process_that_is_not_the_active_one_sends_no_frame() -> None:
    """The old active, resumed, holds a checkpointed message for a provider: the tunnel
    refuses to send it (the new active sends it from the same checkpoint)."""
    import asyncio

    from a402.vault.tunnel import ProviderTunnel, ProviderUnavailable
    from a402.wire.a402 import Envelope

    carried: list[bytes] = []

    class Frames:
        async def carry(self, tunnel_id: str, frame: bytes) -> bytes:
            carried.append(frame)
            raise AssertionError("no frame may leave")

    class Link:
        frames = Frames()

        async def aclose(self) -> None:
            pass

    active = [True]
    tunnel = ProviderTunnel("http://provider.example", enclave=object(),  # type: ignore[arg-type]
                            verifiers=[], policy=object(), vault=object(),  # type: ignore[arg-type]
                            link=Link(), may_send=lambda: active[0])  # type: ignore[arg-type]
    tunnel._handle, tunnel._tunnel_id = "h", "t"
    active[0] = False
    with pytest.raises(ProviderUnavailable) as refused:
        asyncio.run(tunnel.exchange(Envelope.ok()))
    assert refused.value.reason == "vault_standby" and carried == []
