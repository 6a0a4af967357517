"""EIP-3009 ``receiveWithAuthorization``: the typed data a depositor signs (pure).

A deposit that moves by the depositor's signature alone, pulled by the contract it
names as ``to`` (so nobody can front-run it into a plain transfer). The ASCManager
opens wallet-funded channels with it, and the vault-mode contract takes deposits with
it; both build the same EIP-712 message from this one type.
"""

from typing import Final

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
