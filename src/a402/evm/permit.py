"""EIP-2612 ``permit``: the digest a token holder signs to set an allowance (pure).

A key that never sends transactions (a vault enclave's, whose host pays the
gas) cannot call ``approve``; it signs ``Permit(owner, spender, value, nonce,
deadline)`` in the token's EIP-712 domain instead, and anyone submits
``permit(owner, spender, value, deadline, v, r, s)``. USDC (FiatTokenV2) and
TestUSDC use the standard domain ``(name, version, chainId, verifyingContract)``;
the nonce is the token's ``nonces(owner)``, so a permit is good once.
"""

from __future__ import annotations

from typing import Final

from a402.evm.address import address_bytes
from a402.evm.keccak import keccak256

EIP712_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
PERMIT_TYPEHASH: Final = keccak256(
    b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str | bytes) -> bytes:
    return bytes(12) + address_bytes(address)


def token_domain_separator(name: str, version: str, chain_id: int, token: str | bytes) -> bytes:
    """The EIP-712 domain separator of a token with this name and version."""
    return keccak256(
        EIP712_DOMAIN_TYPEHASH
        + keccak256(name.encode())
        + keccak256(version.encode())
        + _word(chain_id)
        + _address_word(token)
    )


def permit_digest(
    *,
    token_name: str,
    token_version: str,
    chain_id: int,
    token: str | bytes,
    owner: str | bytes,
    spender: str | bytes,
    value: int,
    nonce: int,
    deadline: int,
) -> bytes:
    """The 32-byte digest ``owner`` signs (plain ECDSA) to permit ``spender`` ``value``."""
    struct = keccak256(
        PERMIT_TYPEHASH
        + _address_word(owner)
        + _address_word(spender)
        + _word(value)
        + _word(nonce)
        + _word(deadline)
    )
    separator = token_domain_separator(token_name, token_version, chain_id, token)
    return keccak256(b"\x19\x01" + separator + struct)
