"""The provider enclave across restarts: its sealed identity in a file.

The provider enclave's attested Schnorr key is every channel's ``providerKey``
on-chain: a restarted gateway that came back with a new key could not
pre-sign for, nor close, the channels it had opened. So the key is exported
sealed on first start into the identity file (mode 0600) and restored from it
afterwards; it opens only for the same measurement on the same platform
(:mod:`a402.tee.identity`, which also keeps the simulated platform's file).
"""

from __future__ import annotations

from pathlib import Path

from a402.tee import PROVIDER_PURPOSES, SimulatedEnclave, SimulatedPlatform
from a402.tee.identity import create_file_once, load_platform, restore_or_launch

__all__ = ["load_platform", "provider_enclave"]


def provider_enclave(
    platform: SimulatedPlatform, measurement: bytes, path: str | Path
) -> SimulatedEnclave:
    """This provider's enclave (``PROVIDER_PURPOSES``): restored from ``path``, or launched
    and written there once. Raises :class:`~a402.tee.SealingError` if ``path`` was sealed
    for another measurement or on another platform."""
    file = Path(path)
    return restore_or_launch(
        platform, measurement, allowed_purposes=PROVIDER_PURPOSES,
        recorded=lambda: file.read_bytes() if file.exists() else None,
        record_once=lambda sealed: create_file_once(file, sealed))
