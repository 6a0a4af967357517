"""Agent reputation from payment history and feedback, resistant to self-dealing (pure).

The indexer computes one score in 0..100 per agent contract, with an
explanation naming every input and weight (it is what ``GET /agents/{address}``
returns). The score uses only what the chain proves: payments made *through
the agent contract* (``Paid``: ``pay``, ``payToken``, ``payWithAuthorization``,
``payAgent``), the agent's own rating book (``Rated``, only from agents that
paid it) and ERC-8004 feedback on identities linked to it.

**Who is who.** Self-dealing is judged between *entities*, not addresses: an
agent contract, every address that ever owned it, and (transitively) every
other agent those addresses ever owned are one entity (union-find over the
ownership history). Handing an agent to a fresh key does not make its payments
to its old owner's agents independent: the old and the new owner are one
entity. A payment's payer is the entity of its ``payerAgent`` when the payment
is attributed, else of its ``from`` address.

**What does not count.**

- *Same owner*: the payer entity is the payee's entity (a payment between two
  agents of one owner, or from the payee's owner).
- *Circular*: the payer and the payee entity lie on one cycle of the payment
  graph between entities — A pays B and B pays A, or A → B → C → A, at any
  distance and at any time. Computed exactly as the strongly connected
  components (Tarjan, linear time): an edge inside a component is on a cycle.
  Every payment on such an edge is dropped, in both directions, so money that
  comes back earns nothing. The price: two agents that genuinely trade both ways
  lose that trade as evidence (their other payers still count); and whoever is
  paid by an agent can, by paying that agent's own payers back, make a cycle
  that voids edges — it costs real payments, and voids the attacker's edges too.
  No time window: money sent round slowly is still money sent round.

**What counts, and how much** (each component is in 0..1; the score is
``100 × clamp(Σ weight × component, 0, 1)``):

============  ======  ==================================================================
component     weight  value
============  ======  ==================================================================
payers        0.35    ``1 − exp(−n/10)``, n = distinct eligible payer entities, an entity
                      paying through an agent counts 1, one paying from a plain address
                      0.5 (an agent is an accountable identity with an owner history; a
                      bare key is free and disposable)
recurring     0.20    ``1 − exp(−r/5)``, r = the same weighted count over payer entities
                      whose eligible payments span at least a day: coming back is the
                      strongest sign of value, and it takes time to fake
volume        0.10    ``log10(1 + V) / log10(1 + 10,000)`` capped at 1, V = eligible amount
                      in the agent's price asset, in whole tokens (its ``decimals()``,
                      18 for native coin). Lowest weight: volume is the cheapest input to
                      inflate (the same coins can go round) and assets do not compare
                      without a price oracle, so other assets are left out
age           0.15    ``min(1, (now − first eligible payment) / 90 days)``: a track
                      record, not mere existence (an agent nobody paid has none)
feedback      0.20    ``c × (2q − 1)`` in −1..1: q is the mean opinion (0..1) of eligible
                      payer entities, one voice each (its latest), shrunk toward neutral
                      by 3 pseudo-votes of 0.5; c = n/(n+3) is the confidence. Good
                      reviews add up to 20 points, bad ones remove up to 20.
============  ======  ==================================================================

**Opinions.** On-chain ratings (0..100) and ERC-8004 feedback (``value /
10^valueDecimals``, clamped to 0..100; only untagged or ``tag1 = "starred"``
feedback, which ERC-8004 suggests for 0..100 scores — uptime or latency figures
are measurements, not opinions) count only when their author's entity is an
eligible payer of the agent. ERC-8004 lets anyone give feedback for free, so
feedback from a non-payer counts **not at all**: a fresh key per review costs
nothing, and the standard itself asks readers to name the clients they trust
(``getSummary`` requires a client list). Revoked feedback does not count. The
explanation reports how many opinions were ignored and why.

Not (yet) done: weighing a payer by its own reputation (trust propagation), and
decay of old payments; both would fit in :func:`score_agents`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

FORMULA_VERSION: Final = 1
WEIGHTS: Final[Mapping[str, float]] = {
    "payers": 0.35, "recurring": 0.20, "volume": 0.10, "age": 0.15, "feedback": 0.20,
}
PAYER_SCALE: Final = 10.0
RECURRING_SCALE: Final = 5.0
RECURRING_SPAN: Final = 86_400
VOLUME_SATURATION: Final = 10_000.0
AGE_SATURATION: Final = 90 * 86_400
FEEDBACK_PRIOR_VOTES: Final = 3.0
AGENT_PAYER_WEIGHT: Final = 1.0
ADDRESS_PAYER_WEIGHT: Final = 0.5
SCORED_TAGS: Final = frozenset({"", "starred"})
NATIVE: Final = "0x" + "00" * 20


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AgentFacts:
    address: str
    owners: tuple[str, ...]
    """Every address that ever owned the agent."""
    price_asset: str | None
    """The asset of its payment terms (None: free; volume is then counted in native coin)."""


@dataclass(frozen=True)
class PaymentGroup:
    """Payments to ``payee`` by one (payer agent, sender) pair in one asset, aggregated."""

    payee: str
    payer_agent: str | None
    sender: str
    asset: str
    count: int
    amount: float
    first_ts: int
    last_ts: int


@dataclass(frozen=True)
class Opinion:
    """A rating or ERC-8004 feedback about an agent; ``order`` is its chain position."""

    agent: str
    author: str
    source: str  # "rating" | "erc8004"
    value: float | None  # 0..100, or None for a withdrawn rating
    order: tuple[int, int]
    tag: str = ""
    revoked: bool = False


@dataclass
class Inputs:
    agents: list[AgentFacts]
    payments: list[PaymentGroup]
    opinions: list[Opinion] = field(default_factory=list)
    decimals: Mapping[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------- entities


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Deterministic representative: the smaller address.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


def strongly_connected(edges: Mapping[str, set[str]]) -> dict[str, int]:
    """Component number of every node (iterative Tarjan; no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comp: dict[str, int] = {}
    counter = 0
    components = 0
    nodes = set(edges) | {v for targets in edges.values() for v in targets}
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp[member] = components
                    if member == node:
                        break
                components += 1
    return comp


# ----------------------------------------------------------------------------- scoring


@dataclass
class _Payer:
    weight: float
    first_ts: int
    last_ts: int
    count: int = 0


def _saturating(x: float, scale: float) -> float:
    return 1.0 - math.exp(-x / scale)


def score_agents(inputs: Inputs, now: int) -> dict[str, tuple[float, dict[str, Any]]]:
    """``address → (score, explanation)`` for every agent in ``inputs`` at chain time ``now``."""
    uf = UnionFind()
    for agent in inputs.agents:
        for owner in agent.owners:
            uf.union(agent.address, owner)
    facts = {a.address: a for a in inputs.agents}

    graph: dict[str, set[str]] = defaultdict(set)
    for p in inputs.payments:
        payer, payee = uf.find(p.payer_agent or p.sender), uf.find(p.payee)
        if payer != payee:
            graph[payer].add(payee)
    comp = strongly_connected(graph)

    payers: dict[str, dict[str, _Payer]] = defaultdict(dict)
    volume: dict[str, float] = defaultdict(float)
    excluded: dict[str, dict[str, dict[str, Any]]] = defaultdict(
        lambda: {"same_owner": {"payments": 0, "payers": set()},
                 "circular": {"payments": 0, "payers": set()}})
    for p in inputs.payments:
        if p.payee not in facts:
            continue
        payer, payee = uf.find(p.payer_agent or p.sender), uf.find(p.payee)
        reason = ("same_owner" if payer == payee
                  else "circular" if comp.get(payer) == comp.get(payee) else None)
        if reason:
            bucket = excluded[p.payee][reason]
            bucket["payments"] += p.count
            bucket["payers"].add(payer)
            continue
        weight = AGENT_PAYER_WEIGHT if p.payer_agent else ADDRESS_PAYER_WEIGHT
        entry = payers[p.payee].get(payer)
        if entry is None:
            entry = payers[p.payee][payer] = _Payer(weight, p.first_ts, p.last_ts)
        entry.weight = max(entry.weight, weight)
        entry.first_ts = min(entry.first_ts, p.first_ts)
        entry.last_ts = max(entry.last_ts, p.last_ts)
        entry.count += p.count
        price_asset = facts[p.payee].price_asset or NATIVE
        if p.asset == price_asset:
            decimals = 18 if p.asset == NATIVE else inputs.decimals.get(p.asset, 18)
            volume[p.payee] += p.amount / 10**decimals

    latest: dict[str, dict[str, Opinion]] = defaultdict(dict)
    ignored: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for o in sorted(inputs.opinions, key=lambda o: o.order):
        if o.agent not in facts:
            continue
        author = uf.find(o.author)
        if o.source == "erc8004" and o.revoked:
            ignored[o.agent]["revoked"] += 1
            continue
        if o.source == "erc8004" and o.tag not in SCORED_TAGS:
            ignored[o.agent]["not_a_score_tag"] += 1
            continue
        if author not in payers[o.agent]:
            ignored[o.agent]["author_not_an_eligible_payer"] += 1
            continue
        previous = latest[o.agent].get(author)
        if previous is not None and previous.value is not None:
            ignored[o.agent]["superseded_by_same_payer"] += 1
        latest[o.agent][author] = o

    out: dict[str, tuple[float, dict[str, Any]]] = {}
    for address in sorted(facts):
        mine = payers.get(address, {})
        n = sum(p.weight for p in mine.values())
        recurring = [p for p in mine.values() if p.last_ts - p.first_ts >= RECURRING_SPAN]
        r = sum(p.weight for p in recurring)
        v = volume.get(address, 0.0)
        first = min((p.first_ts for p in mine.values()), default=None)
        opinions = [o.value for o in latest.get(address, {}).values() if o.value is not None]
        k = len(opinions)
        mean = (sum(min(100.0, max(0.0, x)) / 100 for x in opinions) + FEEDBACK_PRIOR_VOTES * 0.5
                ) / (k + FEEDBACK_PRIOR_VOTES)
        confidence = k / (k + FEEDBACK_PRIOR_VOTES)
        values = {
            "payers": _saturating(n, PAYER_SCALE),
            "recurring": _saturating(r, RECURRING_SCALE),
            "volume": min(1.0, math.log10(1 + v) / math.log10(1 + VOLUME_SATURATION)),
            "age": 0.0 if first is None else min(1.0, max(0, now - first) / AGE_SATURATION),
            "feedback": confidence * (2 * mean - 1),
        }
        total = sum(WEIGHTS[c] * values[c] for c in WEIGHTS)
        score = round(100 * min(1.0, max(0.0, total)), 2)
        asset = facts[address].price_asset or NATIVE
        inputs_used: dict[str, dict[str, Any]] = {
            "payers": {"eligible_payers": len(mine),
                       "through_agents": sum(1 for p in mine.values() if p.weight == 1.0),
                       "from_plain_addresses": sum(1 for p in mine.values() if p.weight < 1.0),
                       "weighted": n, "payments": sum(p.count for p in mine.values())},
            "recurring": {"recurring_payers": len(recurring), "weighted": r,
                          "min_span_seconds": RECURRING_SPAN},
            "volume": {"asset": asset, "amount": v},
            "age": {"first_eligible_payment": first, "now": now},
            "feedback": {"opinions": k, "mean": mean, "confidence": confidence,
                         "ignored": dict(ignored.get(address, {}))},
        }
        out[address] = (score, {
            "score": score,
            "components": {
                c: {"value": round(values[c], 6), "points": round(100 * WEIGHTS[c] * values[c], 4),
                    "inputs": inputs_used[c]}
                for c in WEIGHTS
            },
            "excluded": {
                reason: {"payments": b["payments"], "payers": len(b["payers"])}
                for reason, b in excluded[address].items()
            } if address in excluded else {
                "same_owner": {"payments": 0, "payers": 0},
                "circular": {"payments": 0, "payers": 0},
            },
        })
    return out


RULES: Final[Mapping[str, str]] = {
    "payers": f"1 - exp(-weighted/{PAYER_SCALE:g}); a payer entity paying through an agent "
              f"weighs {AGENT_PAYER_WEIGHT:g}, one paying from a plain address "
              f"{ADDRESS_PAYER_WEIGHT:g}",
    "recurring": f"1 - exp(-weighted/{RECURRING_SCALE:g}) over payer entities whose eligible "
                 f"payments span at least {RECURRING_SPAN} s",
    "volume": f"log10(1 + amount) / log10(1 + {VOLUME_SATURATION:g}), capped at 1; amount in "
              "whole tokens of the agent's price asset",
    "age": f"min(1, (now - first eligible payment) / {AGE_SATURATION} s)",
    "feedback": f"confidence * (2*mean - 1): mean of eligible payers' latest opinions (0..1) "
                f"with {FEEDBACK_PRIOR_VOTES:g} neutral pseudo-votes, confidence = "
                f"n/(n+{FEEDBACK_PRIOR_VOTES:g}); only payers' opinions count",
}
EXCLUSIONS: Final[Mapping[str, str]] = {
    "same_owner": "payer and payee are one entity (an agent, all its owners ever, and "
                  "their other agents)",
    "circular": "payer and payee are on one cycle of the payment graph between entities",
}


def explain(detail: Mapping[str, Any], computed_at: int | None = None) -> dict[str, Any]:
    """A stored score ``detail`` with the formula, weights and rules spelled out (the API form)."""
    return {
        "score": detail["score"],
        "version": FORMULA_VERSION,
        "formula": "score = 100 * clamp(sum(weight * value), 0, 1)",
        "computed_at": computed_at,
        "components": {
            c: {"weight": WEIGHTS[c], "rule": RULES[c], **detail["components"][c]}
            for c in WEIGHTS
        },
        "excluded": {
            reason: {"rule": EXCLUSIONS[reason], **counts}
            for reason, counts in detail["excluded"].items()
        },
    }


def entity_of(owners_by_agent: Mapping[str, Sequence[str]], address: str) -> str:
    """The entity representative of ``address`` (for tests and tools)."""
    uf = UnionFind()
    for agent, owners in owners_by_agent.items():
        for owner in owners:
            uf.union(agent, owner)
    return uf.find(address)


__all__ = [
    "AGE_SATURATION",
    "EXCLUSIONS",
    "FORMULA_VERSION",
    "RULES",
    "SCORED_TAGS",
    "WEIGHTS",
    "AgentFacts",
    "Inputs",
    "Opinion",
    "PaymentGroup",
    "UnionFind",
    "entity_of",
    "explain",
    "score_agents",
    "strongly_connected",
]
