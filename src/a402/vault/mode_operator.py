"""The operator's read-only view of a vault in vault mode, behind the operator token
(``a402 vault --mode vault --operator-token …``), as the standard vault's operator API is
(:mod:`a402.observe`): ``GET /operator/vault`` and ``GET /metrics``.

``/operator/vault`` answers what ``a402 vault status`` shows, summed: the accounts (how many,
and the totals free, locked, pending, unconfirmed), what the contract holds, the open
channels, the pending settlements (payouts queued and their sum, settlements signed and not
landed yet), the last settlement landed (epoch, transaction, payees, block), the payouts
dropped, and who holds the lease. A standby replica answers ``503 vault_standby`` with the
lease's holder. No participant's address nor any channel is listed (the signed
``GET /v1/vault/status``, for the operator's key, lists them).

Safety: it only reads; the token check is :class:`~a402.observe.Observer`'s (404 when no
token is configured, 401 without it or with another one), and the ledger's figures are read
only once what the enclave holds is stored (:meth:`VaultModeService.status`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp

from a402.observe import Observer, OperatorRoutes
from a402.wire import vault_api as api

from .lease import Lease
from .mode import VaultModeError, VaultModeService

VAULT_PATH = "/operator/vault"


def operator_summary(status: dict[str, Any]) -> dict[str, Any]:
    """The operator view of one :meth:`VaultModeService.status` answer."""
    pending = status["pendingPayouts"]
    channels = status["channels"]
    return {
        "mode": "vault", "role": "active", "vault": status["vault"],
        "a402Vault": status["a402Vault"], "leaseHolder": status["leaseHolder"],
        "accounts": {"count": len(status["accounts"]), **status["totals"]},
        "onChain": status["onChain"],
        "openChannels": sum(1 for c in channels if c["status"] != "closed"),
        "pendingSettlements": {
            "payouts": len(pending), "amount": str(sum(int(p["amount"]) for p in pending)),
            "signedNotLanded": len(status["unlanded"])},
        "epoch": status["epoch"], "landedEpoch": status["landedEpoch"],
        "lastSettlement": status["lastSettlement"],
        "droppedPayouts": len(status["droppedPayouts"]), "broken": status["broken"],
    }


def with_operator_api(app: ASGIApp, observer: Observer,
                      service_of: Callable[[], VaultModeService | None],
                      lease: Lease | None = None) -> ASGIApp:
    """``app`` with ``/operator/vault`` and ``/metrics`` in front (behind the token).
    ``service_of``: the service this process serves now (None: a standby)."""

    async def vault_view() -> tuple[int, dict[str, Any]]:
        service = service_of()
        if service is None:
            holder = None if lease is None else await asyncio.to_thread(lease.current)
            return 503, {"error": api.VAULT_STANDBY, "role": "standby",
                         "message": "this replica is not the active one",
                         "leaseHolder": None if holder is None or holder.expired
                         else holder.holder, "active": None if holder is None
                         or holder.expired else holder.url}
        try:
            summary = operator_summary(await asyncio.to_thread(service.status))
        except VaultModeError as e:  # broken: the ledger ran ahead of the store (no figures)
            return e.status, {**e.body(), "role": "active", "broken": service.broken}
        if lease is not None:  # the lease row's name for this replica, as a standby reports it
            summary["leaseHolder"] = lease.holder
        return 200, summary

    return OperatorRoutes(app, observer, list_payments=None, get_payment=None,
                          views={VAULT_PATH: vault_view})


__all__ = ["VAULT_PATH", "operator_summary", "with_operator_api"]
