"""EIP-3009 ``receiveWithAuthorization``: the typed data a depositor signs (pure).

A deposit that moves by the depositor's signature alone, pulled by the contract it
names as ``to`` (so nobody can front-run it into a plain transfer). The ASCManager
opens wallet-funded channels with it, and the vault-mode contract takes deposits with
it; both build the same EIP-712 message from this one type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from a402.evm.address import to_checksum

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
