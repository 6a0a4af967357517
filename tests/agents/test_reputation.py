"""The reputation formula (pure): who is a payer, what is self-dealing, which feedback counts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.agents.reputation import (
    WEIGHTS,
    AgentFacts,
    Inputs,
    Opinion,
    PaymentGroup,
    explain,
    score_agents,
    strongly_connected,
)

DAY = 86_400
NOW = 1_000 * DAY
USDC = "0x" + "aa" * 20


def addr(name: str) -> str:
    return "0x" + name.encode().hex().ljust(40, "0")[:40]


def agent(name: str, *owners: str) -> AgentFacts:
    return AgentFacts(addr(name), tuple(addr(o) for o in owners), USDC)


def paid(payee: str, payer_agent: str | None, sender: str, *, amount: float = 1e6,
         first: int = NOW - 10 * DAY, last: int | None = None, count: int = 1,
         asset: str = USDC) -> PaymentGroup:
    return PaymentGroup(addr(payee), addr(payer_agent) if payer_agent else None, addr(sender),
                        asset, count, amount, first, first if last is None else last)


def score(inputs: Inputs, name: str) -> tuple[float, dict]:
    return score_agents(inputs, NOW)[addr(name)]


def test_many_agents_of_one_owner_are_one_payer() -> None:
    sybils = [agent(f"s{i}", "mallory") for i in range(10)]
    honest = [agent(f"h{i}", f"owner{i}") for i in range(10)]
    facts = [agent("target", "tina"), *sybils, *honest]
    by_sybils = Inputs(facts, [paid("target", f"s{i}", "mallory") for i in range(10)])
    by_honest = Inputs(facts, [paid("target", f"h{i}", f"owner{i}") for i in range(10)])
    s_score, s_detail = score(by_sybils, "target")
    h_score, h_detail = score(by_honest, "target")
    assert s_detail["components"]["payers"]["inputs"]["eligible_payers"] == 1
    assert h_detail["components"]["payers"]["inputs"]["eligible_payers"] == 10
    assert h_score > s_score > 0


def test_payments_from_the_same_owner_do_not_count_even_after_a_transfer() -> None:
    # "sold" was owned by tina, then handed to a fresh key: still tina's entity.
    facts = [agent("target", "tina"), agent("sibling", "tina"), agent("sold", "tina", "fresh")]
    inputs = Inputs(facts, [paid("target", "sibling", "tina"), paid("target", "sold", "fresh"),
                            paid("target", None, "tina")])
    value, detail = score(inputs, "target")
    assert value == 0
    assert detail["excluded"]["same_owner"] == {"payments": 3, "payers": 1}


def test_cycles_of_any_length_do_not_count_but_chains_do() -> None:
    facts = [agent(n, f"o{n}") for n in "abcde"]
    payments = [paid("b", "a", "oa"), paid("c", "b", "ob"), paid("a", "c", "oc"),  # a→b→c→a
                paid("e", "d", "od")]  # d→e, no way back
    scores = score_agents(Inputs(facts, payments), NOW)
    for n in "abc":
        assert scores[addr(n)][1]["excluded"]["circular"]["payments"] == 1
        assert scores[addr(n)][0] == 0
    assert scores[addr("e")][0] > 0
    assert scores[addr("e")][1]["excluded"]["circular"]["payments"] == 0


def test_only_eligible_payers_opinions_count_and_bad_ones_lower_the_score() -> None:
    facts = [agent("target", "tina"), agent("buyer", "bob")]
    payments = [paid("target", "buyer", "bob")]
    base, _ = score(Inputs(facts, payments), "target")

    def with_opinions(*ops: Opinion) -> tuple[float, dict]:
        return score(Inputs(facts, payments, list(ops)), "target")

    good, _ = with_opinions(Opinion(addr("target"), addr("bob"), "erc8004", 100, (1, 0),
                                    tag="starred"))
    bad, _ = with_opinions(Opinion(addr("target"), addr("buyer"), "rating", 0, (1, 0)))
    assert good > base > bad
    ignored_score, detail = with_opinions(
        Opinion(addr("target"), addr("stranger"), "erc8004", 100, (1, 0)),
        Opinion(addr("target"), addr("bob"), "erc8004", 100, (2, 0), revoked=True),
        Opinion(addr("target"), addr("bob"), "erc8004", 100, (3, 0), tag="uptime"),
        Opinion(addr("target"), addr("tina"), "erc8004", 100, (4, 0)),  # the owner itself
    )
    assert ignored_score == base
    assert detail["components"]["feedback"]["inputs"]["ignored"] == {
        "author_not_an_eligible_payer": 2, "revoked": 1, "not_a_score_tag": 1}
    # One voice per payer entity: its latest opinion (a withdrawn rating leaves none).
    latest, _ = with_opinions(
        Opinion(addr("target"), addr("buyer"), "rating", 0, (1, 0)),
        Opinion(addr("target"), addr("bob"), "erc8004", 100, (2, 0)))
    assert latest == good
    withdrawn, _ = with_opinions(
        Opinion(addr("target"), addr("buyer"), "rating", 100, (1, 0)),
        Opinion(addr("target"), addr("buyer"), "rating", None, (2, 0)))
    assert withdrawn == base


def test_recurring_needs_a_day_and_volume_counts_the_price_asset_in_whole_tokens() -> None:
    facts = [agent("target", "tina"), agent("buyer", "bob")]
    once = Inputs(facts, [paid("target", "buyer", "bob", count=5, last=NOW - 10 * DAY + 3600)],
                  decimals={USDC: 6})
    again = Inputs(facts, [paid("target", "buyer", "bob", count=2, last=NOW - 8 * DAY)],
                   decimals={USDC: 6})
    assert score(once, "target")[1]["components"]["recurring"]["inputs"]["recurring_payers"] == 0
    assert score(again, "target")[1]["components"]["recurring"]["inputs"][
        "recurring_payers"] == 1
    other = Inputs(facts, [paid("target", "buyer", "bob", amount=5e6),
                           paid("target", "buyer", "bob", amount=10**30, asset="0x" + "bb" * 20)],
                   decimals={USDC: 6})
    assert score(other, "target")[1]["components"]["volume"]["inputs"]["amount"] == 5.0


def test_the_explanation_names_every_weight_and_rule() -> None:
    facts = [agent("target", "tina"), agent("buyer", "bob")]
    value, detail = score(Inputs(facts, [paid("target", "buyer", "bob")]), "target")
    explained = explain(detail, NOW)
    assert sum(c["weight"] for c in explained["components"].values()) == pytest.approx(1)
    assert set(explained["components"]) == set(WEIGHTS)
    assert all(c["rule"] for c in explained["components"].values())
    assert value == pytest.approx(sum(c["points"] for c in explained["components"].values()),
                                  abs=0.01)
    assert set(explained["excluded"]) == {"same_owner", "circular"}


edges = st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(edges)
def test_strongly_connected_components_match_mutual_reachability(pairs: set) -> None:
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        graph.setdefault(str(a), set()).add(str(b))
    comp = strongly_connected(graph)
    nodes = sorted(set(graph) | {v for vs in graph.values() for v in vs})
    reach = {n: {n} for n in nodes}
    for _ in nodes:  # transitive closure, small graphs
        for n in nodes:
            for m in list(reach[n]):
                reach[n] |= graph.get(m, set())
    for x, y in itertools.product(nodes, nodes):
        assert (comp[x] == comp[y]) == (y in reach[x] and x in reach[y])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=12))
def test_a_new_independent_payer_never_lowers_a_score(pairs: list) -> None:
    facts = [agent(f"a{i}", f"o{i}") for i in range(6)] + [agent("new", "newcomer")]
    payments = [paid(f"a{b}", f"a{a}", f"o{a}") for a, b in pairs if a != b]
    before = score_agents(Inputs(facts, payments), NOW)
    after = score_agents(Inputs(facts, [*payments, paid("a0", "new", "newcomer")]), NOW)
    assert after[addr("a0")][0] >= before[addr("a0")][0]
