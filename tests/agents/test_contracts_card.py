"""The on-chain AgentCard: Solidity's canonical JSON equals Python's byte for byte.

``Agent.cardJSON()`` is rendered in Solidity, ``OnchainCard.canonical_json()``
in Python; a client compares them (or their hashes) to decide whether a served
card is the one on chain, so any divergence — an escape, a key order, an
address's case — would make honest agents look forged. The renderer's pure
``renderCard`` lets hypothesis compare the two on arbitrary Unicode cheaply; the
stored path is checked on real agents.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.exceptions import ContractLogicError

from a402.agents.card import (
    MAX_PROFILE_BYTES,
    X402_EXTENSION_URI,
    Capabilities,
    Interface,
    InvalidCard,
    OnchainCard,
    Payment,
    Skill,
    canonical_card_json,
    card_hash,
    decode_profile,
    encode_profile,
    profile_from_code,
)
from a402.agents.onchain import AgentSuite
from a402.chain.node import Chain
from a402.chain.tx import contract_at

from .onchain_helpers import events, reverts_with, sample_card, selector

pytestmark = pytest.mark.anvil

PROFILE_TYPE = (
    "(string,string,(string,string,string)[],string[],string[],"
    "(string,string,string,string[],string[],string[],string[])[],string)"
)


@pytest.fixture(scope="module")
def suite(anvil_chain: Chain) -> AgentSuite:
    return AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])


@pytest.fixture(scope="module")
def renderer(suite: AgentSuite) -> Any:
    return contract_at(suite.chain, "AgentCardRenderer", suite.addresses.renderer)


# ---------------------------------------------------------------- strategies

SPECIAL = ['"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "/", "\u2028",
           "\u00e9", "\u20ac", "\U0001f600", "\U0010ffff", "<", "'"]
TEXT = st.text(alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIAL)),
               max_size=24)
WORD = TEXT.filter(bool)
LIST = st.lists(TEXT, max_size=3).map(tuple)
ADDRESS = st.binary(min_size=20, max_size=20).map(to_checksum_address)

skills = st.builds(Skill, id=WORD, name=TEXT, description=TEXT, tags=LIST, examples=LIST,
                   input_modes=LIST, output_modes=LIST)
interfaces = st.builds(Interface, url=WORD, protocol_binding=WORD, protocol_version=WORD)
payments = st.builds(
    Payment, network=WORD, asset=ADDRESS, amount=st.integers(0, 2**256 - 1),
    pay_to=ADDRESS.filter(lambda a: int(a, 16) != 0), scheme=WORD,
)
cards = st.builds(
    OnchainCard,
    name=WORD, description=TEXT, version=WORD,
    interfaces=st.lists(interfaces, min_size=1, max_size=3).map(tuple),
    default_input_modes=LIST, default_output_modes=LIST,
    skills=st.lists(skills, max_size=3).map(tuple),
    capabilities=st.builds(Capabilities, st.booleans(), st.booleans(), st.booleans()),
    payment=st.none() | payments,
    payment_description=TEXT,
)


# ------------------------------------------------------------------ parity


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=cards)
def test_solidity_renders_the_same_bytes_as_python(suite: AgentSuite, renderer: Any,
                                                   card: OnchainCard) -> None:
    rendered = suite.render(card)
    assert rendered == card.canonical_json()
    assert json.loads(rendered) == card.to_a2a()  # valid JSON, and the intended object
    blob = bytes(renderer.functions.encodeProfile(card.profile_abi()).call())
    assert blob == encode_profile(card)
    assert decode_profile(blob).with_terms(card.version, card.capabilities, card.payment) == card
    # Reading the JSON back gives the card, less a payment description with nothing to describe.
    shown = card if card.payment else OnchainCard(**{**card.__dict__, "payment_description": ""})
    assert OnchainCard.from_a2a(json.loads(rendered)) == shown


def _python_accepts(blob: bytes) -> bool:
    try:
        decode_profile(blob).with_terms("v", Capabilities(), None)
    except InvalidCard:
        return False
    return True


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=cards, data=st.data())
def test_the_contract_accepts_exactly_the_blobs_python_can_read(
    renderer: Any, card: OnchainCard, data: st.DataObject
) -> None:
    """Mutated blobs: the on-chain validator and Python's decoder agree on every one, and an
    accepted blob is canonical (re-encoding its decoding gives the same bytes)."""
    blob = bytearray(encode_profile(card))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(blob)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if edit == "flip" and at < len(blob):
            blob[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7f, 0x80, 0xbf, 0xc0, 0xc3,
                                                  0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff]))
        elif edit == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif edit == "delete":
            del blob[at:at + data.draw(st.integers(1, 3))]
        else:
            del blob[at:]
    try:
        renderer.functions.checkProfile(bytes(blob)).call()
        accepted = True
    except ContractLogicError:
        accepted = False
    assert accepted == _python_accepts(bytes(blob))
    if accepted:
        profile = decode_profile(bytes(blob))
        assert encode_profile(profile.with_terms("v", Capabilities(), None)) == bytes(blob)


def test_an_agent_refuses_a_malformed_profile_blob(suite: AgentSuite, anvil_chain: Chain) -> None:
    owner = anvil_chain.accounts[0]
    agent = suite.factory.create(owner, sample_card())
    good = encode_profile(sample_card())
    for blob, error in ((b"", "BadProfileData()"), (b"\x02" + good[1:], "BadProfileData()"),
                        (good + b"\x00", "BadProfileData()"), (good[:-1], "BadProfileData()"),
                        (encode_profile(replace(sample_card(), name="\u00e9")).replace(
                            "\u00e9".encode(), b"\xc3\x28"), "InvalidUtf8()")):
        with reverts_with(error):
            agent.set_profile_blob(owner, blob)
    nameless = bytearray(good)
    # name is the string after the payment description, two empty mode lists... find it:
    name = sample_card().name.encode()
    at = bytes(nameless).index(len(name).to_bytes(2, "big") + name)
    nameless[at:at + 2 + len(name)] = b"\x00\x00"
    with reverts_with("MissingField(string)"):
        agent.set_profile_blob(owner, bytes(nameless))
    assert agent.revision() == 1


def test_a_stored_card_reads_back_exactly(suite: AgentSuite, anvil_chain: Chain) -> None:
    owner = anvil_chain.accounts[0]
    card = sample_card(pay_to=anvil_chain.accounts[1].address,
                       asset=anvil_chain.accounts[2].address)
    agent = suite.factory.create(owner, card)
    assert agent.card() == card
    assert agent.card_json() == card.canonical_json()
    assert agent.card_hash() == keccak(card.canonical_json()) == card.card_hash()
    assert agent.name() == card.name
    assert agent.payment() == card.payment


def test_the_profile_data_contract_lets_an_indexer_rebuild_the_card(
    suite: AgentSuite, anvil_chain: Chain
) -> None:
    owner = anvil_chain.accounts[0]
    card = sample_card(name="Indexed \u00fcber \U0001f600")
    agent = suite.factory.create(owner, card)
    receipt = agent.set_version(owner, "1.0.1")
    assert events(agent.contract, "VersionUpdated", receipt) == [
        {"revision": 2, "version": "1.0.1"}]
    code = bytes(anvil_chain.w3.eth.get_code(agent.profile_data()))
    assert code[0] == 0  # STOP first: the data can never run
    rebuilt = profile_from_code(code).with_terms("1.0.1", card.capabilities, card.payment)
    assert rebuilt.canonical_json() == agent.card_json()


def test_the_card_is_an_a2a_agent_card_the_sdk_reads() -> None:
    from a2a.client.card_resolver import parse_agent_card
    from google.protobuf.json_format import MessageToDict

    card = sample_card(pay_to="0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
    proto = parse_agent_card(json.loads(card.canonical_json()))
    assert proto.name == card.name
    assert [i.protocol_version for i in proto.supported_interfaces] == ["1.0", "0.3"]
    (ext,) = proto.capabilities.extensions
    assert ext.uri == X402_EXTENSION_URI and ext.required
    # What an a2a-sdk server serves (defaults dropped, its own key order) maps back exactly.
    served = MessageToDict(proto)
    assert "streaming" not in served["capabilities"] or served["capabilities"]["streaming"] is False
    assert canonical_card_json(served) == card.canonical_json()
    assert card_hash(served) == card.card_hash()


def test_the_a2a_client_can_take_the_chain_as_its_card_authority(
    suite: AgentSuite, anvil_chain: Chain
) -> None:
    from a2a.client.card_resolver import parse_agent_card
    from google.protobuf.json_format import MessageToDict

    from a402.agents.a2a_card import UnknownAgent, card_differences
    from a402.agents.onchain import FactoryCardSource

    card = sample_card(pay_to=anvil_chain.accounts[1].address,
                       asset=anvil_chain.accounts[2].address)
    agent = suite.factory.create(anvil_chain.accounts[0], card)
    source = FactoryCardSource(anvil_chain, suite.addresses.factory)
    onchain = source.onchain_card(agent.address)
    served = MessageToDict(parse_agent_card(card.to_a2a()))  # as an a2a-sdk server serves it
    assert card_differences(served, onchain) == []
    raised = dict(served, version="6.6.6")
    assert card_differences(raised, onchain) == ["version: served \"6.6.6\", on chain \"1.0.0\""]
    with pytest.raises(UnknownAgent):
        source.onchain_card(anvil_chain.accounts[0].address)


# ------------------------------------------------------------- reading served cards


def _served_v03() -> dict[str, Any]:
    return {
        "name": "Old", "description": "d", "version": "2", "protocolVersion": "0.3.0",
        "url": "https://old.example/rpc", "preferredTransport": "JSONRPC",
        "additionalInterfaces": [{"url": "https://old.example/rest", "transport": "HTTP+JSON"}],
        "capabilities": {"streaming": True}, "supportsAuthenticatedExtendedCard": True,
        "defaultInputModes": ["text/plain"], "defaultOutputModes": ["application/json"],
        "skills": [{"id": "s", "name": "S", "description": "", "tags": []}],
    }


def test_a_v03_card_becomes_its_interfaces() -> None:
    card = OnchainCard.from_a2a(_served_v03())
    assert card.interfaces == (Interface("https://old.example/rpc", "JSONRPC", "0.3.0"),
                               Interface("https://old.example/rest", "HTTP+JSON", "0.3.0"))
    assert card.capabilities == Capabilities(streaming=True, extended_agent_card=True)
    assert card.payment is None


@pytest.mark.parametrize("change, complaint", [
    ({"provider": {"organization": "o", "url": "u"}}, "provider"),
    ({"iconUrl": "https://i"}, "iconUrl"),
    ({"capabilities": {"extensions": [{"uri": "urn:other"}]}}, "urn:other"),
    ({"skills": [{"id": "s", "name": "", "description": "", "tags": [],
                  "security": [{"x": []}]}]}, "security"),
    ({"supportedInterfaces": [{"url": "u", "protocolBinding": "JSONRPC",
                               "protocolVersion": "1.0", "tenant": "t"}]}, "tenant"),
    ({"supportedInterfaces": [{"url": "u", "protocolBinding": "JSONRPC",
                               "protocolVersion": "1.0"}]}, "not among supportedInterfaces"),
])
def test_strict_reading_refuses_what_the_chain_cannot_hold(change: dict[str, Any],
                                                           complaint: str) -> None:
    served = {**_served_v03(), **change}
    with pytest.raises(InvalidCard, match=complaint):
        OnchainCard.from_a2a(served)
    OnchainCard.from_a2a(served, strict=False)  # lenient reading drops it


def test_x402_terms_must_be_exactly_what_the_chain_renders() -> None:
    base = json.loads(sample_card(pay_to="0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
                      .canonical_json())
    ext = base["capabilities"]["extensions"][0]
    for change, complaint in (({"required": False}, "required"),
                              ({"uri": "urn:a2a-blockchain-x402:extensions:x402:v1"}, "renders"),
                              ({"params": {**ext["params"], "extra": "1"}}, "extra"),
                              ({"params": {**ext["params"], "amount": "1.5"}}, "decimal")):
        bad = json.loads(json.dumps(base))
        bad["capabilities"]["extensions"][0].update(change)
        with pytest.raises(InvalidCard, match=complaint):
            OnchainCard.from_a2a(bad)
    lower = json.loads(json.dumps(base))
    lower["capabilities"]["extensions"][0]["params"]["payTo"] = ext["params"]["payTo"].lower()
    assert canonical_card_json(lower) == canonical_card_json(base)  # addresses are checksummed


# ------------------------------------------------------------------ validation


def _encode_profile_call(renderer: Any, name: bytes) -> bytes:
    """``encodeProfile`` calldata whose name is raw bytes (web3 would refuse invalid UTF-8)."""
    sig = f"encodeProfile({PROFILE_TYPE})"
    args = abi_encode([PROFILE_TYPE.replace("(string", "(bytes", 1)],
                      [(name, "", [("u", "JSONRPC", "1.0")], [], [], [], "")])
    return keccak(text=sig)[:4] + args


def _revert_data(chain: Chain, to: str, data: bytes) -> str:
    try:
        chain.w3.eth.call({"to": to, "data": data})
    except ContractLogicError as e:
        return str(e.data or e.message)
    return ""


@pytest.mark.parametrize("raw", [
    b"\x80", b"ok\xc0\x80", b"\xc1\xbf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xe2\x82", b"\xf0\x9f\x98", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xe2\x28\xa1",
    b"A" * 40 + b"\xff", b"B" * 64 + b"\xc3",
])
def test_invalid_utf8_is_refused(anvil_chain: Chain, renderer: Any, raw: bytes) -> None:
    data = _encode_profile_call(renderer, raw)
    assert selector("InvalidUtf8()") in _revert_data(anvil_chain, renderer.address, data)


@pytest.mark.parametrize("raw", [
    b"A" * 64, "\u00fc".encode(), "\u20ac".encode(), "\U0001f600".encode(),
    "\U0010ffff".encode(), "\ud7ff".encode(), "\ue000".encode(), b"\x7f\x00",
    b"C" * 33 + b"\xc3\xa9",
])
def test_valid_utf8_is_accepted(anvil_chain: Chain, renderer: Any, raw: bytes) -> None:
    result = anvil_chain.w3.eth.call({"to": renderer.address,
                                      "data": _encode_profile_call(renderer, raw)})
    assert raw in bytes(result)


@pytest.mark.parametrize("profile, field", [
    (("", "", [("u", "JSONRPC", "1.0")], [], [], [], ""), "name"),
    (("n", "", [], [], [], [], ""), "supportedInterfaces"),
    (("n", "", [("", "JSONRPC", "1.0")], [], [], [], ""), "supportedInterfaces.url"),
    (("n", "", [("u", "", "1.0")], [], [], [], ""), "supportedInterfaces.protocolBinding"),
    (("n", "", [("u", "JSONRPC", "")], [], [], [], ""), "supportedInterfaces.protocolVersion"),
    (("n", "", [("u", "JSONRPC", "1.0")], [], [], [("", "", "", [], [], [], [])], ""),
     "skills.id"),
])
def test_required_fields_are_required(anvil_chain: Chain, renderer: Any, profile: tuple[Any, ...],
                                      field: str) -> None:
    with pytest.raises(ContractLogicError) as raised:
        renderer.functions.encodeProfile(profile).call()
    expected = selector("MissingField(string)") + abi_encode(["string"], [field]).hex()
    assert expected in str(raised.value.data)


def test_a_profile_over_the_code_size_limit_is_refused(renderer: Any) -> None:
    just_fits = MAX_PROFILE_BYTES - len(encode_profile(sample_card()))
    fits = sample_card()
    fits = OnchainCard(**{**fits.__dict__, "description": fits.description + "x" * just_fits})
    assert len(encode_profile(fits)) == MAX_PROFILE_BYTES
    stored = bytes(renderer.functions.encodeProfile(fits.profile_abi()).call())
    assert stored == encode_profile(fits)
    too_big = (*fits.profile_abi()[:1], fits.description + "x", *fits.profile_abi()[2:])
    with pytest.raises(ContractLogicError) as raised:
        renderer.functions.encodeProfile(too_big).call()
    assert selector("ProfileTooLarge()") in str(raised.value.data)
    with pytest.raises(InvalidCard, match="at most 24575"):
        OnchainCard(**{**fits.__dict__, "description": fits.description + "x"})


@pytest.mark.parametrize("terms", [
    ("", "", "0x" + "11" * 20, 0, "0x" + "00" * 20),       # an asset but nobody to pay
    ("", "", "0x" + "00" * 20, 5, "0x" + "00" * 20),       # an amount but nobody to pay
    ("exact", "", "0x" + "00" * 20, 0, "0x" + "00" * 20),  # a scheme but nobody to pay
    ("exact", "", "0x" + "11" * 20, 5, "0x" + "22" * 20),  # no network
    ("", "eip155:1", "0x" + "11" * 20, 5, "0x" + "22" * 20),  # no scheme
])
def test_payment_terms_are_all_or_nothing(suite: AgentSuite, renderer: Any,
                                          terms: tuple[Any, ...]) -> None:
    card = sample_card().card_data_abi()
    with pytest.raises(ContractLogicError) as raised:
        renderer.functions.renderCard((card[0], card[1], card[2], terms)).call()
    assert selector("InvalidPaymentTerms()") in str(raised.value.data)


def test_python_refuses_what_the_contract_would() -> None:
    good = sample_card()
    for change, complaint in (({"name": ""}, "name"), ({"version": ""}, "version"),
                              ({"interfaces": ()}, "supportedInterfaces"),
                              ({"skills": (Skill("", "n", "d"),)}, "id"),
                              ({"description": "\ud800"}, "Unicode")):
        with pytest.raises(InvalidCard, match=complaint):
            OnchainCard(**{**good.__dict__, **change})
    with pytest.raises(InvalidCard, match="zero address"):
        Payment(network="n", asset="0x" + "11" * 20, amount=1, pay_to="0x" + "00" * 20)
