"""Payouts the token refused: see what an ASCManager owes an address, and take it.

``ASCManager`` never lets a refused transfer (a blocklisted receiver, a paused token)
block a settlement: it credits the payout to its receiver (``owed``). The receiver
takes it in one of two ways, both here:

* :func:`withdraw_owed`: the receiver sends ``withdraw(to)`` itself (it needs gas),
  naming any address ``to``: a receiver whose own address is blocklisted names another.
* :func:`sign_order` then :func:`relay_order`: the receiver signs an EIP-712
  ``A402Withdrawal(owner, to, amount, nonce, deadline)`` with no gas, and anyone with
  gas submits it. The safety argument: the contract pays only the ``to`` the owner
  signed, only up to ``amount`` and what is owed, only before ``deadline``, and only
  once (the order carries the owner's next nonce, which carrying it out consumes), so
  a relayer can delay an order or not submit it, but not redirect, enlarge or replay
  it. :func:`check_order` says which of these would refuse an order before any gas
  is spent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from a402.asc_manager import ASCManager
from a402.chain.rpc import node_errors
from a402.evm.address import is_address, same_address, to_checksum

ORDER_KIND: Final = "a402.withdrawal-order"
ZERO_ADDRESS: Final = "0x" + "00" * 20


class PayoutError(Exception):
    """Nothing moved, for the reason given (``reason``: a short machine name)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def checked_address(text: str, what: str = "address") -> str:
    """``text`` as a checksummed address; ValueError for anything that is not one, for
    the zero address, and for a mixed-case address whose EIP-55 checksum is wrong (a
    typo in an address that receives money must not go through)."""
    if not is_address(text):
        raise ValueError(f"{what}: not an address: {text!r:.60}")
    checksummed = to_checksum(text)
    if text[2:] not in (text[2:].lower(), text[2:].upper()) and text != checksummed:
        raise ValueError(f"{what}: {text} fails its EIP-55 checksum (a typo?)")
    if same_address(checksummed, ZERO_ADDRESS):
        raise ValueError(f"{what}: the zero address")
    return checksummed


def owed(manager: ASCManager, address: str) -> int:
    """Atomic units of the manager's token owed to ``address``."""
    with node_errors("owed"):
        return manager.owed(address)


def has_gas_for_withdraw(manager: ASCManager, owner: str, to: str) -> bool:
    """Whether ``owner``'s ETH pays for ``withdraw(to)`` at today's fees (doubled base fee
    plus a tip, as :mod:`a402.chain.tx` offers)."""
    w3 = manager.chain.w3
    with node_errors("estimating gas"):
        balance = int(w3.eth.get_balance(owner))  # type: ignore[arg-type]
        if balance == 0:
            return False
        try:
            gas = int(manager.contract.functions.withdraw(to).estimate_gas({"from": owner}))
        except Exception:  # a revert: let the withdrawal say why
            return True
        base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    return balance >= gas * (2 * base + 10**9) * 6 // 5


def withdraw_owed(manager: ASCManager, owner: LocalAccount, to: str) -> tuple[int, TxReceipt]:
    """Send ``withdraw(to)`` from ``owner``: everything owed to it goes to ``to``.

    Raises :class:`PayoutError` (``nothing_owed``) before sending when nothing is owed;
    a token that still refuses the transfer (``to`` blocklisted too, the token paused)
    reverts the call, so nothing moves and the amount stays owed.
    """
    amount = owed(manager, owner.address)
    if not amount:
        raise PayoutError("nothing_owed", f"nothing is owed to {owner.address}")
    return amount, manager.withdraw(owner, to)


