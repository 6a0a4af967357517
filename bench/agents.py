"""Agent indexer: catch-up speed over 10,000 agents, and search latency over them.

**The chain.** A private anvil with automining off, no block gas limit to speak
of (3·10⁹), a zero base fee and ``--auto-impersonate``, so that the 10,000
agents and their owners' activity are plain ``eth_sendTransaction`` calls sent
in JSON-RPC batches of 500 and mined 500 to a block (``evm_mine``); anvil signs,
Python only encodes calldata. The events of each kind are counted at the end:
the benchmark stops if any call reverted. What is made (``--agents N``,
default 10,000; ``N/5`` owners, five agents each):

- N agents through ``AgentFactory.createAgent`` (varied names, descriptions,
  one or two skills from a vocabulary of 40, prices, three networks, a fifth
  free) — 7 events each;
- N/2 listed in the open registry; 3N/10 heartbeats; a tenth disabled;
- 2N attributed native payments between agents (mostly distinct owners; a few
  same-owner and reciprocal ones, which the reputation must discard) and N/5
  ratings by payers;
- N/10 ERC-8004 identities linked to their agents (``agentContract``
  metadata), and 3N/10 ERC-8004 feedback entries, from payers and from strangers.

**Catch-up** is a fresh index (SQLite file; PostgreSQL too with
``--postgres URL``) following the chain from the suite's deployment to the
head with default settings: events applied per second, over fetching
(``eth_getLogs``, batched ``eth_getCode`` for the profiles), decoding and
writing; the first reputation computation over all agents is timed apart.

**Search** runs the API (``create_app``) under uvicorn in its own process on
loopback and times each request from an ``httpx`` client, one at a time (wall
clock, request to parsed JSON): a
mix of skill, word and prefix, price, network, reputation, activity and
registry filters and their combinations, first pages and follow-up pages, and
the same queries called in process (``Search.search``) to show what HTTP adds;
``GET /agents/{address}`` (card, reputation explanation) separately. One query
in six asks for a page of 50 or 100 agents; their latencies are also shown apart.
The query mix runs three times; the round with the median p99 is reported (all
three p99s are recorded), since other work on a shared machine causes spikes.
Targets: search p99 ≤ 20 ms; catch-up ≥ 2,000 events/s.

Usage: ``python bench/agents.py [--agents N] [--queries Q] [--postgres URL]`` —
prints a table and writes ``bench/results/agents.json`` with the machine it ran
on. Needs anvil (``npm ci``). Takes about two minutes on two cores; not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from eth_abi import encode
from eth_utils import collapse_if_tuple, keccak, to_checksum_address

from a402.agents.card import Interface, OnchainCard, Payment, Skill
from a402.agents.indexer import Contracts, Indexer, IndexStore, Query, Search
from a402.agents.indexer.app import create_app
from a402.agents.onchain import AgentSuite
from a402.chain.artifacts import load_artifact
from a402.chain.node import Chain, free_port, start_anvil
from a402.chain.rpc import rpc
from a402.chain.tx import deploy_contract
from machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "agents.json"
SEND_BATCH = 500
SEARCH_ROUNDS = 3
NETWORKS = ("eip155:8453", "eip155:84532", "eip155:31337")
SKILLS = [
    ("translate", ("language", "text")), ("summarize", ("text", "documents")),
    ("ocr", ("image", "text")), ("transcribe", ("audio", "speech")),
    ("classify", ("ml", "labels")), ("search", ("web", "retrieval")),
    ("code-review", ("code", "quality")), ("sql", ("database", "code")),
    ("forecast", ("finance", "timeseries")), ("price-feed", ("finance", "oracle")),
    ("weather", ("data", "geo")), ("geocode", ("geo", "maps")),
    ("route", ("maps", "logistics")), ("schedule", ("calendar", "planning")),
    ("email", ("communication", "text")), ("chat", ("conversation", "text")),
    ("image-gen", ("image", "art")), ("video-edit", ("video", "media")),
    ("music", ("audio", "art")), ("tts", ("audio", "speech")),
    ("sentiment", ("ml", "text")), ("moderate", ("safety", "text")),
    ("kyc", ("identity", "compliance")), ("audit", ("security", "code")),
    ("scrape", ("web", "data")), ("crawl", ("web", "retrieval")),
    ("embed", ("ml", "vectors")), ("rerank", ("ml", "retrieval")),
    ("legal", ("contracts", "text")), ("medical", ("health", "text")),
    ("tutor", ("education", "conversation")), ("quiz", ("education", "games")),
    ("trade", ("finance", "markets")), ("swap", ("defi", "markets")),
    ("bridge", ("defi", "chains")), ("nft", ("art", "chains")),
    ("invoice", ("finance", "documents")), ("tax", ("finance", "compliance")),
    ("resume", ("jobs", "documents")), ("recipe", ("food", "text")),
]
WORDS = [
    "fast", "accurate", "reliable", "cheap", "private", "secure", "multilingual", "friendly",
    "expert", "automated", "scalable", "realtime", "batch", "streaming", "verified", "open",
    "careful", "precise", "creative", "concise", "detailed", "robust", "lightweight",
    "enterprise", "research", "academic", "clinical", "financial", "legal", "technical",
    "casual", "formal", "playful", "gentle", "strict", "adaptive", "contextual", "grounded",
    "cited", "european", "asian", "african", "american", "global", "local", "regional", "urban",
    "rural", "maritime", "quantum", "neural", "symbolic", "statistical", "heuristic",
    "deterministic", "probabilistic", "hybrid",
]


# ------------------------------------------------------------------------- the chain


class Sender:
    """Sends impersonated transactions in batches and mines them.

    Receipts are not read (anvil's ``eth_getBlockReceipts`` took most of the build
    time); :func:`build` counts the events instead, which a reverted call lacks."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.url = chain.rpc_url or ""
        self.http = httpx.Client(timeout=600)
        self.pending: list[dict[str, Any]] = []
        self.nonces: dict[str, int] = {}
        self.sent = 0

    def call(self, method: str, params: list[Any]) -> Any:
        return rpc(self.chain, method, params)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in enumerate(calls)]
        out = sorted(self.http.post(self.url, json=body).json(), key=lambda r: r["id"])
        errors = [r["error"] for r in out if "error" in r]
        if errors:
            raise RuntimeError(f"{len(errors)} calls failed, first: {errors[0]}")
        return [r["result"] for r in out]

    def fund(self, addresses: Sequence[str], wei: int) -> None:
        for i in range(0, len(addresses), SEND_BATCH):
            self.batch([("anvil_setBalance", [a, hex(wei)])
                        for a in addresses[i:i + SEND_BATCH]])

    def send(self, sender: str, to: str, data: str, *, value: int = 0,
             gas: int = 2_000_000) -> None:
        nonce = self.nonces.get(sender)
        if nonce is None:
            nonce = int(self.call("eth_getTransactionCount", [sender, "pending"]), 16)
        self.nonces[sender] = nonce + 1
        self.pending.append({"from": sender, "to": to, "data": data, "value": hex(value),
                             "gas": hex(gas), "nonce": hex(nonce), "gasPrice": hex(10**9)})
        if len(self.pending) >= SEND_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.batch([("eth_sendTransaction", [tx]) for tx in self.pending])
        self.sent += len(self.pending)
        self.pending = []
        self.call("evm_mine", [])

    def count_logs(self, address: str, artifact: str, event: str) -> int:
        (item,) = [i for i in load_artifact(artifact).abi
                   if i.get("type") == "event" and i["name"] == event]
        topic = "0x" + keccak(text=f"{event}({','.join(i['type'] for i in item['inputs'])})"
                              ).hex()
        query: dict[str, Any] = {"fromBlock": "0x0", "toBlock": "latest", "topics": [topic]}
        if address:
            query["address"] = address
        return len(self.call("eth_getLogs", [query]))


