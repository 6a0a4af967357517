"""The journal on a real PostgreSQL server: replicas sharing one database settle
an authorization exactly once, whichever of them is asked, however often, for one
resource only; replicas sharing one signer key take turns with its nonces."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import text

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain, connect
from a402.exact.onchain import authorization_used
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import Base, SettlementStore
from a402.wire import errors as E
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
    assert pg_store.take_over(claim["key"], stale_before=time.time() - 60) is None  # not stale
    new = pg_store.take_over(claim["key"], stale_before=time.time() + 1)
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
    # Each replica has its own gas key, as a deployment should.
    replicas = [
        Facilitator(anvil_chain, anvil_chain.accounts[1], pg_store),
        Facilitator(anvil_chain, anvil_chain.accounts[3], SettlementStore(postgres_url)),
    ]
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
    replicas = [
        Facilitator(anvil_chain, anvil_chain.accounts[1], pg_store),
        Facilitator(anvil_chain, anvil_chain.accounts[3], SettlementStore(postgres_url)),
    ]
    payer, payee = new_payer(10_000), dev_stack.account("provider").address
    payee_before = token_balance(anvil_chain, dev_stack.token.address, payee)
    body = request_body(payer, requirement(dev_stack, 2_500))
    resources = [(REPORT_A, REPORT_B)[i % 2] for i in range(6)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(
            lambda i: replicas[i % 2].settle(for_resource(body, resources[i])), range(6)))

    served = {url for url, r in zip(resources, results, strict=True) if r.success}
    assert len(served) == 1, results
    assert all(r.error_reason == E.NONCE_USED_FOR_ANOTHER_RESOURCE
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
    config = FacilitatorConfig(receipt_timeout=8)
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
