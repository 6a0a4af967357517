"""Facilitator clients whose first ``/settle`` goes wrong in one known way, for the tests of
what a provider (HTTP middleware, MCP paywall, A2A agent) then does with the money.

Each talks to the real facilitator (anvil underneath, its journal): only what the
provider hears of the first settle is changed, never what the facilitator or the chain
did. ``settles`` lists the amount each settle asked (``""`` for ``exact``).
"""

from __future__ import annotations

from a402.facilitator.client import FacilitatorClient
from a402.wire.errors import SETTLEMENT_PENDING
from a402.wire.x402 import AnyPaymentPayload, AnyPaymentRequirements, SettleResponse


class _FirstSettleGoesWrong(FacilitatorClient):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settles: list[str] = []

    def _note(self, requirements: AnyPaymentRequirements) -> bool:
        """Record this settle's amount; True if it is the first."""
        self.settles.append(str(getattr(requirements, "amount", "")))
        return len(self.settles) == 1


class PendingWithoutAmountOnce(_FirstSettleGoesWrong):
    """The real facilitator settles (mined), but its first answer says only that the
    transaction is pending: no amount (optional in x402)."""

    async def settle(self, payload: AnyPaymentPayload,
                     requirements: AnyPaymentRequirements) -> SettleResponse:
        answer = await super().settle(payload, requirements)
        if self._note(requirements):
            return SettleResponse(success=False, error_reason=SETTLEMENT_PENDING,
                                  error_message="submitted, not confirmed yet",
                                  transaction=answer.transaction, network=answer.network,
                                  payer=answer.payer)
        return answer


class AnswerLostToAnErrorOnce(_FirstSettleGoesWrong):
    """The real facilitator settles (mined), but the first answer is lost to an error
    that is no facilitator error (a reset connection surfacing oddly, a bug in a proxy
    or in the client): the provider cannot know whether the money moved."""

    async def settle(self, payload: AnyPaymentPayload,
                     requirements: AnyPaymentRequirements) -> SettleResponse:
        answer = await super().settle(payload, requirements)
        if self._note(requirements):
            raise RuntimeError("connection reset after the settle")
        return answer


class RefusedAsMalformedOnce(_FirstSettleGoesWrong):
    """The first settle reaches the real facilitator as a request it cannot read (what a
    broken client, or a proxy mangling the body, sends): it answers HTTP 400 without
    looking at the payment, so nothing is settled. Later settles are the real ones."""

    async def settle(self, payload: AnyPaymentPayload,
                     requirements: AnyPaymentRequirements) -> SettleResponse:
        if self._note(requirements):
            await self._request("POST", "/settle", json={"x402Version": 2})
            raise AssertionError("the facilitator settled a request without a payment")
        return await super().settle(payload, requirements)
