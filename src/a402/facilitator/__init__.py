"""The x402 facilitator: verifies and settles ``exact`` payments on-chain, and its HTTP client.

    from a402.facilitator import Facilitator, SettlementStore, create_app

    app = create_app(Facilitator(chain, signer, SettlementStore("sqlite:///facilitator.db")))

The public API is :data:`__all__`. Attributes load lazily, so that a provider
importing :class:`FacilitatorClient` does not load the settling side (web3,
SQLAlchemy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a402.lazy import lazy_attributes

if TYPE_CHECKING:
    from a402.facilitator.app import create_app
    from a402.facilitator.client import (
        FacilitatorClient,
        FacilitatorError,
        FacilitatorUnavailable,
    )
    from a402.facilitator.core import Facilitator, FacilitatorConfig
    from a402.facilitator.store import SettlementStore

_MODULE_OF = {
    "Facilitator": "a402.facilitator.core",
    "FacilitatorClient": "a402.facilitator.client",
    "FacilitatorConfig": "a402.facilitator.core",
    "FacilitatorError": "a402.facilitator.client",
    "FacilitatorUnavailable": "a402.facilitator.client",
    "SettlementStore": "a402.facilitator.store",
    "create_app": "a402.facilitator.app",
}

__all__ = [
    "Facilitator",
    "FacilitatorClient",
    "FacilitatorConfig",
    "FacilitatorError",
    "FacilitatorUnavailable",
    "SettlementStore",
    "create_app",
]


__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
