"""Signing for Taproot spends with the project's BIP-340 code (libsecp256k1 via coincurve).

Script-path signatures are plain BIP-340 signatures (or adaptor pre-signatures) by the leaf's
key over the BIP-341 sighash. A key-path signature is by the *tweaked* key (BIP-341
``taproot_tweak_seckey``): ``d' = ±d + hash_TapTweak(P ‖ merkle_root)``, with ``d`` negated
when ``d·G`` has odd ``y``; no library installed here exposes that step on a raw secret, so it
is written out (and checked against the BIP-341 vectors' ``tweakedPrivkey``).
"""

from __future__ import annotations

from a402.crypto import BIP340, SecretKey
from a402.crypto._secp import N, b32, int_from, tagged_hash


def tweak(internal_key: bytes, merkle_root: bytes) -> int:
    """BIP-341's ``t = int(hash_TapTweak(P ‖ merkle_root))``, refused if ``t ≥ n``."""
    value = int_from(tagged_hash("TapTweak", internal_key + merkle_root))
    if value >= N:
        raise ValueError("tap tweak out of range")
    return value


def tweaked_secret(secret: bytes | SecretKey, merkle_root: bytes) -> SecretKey:
    """The secret key of the output key ``P + t·G`` (BIP-341 ``taproot_tweak_seckey``)."""
    key = BIP340.secret_key(secret)  # d with even-y public key, i.e. already ±d
    d = (int_from(key.to_bytes()) + tweak(key.public_key, merkle_root)) % N
    if d == 0:
        raise ValueError("tweaked secret is zero")
    return BIP340.secret_key(b32(d))


def sign_key_path(
    secret: bytes | SecretKey, merkle_root: bytes, sighash: bytes, *, aux_rand: bytes | None = None
) -> bytes:
    """A key-path signature (64 bytes, SIGHASH_DEFAULT) by the tweaked key."""
    return BIP340.sign(tweaked_secret(secret, merkle_root), sighash, aux_rand=aux_rand)


def sign_script_path(
    secret: bytes | SecretKey, sighash: bytes, *, aux_rand: bytes | None = None
) -> bytes:
    """A tapscript signature (64 bytes, SIGHASH_DEFAULT) by an untweaked leaf key."""
    return BIP340.sign(secret, sighash, aux_rand=aux_rand)