@dataclass(frozen=True)
class WithdrawalOrder:
    """An owner's signed order to pay ``amount`` of what it is owed to ``to``; good once,
    on one manager of one chain, until ``deadline`` (chain time, unix seconds)."""

    chain_id: int
    manager: str
    owner: str
    to: str
    amount: int
    nonce: int
    deadline: int
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"kind": ORDER_KIND, "chainId": self.chain_id, "manager": self.manager,
                "owner": self.owner, "to": self.to, "amount": str(self.amount),
                "nonce": self.nonce, "deadline": self.deadline,
                "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_json(cls, data: Any) -> WithdrawalOrder:
        """An order from its JSON (or from an object holding it under ``"order"``);
        ValueError naming what is wrong."""
        if isinstance(data, dict) and isinstance(data.get("order"), dict):
            data = data["order"]
        if not isinstance(data, dict) or data.get("kind") != ORDER_KIND:
            raise ValueError(f"not an a402 withdrawal order (no \"kind\": \"{ORDER_KIND}\")")
        try:
            signature = bytes.fromhex(str(data["signature"]).removeprefix("0x"))
            order = cls(int(data["chainId"]), checked_address(data["manager"], "manager"),
                        checked_address(data["owner"], "owner"),
                        checked_address(data["to"], "to"), int(data["amount"]),
                        int(data["nonce"]), int(data["deadline"]), signature)
        except (KeyError, TypeError) as e:
            raise ValueError(f"a withdrawal order needs {e}") from None
        if order.amount <= 0 or order.nonce < 0 or len(signature) != 65:
            raise ValueError("a withdrawal order has a positive amount, a nonce and a "
                             "65-byte signature")
        return order

    @classmethod
    def loads(cls, text: str) -> WithdrawalOrder:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e}") from None


def chain_time(manager: ASCManager) -> int:
    """The latest block's timestamp: the clock deadlines and dispute windows run on."""
    with node_errors("eth_getBlockByNumber"):
        return int(manager.chain.w3.eth.get_block("latest")["timestamp"])


def sign_order(manager: ASCManager, owner: LocalAccount, to: str, *, amount: int | None = None,
               valid_for: int = 86_400) -> WithdrawalOrder:
    """``owner``'s order paying ``amount`` (default: all it is owed now) to ``to``, valid
    ``valid_for`` seconds of chain time. Signing moves nothing and costs no gas."""
    due = owed(manager, owner.address)
    if not due:
        raise PayoutError("nothing_owed", f"nothing is owed to {owner.address}")
    amount = due if amount is None else amount
    if not 0 < amount <= due:
        raise PayoutError("more_than_owed", f"{amount} is more than the {due} owed to "
                                            f"{owner.address}" if amount else "amount is 0")
    deadline = chain_time(manager) + valid_for
    with node_errors("withdrawalNonces"):
        nonce = manager.withdrawal_nonce(owner.address)
        signature = manager.withdrawal_order(owner, to, amount, deadline, nonce=nonce)
    return WithdrawalOrder(manager.chain.chain_id, manager.address, owner.address, to, amount,
                           nonce, deadline, signature)


def check_order(manager: ASCManager, order: WithdrawalOrder) -> None:
    """Raise :class:`PayoutError` if the manager would refuse ``order`` now: another chain
    or manager, used or replaced (the owner's nonce moved on), expired, not owed."""
    if order.chain_id != manager.chain.chain_id or not same_address(order.manager,
                                                                      manager.address):
        raise PayoutError("wrong_manager", f"the order is for ASCManager {order.manager} on "
                                           f"eip155:{order.chain_id}, not {manager.address} "
                                           f"on {manager.chain.network}")
    with node_errors("withdrawalNonces"):
        nonce = manager.withdrawal_nonce(order.owner)
    if nonce != order.nonce:
        raise PayoutError("order_used", f"the order (nonce {order.nonce}) was already carried "
                                        f"out or replaced: {order.owner}'s next order is "
                                        f"nonce {nonce}")
    if chain_time(manager) > order.deadline:
        raise PayoutError("order_expired", f"the order expired at {order.deadline} "
                                           "(chain time); ask its owner for a new one")
    due = owed(manager, order.owner)
    if order.amount > due:
        raise PayoutError("nothing_owed" if not due else "more_than_owed",
                          f"the order pays {order.amount} but {due} is owed to {order.owner}")


def relay_order(manager: ASCManager, sender: LocalAccount, order: WithdrawalOrder
                ) -> TxReceipt:
    """Submit ``order`` (checked first): ``sender`` pays the gas, ``order.to`` is paid."""
    check_order(manager, order)
    return manager.withdraw_for(sender, order.owner, order.to, order.amount, order.deadline,
                                order.signature)


def withdrawn(manager: ASCManager, receipt: TxReceipt) -> list[dict[str, Any]]:
    """The ``Withdrawn(account, to, amount)`` events of ``receipt``."""
    return manager.events("Withdrawn", receipt)
