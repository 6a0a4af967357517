"""The one transaction an ``upto`` payer sends: an ERC-20 allowance to Permit2.

x402 ``upto`` payments are Permit2 transfers, so the payer's token must allow Permit2
(at its fixed address) to move them; each payment is then a signature only, bounded
by its own signed maximum, spendable once, by the facilitator it names. The allowance
is the ceiling of everything all upto signatures together can move: give it the
total you are willing to have in flight (the default, unlimited, is what the SDKs'
wallets ask for; a smaller one is a second limit besides ``max_per_request``).
"""

from __future__ import annotations

from eth_typing import HexStr
from web3.types import TxParams

from a402.chain.node import connect
from a402.chain.tx import transact
from a402.chain.upto_settle import approve_permit2_calldata, permit2_allowance
from a402.evm.address import to_checksum

UNLIMITED = 2**256 - 1


def approve_permit2(rpc_url: str, key: str | bytes, token: str, amount: int = UNLIMITED) -> str:
    """Set the wallet's allowance to Permit2 for ``token`` to ``amount`` (a transaction,
    paid in gas by the wallet); returns its hash. Nothing happens if it already is."""
    chain = connect(rpc_url, [key])
    account = chain.accounts[0]
    if permit2_allowance(chain, token, account.address) == amount:
        return ""
    call: TxParams = {"to": to_checksum(token),
                      "data": HexStr("0x" + approve_permit2_calldata(amount).hex())}
    receipt = transact(chain, account, call)
    return "0x" + bytes(receipt["transactionHash"]).hex()


def approve_hint(token: str, network: str) -> str:
    """What to run when a payment was refused for want of a Permit2 allowance."""
    return (f"nothing was paid: this upto payment draws on Permit2, which your wallet has "
            f"not allowed to move token {token} on {network}; run once: "
            f"a402 permit2 approve --key-file KEYFILE --token {token} --rpc RPC_URL "
            f"[--amount ATOMIC_UNITS] (or --manifest PATH on a devnet), then pay again")


__all__ = ["UNLIMITED", "approve_hint", "approve_permit2"]
