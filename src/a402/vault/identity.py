"""The vault enclave across restarts: its platform and its sealed identity.

A restarted vault must come back as *the same enclave*: the sealed channel
snapshots and answers in its database open only for the same measurement on
the same platform, and providers pin the vault's measurement. So the enclave's
keys are exported sealed (``export_sealed``) into the vault's own database on
first start, and restored from there afterwards.

The simulated backend's platform (its attestation root and sealing secret)
stands in for the CPU; it lives in a file only the operator can read. A
hardware backend would take neither file nor root: its platform is the chip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from a402.tee import SimulatedEnclave, SimulatedPlatform, SimulationRoot

from .store import VaultStore

_IDENTITY = "enclave_identity"


def load_platform(path: str | Path, *, create: bool = True) -> SimulatedPlatform:
    """The simulated platform in ``path`` (JSON: root seed, seal secret), created if missing."""
    file = Path(path)
    if not file.exists():
        if not create:
            raise FileNotFoundError(f"no simulated platform file at {file}")
        platform = SimulatedPlatform.generate()
        save_platform(platform, file)
        return platform
    data = json.loads(file.read_text())
    return SimulatedPlatform(SimulationRoot.from_private_bytes(bytes.fromhex(data["root"])),
                             bytes.fromhex(data["sealSecret"]))


def save_platform(platform: SimulatedPlatform, path: str | Path) -> None:
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"root": platform.root.private_bytes().hex(),
                   "sealSecret": platform.seal_secret.hex(),
                   "rootPublicKey": platform.root.public_key.hex()}, out)


def vault_enclave(
    platform: SimulatedPlatform, measurement: bytes, store: VaultStore
) -> SimulatedEnclave:
    """This vault's enclave: restored from the store, or launched and recorded there once.

    Replicas of one vault share the database and so the identity; another vault
    must have a database (or schema) of its own — :class:`VaultStore` refuses to
    serve two vault addresses.
    """
    sealed = store.get_meta(_IDENTITY)
    if sealed is None:
        launched = platform.launch(measurement)
        sealed = store.put_meta(_IDENTITY, launched.export_sealed(), only_if_absent=True)
    return platform.restore(measurement, sealed)
