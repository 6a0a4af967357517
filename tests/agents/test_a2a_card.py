"""Card comparison and the x402 extension data, without a chain or a server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from eth_utils import keccak

from a402.agents import a2a_x402
from a402.agents.a2a_card import (
    CardError,
    InMemoryCardSource,
    JsonCardSource,
    UnknownAgent,
    canonical_card,
    canonical_json,
    card_differences,
    cards_match,
    payment_terms,
)
from a402.agents.a2a_provider import PaidAgent
from a402.agents.card import canonical_card_json
from a402.chain.deploy import TokenInfo
from a402.evm.address import to_checksum
from a402.wire.x402 import PaymentRequirements

TOKEN = TokenInfo(address=to_checksum("0x" + "ab" * 20), name="USD Coin", symbol="USDC",
                  version="2", decimals=6)
PAY_TO = to_checksum("0x" + "cd" * 20)


async def _echo(text: str) -> str:
    return text


def _agent(**changes: Any) -> PaidAgent:
    options: dict[str, Any] = {
        "name": "Echo", "description": "Says it back.", "url": "https://echo.example/a2a",
        "price": "0.25", "pay_to": PAY_TO, "token": TOKEN, "network": "eip155:8453",
        "facilitator": "https://facilitator.example",
    }
    options.update(changes)
    return PaidAgent(_echo, **options)


def _served(agent: PaidAgent) -> dict[str, Any]:
    """Exactly what a2a-sdk puts on the wire at /.well-known/agent-card.json."""
    return agent_card_to_dict(agent.card)


# ------------------------------------------------------------------ what matches


def test_the_served_card_matches_the_card_the_agent_puts_on_chain() -> None:
    agent = _agent()
    served = _served(agent)
    assert "url" in served and "supportedInterfaces" in served  # 1.0 and 0.3 fields together
    assert card_differences(served, agent.onchain_card()) == []
    assert cards_match(served, agent.onchain_card())


def test_price_is_converted_exactly_and_stated_as_a_string() -> None:
    params = _agent(price="0.25").onchain_card()["capabilities"]["extensions"][0]["params"]
    assert params == {"scheme": "exact", "network": "eip155:8453", "asset": TOKEN.address,
                      "amount": "250000", "payTo": PAY_TO}
    with pytest.raises(ValueError, match="precision"):
        _agent(price="0.0000001")


V03_CARD: dict[str, Any] = {
    "name": "Echo", "description": "Says it back.", "version": "1.0.0",
    "url": "https://echo.example/a2a", "protocolVersion": "0.3.0",
    "capabilities": {}, "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
    "skills": [{"id": "s", "name": "S", "description": "d", "tags": ["t"]}],
}
V10_CARD: dict[str, Any] = {
    "name": "Echo", "description": "Says it back.", "version": "1.0.0",
    "supportedInterfaces": [{"url": "https://echo.example/a2a", "protocolBinding": "JSONRPC",
                             "protocolVersion": "0.3.0"}],
    "capabilities": {"streaming": False, "pushNotifications": False},
    "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
    "skills": [{"id": "s", "name": "S", "description": "d", "tags": ["t"], "examples": []}],
    "signatures": [{"protected": "e30", "signature": "c2ln"}],
}
PROVIDER = {"organization": "Echo Inc.", "url": "https://echo.example"}


def test_a_v03_card_equals_its_10_form() -> None:
    assert card_differences(V10_CARD, V03_CARD) == []
    assert card_differences(V03_CARD, V10_CARD) == []


def test_spelling_and_unknown_members_count_only_against_the_chains_form() -> None:
    """A card the Agent contract can hold is compared byte for byte as well; a card pinned
    elsewhere (here: it has a ``provider``, which the contract cannot hold) by its fields."""
    spelled = copy.deepcopy(V10_CARD)
    spelled["supportedInterfaces"][0]["protocolVersion"] = "0.3"
    extended = {**copy.deepcopy(V10_CARD), "somethingNew": {"x": 1}}
    for served in (spelled, extended):
        assert len(card_differences(served, V03_CARD)) == 1
        pinned = {**V03_CARD, "provider": PROVIDER}
        assert card_differences({**served, "provider": PROVIDER}, pinned) == []


def test_keyed_collections_compare_as_sets_only_off_chain_and_never_with_duplicates() -> None:
    agent = _agent(skill=None)
    onchain = agent.onchain_card()
    served = _served(agent)
    served["supportedInterfaces"].reverse()
    assert card_differences(served, onchain) == [
        "canonical JSON: the served card renders differently from the chain's "
        "(entry order or spelling)"]
    pinned = {**onchain, "provider": PROVIDER}
    assert card_differences({**served, "provider": PROVIDER}, pinned) == []
    served["skills"].append(copy.deepcopy(served["skills"][0]))
    assert card_differences(served, onchain) == ["skills: the served card lists an entry twice"]


# ------------------------------------------------------------- what does not match


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.update(description="Something else."), "description: served"),
        (lambda c: c.update(version="2.0.0"), "version: served"),
        (lambda c: c["capabilities"].update(streaming=True), "capabilities.streaming: not on"),
        (lambda c: c["capabilities"]["extensions"][0]["params"].update(amount="0250000"),
         f"capabilities.extensions[{a2a_x402.X402_EXTENSION_URI}].params.amount"),
        (lambda c: c["capabilities"]["extensions"][0]["params"].update(network="eip155:1"),
         f"capabilities.extensions[{a2a_x402.X402_EXTENSION_URI}].params.network"),
        (lambda c: c["capabilities"]["extensions"][0].update(required=False),
         f"capabilities.extensions[{a2a_x402.X402_EXTENSION_URI}].required: missing"),
        (lambda c: c["skills"][0].update(tags=["x402", "more"]), "skills[task].tags"),
        (lambda c: c.update(provider={"organization": "X", "url": "https://x.example"}),
         "provider: not on chain"),
        (lambda c: c.update(url="https://elsewhere.example/"), "url: 'https://elsewhere"),
        (lambda c: c.update(additionalInterfaces=[
            {"url": "https://elsewhere.example/", "transport": "JSONRPC"}]),
         "additionalInterfaces[0] is not in supportedInterfaces"),
    ],
)
def test_any_other_difference_is_named(edit: Any, expected: str) -> None:
    agent = _agent()
    served = _served(agent)
    edit(served)
    differences = card_differences(served, agent.onchain_card())
    assert len(differences) == 1 and differences[0].startswith(expected), differences
    assert not cards_match(served, agent.onchain_card())


def test_a_card_that_is_not_a_card_never_matches() -> None:
    agent = _agent()
    assert not cards_match({"skills": "not a list"}, agent.onchain_card())
    with pytest.raises(CardError):
        canonical_card([])  # type: ignore[arg-type]


def test_canonical_json_is_stable_across_spellings() -> None:
    agent = _agent()
    assert canonical_json(_served(agent)) == canonical_json(agent.onchain_card())
    assert canonical_json(agent.card) == canonical_json(agent.onchain_card())


# ------------------------------------------------------------------------ sources


def test_the_in_memory_source_hands_out_copies_and_knows_its_agents() -> None:
    card = _agent().onchain_card()
    source = InMemoryCardSource({"0xAbC": card})
    got = source.onchain_card("0xabc")
    got["name"] = "changed"
    assert source.onchain_card("0xABC")["name"] == "Echo"
    with pytest.raises(UnknownAgent):
        source.onchain_card("0xdef")


# ----------------------------------------------------------------- x402 data


def test_payment_terms_come_from_either_extension_uri() -> None:
    card = _agent().onchain_card()
    uri, terms = payment_terms(card) or ("", None)
    assert uri == a2a_x402.X402_EXTENSION_URI
    assert terms == a2a_x402.PaymentTerms("eip155:8453", TOKEN.address, 250_000, PAY_TO)
    card["capabilities"]["extensions"][0]["uri"] = a2a_x402.X402_EXTENSION_URI_V02
    assert payment_terms(card) == (a2a_x402.X402_EXTENSION_URI_V02, terms)
    del card["capabilities"]["extensions"][0]["params"]["payTo"]
    with pytest.raises(CardError, match="payTo"):
        payment_terms(card)
    card["capabilities"]["extensions"] = []
    assert payment_terms(card) is None


def test_terms_admit_only_exactly_their_requirement() -> None:
    terms = a2a_x402.PaymentTerms("eip155:8453", TOKEN.address, 250_000, PAY_TO)
    req = PaymentRequirements(scheme="exact", network="eip155:8453", amount="250000",
                              asset=TOKEN.address.lower(), pay_to=PAY_TO.lower(),
                              max_timeout_seconds=60)
    assert terms.admits(req)
    for change in ({"amount": "250001"}, {"amount": "249999"}, {"pay_to": "0x" + "ce" * 20},
                   {"network": "eip155:1"}, {"scheme": "upto"}, {"asset": "0x" + "aa" * 20}):
        assert not terms.admits(req.model_copy(update=change)), change


def test_struct_numbers_are_ints_again() -> None:
    assert a2a_x402.from_struct({"x402Version": 2.0, "n": [60.0, 0.5], "s": "7"}) == {
        "x402Version": 2, "n": [60, 0.5], "s": "7"}
    assert isinstance(a2a_x402.from_struct(2.0**53), int)
    assert isinstance(a2a_x402.from_struct(2.0**54), float)  # beyond 2**53 a double is not exact


def test_error_codes_follow_the_spec_where_it_has_one() -> None:
    assert (a2a_x402.error_code("invalid_exact_evm_insufficient_balance")
            == a2a_x402.INSUFFICIENT_FUNDS)
    assert a2a_x402.error_code("invalid_exact_evm_nonce_already_used") == a2a_x402.DUPLICATE_NONCE
    assert a2a_x402.error_code(a2a_x402.PAYMENT_ALREADY_USED) == a2a_x402.DUPLICATE_NONCE
    assert a2a_x402.error_code("something_new") == "something_new"


def test_a_card_in_the_agent_contracts_json_form_matches_the_served_card() -> None:
    """``Agent.cardJSON()`` (contracts/AgentCard.sol) renders sorted keys, explicit ``false``
    flags and ``"tags": []``; that form must compare equal to what a2a-sdk serves."""
    agent = _agent()
    rendered = (
        '{"capabilities":{"extendedAgentCard":false,"extensions":[{"description":'
        '"Payment per task with x402 (exact, EIP-3009) in task metadata.","params":{"amount":'
        f'"250000","asset":"{TOKEN.address}","network":"eip155:8453","payTo":"{PAY_TO}",'
        f'"scheme":"exact"}},"required":true,"uri":"{a2a_x402.X402_EXTENSION_URI}"}}],'
        '"pushNotifications":false,"streaming":false},"defaultInputModes":["text/plain"],'
        '"defaultOutputModes":["text/plain"],"description":"Says it back.","name":"Echo",'
        '"skills":[{"description":"Says it back.","id":"task","name":"Echo","tags":["x402"]}],'
        '"supportedInterfaces":[{"protocolBinding":"JSONRPC","protocolVersion":"1.0",'
        '"url":"https://echo.example/a2a"},{"protocolBinding":"JSONRPC","protocolVersion":"0.3",'
        '"url":"https://echo.example/a2a"}],"version":"1.0.0"}'
    )
    assert canonical_card_json(agent.onchain_card()) == rendered.encode()
    assert agent.onchain_model().card_hash() == keccak(rendered.encode())
    source = JsonCardSource(lambda _agent: rendered)
    assert card_differences(_served(agent), source.onchain_card("0xAgent")) == []
    with pytest.raises(CardError):
        JsonCardSource(lambda _agent: "[1]").onchain_card("0xAgent")
