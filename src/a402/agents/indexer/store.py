"""The indexer's store: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL (by URL).

Layout, and why:

- **Facts** — ``payments``, ``ratings``, ``feedback``, ``feedback_revocations``,
  ``feedback_responses``, ``validation_requests``, ``validation_responses``: one
  row per log, keyed by ``(block_number, log_index)``, never updated. Undoing
  blocks is deleting rows above a height.
- **State logs** — every event that overwrites something (card, owner,
  liveness, listing, ERC-8004 identity), keyed the same way, with its decoded
  arguments; the profile text a ``ProfileUpdated`` points to is fetched once
  and kept in the row, so a replay needs no chain access.
- **State** — ``agents`` (with ``agent_listings``, and for search
  ``agent_terms`` and ``agent_rank``) and ``identities``: the fold of an entity's state logs
  (:mod:`.state`). Written by catch-up incrementally; after a reorganisation the
  touched entities are rebuilt from the state logs that remain.
- **Cursor** — ``meta['cursor']`` = the last applied block's number, hash and
  timestamp, written in the same transaction as the batch it ends, so a crash
  leaves either the whole batch or none of it. ``blocks`` keeps the hashes of
  recent applied blocks (every cursor and every block with a followed log) to
  find the common ancestor after a reorganisation.
- **Derived** — ``reputation`` (score explanation) and the score in ``agents``
  and ``agent_rank`` (indexed for search), recomputed by :mod:`a402.agents.reputation`;
  ``assets`` caches token decimals.

Addresses are lowercase throughout. Amounts are exact decimal strings; ``price_key``
is the price zero-padded to 78 digits so that ``<=`` on text is ``<=`` on uint256,
exactly, on both databases, with an ordinary index.

One writer (the indexer) per database; any number of readers (API replicas).
SQLite runs in WAL mode so reads never wait for a batch; ``synchronous=NORMAL``
because everything here can be rebuilt from the chain, and WAL still makes each
batch atomic. Do not ``ANALYZE`` an SQLite index: with most reputations at 0 its
statistics lead the planner to skip-scan the rank index, 20× slower than the
default plans. Tables are prefixed ``a402_idx_``; with PostgreSQL a ``schema``
can hold one index per chain (the tests use a throwaway one).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)

from a402.agents.indexer.state import (
    AgentState,
    IdentityState,
    fold_agent,
    fold_identity,
    identity_key,
    search_terms,
)
from a402.agents.reputation import AgentFacts, Inputs, Opinion, PaymentGroup
from a402.sqlite import use_wal

PREFIX: Final = "a402_idx_"
CHUNK: Final = 500
PRICE_DIGITS: Final = 78
SCHEMA_VERSION: Final = 1

metadata = MetaData()


def _bytewise(length: int) -> String:
    """Text compared byte by byte (PostgreSQL collation "C"; SQLite's default), so prefix
    ranges and zero-padded numbers order the same on both databases, with any locale."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _facts(name: str, *columns: Column[Any]) -> Table:
    return Table(
        PREFIX + name, metadata,
        Column("block_number", BigInteger, primary_key=True),
        Column("log_index", Integer, primary_key=True),
        *columns,
    )


meta_t = Table(PREFIX + "meta", metadata, Column("key", String(64), primary_key=True),
               Column("value", Text, nullable=False))
blocks_t = Table(PREFIX + "blocks", metadata,
                 Column("number", BigInteger, primary_key=True),
                 Column("hash", String(66), nullable=False),
                 Column("ts", BigInteger, nullable=False))
state_logs_t = _facts(
    "state_logs",
    Column("entity", String(90), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("data", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
payments_t = _facts(
    "payments",
    Column("tx_hash", String(66), nullable=False),
    Column("payee", String(42), nullable=False, index=True),
    Column("payer_agent", String(42), nullable=True, index=True),
    Column("sender", String(42), nullable=False),
    Column("asset", String(42), nullable=False),
    Column("amount", String(PRICE_DIGITS), nullable=False),
    Column("amount_f", Float, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
ratings_t = _facts(
    "ratings",
    Column("agent", String(42), nullable=False, index=True),
    Column("rater", String(42), nullable=False),
    Column("sender", String(42), nullable=False),
    Column("score", Integer, nullable=True),  # NULL: the rating was withdrawn
    Column("comment", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
feedback_t = _facts(
    "feedback",
    Column("agent_id", String(80), nullable=False, index=True),
    Column("client", String(42), nullable=False),
    Column("fb_index", BigInteger, nullable=False),
    Column("value", String(42), nullable=False),
    Column("value_decimals", Integer, nullable=False),
    Column("tag1", Text, nullable=False),
    Column("tag2", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("uri", Text, nullable=False),
    Column("hash", String(66), nullable=False),
    Column("ts", BigInteger, nullable=False),
)
revocations_t = _facts(
    "feedback_revocations",
    Column("agent_id", String(80), nullable=False, index=True),
    Column("client", String(42), nullable=False),
    Column("fb_index", BigInteger, nullable=False),
)
responses_t = _facts(
    "feedback_responses",
    Column("agent_id", String(80), nullable=False, index=True),
    Column("client", String(42), nullable=False),
    Column("fb_index", BigInteger, nullable=False),
    Column("responder", String(42), nullable=False),
    Column("uri", Text, nullable=False),
    Column("hash", String(66), nullable=False),
)
validation_requests_t = _facts(
    "validation_requests",
    Column("agent_id", String(80), nullable=False, index=True),
    Column("validator", String(42), nullable=False),
    Column("request_hash", String(66), nullable=False, index=True),
    Column("uri", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
validation_responses_t = _facts(
    "validation_responses",
    Column("agent_id", String(80), nullable=False, index=True),
    Column("validator", String(42), nullable=False),
    Column("request_hash", String(66), nullable=False, index=True),
    Column("response", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Column("response_hash", String(66), nullable=False),
    Column("tag", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
agents_t = Table(
    PREFIX + "agents", metadata,
    Column("address", String(42), primary_key=True),
    Column("owner", String(42), nullable=True, index=True),
    Column("factory_index", BigInteger, nullable=True),
    Column("created_block", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=True),
    Column("revision", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("profile", Text, nullable=True),
    Column("url", Text, nullable=True),  # the first interface's, for result lists
    Column("skills", Text, nullable=False),  # [{id, name, tags}], for result lists
    Column("profile_data", String(42), nullable=True),
    Column("streaming", Boolean, nullable=False),
    Column("push_notifications", Boolean, nullable=False),
    Column("extended_agent_card", Boolean, nullable=False),
    Column("pay_scheme", Text, nullable=True),
    Column("pay_network", String(100), nullable=True),
    Column("pay_asset", String(42), nullable=True),
    Column("pay_amount", String(PRICE_DIGITS), nullable=True),
    Column("pay_to", String(42), nullable=True),
    Column("price_key", _bytewise(PRICE_DIGITS), nullable=False),
    Column("accepted_tokens", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("activity_window", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("active_until", BigInteger, nullable=False),
    Column("updated_block", BigInteger, nullable=False),
    Column("reputation", Float, nullable=False),
)
rank_t = Table(
    # What search filters and orders on, apart from the wide rows: a candidate set from the
    # term index is checked and sorted here, touching ~100 bytes per agent instead of its
    # card, whatever index the planner picks; the page's wide rows are fetched afterwards.
    PREFIX + "agent_rank", metadata,
    Column("address", String(42), primary_key=True),
    Column("reputation", Float, nullable=False),
    Column("active_until", BigInteger, nullable=False, index=True),
    Column("price_key", _bytewise(PRICE_DIGITS), nullable=False, index=True),
    Column("pay_network", String(100), nullable=True),
    Column("pay_asset", String(42), nullable=True),
)
Index(PREFIX + "agent_rank_order", rank_t.c.reputation.desc(), rank_t.c.address)
Index(PREFIX + "agent_rank_network", rank_t.c.pay_network, rank_t.c.reputation.desc(),
      rank_t.c.address)
listings_t = Table(
    PREFIX + "agent_listings", metadata,
    Column("agent", String(42), primary_key=True),
    Column("registry", String(42), primary_key=True, index=True),
)
terms_t = Table(
    PREFIX + "agent_terms", metadata,
    Column("kind", String(1), primary_key=True),
    Column("term", _bytewise(200), primary_key=True),
    Column("agent", String(42), primary_key=True, index=True),
)
reputation_t = Table(
    PREFIX + "reputation", metadata,
    Column("agent", String(42), primary_key=True),
    Column("score", Float, nullable=False),
    Column("detail", Text, nullable=False),
)
identities_t = Table(
    PREFIX + "identities", metadata,
    Column("agent_id", String(80), primary_key=True),
    Column("owner", String(42), nullable=True),
    Column("uri", Text, nullable=False),
    Column("wallet", String(42), nullable=True),
    Column("metadata", Text, nullable=False),
    Column("linked_agent", String(42), nullable=True, index=True),
    Column("registered_block", BigInteger, nullable=True),
    Column("registered_at", BigInteger, nullable=True),
    Column("updated_block", BigInteger, nullable=False),
)
assets_t = Table(PREFIX + "assets", metadata, Column("address", String(42), primary_key=True),
                 Column("decimals", Integer, nullable=False))

FACT_TABLES: Final = (state_logs_t, payments_t, ratings_t, feedback_t, revocations_t,
                      responses_t, validation_requests_t, validation_responses_t, blocks_t)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Cursor:
    """The last block whose logs are all applied."""

    number: int
    hash: str
    timestamp: int


@dataclass(frozen=True)
class LogEvent:
    """One decoded log (``source`` as in :mod:`.abi`; ``args`` may carry ``profile``)."""

    block: int
    log_index: int
    tx_hash: str
    address: str
    source: str
    name: str
    args: dict[str, Any]
    ts: int


@dataclass
class Batch:
    """Everything one block range adds: events in chain order, block hashes, the new cursor."""

    events: list[LogEvent]
    blocks: dict[int, tuple[str, int]]
    cursor: Cursor
    new_agents: set[str] = field(default_factory=set)


class ConfigMismatch(RuntimeError):
    """The database indexes another chain or other contracts than the ones given."""


def price_key(amount: int | None) -> str:
    return str(amount or 0).zfill(PRICE_DIGITS)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------------------- store


class IndexStore:
    def __init__(self, url: str = "sqlite:///a402-indexer.db", *, schema: str | None = None
                 ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                   pool_use_lifo=True)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)
            if schema:
                with engine.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine: Engine = engine
        self.schema = schema
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # ------------------------------------------------------------------------ meta

    def get_meta(self, key: str, conn: Connection | None = None) -> Any:
        if conn is None:
            with self.read() as c:
                return self.get_meta(key, c)
        value = conn.execute(select(meta_t.c.value).where(meta_t.c.key == key)).scalar()
        return None if value is None else json.loads(value)

    def set_meta(self, key: str, value: Any, conn: Connection | None = None) -> None:
        if conn is None:
            with self.begin() as c:
                self.set_meta(key, value, c)
            return
        encoded = json.dumps(value, sort_keys=True)
        if conn.execute(update(meta_t).where(meta_t.c.key == key).values(value=encoded)
                        ).rowcount == 0:
            conn.execute(insert(meta_t).values(key=key, value=encoded))

    def check_config(self, config: Mapping[str, Any]) -> None:
        """Bind the database to one chain and contract set; refuse any other."""
        wanted = {**config, "schema_version": SCHEMA_VERSION}
        with self.begin() as conn:
            stored = self.get_meta("config", conn)
            if stored is None:
                self.set_meta("config", wanted, conn)
            elif stored != json.loads(json.dumps(wanted, sort_keys=True)):
                raise ConfigMismatch(f"this database indexes {stored}, not {wanted}")

    def cursor(self, conn: Connection | None = None) -> Cursor | None:
        value = self.get_meta("cursor", conn)
        return None if value is None else Cursor(**value)

    def known_agents(self) -> set[str]:
        with self.read() as conn:
            return set(conn.execute(select(agents_t.c.address)).scalars())

    def blocks_desc(self, below_or_at: int, limit: int) -> list[tuple[int, str]]:
        with self.read() as conn:
            rows = conn.execute(
                select(blocks_t.c.number, blocks_t.c.hash)
                .where(blocks_t.c.number <= below_or_at)
                .order_by(blocks_t.c.number.desc()).limit(limit))
            return [(int(n), str(h)) for n, h in rows]

    def block(self, number: int) -> Cursor | None:
        with self.read() as conn:
            row = conn.execute(select(blocks_t).where(blocks_t.c.number == number)).first()
        return Cursor(int(row.number), row.hash, int(row.ts)) if row else None

    # ------------------------------------------------------------------- applying

    def apply_batch(self, batch: Batch) -> None:
        """Apply one block range and move the cursor, atomically."""
        state_rows: list[dict[str, Any]] = []
        facts: dict[Table, list[dict[str, Any]]] = defaultdict(list)
        by_entity: dict[str, list[tuple[str, dict[str, Any], int, int]]] = defaultdict(list)
        dirty = False
        for e in batch.events:
            a = e.args
            key = {"block_number": e.block, "log_index": e.log_index}
            entity: str | None = None
            data = a
            if e.source == "agent":
                if e.name == "Paid":
                    amount = int(a["amount"])
                    facts[payments_t].append({
                        **key, "tx_hash": e.tx_hash, "payee": e.address,
                        "payer_agent": None if int(a["payerAgent"], 16) == 0 else a["payerAgent"],
                        "sender": a["from"], "asset": a["asset"], "amount": str(amount),
                        "amount_f": float(amount), "ts": e.ts})
                    dirty = True
                    continue
                if e.name in ("Rated", "RatingWithdrawn"):
                    facts[ratings_t].append({
                        **key, "agent": e.address, "rater": a["raterAgent"], "sender": a["sender"],
                        "score": a.get("score") if e.name == "Rated" else None,
                        "comment": a.get("comment", ""), "ts": e.ts})
                    dirty = True
                    continue
                entity = e.address
                if e.name == "OwnershipTransferred":
                    dirty = True
            elif e.source == "factory":
                entity = a["agent"]
            elif e.source == "registry":
                entity, data = a["agent"], {**a, "registry": e.address}
            elif e.source == "identity":
                entity = identity_key(a["tokenId"] if e.name == "Transfer" else a["agentId"])
                dirty = True
            elif e.source == "reputation":
                dirty = True
                common = {**key, "agent_id": str(a["agentId"]), "client": a["clientAddress"],
                          "fb_index": int(a["feedbackIndex"])}
                if e.name == "NewFeedback":
                    facts[feedback_t].append({
                        **common, "value": str(a["value"]), "value_decimals": a["valueDecimals"],
                        "tag1": a["tag1"], "tag2": a["tag2"], "endpoint": a["endpoint"],
                        "uri": a["feedbackURI"], "hash": a["feedbackHash"], "ts": e.ts})
                elif e.name == "FeedbackRevoked":
                    facts[revocations_t].append(common)
                else:
                    facts[responses_t].append({**common, "responder": a["responder"],
                                               "uri": a["responseURI"], "hash": a["responseHash"]})
                continue
            elif e.source == "validation":
                common = {**key, "agent_id": str(a["agentId"]),
                          "validator": a["validatorAddress"], "request_hash": a["requestHash"],
                          "ts": e.ts}
                if e.name == "ValidationRequest":
                    facts[validation_requests_t].append({**common, "uri": a["requestURI"]})
                else:
                    facts[validation_responses_t].append({
                        **common, "response": int(a["response"]), "uri": a["responseURI"],
                        "response_hash": a["responseHash"], "tag": a["tag"]})
                continue
            if entity is None:
                continue
            if e.name == "PaymentTermsUpdated":
                dirty = True  # the price asset decides which payments make volume
            state_rows.append({**key, "entity": entity, "kind": e.name,
                               "data": json.dumps(data, separators=(",", ":")), "ts": e.ts})
            by_entity[entity].append((e.name, data, e.ts, e.block))

        blocks = dict(batch.blocks)
        blocks[batch.cursor.number] = (batch.cursor.hash, batch.cursor.timestamp)
        with self.begin() as conn:
            if state_rows:
                conn.execute(insert(state_logs_t), state_rows)
            for table, rows in facts.items():
                conn.execute(insert(table), rows)
            for chunk in _chunks(sorted(blocks)):
                conn.execute(delete(blocks_t).where(blocks_t.c.number.in_(chunk)))
            conn.execute(insert(blocks_t), [{"number": n, "hash": h, "ts": t}
                                            for n, (h, t) in sorted(blocks.items())])
            agents = [k for k in by_entity if not k.startswith("id:")]
            if agents:
                states = self._load_agents(conn, agents)
                existing = set(states)
                for address in agents:
                    state = states.setdefault(address, AgentState(address))
                    for kind, data, ts, block in by_entity[address]:
                        fold_agent(state, kind, data, ts, block)
                self._write_agents(conn, [states[a] for a in agents], existing)
            identities = [k for k in by_entity if k.startswith("id:")]
            if identities:
                ids = self._load_identities(conn, identities)
                existing = set(ids)
                for key_ in identities:
                    ident = ids.setdefault(key_, IdentityState(key_[3:]))
                    for kind, data, ts, block in by_entity[key_]:
                        fold_identity(ident, kind, data, ts, block)
                self._write_identities(conn, [ids[k] for k in identities], existing)
            self.set_meta("cursor", batch.cursor.__dict__, conn)
            if dirty:
                self.set_meta("reputation_dirty", True, conn)

    def rollback(self, ancestor: Cursor | None) -> int:
        """Undo every block above ``ancestor`` (None: everything); returns entities rebuilt."""
        height = -1 if ancestor is None else ancestor.number
        with self.begin() as conn:
            entities = list(conn.execute(
                select(state_logs_t.c.entity).where(state_logs_t.c.block_number > height)
                .distinct()).scalars())
            for table in FACT_TABLES:
                column = table.c.number if table is blocks_t else table.c.block_number
                conn.execute(delete(table).where(column > height))
            agents = [e for e in entities if not e.startswith("id:")]
            identities = [e for e in entities if e.startswith("id:")]
            replay = self._state_logs(conn, entities)
            if agents:
                old = self._load_agents(conn, agents)
                states: list[AgentState] = []
                for address in agents:
                    if not replay.get(address):
                        continue
                    state = AgentState(address)
                    if address in old:
                        state.reputation = old[address].reputation
                    for kind, data, ts, block in replay[address]:
                        fold_agent(state, kind, data, ts, block)
                    states.append(state)
                gone = [a for a in agents if not replay.get(a)]
                for chunk in _chunks(gone):
                    conn.execute(delete(reputation_t).where(reputation_t.c.agent.in_(chunk)))
                self._write_agents(conn, states, set(old), delete_also=gone)
            if identities:
                old_ids = self._load_identities(conn, identities)
                fresh: list[IdentityState] = []
                for key_ in identities:
                    if not replay.get(key_):
                        continue
                    ident = IdentityState(key_[3:])
                    for kind, data, ts, block in replay[key_]:
                        fold_identity(ident, kind, data, ts, block)
                    fresh.append(ident)
                gone_ids = [k for k in identities if not replay.get(k)]
                self._write_identities(conn, fresh, set(old_ids), delete_also=gone_ids)
            if ancestor is None:
                conn.execute(delete(meta_t).where(meta_t.c.key == "cursor"))
            else:
                self.set_meta("cursor", ancestor.__dict__, conn)
            self.set_meta("reputation_dirty", True, conn)
        return len(entities)

    def prune_blocks(self, below: int) -> None:
        """Forget block hashes under ``below`` (a reorganisation deeper re-indexes from scratch)."""
        with self.begin() as conn:
            conn.execute(delete(blocks_t).where(blocks_t.c.number < below))

    # ----------------------------------------------------------- state load/write

    def _state_logs(self, conn: Connection, entities: Sequence[str]
                    ) -> dict[str, list[tuple[str, dict[str, Any], int, int]]]:
        out: dict[str, list[tuple[str, dict[str, Any], int, int]]] = defaultdict(list)
        for chunk in _chunks(list(entities)):
            rows = conn.execute(
                select(state_logs_t.c.entity, state_logs_t.c.kind, state_logs_t.c.data,
                       state_logs_t.c.ts, state_logs_t.c.block_number, state_logs_t.c.log_index)
                .where(state_logs_t.c.entity.in_(chunk)))
            for entity, kind, data, ts, block, _ in sorted(rows, key=lambda r: (r[4], r[5])):
                out[entity].append((kind, json.loads(data), int(ts), int(block)))
        return out

    def _load_agents(self, conn: Connection, addresses: Sequence[str]) -> dict[str, AgentState]:
        states: dict[str, AgentState] = {}
        listings: dict[str, set[str]] = defaultdict(set)
        for chunk in _chunks(list(addresses)):
            for row in conn.execute(select(agents_t).where(agents_t.c.address.in_(chunk))):
                states[row.address] = _agent_from_row(row)
            for agent, registry in conn.execute(
                    select(listings_t.c.agent, listings_t.c.registry)
                    .where(listings_t.c.agent.in_(chunk))):
                listings[agent].add(registry)
        for address, state in states.items():
            state.listings = listings.get(address, set())
        return states

    def _write_agents(self, conn: Connection, states: Sequence[AgentState], existing: set[str],
                      *, delete_also: Sequence[str] = ()) -> None:
        """Replace the rows of ``states`` (and drop ``delete_also``): agent, listings, terms."""
        stale = sorted({s.address for s in states if s.address in existing} | set(delete_also))
        retermed = sorted({s.address for s in states
                           if s.profile_changed or s.address not in existing} | set(delete_also))
        for chunk in _chunks(stale):
            conn.execute(delete(agents_t).where(agents_t.c.address.in_(chunk)))
            conn.execute(delete(rank_t).where(rank_t.c.address.in_(chunk)))
            conn.execute(delete(listings_t).where(listings_t.c.agent.in_(chunk)))
        for chunk in _chunks(retermed):
            conn.execute(delete(terms_t).where(terms_t.c.agent.in_(chunk)))
        if not states:
            return
        rows = [_agent_row(s) for s in states]
        conn.execute(insert(agents_t), rows)
        conn.execute(insert(rank_t), [{c.name: r[c.name] for c in rank_t.c} for r in rows])
        listing_rows = [{"agent": s.address, "registry": r} for s in states for r in s.listings]
        if listing_rows:
            conn.execute(insert(listings_t), listing_rows)
        term_rows = [
            {"kind": kind, "term": term, "agent": s.address}
            for s in states if s.profile_changed or s.address not in existing
            for kind, term in sorted(search_terms(s.profile))
        ]
        if term_rows:
            conn.execute(insert(terms_t), term_rows)

    def _load_identities(self, conn: Connection, keys: Sequence[str]
                         ) -> dict[str, IdentityState]:
        out: dict[str, IdentityState] = {}
        ids = [k[3:] for k in keys]
        for chunk in _chunks(ids):
            for row in conn.execute(select(identities_t).where(
                    identities_t.c.agent_id.in_(chunk))):
                out[identity_key(row.agent_id)] = IdentityState(
                    agent_id=row.agent_id, owner=row.owner, uri=row.uri, wallet=row.wallet,
                    metadata=json.loads(row.metadata), registered_block=row.registered_block,
                    registered_at=row.registered_at, updated_block=int(row.updated_block))
        return out

    def _write_identities(self, conn: Connection, states: Sequence[IdentityState],
                          existing: set[str], *, delete_also: Sequence[str] = ()) -> None:
        stale = sorted({s.agent_id for s in states if identity_key(s.agent_id) in existing}
                       | {k[3:] for k in delete_also})
        for chunk in _chunks(stale):
            conn.execute(delete(identities_t).where(identities_t.c.agent_id.in_(chunk)))
        if states:
            conn.execute(insert(identities_t), [{
                "agent_id": s.agent_id, "owner": s.owner, "uri": s.uri, "wallet": s.wallet,
                "metadata": json.dumps(s.metadata, sort_keys=True),
                "linked_agent": s.linked_agent, "registered_block": s.registered_block,
                "registered_at": s.registered_at, "updated_block": s.updated_block,
            } for s in states])

    # ----------------------------------------------------------------- reputation

    def unknown_assets(self) -> list[str]:
        with self.read() as conn:
            rows = conn.execute(
                select(agents_t.c.pay_asset).where(agents_t.c.pay_asset.is_not(None))
                .where(agents_t.c.pay_asset.not_in(select(assets_t.c.address))).distinct())
            return sorted(a for a in rows.scalars() if a)

    def add_assets(self, decimals: Mapping[str, int]) -> None:
        if decimals:
            with self.begin() as conn:
                conn.execute(insert(assets_t), [{"address": a, "decimals": d}
                                                for a, d in decimals.items()])

    def reputation_inputs(self) -> Inputs:
        """Everything :func:`a402.agents.reputation.score_agents` needs, read consistently."""
        with self.read() as conn, conn.begin():
            owners: dict[str, set[str]] = defaultdict(set)
            agents_rows = conn.execute(
                select(agents_t.c.address, agents_t.c.owner, agents_t.c.pay_asset)).all()
            for address, owner, _ in agents_rows:
                if owner:
                    owners[address].add(owner)
            for entity, data in conn.execute(
                    select(state_logs_t.c.entity, state_logs_t.c.data)
                    .where(state_logs_t.c.kind == "OwnershipTransferred")):
                d = json.loads(data)
                owners[entity].update(a for a in (d["previousOwner"], d["newOwner"])
                                      if int(a, 16) != 0)
            agents = [AgentFacts(a, tuple(sorted(owners.get(a, ()))), asset)
                      for a, _, asset in agents_rows]
            current_owner = {a: o for a, o, _ in agents_rows}
            p = payments_t.c
            payments = [
                PaymentGroup(payee, payer_agent, sender, asset, int(count), float(total or 0),
                             int(first), int(last))
                for payee, payer_agent, sender, asset, count, total, first, last in conn.execute(
                    select(p.payee, p.payer_agent, p.sender, p.asset, func.count(),
                           func.sum(p.amount_f), func.min(p.ts), func.max(p.ts))
                    .group_by(p.payee, p.payer_agent, p.sender, p.asset))
            ]
            opinions = [
                Opinion(agent, rater, "rating", None if score is None else float(score),
                        (int(block), int(index)))
                for block, index, agent, rater, score in conn.execute(
                    select(ratings_t.c.block_number, ratings_t.c.log_index, ratings_t.c.agent,
                           ratings_t.c.rater, ratings_t.c.score))
            ]
            links = {
                agent_id: agent
                for agent_id, owner, agent in conn.execute(
                    select(identities_t.c.agent_id, identities_t.c.owner,
                           identities_t.c.linked_agent)
                    .where(identities_t.c.linked_agent.is_not(None)))
                if owner is not None and current_owner.get(agent) == owner
            }
            revoked = {
                (agent_id, client, int(index)) for agent_id, client, index in conn.execute(
                    select(revocations_t.c.agent_id, revocations_t.c.client,
                           revocations_t.c.fb_index))
            }
            f = feedback_t.c
            for block, index, agent_id, client, fb_index, value, decimals, tag1 in conn.execute(
                    select(f.block_number, f.log_index, f.agent_id, f.client, f.fb_index,
                           f.value, f.value_decimals, f.tag1)):
                agent = links.get(agent_id)
                if agent is None:
                    continue
                opinions.append(Opinion(
                    agent, client, "erc8004", int(value) / 10 ** int(decimals),
                    (int(block), int(index)), tag=tag1,
                    revoked=(agent_id, client, int(fb_index)) in revoked))
            decimals_map = {a: int(d) for a, d in conn.execute(
                select(assets_t.c.address, assets_t.c.decimals))}
        return Inputs(agents, payments, opinions, decimals_map)

    def validations(self, agent_id: int | str, conn: Connection | None = None
                    ) -> list[dict[str, Any]]:
        """ERC-8004 validation requests of one identity, oldest first, each with its latest
        answer (None until the validator answers; a later answer replaces an earlier one)."""
        if conn is None:
            with self.read() as c:
                return self.validations(agent_id, c)
        q, r = validation_requests_t.c, validation_responses_t.c
        out: dict[str, dict[str, Any]] = {}
        for row in conn.execute(select(q.request_hash, q.validator, q.uri, q.block_number, q.ts)
                                .where(q.agent_id == str(agent_id))
                                .order_by(q.block_number, q.log_index)):
            out[row.request_hash] = {
                "request_hash": row.request_hash, "validator": row.validator,
                "request_uri": row.uri, "requested_block": row.block_number,
                "requested_at": row.ts, "response": None}
        for answer in conn.execute(select(r.request_hash, r.response, r.uri, r.response_hash,
                                          r.tag, r.block_number, r.ts)
                                   .where(r.agent_id == str(agent_id))
                                   .order_by(r.block_number, r.log_index)):
            if answer.request_hash in out:
                out[answer.request_hash]["response"] = {
                    "response": answer.response, "response_uri": answer.uri,
                    "response_hash": answer.response_hash, "tag": answer.tag,
                    "block": answer.block_number, "timestamp": answer.ts}
        return list(out.values())

    def reputation_details(self) -> dict[str, str]:
        with self.read() as conn:
            return dict(conn.execute(select(reputation_t.c.agent, reputation_t.c.detail)).all())

    def write_reputation(self, changed: Mapping[str, tuple[float, str]], computed_at: int,
                         existing: Iterable[str]) -> None:
        """Store changed scores (``address → (score, detail JSON)``) and clear the dirty flag."""
        have = set(existing)
        with self.begin() as conn:
            items = sorted(changed.items())
            if items:
                scores = [{"a": a, "s": score} for a, (score, _) in items]
                for table in (agents_t, rank_t):
                    conn.execute(update(table).where(table.c.address == bindparam("a"))
                                 .values(reputation=bindparam("s")), scores)
                updates = [{"a": a, "s": s, "d": d} for a, (s, d) in items if a in have]
                if updates:
                    conn.execute(
                        update(reputation_t).where(reputation_t.c.agent == bindparam("a"))
                        .values(score=bindparam("s"), detail=bindparam("d")), updates)
                inserts = [{"agent": a, "score": s, "detail": d}
                           for a, (s, d) in items if a not in have]
                if inserts:
                    conn.execute(insert(reputation_t), inserts)
            self.set_meta("reputation", {"computed_at": computed_at}, conn)
            self.set_meta("reputation_dirty", False, conn)


# ----------------------------------------------------------------------- row mapping


def _agent_row(s: AgentState) -> dict[str, Any]:
    profile = s.profile or {}
    pay = s.payment or {}
    return {
        "address": s.address, "owner": s.owner, "factory_index": s.factory_index,
        "created_block": s.created_block, "created_at": s.created_at, "revision": s.revision,
        "name": profile.get("name", ""), "description": profile.get("description", ""),
        "version": s.version,
        "profile": None if s.profile is None else json.dumps(s.profile, separators=(",", ":")),
        "url": profile["interfaces"][0][0] if profile.get("interfaces") else None,
        "skills": json.dumps([{"id": k["id"], "name": k["name"], "tags": k["tags"]}
                              for k in profile.get("skills", [])], separators=(",", ":")),
        "profile_data": s.profile_data, "streaming": s.streaming,
        "push_notifications": s.push_notifications,
        "extended_agent_card": s.extended_agent_card,
        "pay_scheme": pay.get("scheme"), "pay_network": pay.get("network"),
        "pay_asset": pay.get("asset"), "pay_amount": pay.get("amount"),
        "pay_to": pay.get("payTo"), "price_key": price_key(s.price),
        "accepted_tokens": json.dumps(s.accepted_tokens), "enabled": s.enabled,
        "activity_window": s.activity_window, "last_seen": s.last_seen,
        "active_until": s.active_until, "updated_block": s.updated_block,
        "reputation": s.reputation,
    }


def _agent_from_row(row: Any) -> AgentState:
    payment = None
    if row.pay_to is not None:
        payment = {"scheme": row.pay_scheme, "network": row.pay_network, "asset": row.pay_asset,
                   "amount": row.pay_amount, "payTo": row.pay_to}
    return AgentState(
        address=row.address, owner=row.owner, factory_index=row.factory_index,
        created_block=row.created_block, created_at=row.created_at, revision=int(row.revision),
        profile=None if row.profile is None else json.loads(row.profile),
        profile_data=row.profile_data, version=row.version, streaming=bool(row.streaming),
        push_notifications=bool(row.push_notifications),
        extended_agent_card=bool(row.extended_agent_card), payment=payment,
        accepted_tokens=json.loads(row.accepted_tokens), enabled=bool(row.enabled),
        activity_window=int(row.activity_window), last_seen=int(row.last_seen),
        updated_block=int(row.updated_block), reputation=float(row.reputation),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    use_wal(dbapi_connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Searches sort candidate sets in temporary b-trees and revisit the same index pages.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


__all__ = ["Batch", "ConfigMismatch", "Cursor", "IndexStore", "LogEvent", "price_key"]
