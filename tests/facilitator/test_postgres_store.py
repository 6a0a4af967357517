"""The journal on a real PostgreSQL server: replicas sharing one database settle
an authorization exactly once, whichever of them is asked, however often."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import text

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.facilitator.core import Facilitator
from a402.facilitator.store import Base, SettlementStore
from tests.facilitator.helpers import request_body, requirement

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
