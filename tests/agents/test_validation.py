"""ERC-8004 validation of a delivered A402 result, on anvil: request, answer, index.

A real channel exchange (both state machines, real secp256k1 signatures) delivers
a result and produces the vault's receipt; the provider's owner asks a validator
to vouch for the delivery; the validator checks the receipt and answers with its
hash; the indexer reads the answer next to the agent's feedback.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from a402.agents.indexer import Contracts, Indexer, IndexStore
from a402.agents.onchain import AgentSuite
from a402.agents.validation import (
    RECEIPT_TAG,
    DeliveredResult,
    ValidationRefused,
    answer_with_receipt,
    receipt_hash,
    request_key,
    suite_validation,
)
from a402.asc import (
    Ack,
    Auth,
    ChannelTerms,
    ProviderChannel,
    Reply,
    VaultChannel,
    decode,
    encode,
)
from a402.chain.node import Chain
from a402.crypto import EVM, EcdsaSigner, PaymentDomain, result_hash
from a402.evm.keccak import keccak256

from .onchain_helpers import fresh_account, reverts_with

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
PRICE = 2_500


@dataclasses.dataclass
class Delivery:
    delivered: DeliveredResult
    ack: Ack
    vault: str
    domain: PaymentDomain
    auth: Auth
    reply: Reply


def deliver(chain: Chain, result: bytes) -> Delivery:
    """One paid request through both channel state machines; the vault's ACK is the receipt."""
    domain = PaymentDomain(chain.chain_id, os.urandom(20))
    vault_key, provider_key, client_key = (EcdsaSigner(os.urandom(32)) for _ in range(3))
    schnorr = EVM.generate_key()
    terms = ChannelTerms(client_key.address, vault_key.address, provider_key.address,
                         schnorr.public_key, DEPOSIT, os.urandom(32))
    vault = VaultChannel(terms, domain, vault_key, lock_timeout=30)
    provider = ProviderChannel(terms, domain, provider_key, schnorr, ack_timeout=10,
                               lock_timeout=29)
    exec_ = vault.request(b"translate: hello", PRICE, now=0)
    provider.receive(decode(encode(exec_)), now=0)
    reply = provider.reply(exec_.request_id, result)
    auth = vault.receive(decode(encode(reply)), now=1).send[0]
    reveal = provider.receive(decode(encode(auth)), now=2).send[0]
    ack = vault.receive(decode(encode(reveal)), now=3).send[0]
    assert isinstance(ack, Ack) and isinstance(auth, Auth)
    provider.receive(decode(encode(ack)), now=3)
    assert reply.result_hash == result_hash(result)
    delivered = DeliveredResult(vault.channel_id, exec_.request_id, PRICE, reply.result_hash,
                                keccak256(exec_.request))
    return Delivery(delivered, ack, vault_key.address, domain, auth, reply)


@pytest.fixture(scope="module")
def suite(anvil_chain: Chain) -> AgentSuite:
    return AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])


def provider_identity(chain: Chain, suite: AgentSuite) -> tuple[LocalAccount, int]:
    owner = fresh_account(chain)
    return owner, suite.identity.register(owner, "https://translator.example/agent.json")


def test_the_suite_deploys_the_validation_registry_next_to_identity_and_reputation(
    suite: AgentSuite,
) -> None:
    registry = suite_validation(suite)
    assert registry.contract.functions.getIdentityRegistry().call() == suite.addresses.identity
    assert registry.contract.functions.getVersion().call() == "2.0.0"
    assert suite.addresses.to_dict()["validation"] == registry.address


