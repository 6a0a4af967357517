"""The agent indexer against a real chain: search, details, restarts, crashes, reorganisations.

The world (``indexer_helpers.build_world``) lives on this module's own anvil,
because building it moves the clock; the reorganisation tests each start
another, because they revert it. "Same answers" is checked by comparing every
answer (all queries, all pages, every agent's details) with those of an index
built from scratch on the same chain.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from web3.logs import DISCARD

from a402.agents.indexer import Contracts, Indexer, IndexStore, JsonRpc, Query, Search
from a402.agents.indexer.abi import decode_log
from a402.agents.indexer.app import create_app
from a402.agents.indexer.command import add_indexer_arguments, run_indexer
from a402.agents.onchain import AgentSuite
from a402.chain.node import Chain, start_anvil
from a402.chain.rpc import RpcError
from a402.chain.tx import contract_at

from .indexer_helpers import DAY, ETH, World, answers, build_world, card, funded, increase_time

pytestmark = pytest.mark.anvil

StoreFactory = Callable[[str], IndexStore]


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with start_anvil(accounts=2) as node:
        yield node


@pytest.fixture(scope="module")
def world(chain: Chain) -> World:
    return build_world(chain)


@pytest.fixture
def stores(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """Make stores: ``"sqlite"`` (a file per call) or ``"postgres"`` (a throwaway schema)."""
    made: list[tuple[IndexStore, str | None]] = []

    def make(backend: str) -> IndexStore:
        if backend == "sqlite":
            store = IndexStore(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
            made.append((store, None))
        else:
            url = request.getfixturevalue("postgres_url")
            schema = f"a402_idx_test_{uuid.uuid4().hex[:10]}"
            store = IndexStore(url, schema=schema)
            made.append((store, schema))
        return store

    yield make
    for store, schema in made:
        store.close()
        if schema:
            engine = create_engine(store.url)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()


def index(chain: Chain, suite: AgentSuite, start: int, store: IndexStore, **options: Any
          ) -> Indexer:
    indexer = Indexer(store, chain.rpc_url or "", Contracts.from_suite(suite.addresses),
                      start_block=start, **options)
    indexer.sync()
    return indexer


def fresh_answers(chain: Chain, suite: AgentSuite, start: int, stores: StoreFactory
                  ) -> dict[str, Any]:
    return answers(Search(index(chain, suite, start, stores("sqlite")).store))


def names(page: dict[str, Any]) -> list[str]:
    return [a["name"] for a in page["agents"]]


# --------------------------------------------------------------------------- search


@pytest.fixture
def indexed(world: World, stores: StoreFactory) -> Search:
    return Search(index(world.chain, world.suite, world.start_block, stores("sqlite")).store)


def test_search_filters_answer_from_the_index(world: World, indexed: Search) -> None:
    s = indexed
    assert names(s.search(Query(skill="translate"))) == ["Translator"]
    assert set(names(s.search(Query(skill="TEXT")))) == {"Translator", "Proofreader",
                                                         "Summarizer"}
    assert set(names(s.search(Query(q="translat")))) == {"Translator", "Shopper"}
    assert names(s.search(Query(q="long documents"))) == ["Summarizer"]
    assert names(s.search(Query(q="documents long"))) == ["Summarizer"]
    assert names(s.search(Query(q="long translat"))) == []
    assert set(names(s.search(Query(max_price=10_000)))) == {
        "Translator", "Proofreader", "Shopper", "Image Painter"}
    assert names(s.search(Query(max_price=0))) == ["Image Painter"]
    assert set(names(s.search(Query(max_price=9_999, asset=world.token)))) == {
        "Proofreader", "Shopper"}
    assert names(s.search(Query(network="eip155:8453"))) == ["Shopper"]
    assert names(s.search(Query(min_reputation=1.0))) == ["Translator"]
    assert names(s.search(Query(active=True))) == ["Translator"]
    assert len(s.search(Query(active=False))["agents"]) == 4
    assert set(names(s.search(Query(registry="any")))) == {"Translator", "Summarizer"}
    assert names(s.search(Query(registry="curated"))) == ["Summarizer"]
    assert names(s.search(Query(registry=world.suite.addresses.registry))) == ["Translator"]

    everything = s.search(Query())["agents"]
    assert everything[0]["name"] == "Translator"  # the only agent with a reputation
    paged, cursor = [], None
    while True:
        page = s.search(Query(limit=2, cursor=cursor))
        paged += page["agents"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything and len(everything) == 5


def test_details_agree_with_the_chain(world: World, indexed: Search) -> None:
    for agent in world.agents.values():
        info = agent.info()
        detail = indexed.agent(agent.address)
        assert detail is not None
        assert detail["owner"] == info.owner
        assert detail["card_hash"] == "0x" + info.card_hash.hex()
        assert json.dumps(detail["card"], sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode() == agent.card_json()
        assert detail["revision"] == info.revision
        assert detail["activity"]["active"] is info.active
        assert detail["activity"]["last_seen"] == info.last_seen
        assert detail["ratings"]["live"] == info.ratings
    assert indexed.agent(world.owners["T"].address) is None


def test_reputation_counts_payers_and_ignores_self_dealing_cycles_and_strangers(
    world: World, indexed: Search
) -> None:
    translator = indexed.agent(world.agents["translator"].address)
    assert translator is not None
    rep = translator["reputation"]
    payers = rep["components"]["payers"]["inputs"]
    assert payers["eligible_payers"] == 1 and payers["payments"] == 2  # the buyer, not the sibling
    assert rep["excluded"]["same_owner"]["payments"] == 1
    assert rep["components"]["recurring"]["inputs"]["recurring_payers"] == 1
    feedback = rep["components"]["feedback"]["inputs"]
    assert feedback["opinions"] == 1  # the buyer's entity: one voice
    assert feedback["ignored"]["author_not_an_eligible_payer"] == 1  # the stranger
    assert rep["components"]["feedback"]["value"] > 0
    # Volume is the buyer's 20,000 base units of a 6-decimal token, not the sibling's 999,000.
    assert rep["components"]["volume"]["inputs"]["amount"] == pytest.approx(0.02)
    assert sum(c["weight"] for c in rep["components"].values()) == pytest.approx(1.0)
    assert rep["score"] == pytest.approx(sum(c["points"] for c in rep["components"].values()),
                                         abs=0.01)
    for name in ("summarizer", "painter"):
        detail = indexed.agent(world.agents[name].address)
        assert detail is not None
        assert detail["reputation"]["excluded"]["circular"]["payments"] == 1
        assert detail["reputation"]["score"] == 0


def test_decoder_agrees_with_web3(world: World, chain: Chain) -> None:
    """Every followed log of the world, decoded by the fast decoder and by web3."""
    a = world.suite.addresses
    sources = {a.factory: ("factory", "AgentFactory"), a.registry: ("registry", "AgentRegistry"),
               a.curated_registry: ("registry", "CuratedAgentRegistry"),
               a.identity: ("identity", "IdentityRegistry"),
               a.reputation: ("reputation", "ReputationRegistry")}
    sources |= {agent.address: ("agent", "Agent") for agent in world.agents.values()}
    checked = 0
    for raw in chain.w3.eth.get_logs({"fromBlock": world.start_block, "toBlock": "latest"}):
        if raw["address"] not in sources:
            continue
        source, artifact = sources[raw["address"]]
        topics = ["0x" + bytes(t).hex() for t in raw["topics"]]
        ours = decode_log(source, topics, "0x" + bytes(raw["data"]).hex())
        if ours is None:
            continue
        name, args = ours
        contract = contract_at(chain, artifact, raw["address"])
        (theirs,) = getattr(contract.events, name)().process_receipt(
            {"logs": [raw]}, errors=DISCARD)  # type: ignore[arg-type]
        expected = {k: v.lower() if isinstance(v, str) and v.startswith("0x") and len(v) == 42
                    else "0x" + bytes(v).hex() if isinstance(v, bytes) else v
                    for k, v in theirs["args"].items()}
        assert args == expected, name
        checked += 1
    assert checked >= 50


def test_the_api_serves_search_details_and_health(world: World, indexed: Search) -> None:
    client = TestClient(create_app(indexed))
    found = client.get("/agents", params={"skill": "translate", "max_price": "10000"}).json()
    assert [a["name"] for a in found["agents"]] == ["Translator"]
    address = found["agents"][0]["address"]
    detail = client.get(f"/agents/{address.lower()}").json()
    assert detail["address"] == address and detail["reputation"]["components"]
    assert client.get(f"/agents/{world.owners['T'].address}").status_code == 404
    assert client.get("/agents/not-an-address").status_code == 400
    assert client.get("/agents", params={"cursor": "garbage"}).status_code == 400
    assert client.get("/agents", params={"max_price": "-1"}).status_code == 400
    assert client.get("/agents", params={"limit": "1000"}).status_code == 422
    page = client.get("/agents", params={"limit": "1"}).json()
    assert client.get("/agents", params={"limit": "1", "cursor": page["next_cursor"]}
                      ).json()["agents"][0]["address"] != page["agents"][0]["address"]
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["cursor"]["number"] == body["head"] and body["lag_blocks"] == 0
    empty = Search(IndexStore(indexed.store.url.replace(".db", "-empty.db")))
    assert TestClient(create_app(empty)).get("/healthz").status_code == 503


# ----------------------------------------------------------------- restarts, crashes


def test_filter_modes_and_range_sizes_give_the_same_answers(
    world: World, stores: StoreFactory
) -> None:
    reference = fresh_answers(world.chain, world.suite, world.start_block, stores)
    by_address = index(world.chain, world.suite, world.start_block, stores("sqlite"),
                       agent_filter="addresses", batch_blocks=3, max_batch_blocks=3)
    assert answers(Search(by_address.store)) == reference
    by_topic = index(world.chain, world.suite, world.start_block, stores("sqlite"),
                     agent_filter="topics", batch_blocks=7, max_batch_blocks=7)
    assert answers(Search(by_topic.store)) == reference

    class StingyNode(JsonRpc):
        """A node that refuses log queries over more than 5 blocks, as public RPCs do."""

        def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
            for method, params in calls:
                if method == "eth_getLogs":
                    span = int(params[0]["toBlock"], 16) - int(params[0]["fromBlock"], 16)
                    if span >= 5:
                        raise RpcError("query exceeds max block range 5")
            return super().batch(calls)

    store = stores("sqlite")
    stingy = Indexer(store, StingyNode(world.chain.rpc_url or ""),
                     Contracts.from_suite(world.suite.addresses), start_block=world.start_block)
    stingy.sync()
    assert stingy.batch_blocks <= stingy.max_batch_blocks <= 5
    assert answers(Search(store)) == reference


def test_a_crash_mid_batch_applies_nothing_and_a_restart_resumes(
    world: World, stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = fresh_answers(world.chain, world.suite, world.start_block, stores)
    store = stores("sqlite")
    first = Indexer(store, world.chain.rpc_url or "", Contracts.from_suite(world.suite.addresses),
                    start_block=world.start_block, batch_blocks=10, max_batch_blocks=10)
    applied: list[int] = []

    class Crash(Exception):
        pass

    def crash_after_two(batch: Any) -> None:
        applied.append(batch.cursor.number)
        if len(applied) == 2:
            raise Crash

    first.on_batch = crash_after_two
    with pytest.raises(Crash):
        first.sync()
    cursor = store.cursor()
    assert cursor is not None and cursor.number == applied[-1]
    rows = answers(Search(store))

    real_set_meta = IndexStore.set_meta

    def fail_on_cursor(self: IndexStore, key: str, value: Any, conn: Any = None) -> None:
        if key == "cursor":
            raise Crash("power cut while committing")
        real_set_meta(self, key, value, conn)

    monkeypatch.setattr(IndexStore, "set_meta", fail_on_cursor)
    second = Indexer(store, world.chain.rpc_url or "",
                     Contracts.from_suite(world.suite.addresses), start_block=world.start_block)
    with pytest.raises(Crash):
        second.sync()
    monkeypatch.undo()
    assert store.cursor() == cursor and answers(Search(store)) == rows  # nothing half-applied

    reopened = IndexStore(store.url)  # a new process
    third = index(world.chain, world.suite, world.start_block, reopened)
    assert answers(Search(reopened)) == reference
    again = third.sync()
    assert again.events == 0 and answers(Search(reopened)) == reference


def test_a_database_refuses_another_chain_or_contract_set(world: World, stores: StoreFactory
                                                         ) -> None:
    store = stores("sqlite")
    index(world.chain, world.suite, world.start_block, store)
    other = Contracts(factories=(world.owners["T"].address,))
    with pytest.raises(Exception, match="indexes"):
        Indexer(store, world.chain.rpc_url or "", other, start_block=world.start_block)


def test_the_command_catches_up_once(world: World, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    suite_file = tmp_path / "suite.json"
    suite_file.write_text(json.dumps(world.suite.addresses.to_dict()))
    parser = argparse.ArgumentParser()
    add_indexer_arguments(parser)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    args = parser.parse_args(["--rpc", world.chain.rpc_url or "", "--db", db, "--suite",
                              str(suite_file), "--start-block", str(world.start_block), "--once"])
    assert run_indexer(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] > 50 and report["cursor"] == report["head"]
    assert names(Search(IndexStore(db)).search(Query(skill="translate"))) == ["Translator"]


def test_postgres_gives_the_same_answers_as_sqlite(world: World, stores: StoreFactory) -> None:
    pg = index(world.chain, world.suite, world.start_block, stores("postgres"))
    assert answers(Search(pg.store)) == fresh_answers(world.chain, world.suite,
                                                      world.start_block, stores)


# ------------------------------------------------------------------ reorganisations


def _rpc(chain: Chain, method: str, params: list[Any] | None = None) -> Any:
    response = chain.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
    return response["result"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_reorganisations_are_undone_and_answers_match_a_fresh_index(
    backend: str, stores: StoreFactory
) -> None:
    with start_anvil(accounts=2) as chain:
        world = build_world(chain)
        store = stores(backend)
        indexer = index(chain, world.suite, world.start_block, store)
        before = answers(Search(store))
        T, B = world.owners["T"], world.owners["B"]
        tr, buyer, painter = (world.agents[k] for k in ("translator", "buyer", "painter"))

        # Fork 1 touches every kind of state and fact, then disappears entirely.
        snapshot = _rpc(chain, "evm_snapshot")
        newcomer = world.suite.factory.create(T, card(
            "Newcomer", "Arrived on a doomed fork.", [("doomed", "Doomed", ("fork",))],
            network=chain.network))
        world.suite.registry.enroll(T, newcomer.address)
        tr.set_profile(T, card("Translator", "Now also interprets speech.",
                               [("interpret", "Interpret", ("speech",))], network=chain.network))
        world.suite.registry.unlist(T, tr.address)
        tr.pay_token(B, world.token, 10_000, payer_agent=buyer.address)
        tr.withdraw_rating(B, buyer.address)
        world.suite.reputation.revoke_feedback(B, world.identity_id, 1)
        world.suite.identity.transfer(T, B.address, world.identity_id)
        painter.set_enabled(world.owners["P"], True)
        indexer.sync()
        s = Search(store)
        assert names(s.search(Query(q="doomed"))) == ["Newcomer"]
        assert names(s.search(Query(q="interprets"))) == ["Translator"]
        assert s.search(Query(skill="translate"))["agents"] == []

        _rpc(chain, "evm_revert", [snapshot])  # the chain is now shorter than the index
        report = indexer.sync()
        assert report.reorgs == 1
        assert answers(Search(store)) == before

        # Fork 2 at the same height as a fork the index saw: only the hashes differ.
        snapshot = _rpc(chain, "evm_snapshot")
        tr.heartbeat(T)
        indexer.sync()
        _rpc(chain, "evm_revert", [snapshot])
        increase_time(chain, DAY)  # one block, as the heartbeat was
        report = indexer.sync()
        assert report.reorgs == 1 and report.cursor == report.head
        assert answers(Search(store)) == fresh_answers(chain, world.suite, world.start_block,
                                                       stores)

        # A longer replacement fork with new agents, payments and feedback.
        snapshot = _rpc(chain, "evm_snapshot")
        tr.heartbeat(T)
        indexer.sync()
        _rpc(chain, "evm_revert", [snapshot])
        payer = funded(chain)
        other = world.suite.factory.create(payer, card(
            "Other", "On the winning fork.", [("win", "Win", ())], network=chain.network))
        tr.pay(payer, ETH // 1000, payer_agent=other.address)
        world.suite.reputation.give_feedback(payer, world.identity_id, 50)
        report = indexer.sync()
        assert report.reorgs == 1
        assert answers(Search(store)) == fresh_answers(chain, world.suite, world.start_block,
                                                       stores)
        assert names(Search(store).search(Query(q="winning"))) == ["Other"]

        # A reorganisation in the middle of catching up: after the first range of a fork
        # is applied, the chain switches to another fork; the next range no longer
        # extends the stored cursor, and the index must notice before applying it.
        snapshot = _rpc(chain, "evm_snapshot")
        for i in range(3):
            world.suite.factory.create(T, card(f"Ghost {i}", "Haunts a dead fork.",
                                               [("boo", "Boo", ())], network=chain.network))
        indexer.batch_blocks = indexer.max_batch_blocks = 1

        def switch_forks(batch: Any) -> None:
            indexer.on_batch = None
            _rpc(chain, "evm_revert", [snapshot])
            for i in range(4):
                tr.heartbeat(T) if i % 2 else increase_time(chain, 60)

        indexer.on_batch = switch_forks
        report = indexer.sync()
        assert report.reorgs == 1
        assert Search(store).search(Query(q="haunts"))["agents"] == []
        assert answers(Search(store)) == fresh_answers(chain, world.suite, world.start_block,
                                                       stores)


def test_the_console_shows_the_indexed_agents_and_their_reputation_after_sign_in(
    world: World, indexed: Search,
) -> None:
    """``a402 indexer --console``: the agents the search API ranks, with their reputation,
    behind the operator token; no payment charts (the indexer has no payments of its own)."""
    from a402.agents.indexer.console_view import indexer_console

    token = "t" * 24
    client = TestClient(indexer_console(create_app(indexed), indexed, token))
    assert client.get("/agents").status_code == 200  # the API is still there
    assert 'name="token"' in client.get("/console").text  # the sign-in form, no data
    assert client.get("/console/panel").status_code == 401
    wrong = client.post("/console/login", data={"token": "x" * 24}, follow_redirects=False)
    assert wrong.status_code == 401
    signed_in = client.post("/console/login", data={"token": token}, follow_redirects=False)
    assert signed_in.status_code == 303
    page = client.get("/console").text
    assert "Agents and their reputation" in page and "Volume and latency" not in page
    ranked = indexed.search(Query(limit=100))["agents"]
    assert ranked
    for agent in ranked:
        assert agent["address"] in page and str(agent["reputation"]) in page
    rows = page.split("Agents and their reputation")[1]
    assert rows.index(ranked[0]["address"]) < rows.index(ranked[-1]["address"])


def test_hostile_queries_to_the_search_api_are_answered_with_a_reason(
    world: World, indexed: Search
) -> None:
    """Every query parameter hostile (huge numbers, NaN, invalid UTF-8, unknown and repeated
    keys, an oversized query), any method, any address: a 4xx with ``{"error", "message"}``
    or an answer, never a 5xx; the index answers the same search afterwards."""
    from hypothesis import given
    from hypothesis import strategies as st

    from tests.hostile import FUZZ, METHODS, assert_answered, hostile_queries

    client = TestClient(create_app(indexed), raise_server_exceptions=False)
    expected = client.get("/agents", params={"skill": "translate"}).json()
    address = expected["agents"][0]["address"]
    paths = ["/agents", f"/agents/{address}", "/agents/0x" + "zz" * 20, "/healthz", "/nope"]
    probes: list[str] = []

    @FUZZ
    @given(path=st.sampled_from(paths), query=hostile_queries("skill=translate&limit=2"),
           method=st.sampled_from(["GET", "GET", "GET", *METHODS]))
    def probe(path: str, query: str, method: str) -> None:
        probes.append(path)
        answer = client.request(method, path + "?" + query)
        assert_answered(answer, reason_key=None if method == "HEAD" else "error")

    probe()
    assert len(probes) >= 100
    assert client.get("/agents", params={"skill": "translate"}).json() == expected


def test_a_cursor_nested_48000_deep_is_a_400_over_http_and_the_index_keeps_serving(
    world: World, indexed: Search
) -> None:
    """Found by the hostile-input review: the cursor (base64 of JSON) was decoded without
    bounds, so a cursor of 48,000 ``[`` (a 64 KB URL) raised RecursionError (a 500) or, at
    py-evm's recursion limit, overflowed the C stack."""
    import base64 as b64

    import httpx

    from a402.background import serve_in_thread

    deep = b64.urlsafe_b64encode(b"[" * 48_000).decode().rstrip("=")
    with serve_in_thread(create_app(indexed)) as url, httpx.Client(timeout=60) as http:
        refused = http.get(url + "/agents", params={"cursor": deep})
        assert refused.status_code == 400, refused.text[:300]
        assert refused.json()["error"] == "bad_request"
        assert "cursor" in refused.json()["message"]
        assert http.get(url + "/healthz").status_code == 200
