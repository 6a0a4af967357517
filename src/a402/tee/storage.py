"""Thin file I/O for sealed blobs; the cryptography stays in :mod:`a402.tee.sealing`.

Blobs are already encrypted and authenticated, so files need no secrecy of
their own; what matters is that a crash never leaves a half-written blob in
place of the last good one. Writes go to a temporary file in the same
directory, are flushed to disk, then atomically renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_sealed(path: str | Path, blob: bytes) -> None:
    """Atomically replace ``path`` with ``blob`` (mode 0600)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def read_sealed(path: str | Path) -> bytes:
    """The blob stored at ``path`` (open it with the enclave that sealed it)."""
    return Path(path).read_bytes()
