"""Agents: A2A with x402 payments, on-chain AgentCards, ERC-8004, discovery.

    from a402.agents import PaidAgent, PayingAgentClient, Skill, discover

Kept import-light on purpose: the A2A modules pull in ``a2a-sdk`` (protobuf,
starlette) and the on-chain modules pull in web3, and neither should be paid
for by code that only needs the other. So the public API (:data:`__all__`)
loads lazily: each name imports only its own module, on first use.
(:class:`Skill` is an A2A skill, as a paid agent advertises it and an on-chain card
holds it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a402.lazy import lazy_attributes

if TYPE_CHECKING:
    from a402.agents.a2a_card import CardError, CardMismatch, UnknownAgent
    from a402.agents.a2a_client import (
        A2APaymentFailed,
        A2AProtocolError,
        DiscoveredAgent,
        PaidResult,
        PayingAgentClient,
        PaymentUnresolved,
        discover,
    )
    from a402.agents.a2a_provider import PaidAgent
    from a402.agents.card import OnchainCard, Skill
    from a402.agents.onchain import AgentSuite

_MODULE_OF = {
    "A2APaymentFailed": "a402.agents.a2a_client",
    "A2AProtocolError": "a402.agents.a2a_client",
    "AgentSuite": "a402.agents.onchain",
    "CardError": "a402.agents.a2a_card",
    "CardMismatch": "a402.agents.a2a_card",
    "DiscoveredAgent": "a402.agents.a2a_client",
    "OnchainCard": "a402.agents.card",
    "PaidAgent": "a402.agents.a2a_provider",
    "PaidResult": "a402.agents.a2a_client",
    "PayingAgentClient": "a402.agents.a2a_client",
    "PaymentUnresolved": "a402.agents.a2a_client",
    "Skill": "a402.agents.card",
    "UnknownAgent": "a402.agents.a2a_card",
    "discover": "a402.agents.a2a_client",
}

__all__ = [
    "A2APaymentFailed",
    "A2AProtocolError",
    "AgentSuite",
    "CardError",
    "CardMismatch",
    "DiscoveredAgent",
    "OnchainCard",
    "PaidAgent",
    "PaidResult",
    "PayingAgentClient",
    "PaymentUnresolved",
    "Skill",
    "UnknownAgent",
    "discover",
]


__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
