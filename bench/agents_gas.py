"""Gas to deploy and to update an on-chain agent, measured on anvil.

Every figure is the ``gasUsed`` of one real transaction (21,000 intrinsic gas
and calldata included), sent through :mod:`a402.agents.onchain`. Views are
``eth_estimateGas`` of a call, what an on-chain caller would pay.

Cards: *typical* is what the A2A provider serves (two interfaces, one skill
with tags and an example, x402 terms, an extension description); *minimal* is
a free agent with one interface and no skill; *large* has eight skills with
long descriptions. The one-off suite deployment (renderer, Agent
implementation, factory, registries, ERC-8004 pair) is listed separately: an
agent itself is an EIP-1167 clone initialized with its card.

The TU Berlin paper (arXiv 2507.19550) deploys one full contract per card; its
figures were not retrievable here (reference/a2a-ap2-erc8004.md §5), so none
are quoted; "Agent implementation (once)" is the cost of that design per agent.

Usage: ``python bench/agents_gas.py`` — prints a table and writes
``bench/results/agents_gas.json``. Needs anvil (``npm ci``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.logs import DISCARD

from a402.agents.card import Capabilities, Interface, OnchainCard, Payment, Skill, encode_profile
from a402.agents.onchain import AgentSuite, IdentityRegistry, chain_time
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract, transact
from a402.exact.eip3009 import sign_authorization
from a402.wire.x402 import PaymentRequirements

RESULTS = Path(__file__).resolve().parent / "results" / "agents_gas.json"
ETH = 10**18


def _funded(chain: Chain) -> LocalAccount:
    account: LocalAccount = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=ETH)
    return account


def cards(token: str, pay_to: str, network: str) -> dict[str, OnchainCard]:
    payment = Payment(network=network, asset=token, amount=10_000, pay_to=pay_to)
    typical = OnchainCard(
        name="Translator",
        description="Translates text between languages.",
        interfaces=(Interface("https://translator.example/a2a"),
                    Interface("https://translator.example/a2a", "JSONRPC", "0.3")),
        version="1.0.0",
        skills=(Skill("translate", "Translate", "Translate a text.", ("language", "text"),
                      examples=("Translate 'hello' to French",)),),
        payment=payment,
        payment_description="Payment per task with x402 (exact, EIP-3009) in task metadata.",
    )
    minimal = OnchainCard(name="Echo", description="", interfaces=(Interface("https://e.x/"),),
                          version="1")
    large = replace(typical, skills=tuple(
        Skill(f"skill-{i}", f"Skill {i}", "A longer description of what this skill does, "
              "which inputs it expects and what it returns to the caller. " * 2,
              ("nlp", "translation", f"tag{i}"), examples=(f"Example request {i}",),
              input_modes=("text/plain", "application/json"), output_modes=("application/json",))
        for i in range(8)))
    return {"typical": typical, "minimal": minimal, "large": large}


def measure(chain: Chain) -> tuple[dict[str, int], dict[str, int]]:
    """(gas per operation, card sizes in bytes)."""
    deployer = chain.accounts[0]
    gas: dict[str, int] = {}

    def used(receipt: Any) -> int:
        return int(receipt["gasUsed"])

    def deployed(name: str, *args: Any) -> str:
        contract = deploy_contract(chain, deployer, name, *args)
        receipt = chain.w3.eth.get_transaction_receipt(
            cast(HexBytes, chain.w3.eth.get_block("latest")["transactions"][-1]))  # a hash
        gas[f"deploy {name} (once)"] = used(receipt)
        return contract.address

    token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2", deployer.address)
    renderer = deployed("AgentCardRenderer")
    implementation = deployed("Agent", renderer)
    factory = deployed("AgentFactory", implementation)
    deployed("AgentRegistry", factory)
    deployed("CuratedAgentRegistry", factory, deployer.address, [deployer.address], 1)
    identity_address = deployed("IdentityRegistry")
    deployed("ReputationRegistry", identity_address)
    suite = AgentSuite.deploy(chain, deployer)  # the bound suite the rest uses

    owner, payer_owner = _funded(chain), _funded(chain)
    sample = cards(token.address, owner.address, chain.network)
    sizes = {f"{k} card JSON": len(c.canonical_json()) for k, c in sample.items()}
    sizes |= {f"{k} profile blob": len(encode_profile(c)) for k, c in sample.items()}

    def create(card: OnchainCard, who: LocalAccount) -> tuple[Any, int]:
        receipt = transact(chain, who, suite.factory.contract.functions.createAgent(
            who.address, card.to_abi(), 86_400))
        (event,) = suite.factory.contract.events.AgentCreated().process_receipt(
            receipt, errors=DISCARD)
        return suite.agent(event["args"]["agent"]), used(receipt)

    suite.factory.create(owner, sample["typical"])  # warm-up: the factory's list is non-empty
    agent, gas["createAgent (typical card)"] = create(sample["typical"], owner)
    _, gas["createAgent (minimal free card)"] = create(sample["minimal"], owner)
    _, gas["createAgent (large card, 8 skills)"] = create(sample["large"], owner)
    payer, _ = create(sample["minimal"], payer_owner)

    typical = sample["typical"]
    assert typical.payment is not None  # the typical card is a paid one
    gas["setVersion"] = used(agent.set_version(owner, "1.0.1"))
    gas["setPaymentTerms (new price)"] = used(agent.set_payment(
        owner, replace(typical.payment, amount=20_000)))
    gas["setCapabilities"] = used(agent.set_capabilities(owner, Capabilities(streaming=True)))
    gas["setProfile (typical text)"] = used(agent.set_profile(
        owner, replace(typical, description="Translates text between many languages.")))
    gas["updateCard (typical, all sections)"] = used(agent.update_card(owner, typical))
    gas["heartbeat"] = used(agent.heartbeat(owner))

    gas["enroll (open registry)"] = used(suite.registry.enroll(owner, agent.address))
    curated = suite.curated_registry
    receipt = transact(chain, owner, curated.contract.functions.requestEnrolment(agent.address))
    gas["requestEnrolment (curated)"] = used(receipt)
    gas["approve (curated, lists at threshold 1)"] = used(curated.approve(deployer, agent.address))

    transact(chain, deployer, token.functions.mint(payer_owner.address, 10**9))
    gas["pay (native, attributed)"] = used(agent.pay(payer_owner, 1_000,
                                                     payer_agent=payer.address))
    transact(chain, payer_owner, token.functions.approve(agent.address, 2**256 - 1))
    gas["payToken (attributed)"] = used(agent.pay_token(
        payer_owner, token.address, 10_000, payer_agent=payer.address, approve=False))
    requirements = PaymentRequirements.model_validate({
        "scheme": "exact", "network": chain.network, "amount": "10000", "asset": token.address,
        "payTo": agent.address, "maxTimeoutSeconds": 600,
        "extra": {"name": "USD Coin", "version": "2"},
    })
    payload = sign_authorization(payer_owner, requirements, now=chain_time(chain))
    gas["payWithAuthorization (x402 exact, attributed)"] = used(agent.pay_with_authorization(
        deployer, token.address, payload, payer_agent=payer.address))
    gas["rate (first rating)"] = used(agent.rate(payer_owner, payer.address, 80, "good"))
    gas["rate (replace rating)"] = used(agent.rate(payer_owner, payer.address, 90))
    gas["withdraw (native)"] = used(agent.withdraw(owner, owner.address, 500))
    gas["withdrawToken"] = used(agent.withdraw_token(owner, token.address, owner.address, 5_000))

    fn = agent.contract.functions
    gas["view cardJSON (typical)"] = int(fn.cardJSON().estimate_gas())
    gas["view cardHash (typical)"] = int(fn.cardHash().estimate_gas())
    big, _ = create(sample["large"], owner)
    gas["view cardJSON (large)"] = int(big.contract.functions.cardJSON().estimate_gas())

    identity: IdentityRegistry = suite.identity
    agent_owner = _funded(chain)
    identity.register(agent_owner, "https://warm.example/")  # warm-up
    receipt = transact(chain, agent_owner, identity.contract.functions.register(
        "https://translator.example/.well-known/agent-registration.json"))
    gas["ERC-8004 register(agentURI)"] = used(receipt)
    agent_id = identity.register(agent_owner, "https://x.example/")
    gas["ERC-8004 setAgentURI"] = used(identity.set_agent_uri(
        agent_owner, agent_id, "https://translator.example/v2.json"))
    gas["ERC-8004 setAgentWallet (EIP-712)"] = used(identity.verify_wallet(
        agent_owner, agent_id, Account.create()))
    reputation = suite.reputation
    client = _funded(chain)
    fb = reputation.contract.functions
    first = fb.giveFeedback(agent_id, 87, 0, "", "", "", "", bytes(32))
    gas["ERC-8004 giveFeedback (new client, no tags)"] = used(transact(chain, client, first))
    second = fb.giveFeedback(agent_id, 87, 0, "starred", "translation",
                             "https://translator.example/a2a", "ipfs://bafy-feedback", b"\x11" * 32)
    gas["ERC-8004 giveFeedback (2nd by client, 2 tags, URI)"] = used(
        transact(chain, client, second))
    gas["ERC-8004 revokeFeedback"] = used(reputation.revoke_feedback(client, agent_id, 1))
    gas["ERC-8004 appendResponse"] = used(reputation.append_response(
        agent_owner, agent_id, client.address, 2, "ipfs://bafy-response"))
    return gas, sizes


def table(gas: dict[str, int], sizes: dict[str, int]) -> str:
    lines = [f"{'operation':<48} {'gas':>10}", "-" * 59]
    lines += [f"{name:<48} {used:>10,}" for name, used in gas.items()]
    lines += ["", f"{'size':<48} {'bytes':>10}", "-" * 59]
    lines += [f"{name:<48} {n:>10,}" for name, n in sizes.items()]
    return "\n".join(lines)


def main() -> int:
    with start_anvil(accounts=2) as chain:
        gas, sizes = measure(chain)
    print(table(gas, sizes))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "agents_gas",
        "note": "gasUsed of real transactions on anvil (cancun); views are eth_estimateGas",
        "gas": gas,
        "sizes_bytes": sizes,
    }, indent=2) + "\n")
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
