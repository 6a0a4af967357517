"""Ethereum ECDSA recovery: one implementation, with the acceptance rule stated (pure).

Every signature a402 checks is 65 bytes ``r ‖ s ‖ v`` over a 32-byte digest, and
what it checks is the 20-byte address that signed. Who accepts which encodings
differs, and each checker must agree with the party on the other side, so the
rule is a :class:`RecoveryPolicy` every caller names:

=======================  ========================  =========  ================================
policy                   v accepted                high s     the other side it agrees with
=======================  ========================  =========  ================================
:data:`OPENZEPPELIN`     27, 28                    refused    OpenZeppelin's ``ECDSA.recover``
                                                              (the ASCManager: channel states,
                                                              ``σ_U``, channel opening; and
                                                              the enclave quotes)
:data:`EIP3009_TOKEN`    0, 1, 27, 28              refused    the EIP-3009 token contracts
                                                              (``exact``; 0/1 are sent as
                                                              27/28, see ``normalize_signature``)
:data:`ETH_ACCOUNT`      0, 1, 27, 28, 35 and up   accepted   eth_account's ``recover_message``
                         (parity of v − 35)                   (the vault API's request
                                                              signatures)
=======================  ========================  =========  ================================

In every policy ``r`` and ``s`` must be in ``[1, N)`` and the digest 32 bytes.
Refusing high ``s`` (EIP-2) matters wherever a signature's bytes must be unique:
accepting one would let anyone mint a second valid signature from a first. The
vault API accepts it because its requests are made unique by their nonce, not by
their signature's bytes, and it must accept exactly what eth_account signs and
recovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from coincurve import PublicKey

from a402.evm.keccak import keccak256

#: Order of the secp256k1 group.
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: The largest ``s`` EIP-2 (and OpenZeppelin) accept: ``N / 2``.
SECP256K1_HALF_N: Final = SECP256K1_N // 2


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Which 65-byte ``r ‖ s ‖ v`` signatures :func:`recover_address` accepts.

    ``v`` in {27, 28} is always accepted; ``r`` and ``s`` must be in ``[1, N)``.
    """

    #: Also ``v`` in {0, 1} (the raw recovery id).
    v_recovery_id: bool = False
    #: Also ``v`` of 35 and up (EIP-155 style): the recovery id is the parity of ``v - 35``.
    v_eip155: bool = False
    #: Also ``s`` above ``N / 2`` (which EIP-2 refuses).
    high_s: bool = False


#: OpenZeppelin's ``ECDSA.recover``: v in {27, 28}, low s.
OPENZEPPELIN: Final = RecoveryPolicy()
#: The EIP-3009 tokens' ``ecrecover`` with EIP-2: v in {0, 1, 27, 28}, low s.
EIP3009_TOKEN: Final = RecoveryPolicy(v_recovery_id=True)
#: eth_account's ``recover_message``: v in {0, 1, 27, 28} or 35 and up, high s too.
ETH_ACCOUNT: Final = RecoveryPolicy(v_recovery_id=True, v_eip155=True, high_s=True)


def public_key_address(public_key: PublicKey) -> bytes:
    """The 20-byte Ethereum address of a public key, as ``ecrecover`` returns it."""
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def _recovery_id(v: int, policy: RecoveryPolicy) -> int | None:
    if v in (27, 28):
        return v - 27
    if v in (0, 1) and policy.v_recovery_id:
        return v
    if v >= 35 and policy.v_eip155:
        return (v - 35) % 2
    return None


def recover_address(digest: bytes, signature: bytes, *, policy: RecoveryPolicy) -> bytes | None:
    """The 20-byte address that signed the 32-byte ``digest``, or None for a signature
    ``policy`` refuses (see the module docstring) or that recovers no key."""
    if len(digest) != 32 or len(signature) != 65:
        return None
    recovery_id = _recovery_id(signature[64], policy)
    if recovery_id is None:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        return None
    if s > SECP256K1_HALF_N and not policy.high_s:
        return None
    try:
        public = PublicKey.from_signature_and_message(
            signature[:64] + bytes((recovery_id,)), digest, hasher=None
        )
    except Exception:  # coincurve raises ValueError (or a bare Exception) for no point
        return None
    return public_key_address(public)