def test_a_provider_enclave_vouches_for_a_delivered_result_with_the_receipts_hash_and_the_indexer_reads_it(  # noqa: E501
    anvil_chain: Chain, suite: AgentSuite, tmp_path: Path,
) -> None:
    start = int(anvil_chain.w3.eth.block_number)
    owner, agent_id = provider_identity(anvil_chain, suite)
    enclave = fresh_account(anvil_chain)  # the enclave's validator key: it can move nothing
    d = deliver(anvil_chain, b"bonjour")
    registry = suite_validation(suite)
    request = d.delivered.request_hash()

    registry.request(owner, enclave.address, agent_id, request, "a402://receipt")
    before = registry.status(request, agent_id)
    assert (before.validator, before.agent_id, before.answered) == (
        enclave.address, agent_id, False)

    published = answer_with_receipt(registry, enclave, d.delivered, d.ack, agent_id=agent_id,
                                    vault=d.vault, domain=d.domain, auth=d.auth, reply=d.reply)

    assert published == keccak256(encode(d.ack)) == receipt_hash(d.ack)
    after = registry.status(request, agent_id)
    assert (after.response, after.response_hash, after.tag) == (100, published, RECEIPT_TAG)
    assert after.last_update > 0
    assert registry.summary(agent_id, [enclave.address]) == (1, 100)
    assert registry.summary(agent_id, [owner.address]) == (0, 0)  # only the named validators
    key = request_key(agent_id, request)  # the request as filed: namespaced by the agent
    assert registry.agent_validations(agent_id) == [key]
    assert registry.validator_requests(enclave.address) == [key]

    # A feedback next to it, so the index shows both side by side.
    client = fresh_account(anvil_chain)
    suite.reputation.give_feedback(client, agent_id, 90, tag1="starred")
    store = IndexStore(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    Indexer(store, anvil_chain.rpc_url or "", Contracts.from_suite(suite.addresses),
            start_block=start).sync()
    (row,) = store.validations(agent_id)
    assert row["request_hash"] == "0x" + key.hex()
    assert row["validator"] == enclave.address.lower()
    assert row["request_uri"] == "a402://receipt"
    assert row["response"]["response"] == 100
    assert row["response"]["response_hash"] == "0x" + published.hex()
    assert row["response"]["tag"] == RECEIPT_TAG
    assert store.reputation_inputs() is not None
    store.close()


def test_a_receipt_for_other_work_or_not_signed_by_the_vault_is_refused_and_nothing_is_sent(
    anvil_chain: Chain, suite: AgentSuite,
) -> None:
    owner, agent_id = provider_identity(anvil_chain, suite)
    enclave = fresh_account(anvil_chain)
    d = deliver(anvil_chain, b"hola")
    other = deliver(anvil_chain, b"ciao")
    registry = suite_validation(suite)
    registry.request(owner, enclave.address, agent_id, d.delivered.request_hash())
    cases = {
        "receipt_wrong_channel": (other.ack, d.vault),
        "receipt_bad_signature": (d.ack, other.vault),
        "receipt_wrong_request": (dataclasses.replace(d.ack, request_id=7), d.vault),
    }
    for reason, (ack, vault) in cases.items():
        with pytest.raises(ValidationRefused) as info:
            answer_with_receipt(registry, enclave, d.delivered, ack, agent_id=agent_id,
                                vault=vault, domain=d.domain, auth=d.auth, reply=d.reply)
        assert info.value.reason == reason
    forged = dataclasses.replace(d.ack, signature=bytes(65))
    with pytest.raises(ValidationRefused, match="receipt_bad_signature"):
        answer_with_receipt(registry, enclave, d.delivered, forged, agent_id=agent_id,
                            vault=d.vault, domain=d.domain, auth=d.auth, reply=d.reply)
    # A delivery claiming a different amount is a different request: never asked.
    inflated = dataclasses.replace(d.delivered, amount=PRICE * 100)
    with pytest.raises(ValidationRefused, match="validation_unknown_request"):
        answer_with_receipt(registry, enclave, inflated, d.ack, agent_id=agent_id,
                            vault=d.vault, domain=d.domain, auth=d.auth, reply=d.reply)
    stranger = fresh_account(anvil_chain)
    with pytest.raises(ValidationRefused, match="validation_not_requested_of_us"):
        answer_with_receipt(registry, stranger, d.delivered, d.ack, agent_id=agent_id,
                            vault=d.vault, domain=d.domain, auth=d.auth, reply=d.reply)
    assert not registry.status(d.delivered.request_hash(), agent_id).answered


def test_only_the_owner_asks_only_the_named_validator_answers_and_a_request_is_made_once(
    anvil_chain: Chain, suite: AgentSuite,
) -> None:
    owner, agent_id = provider_identity(anvil_chain, suite)
    validator, stranger = fresh_account(anvil_chain), fresh_account(anvil_chain)
    registry = suite_validation(suite)
    request = os.urandom(32)
    with reverts_with("NotAuthorized(address,uint256)"):
        registry.request(stranger, validator.address, agent_id, request)
    with reverts_with("ZeroRequestHash()"):
        registry.request(owner, validator.address, agent_id, bytes(32))
    registry.request(owner, validator.address, agent_id, request)
    with reverts_with("RequestExists(bytes32)"):
        registry.request(owner, stranger.address, agent_id, request)
    with reverts_with("NotTheValidator(address,address)"):
        registry.respond(stranger, request, 100, agent_id=agent_id)
    with reverts_with("ResponseOutOfRange(uint8)"):
        registry.respond(validator, request, 101, agent_id=agent_id)
    with reverts_with("UnknownRequest(bytes32)"):
        registry.respond(validator, os.urandom(32), 50, agent_id=agent_id)
    # The validator may answer again; the last answer stands.
    registry.respond(validator, request, 40, agent_id=agent_id, tag="progress")
    registry.respond(validator, request, 80, agent_id=agent_id, tag="final")
    status = registry.status(request, agent_id)
    assert (status.response, status.tag) == (80, "final")
    assert registry.summary(agent_id, [], "final") == (1, 80)
    assert registry.summary(agent_id, [], "progress") == (0, 0)
