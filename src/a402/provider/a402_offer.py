"""The ``a402`` entry of a 402's ``accepts``: how a payer finds and checks this provider.

Listed after ``exact`` for every priced route, in both protocol versions
(:mod:`a402.provider.alternatives`). ``extra`` names the endpoint
(``…/.well-known/a402``), the ASCManager, the provider's Schnorr key, the
dispute window and timeouts, and the attestation a vault must verify before it
opens a channel: the offer itself is unauthenticated, the vault trusts only
what the attestation binds (the key, the address and the ASCManager, checked
against ``…/info``'s evidence for its own nonce).
"""

from __future__ import annotations

from typing import Any

from a402.evm.address import to_checksum
from a402.provider.a402_runtime import ProviderRuntime
from a402.wire.a402 import SCHEME_A402, WELL_KNOWN_PREFIX
from a402.wire.x402 import PaymentRequirements, PaymentRequirementsV1, ResourceInfo


class A402Offer:
    """The ``a402`` requirements of ``runtime``'s provider."""

    def __init__(self, runtime: ProviderRuntime) -> None:
        self.runtime = runtime

    def requirement(
        self, amount: int, base_url: str, *, max_timeout_seconds: int
    ) -> PaymentRequirements:
        """The ``a402`` entry of ``accepts`` for one priced route (x402 v2 form)."""
        return PaymentRequirements(
            scheme=SCHEME_A402, network=self.runtime.network, amount=str(amount),
            asset=to_checksum(self.runtime.manager.token),
            pay_to=to_checksum("0x" + self.runtime.provider_address.hex()),
            max_timeout_seconds=max_timeout_seconds, extra=self._extra(base_url),
        )

    def requirement_v1(
        self, amount: int, base_url: str, *, network_v1: str, resource: ResourceInfo,
        max_timeout_seconds: int,
    ) -> PaymentRequirementsV1:
        """The ``a402`` entry of a v1 ``accepts``: with the ``description`` and
        ``mimeType`` the v1 schema requires (``""`` when the route states none, as
        the official SDK's server sends), like the ``exact`` entry next to it."""
        return PaymentRequirementsV1(
            scheme=SCHEME_A402, network=network_v1, max_amount_required=str(amount),
            resource=resource.url, description=resource.description or "",
            mime_type=resource.mime_type or "",
            pay_to=to_checksum("0x" + self.runtime.provider_address.hex()),
            max_timeout_seconds=max_timeout_seconds,
            asset=to_checksum(self.runtime.manager.token), extra=self._extra(base_url),
        )

    def _extra(self, base_url: str) -> dict[str, Any]:
        runtime = self.runtime
        endpoint = base_url.rstrip("/") + WELL_KNOWN_PREFIX
        extra = {
            "endpoint": endpoint,
            "ascManager": runtime.manager.address,
            "providerKey": "0x" + runtime.provider_key.hex(),
            "disputeWindow": runtime.manager.dispute_window,
            "lockTimeout": runtime.config.timeouts.lock_timeout,
            "ackTimeout": runtime.config.timeouts.ack_timeout,
            "attestation": {
                "kind": runtime.enclave.kind,
                "measurement": "0x" + runtime.enclave.measurement.hex(),
                "evidence": endpoint + "/info?nonce=<hex>",
            },
        }
        if runtime.vault_contract is not None:  # vault-mode channels of this A402Vault too
            extra["a402Vault"] = runtime.vault_contract.address
        return extra


__all__ = ["A402Offer"]
