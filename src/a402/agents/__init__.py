"""Agents: A2A with x402 payments, on-chain AgentCards, ERC-8004, discovery.

Kept import-light on purpose: the A2A modules pull in ``a2a-sdk`` (protobuf,
starlette) and the on-chain modules pull in web3, and neither should be paid
for by code that only needs the other. Import the submodules directly:

    from a402.agents.a2a_provider import PaidAgent
    from a402.agents.a2a_client import PayingAgentClient, discover
"""