def calldata(contract: str, function: str, *args: Any) -> str:
    """ABI-encoded call (web3's ``encode_abi`` validates the ABI each call: 6 ms)."""
    types = _signature(contract, function, len(args))
    selector = keccak(text=f"{function}({','.join(types)})")[:4]
    return "0x" + (selector + encode(types, list(args))).hex()


_SIGNATURES: dict[tuple[str, str, int], list[str]] = {}


def _signature(contract: str, function: str, arity: int) -> list[str]:
    key = (contract, function, arity)
    if key not in _SIGNATURES:
        (item,) = [i for i in load_artifact(contract).abi if i.get("type") == "function"
                   and i["name"] == function and len(i["inputs"]) == arity]
        _SIGNATURES[key] = [collapse_if_tuple(i) for i in item["inputs"]]
    return _SIGNATURES[key]


def a_card(rng: random.Random, i: int, pay_to: str, token: str) -> OnchainCard:
    skills = rng.sample(SKILLS, rng.choice((1, 1, 2)))
    words = rng.sample(WORDS, 6)
    name = f"{words[0].title()} {skills[0][0].replace('-', ' ').title()} Agent {i}"
    payment = None
    if i % 5:
        payment = Payment(network=NETWORKS[i % 3], asset=token, pay_to=pay_to,
                          amount=rng.choice((100, 1_000, 5_000, 10_000, 50_000, 250_000)))
    return OnchainCard(
        name=name,
        description=f"A {words[1]}, {words[2]} and {words[3]} agent for "
                    f"{' and '.join(s for s, _ in skills)}; {words[4]} {words[5]} results.",
        interfaces=(Interface(f"https://agent-{i}.example/a2a"),),
        version=f"1.{i % 7}.0",
        skills=tuple(Skill(s, s.replace("-", " ").title(), f"{s} as a service.", tags)
                     for s, tags in skills),
        payment=payment,
        payment_description="x402 exact per task." if payment else "",
    )


