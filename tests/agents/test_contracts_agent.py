"""Agent.sol: owner-only updates, the till, liveness, and ratings by agents that paid.

Each test makes its own agents with fresh owner keys, so balance checks are
exact deltas and no test depends on another's state. The module runs on its
own anvil: the liveness tests move the chain's clock, which on the shared node
would expire other tests' wall-clock signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.agents.card import Capabilities, Payment
from a402.agents.onchain import Agent, AgentSuite
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import TransactionFailed, contract_at, deploy_contract, transact
from a402.exact.eip3009 import sign_authorization
from a402.wire.x402 import PaymentRequirements

from .onchain_helpers import (
    ETH,
    eth_balance,
    events,
    fresh_account,
    increase_time,
    reverts_with,
    sample_card,
)

pytestmark = pytest.mark.anvil

WINDOW = 3_600


@pytest.fixture(scope="module")
def anvil_chain() -> Iterator[Chain]:
    """This module's own node (it shadows the shared session fixture of the same name)."""
    with start_anvil(accounts=2) as chain:
        yield chain


@pytest.fixture(scope="module")
def suite(anvil_chain: Chain) -> AgentSuite:
    return AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])


@pytest.fixture(scope="module")
def token_info(anvil_chain: Chain) -> TokenInfo:
    deployer = anvil_chain.accounts[0]
    token = deploy_contract(anvil_chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                            deployer.address)
    return TokenInfo(token.address, "USD Coin", "USDC", "2", 6)


@pytest.fixture
def token(anvil_chain: Chain, token_info: TokenInfo) -> Any:
    return contract_at(anvil_chain, "TestUSDC", token_info.address)


@dataclass
class Party:
    """An agent and the key that owns it."""

    owner: LocalAccount
    agent: Agent


@pytest.fixture
def make_agent(anvil_chain: Chain, suite: AgentSuite, token_info: TokenInfo
               ) -> Callable[..., Party]:
    def make(*, owner: LocalAccount | None = None, priced: bool = True) -> Party:
        owner = owner or fresh_account(anvil_chain)
        card = sample_card(pay_to=owner.address, asset=token_info.address) if priced \
            else sample_card()
        agent = suite.factory.create(owner, card, activity_window=WINDOW)
        return Party(owner, agent)

    return make


def mint(chain: Chain, token: Any, to: str, amount: int) -> None:
    transact(chain, chain.accounts[0], token.functions.mint(to, amount))


def token_balance(token: Any, who: str) -> int:
    return int(token.functions.balanceOf(who).call())


# ------------------------------------------------------------------ owner-only updates


OWNER_ONLY: list[tuple[str, Callable[[Agent, LocalAccount], Any]]] = [
    ("updateCard", lambda a, s: a.update_card(s, replace(sample_card(), version="9"))),
    ("setProfile", lambda a, s: a.set_profile(s, replace(sample_card(), name="Evil"))),
    ("setVersion", lambda a, s: a.set_version(s, "6.6.6")),
    ("setCapabilities", lambda a, s: a.set_capabilities(s, Capabilities(streaming=True))),
    ("setPaymentTerms", lambda a, s: a.set_payment(s, Payment(
        network="eip155:1", asset=s.address, amount=1, pay_to=s.address))),
    ("heartbeat", lambda a, s: a.heartbeat(s)),
    ("setActivityWindow", lambda a, s: a.set_activity_window(s, 1)),
    ("setEnabled", lambda a, s: a.set_enabled(s, False)),
    ("setTokenAccepted", lambda a, s: a.set_token_accepted(s, s.address, True)),
    ("withdraw", lambda a, s: a.withdraw(s, s.address, 0)),
    ("withdrawToken", lambda a, s: a.withdraw_token(s, s.address, s.address, 0)),
    ("payAgent", lambda a, s: a.pay_agent(s, a.address, 0)),
    ("transferOwnership", lambda a, s: a.transfer_ownership(s, s.address)),
]


