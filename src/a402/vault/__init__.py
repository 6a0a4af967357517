"""The Liquidity Vault: the client's side of Atomic Service Channels.

    from a402.vault import VaultConfig, VaultService, VaultStore, create_app, vault_enclave

- :mod:`a402.vault.tunnel`: the attested tunnel with one provider that
  drives the A402 exchange for the vault's channels (re-exported here);
- :mod:`a402.vault.service` (+ ``channels``, ``invoke``, ``funds``, ``worker``,
  ``store``, ``txjournal``): the vault service — accounts and deposits,
  channels opened on a client's first request, the paying proxy
  ``/v1/invoke``, cooperative close, recovery and the watchtower;
- :mod:`a402.vault.app`: its HTTP API; :mod:`a402.wire.vault_api`: the API's
  signing scheme and shapes, shared with the client (:mod:`a402.client.vault`).

The public API is :data:`__all__`. Attributes load lazily, so that importing
one submodule does not load the tunnel's I/O stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a402.lazy import lazy_attributes

if TYPE_CHECKING:
    from a402.vault.app import create_app
    from a402.vault.identity import vault_enclave
    from a402.vault.service import VaultConfig, VaultService
    from a402.vault.store import VaultBusy, VaultStore
    from a402.vault.tunnel import (
        Checkpoint,
        CheckpointReason,
        PaidResponse,
        PaymentPending,
        Persist,
        ProtocolViolation,
        ProviderRefused,
        ProviderTunnel,
        ProviderUnavailable,
        ResultMismatch,
        TunnelError,
        find_provider_force_close,
        recover_from_force_close,
    )


__all__ = [
    "Checkpoint",
    "CheckpointReason",
    "PaidResponse",
    "PaymentPending",
    "Persist",
    "ProtocolViolation",
    "ProviderRefused",
    "ProviderTunnel",
    "ProviderUnavailable",
    "ResultMismatch",
    "TunnelError",
    "VaultBusy",
    "VaultConfig",
    "VaultService",
    "VaultStore",
    "create_app",
    "find_provider_force_close",
    "recover_from_force_close",
    "vault_enclave",
]

_MODULE_OF = {
    **dict.fromkeys(__all__, "a402.vault.tunnel"),  # unless named below
    "VaultBusy": "a402.vault.store",
    "VaultConfig": "a402.vault.service",
    "VaultService": "a402.vault.service",
    "VaultStore": "a402.vault.store",
    "create_app": "a402.vault.app",
    "vault_enclave": "a402.vault.identity",
}


__getattr__, __dir__ = lazy_attributes(__name__, _MODULE_OF)
