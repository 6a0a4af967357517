"""The journal on a real PostgreSQL server: replicas sharing one database settle
an authorization exactly once, whichever of them is asked, however often, for one
resource only; replicas sharing one signer key take turns with its nonces."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import make_url, text
from starlette.testclient import TestClient

from a402.chain.deploy import Manifest, token_balance
from a402.chain.exact_transfer import authorization_used
from a402.chain.node import Chain, connect
from a402.facilitator import store as store_module
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import (
    Base,
    SettlementRow,
    SettlementStore,
    payload_digest,
    settlement_key,
)
from a402.wire import errors as wire_errors
from tests.facilitator.helpers import request_body, requirement
from tests.facilitator.test_settle_terms_and_resource import REPORT_A, REPORT_B, for_resource

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SettlementStore]:
    store = SettlementStore(postgres_url)
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {Base.metadata.sorted_tables[0].name}"))
    yield store
    store.close()


def two_replicas(chain: Chain, pg_store: SettlementStore, postgres_url: str) -> list[Facilitator]:
    """Two facilitators on one database, each with its own engine and gas key."""
    return [Facilitator(chain, chain.accounts[1], pg_store),
            Facilitator(chain, chain.accounts[3], SettlementStore(postgres_url))]


def test_the_store_speaks_postgresql(pg_store: SettlementStore) -> None:
    assert pg_store.engine.dialect.name == "postgresql"
    assert pg_store.claim(key="k" * 64, payload_hash="p" * 64, network="eip155:1", asset="0x1",
                          payer="0x2", pay_to="0x3", amount=10**30, valid_before=1)
    assert not pg_store.claim(key="k" * 64, payload_hash="q" * 64, network="eip155:1",
                              asset="0x1", payer="0x2", pay_to="0x3", amount=1, valid_before=1)
    record = pg_store.get("k" * 64)
    assert record is not None and record.amount == 10**30 and record.payload_hash == "p" * 64


def test_a_claim_taken_over_is_out_of_its_old_holders_hands(pg_store: SettlementStore) -> None:
    claim = {"key": "c" * 64, "payload_hash": "p" * 64, "network": "eip155:1", "asset": "0x1",
             "payer": "0x2", "pay_to": "0x3", "amount": 1, "valid_before": 1}
    old = pg_store.claim(**claim)
    assert old is not None
    same = {"payload_hash": claim["payload_hash"], "resource": None}
    assert pg_store.take_over(claim["key"], stale_before=time.time() - 60, **same) is None  # fresh
    new = pg_store.take_over(claim["key"], stale_before=time.time() + 1, **same)
    assert new is not None and new != old
    pg_store.release(claim["key"], holder=old)  # a late release by the old holder ...
    assert not pg_store.record_submission(claim["key"], old, "0xaa", b"old")  # ... or journal
    assert pg_store.record_submission(claim["key"], new, "0xbb", b"new")
    record = pg_store.get(claim["key"])
    assert record is not None and (record.tx_hash, record.raw_tx) == ("0xbb", b"new")


def test_two_replicas_on_one_database_settle_a_replayed_payment_once(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str,
) -> None:
    replicas = two_replicas(anvil_chain, pg_store, postgres_url)
    payer, payee = new_payer(10_000), dev_stack.account("provider").address
    payee_before = token_balance(anvil_chain, dev_stack.token.address, payee)
    body = request_body(payer, requirement(dev_stack, 2_500))

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: replicas[i % 2].settle(body), range(6)))

    assert all(r.success for r in results), results
    assert len({r.transaction for r in results}) == 1
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 7_500
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == payee_before + 2_500
    assert pg_store.count_by_state() == {"confirmed": 1}


def test_two_replicas_hand_one_settlement_to_one_resource_only(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str,
) -> None:
    """Two gateways, each with its own replica, get the same payment for two resources."""
    replicas = two_replicas(anvil_chain, pg_store, postgres_url)
    payer, payee = new_payer(10_000), dev_stack.account("provider").address
    payee_before = token_balance(anvil_chain, dev_stack.token.address, payee)
    body = request_body(payer, requirement(dev_stack, 2_500))
    resources = [(REPORT_A, REPORT_B)[i % 2] for i in range(6)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(
            lambda i: replicas[i % 2].settle(for_resource(body, resources[i])), range(6)))

    served = {url for url, r in zip(resources, results, strict=True) if r.success}
    assert len(served) == 1, results
    assert all(r.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
               for url, r in zip(resources, results, strict=True) if url not in served)
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 7_500
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == payee_before + 2_500
    assert pg_store.count_by_state() == {"confirmed": 1}


def test_two_replicas_sharing_a_signer_key_settle_concurrently_without_a_nonce_collision(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str,
) -> None:
    """Two facilitator instances standing for two processes: each its own chain
    connection (so its own in-process nonce lock) and its own engine and pool on the
    one database, one signer key between them, twelve payments at once."""
    key = anvil_chain.accounts[5].key
    # generous: twelve settlements on a loaded host may take longer than a few seconds,
    # and a call that waited out a lost transaction still takes this long at least
    config = FacilitatorConfig(receipt_timeout=60)
    replicas = []
    for store in (pg_store, SettlementStore(postgres_url)):
        chain = connect(anvil_chain.rpc_url or "", [key])
        replicas.append(Facilitator(chain, chain.accounts[0], store, config))
    assert replicas[0].chain.sender_lock(replicas[0].signer.address) is not \
        replicas[1].chain.sender_lock(replicas[1].signer.address)
    payers = [new_payer(3_000) for _ in range(12)]
    payee = dev_stack.account("provider").address
    payee_before = token_balance(anvil_chain, dev_stack.token.address, payee)
    bodies = [request_body(p, requirement(dev_stack, 1_000 + i)) for i, p in enumerate(payers)]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: replicas[i % 2].settle(bodies[i]), range(12)))
    elapsed = time.monotonic() - started

    assert [r.error_reason for r in results if not r.success] == []
    assert elapsed < config.receipt_timeout  # no call waited out a lost transaction
    assert len({r.transaction for r in results}) == 12
    for i, payer in enumerate(payers):
        auth = bodies[i]["paymentPayload"]["payload"]["authorization"]
        assert authorization_used(anvil_chain, dev_stack.token.address, payer.address,
                                  auth["nonce"])
        assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 2_000 - i
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == \
        payee_before + sum(1_000 + i for i in range(12))
    assert pg_store.count_by_state() == {"confirmed": 12}


def test_a_replica_with_a_slow_clock_claiming_for_another_resource_is_not_taken_over(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str,
) -> None:
    """Replica A claimed the payment for resource A and died. Replica B, asked again for
    resource A, sees the stale claim; just before B takes it over, the dead claim is
    cleaned up and replica C, whose clock is a minute slow, claims the payment for
    resource B: a fresh claim that B's clock reads as stale. B's take-over must not
    take C's claim (it would settle it and answer resource A with the payment C then
    also hands to resource B): B is refused, C settles, once."""
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    payee_before = token_balance(anvil_chain, dev_stack.token.address, payee)
    body = request_body(payer, requirement(dev_stack, 1_200))
    evm = body["paymentPayload"]["payload"]
    auth, signature = evm["authorization"], evm["signature"]
    key = settlement_key(dev_stack.network, dev_stack.token.address, auth["from"], auth["nonce"])
    claim = {"key": key, "payload_hash": payload_digest(signature, auth),
             "network": dev_stack.network, "asset": dev_stack.token.address,
             "payer": auth["from"], "pay_to": payee, "amount": 1_200,
             "valid_before": int(auth["validBefore"])}

    def claimed_a_minute_ago(resource: str) -> None:
        assert pg_store.claim(**claim, resource=resource)
        with pg_store.engine.begin() as conn:
            conn.execute(text(f"UPDATE {SettlementRow.__tablename__} SET updated_at = "
                              "updated_at - 60, created_at = created_at - 60 WHERE key = :k"),
                         {"k": key})

    class SlowClockReplicaClaimsFirst(SettlementStore):
        def take_over(self, key: str, **request: Any) -> str | None:
            self.release(key, stale_before=time.time())  # the dead claim, cleaned up
            claimed_a_minute_ago(REPORT_B)  # replica C's claim, by its slow clock
            return super().take_over(key, **request)

    claimed_a_minute_ago(REPORT_A)  # replica A's, before it died
    replica_b = Facilitator(anvil_chain, anvil_chain.accounts[1],
                            SlowClockReplicaClaimsFirst(postgres_url))
    replica_c = Facilitator(anvil_chain, anvil_chain.accounts[3], pg_store)

    for_a = replica_b.settle(for_resource(body, REPORT_A))
    for_b = replica_c.settle(for_resource(body, REPORT_B))

    assert not for_a.success, for_a
    assert for_a.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE, for_a
    assert for_b.success, for_b
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 3_800
    assert token_balance(anvil_chain, dev_stack.token.address, payee) == payee_before + 1_200
    record = pg_store.get(key)
    assert record is not None and record.resource == REPORT_B


@pytest.mark.parametrize("url", ["https://a.example/\x00", "https://a.example/\ud800"],
                         ids=["NUL", "unpaired-surrogate"])
def test_a_resource_url_the_journal_cannot_store_is_refused_with_a_reason(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, url: str,
) -> None:
    """JSON can carry "\\u0000" and "\\ud800"; PostgreSQL's text cannot store them. Such
    a resource is refused (400, with a reason) before anything is claimed, not
    answered 500 half-way through the claim."""
    payer = new_payer(5_000)
    facilitator = Facilitator(anvil_chain, anvil_chain.accounts[1], pg_store)
    raw = json.dumps(for_resource(request_body(payer, requirement(dev_stack, 1_000)), url))
    with TestClient(create_app(facilitator)) as client:
        for path in ("/verify", "/settle"):
            response = client.post(path, content=raw,
                                   headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text
            assert response.json()["error"] == wire_errors.INVALID_PAYLOAD
    assert pg_store.count_by_state() == {}
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 5_000


@pytest.fixture
def journal_to_lock_out(postgres_url: str, pg_store: SettlementStore) -> Iterator[Any]:
    """A database login of the test's own, to make the journal unreachable for one
    facilitator (and no one else): ``lock_out`` refuses its logins and ends its
    sessions, as a database going away does; ``let_in`` undoes that."""
    role = f"a402_test_{secrets.token_hex(4)}"
    admin = pg_store.engine
    table = SettlementRow.__tablename__

    def run(*statements: str) -> None:
        with admin.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))

    run(f"CREATE ROLE {role} LOGIN", f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT ALL ON TABLE {table} TO {role}")
    kick = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"

    class Switch:
        url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)

        @staticmethod
        def lock_out() -> None:
            run(f"ALTER ROLE {role} NOLOGIN", kick)

        @staticmethod
        def let_in() -> None:
            run(f"ALTER ROLE {role} LOGIN")

    yield Switch
    run(f"ALTER ROLE {role} NOLOGIN", kick, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_an_unreachable_journal_answers_503_with_a_reason_and_the_retry_settles(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    journal_to_lock_out: Any,
) -> None:
    payer = new_payer(5_000)
    store = SettlementStore(journal_to_lock_out.url)
    facilitator = Facilitator(anvil_chain, anvil_chain.accounts[1], store)
    body = request_body(payer, requirement(dev_stack, 1_000))
    with TestClient(create_app(facilitator), raise_server_exceptions=False) as client:
        journal_to_lock_out.lock_out()
        for path in ("/verify", "/settle"):
            response = client.post(path, json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "journal_unavailable"
            assert response.headers["Retry-After"]
        assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 5_000
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "degraded"

        journal_to_lock_out.let_in()
        retried = client.post("/settle", json=body)
    store.close()
    assert retried.status_code == 200 and retried.json()["success"], retried.text
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 4_000


def test_a_replica_frozen_in_its_nonce_turn_stalls_the_others_seconds_not_forever(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica sharing the signer key freezes (stopped, swapped out) while holding
    the nonce lock; PostgreSQL sees its connection alive and keeps the lock. Another
    replica's settle must give up within seconds with a retryable 503 that changed
    nothing, and settle on the retry once the lock is free."""
    monkeypatch.setattr(store_module, "SENDER_LOCK_TIMEOUT", 1.0)
    signer = anvil_chain.accounts[6]
    replica = Facilitator(anvil_chain, signer, pg_store)
    payer = new_payer(5_000)
    body = request_body(payer, requirement(dev_stack, 1_000))
    frozen = SettlementStore(postgres_url)
    with TestClient(create_app(replica)) as client, ThreadPoolExecutor(1) as pool:
        with frozen.sender_lock(dev_stack.network, signer.address):  # ... and freezes
            answer = pool.submit(client.post, "/settle", json=body).result(timeout=20)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "journal_unavailable"
            assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 5_000
            assert pg_store.count_by_state() == {}  # the claim was released
        retried = client.post("/settle", json=body)
    frozen.close()
    assert retried.status_code == 200 and retried.json()["success"], retried.text
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == 4_000