@pytest.mark.parametrize("name, call", OWNER_ONLY, ids=[n for n, _ in OWNER_ONLY])
def test_an_update_by_a_non_owner_reverts(
    anvil_chain: Chain, make_agent: Callable[..., Party], name: str,
    call: Callable[[Agent, LocalAccount], Any],
) -> None:
    party = make_agent()
    before = (party.agent.card_json(), party.agent.revision(), party.agent.last_seen())
    stranger = fresh_account(anvil_chain)
    with reverts_with("OwnableUnauthorizedAccount(address)") as raised:
        call(party.agent, stranger)
    assert stranger.address in str(raised.value)  # the decoded error names the sender
    assert (party.agent.card_json(), party.agent.revision(), party.agent.last_seen()) == before


def test_creation_events_describe_the_whole_initial_state(
    anvil_chain: Chain, suite: AgentSuite, token_info: TokenInfo
) -> None:
    owner = fresh_account(anvil_chain)
    card = sample_card(pay_to=owner.address, asset=token_info.address)
    receipt = transact(anvil_chain, owner, suite.factory.contract.functions.createAgent(
        owner.address, card.to_abi(), 600))
    (created,) = events(suite.factory.contract, "AgentCreated", receipt)
    agent = Agent(anvil_chain, created["agent"])
    c = agent.contract
    assert events(c, "OwnershipTransferred", receipt) == [
        {"previousOwner": "0x" + "00" * 20, "newOwner": owner.address}]
    assert events(c, "ActivityWindowSet", receipt) == [{"window": 600}]
    assert events(c, "ProfileUpdated", receipt) == [{"revision": 1, "data": agent.profile_data()}]
    assert events(c, "VersionUpdated", receipt) == [{"revision": 1, "version": card.version}]
    assert events(c, "CapabilitiesUpdated", receipt) == [{
        "revision": 1, "streaming": False, "pushNotifications": False,
        "extendedAgentCard": False}]
    assert events(c, "PaymentTermsUpdated", receipt) == [{
        "revision": 1, "asset": token_info.address, "scheme": "exact",
        "network": card.payment.network, "amount": card.payment.amount, "payTo": owner.address}]
    block = anvil_chain.w3.eth.get_block(receipt["blockNumber"])
    assert (agent.last_seen(), agent.enabled(), agent.is_active()) == (
        block["timestamp"], True, True)


def test_owner_updates_change_one_section_each_with_its_event(
    make_agent: Callable[..., Party]
) -> None:
    party = make_agent()
    agent, owner = party.agent, party.owner
    original = agent.card()
    assert agent.revision() == 1

    receipt = agent.set_version(owner, "2.0.0")
    assert events(agent.contract, "VersionUpdated", receipt) == [
        {"revision": 2, "version": "2.0.0"}]
    receipt = agent.set_capabilities(owner, Capabilities(streaming=True, extended_agent_card=True))
    assert events(agent.contract, "CapabilitiesUpdated", receipt) == [
        {"revision": 3, "streaming": True, "pushNotifications": False, "extendedAgentCard": True}]
    cheaper = replace(original.payment, amount=5_000)
    receipt = agent.set_payment(owner, cheaper)
    assert events(agent.contract, "PaymentTermsUpdated", receipt) == [{
        "revision": 4, "asset": cheaper.asset, "scheme": "exact", "network": cheaper.network,
        "amount": 5_000, "payTo": cheaper.pay_to}]
    renamed = replace(original, name="Traductor", description="Traduce textos.")
    receipt = agent.set_profile(owner, renamed)
    (profile_event,) = events(agent.contract, "ProfileUpdated", receipt)
    assert profile_event == {"revision": 5, "data": agent.profile_data()}

    expected = replace(renamed, version="2.0.0", payment=cheaper,
                       capabilities=Capabilities(streaming=True, extended_agent_card=True))
    assert agent.card() == expected
    assert agent.card_json() == expected.canonical_json()
    info = agent.info()
    assert (info.card, info.card_hash, info.revision, info.owner, info.active) == (
        expected, expected.card_hash(), 5, owner.address, True)
    assert (info.ratings, info.average_rating) == (0, None)


