"""What an operator may tune in a facilitator: :class:`FacilitatorConfig`, one
``a402 facilitator`` flag per field (:mod:`a402.settings`).

Kept apart from :mod:`a402.facilitator.core` so that building the command line does not
load the facilitator's chain and database code.
"""

from __future__ import annotations

from dataclasses import dataclass

from a402.settings import setting

__all__ = ["FacilitatorConfig"]


@dataclass(frozen=True)
class FacilitatorConfig:
    """How long the facilitator waits for the chain, and how much gas it offers."""

    receipt_timeout: float = setting(
        20.0, help="seconds /settle waits for a receipt before answering pending")
    """How long ``/settle`` waits for a receipt before answering ``settlement_pending``."""
    claim_timeout: float = setting(
        10.0, help="seconds after which a settlement claim with no journaled transaction "
                   "is presumed dead and taken over")
    """A claim this old with no journaled transaction belongs to a dead call: the next
    identical request (or the reconciler) takes it over. A live holder needs a few
    RPC calls between claiming and journaling; should it be slower than this, taking
    its claim over costs time, never money (``SettlementStore.record_submission``)."""
    gas_margin: float = setting(
        1.25, help="a settlement transaction's gas limit is its gas estimate times this")
