"""An enclave across restarts: its simulated platform and its sealed identity.

A restarted service must come back as *the same enclave*: what it sealed opens
only for the same measurement on the same platform, and its peers pin its
attested key (a provider's key is every channel's ``providerKey``). So an
enclave's keys are exported sealed (``export_sealed``) once, on first start,
and restored from that record afterwards. Where the record lives is the
caller's choice (the vault's database, the provider's identity file).

The simulated backend's platform (its attestation root and sealing secret)
stands in for the CPU; it lives in a file only the operator can read. A
hardware backend would take neither file nor root: its platform is the chip.
:func:`peer_verifiers` is the other half a command-line service needs: whom
it accepts as a peer enclave.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .chains import require_development_chain
from .enclave import DEFAULT_PURPOSES, AttestationVerifier
from .nitro import AWS_NITRO_ROOT_G1_SHA256, NitroVerifier, load_root
from .simulated import SimulatedEnclave, SimulatedPlatform, SimulatedVerifier, SimulationRoot


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


def peer_verifiers(platform: SimulatedPlatform, trust_roots: Sequence[bytes],
                   nitro_root: str | Path | None, *, chain_id: int,
                   nitro_root_sha256: str | None = AWS_NITRO_ROOT_G1_SHA256
                   ) -> list[AttestationVerifier]:
    """The verifiers of one attestation policy, chosen by this side, never by the peer.

    With ``nitro_root`` (a PEM file): AWS Nitro documents chaining to that root, and
    nothing else, so a peer cannot fall back to a weaker kind. The root must be the
    one whose SHA-256 fingerprint is ``nitro_root_sha256`` (by default AWS's published
    root; ``None`` accepts any, for a test PKI). Without it: simulated quotes signed
    by the first of ``trust_roots`` (default: ``platform``'s own root), and only on a
    development chain (:func:`~a402.tee.chains.require_development_chain`).
    Raises ``OSError``/``ValueError`` for a root that cannot be read or is not the
    pinned one, :class:`~a402.tee.AttestationError` for a simulation on a public chain.
    """
    if nitro_root:
        pem = Path(nitro_root).read_bytes()
        fingerprint = hashlib.sha256(
            load_root(pem).public_bytes(serialization.Encoding.DER)).hexdigest()
        if nitro_root_sha256 is not None and not hmac.compare_digest(
                fingerprint, nitro_root_sha256.lower()):
            raise ValueError(f"its SHA-256 fingerprint is {fingerprint}, not the pinned "
                             f"{nitro_root_sha256} (the AWS Nitro root unless told otherwise)")
        return [NitroVerifier(pem)]
    require_development_chain(chain_id)
    root = trust_roots[0] if trust_roots else platform.root.public_key
    return [SimulatedVerifier(root, allow_simulated=True)]


def restore_or_launch(
    platform: SimulatedPlatform,
    measurement: bytes,
    *,
    recorded: Callable[[], bytes | None],
    record_once: Callable[[bytes], bytes],
    allowed_purposes: Iterable[str] = DEFAULT_PURPOSES,
) -> SimulatedEnclave:
    """The enclave whose sealed identity ``recorded()`` returns, or a new one recorded once.

    ``record_once(sealed)`` stores a fresh identity unless one is already
    there, and returns the one stored: two processes starting at once end up
    as the same enclave. Raises :class:`~a402.tee.SealingError` if the record
    was sealed for another measurement or on another platform.
    """
    purposes = frozenset(allowed_purposes)
    sealed = recorded()
    if sealed is None:
        launched = platform.launch(measurement, allowed_purposes=purposes)
        sealed = record_once(launched.export_sealed())
    return platform.restore(measurement, sealed, allowed_purposes=purposes)


def create_file_once(path: str | Path, blob: bytes) -> bytes:
    """Write ``blob`` to ``path`` (mode 0600) unless it exists; return what ``path`` holds.

    The blob is written to a temporary file first and hard-linked into place,
    so ``path`` never holds half a blob and a concurrent writer loses cleanly.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return target.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return blob
