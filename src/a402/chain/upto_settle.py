"""The chain side of x402 ``upto`` on EVM: the Permit2 and upto proxy contracts.

Settlement is one call, ``UptoPermit2Proxy.settle(permit, amount, owner, witness,
signature)``, sent by the facilitator the witness names; the proxy has Permit2 check
the payer's signature, spend its nonce and move ``amount`` (at most the signed
maximum) to the signed payee. Verification runs that very call through ``eth_call``
(for the maximum), which answers what the offline checks cannot: nonce unused,
allowance to Permit2, balance, a contract wallet's signature.

On a development chain, :func:`install_upto_contracts` places our own Permit2 and
upto proxy (``contracts/Permit2.sol``, ``contracts/UptoPermit2Proxy.sol``, compiled
from source) at the fixed addresses the x402 SDKs sign for, with ``anvil_setCode``:
Permit2's EIP-712 domain names its address, so a signature made for the canonical
Permit2 is valid only there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from a402.chain.node import Chain
from a402.chain.rpc import Reverted, as_int, rpc

PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_PROXY_ADDRESS = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
"""The SDKs' fixed addresses (equal to :mod:`a402.exact.upto`'s, which a test checks)."""

_TRANSACTION_FAILED = "invalid_upto_evm_transaction_failed"
_INVALID_SIGNATURE = "invalid_permit2_signature"

_SETTLE = keccak(
    text="settle(((address,uint256),uint256,uint256),uint256,address,(address,address,uint256),bytes)"
)[:4]
_NONCE_BITMAP = keccak(text="nonceBitmap(address,uint256)")[:4]
_ALLOWANCE = keccak(text="allowance(address,address)")[:4]
_BALANCE_OF = keccak(text="balanceOf(address)")[:4]


def _selector(signature: str) -> str:
    return keccak(text=signature)[:4].hex()


# Custom errors of the proxy and Permit2, by name and selector, to the SDK's reasons.
_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("AmountExceedsPermitted", _selector("AmountExceedsPermitted()"),
     "upto_amount_exceeds_permitted"),
    ("UnauthorizedFacilitator", _selector("UnauthorizedFacilitator()"),
     "upto_unauthorized_facilitator"),
    ("InvalidDestination", _selector("InvalidDestination()"), "permit2_invalid_destination"),
    ("InvalidOwner", _selector("InvalidOwner()"), "permit2_invalid_owner"),
    ("PaymentTooEarly", _selector("PaymentTooEarly()"), "permit2_payment_too_early"),
    ("InvalidAmount", _selector("InvalidAmount(uint256)"), "permit2_invalid_amount"),
    ("InvalidNonce", _selector("InvalidNonce()"), "permit2_invalid_nonce"),
    ("SignatureExpired", _selector("SignatureExpired(uint256)"), _INVALID_SIGNATURE),
    ("InvalidSignature", _selector("InvalidSignature()"), _INVALID_SIGNATURE),
    ("ERC20InsufficientAllowance", _selector("ERC20InsufficientAllowance(address,uint256,uint256)"),
     "permit2_allowance_required"),
    ("ERC20InsufficientBalance", _selector("ERC20InsufficientBalance(address,uint256,uint256)"),
     "permit2_insufficient_balance"),
)


def classify_upto_revert(reason: str) -> str:
    """The SDK's reason code for a revert of the upto settlement."""
    text = reason.lower()
    for name, selector, code in _ERRORS:
        if name.lower() in text or selector in text:
            return code
    return _TRANSACTION_FAILED


