"""ERC-8004 (2026-01 revision): the identity registry and the reputation registry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from a402.agents.onchain import (
    Feedback,
    IdentityRegistry,
    ReputationRegistry,
    Summary,
    chain_time,
    fixed_point,
)
from a402.chain.node import Chain
from a402.chain.tx import deploy_contract, transact

from .onchain_helpers import events, fresh_account, reverts_with, selector

pytestmark = pytest.mark.anvil

WALLET_KEY = "agentWallet"


@pytest.fixture(scope="module")
def identity(anvil_chain: Chain) -> IdentityRegistry:
    contract = deploy_contract(anvil_chain, anvil_chain.accounts[0], "IdentityRegistry")
    return IdentityRegistry(anvil_chain, contract.address)


@pytest.fixture(scope="module")
def reputation(anvil_chain: Chain, identity: IdentityRegistry) -> ReputationRegistry:
    contract = deploy_contract(anvil_chain, anvil_chain.accounts[0], "ReputationRegistry",
                               identity.address)
    return ReputationRegistry(anvil_chain, contract.address)


def new_agent(chain: Chain, identity: IdentityRegistry) -> tuple[LocalAccount, int]:
    owner = fresh_account(chain)
    return owner, identity.register(owner, "https://agent.example/registration.json")


# --------------------------------------------------------------------------- identity


def test_registration_mints_ids_in_order_with_the_standard_events(
    anvil_chain: Chain, identity: IdentityRegistry
) -> None:
    owner = fresh_account(anvil_chain)
    fn = identity.contract.functions
    receipt = transact(anvil_chain, owner, fn.register(
        "ipfs://card", [("agentName", b"Translator"), ("x", b"\x01\x02")]))
    (registered,) = events(identity.contract, "Registered", receipt)
    agent_id = registered["agentId"]
    assert registered == {"agentId": agent_id, "agentURI": "ipfs://card", "owner": owner.address}
    # Transfer first, then agentWallet, then each entry, then Registered.
    topics = [log["topics"][0] for log in receipt["logs"]]
    transfer, metadata, reg = (keccak(text=s) for s in (
        "Transfer(address,address,uint256)", "MetadataSet(uint256,string,string,bytes)",
        "Registered(uint256,string,address)"))
    assert [t for t in topics if t in (transfer, metadata, reg)] == [
        transfer, metadata, metadata, metadata, reg]
    meta = events(identity.contract, "MetadataSet", receipt)
    assert [(m["metadataKey"], m["metadataValue"]) for m in meta] == [
        (WALLET_KEY, bytes.fromhex(owner.address[2:])), ("agentName", b"Translator"),
        ("x", b"\x01\x02")]
    assert meta[1]["indexedMetadataKey"] == keccak(text="agentName")

    assert identity.owner_of(agent_id) == owner.address
    assert identity.agent_uri(agent_id) == "ipfs://card"
    assert identity.get_metadata(agent_id, "agentName") == b"Translator"
    assert identity.agent_wallet(agent_id) == owner.address
    assert identity.get_metadata(agent_id, WALLET_KEY) == bytes.fromhex(owner.address[2:])
    assert identity.register(owner, "second") == agent_id + 1
    assert identity.register(owner) == agent_id + 2
    assert identity.agent_uri(agent_id + 2) == ""
    assert identity.contract.functions.name().call() == "AgentIdentity"
    assert identity.contract.functions.symbol().call() == "AGENT"
    assert identity.contract.functions.getVersion().call() == "2.0.0"
    assert identity.agent_registry == f"{anvil_chain.network}:{identity.address}"


def test_the_agent_wallet_key_is_reserved(anvil_chain: Chain, identity: IdentityRegistry) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    with reverts_with("ReservedKey(string)"):
        identity.set_metadata(owner, agent_id, WALLET_KEY, bytes(20))
    with reverts_with("ReservedKey(string)"):
        identity.register(owner, "u", {WALLET_KEY: bytes(20)})
    assert identity.agent_wallet(agent_id) == owner.address


def test_only_the_owner_or_an_operator_manages_an_agent(
    anvil_chain: Chain, identity: IdentityRegistry
) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    operator, stranger = fresh_account(anvil_chain), fresh_account(anvil_chain)
    with reverts_with("NotAuthorized(address,uint256)"):
        identity.set_agent_uri(stranger, agent_id, "https://evil")
    with reverts_with("NotAuthorized(address,uint256)"):
        identity.set_metadata(stranger, agent_id, "k", b"v")
    with reverts_with("NotAuthorized(address,uint256)"):
        identity.unset_agent_wallet(stranger, agent_id)
    assert not identity.is_authorized_or_owner(operator.address, agent_id)

    transact(anvil_chain, owner, identity.contract.functions.setApprovalForAll(
        operator.address, True))
    assert identity.is_authorized_or_owner(operator.address, agent_id)
    receipt = identity.set_agent_uri(operator, agent_id, "https://new")
    assert events(identity.contract, "URIUpdated", receipt) == [
        {"agentId": agent_id, "newURI": "https://new", "updatedBy": operator.address}]
    assert identity.agent_uri(agent_id) == "https://new"
    with pytest.raises(ContractLogicError, match=selector("ERC721NonexistentToken(uint256)")):
        identity.is_authorized_or_owner(owner.address, 10**9)


def test_a_new_wallet_proves_control_with_an_eip712_signature(
    anvil_chain: Chain, identity: IdentityRegistry
) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    wallet = fresh_account(anvil_chain, eth=0)
    now = chain_time(anvil_chain)
    signature = identity.sign_wallet(wallet, agent_id, owner.address, now + 120)

    impostor = fresh_account(anvil_chain, eth=0)
    forged = identity.sign_wallet(impostor, agent_id, owner.address, now + 120)
    with reverts_with("InvalidWalletSignature(address)"):
        identity.set_agent_wallet(owner, agent_id, wallet.address, now + 120, forged)
    with reverts_with("NotAuthorized(address,uint256)"):
        identity.set_agent_wallet(fresh_account(anvil_chain), agent_id, wallet.address,
                                  now + 120, signature)
    late = identity.sign_wallet(wallet, agent_id, owner.address, now + 301 + 60)
    with reverts_with("DeadlineTooFar(uint256)"):
        identity.set_agent_wallet(owner, agent_id, wallet.address, now + 301 + 60, late)
    past = identity.sign_wallet(wallet, agent_id, owner.address, now - 1)
    with reverts_with("DeadlineExpired(uint256)"):
        identity.set_agent_wallet(owner, agent_id, wallet.address, now - 1, past)
    with reverts_with("ZeroWallet()"):
        identity.set_agent_wallet(owner, agent_id, "0x" + "00" * 20, now + 120, signature)

    receipt = identity.set_agent_wallet(owner, agent_id, wallet.address, now + 120, signature)
    assert events(identity.contract, "MetadataSet", receipt) == [{
        "agentId": agent_id, "indexedMetadataKey": keccak(text=WALLET_KEY),
        "metadataKey": WALLET_KEY, "metadataValue": bytes.fromhex(wallet.address[2:])}]
    assert identity.agent_wallet(agent_id) == wallet.address

    receipt = identity.unset_agent_wallet(owner, agent_id)
    assert events(identity.contract, "MetadataSet", receipt)[0]["metadataValue"] == b""
    assert identity.agent_wallet(agent_id) is None
    assert identity.get_metadata(agent_id, WALLET_KEY) == b""


def test_a_contract_wallet_proves_control_with_erc1271(
    anvil_chain: Chain, identity: IdentityRegistry
) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    signer = fresh_account(anvil_chain, eth=0)
    wallet = deploy_contract(anvil_chain, anvil_chain.accounts[0], "ERC1271Wallet", signer.address)
    deadline = chain_time(anvil_chain) + 120
    typed = identity.wallet_typed_data(agent_id, wallet.address, owner.address, deadline)
    from eth_account.messages import encode_typed_data

    signature = bytes(signer.sign_message(encode_typed_data(full_message=typed)).signature)
    identity.set_agent_wallet(owner, agent_id, wallet.address, deadline, signature)
    assert identity.agent_wallet(agent_id) == wallet.address


def test_a_transfer_clears_the_wallet(anvil_chain: Chain, identity: IdentityRegistry) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    identity.verify_wallet(owner, agent_id, fresh_account(anvil_chain, eth=0))
    buyer = fresh_account(anvil_chain)
    receipt = identity.transfer(owner, buyer.address, agent_id)
    assert events(identity.contract, "MetadataSet", receipt) == [{
        "agentId": agent_id, "indexedMetadataKey": keccak(text=WALLET_KEY),
        "metadataKey": WALLET_KEY, "metadataValue": b""}]
    assert identity.owner_of(agent_id) == buyer.address
    assert identity.agent_wallet(agent_id) is None
    identity.verify_wallet(buyer, agent_id, buyer)  # the new owner sets its own
    assert identity.agent_wallet(agent_id) == buyer.address


# ------------------------------------------------------------------------- reputation


def test_feedback_is_numbered_per_client_and_logged(
    anvil_chain: Chain, identity: IdentityRegistry, reputation: ReputationRegistry
) -> None:
    _, agent_id = new_agent(anvil_chain, identity)
    client = fresh_account(anvil_chain)
    fn = reputation.contract.functions
    receipt = transact(anvil_chain, client, fn.giveFeedback(
        agent_id, 87, 0, "starred", "translation", "https://agent.example/a2a",
        "ipfs://feedback", b"\x11" * 32))
    assert events(reputation.contract, "NewFeedback", receipt) == [{
        "agentId": agent_id, "clientAddress": client.address, "feedbackIndex": 1, "value": 87,
        "valueDecimals": 0, "indexedTag1": keccak(text="starred"), "tag1": "starred",
        "tag2": "translation", "endpoint": "https://agent.example/a2a",
        "feedbackURI": "ipfs://feedback", "feedbackHash": b"\x11" * 32}]
    assert reputation.give_feedback(client, agent_id, Decimal("-2.5"), tag1="uptime") == 2
    assert reputation.read_feedback(agent_id, client.address, 2) == Feedback(
        client.address, 2, -25, 1, "uptime", "", False)
    assert reputation.last_index(agent_id, client.address) == 2
    assert reputation.clients(agent_id) == [client.address]
    assert reputation.contract.functions.getIdentityRegistry().call() == identity.address


def test_an_agents_managers_cannot_rate_it_and_values_are_bounded(
    anvil_chain: Chain, identity: IdentityRegistry, reputation: ReputationRegistry
) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    operator, client = fresh_account(anvil_chain), fresh_account(anvil_chain)
    transact(anvil_chain, owner, identity.contract.functions.approve(operator.address, agent_id))
    for manager in (owner, operator):
        with reverts_with("SelfFeedback(address,uint256)"):
            reputation.give_feedback(manager, agent_id, 100)
    with reverts_with("ERC721NonexistentToken(uint256)"):
        reputation.give_feedback(client, 10**9, 100)
    with reverts_with("InvalidValueDecimals(uint8)"):
        reputation.give_feedback(client, agent_id, 1, decimals=19)
    for too_big in (10**38 + 1, -(10**38) - 1):
        with reverts_with("ValueOutOfRange(int128)"):
            reputation.give_feedback(client, agent_id, too_big)
    assert reputation.give_feedback(client, agent_id, 10**38) == 1
    assert reputation.give_feedback(client, agent_id, -(10**38), decimals=18) == 2


def test_revocation_and_responses(
    anvil_chain: Chain, identity: IdentityRegistry, reputation: ReputationRegistry
) -> None:
    owner, agent_id = new_agent(anvil_chain, identity)
    client, other, auditor = (fresh_account(anvil_chain) for _ in range(3))
    reputation.give_feedback(client, agent_id, 10)
    reputation.give_feedback(client, agent_id, 20)
    reputation.give_feedback(other, agent_id, 30)

    with reverts_with("FeedbackNotFound(uint256,address,uint64)"):
        reputation.revoke_feedback(other, agent_id, 2)  # other has only index 1
    with reverts_with("FeedbackNotFound(uint256,address,uint64)"):
        reputation.revoke_feedback(client, agent_id, 0)
    receipt = reputation.revoke_feedback(client, agent_id, 1)
    assert events(reputation.contract, "FeedbackRevoked", receipt) == [
        {"agentId": agent_id, "clientAddress": client.address, "feedbackIndex": 1}]
    assert reputation.read_feedback(agent_id, client.address, 1).revoked
    with reverts_with("AlreadyRevoked(uint256,address,uint64)"):
        reputation.revoke_feedback(client, agent_id, 1)

    receipt = reputation.append_response(owner, agent_id, client.address, 2, "ipfs://refund",
                                         b"\x22" * 32)
    assert events(reputation.contract, "ResponseAppended", receipt) == [{
        "agentId": agent_id, "clientAddress": client.address, "feedbackIndex": 2,
        "responder": owner.address, "responseURI": "ipfs://refund", "responseHash": b"\x22" * 32}]
    reputation.append_response(owner, agent_id, client.address, 2, "ipfs://refund-2")
    reputation.append_response(auditor, agent_id, other.address, 1, "ipfs://spam?")
    with reverts_with("EmptyResponseURI()"):
        reputation.append_response(auditor, agent_id, client.address, 2, "")
    with reverts_with("FeedbackNotFound(uint256,address,uint64)"):
        reputation.append_response(auditor, agent_id, client.address, 3, "x")

    assert reputation.response_count(agent_id, client.address, 2) == 2
    assert reputation.response_count(agent_id, client.address, 2, [auditor.address]) == 0
    assert reputation.response_count(agent_id, client.address) == 2  # every index of client
    assert reputation.response_count(agent_id) == 3  # every client
    assert reputation.response_count(agent_id, responders=[auditor.address]) == 1

    live = reputation.read_all(agent_id)
    assert [(f.client, f.index, f.value) for f in live] == [
        (client.address, 2, 20), (other.address, 1, 30)]
    everything = reputation.read_all(agent_id, include_revoked=True)
    assert [(f.index, f.revoked) for f in everything] == [(1, True), (2, False), (1, False)]
    assert reputation.read_all(agent_id, [other.address]) == [live[1]]


def test_summaries_average_named_clients_in_the_most_common_precision(
    anvil_chain: Chain, identity: IdentityRegistry, reputation: ReputationRegistry
) -> None:
    _, agent_id = new_agent(anvil_chain, identity)
    a, b, c = (fresh_account(anvil_chain) for _ in range(3))
    reputation.give_feedback(a, agent_id, Decimal("4.5"), tag1="starred")
    reputation.give_feedback(b, agent_id, 4, tag1="starred", tag2="fr")
    reputation.give_feedback(b, agent_id, Decimal("5.0"), decimals=1, tag1="starred")
    reputation.give_feedback(c, agent_id, 1, tag1="starred")  # a client we do not trust
    reputation.give_feedback(a, agent_id, 250, decimals=0, tag1="responseTime")

    with pytest.raises(ContractLogicError, match=selector("ClientAddressesRequired()")):
        reputation.summary(agent_id, [])
    stars = reputation.summary(agent_id, [a.address, b.address], tag1="starred")
    assert stars == Summary(3, 45, 1)  # (4.5 + 4 + 5.0) / 3 at one decimal
    assert stars.decimal == Decimal("4.5")
    assert reputation.summary(agent_id, [a.address, b.address], tag1="starred", tag2="fr") == (
        Summary(1, 4, 0))
    assert reputation.summary(agent_id, [c.address], tag1="nothing") == Summary(0, 0, 0)
    # Ties go to the fewest decimals; averages round toward zero.
    reputation.revoke_feedback(b, agent_id, 2)
    assert reputation.summary(agent_id, [a.address, b.address], tag1="starred") == (
        Summary(2, 4, 0))  # 4.5 (1 decimal) and 4 (0 decimals) tie: (4.5 + 4) / 2 = 4.25 -> 4
    assert reputation.summary(agent_id, [b.address, c.address], tag1="starred") == (
        Summary(2, 2, 0))  # (4 + 1) / 2 = 2.5 -> 2


def test_a_summary_that_does_not_fit_int128_reverts(
    anvil_chain: Chain, identity: IdentityRegistry, reputation: ReputationRegistry
) -> None:
    _, agent_id = new_agent(anvil_chain, identity)
    client = fresh_account(anvil_chain)
    reputation.give_feedback(client, agent_id, 10**38)  # 1e38 at 0 decimals
    reputation.give_feedback(client, agent_id, 1, decimals=18)
    reputation.give_feedback(client, agent_id, 1, decimals=18)  # the mode: 18 decimals
    with pytest.raises(ContractLogicError,
                       match=selector("SafeCastOverflowedIntDowncast(uint8,int256)")):
        reputation.summary(agent_id, [client.address])


@pytest.mark.parametrize("value, decimals, expected", [
    (Decimal("4.5"), None, (45, 1)), ("0.001", None, (1, 3)), (7, None, (7, 0)),
    (Decimal("5.0"), 2, (500, 2)), (Decimal("100"), None, (100, 0)), (-3, 2, (-3, 2)),
])
def test_fixed_point(value: Any, decimals: int | None, expected: tuple[int, int]) -> None:
    assert fixed_point(value, decimals) == expected


def test_fixed_point_refuses_lost_precision() -> None:
    with pytest.raises(ValueError, match="more than 1"):
        fixed_point(Decimal("1.25"), 1)
    with pytest.raises(ValueError, match="18"):
        fixed_point(Decimal("1e-19"))
