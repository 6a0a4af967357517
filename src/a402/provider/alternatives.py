"""Other schemes a priced route can be paid with, listed after ``exact`` in its 402.

:class:`~a402.provider.middleware.PaymentMiddleware` charges with ``exact`` and knows
nothing else; a component that takes another scheme for the same routes (the A402
channels: :class:`~a402.provider.a402_payments.A402Payments`) adds itself to the
middleware's ``alternatives``, and every 402 the middleware sends then lists that
scheme's requirement after ``exact``, in both protocol versions. The middleware only
asks for the entries; serving a payment in another scheme is that component's job
(it routes its own requests before they reach the middleware).
"""

from __future__ import annotations

from typing import Protocol

from a402.wire.x402 import PaymentRequirements, PaymentRequirementsV1, ResourceInfo


class AlternativeScheme(Protocol):
    """A further entry of ``accepts`` for one priced request."""

    def requirement(
        self, amount: int, base_url: str, *, max_timeout_seconds: int
    ) -> PaymentRequirements:
        """The x402 v2 entry for a route priced ``amount`` atomic units.

        ``base_url`` is how clients reach this service (``public_url``, else what the
        request addressed: scheme, host and mount point).
        """
        ...

    def requirement_v1(
        self, amount: int, base_url: str, *, network_v1: str, resource: ResourceInfo,
        max_timeout_seconds: int,
    ) -> PaymentRequirementsV1:
        """The x402 v1 entry: the same terms, with the v1 fields ``exact``'s entry has."""
        ...