def settle_calldata(auth: Mapping[str, Any], amount: int, signature: bytes) -> bytes:
    """Calldata of ``UptoPermit2Proxy.settle`` for ``amount`` under this authorization
    (``auth``: the wire form of ``permit2Authorization``)."""
    permitted, witness = auth["permitted"], auth["witness"]
    permit = ((to_checksum_address(permitted["token"]), int(permitted["amount"])),
              int(auth["nonce"]), int(auth["deadline"]))
    witness_tuple = (to_checksum_address(witness["to"]),
                     to_checksum_address(witness["facilitator"]), int(witness["validAfter"]))
    return _SETTLE + encode(
        ["((address,uint256),uint256,uint256)", "uint256", "address",
         "(address,address,uint256)", "bytes"],
        [permit, amount, to_checksum_address(auth["from"]), witness_tuple, signature])


def simulate_settle(chain: Chain, sender: str, calldata: bytes) -> None:
    """Run the settlement as ``sender`` on the latest block; ``Reverted`` if it would fail."""
    rpc(chain, "eth_call", [{"from": sender, "to": UPTO_PROXY_ADDRESS,
                             "data": "0x" + calldata.hex()}, "latest"])


def estimate_settle_gas(chain: Chain, sender: str, calldata: bytes) -> int:
    return as_int(rpc(chain, "eth_estimateGas", [{"from": sender, "to": UPTO_PROXY_ADDRESS,
                                                  "data": "0x" + calldata.hex()}, "latest"]))


def _call_uint(chain: Chain, to: str, data: bytes) -> int:
    result = rpc(chain, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
    return as_int(result) if not isinstance(result, bytes) else int.from_bytes(result)


def permit2_nonce_used(chain: Chain, owner: str, nonce: int) -> bool:
    """Whether Permit2 has spent this unordered nonce of ``owner``."""
    word, bit = nonce >> 8, nonce & 0xFF
    data = _NONCE_BITMAP + encode(["address", "uint256"], [to_checksum_address(owner), word])
    return bool(_call_uint(chain, PERMIT2_ADDRESS, data) >> bit & 1)


def permit2_allowance(chain: Chain, token: str, owner: str) -> int:
    """The ERC-20 allowance ``owner`` gave Permit2 (what upto payments can draw on)."""
    data = _ALLOWANCE + encode(["address", "address"],
                               [to_checksum_address(owner), PERMIT2_ADDRESS])
    return _call_uint(chain, token, data)


def approve_permit2_calldata(amount: int) -> bytes:
    """``approve(Permit2, amount)``: the one transaction a payer sends before paying upto."""
    return keccak(text="approve(address,uint256)")[:4] + encode(
        ["address", "uint256"], [PERMIT2_ADDRESS, amount])


@cache
def _runtime_code(name: str) -> str:
    file = resources.files("a402.chain").joinpath("artifacts", f"{name}.json")
    code: str = json.loads(file.read_text())["deployedBytecode"]
    return code


def install_upto_contracts(chain: Chain) -> dict[str, str]:
    """Place Permit2 and the upto proxy at the SDKs' addresses (anvil only: ``anvil_setCode``).

    Neither contract has a constructor argument, an immutable or initial storage, so
    its runtime code is the whole contract. Returns their manifest entries."""
    rpc(chain, "anvil_setCode", [PERMIT2_ADDRESS, _runtime_code("Permit2")])
    rpc(chain, "anvil_setCode", [UPTO_PROXY_ADDRESS, _runtime_code("UptoPermit2Proxy")])
    return {"Permit2": PERMIT2_ADDRESS, "UptoPermit2Proxy": UPTO_PROXY_ADDRESS}


def is_anvil(chain: Chain) -> bool:
    try:
        version = rpc(chain, "web3_clientVersion", [])
    except Exception:
        return False
    return isinstance(version, str) and version.lower().startswith("anvil")


__all__ = [
    "PERMIT2_ADDRESS",
    "UPTO_PROXY_ADDRESS",
    "Reverted",
    "approve_permit2_calldata",
    "classify_upto_revert",
    "estimate_settle_gas",
    "install_upto_contracts",
    "is_anvil",
    "permit2_allowance",
    "permit2_nonce_used",
    "settle_calldata",
    "simulate_settle",
]
