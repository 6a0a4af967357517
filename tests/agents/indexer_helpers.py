"""A small world of agents for the indexer tests, and a way to read every answer the index gives.

``build_world`` makes, on a private anvil (it moves the clock):

- **translator** (owner T): priced in the test token, listed in the open registry,
  an ERC-8004 identity linked to it; paid by
  - *buyer* (owner B) through its agent, twice a day apart, and rated 90 by it;
    B also leaves ERC-8004 feedback (a payer: counts);
  - *sibling* (also owner T): same owner, must not count;
  - a *stranger* leaves ERC-8004 feedback without paying: must not count.
- **summarizer** (owner S) and **painter** (owner P) pay each other: a cycle,
  must not count; the summarizer is listed by the curated registry; the painter
  is free and disabled (inactive).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.agents.card import Interface, OnchainCard, Payment, Skill
from a402.agents.indexer.search import Query, Search
from a402.agents.onchain import Agent, AgentSuite
from a402.chain.node import Chain
from a402.chain.tx import contract_at, deploy_contract, transact

ETH = 10**18
DAY = 86_400


def funded(chain: Chain, eth: int = 10 * ETH) -> LocalAccount:
    account: LocalAccount = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=eth)
    return account


def increase_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def card(name: str, description: str, skills: list[tuple[str, str, tuple[str, ...]]], *,
         network: str, token: str | None = None, amount: int = 0, pay_to: str | None = None,
         version: str = "1.0.0") -> OnchainCard:
    payment = None
    if token is not None and pay_to is not None:
        payment = Payment(network=network, asset=token, amount=amount, pay_to=pay_to)
    return OnchainCard(
        name=name, description=description,
        interfaces=(Interface(f"https://{name.lower().replace(' ', '-')}.example/a2a"),),
        version=version,
        skills=tuple(Skill(i, n, f"{n} for you.", tags) for i, n, tags in skills),
        payment=payment,
        payment_description="Pay per task with x402." if payment else "",
    )


@dataclass
class World:
    chain: Chain
    suite: AgentSuite
    token: str
    start_block: int
    owners: dict[str, LocalAccount]
    agents: dict[str, Agent]
    identity_id: int


def deploy(chain: Chain) -> tuple[AgentSuite, str, int]:
    deployer = chain.accounts[0]
    start = int(chain.w3.eth.block_number) + 1
    suite = AgentSuite.deploy(chain, deployer, curators=[deployer.address], threshold=1)
    token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                            deployer.address)
    return suite, token.address, start


def build_world(chain: Chain) -> World:
    suite, token_address, start = deploy(chain)
    deployer = chain.accounts[0]
    token = contract_at(chain, "TestUSDC", token_address)
    net = chain.network
    owners = {k: funded(chain) for k in ("T", "B", "S", "P", "stranger")}
    for k in ("B", "T"):
        transact(chain, deployer, token.functions.mint(owners[k].address, 10**12))
    f = suite.factory
    T, B, S, P = (owners[k] for k in "TBSP")
    agents = {
        "translator": f.create(T, card(
            "Translator", "Translates text between languages, fast and accurately.",
            [("translate", "Translate", ("language", "text"))], network=net,
            token=token_address, amount=10_000, pay_to=T.address)),
        "sibling": f.create(T, card(
            "Proofreader", "Checks grammar.", [("proofread", "Proofread", ("text",))],
            network=net, token=token_address, amount=5_000, pay_to=T.address)),
        "buyer": f.create(B, card(
            "Shopper", "Buys translations.", [("shop", "Shop", ("commerce",))],
            network="eip155:8453", token=token_address, amount=1, pay_to=B.address)),
        "summarizer": f.create(S, card(
            "Summarizer", "Summarizes long documents.",
            [("summarize", "Summarize", ("text", "documents"))], network=net,
            token=token_address, amount=50_000, pay_to=S.address)),
        "painter": f.create(P, card(
            "Image Painter", "Paints pictures from prompts.",
            [("paint", "Paint", ("image",))], network=net)),
    }
    tr, sib, buyer, summ, painter = (agents[k] for k in (
        "translator", "sibling", "buyer", "summarizer", "painter"))
    suite.registry.enroll(T, tr.address)
    suite.curated_registry.request_enrolment(S, summ.address)
    suite.curated_registry.approve(deployer, summ.address)

    # Honest demand: the buyer pays the translator through its agent, a day apart.
    tr.pay_token(B, token_address, 10_000, payer_agent=buyer.address)
    increase_time(chain, DAY + 60)
    tr.pay_token(B, token_address, 10_000, payer_agent=buyer.address)
    tr.rate(B, buyer.address, 90, "good translation")
    # Self-dealing: the translator's owner pays it through its sibling agent.
    tr.pay_token(T, token_address, 999_000, payer_agent=sib.address)
    # A cycle: summarizer and painter pay each other (native coin, via their own balances).
    summ.pay(S, ETH // 10)
    painter.pay(P, ETH // 10)
    summ.pay_agent(S, painter.address, ETH // 100)
    painter.pay_agent(P, summ.address, ETH // 100)
    painter.set_enabled(P, False)

    # ERC-8004: the translator's identity, linked to its contract; feedback from a payer
    # (the buyer's owner) and from a stranger who never paid.
    identity = suite.identity.register(T, "https://translator.example/agent.json",
                                       {"agentContract": bytes.fromhex(tr.address[2:])})
    suite.reputation.give_feedback(B, identity, 95, tag1="starred")
    suite.reputation.give_feedback(owners["stranger"], identity, 0, tag1="starred")
    increase_time(chain, 10 * DAY)
    tr.heartbeat(T)
    return World(chain, suite, token_address, start, owners, agents, identity)


QUERIES: tuple[Query, ...] = (
    Query(),
    Query(limit=2),
    Query(skill="translate"),
    Query(skill="TEXT"),
    Query(q="translat"),
    Query(q="long documents"),
    Query(q="nothing-matches-this"),
    Query(max_price=10_000),
    Query(max_price=0),
    Query(network="eip155:8453"),
    Query(min_reputation=1.0),
    Query(active=True),
    Query(active=False),
    Query(registry="any"),
    Query(registry="curated"),
)


def answers(search: Search) -> dict[str, Any]:
    """Every answer the index gives about the world: all queries (all pages) and every agent."""
    out: dict[str, Any] = {}
    for query in QUERIES:
        pages = []
        cursor = None
        while True:
            page = search.search(Query(**{**query.__dict__, "cursor": cursor}))
            pages.append(page["agents"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        out[json.dumps(query.__dict__, sort_keys=True)] = pages
        for summary in (s for p in pages for s in p):
            out.setdefault(f"agent {summary['address']}", search.agent(summary["address"]))
    return out
