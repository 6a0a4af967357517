"""secp256k1 building blocks shared by both Schnorr flavours.

Every point operation goes through libsecp256k1 (via coincurve), which is
constant-time for secret scalars and far faster than anything written in
Python. Only scalar arithmetic modulo the group order ``N`` is done with Python
integers; see the module docstring of :mod:`a402.crypto.schnorr` for what that
means for side channels.

Nothing here performs I/O; randomness comes from :func:`secrets.token_bytes`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from coincurve import PublicKey

#: Order of the secp256k1 group.
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Size of the secp256k1 base field.
P_FIELD = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
#: Largest x-coordinate an EVM-flavour public key may have: ``(N - 1) / 2``.
HALF_N = N >> 1

_EVEN = 0x02
_ODD = 0x03


@lru_cache(maxsize=64)
def _tag_prefix(tag: str) -> bytes:
    digest = hashlib.sha256(tag.encode()).digest()
    return digest + digest


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP-340 tagged hash ``SHA256(SHA256(tag) ‖ SHA256(tag) ‖ data)``.

    Tagging keeps hashes computed for one purpose (nonce, challenge, …) from
    ever being valid for another.
    """
    return hashlib.sha256(_tag_prefix(tag) + data).digest()


def int_from(data: bytes) -> int:
    return int.from_bytes(data, "big")


def b32(value: int) -> bytes:
    return value.to_bytes(32, "big")


def ct_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    return hmac.compare_digest(a, b)


def random_scalar() -> int:
    """A uniformly random non-zero scalar (rejection sampling, no modular bias)."""
    while True:
        k = int_from(secrets.token_bytes(32))
        if 0 < k < N:
            return k


def base_mul(k: int) -> PublicKey:
    """``k·G`` for ``0 < k < N`` (constant time in libsecp256k1)."""
    return PublicKey.from_valid_secret(b32(k))


def add(a: PublicKey, b: PublicKey) -> PublicKey | None:
    """``a + b``, or ``None`` when the sum is the point at infinity."""
    try:
        return PublicKey.combine_keys([a, b])
    except ValueError:
        return None


def negate(point: PublicKey) -> PublicKey:
    """``-point``: same x-coordinate, opposite y parity (flips the SEC1 prefix)."""
    encoded = point.format()
    return PublicKey(bytes([encoded[0] ^ 0x01]) + encoded[1:])


def parse_point(encoded: bytes) -> PublicKey | None:
    """Parse a 33-byte compressed point; ``None`` if it is not on the curve."""
    if len(encoded) != 33 or encoded[0] not in (_EVEN, _ODD):
        return None
    try:
        return PublicKey(encoded)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def lift_x(x_only: bytes) -> PublicKey | None:
    """The even-y point with the given x-coordinate (BIP-340 ``lift_x``).

    Cached because verifiers check many signatures by the same few keys (a
    vault verifies every pre-signature of a provider against one key).
    """
    if len(x_only) != 32 or int_from(x_only) >= P_FIELD:
        return None
    return parse_point(bytes([_EVEN]) + x_only)


def has_even_y(point: PublicKey) -> bool:
    return point.format()[0] == _EVEN


def sg_minus_ep(s: int, e: int, px: int, pubkey: PublicKey) -> PublicKey | None:
    """``s·G − e·P`` for the even-y key ``P`` with x-coordinate ``px``.

    This is the one double-scalar multiplication every Schnorr check needs. It
    runs as a single ECDSA public-key recovery inside libsecp256k1, the same
    trick the EVM verifier plays with ``ecrecover``: recovery returns
    ``r⁻¹·(σ·R − z·G)`` for the point ``R`` with x-coordinate ``r``; taking
    ``R = P``, ``r = px``, ``σ = −e·px`` and ``z = −s·px`` yields
    ``s·G − e·P``. That is one Strauss multi-multiplication instead of two
    separate multiplications and an addition (about 25 % faster).

    Returns ``None`` when the result is the point at infinity. Falls back to
    the explicit computation in the cases recovery cannot express
    (``e ≡ 0`` or ``px ≥ N``, both of negligible probability).
    """
    e %= N
    s %= N
    if e != 0 and px < N:
        recovery = b32(px) + b32(-e * px % N) + b"\x00"  # recid 0: R = P has even y
        try:
            return PublicKey.from_signature_and_message(recovery, b32(-s * px % N), hasher=None)
        except ValueError:
            return None
    if s == 0:
        return None if e == 0 else pubkey.multiply(b32(N - e))
    sg = base_mul(s)
    if e == 0:
        return sg
    return add(sg, pubkey.multiply(b32(N - e)))
