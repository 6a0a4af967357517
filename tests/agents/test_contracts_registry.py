"""AgentFactory enumeration, the open AgentRegistry, and the consortium-curated registry."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractLogicError

from a402.agents.onchain import Agent, AgentSuite, CuratedAgentRegistry
from a402.chain.node import Chain
from a402.chain.tx import deploy_contract, transact

from .onchain_helpers import events, fresh_account, reverts_with, sample_card, selector

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def suite(anvil_chain: Chain) -> AgentSuite:
    return AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])


def new_agent(chain: Chain, suite: AgentSuite) -> tuple[LocalAccount, Agent]:
    owner = fresh_account(chain)
    return owner, suite.factory.create(owner, sample_card(name=f"Agent {owner.address[:8]}"))


# --------------------------------------------------------------------------- factory


def test_the_factory_lists_every_agent_it_created_in_order(
    anvil_chain: Chain, suite: AgentSuite
) -> None:
    factory = suite.factory
    start = factory.count()
    creator, owner = fresh_account(anvil_chain), fresh_account(anvil_chain)
    receipt = transact(anvil_chain, creator, factory.contract.functions.createAgent(
        owner.address, sample_card().to_abi(), 60))
    (created,) = events(factory.contract, "AgentCreated", receipt)
    assert created["owner"] == owner.address and created["index"] == start
    first = Agent(anvil_chain, created["agent"])
    assert first.owner() == owner.address  # created for someone else
    more = [factory.create(creator, sample_card()).address for _ in range(3)]

    assert factory.count() == start + 4
    assert factory.at(start) == first.address
    assert factory.page(start, 10) == [first.address, *more]
    assert factory.page(start + 1, 2) == more[:2]
    assert factory.page(factory.count(), 5) == []
    assert list(factory.all(page_size=2))[start:] == [first.address, *more]
    assert all(factory.is_agent(a) for a in more)
    assert not factory.is_agent(creator.address)
    with pytest.raises(ContractLogicError, match=selector("IndexOutOfRange(uint256,uint256)")):
        factory.at(factory.count())


def test_a_factory_needs_an_implementation_with_code(anvil_chain: Chain) -> None:
    with reverts_with("NoImplementation()"):
        deploy_contract(anvil_chain, anvil_chain.accounts[0], "AgentFactory",
                        fresh_account(anvil_chain, eth=0).address)


# ---------------------------------------------------------------------- open registry


def test_open_enrolment_by_the_agents_owner(anvil_chain: Chain, suite: AgentSuite) -> None:
    registry = suite.registry
    owner, agent = new_agent(anvil_chain, suite)
    stranger = fresh_account(anvil_chain)
    with reverts_with("NotAgentOwner(address,address)"):
        registry.enroll(stranger, agent.address)
    with reverts_with("NotAnAgent(address)"):
        registry.enroll(stranger, stranger.address)

    receipt = registry.enroll(owner, agent.address)
    assert events(registry.contract, "AgentListed", receipt) == [
        {"agent": agent.address, "owner": owner.address}]
    assert registry.is_listed(agent.address)
    with reverts_with("AlreadyListed(address)"):
        registry.enroll(owner, agent.address)

    receipt = registry.unlist(owner, agent.address)
    assert events(registry.contract, "AgentDelisted", receipt) == [
        {"agent": agent.address, "by": owner.address}]
    assert not registry.is_listed(agent.address)
    with reverts_with("NotListed(address)"):
        registry.unlist(owner, agent.address)


def test_a_foreign_factorys_agents_cannot_enrol(anvil_chain: Chain, suite: AgentSuite) -> None:
    """A clone of the same code made by another factory is not vouched for by ours."""
    other = AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])
    owner, foreign = new_agent(anvil_chain, other)
    with reverts_with("NotAnAgent(address)"):
        suite.registry.enroll(owner, foreign.address)


def test_unlisting_moves_the_last_agent_into_the_gap(anvil_chain: Chain,
                                                     suite: AgentSuite) -> None:
    registry = suite.registry
    start = registry.count()
    parties = [new_agent(anvil_chain, suite) for _ in range(3)]
    for owner, agent in parties:
        registry.enroll(owner, agent.address)
    addresses = [a.address for _, a in parties]
    assert registry.page(start, 10) == addresses
    registry.unlist(parties[0][0], addresses[0])
    assert registry.page(start, 10) == [addresses[2], addresses[1]]
    assert registry.count() == start + 2
    assert registry.at(start) == addresses[2]


# ------------------------------------------------------------------- curated registry


@pytest.fixture
def curated(anvil_chain: Chain, suite: AgentSuite
            ) -> tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]]:
    """A registry owned by a fresh key with three members, two of whom must approve."""
    owner = fresh_account(anvil_chain)
    members = [fresh_account(anvil_chain) for _ in range(3)]
    contract = deploy_contract(anvil_chain, owner, "CuratedAgentRegistry", suite.addresses.factory,
                               owner.address, [m.address for m in members], 2)
    return CuratedAgentRegistry(anvil_chain, contract.address), owner, members


def test_an_agent_is_listed_when_the_threshold_of_members_approved(
    anvil_chain: Chain, suite: AgentSuite,
    curated: tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]],
) -> None:
    registry, _, members = curated
    agent_owner, agent = new_agent(anvil_chain, suite)
    with pytest.raises(TypeError):
        registry.enroll(agent_owner, agent.address)
    request_id = registry.request_enrolment(agent_owner, agent.address)
    assert registry.pending(agent.address) == (request_id, 0)
    with reverts_with("RequestPending(address)"):
        registry.request_enrolment(agent_owner, agent.address)
    with reverts_with("NotMember(address)"):
        registry.approve(agent_owner, agent.address)

    receipt = registry.approve(members[0], agent.address)
    assert events(registry.contract, "EnrolmentApproved", receipt) == [{
        "agent": agent.address, "member": members[0].address, "requestId": request_id,
        "approvals": 1}]
    assert not registry.is_listed(agent.address)
    with reverts_with("AlreadyApproved(address,address)"):
        registry.approve(members[0], agent.address)

    receipt = registry.approve(members[1], agent.address)
    assert events(registry.contract, "AgentListed", receipt) == [
        {"agent": agent.address, "owner": agent_owner.address}]
    assert registry.is_listed(agent.address)
    assert registry.pending(agent.address) == (0, 0)
    with reverts_with("NoRequest(address)"):
        registry.approve(members[2], agent.address)
    with reverts_with("AlreadyListed(address)"):
        registry.request_enrolment(agent_owner, agent.address)


def test_removing_a_member_voids_pending_approvals(
    anvil_chain: Chain, suite: AgentSuite,
    curated: tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]],
) -> None:
    registry, owner, members = curated
    agent_owner, agent = new_agent(anvil_chain, suite)
    registry.request_enrolment(agent_owner, agent.address)
    registry.approve(members[0], agent.address)
    registry.remove_member(owner, members[0].address)
    assert registry.pending(agent.address)[1] == 0
    registry.approve(members[1], agent.address)
    assert not registry.is_listed(agent.address)  # one valid approval of two
    registry.approve(members[2], agent.address)
    assert registry.is_listed(agent.address)


def test_the_consortium_is_managed_by_the_registry_owner(
    anvil_chain: Chain, suite: AgentSuite,
    curated: tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]],
) -> None:
    registry, owner, members = curated
    with reverts_with("OwnableUnauthorizedAccount(address)"):
        registry.add_member(members[0], members[0].address)
    with reverts_with("AlreadyMember(address)"):
        registry.add_member(owner, members[0].address)
    with reverts_with("InvalidThreshold(uint256,uint256)"):
        registry.set_threshold(owner, 4)
    with reverts_with("InvalidThreshold(uint256,uint256)"):
        registry.set_threshold(owner, 0)
    registry.remove_member(owner, members[2].address)
    with reverts_with("InvalidThreshold(uint256,uint256)"):  # 1 member left < threshold 2
        registry.remove_member(owner, members[1].address)
    receipt = registry.add_member(owner, members[2].address)
    assert events(registry.contract, "MemberAdded", receipt) == [{"member": members[2].address}]
    assert registry.is_member(members[2].address)


def test_lowering_the_threshold_lets_a_request_be_finalized(
    anvil_chain: Chain, suite: AgentSuite,
    curated: tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]],
) -> None:
    registry, owner, members = curated
    agent_owner, agent = new_agent(anvil_chain, suite)
    registry.request_enrolment(agent_owner, agent.address)
    registry.approve(members[0], agent.address)
    with reverts_with("NotEnoughApprovals(uint256,uint256)"):
        registry.finalize(agent_owner, agent.address)
    receipt = registry.set_threshold(owner, 1)
    assert events(registry.contract, "ThresholdSet", receipt) == [{"threshold": 1}]
    registry.finalize(fresh_account(anvil_chain), agent.address)  # anyone may
    assert registry.is_listed(agent.address)


def test_requests_can_be_cancelled_and_agents_removed(
    anvil_chain: Chain, suite: AgentSuite,
    curated: tuple[CuratedAgentRegistry, LocalAccount, list[LocalAccount]],
) -> None:
    registry, owner, members = curated
    agent_owner, agent = new_agent(anvil_chain, suite)
    stranger = fresh_account(anvil_chain)
    request_id = registry.request_enrolment(agent_owner, agent.address)
    with reverts_with("NotAgentOwner(address,address)"):
        registry.cancel_enrolment(stranger, agent.address)
    receipt = registry.cancel_enrolment(owner, agent.address)  # the curator may
    assert events(registry.contract, "EnrolmentCancelled", receipt) == [
        {"agent": agent.address, "by": owner.address, "requestId": request_id}]
    second = registry.request_enrolment(agent_owner, agent.address)
    assert second == request_id + 1
    registry.cancel_enrolment(agent_owner, agent.address)  # so may the agent's owner
    with reverts_with("NoRequest(address)"):
        registry.cancel_enrolment(agent_owner, agent.address)

    registry.request_enrolment(agent_owner, agent.address)
    registry.approve(members[0], agent.address)
    registry.approve(members[1], agent.address)
    with reverts_with("OwnableUnauthorizedAccount(address)"):
        registry.remove(agent_owner, agent.address)
    receipt = registry.remove(owner, agent.address)
    assert events(registry.contract, "AgentDelisted", receipt) == [
        {"agent": agent.address, "by": owner.address}]
    assert not registry.is_listed(agent.address)
