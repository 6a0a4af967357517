"""``a402 agents``: deploy, register, update, show, search and rate, through the real parser,
against the shared anvil (the module deploys its own agent contracts with the CLI itself).

Every write is checked on-chain with the typed bindings, not just through the command's
own output, and every refusal checks that nothing changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.agents.a2a_provider import PaidAgent
from a402.agents.card import Skill
from a402.agents.directory import (
    LINK_KEY,
    RATING_TAG,
    REGISTRATION_TYPE,
    SUITE_CONTRACTS,
    open_suite,
    read_data_uri,
)
from a402.agents.onchain import AgentSuite
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.cli import main
from tests.servers import reserved_port

from .onchain_helpers import fresh_account

pytestmark = pytest.mark.anvil

UNUSED_FACILITATOR = "http://127.0.0.1:9"  # PaidAgent wants one; only its card is served here


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def manifest_path(dev_stack: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev stack's manifest, as ``a402 devnet`` writes it, with the agent contracts
    added by ``a402 agents deploy``."""
    path = tmp_path_factory.mktemp("agents-cli") / "devnet.json"
    path.write_text(dev_stack.to_json())
    path.chmod(0o600)
    assert main(["agents", "deploy", "--manifest", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def suite(anvil_chain: Chain, manifest_path: Path) -> AgentSuite:
    return open_suite(anvil_chain, Manifest.load(manifest_path))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], manifest_path: Path) -> Callable[..., Any]:
    """Run ``a402 agents ACTION …`` with the module's manifest; (exit code, stdout, stderr).
    Stdout is parsed when it is JSON."""

    def run(action: str, *args: str) -> tuple[int, Any, str]:
        capsys.readouterr()
        code = main(["agents", action, "--manifest", str(manifest_path), *args])
        out, err = capsys.readouterr()
        try:
            return code, json.loads(out), err
        except ValueError:
            return code, out, err

    return run


@pytest.fixture
def key_file(tmp_path: Path) -> Callable[[LocalAccount], str]:
    def write(account: LocalAccount) -> str:
        path = tmp_path / f"{account.address}.key"
        path.write_text(account.key.hex())
        path.chmod(0o600)
        return str(path)

    return write


@pytest.fixture
def owner(anvil_chain: Chain) -> LocalAccount:
    return fresh_account(anvil_chain)


def register(cli: Callable[..., Any], key: str, *extra: str, name: str = "Translator",
             skill: str = "translate:Translate:Translate a text.:language,text",
             url: str = "http://127.0.0.1:8765/") -> dict[str, Any]:
    code, out, err = cli("register", "--key-file", key, "--name", name, "--description",
                         "Translates text.", "--url", url, "--skill", skill, *extra)
    assert code == 0, err
    assert isinstance(out, dict)
    return out


# ------------------------------------------------------------------------------ deploy


