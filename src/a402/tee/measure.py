"""Code measurement for the simulated backend: a PCR-like digest of source files.

A hardware TEE measures the enclave image as it loads it (Nitro: PCR0 over
the EIF). The simulation has no loader, so it measures what would be the
enclave's code: SHA-384 over every matching file under a directory, in a
canonical order, with each path and length hashed in so files cannot be
renamed or re-split without changing the result. The value is as good as the
process computing it is honest, which in the simulation it need not be;
what it does give is a measurement that changes whenever the code does, so
that policies pinning measurements behave as they would in production.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_DOMAIN = b"A402/measurement/v1\x00"


def measure_tree(root: str | Path, pattern: str = "**/*.py") -> bytes:
    """48-byte SHA-384 measurement of the files under ``root`` matching ``pattern``."""
    base = Path(root)
    digest = hashlib.sha384(_DOMAIN)
    files = sorted(
        (p for p in base.glob(pattern) if p.is_file() and "__pycache__" not in p.parts),
        key=lambda p: p.relative_to(base).as_posix(),
    )
    for path in files:
        name = path.relative_to(base).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.digest()


def measure_package() -> bytes:
    """The measurement of the installed ``a402`` package's Python sources."""
    import a402

    return measure_tree(Path(a402.__file__).parent)
