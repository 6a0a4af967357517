"""EIP-3009 ``receiveWithAuthorization``: the typed data a depositor signs (pure).

A deposit that moves by the depositor's signature alone, pulled by the contract it
names as ``to`` (so nobody can front-run it into a plain transfer). The ASCManager
opens wallet-funded channels with it, and the vault-mode contract takes deposits and
pulled deposits with it; all build the same EIP-712 message from this one type
(:func:`sign_receive_authorization` from the token's name and version,
:func:`receive_authorization_digest` from its ``DOMAIN_SEPARATOR()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from a402.evm.address import address_bytes, to_checksum
from a402.evm.keccak import keccak256

RECEIVE_WITH_AUTHORIZATION_TYPES: Final = {
    "ReceiveWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}

RECEIVE_WITH_AUTHORIZATION_TYPEHASH: Final = keccak256(
    b"ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)")


def receive_authorization_digest(
    domain_separator: bytes, *, payer: str, to: str, value: int, valid_after: int,
    valid_before: int, nonce: bytes,
) -> bytes:
    """The EIP-712 digest ``payer`` signs for a ``receiveWithAuthorization`` in the token
    whose domain separator is ``domain_separator`` (the token's ``DOMAIN_SEPARATOR()``)."""
    if len(domain_separator) != 32 or len(nonce) != 32:
        raise ValueError("a domain separator and a nonce are 32 bytes")
    for what, n in (("value", value), ("validAfter", valid_after),
                    ("validBefore", valid_before)):
        if not 0 <= n < 1 << 256:
            raise ValueError(f"{what} is a uint256")
    struct = keccak256(
        RECEIVE_WITH_AUTHORIZATION_TYPEHASH
        + bytes(12) + address_bytes(payer) + bytes(12) + address_bytes(to)
        + value.to_bytes(32, "big") + valid_after.to_bytes(32, "big")
        + valid_before.to_bytes(32, "big") + bytes(nonce))
    return keccak256(b"\x19\x01" + bytes(domain_separator) + struct)


@dataclass(frozen=True, slots=True)
class ReceiveAuthorization:
    """A signed ``receiveWithAuthorization``: its validity window and signature (its
    ``from``, ``to``, ``value`` and ``nonce`` are the contract call's other arguments)."""

    valid_after: int
    valid_before: int
    v: int
    r: bytes
    s: bytes

    def as_tuple(self) -> tuple[int, int, int, bytes, bytes]:
        """The ``(validAfter, validBefore, v, r, s)`` struct the contracts take."""
        return (self.valid_after, self.valid_before, self.v, self.r, self.s)

    @classmethod
    def of_signature(cls, valid_after: int, valid_before: int, signature: bytes
                     ) -> ReceiveAuthorization:
        """From a 65-byte ``r ‖ s ‖ v`` signature (v as 0/1 or 27/28)."""
        v = signature[64] if signature[64] >= 27 else signature[64] + 27
        return cls(valid_after, valid_before, v, signature[:32], signature[32:64])


def sign_receive_authorization(
    payer: LocalAccount, *, token_name: str, token_version: str, chain_id: int, token: str,
    to: str, value: int, valid_after: int, valid_before: int, nonce: bytes,
) -> ReceiveAuthorization:
    """``payer``'s EIP-3009 ``receiveWithAuthorization`` of ``value`` to the contract ``to``
    (the only one that can use it) with ``nonce``, which that contract binds to what the
    deposit is for."""
    signed = payer.sign_message(encode_typed_data(
        domain_data={"name": token_name, "version": token_version, "chainId": chain_id,
                     "verifyingContract": to_checksum(token)},
        message_types=RECEIVE_WITH_AUTHORIZATION_TYPES,
        message_data={"from": payer.address, "to": to_checksum(to), "value": value,
                      "validAfter": valid_after, "validBefore": valid_before,
                      "nonce": nonce},
    ))
    return ReceiveAuthorization(valid_after, valid_before, signed.v,
                                signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))
