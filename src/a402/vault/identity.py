"""The vault enclave across restarts: its platform and its sealed identity.

A restarted vault must come back as *the same enclave*: the sealed channel
snapshots and answers in its database open only for the same measurement on
the same platform, and providers pin the vault's measurement. So the enclave's
keys are exported sealed (``export_sealed``) into the vault's own database on
first start, and restored from there afterwards (:mod:`a402.tee.identity`,
which also keeps the simulated platform's file).
"""

from __future__ import annotations

from a402.tee import SimulatedEnclave, SimulatedPlatform
from a402.tee.identity import load_platform, restore_or_launch, save_platform

from .store import VaultStore

__all__ = ["load_platform", "save_platform", "vault_enclave"]

_IDENTITY = "enclave_identity"


def vault_enclave(
    platform: SimulatedPlatform, measurement: bytes, store: VaultStore
) -> SimulatedEnclave:
    """This vault's enclave: restored from the store, or launched and recorded there once.

    Replicas of one vault share the database and so the identity, and serialize on
    its enclave's ledger row (:mod:`a402.vault.ledger`); two live instances of one
    identity that do not share the database keep two ledgers — a rollback, which
    sealed state cannot prevent. Another vault must have a database (or schema) of
    its own — :class:`VaultStore` refuses to serve two vault addresses.
    """
    return restore_or_launch(
        platform, measurement, recorded=lambda: store.get_meta(_IDENTITY),
        record_once=lambda sealed: store.put_meta(_IDENTITY, sealed, only_if_absent=True))
