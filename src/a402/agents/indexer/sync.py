"""Following the chain: fetch logs by block range, apply them atomically, survive reorganisations.

One round (:meth:`Indexer.poll`):

1. ``head = eth_blockNumber``; the target is ``head − confirmations``.
2. **Reorg check.** The stored cursor (number, hash) must still be on the
   chain. If not, walk back through the stored block hashes (newest first,
   fetched in JSON-RPC batches) to the newest one the chain still has — the
   common ancestor — and :meth:`IndexStore.rollback` to it: fact rows above it
   are deleted, and every entity with events above it is rebuilt from its
   remaining events. If no stored hash matches, everything is rebuilt from the
   start block (slow, never wrong).
3. **Catch-up**, one range ``[a, b]`` at a time: headers of ``a`` and ``b``;
   ``eth_getLogs`` for the factories, registries and ERC-8004 pair (by address
   and topic) and for the agents (see below); the profile blobs new
   ``ProfileUpdated`` events point to (``eth_getCode``, batched); the header of
   ``b`` again. The range is applied only if ``a``'s parent is the cursor and
   ``b``'s hash did not change meanwhile, i.e. everything read belongs to one
   chain that extends what is stored; otherwise the round ends and the next one
   starts with the reorg check. Each range is one database transaction
   together with the new cursor.
4. Reputation is recomputed when an input changed (payments, ratings,
   feedback, owners, terms, identities) or chain time moved on by
   ``reputation_interval`` (ages grow), at most every ``reputation_pause``
   seconds; :meth:`Indexer.sync` always ends with up-to-date scores.

**Agents are many contracts.** Their logs are fetched by topic alone (every
``Agent`` event) and kept when the address is a known agent (or one created in
the same range — the factory's logs are read first), or, while there are few
agents (``address_filter_limit``), by address list. Topic-only is one query
whatever the number of agents, best for a dedicated or local node; the address
list suits shared public nodes, where unrelated contracts emit
``OwnershipTransferred`` too.

Ranges start at ``batch_blocks`` blocks and adapt: halved when the node refuses
a range (range or result-size limits; a refused size is never tried again),
doubled (up to ``max_batch_blocks``) while ranges come back light.

One writer per database: run one indexer per store (API replicas only read).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from a402.agents.indexer.abi import UndecodableLog, decode_log, topics_of
from a402.agents.indexer.state import ZERO, decode_profile_code
from a402.agents.indexer.store import Batch, Cursor, IndexStore, LogEvent
from a402.agents.reputation import score_agents
from a402.chain.rpc import ChainUnavailable, RpcError
from a402.evm.address import address_key

log = logging.getLogger(__name__)

DECIMALS_SELECTOR = "0x313ce567"


# ------------------------------------------------------------------------------ RPC


class JsonRpc:
    """JSON-RPC over HTTP with batching (one POST for many calls), keep-alive."""

    def __init__(self, url: str, *, timeout: float = 60.0, max_batch: int = 200) -> None:
        self.url = url
        self.max_batch = max_batch
        self._http = httpx.Client(timeout=timeout)
        self.calls = 0

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, params: list[Any]) -> Any:
        return self.batch([(method, params)])[0]

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(calls), self.max_batch):
            chunk = calls[start:start + self.max_batch]
            body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                    for i, (m, p) in enumerate(chunk)]
            try:
                response = self._http.post(self.url, json=body)
            except httpx.TransportError as e:
                raise ChainUnavailable(f"{chunk[0][0]}: {e}") from e
            if response.status_code >= 500:
                raise ChainUnavailable(f"{chunk[0][0]}: HTTP {response.status_code}")
            data = response.json()
            if isinstance(data, dict):  # the whole batch was refused
                raise RpcError(str(data.get("error", data)))
            by_id = {item.get("id"): item for item in data}
            for i, (method, _) in enumerate(chunk):
                item = by_id.get(i)
                if item is None:
                    raise RpcError(f"{method}: no answer in the batch")
                if "error" in item:
                    raise RpcError(f"{method}: {item['error'].get('message', item['error'])}")
                out.append(item["result"])
            self.calls += len(chunk)
        return out


# -------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Contracts:
    """What to follow: factories (whose agents are followed), registries (address → label),
    the ERC-8004 identity, reputation and validation registries."""

    factories: tuple[str, ...]
    registries: Mapping[str, str] = field(default_factory=dict)
    identity: str | None = None
    reputation: str | None = None
    validation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "factories", tuple(address_key(a) for a in self.factories))
        object.__setattr__(self, "registries",
                           {address_key(a): label for a, label in self.registries.items()})
        for name in ("identity", "reputation", "validation"):
            value = getattr(self, name)
            object.__setattr__(self, name, address_key(value) if value else None)

    @classmethod
    def from_suite(cls, addresses: Mapping[str, str] | Any) -> Contracts:
        """From ``SuiteAddresses`` (or its ``to_dict()``): the whole ``AgentSuite``."""
        d = addresses if isinstance(addresses, Mapping) else addresses.to_dict()
        return cls(factories=(d["factory"],),
                   registries={d["registry"]: "open", d["curated_registry"]: "curated"},
                   identity=d.get("identity"), reputation=d.get("reputation"),
                   validation=d.get("validation") or None)

    def sources(self) -> dict[str, str]:
        out = {a: "factory" for a in self.factories}
        out.update({a: "registry" for a in self.registries})
        if self.identity:
            out[self.identity] = "identity"
        if self.reputation:
            out[self.reputation] = "reputation"
        if self.validation:
            out[self.validation] = "validation"
        return out

    def to_config(self) -> dict[str, Any]:
        config = {"factories": sorted(self.factories), "registries": dict(sorted(
            self.registries.items())), "identity": self.identity, "reputation": self.reputation}
        if self.validation:  # absent, an index made before validation keeps its config
            config["validation"] = self.validation
        return config


@dataclass
class SyncReport:
    head: int = 0
    cursor: int | None = None
    blocks: int = 0
    events: int = 0
    ranges: int = 0
    reorgs: int = 0
    rolled_back_to: int | None = None
    reputation_computed: bool = False


class _Inconsistent(Exception):
    """What was read spans two forks; the next round starts with the reorg check."""


# ------------------------------------------------------------------------- indexer


class Indexer:
    def __init__(
        self, store: IndexStore, rpc: JsonRpc | str, contracts: Contracts, *,
        start_block: int = 0, confirmations: int = 0, batch_blocks: int = 2_000,
        max_batch_blocks: int = 50_000, address_filter_limit: int = 1_000,
        agent_filter: str = "auto", reputation_interval: int = 600, reorg_window: int = 4_096,
        reputation_pause: float = 30.0,
    ) -> None:
        if agent_filter not in ("auto", "topics", "addresses"):
            raise ValueError("agent_filter is auto, topics or addresses")
        self.store = store
        self.rpc = JsonRpc(rpc) if isinstance(rpc, str) else rpc
        self.contracts = contracts
        self.start_block = start_block
        self.confirmations = confirmations
        self.batch_blocks = max(1, batch_blocks)
        self.max_batch_blocks = max(self.batch_blocks, max_batch_blocks)
        self.address_filter_limit = address_filter_limit
        self.agent_filter = agent_filter
        self.reputation_interval = reputation_interval
        self.reputation_pause = reputation_pause
        self._last_reputation = -float("inf")
        self.reorg_window = reorg_window
        self._sources = contracts.sources()
        self._core_topics = sorted({t for s in set(self._sources.values()) for t in topics_of(s)})
        self._agent_topics = list(topics_of("agent"))
        self.chain_id = int(self.rpc.call("eth_chainId", []), 16)
        store.check_config({"chain_id": self.chain_id, "start_block": start_block,
                            **contracts.to_config()})
        self._known = store.known_agents()
        self._details: dict[str, str] | None = None
        self.head: int | None = None
        self.on_batch: Callable[[Batch], None] | None = None

    # ------------------------------------------------------------------- rounds

    def poll(self) -> SyncReport:
        """One round: reorg check, catch up to ``head − confirmations``, reputation."""
        report = SyncReport()
        head = int(self.rpc.call("eth_blockNumber", []), 16)
        report.head = self.head = head
        target = head - self.confirmations
        self._check_reorg(report)
        cursor = self.store.cursor()
        retries = 0
        while True:
            next_block = self.start_block if cursor is None else cursor.number + 1
            if next_block > target:
                break
            end = min(target, next_block + self.batch_blocks - 1)
            try:
                batch = self._fetch(next_block, end, cursor)
            except _Inconsistent as e:
                log.info("range %d..%d spans a reorganisation (%s); rechecking", next_block,
                         end, e)
                retries += 1
                if retries > 3:
                    break  # the chain is moving under us; try again next round
                self._check_reorg(report)
                cursor = self.store.cursor()
                continue
            except RpcError as e:
                if end > next_block and _range_refused(str(e)):
                    # Never grow back to a size the node refused.
                    self.max_batch_blocks = end - next_block
                    self.batch_blocks = max(1, (end - next_block + 1) // 2)
                    log.info("node refused %d blocks, trying %d", end - next_block + 1,
                             self.batch_blocks)
                    continue
                raise
            self.store.apply_batch(batch)
            self._known |= batch.new_agents
            if self.on_batch:
                self.on_batch(batch)
            report.ranges += 1
            report.events += len(batch.events)
            report.blocks += end - next_block + 1
            cursor = batch.cursor
            if len(batch.events) < 1_000 and end - next_block + 1 == self.batch_blocks:
                self.batch_blocks = min(self.max_batch_blocks, self.batch_blocks * 2)
        if cursor is not None and report.ranges and self.reorg_window:
            self.store.prune_blocks(cursor.number - self.reorg_window)
        report.cursor = None if cursor is None else cursor.number
        self.store.set_meta("head", {"number": head, "polled_at": time.time()})
        report.reputation_computed = self.update_reputation()
        return report

    def sync(self, *, max_rounds: int = 100) -> SyncReport:
        """Poll until a round finds nothing new (tests, ``--once``, the benchmark)."""
        total = SyncReport()
        for _ in range(max_rounds):
            r = self.poll()
            total.head, total.cursor = r.head, r.cursor
            total.blocks += r.blocks
            total.events += r.events
            total.ranges += r.ranges
            total.reorgs += r.reorgs
            total.rolled_back_to = r.rolled_back_to if r.reorgs else total.rolled_back_to
            total.reputation_computed |= r.reputation_computed
            if not (r.ranges or r.reorgs):  # nothing new since the previous round
                break
        total.reputation_computed |= self.update_reputation(throttle=False)
        return total

    def run(self, stop: threading.Event, poll_interval: float = 2.0) -> None:
        """Poll until ``stop`` is set; a node that is down is retried, not fatal."""
        while not stop.is_set():
            try:
                report = self.poll()
                if report.events or report.reorgs:
                    log.info("indexed to block %s (%d events, %d reorgs)", report.cursor,
                             report.events, report.reorgs)
            except (ChainUnavailable, RpcError) as e:
                log.warning("chain unavailable, retrying: %s", e)
            stop.wait(poll_interval)

    # ------------------------------------------------------------------- reorgs

    def _check_reorg(self, report: SyncReport) -> None:
        cursor = self.store.cursor()
        if cursor is None:
            return
        on_chain = self._hashes([cursor.number]).get(cursor.number)
        if on_chain == cursor.hash:
            return
        ancestor = self._find_ancestor(cursor.number)
        log.warning("reorganisation: block %d is no longer %s; rolling back to %s",
                    cursor.number, cursor.hash, ancestor and ancestor.number)
        self.store.rollback(ancestor)
        self._known = self.store.known_agents()
        self._details = None
        report.reorgs += 1
        report.rolled_back_to = None if ancestor is None else ancestor.number

    def _find_ancestor(self, below_or_at: int) -> Cursor | None:
        """The newest stored block the chain still has (None: none, rebuild everything)."""
        top = below_or_at
        while True:
            stored = self.store.blocks_desc(top, 64)
            if not stored:
                return None
            chain = self._hashes([n for n, _ in stored])
            for number, stored_hash in stored:
                if chain.get(number) == stored_hash:
                    return self.store.block(number)
            top = stored[-1][0] - 1

    def _hashes(self, numbers: Sequence[int]) -> dict[int, str]:
        headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return {n: h["hash"] for n, h in zip(numbers, headers, strict=True) if h}

    # ------------------------------------------------------------------ fetching

    def _fetch(self, a: int, b: int, cursor: Cursor | None) -> Batch:
        first, last = self.rpc.batch([("eth_getBlockByNumber", [hex(a), False]),
                                      ("eth_getBlockByNumber", [hex(b), False])])
        if not first or not last:
            raise _Inconsistent(f"block {a if not first else b} is gone")
        if cursor is not None and first["parentHash"] != cursor.hash:
            raise _Inconsistent(f"block {a} does not extend the stored block {cursor.number}")
        span = {"fromBlock": hex(a), "toBlock": hex(b)}
        core_filter = {**span, "address": sorted(self._sources), "topics": [self._core_topics]}
        by_topic = self.agent_filter == "topics" or (
            self.agent_filter == "auto" and len(self._known) > self.address_filter_limit)
        calls: list[tuple[str, list[Any]]] = [("eth_getLogs", [core_filter])]
        if by_topic:
            calls.append(("eth_getLogs", [{**span, "topics": [self._agent_topics]}]))
        results = self.rpc.batch(calls)
        core_logs: list[dict[str, Any]] = results[0]
        events: list[LogEvent] = []
        new_agents: set[str] = set()
        for raw in core_logs:
            event = self._decode(raw, self._sources.get(address_key(raw["address"]), ""))
            if event is None:
                continue
            if event.name == "AgentCreated":
                new_agents.add(event.args["agent"])
            events.append(event)
        agents = self._known | new_agents
        # Registry logs about agents of another factory are not ours to index.
        events = [e for e in events if e.source != "registry" or e.args["agent"] in agents]
        if by_topic:
            agent_logs = [r for r in results[1] if address_key(r["address"]) in agents]
        elif agents:
            addresses = sorted(agents)
            agent_logs = [r for chunk in self.rpc.batch([
                ("eth_getLogs", [{**span, "address": addresses[i:i + 1_000],
                                  "topics": [self._agent_topics]}])
                for i in range(0, len(addresses), 1_000)]) for r in chunk]
        else:
            agent_logs = []
        for raw in agent_logs:
            event = self._decode(raw, "agent")
            if event is not None:
                events.append(event)
        events.sort(key=lambda e: (e.block, e.log_index))

        blocks: dict[int, tuple[str, int]] = {}
        missing_ts: set[int] = set()
        for raw in (*core_logs, *agent_logs):
            number = int(raw["blockNumber"], 16)
            if number in blocks and blocks[number][0] != raw["blockHash"]:
                raise _Inconsistent(f"two hashes for block {number}")
            ts = raw.get("blockTimestamp")
            if ts is None:
                missing_ts.add(number)
            blocks[number] = (raw["blockHash"], int(ts, 16) if ts else 0)
        if missing_ts:  # nodes without the blockTimestamp log field
            numbers = sorted(missing_ts)
            headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False])
                                      for n in numbers])
            for n, h in zip(numbers, headers, strict=True):
                if not h or h["hash"] != blocks[n][0]:
                    raise _Inconsistent(f"block {n} changed while reading it")
                blocks[n] = (h["hash"], int(h["timestamp"], 16))
        if events and any(e.ts == 0 for e in events):
            events = [LogEvent(e.block, e.log_index, e.tx_hash, e.address, e.source, e.name,
                               e.args, blocks[e.block][1]) for e in events]
        if b in blocks and blocks[b][0] != last["hash"]:
            raise _Inconsistent(f"block {b} changed while reading it")

        profiles = sorted({e.args["data"] for e in events if e.name == "ProfileUpdated"})
        if profiles:
            codes = dict(zip(profiles, self.rpc.batch(
                [("eth_getCode", [p, "latest"]) for p in profiles]), strict=True))
            for e in events:
                if e.name == "ProfileUpdated":
                    e.args["profile"] = decode_profile_code(codes[e.args["data"]])
        (again,) = self.rpc.batch([("eth_getBlockByNumber", [hex(b), False])])
        if not again or again["hash"] != last["hash"]:
            raise _Inconsistent(f"block {b} changed while reading the range")
        cursor_out = Cursor(b, last["hash"], int(last["timestamp"], 16))
        return Batch(events, blocks, cursor_out, new_agents)

    def _decode(self, raw: Mapping[str, Any], source: str) -> LogEvent | None:
        if not source or raw.get("removed"):
            return None
        try:
            decoded = decode_log(source, raw["topics"], raw["data"])
        except UndecodableLog as e:
            log.warning("skipping undecodable log %s#%s: %s", raw.get("transactionHash"),
                        raw.get("logIndex"), e)
            return None
        if decoded is None:
            return None
        name, args = decoded
        ts = raw.get("blockTimestamp")
        return LogEvent(int(raw["blockNumber"], 16), int(raw["logIndex"], 16),
                        raw["transactionHash"], address_key(raw["address"]), source, name, args,
                        int(ts, 16) if ts else 0)

    # --------------------------------------------------------------- reputation

    def update_reputation(self, *, force: bool = False, throttle: bool = True) -> bool:
        """Recompute scores if an input changed or chain time moved ``reputation_interval``
        seconds, at most once per ``reputation_pause`` wall seconds when ``throttle``: a pass
        over every agent takes ~2 s at 10,000 agents, and payments arrive all the time."""
        cursor = self.store.cursor()
        if cursor is None:
            return False
        if throttle and not force and (
                time.monotonic() - self._last_reputation < self.reputation_pause):
            return False
        last = self.store.get_meta("reputation") or {}
        dirty = bool(self.store.get_meta("reputation_dirty"))
        moved = cursor.timestamp - int(last.get("computed_at", 0)) >= self.reputation_interval
        if not (force or dirty or moved):
            return False
        self._fetch_decimals()
        inputs = self.store.reputation_inputs()
        scores = score_agents(inputs, cursor.timestamp)
        if self._details is None:
            self._details = self.store.reputation_details()
        existing = set(self._details)
        changed: dict[str, tuple[float, str]] = {}
        for address, (score, detail) in scores.items():
            encoded = json.dumps(detail, sort_keys=True, separators=(",", ":"))
            if self._details.get(address) != encoded:
                changed[address] = (score, encoded)
        self.store.write_reputation(changed, cursor.timestamp, existing)
        self._details.update({a: d for a, (_, d) in changed.items()})
        self._last_reputation = time.monotonic()
        return True

    def _fetch_decimals(self) -> None:
        assets = [a for a in self.store.unknown_assets() if a != ZERO]
        if not assets:
            return
        found: dict[str, int] = {}
        for asset in assets:
            with contextlib.suppress(RpcError):
                (answer,) = self.rpc.batch([("eth_call", [
                    {"to": asset, "data": DECIMALS_SELECTOR}, "latest"])])
                if isinstance(answer, str) and len(answer) == 66 and int(answer, 16) <= 77:
                    found[asset] = int(answer, 16)
                    continue
            found[asset] = 18  # not an ERC-20 with decimals(): assume the native convention
        self.store.add_assets(found)


def _range_refused(message: str) -> bool:
    text = message.lower()
    return any(s in text for s in ("range", "too many", "limit", "exceed", "10000", "size"))


__all__ = ["Contracts", "Indexer", "JsonRpc", "SyncReport"]