def test_deploy_adds_live_agent_contracts_to_the_manifest_and_will_not_silently_replace_them(
    anvil_chain: Chain, manifest_path: Path, dev_stack: Manifest, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = Manifest.load(manifest_path)
    assert manifest.contracts["TestUSDC"] == dev_stack.token.address  # kept
    for name in SUITE_CONTRACTS.values():
        assert anvil_chain.w3.eth.get_code(manifest.contracts[name]), name
    suite = open_suite(anvil_chain, manifest)
    assert suite.factory.implementation == manifest.contracts["Agent"]
    assert manifest_path.stat().st_mode & 0o777 == 0o600  # it holds dev keys

    capsys.readouterr()
    assert main(["agents", "deploy", "--manifest", str(manifest_path)]) == 2
    assert "already names live agent contracts" in capsys.readouterr().err
    assert Manifest.load(manifest_path).contracts == manifest.contracts

    copy = tmp_path / "copy.json"
    copy.write_text(manifest_path.read_text())
    assert main(["agents", "deploy", "--manifest", str(copy), "--force"]) == 0
    replaced = Manifest.load(copy).contracts
    assert replaced["AgentFactory"] != manifest.contracts["AgentFactory"]
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(copy.read_text())["agents"]  # what `a402 indexer --suite` reads
    assert printed["factory"] == replaced["AgentFactory"]
    assert set(printed) == set(SUITE_CONTRACTS)


def test_a_manifest_for_another_chain_is_refused_before_any_key_is_used(
    tmp_path: Path, manifest_path: Path, owner: LocalAccount,
    key_file: Callable[[LocalAccount], str], capsys: pytest.CaptureFixture[str],
) -> None:
    data = json.loads(manifest_path.read_text())
    data["chainId"] = 1
    wrong = tmp_path / "mainnet.json"
    wrong.write_text(json.dumps(data))
    capsys.readouterr()
    code = main(["agents", "register", "--manifest", str(wrong), "--key-file", key_file(owner),
                 "--name", "X", "--url", "http://x.example/", "--skill", "x"])
    assert code == 2
    assert "the manifest is for 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- register


def test_register_from_flags_publishes_the_card_a_paid_agent_serves(
    cli: Callable[..., Any], suite: AgentSuite, dev_stack: Manifest, owner: LocalAccount,
    key_file: Callable[[LocalAccount], str],
) -> None:
    payee = Account.create().address
    url = "http://127.0.0.1:8801/"
    paid = PaidAgent(
        _noop, name="Translator", description="Translates text.", url=url, price="0.01",
        pay_to=payee, token=dev_stack.token, network=dev_stack.network,
        facilitator=UNUSED_FACILITATOR,
        skill=Skill("translate", "Translate", "Translate a text.", ("language", "text")),
    )
    out = register(cli, key_file(owner), "--price", "0.01", "--pay-to", payee, "--list",
                   "--erc8004", url=url)

    agent = suite.agent(out["agent"])
    assert suite.factory.is_agent(agent.address) and agent.owner() == owner.address
    # Byte for byte what the PaidAgent serves, so a client's discovery check passes.
    assert agent.card() == paid.onchain_model()
    assert agent.card_hash() == paid.onchain_model().card_hash()
    assert out["cardHash"] == "0x" + agent.card_hash().hex()
    assert out["card"] == paid.onchain_card() and out["revision"] == 1
    assert out["listed"] is True and suite.registry.is_listed(agent.address)

    # ERC-8004: an identity owned by the agent's owner, linked to the agent, with a
    # registration file naming the A2A card and this very registration.
    identity = out["erc8004"]
    agent_id = identity["agentId"]
    assert suite.identity.owner_of(agent_id) == owner.address
    assert suite.identity.get_metadata(agent_id, LINK_KEY) == bytes.fromhex(agent.address[2:])
    assert suite.identity.agent_uri(agent_id) == identity["agentURI"]
    registration = read_data_uri(identity["agentURI"])
    assert registration is not None and registration["type"] == REGISTRATION_TYPE
    assert registration["services"] == [
        {"name": "A2A", "endpoint": "http://127.0.0.1:8801/.well-known/agent-card.json",
         "version": "1.0"}]
    assert registration["registrations"] == [
        {"agentId": agent_id, "agentRegistry": suite.identity.agent_registry}]
    assert registration["x402Support"] is True


def test_register_from_the_served_card_file_and_refuse_what_the_chain_cannot_hold(
    cli: Callable[..., Any], suite: AgentSuite, dev_stack: Manifest, owner: LocalAccount,
    key_file: Callable[[LocalAccount], str], tmp_path: Path,
) -> None:
    paid = PaidAgent(_noop, name="Summarizer", description="Summaries.",
                     url="http://127.0.0.1:8802/", price="0.002", pay_to=owner.address,
                     token=dev_stack.token, network=dev_stack.network,
                     facilitator=UNUSED_FACILITATOR)
    served = agent_card_to_dict(paid.card)  # what /.well-known/agent-card.json returns
    card_file = tmp_path / "card.json"
    card_file.write_text(json.dumps(served))
    code, out, err = cli("register", "--key-file", key_file(owner), "--card", str(card_file))
    assert code == 0, err
    assert suite.agent(out["agent"]).card() == paid.onchain_model()

    before = suite.factory.count()
    card_file.write_text(json.dumps({**served, "provider": {"organization": "X",
                                                            "url": "https://x.example"}}))
    code, _, err = cli("register", "--key-file", key_file(owner), "--card", str(card_file))
    assert code == 2 and "the chain cannot hold provider" in err
    assert suite.factory.count() == before


# ------------------------------------------------------------------------------ update


def test_update_is_owner_only_and_changes_exactly_what_is_asked(
    cli: Callable[..., Any], suite: AgentSuite, owner: LocalAccount, anvil_chain: Chain,
    key_file: Callable[[LocalAccount], str],
) -> None:
    out = register(cli, key_file(owner), "--price", "0.01", "--erc8004")
    agent = suite.agent(out["agent"])
    original = agent.card()
    stranger = fresh_account(anvil_chain)

    code, _, err = cli("update", agent.address, "--key-file", key_file(stranger),
                       "--price", "0")
    assert code == 2 and f"only the owner {owner.address}" in err
    assert agent.revision() == 1 and agent.card() == original

    code, out, err = cli("update", agent.address, "--key-file", key_file(owner),
                         "--price", "0.02")
    assert code == 0, err
    assert out["changed"] == ["card"] and agent.revision() == 2
    card = agent.card()
    assert card.payment is not None and card.payment.amount == 20_000
    assert card.payment.pay_to == original.payment.pay_to  # type: ignore[union-attr]
    assert (card.name, card.skills, card.interfaces) == (original.name, original.skills,
                                                          original.interfaces)

    # A renamed agent's generated ERC-8004 registration file follows.
    code, out, err = cli("update", agent.address, "--key-file", key_file(owner),
                         "--name", "Traductor")
    assert code == 0, err
    assert out["changed"] == ["card", "erc8004 agentURI"]
    agent_id = _identity_id(suite, agent.address)
    registration = read_data_uri(suite.identity.agent_uri(agent_id))
    assert registration is not None and registration["name"] == "Traductor"

    code, out, _ = cli("update", agent.address, "--key-file", key_file(owner), "--disable")
    assert code == 0 and out["changed"] == ["disabled"] and out["active"] is False
    assert not agent.is_active()
    code, out, _ = cli("update", agent.address, "--key-file", key_file(owner), "--enable",
                       "--free")
    assert code == 0 and out["active"] is True
    assert out["changed"] == ["card", "erc8004 agentURI", "enabled"]  # x402Support flipped
    assert agent.card().payment is None and agent.card().payment_description == ""
    registration = read_data_uri(suite.identity.agent_uri(agent_id))
    assert registration is not None and registration["x402Support"] is False

    code, out, _ = cli("update", agent.address, "--key-file", key_file(owner), "--heartbeat")
    assert code == 0 and out["changed"] == ["heartbeat"]


# -------------------------------------------------------------------------------- show


def test_show_reports_card_terms_liveness_listing_ratings_and_the_served_card_check(
    cli: Callable[..., Any], suite: AgentSuite, dev_stack: Manifest, owner: LocalAccount,
    key_file: Callable[[LocalAccount], str], reserved: int,
) -> None:
    port = reserved  # held until the card's server binds it, twice
    url = f"http://127.0.0.1:{port}/"
    paid = PaidAgent(_noop, name="Shower", description="Shows.", url=url, price="0.003",
                     pay_to=owner.address, token=dev_stack.token, network=dev_stack.network,
                     facilitator=UNUSED_FACILITATOR)
    card_file = Path(key_file(owner)).with_suffix(".card.json")
    card_file.write_text(json.dumps(agent_card_to_dict(paid.card)))
    code, out, err = cli("register", "--key-file", key_file(owner), "--card", str(card_file),
                         "--list", "--erc8004")
    assert code == 0, err
    address = out["agent"]
    agent = suite.agent(address)

    with serve_in_thread(paid.app(), port=port):
        code, shown, err = cli("show", address, "--check-endpoint")
    assert code == 0, err
    assert shown["card"] == json.loads(agent.card_json())
    assert shown["cardHash"] == "0x" + agent.card_hash().hex()
    assert shown["owner"] == owner.address and shown["active"] is True
    assert shown["terms"] == {"scheme": "exact", "network": dev_stack.network,
                              "asset": dev_stack.token.address, "amount": "3000",
                              "payTo": owner.address}
    assert shown["price"] == "0.003 USDC"
    assert shown["listed"] == {"AgentRegistry": True, "CuratedAgentRegistry": False}
    assert shown["ratings"] == {"count": 0, "average": None}
    assert shown["erc8004"]["agentId"] == out["erc8004"]["agentId"]
    assert shown["erc8004"]["feedback"] == {"clients": [], "count": 0, "average": None}
    assert shown["endpoint"] == {"matches": True,
                                 "url": f"http://127.0.0.1:{port}/.well-known/agent-card.json"}

    # The web server now serves a card that pays someone else: show says so, by field.
    paid.card.capabilities.extensions[0].params.update({"payTo": Account.create().address})
    with serve_in_thread(paid.app(), port=port):
        code, shown, _ = cli("show", address, "--check-endpoint")
    assert code == 0 and shown["endpoint"]["matches"] is False
    assert any(".params.payTo" in d for d in shown["endpoint"]["differences"])

    code, _, err = cli("show", Account.create().address)
    assert code == 3 and "is not an agent of factory" in err


# ------------------------------------------------------------------------------ search


@pytest.fixture
def catalogue(cli: Callable[..., Any], owner: LocalAccount, anvil_chain: Chain,
              key_file: Callable[[LocalAccount], str]) -> dict[str, str]:
    """Five agents sharing a skill no other test uses: name → address."""
    skill = "sk-" + uuid.uuid4().hex[:8]
    key = key_file(owner)
    made = {}
    for name, extra in [
        ("cheap", ["--price", "0.001", "--list"]),
        ("dear", ["--price", "0.05", "--list"]),
        ("free", []),
        ("elsewhere", ["--price", "0.001", "--network", "eip155:1"]),
        ("asleep", ["--price", "0.001"]),
    ]:
        out = register(cli, key, *extra, name=f"{name} {skill}",
                       skill=f"{skill}:Skill:Does {name} things.:{skill}")
        made[name] = out["agent"]
    code, _, _ = cli("update", made["asleep"], "--key-file", key, "--disable")
    assert code == 0
    made["skill"] = skill
    return made


def _found(cli: Callable[..., Any], *args: str) -> set[str]:
    code, out, err = cli("search", "--json", *args)
    assert code == 0, err
    return {hit["agent"] for hit in out}


def test_search_on_chain_by_skill_text_price_network_liveness_and_listing(
    cli: Callable[..., Any], catalogue: dict[str, str], dev_stack: Manifest,
) -> None:
    c = catalogue
    skill = c["skill"]
    every = {c[n] for n in ("cheap", "dear", "free", "elsewhere", "asleep")}
    assert _found(cli, "--skill", skill) == every
    assert _found(cli, "--skill", skill.upper()) == every  # ids and tags, case-insensitive
    assert _found(cli, "--skill", skill, "--max-price", "0.01") == every - {c["dear"]}
    assert _found(cli, "--skill", skill, "--network", dev_stack.network) == every - {
        c["elsewhere"]}
    assert _found(cli, "--skill", skill, "--active") == every - {c["asleep"]}
    assert _found(cli, "--text", f"dear {skill}") == {c["dear"]}
    assert _found(cli, "--text", "does free things", "--skill", skill) == {c["free"]}
    assert _found(cli, "--skill", skill, "--source", "registry") == {c["cheap"], c["dear"]}
    assert _found(cli, "--skill", skill, "--min-rating", "1") == set()
    assert _found(cli, "--skill", "no-such-skill-" + skill) == set()

    code, table, _ = cli("search", "--skill", skill, "--max-price", "0.001", "--active",
                         "--network", dev_stack.network)
    assert code == 0
    assert c["cheap"] in table and f"cheap {skill}" in table and "0.001 USDC" in table
    assert c["free"] in table and table.rstrip().endswith("2 agents")


def test_search_through_an_indexer_keeps_only_what_the_chain_confirms(
    cli: Callable[..., Any], catalogue: dict[str, str], dev_stack: Manifest,
) -> None:
    c = catalogue
    asked: list[dict[str, str]] = []
    stranger = Account.create().address

    async def agents(request: Request) -> JSONResponse:
        asked.append(dict(request.query_params))
        return JSONResponse({"agents": [
            {"address": c["cheap"], "name": "cheap"},
            {"address": stranger, "name": "not an agent at all"},
            {"address": c["dear"]},  # the indexer says it is cheap enough; the chain says not
            c["cheap"],  # a duplicate
            {"agent": c["free"].lower()},
        ]})

    app = Starlette(routes=[Route("/agents", agents)])
    with serve_in_thread(app) as indexer:
        code, out, err = cli("search", "--indexer", indexer, "--skill", c["skill"],
                             "--max-price", "0.01", "--network", dev_stack.network,
                             "--active", "--min-rating", "10", "--json")
    assert code == 0, err
    assert asked == [{"skill": c["skill"], "max_price": "10000", "network": dev_stack.network,
                      "active": "true", "min_reputation": "10", "limit": "100"}]
    assert [hit["agent"] for hit in out] == [c["cheap"], c["free"]]  # the indexer's order
    assert out[0]["foundIn"] == "indexer#0" and out[1]["foundIn"] == "indexer#4"
    assert f"dropped indexer hit {stranger}: not an agent of this factory" in err
    assert f"dropped indexer hit {c['dear']}: on-chain card: price 50000 above 10000" in err

    code, _, err = cli("search", "--indexer", "http://127.0.0.1:9", "--skill", c["skill"])
    assert code == 1 and "cannot reach the indexer" in err


def test_search_through_the_a402_indexer_configured_from_the_same_manifest(
    cli: Callable[..., Any], catalogue: dict[str, str], manifest_path: Path, tmp_path: Path,
    anvil_chain: Chain,
) -> None:
    """The real indexer, following the contracts named by the manifest that ``agents
    deploy`` wrote (its ``--suite`` reads the ``agents`` entry), answers the CLI's query."""
    import argparse

    from a402.agents.indexer import Indexer, IndexStore, Search
    from a402.agents.indexer.app import create_app
    from a402.agents.indexer.command import add_indexer_arguments, contracts_from_args

    parser = argparse.ArgumentParser()
    add_indexer_arguments(parser)
    args = parser.parse_args(["--rpc", anvil_chain.rpc_url or "", "--suite", str(manifest_path)])
    store = IndexStore(f"sqlite:///{tmp_path / 'index.db'}")
    Indexer(store, anvil_chain.rpc_url or "", contracts_from_args(args)).sync()

    c = catalogue
    with serve_in_thread(create_app(Search(store))) as indexer:
        code, out, err = cli("search", "--indexer", indexer, "--skill", c["skill"],
                             "--max-price", "0.01", "--active", "--json")
        assert code == 0, err
        assert {hit["agent"] for hit in out} == {c["cheap"], c["free"], c["elsewhere"]}
        assert err == ""  # nothing the indexer said was contradicted by the chain

        code, out, err = cli("search", "--indexer", indexer, "--skill", c["skill"],
                             "--source", "registry", "--json")
        assert code == 0, err
        assert {hit["agent"] for hit in out} == {c["cheap"], c["dear"]}


# -------------------------------------------------------------------------------- rate


def test_an_agent_rating_itself_is_refused_with_the_reason_decoded_and_nothing_sent(
    cli: Callable[..., Any], suite: AgentSuite, anvil_chain: Chain,
    key_file: Callable[[LocalAccount], str],
) -> None:
    owner = fresh_account(anvil_chain)
    agent = register(cli, key_file(owner), name="Narcissus")["agent"]
    nonce = anvil_chain.w3.eth.get_transaction_count(owner.address)
    code, _, err = cli("rate", agent, "100", "--rater", agent, "--key-file", key_file(owner))
    assert code == 1
    assert err.startswith("a402 agents: nothing was sent, nothing was paid: the chain refused "
                          "it (the call was simulated first): SelfDealing(): an agent cannot "
                          "pay or rate itself"), err
    assert "(revert data 0x74ca9bd8)" in err and "Traceback" not in err
    assert anvil_chain.w3.eth.get_transaction_count(owner.address) == nonce  # nothing sent
    assert suite.agent(agent).rating_summary() == (0, 0)


def test_only_an_agent_that_paid_may_rate_and_the_rating_feeds_show_and_search(
    cli: Callable[..., Any], suite: AgentSuite, anvil_chain: Chain,
    key_file: Callable[[LocalAccount], str],
) -> None:
    skill = "rated-" + uuid.uuid4().hex[:8]
    payee_owner, rater_owner = fresh_account(anvil_chain), fresh_account(anvil_chain)
    payee = register(cli, key_file(payee_owner), "--price", "0.01",
                     skill=f"{skill}:Rated:Gets rated.:{skill}")["agent"]
    rater = register(cli, key_file(rater_owner), name="Rater")["agent"]
    rate = ("rate", payee, "80", "--rater", rater, "--key-file", key_file(rater_owner),
            "--comment", "quick and right")

    code, _, err = cli(*rate)
    assert code == 1 and "NotAPayer" in err and "only an agent that has paid" in err
    assert suite.agent(payee).rating_summary() == (0, 0)

    suite.agent(payee).pay(rater_owner, 10**12, payer_agent=rater)  # through the till
    code, out, err = cli(*rate)
    assert code == 0, err
    assert out["contract"] == {"rater": rater, "score": 80,
                               "ratings": {"count": 1, "average": 80.0}}
    rating = suite.agent(payee).rating_of(rater)
    assert rating is not None and rating.score == 80

    _, shown, _ = cli("show", payee)
    assert shown["ratings"] == {"count": 1, "average": 80.0}
    assert _found(cli, "--skill", skill, "--min-rating", "70") == {payee}
    assert _found(cli, "--skill", skill, "--min-rating", "90") == set()

    code, _, err = cli("rate", payee, "101", "--rater", rater, "--key-file",
                       key_file(rater_owner))
    assert code == 2 and "0..100" in err
    code, _, err = cli("rate", payee, "50", "--key-file", key_file(rater_owner))
    assert code == 2 and "--rater AGENT" in err


def test_erc8004_feedback_carries_a_payment_proof_checked_on_chain(
    cli: Callable[..., Any], suite: AgentSuite, anvil_chain: Chain, dev_stack: Manifest,
    key_file: Callable[[LocalAccount], str],
) -> None:
    owner, client = fresh_account(anvil_chain), fresh_account(anvil_chain)
    payee = Account.create().address
    agent = register(cli, key_file(owner), "--price", "0.01", "--pay-to", payee,
                     "--erc8004")["agent"]
    agent_id = _identity_id(suite, agent)
    usdc = contract_at(anvil_chain, "TestUSDC", dev_stack.token.address)
    transact(anvil_chain, anvil_chain.accounts[0], usdc.functions.mint(client.address, 10**6))
    paid = transact(anvil_chain, client, usdc.functions.transfer(payee, 10_000))
    elsewhere = transact(anvil_chain, client, usdc.functions.transfer(owner.address, 10_000))
    tx, other_tx = ("0x" + bytes(r["transactionHash"]).hex() for r in (paid, elsewhere))

    code, _, err = cli("rate", agent, "90", "--erc8004", "--payment-tx", other_tx,
                       "--key-file", key_file(client))
    assert code == 2 and f"moved no {dev_stack.token.address}" in err
    assert suite.reputation.clients(agent_id) == []

    code, out, err = cli("rate", agent, "90", "--erc8004", "--payment-tx", tx, "--skill",
                         "translate", "--comment", "good", "--key-file", key_file(client))
    assert code == 0, err
    given = out["erc8004"]
    stored = suite.reputation.read_feedback(agent_id, client.address, given["feedbackIndex"])
    assert (stored.value, stored.value_decimals, stored.tag1, stored.tag2) == (
        90, 0, RATING_TAG, "translate")
    document = read_data_uri(given["feedbackURI"])
    assert document is not None
    assert given["feedbackHash"] == "0x" + keccak(
        json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hex()
    assert document["proofOfPayment"] == {"fromAddress": client.address, "toAddress": payee,
                                          "chainId": str(anvil_chain.chain_id), "txHash": tx}
    assert document["agentId"] == agent_id and document["value"] == 90
    assert document["clientAddress"] == f"{anvil_chain.network}:{client.address}"
    assert out["erc8004"]["yourSummary"] == {"count": 1, "average": "90"}

    _, shown, _ = cli("show", agent)
    assert shown["erc8004"]["feedback"] == {"clients": [client.address], "count": 1,
                                            "average": "90"}

    # ERC-8004 forbids rating one's own agent; the registry refuses, nothing is stored.
    code, _, err = cli("rate", agent, "100", "--erc8004", "--key-file", key_file(owner))
    assert code == 1 and "the chain refused it" in err
    assert suite.reputation.clients(agent_id) == [client.address]


# ----------------------------------------------------------------------------- helpers


async def _noop(text: str) -> str:
    return text


def _identity_id(suite: AgentSuite, agent: str) -> int:
    from a402.agents.directory import find_identity

    found = find_identity(suite, suite.agent(agent))
    assert found is not None
    return found.agent_id


@pytest.fixture
def reserved() -> Iterator[int]:
    """A port named in a card before its server starts: nothing else may take it meanwhile."""
    with reserved_port() as port:
        yield port


@pytest.mark.parametrize("price", ["0.0000001", "0.0010001"])
def test_search_refuses_a_max_price_finer_than_the_token_instead_of_reading_zero(
    cli: Callable[..., Any], price: str,
) -> None:
    code, out, err = cli("search", "--json", "--max-price", price)
    assert code == 2 and out == ""
    assert err.startswith("a402 agents: --max-price: ") and "more than 6 decimals" in err
