"""Ethereum primitives every layer shares: Keccak-256, addresses, ECDSA recovery (pure).

The bottom layer: it imports nothing else of a402, and does no network, database or
chain I/O. :mod:`a402.evm.address` is the one way to parse, checksum and compare an
address; :mod:`a402.evm.ecdsa` the one ECDSA recovery, each caller naming its
acceptance rule (:class:`~a402.evm.ecdsa.RecoveryPolicy`); :mod:`a402.evm.permit`
the EIP-2612 digest a key that never sends signs to grant an allowance, and
:mod:`a402.evm.eip3009` the EIP-3009 type a depositor signs.
"""

from a402.evm.address import address_bytes, address_key, is_address, same_address, to_checksum
from a402.evm.ecdsa import (
    EIP3009_TOKEN,
    ETH_ACCOUNT,
    OPENZEPPELIN,
    RecoveryPolicy,
    public_key_address,
    recover_address,
)
from a402.evm.keccak import keccak256

__all__ = [
    "EIP3009_TOKEN",
    "ETH_ACCOUNT",
    "OPENZEPPELIN",
    "RecoveryPolicy",
    "address_bytes",
    "address_key",
    "is_address",
    "keccak256",
    "public_key_address",
    "recover_address",
    "same_address",
    "to_checksum",
]
