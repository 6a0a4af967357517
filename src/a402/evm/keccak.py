"""Keccak-256 as the EVM computes it (the original Keccak padding, not NIST SHA3-256).

A paid request hashes some thirty times on each side (EIP-712 digests, addresses
of recovered keys, request and result commitments), so the per-call cost matters:
safe-pysha3's C implementation takes about 1 µs for a short input, pycryptodome's
(the backend eth-hash picks first) about 6 µs, most of it call overhead. Where
safe-pysha3 is not installed (it is a Linux-only dependency of this package), the
eth-hash backend gives the same digests.
"""

from __future__ import annotations

from collections.abc import Callable

# One declared type for both backends; eth-hash accepts only bytes and bytearray.
keccak256: Callable[[bytes | bytearray], bytes]

try:
    from sha3 import keccak_256 as _keccak_256
except ImportError:  # pragma: no cover - exercised on platforms without safe-pysha3
    from eth_hash.auto import keccak as keccak256
else:

    def _pysha3_keccak256(data: bytes | bytearray) -> bytes:
        """The 32-byte Keccak-256 digest of ``data``."""
        digest: bytes = _keccak_256(data).digest()
        return digest

    keccak256 = _pysha3_keccak256


__all__ = ["keccak256"]