def test_update_card_is_one_revision_with_all_four_section_events(
    make_agent: Callable[..., Party]
) -> None:
    party = make_agent()
    new = replace(sample_card(name="Renamed", version="3.1"), capabilities=Capabilities(True))
    receipt = party.agent.update_card(party.owner, new)
    c = party.agent.contract
    assert [e["revision"] for name in ("ProfileUpdated", "VersionUpdated", "CapabilitiesUpdated",
                                       "PaymentTermsUpdated")
            for e in events(c, name, receipt)] == [2, 2, 2, 2]
    assert events(c, "PaymentTermsUpdated", receipt) == [{
        "revision": 2, "asset": "0x" + "00" * 20, "scheme": "", "network": "", "amount": 0,
        "payTo": "0x" + "00" * 20}]
    assert party.agent.card() == new
    assert party.agent.payment() is None
    assert "extensions" not in party.agent.card_json().decode()


def test_ownership_moves_in_two_steps_and_cannot_be_renounced(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    party = make_agent()
    heir = fresh_account(anvil_chain)
    party.agent.transfer_ownership(party.owner, heir.address)
    assert party.agent.owner() == party.owner.address  # not until accepted
    with reverts_with("OwnableUnauthorizedAccount(address)"):
        party.agent.set_version(heir, "x")
    party.agent.accept_ownership(heir)
    assert party.agent.owner() == heir.address
    party.agent.set_version(heir, "heir")
    with reverts_with("RenounceDisabled()"):
        transact(anvil_chain, heir, party.agent.contract.functions.renounceOwnership())


def test_neither_the_implementation_nor_a_clone_can_be_initialized_again(
    anvil_chain: Chain, suite: AgentSuite, make_agent: Callable[..., Party]
) -> None:
    attacker = fresh_account(anvil_chain)
    card = sample_card().to_abi()
    for address in (suite.factory.implementation, make_agent().agent.address):
        agent = contract_at(anvil_chain, "Agent", address)
        with reverts_with("InvalidInitialization()"):
            transact(anvil_chain, attacker, agent.functions.initialize(attacker.address, card, 1))


# --------------------------------------------------------------------------- liveness


def test_the_active_flag_follows_heartbeats_activity_and_the_switch(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    party = make_agent()
    agent, owner = party.agent, party.owner
    assert agent.is_active() and agent.enabled() and agent.activity_window() == WINDOW

    increase_time(anvil_chain, WINDOW + 1)
    assert not agent.is_active()
    receipt = agent.heartbeat(owner)
    (beat,) = events(agent.contract, "Heartbeat", receipt)
    assert beat["timestamp"] == agent.last_seen()
    assert agent.is_active()

    increase_time(anvil_chain, WINDOW + 1)
    assert not agent.is_active()
    agent.set_version(owner, "1.0.2")  # any owner action is activity
    assert agent.is_active()

    receipt = agent.set_enabled(owner, False)
    assert events(agent.contract, "EnabledSet", receipt) == [{"enabled": False}]
    assert not agent.is_active()
    agent.set_enabled(owner, True)
    receipt = agent.set_activity_window(owner, 10)
    assert events(agent.contract, "ActivityWindowSet", receipt) == [{"window": 10}]
    increase_time(anvil_chain, 11)
    assert not agent.is_active()
    with reverts_with("InvalidActivityWindow()"):
        agent.set_activity_window(owner, 0)


def test_payments_alone_do_not_keep_an_agent_alive(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    party = make_agent()
    increase_time(anvil_chain, WINDOW + 1)
    party.agent.pay(fresh_account(anvil_chain), 1)
    assert not party.agent.is_active()


# ------------------------------------------------------------------------------ till


def test_native_payments_are_attributed_to_the_paying_agent(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    payee, payer = make_agent(), make_agent()
    receipt = payee.agent.pay(payer.owner, 12_345, payer_agent=payer.agent.address)
    assert events(payee.agent.contract, "Paid", receipt) == [{
        "payerAgent": payer.agent.address, "from": payer.owner.address,
        "asset": "0x" + "00" * 20, "amount": 12_345}]
    assert payee.agent.payments_from(payer.agent.address) == 1
    assert payee.agent.paid_by(payer.agent.address) == 12_345
    assert eth_balance(anvil_chain, payee.agent.address) == 12_345

    anonymous = fresh_account(anvil_chain)
    receipt = payee.agent.pay(anonymous, 5)
    assert events(payee.agent.contract, "Paid", receipt)[0]["payerAgent"] == "0x" + "00" * 20
    receipt = transact(anvil_chain, anonymous, {"to": payee.agent.address}, value=7)  # receive()
    assert events(payee.agent.contract, "Paid", receipt) == [{
        "payerAgent": "0x" + "00" * 20, "from": anonymous.address, "asset": "0x" + "00" * 20,
        "amount": 7}]
    assert eth_balance(anvil_chain, payee.agent.address) == 12_345 + 5 + 7
    assert payee.agent.payments_from(payer.agent.address) == 1


def test_only_an_agent_or_its_owner_can_pay_in_its_name(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    payee, payer = make_agent(), make_agent()
    stranger = fresh_account(anvil_chain)
    with reverts_with("NotActingFor(address,address)"):
        payee.agent.pay(stranger, 1, payer_agent=payer.agent.address)
    with reverts_with("NotAnAgent(address)"):
        payee.agent.pay(stranger, 1, payer_agent=stranger.address)
    with reverts_with("SelfDealing()"):
        payee.agent.pay(payee.owner, 1, payer_agent=payee.agent.address)
    with reverts_with("ZeroAmount()"):
        payee.agent.pay(payer.owner, 0, payer_agent=payer.agent.address)
    assert payee.agent.payments_from(payer.agent.address) == 0


def test_token_payments_take_accepted_tokens_only(
    anvil_chain: Chain, make_agent: Callable[..., Party], token: Any
) -> None:
    payee, payer = make_agent(), make_agent()
    mint(anvil_chain, token, payer.owner.address, 50_000)
    assert payee.agent.accepts_token(token.address)  # the card's payment asset
    receipt = payee.agent.pay_token(payer.owner, token.address, 30_000,
                                    payer_agent=payer.agent.address)
    assert events(payee.agent.contract, "Paid", receipt) == [{
        "payerAgent": payer.agent.address, "from": payer.owner.address, "asset": token.address,
        "amount": 30_000}]
    assert token_balance(token, payee.agent.address) == 30_000
    assert token_balance(token, payer.owner.address) == 20_000
    assert payee.agent.paid_by(payer.agent.address, token.address) == 30_000

    other = deploy_contract(anvil_chain, anvil_chain.accounts[0], "TestUSDC", "Other", "OTH", "1",
                            anvil_chain.accounts[0].address)
    mint(anvil_chain, other, payer.owner.address, 10)
    with reverts_with("TokenNotAccepted(address)"):
        payee.agent.pay_token(payer.owner, other.address, 10)
    receipt = payee.agent.set_token_accepted(payee.owner, other.address, True)
    assert events(payee.agent.contract, "TokenAcceptanceSet", receipt) == [
        {"token": other.address, "accepted": True}]
    payee.agent.pay_token(payer.owner, other.address, 10)
    assert token_balance(other, payee.agent.address) == 10


def test_an_x402_exact_payment_to_the_agent_settles_and_is_attributed(
    anvil_chain: Chain, make_agent: Callable[..., Party], token: Any, token_info: TokenInfo
) -> None:
    payee, payer = make_agent(), make_agent()
    mint(anvil_chain, token, payer.owner.address, 10_000)
    info = token_info
    requirements = PaymentRequirements.model_validate({
        "scheme": "exact", "network": anvil_chain.network, "amount": "10000",
        "asset": info.address, "payTo": payee.agent.address, "maxTimeoutSeconds": 600,
        "extra": info.eip712_extra(),
    })
    now = int(anvil_chain.w3.eth.get_block("latest")["timestamp"])
    payload = sign_authorization(payer.owner, requirements, now=now)
    facilitator = fresh_account(anvil_chain)  # anyone may submit it
    receipt = payee.agent.pay_with_authorization(facilitator, info.address, payload,
                                                 payer_agent=payer.agent.address)
    assert events(payee.agent.contract, "Paid", receipt) == [{
        "payerAgent": payer.agent.address, "from": payer.owner.address, "asset": info.address,
        "amount": 10_000}]
    assert token_balance(token, payee.agent.address) == 10_000
    assert payee.agent.payments_from(payer.agent.address) == 1
    with pytest.raises(TransactionFailed, match="authorization is used"):  # no replay
        payee.agent.pay_with_authorization(facilitator, info.address, payload,
                                           payer_agent=payer.agent.address)


def test_an_authorization_signed_by_someone_else_earns_no_credit(
    anvil_chain: Chain, make_agent: Callable[..., Party], token: Any, token_info: TokenInfo
) -> None:
    payee, payer = make_agent(), make_agent()
    stranger = fresh_account(anvil_chain, eth=0)
    mint(anvil_chain, token, stranger.address, 10_000)
    requirements = PaymentRequirements.model_validate({
        "scheme": "exact", "network": anvil_chain.network, "amount": "10000",
        "asset": token_info.address, "payTo": payee.agent.address,
        "maxTimeoutSeconds": 600, "extra": token_info.eip712_extra(),
    })
    now = int(anvil_chain.w3.eth.get_block("latest")["timestamp"])
    payload = sign_authorization(stranger, requirements, now=now)
    with reverts_with("NotActingFor(address,address)"):
        payee.agent.pay_with_authorization(payer.owner, token_info.address, payload,
                                           payer_agent=payer.agent.address)
    assert token_balance(token, stranger.address) == 10_000


def test_withdrawals_are_owner_only_and_conserve_balances(
    anvil_chain: Chain, make_agent: Callable[..., Party], token: Any
) -> None:
    party = make_agent()
    payer = fresh_account(anvil_chain)
    party.agent.pay(payer, 3 * ETH // 10)
    mint(anvil_chain, token, payer.address, 40_000)
    party.agent.pay_token(payer, token.address, 40_000)
    recipient = fresh_account(anvil_chain, eth=0)

    agent_eth, agent_tok = eth_balance(anvil_chain, party.agent.address), token_balance(
        token, party.agent.address)
    receipt = party.agent.withdraw(party.owner, recipient.address, ETH // 10)
    assert events(party.agent.contract, "Withdrawn", receipt) == [
        {"asset": "0x" + "00" * 20, "to": recipient.address, "amount": ETH // 10}]
    assert eth_balance(anvil_chain, recipient.address) == ETH // 10
    assert eth_balance(anvil_chain, party.agent.address) == agent_eth - ETH // 10

    receipt = party.agent.withdraw_token(party.owner, token.address, recipient.address, 15_000)
    assert events(party.agent.contract, "Withdrawn", receipt) == [
        {"asset": token.address, "to": recipient.address, "amount": 15_000}]
    assert token_balance(token, recipient.address) == 15_000
    assert token_balance(token, party.agent.address) == agent_tok - 15_000

    with reverts_with("OwnableUnauthorizedAccount(address)"):
        party.agent.withdraw(payer, payer.address, 1)
    with reverts_with("InsufficientBalance(uint256,uint256)"):
        party.agent.withdraw(party.owner, recipient.address, agent_eth)
    with reverts_with("ZeroAddress()"):
        party.agent.withdraw(party.owner, "0x" + "00" * 20, 1)
    assert eth_balance(anvil_chain, party.agent.address) == agent_eth - ETH // 10
    assert token_balance(token, party.agent.address) == agent_tok - 15_000


def test_an_agent_pays_another_from_its_own_balance(
    anvil_chain: Chain, make_agent: Callable[..., Party], token: Any
) -> None:
    payee, payer = make_agent(), make_agent()
    mint(anvil_chain, token, payer.agent.address, 25_000)
    payer.agent.pay(payer.owner, 1_000)
    receipt = payer.agent.pay_agent(payer.owner, payee.agent.address, 25_000, asset=token.address)
    assert events(payer.agent.contract, "PaidAgent", receipt) == [
        {"payee": payee.agent.address, "asset": token.address, "amount": 25_000}]
    assert events(payee.agent.contract, "Paid", receipt) == [{
        "payerAgent": payer.agent.address, "from": payer.agent.address, "asset": token.address,
        "amount": 25_000}]
    payer.agent.pay_agent(payer.owner, payee.agent.address, 600)
    assert token_balance(token, payee.agent.address) == 25_000
    assert token_balance(token, payer.agent.address) == 0
    assert eth_balance(anvil_chain, payee.agent.address) == 600
    assert eth_balance(anvil_chain, payer.agent.address) == 400
    assert payee.agent.payments_from(payer.agent.address) == 2
    assert int(token.functions.allowance(payer.agent.address, payee.agent.address).call()) == 0
    with reverts_with("NotAnAgent(address)"):
        payer.agent.pay_agent(payer.owner, payer.owner.address, 1)


# --------------------------------------------------------------------------- ratings


def test_a_rating_by_an_agent_that_never_paid_reverts(
    make_agent: Callable[..., Party]
) -> None:
    payee, rater = make_agent(), make_agent()
    with reverts_with("NotAPayer(address)") as raised:
        payee.agent.rate(rater.owner, rater.agent.address, 90, "never paid")
    assert rater.agent.address in str(raised.value)
    assert payee.agent.rating_of(rater.agent.address) is None
    assert payee.agent.rating_summary() == (0, 0)


def test_an_anonymous_payment_does_not_entitle_anyone_to_rate(
    make_agent: Callable[..., Party]
) -> None:
    payee, rater = make_agent(), make_agent()
    payee.agent.pay(rater.owner, 100)  # paid, but not in the agent's name
    with reverts_with("NotAPayer(address)"):
        payee.agent.rate(rater.owner, rater.agent.address, 90)


def test_a_paying_agent_keeps_one_live_rating_it_can_change_and_withdraw(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    payee, first, second = make_agent(), make_agent(), make_agent()
    for rater in (first, second):
        payee.agent.pay(rater.owner, 10, payer_agent=rater.agent.address)

    receipt = payee.agent.rate(first.owner, first.agent.address, 80, "good")
    assert events(payee.agent.contract, "Rated", receipt) == [{
        "raterAgent": first.agent.address, "sender": first.owner.address, "score": 80,
        "comment": "good"}]
    payee.agent.rate(second.owner, second.agent.address, 40)
    assert payee.agent.rating_summary() == (2, 120)

    payee.agent.rate(first.owner, first.agent.address, 100, "better")  # replaces, not adds
    assert payee.agent.rating_summary() == (2, 140)
    rating = payee.agent.rating_of(first.agent.address)
    assert rating is not None and rating.score == 100

    receipt = payee.agent.withdraw_rating(second.owner, second.agent.address)
    assert events(payee.agent.contract, "RatingWithdrawn", receipt) == [
        {"raterAgent": second.agent.address, "sender": second.owner.address}]
    assert payee.agent.rating_summary() == (1, 100)
    assert payee.agent.rating_of(second.agent.address) is None
    with reverts_with("NoRating(address)"):
        payee.agent.withdraw_rating(second.owner, second.agent.address)


def test_who_may_rate(anvil_chain: Chain, make_agent: Callable[..., Party]) -> None:
    payee, rater = make_agent(), make_agent()
    payee.agent.pay(rater.owner, 10, payer_agent=rater.agent.address)
    with reverts_with("InvalidScore(uint8)"):
        payee.agent.rate(rater.owner, rater.agent.address, 101)
    stranger = fresh_account(anvil_chain)
    with reverts_with("NotActingFor(address,address)"):
        payee.agent.rate(stranger, rater.agent.address, 1)
    with reverts_with("NotAnAgent(address)"):
        payee.agent.rate(stranger, stranger.address, 1)
    with reverts_with("SelfDealing()"):
        payee.agent.rate(payee.owner, payee.agent.address, 100)
    # A second agent of the payee's own owner paid, but may not rate its sibling.
    sibling = make_agent(owner=payee.owner)
    payee.agent.pay(payee.owner, 10, payer_agent=sibling.agent.address)
    with reverts_with("SelfDealing()"):
        payee.agent.rate(payee.owner, sibling.agent.address, 100)
    assert payee.agent.rating_summary() == (0, 0)


def test_an_agent_that_paid_from_its_own_balance_may_rate(
    anvil_chain: Chain, make_agent: Callable[..., Party]
) -> None:
    payee, payer = make_agent(), make_agent()
    payer.agent.pay(payer.owner, 50)
    payer.agent.pay_agent(payer.owner, payee.agent.address, 50)
    payee.agent.rate(payer.owner, payer.agent.address, 70)
    assert payee.agent.rating_summary() == (1, 70)
