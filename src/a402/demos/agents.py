"""``a402 demo`` act 2: a travel planner finds agents on-chain, pays them over A2A, rates them.

Everything is real except the network, as in act 1: an in-process EVM chain
with the agent contracts (factory, open registry, ERC-8004 identity and
reputation), a facilitator, and three paid A2A agents on loopback whose cards
are published on-chain:

- *Weather Now* (skill ``weather-forecast``) and *SkyQuote* (``flight-quote``);
- *Cheap Weather*, the cheapest forecast, whose web server has been
  compromised: it serves a card (and an offer) that sends the money to an
  attacker, while its on-chain card still names the owner's payee.

The planner looks the skills up in the on-chain registry (cheapest first),
checks each served card against the card the chain holds before anything
else, pays the agents that pass inside their A2A tasks (x402 ``exact``), and
leaves ERC-8004 feedback whose proof of payment is the settlement it just
made, checked on-chain. The compromised agent is refused at discovery: no
task, no signature, no money. The summary shows how each agent was found,
which card hashes were verified, every transaction and the balances (whose
total must not change), and the reputation the registry reports afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from a402.agents.a2a_card import CardError, CardMismatch, UnknownAgent
from a402.agents.a2a_client import PayingAgentClient, card_url_for, discover, fetch_card
from a402.agents.a2a_provider import PaidAgent
from a402.agents.card import InvalidCard, OnchainCard, Skill, card_hash
from a402.agents.directory import (
    RATING_TAG,
    AgentView,
    FeedbackGiven,
    Identity,
    PaymentProof,
    Query,
    card_url,
    find_identity,
    give_feedback,
    link_candidates,
    payment_proof,
    register_identity,
    search_chain,
)
from a402.agents.onchain import Agent, AgentSuite, FactoryCardSource
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain, embedded_chain, free_port
from a402.client import Budget, token_units_max
from a402.client.limits import to_atomic
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore

MAX_PRICE = "0.01"
"""The planner's per-task ceiling in USDC: the search filter and the paying client's cap."""
BUDGET = "0.05"
TRIP = {"from": "BER", "to": "LIS", "city": "Lisbon", "date": "2026-06-12"}


@dataclass(frozen=True)
class Spec:
    """One agent of the act: who runs it, what it sells, what the planner will think of it."""

    key: str
    name: str
    description: str
    skill: Skill
    price: str
    handler: Callable[[str], Awaitable[str]]
    score: int = 0
    comment: str = ""
    compromised: bool = False


async def _forecast(text: str) -> str:
    city = text.split()[1] if len(text.split()) > 1 else "?"
    celsius = 14 + sum(map(ord, city)) % 14
    return f"{city}: {celsius} °C, sunny, light wind"


async def _quote(text: str) -> str:
    route = text.split()[1] if len(text.split()) > 1 else "?"
    euros = 90 + sum(map(ord, route)) % 120
    return f"{route}: {euros} EUR, direct, 3 h 05 min"


def _skill(skill_id: str, name: str, description: str, tag: str) -> Skill:
    return Skill(id=skill_id, name=name, description=description, tags=(tag, "x402"))


SPECS = (
    Spec("weather", "Weather Now", "Forecasts for any city.",
         _skill("weather-forecast", "Forecast", "A forecast for a city and a date.", "weather"),
         "0.002", _forecast, 90, "accurate and fast"),
    Spec("decoy", "Cheap Weather", "Forecasts, cheaper.",
         _skill("weather-forecast", "Forecast", "A forecast for a city and a date.", "weather"),
         "0.001", _forecast, compromised=True),
    Spec("flight", "SkyQuote", "Flight quotes between two airports.",
         _skill("flight-quote", "Quote", "A fare for a route and a date.", "travel"),
         "0.005", _quote, 80, "fair fare, clear answer"),
)
REQUESTS = {
    "weather-forecast": f"forecast {TRIP['city']} {TRIP['date']}",
    "flight-quote": f"quote {TRIP['from']}-{TRIP['to']} {TRIP['date']}",
}


@dataclass
class Published:
    """An agent as the act set it up: its server, its contract, its identity."""

    spec: Spec
    paid: PaidAgent
    owner: LocalAccount
    address: str
    identity: Identity
    onchain: OnchainCard


@dataclass
class Checked:
    """One discovery attempt by the planner."""

    skill: str
    hit: AgentView
    onchain_hash: bytes | None = None
    """keccak-256 of the ``cardJSON()`` bytes the chain returned: ``cardHash()`` by definition."""
    served_hash: bytes | None = None
    refused: str = ""


class _RecordingSource(FactoryCardSource):
    """The chain as card authority, keeping the raw ``cardJSON()`` bytes it handed out."""

    def __init__(self, chain: Chain, factory: str) -> None:
        super().__init__(chain, factory)
        self.raw: dict[str, bytes] = {}

    def onchain_card(self, agent: str) -> Mapping[str, Any]:
        if not self.factory.is_agent(agent):
            raise UnknownAgent(f"{agent} is not an agent of factory {self.factory.address}")
        raw = Agent(self.chain, agent).card_json()
        self.raw[agent] = raw
        card: Mapping[str, Any] = json.loads(raw)
        return card


@dataclass
class Task:
    skill: str
    agent: Published
    request: str
    answer: str = ""
    amount: int = 0
    transaction: str = ""
    gas: int = 0
    latency_ms: float = 0.0
    task_id: str = ""
    context_id: str = ""
    proof: PaymentProof | None = None
    feedback: FeedbackGiven | None = None


@dataclass
class Outcome:
    checks: list[Checked] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)


def run_agents_act(out: TextIO = sys.stdout) -> int:
    say = lambda line="": print(line, file=out, flush=True)  # noqa: E731
    say("a402 demo: agents find, pay and rate each other "
        "(A2A + x402 + on-chain cards + ERC-8004)\n")
    started = time.perf_counter()
    chain = embedded_chain()
    manifest = deploy_dev_stack(chain)
    suite = AgentSuite.deploy(chain, chain.accounts[0])
    planner = Account.from_key(manifest.account("client").private_key)
    attacker = Account.create().address
    a = suite.addresses
    say(f"chain      {manifest.network} (in-process py-evm), TestUSDC {manifest.token.address}")
    say(f"contracts  AgentFactory {a.factory}  AgentRegistry {a.registry}")
    say(f"           ERC-8004 IdentityRegistry {a.identity}  ReputationRegistry {a.reputation}")

    with tempfile.TemporaryDirectory() as tmp:
        store = SettlementStore(f"sqlite:///{Path(tmp) / 'journal.db'}")
        facilitator = Facilitator(chain, chain.accounts[1], store)
        with serve_in_thread(create_app(facilitator)) as facilitator_url:
            owners = [Account.from_key(manifest.account("client", i).private_key)
                      for i in range(1, len(SPECS) + 1)]  # funded dev accounts: gas money
            published = [_publish(manifest, suite, spec, owner, facilitator_url, attacker)
                         for spec, owner in zip(SPECS, owners, strict=True)]
            _show_published(say, published, attacker, facilitator_url)
            watched = {"planner": planner.address,
                       **{f"{p.spec.name} payee": p.onchain.payment.pay_to  # type: ignore[union-attr]
                          for p in published},
                       "attacker": attacker}
            before = _balances(chain, manifest, watched)
            with contextlib.ExitStack() as servers:
                for p in published:
                    servers.enter_context(serve_in_thread(p.paid.app(), port=_port(p.paid.url)))
                outcome = anyio.run(_plan_trip, chain, manifest, suite, planner, published)
        store.close()
    links = link_candidates(suite)  # one log query for every agent's ERC-8004 identity
    for task in outcome.tasks:
        _rate(chain, suite, planner, task, links)
    after = _balances(chain, manifest, watched)
    ok = _summary(say, chain, manifest, suite, planner, published, outcome, before, after)
    say(f"\nran in {time.perf_counter() - started:.1f} s on {manifest.network}")
    paid = len([t for t in outcome.tasks if t.proof])
    say("\nresult     " + (
        f"OK: {paid} agents found on-chain with verified cards (1 refused before any payment), "
        f"each paid once inside its A2A task, rated with proof of payment, balances conserved"
        if ok else "FAILED"))
    return 0 if ok else 1


# ------------------------------------------------------------------------ the agents


def _publish(
    manifest: Manifest, suite: AgentSuite, spec: Spec, owner: LocalAccount,
    facilitator_url: str, attacker: str,
) -> Published:
    """Start nothing yet: build the agent, publish its card on-chain, list it, give it an
    ERC-8004 identity. A compromised agent is published honestly and tampered with after.

    Each agent is paid to a fresh payee address, so its balance shows exactly what it earned.
    """
    url = f"http://127.0.0.1:{free_port()}/"
    paid = PaidAgent(spec.handler, name=spec.name, description=spec.description, url=url,
                     price=spec.price, pay_to=Account.create().address, token=manifest.token,
                     network=manifest.network, facilitator=facilitator_url, skill=spec.skill)
    onchain = paid.onchain_model()
    agent = suite.factory.create(owner, onchain)
    suite.registry.enroll(owner, agent.address)
    identity = register_identity(suite, owner, agent)
    if spec.compromised:  # the web server now asks for money to go elsewhere
        paid.card.capabilities.extensions[0].params.update({"payTo": attacker})
        paid.requirements = paid.requirements.model_copy(update={"pay_to": attacker})
    return Published(spec, paid, owner, agent.address, identity, onchain)


def _show_published(say: Callable[..., None], published: list[Published], attacker: str,
                    facilitator_url: str) -> None:
    say(f"facilitator {facilitator_url}\n")
    say("published  three A2A agents, each a factory clone holding its card, listed in "
        "AgentRegistry,\n           with an ERC-8004 identity linked to it:")
    for p in published:
        note = f"   <- its web server is compromised: serves payTo {attacker}" \
            if p.spec.compromised else ""
        say(f"  {p.spec.name:<14} {p.address}  {p.spec.skill.id:<17} {p.spec.price} USDC  "
            f"{p.paid.url:<24} ERC-8004 #{p.identity.agent_id}{note}")


# ----------------------------------------------------------------------- the planner


async def _plan_trip(
    chain: Chain, manifest: Manifest, suite: AgentSuite, planner: LocalAccount,
    published: list[Published],
) -> Outcome:
    """Find one agent per skill (cheapest whose served card matches the chain), then pay."""
    outcome = Outcome()
    by_address = {p.address: p for p in published}
    source = _RecordingSource(chain, suite.addresses.factory)
    query = Query(network=manifest.network, active=True,
                  max_price=to_atomic(MAX_PRICE, manifest.token.decimals))
    listed = await anyio.to_thread.run_sync(
        lambda: search_chain(suite, query, source="registry"))
    async with httpx.AsyncClient(timeout=60) as http, PayingAgentClient(
        planner.key, max_per_request=token_units_max(MAX_PRICE),
        budget=Budget({manifest.token.address: to_atomic(BUDGET, manifest.token.decimals)}),
        http=http,
    ) as client:
        for skill, request in REQUESTS.items():
            wanted = _with_skill(query, skill)
            hits = sorted((h for h in listed if h.mismatch(wanted) is None),
                          key=lambda h: h.card.payment.amount if h.card.payment else 0)
            for hit in hits:
                check = Checked(skill, hit)
                outcome.checks.append(check)
                try:
                    found = await discover(hit.address, source, http=http)
                    check.served_hash = card_hash(await fetch_card(card_url_for(found.card), http))
                except CardMismatch as e:
                    check.refused = "; ".join(e.differences)
                    check.served_hash = await _served_hash(hit, http)
                    continue
                except CardError as e:
                    check.refused = str(e)
                    continue
                finally:
                    raw = source.raw.get(hit.address)
                    check.onchain_hash = keccak(raw) if raw is not None else None
                task = Task(skill, by_address[hit.address], request)
                t0 = time.perf_counter()
                result = await client.send(found, request)
                task.latency_ms = (time.perf_counter() - t0) * 1000
                task.answer, task.task_id = result.text, result.task.id
                task.context_id = result.task.context_id
                if result.receipt is not None and result.receipt.success:
                    task.transaction = result.receipt.transaction
                outcome.tasks.append(task)
                break
    return outcome


def _with_skill(query: Query, skill: str) -> Query:
    return dataclasses.replace(query, skill=skill)


async def _served_hash(hit: AgentView, http: httpx.AsyncClient) -> bytes | None:
    """The hash the served card would have on-chain (None: the chain could not even hold it)."""
    try:
        return card_hash(await fetch_card(card_url(hit.card), http))
    except (CardError, InvalidCard):
        return None


def _rate(chain: Chain, suite: AgentSuite, planner: LocalAccount, task: Task,
          links: Mapping[str, Sequence[int]]) -> None:
    """Check the settlement on-chain, then leave ERC-8004 feedback carrying it as proof."""
    if not task.transaction:
        return
    payment = task.agent.onchain.payment
    assert payment is not None
    task.proof = payment_proof(chain, task.transaction, payer=planner.address, payment=payment)
    task.amount = task.proof.amount
    receipt = chain.w3.eth.get_transaction_receipt(task.transaction)  # type: ignore[arg-type]
    task.gas = int(receipt["gasUsed"])
    agent = suite.agent(task.agent.address)
    identity = find_identity(suite, agent, links)  # what any reader does: follow the link
    if identity is None:
        return
    spec = task.agent.spec
    task.feedback = give_feedback(
        suite, planner, identity, task.agent.onchain, spec.score, comment=spec.comment,
        proof=task.proof, skill=task.skill,
        task={"taskId": task.task_id, "contextId": task.context_id},
    )


# -------------------------------------------------------------------------- summary


def _summary(
    say: Callable[..., None], chain: Chain, manifest: Manifest, suite: AgentSuite,
    planner: LocalAccount, published: list[Published], outcome: Outcome,
    before: dict[str, int], after: dict[str, int],
) -> bool:
    by_address = {p.address: p for p in published}
    say(f"\ndiscovery  the planner {planner.address} reads AgentRegistry for each skill "
        f"(active, on {manifest.network}, price <= {MAX_PRICE} USDC), cheapest first, and "
        f"compares\n           the card each endpoint serves with the card its contract holds "
        f"(cardHash = keccak of cardJSON())")
    say(f" {'skill':<17} {'agent':<15} {'price':>6}  {'found in':<16} {'on-chain cardHash':<20} "
        f"served card")
    for c in outcome.checks:
        p = by_address[c.hit.address]
        served = _short(c.served_hash) if c.served_hash else "?"
        verdict = (f"REFUSED ({served}): {c.refused}" if c.refused
                   else f"{served}  verified, used")
        onchain = _short(c.onchain_hash) if c.onchain_hash else "?"
        say(f" {c.skill:<17} {p.spec.name:<15} {p.spec.price:>6}  {c.hit.found_in:<16} "
            f"{onchain:<20} {verdict}")

    say("\npayments   inside A2A tasks: input-required (payment-required) -> payment-submitted "
        "-> completed (payment-completed + receipt)")
    say(f" {'#':>2}  {'agent':<12} {'request':<30} {'paid (USDC)':>11} {'gas':>8} "
        f"{'latency':>9}  transaction")
    for i, done in enumerate(outcome.tasks, 1):
        say(f" {i:>2}  {done.agent.spec.name:<12} {done.request:<30} {_usdc(done.amount):>11} "
            f"{done.gas:>8,} {done.latency_ms:>7.1f}ms  {done.transaction}")
        say(f"     {'':<12} -> {done.answer}")
    answers = {t.skill: t.answer for t in outcome.tasks}
    say(f"\nplan       {TRIP['from']} -> {TRIP['to']} on {TRIP['date']}: flight "
        f"{answers.get('flight-quote', '?')}; weather {answers.get('weather-forecast', '?')}")

    say(f"\n{'balances (USDC)':<22}{'before':>16}{'after':>16}{'change':>16}")
    for name in before:
        change = after[name] - before[name]
        say(f"{name:<22}{_usdc(before[name]):>16}{_usdc(after[name]):>16}"
            f"{Decimal(change).scaleb(-6):>+16,.6f}")
    total_before, total_after = sum(before.values()), sum(after.values())
    say(f"{'total':<22}{_usdc(total_before):>16}{_usdc(total_after):>16}"
        f"{Decimal(total_after - total_before).scaleb(-6):>+16,.6f}")

    say("\nreputation ERC-8004 feedback by the planner (tag1 starred, tag2 the skill; the "
        "feedback file's\n           proofOfPayment is the settlement above, checked on-chain "
        "before rating)")
    say(f" {'agent':<15} {'ERC-8004':<9} {'score':>5}  {'summary over the planner':<26} "
        f"proof of payment")
    rep = suite.reputation
    ratings_ok = True
    rated = {t.agent.address: t for t in outcome.tasks}
    for p in published:
        summary = rep.summary(p.identity.agent_id, [planner.address])
        t = rated.get(p.address)
        given = t.feedback if t else None
        shown = (f"{summary.count} x {summary.decimal}" if summary.count
                 else "no feedback")
        proof = t.proof.tx_hash if t and t.proof else "-"
        say(f" {p.spec.name:<15} #{p.identity.agent_id:<8} "
            f"{given.value if given else '-':>5}  {shown:<26} {proof}")
        expected = (1, p.spec.score) if given else (0, 0)
        ratings_ok &= (summary.count, summary.value) == expected
        if t is not None and given is not None:
            stored = rep.read_feedback(p.identity.agent_id, planner.address, given.index)
            ratings_ok &= (stored.value, stored.tag1, stored.tag2) == (
                p.spec.score, RATING_TAG, t.skill)

    prices = {p.address: to_atomic(p.spec.price, manifest.token.decimals) for p in published}
    honest = [p for p in published if not p.spec.compromised]
    paid_total = sum(t.amount for t in outcome.tasks)
    changes = {name: after[name] - before[name] for name in before}
    return (
        total_before == total_after
        and sorted(t.agent.address for t in outcome.tasks) == sorted(p.address for p in honest)
        and all(t.proof is not None and t.amount == prices[t.agent.address]
                for t in outcome.tasks)
        and changes["planner"] == -paid_total
        and all(changes[f"{p.spec.name} payee"] == prices[p.address] for p in honest)
        and changes["attacker"] == 0
        and all(c.refused for c in outcome.checks if by_address[c.hit.address].spec.compromised)
        and any(c.refused for c in outcome.checks)
        and all(c.onchain_hash == c.hit.card_hash for c in outcome.checks)
        and all(c.served_hash == c.onchain_hash for c in outcome.checks if not c.refused)
        and all(c.served_hash != c.onchain_hash for c in outcome.checks if c.refused)
        and ratings_ok
    )


# --------------------------------------------------------------------------- helpers


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].strip("/"))


def _balances(chain: Chain, manifest: Manifest, who: dict[str, str]) -> dict[str, int]:
    return {name: token_balance(chain, manifest.token.address, a) for name, a in who.items()}


def _usdc(units: int) -> str:
    return f"{Decimal(units).scaleb(-6):,.6f}"


def _short(digest: bytes) -> str:
    h = digest.hex()
    return f"0x{h[:8]}…{h[-6:]}"
