"""The chain side of x402 ``exact`` on EVM: simulate and submit EIP-3009 transfers.

Verification asks the token itself, through an ``eth_call`` of the very call
settlement will make. One round trip answers every question the offline checks
cannot (nonce unused, balance, EIP-1271 signature, the block's own clock),
instead of a simulation followed by separate diagnostic calls; the token's
revert string says which check failed. Settlement uses ``eth_estimateGas`` of
the same call, which simulates again and yields the gas limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from a402.chain.node import Chain
from a402.chain.rpc import Reverted, as_int, rpc
from a402.wire import errors as wire_errors

_VRS = keccak(
    text="transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)[:4]
_BYTES = keccak(
    text="transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
)[:4]
_AUTH_STATE = keccak(text="authorizationState(address,bytes32)")[:4]

# Revert strings of USDC's FiatTokenV2 (and of TestUSDC, which copies them).
_REVERTS: tuple[tuple[str, str], ...] = (
    ("authorization is expired", wire_errors.VALID_BEFORE_EXPIRED),
    ("authorization is not yet valid", wire_errors.VALID_AFTER_FUTURE),
    ("authorization is used", wire_errors.NONCE_ALREADY_USED),
    ("exceeds balance", wire_errors.INSUFFICIENT_BALANCE),
    ("insufficientbalance", wire_errors.INSUFFICIENT_BALANCE),
    ("invalid signature", wire_errors.INVALID_SIGNATURE),
)


def classify_revert(reason: str, default: str) -> str:
    """The x402 reason code for a token revert string."""
    text = reason.lower()
    for needle, code in _REVERTS:
        if needle in text:
            return code
    return default


def transfer_calldata(authorization: Mapping[str, str], signature: bytes) -> bytes:
    """Calldata of ``transferWithAuthorization``: the (v, r, s) overload for a
    65-byte signature, as USDC and the official facilitators use, else the
    ``bytes`` overload that smart wallets (EIP-1271) need."""
    head = [
        to_checksum_address(authorization["from"]),
        to_checksum_address(authorization["to"]),
        int(authorization["value"]),
        int(authorization["validAfter"]),
        int(authorization["validBefore"]),
        bytes.fromhex(str(authorization["nonce"]).removeprefix("0x")),
    ]
    types = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]
    if len(signature) == 65:
        v = signature[64] if signature[64] >= 27 else signature[64] + 27
        return _VRS + encode(
            [*types, "uint8", "bytes32", "bytes32"], [*head, v, signature[:32], signature[32:64]]
        )
    return _BYTES + encode([*types, "bytes"], [*head, signature])


def simulate_transfer(chain: Chain, sender: str, token: str, calldata: bytes) -> None:
    """Run the transfer as ``sender`` against the latest block; ``Reverted`` if it would fail."""
    call = {"from": sender, "to": token, "data": "0x" + calldata.hex()}
    rpc(chain, "eth_call", [call, "latest"])


def estimate_transfer_gas(chain: Chain, sender: str, token: str, calldata: bytes) -> int:
    """Gas the transfer needs if submitted now; ``Reverted`` if it would fail."""
    call = {"from": sender, "to": token, "data": "0x" + calldata.hex()}
    return as_int(rpc(chain, "eth_estimateGas", [call, "latest"]))


def authorization_used(chain: Chain, token: str, authorizer: str, nonce: str) -> bool:
    data = _AUTH_STATE + encode(
        ["address", "bytes32"],
        [to_checksum_address(authorizer), bytes.fromhex(nonce.removeprefix("0x"))],
    )
    result = rpc(chain, "eth_call", [{"to": token, "data": "0x" + data.hex()}, "latest"])
    return as_int(result) != 0 if not isinstance(result, bytes) else any(result)


__all__ = [
    "Reverted",
    "authorization_used",
    "classify_revert",
    "simulate_transfer",
    "transfer_calldata",
]
