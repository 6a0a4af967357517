"""The Liquidity Vault: the client's side of Atomic Service Channels.

- :mod:`a402.vault.tunnel`: the attested tunnel with one provider that
  drives the A402 exchange for the vault's channels (re-exported here);
- :mod:`a402.vault.service` (+ ``channels``, ``invoke``, ``funds``, ``worker``,
  ``store``, ``txjournal``): the vault service — accounts and deposits,
  channels opened on a client's first request, the paying proxy
  ``/v1/invoke``, cooperative close, recovery and the watchtower;
- :mod:`a402.vault.app`: its HTTP API; :mod:`a402.wire.vault_api`: the API's
  signing scheme and shapes, shared with the client (:mod:`a402.client.vault`).

Attributes load lazily, so that importing one submodule does not load the
tunnel's I/O stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_TUNNEL_NAMES = (
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
    "find_provider_force_close",
    "recover_from_force_close",
)

__all__ = list(_TUNNEL_NAMES)


def __getattr__(name: str) -> Any:
    if name in _TUNNEL_NAMES:
        return getattr(importlib.import_module("a402.vault.tunnel"), name)
    raise AttributeError(f"module 'a402.vault' has no attribute {name!r}")