def build(chain: Chain, n_agents: int, rng: random.Random) -> dict[str, Any]:
    deployer = chain.accounts[0]
    start_block = int(chain.w3.eth.block_number) + 1
    suite = AgentSuite.deploy(chain, deployer)
    token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                            deployer.address).address
    s = Sender(chain)
    s.call("evm_setAutomine", [False])
    owners = [to_checksum_address("0x" + rng.randbytes(20).hex())
              for _ in range(max(1, n_agents // 5))]
    strangers = [to_checksum_address("0x" + rng.randbytes(20).hex()) for _ in range(200)]
    s.fund(owners + strangers, 10**24)
    factory = suite.factory.contract
    t0 = time.perf_counter()

    for i in range(n_agents):
        owner = owners[i % len(owners)]
        card = a_card(rng, i, owner, token)
        s.send(owner, factory.address, calldata(
            "AgentFactory", "createAgent", owner, card.to_abi(),
            86_400 * rng.choice((1, 7, 30))))
    s.flush()
    count = suite.factory.count()
    if count != n_agents:
        raise RuntimeError(f"made {count} agents, wanted {n_agents}")
    # A block's transactions are not mined in the order sent: read who owns which agent.
    created = s.call("eth_getLogs", [{"address": factory.address, "fromBlock": "0x0",
                                      "toBlock": "latest"}])
    agents, owner_of = [""] * n_agents, [""] * n_agents
    for log in created:
        index = int(log["topics"][3], 16)
        agents[index] = to_checksum_address("0x" + log["topics"][1][-40:])
        owner_of[index] = to_checksum_address("0x" + log["topics"][2][-40:])
    def agent_call(fn: str, *args: Any) -> str:
        return calldata("Agent", fn, *args)

    registry = suite.registry.contract
    for i in range(0, n_agents, 2):
        s.send(owner_of[i], registry.address, calldata("AgentRegistry", "enroll", agents[i]))
    for i in rng.sample(range(n_agents), 3 * n_agents // 10):
        s.send(owner_of[i], agents[i], agent_call("heartbeat"))
    for i in rng.sample(range(n_agents), n_agents // 10):
        s.send(owner_of[i], agents[i], agent_call("setEnabled", False))
    s.flush()

    payments: list[tuple[int, int]] = []
    popular = rng.sample(range(n_agents), max(1, n_agents // 20))  # most demand goes here
    for k in range(2 * n_agents):
        payee = rng.choice(popular) if k % 3 else rng.randrange(n_agents)
        payer = rng.randrange(n_agents)
        if k % 50 == 0:  # same owner: the next agent of the payee's owner
            payer = (payee + len(owners)) % n_agents
        if payer == payee:
            continue
        if k % 97 == 0 and payments:  # pay back: a two-cycle
            payer, payee = payments[-1]
        payments.append((payee, payer))
        s.send(owner_of[payer], agents[payee], agent_call("pay", agents[payer]),
               value=rng.randrange(10**12, 10**15))
    s.flush()
    rated = set()
    for payee, payer in rng.sample(payments, min(len(payments), n_agents // 5)):
        if (payee, payer) in rated or owner_of[payee] == owner_of[payer]:
            continue
        rated.add((payee, payer))
        s.send(owner_of[payer], agents[payee], agent_call(
            "rate", agents[payer], rng.randrange(40, 101), "benchmark rating"))
    s.flush()

    identity, reputation = suite.identity.contract, suite.reputation.contract
    linked = list(range(n_agents // 10))
    for i in linked:
        s.send(owner_of[i], identity.address, calldata(
            "IdentityRegistry", "register", f"https://agent-{i}.example/agent.json",
            [("agentContract", bytes.fromhex(agents[i][2:]))]))
    s.flush()
    payers_of: dict[int, list[int]] = {}
    for payee, payer in payments:
        payers_of.setdefault(payee, []).append(payer)
    feedback = 0
    for _ in range(3 * n_agents // 10):
        agent_id = rng.choice(linked)
        candidates = [owner_of[p] for p in payers_of.get(agent_id, [])
                      if owner_of[p] != owner_of[agent_id]]
        client = rng.choice(candidates) if candidates and rng.random() < 0.7 \
            else rng.choice(strangers)
        s.send(client, reputation.address, calldata(
            "ReputationRegistry", "giveFeedback", agent_id, rng.randrange(0, 101), 0, "starred",
            "", "", "", bytes(32)))
        feedback += 1
    s.flush()
    s.call("evm_setAutomine", [True])
    expected = {
        ("", "Agent", "Heartbeat"): 3 * n_agents // 10,
        ("", "Agent", "EnabledSet"): n_agents // 10,
        ("", "Agent", "Paid"): len(payments),
        ("", "Agent", "Rated"): len(rated),
        (registry.address, "AgentRegistry", "AgentListed"): (n_agents + 1) // 2,
        (identity.address, "IdentityRegistry", "Registered"): len(linked),
        (reputation.address, "ReputationRegistry", "NewFeedback"): feedback,
    }
    for (address, artifact, event), count in expected.items():
        found = s.count_logs(address, artifact, event)
        if found != count:
            raise RuntimeError(f"{found} {event} events, expected {count}: calls reverted")
    return {
        "suite": suite, "start_block": start_block, "agents": agents,
        "head": int(chain.w3.eth.block_number), "transactions": s.sent,
        "build_seconds": time.perf_counter() - t0,
        "made": {"agents": n_agents, "owners": len(owners), "listed": (n_agents + 1) // 2,
                 "payments": len(payments), "ratings": len(rated), "identities": len(linked),
                 "feedback": feedback},
    }


# ------------------------------------------------------------------------ measuring


def catch_up(chain: Chain, world: dict[str, Any], store: IndexStore) -> dict[str, Any]:
    indexer = Indexer(store, chain.rpc_url or "", Contracts.from_suite(world["suite"].addresses),
                      start_block=world["start_block"], reputation_interval=10**9)
    indexer.update_reputation = lambda **_: False  # type: ignore[method-assign]
    t0 = time.perf_counter()
    report = indexer.sync()
    logs_seconds = time.perf_counter() - t0
    del indexer.update_reputation
    t1 = time.perf_counter()
    indexer.update_reputation(force=True)
    reputation_seconds = time.perf_counter() - t1
    return {
        "events": report.events, "blocks": report.blocks, "ranges": report.ranges,
        "rpc_calls": indexer.rpc.calls, "seconds": round(logs_seconds, 3),
        "events_per_second": round(report.events / logs_seconds),
        "reputation_seconds": round(reputation_seconds, 3),
        "events_per_second_with_reputation": round(
            report.events / (logs_seconds + reputation_seconds)),
    }


def queries(rng: random.Random, n: int) -> list[dict[str, str]]:
    def one() -> dict[str, str]:
        kind = rng.randrange(12)
        skill, tags = rng.choice(SKILLS)
        word = rng.choice(WORDS)
        if kind == 0:
            return {"skill": skill}
        if kind == 1:
            return {"skill": rng.choice(tags)}
        if kind == 2:
            return {"q": word}
        if kind == 3:
            return {"q": f"{word} {skill.split('-')[0][:3]}"}  # last word as a prefix
        if kind == 4:
            return {"max_price": str(rng.choice((1_000, 10_000, 100_000)))}
        if kind == 5:
            return {"network": rng.choice(NETWORKS), "active": "true"}
        if kind == 6:
            return {"min_reputation": str(rng.choice((1, 5, 10, 20)))}
        if kind == 7:
            return {"registry": "open", "skill": rng.choice(tags)}
        if kind == 8:
            return {"skill": rng.choice(tags), "max_price": "50000",
                    "network": rng.choice(NETWORKS), "active": "true"}
        if kind == 9:
            return {"q": word, "min_reputation": "1", "limit": "50"}
        if kind == 10:
            return {"active": "false", "limit": "100"}
        return {}
    return [one() for _ in range(n)]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 3), "p90_ms": round(q[89] * 1000, 3),
            "p99_ms": round(q[98] * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3),
            "n": len(samples)}


def time_each(calls: list[Callable[[], Any]]) -> list[float]:
    out = []
    for call in calls:
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


@contextlib.contextmanager
def api_process(db_url: str) -> Iterator[str]:
    """The search API in its own process (as deployed), so that the timing client does not
    share a GIL with the server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", db_url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API process did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def serve(db_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(Search(IndexStore(db_url))), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def search_latency(store: IndexStore, agents: list[str], n: int, rng: random.Random
                   ) -> dict[str, Any]:
    search = Search(store)
    mix = queries(rng, n)
    # Follow-up pages: the cursor after the first page of a broad query.
    firsts = [search.search(Query(**{"limit": 20, **_typed(q)})) for q in mix[: n // 10]]
    pages = [{**q, "cursor": f["next_cursor"]} for q, f in zip(mix, firsts, strict=False)
             if f["next_cursor"]]
    results: dict[str, Any] = {}
    with api_process(store.url) as url, httpx.Client(base_url=url) as http:
        for q in mix[:100]:  # warm-up
            http.get("/agents", params=q).raise_for_status()

        def get(params: dict[str, str]) -> Callable[[], Any]:
            def call() -> Any:
                response = http.get("/agents", params=params)
                response.raise_for_status()
                return response.json()
            return call

        def detail(address: str) -> Callable[[], Any]:
            def call() -> Any:
                response = http.get(f"/agents/{address}")
                response.raise_for_status()
                return response.json()
            return call

        # Rounds: the machine is shared; the median round's figures are the headline and
        # every round is recorded.
        rounds = [time_each([get(q) for q in mix]) for _ in range(SEARCH_ROUNDS)]
        round_stats = [percentiles(r) for r in rounds]
        median = sorted(range(SEARCH_ROUNDS), key=lambda i: round_stats[i]["p99_ms"])[
            SEARCH_ROUNDS // 2]
        timed = rounds[median]
        results["http_search"] = round_stats[median]
        results["http_search_rounds_p99_ms"] = [r["p99_ms"] for r in round_stats]
        results["http_search_pages_of_20"] = percentiles(
            [t for t, q in zip(timed, mix, strict=True) if "limit" not in q])
        results["http_search_pages_of_50_100"] = percentiles(
            [t for t, q in zip(timed, mix, strict=True) if "limit" in q])
        results["http_next_page"] = percentiles(time_each([get(q) for q in pages]))
        results["http_detail"] = percentiles(time_each(
            [detail(a) for a in rng.sample(agents, min(len(agents), n // 4))]))
    results["in_process_search"] = percentiles(time_each(
        [lambda q=q: search.search(Query(**_typed(q))) for q in mix]))  # type: ignore[misc]
    sizes = [len(search.search(Query(**_typed(q)))["agents"]) for q in mix[:200]]
    results["mean_results_per_page"] = round(statistics.mean(sizes), 1)
    return results


def _typed(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(params)
    for key in ("max_price", "limit"):
        if key in out:
            out[key] = int(out[key])
    if "min_reputation" in out:
        out["min_reputation"] = float(out["min_reputation"])
    if "active" in out:
        out["active"] = out["active"] == "true"
    return out


# --------------------------------------------------------------------------- report


def table(result: dict[str, Any]) -> str:
    lines = [f"{'indexer catch-up':<40} {'events':>9} {'seconds':>9} {'events/s':>10}",
             "-" * 71]
    for name, c in result["catch_up"].items():
        lines.append(f"{name + ' (logs)':<40} {c['events']:>9,} {c['seconds']:>9.2f} "
                     f"{c['events_per_second']:>10,}")
        lines.append(f"{name + ' (+ first reputation pass)':<40} {c['events']:>9,} "
                     f"{c['seconds'] + c['reputation_seconds']:>9.2f} "
                     f"{c['events_per_second_with_reputation']:>10,}")
    lines += ["", f"{'latency (' + str(result['made']['agents']) + ' agents)':<40} "
              f"{'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'n':>6}", "-" * 77]
    for name, p in result["search"].items():
        if isinstance(p, dict):
            lines.append(f"{name:<40} {p['p50_ms']:>9.2f} {p['p90_ms']:>9.2f} "
                         f"{p['p99_ms']:>9.2f} {p['n']:>6}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--postgres", default=os.environ.get("A402_BENCH_POSTGRES_URL"),
                        help="also index into this PostgreSQL (a throwaway schema)")
    parser.add_argument("--seed", type=int, default=8004)
    parser.add_argument("--keep-index", metavar="DIR",
                        help="write the SQLite index to DIR/index.db and keep it")
    parser.add_argument("--serve", metavar="DB_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:  # the API process of search_latency
        serve(args.serve, args.port)
        return 0
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    extra = ["--gas-limit", "3000000000", "--base-fee", "0", "--disable-min-priority-fee",
             "--auto-impersonate", "--no-request-size-limit"]
    with start_anvil(accounts=2, extra_args=extra) as chain, \
            tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep_index or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for old in Path(tmp).glob("index.db*"):
            old.unlink()
        world = build(chain, args.agents, rng)
        print(f"built {world['made']} in {world['build_seconds']:.1f} s "
              f"({world['transactions']:,} transactions)", file=sys.stderr)
        store = IndexStore(f"sqlite:///{tmp}/index.db")
        result: dict[str, Any] = {"catch_up": {"sqlite": catch_up(chain, world, store)}}
        schema = None
        if args.postgres:
            schema = f"a402_idx_bench_{uuid.uuid4().hex[:8]}"
            pg = IndexStore(args.postgres, schema=schema)
            try:
                result["catch_up"]["postgresql"] = catch_up(chain, world, pg)
            finally:
                from sqlalchemy import text

                with pg.engine.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                pg.close()
        result["search"] = search_latency(store, world["agents"], args.queries, rng)
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("index.db*"))
    result = {
        "benchmark": "agents",
        "made": world["made"],
        "chain": {"blocks": world["head"] - world["start_block"] + 1,
                  "transactions": world["transactions"],
                  "build_seconds": round(world["build_seconds"], 1)},
        **result,
        "sqlite_bytes": db_bytes,
        "targets": {"search_p99_ms": 20, "catch_up_events_per_second": 2_000},
        "machine": {**machine(), "load_average_1m_before": load_before},
        "note": "anvil on loopback, automine off, 500 transactions per block; search timed "
                "over HTTP (uvicorn in its own process, one sequential client) and in process; "
                "catch-up with default indexer settings into a fresh SQLite file",
    }
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
