"""Money into and out of the pool: deposits and withdrawals, which live on-chain.

The pool is ``ASCManager.pooled[vault][client]``: per-client balances the
contract keeps (see ``contracts/ASCManager.sol``, "Pool"). What guards the
money is the contract, not this host nor its store:

* a balance is created only by tokens arriving in the manager
  (``depositToPool``, ``depositToPoolWithAuthorization``);
* only the vault's approval (its enclave's, for the client's own signed call)
  moves it into a channel of that client, and only the channel's signed states
  move it out of the channel, the client's share back into the pool;
* only the client takes it out: ``withdrawFromPool`` sent by itself (needing
  nothing of the vault), or its signed ``A402PoolWithdrawal`` order, which this
  host relays.

So a host that invents a deposit in its database (or in any report) creates
nothing anyone can spend: the chain would refuse the open or the withdrawal.
The host's store mirrors the chain, for answering and for choosing deposits;
it is never what lets money move.

**Deposits.** The client signs an EIP-3009 ``receiveWithAuthorization`` to the
manager whose nonce is ``poolDepositNonce(vault, client, amount, salt)``
(:func:`a402.asc.pool_deposit_nonce`) and POSTs it; the host journals
``depositToPoolWithAuthorization`` before it is broadcast
(:mod:`a402.vault.txjournal`, keyed by that nonce: asked again, the same
transaction) and credits its store only from the mined ``PoolDeposited`` logs
naming this vault, keyed ``(tx hash, log index)``, once. Or the client sends
``depositToPool`` itself and reports the transaction: the same credit, from
the same logs (and unreported, the worker's watch of the manager's logs
credits it under the same key). A deposit relayed but not mined when the call
returns is credited by the worker when its journal entry is mined. A client's
own ``withdrawFromPool`` is mirrored by the watch the same way
(:meth:`Funds.mirror_withdrawal`).

**Withdrawals.** The client signs ``A402PoolWithdrawal(vault, owner, to,
amount, nonce, deadline)``; the host debits its store, journals and relays
``withdrawFromPoolWithSignature`` and answers with the truth: ``confirmed``
with the transaction, or ``refused`` with the reason and "nothing moved, your
balance is still in the pool", worded from the chain's ``pooled`` balance (the store's
debit given back). A transfer the
token refuses (a blocklisted ``to``, a pause) reverts the whole call on-chain,
so it never leaves money in between: the client signs another order, with the
same nonce and another ``to`` (of two orders with one nonce at most one can go
through). Nothing here is pending forever.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD
from web3.types import TxReceipt

from a402.asc import pool_deposit_nonce, pool_withdrawal_digest
from a402.asc.terms import POOL_DEPOSIT_TYPE, POOL_WITHDRAWAL_TYPE
from a402.asc_manager import ASCManager, PoolDepositAuthorization
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed
from a402.evm.address import address_key
from a402.evm.eip3009 import ReceiveAuthorization
from a402.wire import vault_api as api

from . import store as vault_store
from .channels import Channels, VaultError
from .txjournal import TxJournal

_TX_HASH: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_BYTES32: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_SIGNATURE: Final = re.compile(r"0x[0-9a-fA-F]{130}")

log = logging.getLogger("a402.vault.funds")

def nothing_moved(pooled: int, amount: int) -> str:
    """A refused withdrawal's message, worded from the chain's pool balance ``pooled``."""
    if pooled == 0:
        return (f"nothing moved: you cannot withdraw {amount}; your pool balance with this "
                f"vault is 0 on-chain")
    return (f"nothing moved: you cannot withdraw {amount} now; your pool balance with this "
            f"vault is {pooled} on-chain and is still in the pool (any part of it in a "
            f"channel being opened comes back if the open fails)")


def _uint(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"`{name}` is an unsigned integer (a decimal string)")
    number = int(value)
    if not 0 <= number < 1 << 256:
        raise ValueError(f"`{name}` is a uint256")
    return number


def _hex(body: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"`{name}` is {what}")
    return bytes.fromhex(value[2:])


class Funds:
    def __init__(
        self, *, chain: Chain, channels: Channels, token: TokenInfo,
        store: vault_store.VaultStore, journal: TxJournal, chain_timeout: float,
    ) -> None:
        self.chain = chain
        self.manager: ASCManager = channels.manager
        self.address = channels.vault.checksum_address
        self.token = token
        self.store = store
        self.journal = journal
        self.chain_timeout = chain_timeout
        #: Why the contract refused a withdrawal order (kept for its answers; after a
        #: restart the answer says only that it was refused, which stays true).
        self._refusals: dict[str, str] = {}

    def offer(self) -> dict[str, Any]:
        """How to deposit (``GET /v1/info``'s ``deposit``): the EIP-3009 authorization to
        sign, or the ``depositToPool`` call to send."""
        return {
            "scheme": "a402-pool", "ascManager": self.manager.address, "vault": self.address,
            "asset": to_checksum_address(self.token.address),
            "eip3009": {"name": self.token.name, "version": self.token.version,
                        "chainId": self.chain.chain_id, "nonce": POOL_DEPOSIT_TYPE},
            "withdrawal": POOL_WITHDRAWAL_TYPE,
        }

    # --------------------------------------------------------------- deposits

    async def deposit(self, client: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /v1/deposits``: ``{"authorization": …}`` (the client's EIP-3009 pool
        deposit, relayed here) or ``{"transaction": hash}`` (its own ``depositToPool``)."""
        if isinstance(body.get("authorization"), dict):
            return await self._deposit_authorization(client, body["authorization"])
        if isinstance(body.get("transaction"), str):
            # A malformed hash names no transaction: refused, not "pending" forever.
            if _TX_HASH.fullmatch(body["transaction"]) is None:
                raise VaultError(400, api.BAD_REQUEST, "`transaction` is not a transaction "
                                 "hash (0x and 64 hex digits)")
            return await self._deposit_transaction(client, body["transaction"])
        raise VaultError(400, api.BAD_REQUEST,
                         "give an `authorization` (EIP-3009 pool deposit) or a `transaction` hash")

    def _authorization(self, client: str, raw: dict[str, Any]) -> PoolDepositAuthorization:
        try:
            payer = to_checksum_address(str(raw.get("from") or client))
            amount = _uint(raw, "amount")
            salt = _hex(raw, "salt", _BYTES32, "32 bytes in hex")
            valid_after, valid_before = _uint(raw, "validAfter"), _uint(raw, "validBefore")
            signature = _hex(raw, "signature", _SIGNATURE, "a 65-byte signature in hex")
        except ValueError as e:
            raise VaultError(400, api.BAD_REQUEST, str(e)) from None
        if amount <= 0:
            raise VaultError(400, api.BAD_REQUEST, "a deposit is a positive amount")
        return PoolDepositAuthorization(
            self.address, to_checksum_address(client), payer, amount, salt,
            ReceiveAuthorization.of_signature(valid_after, valid_before, signature))

    async def _deposit_authorization(self, client: str, raw: dict[str, Any]
                                     ) -> tuple[int, dict[str, Any]]:
        """Relay the client's pool deposit (credited to the caller with this vault: the
        nonce the payer signed names both, so no other credit can come of it), then
        credit what its mined logs say."""
        auth = self._authorization(client, raw)
        nonce = pool_deposit_nonce(self.manager.domain, auth.vault, auth.client, auth.amount,
                                   auth.salt)
        key = f"deposit:0x{nonce.hex()}"
        try:
            tx = await asyncio.to_thread(self.journal.send, key, "deposit", address_key(client),
                                         self.manager.pool_deposit_call(auth))
        except TransactionFailed as e:
            raise VaultError(400, "deposit_refused",
                             f"the token refuses this deposit ({self.manager.explain(e.reason)})"
                             f"; nothing moved") from None
        outcome = await asyncio.to_thread(self.journal.wait, tx, self.chain_timeout)
        if outcome.receipt is None:
            if outcome.dropped:
                raise VaultError(502, api.CHAIN_UNAVAILABLE,
                                 f"the deposit {tx.tx_hash} was dropped; nothing moved",
                                 retryable=True)
            return 202, {"state": "pending", "transaction": tx.tx_hash,
                         "message": "relayed, not mined yet: credited once it is"}
        if not outcome.ok:
            raise VaultError(400, "deposit_refused",
                             f"the deposit {tx.tx_hash} reverted; nothing moved")
        return await self._credited(client, outcome.receipt)

    async def _deposit_transaction(self, client: str, tx_hash: str
                                   ) -> tuple[int, dict[str, Any]]:
        try:
            receipt = await asyncio.to_thread(self.chain.w3.eth.get_transaction_receipt,
                                              HexBytes(tx_hash))
        except (TransactionNotFound, ValueError):
            return 202, {"state": "pending", "transaction": tx_hash}
        return await self._credited(client, receipt)

    async def _credited(self, client: str, receipt: TxReceipt) -> tuple[int, dict[str, Any]]:
        credited = await asyncio.to_thread(self.credit_receipt, receipt, client)
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        if credited is None:
            raise VaultError(400, api.BAD_REQUEST,
                             "the transaction credited nothing to the caller in this vault's "
                             "pool (no PoolDeposited log naming both)")
        balance = await asyncio.to_thread(self.store.balance, client)
        pooled = await asyncio.to_thread(self.manager.pooled, self.address, client)
        return 200, {"state": "credited", "transaction": tx_hash, "amount": str(credited),
                     "balance": str(max(balance, 0)), "pooled": str(pooled)}

    def credit_receipt(self, receipt: TxReceipt, client: str | None = None) -> int | None:
        """Credit the store with every ``PoolDeposited`` log of this vault in ``receipt``,
        once per ``(tx hash, log index)``. Returns what those logs carry for ``client`` (or
        for anyone, if None), credited now or before, or None if there is none."""
        if int(receipt["status"]) != 1:
            return None
        found = None
        for event in self.manager.contract.events.PoolDeposited().process_receipt(
                receipt, errors=DISCARD):
            if event["address"] != self.manager.address:
                continue
            args = event["args"]
            if address_key(args["vault"]) != address_key(self.address):
                continue
            self.credit_log(event, args)
            if client is None or address_key(args["client"]) == address_key(client):
                found = (found or 0) + int(args["amount"])
        return found

    def credit_log(self, entry: Any, args: dict[str, Any]) -> bool:
        """Mirror one ``PoolDeposited`` log in the store if it names this vault, once per
        ``(tx hash, log index)``: whoever reports it, and the worker's watch, count once."""
        if address_key(args["vault"]) != address_key(self.address):
            return False
        tx_hash = HexBytes(entry["transactionHash"]).to_0x_hex()
        return self.store.credit_deposit(f"pool:{tx_hash}:{entry['logIndex']}", args["client"],
                                         int(args["amount"]), "pool", tx_hash)

    # ------------------------------------------------------------- withdrawals

    def mirror_withdrawal(self, entry: Any, args: dict[str, Any]) -> bool:
        """Mirror a ``PoolWithdrawn`` log of this vault that this vault did not relay (the
        client's own ``withdrawFromPool``, or its order relayed by someone else) as a
        confirmed withdrawal in the store, once per ``(tx hash, log index)``. The orders
        this vault relays are mirrored by their own records (sent by its gas account)."""
        if address_key(args["vault"]) != address_key(self.address):
            return False
        tx_hash = HexBytes(entry["transactionHash"]).to_0x_hex()
        sender = self.chain.w3.eth.get_transaction(HexBytes(tx_hash))["from"]
        if address_key(sender) == address_key(self.journal.account.address):
            return False
        key = f"chain:{tx_hash}:{entry['logIndex']}"
        owner, amount = args["owner"], int(args["amount"])
        # Recorded always, even when the store is short (an open in flight debited it): the
        # chain made this withdrawal. The store goes below zero for as long as that open is
        # in flight; written off, its debit comes back and the books equal the chain again.
        created, _ = self.store.claim_withdrawal(key, client=owner,
                                                 recipient=to_checksum_address(args["to"]),
                                                 amount=amount, on_chain=True)
        if created:
            self.store.finish_withdrawal(key, ok=True, tx_hash=tx_hash)
        return created

    async def withdraw(self, client: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /v1/withdrawals``: the client's signed pool withdrawal order
        ``{"amount", "to", "nonce", "deadline", "signature"}`` (its owner is the caller),
        relayed as ``withdrawFromPoolWithSignature``. The same order asked again is answered
        from its record (its key is the order's digest), or, if it was refused (nothing
        moved), relayed again: it takes effect at most once."""
        try:
            amount = _uint(body, "amount")
            nonce, deadline = _uint(body, "nonce"), _uint(body, "deadline")
            to = to_checksum_address(str(body.get("to") or client))
            signature = _hex(body, "signature", _SIGNATURE, "a 65-byte signature in hex")
        except ValueError as e:
            raise VaultError(400, api.BAD_REQUEST, str(e)) from None
        if amount <= 0:
            raise VaultError(400, api.BAD_REQUEST, "a withdrawal is a positive amount")
        digest = pool_withdrawal_digest(self.manager.domain, self.address, client, to, amount,
                                        nonce, deadline)
        key = f"{address_key(client)}:0x{digest.hex()}"
        try:
            created, record = await asyncio.to_thread(
                self.store.claim_withdrawal, key, client=client, recipient=to, amount=amount)
        except vault_store.InsufficientBalance as e:
            # Worded from the chain's balance (what the client can count on), not the store's.
            pooled = await asyncio.to_thread(self.manager.pooled, self.address, client)
            raise VaultError(402, api.INSUFFICIENT_BALANCE, nothing_moved(pooled, amount),
                             extra={"balance": str(max(e.balance, 0)),
                                    "pooled": str(pooled)}) from None
        if created:
            self._refusals.pop(key, None)
            await self._relay(key, self.manager.pool_withdrawal_call(
                self.address, client, to, amount, nonce, deadline, signature))
        elif record.state == vault_store.TX_SUBMITTED:
            tx = await asyncio.to_thread(self.store.tx, f"withdraw:{key}")
            if tx is not None:
                outcome = await asyncio.to_thread(self.journal.wait, tx, self.chain_timeout)
                if outcome.final:
                    await asyncio.to_thread(self.withdrawal_mined, key, outcome.ok,
                                            tx.tx_hash)
        return await asyncio.to_thread(self.withdrawal_answer, key)

    async def _relay(self, key: str, call: Any) -> None:
        try:
            # Sent again if an earlier send failed: the order takes effect once (its nonce).
            tx = await asyncio.to_thread(self.journal.send, f"withdraw:{key}", "withdraw", key,
                                         call, again_if_failed=True)
        except TransactionFailed as e:
            # Refused before it was sent (a bad order, a nonce used, the token refusing
            # `to`): nothing was broadcast, nothing moved; the store's debit goes back.
            await asyncio.to_thread(self.store.finish_withdrawal, key, ok=False, tx_hash=None)
            self._refusals[key] = self.manager.explain(e.reason)
            return
        outcome = await asyncio.to_thread(self.journal.wait, tx, self.chain_timeout)
        if outcome.final:
            await asyncio.to_thread(self.withdrawal_mined, key, outcome.ok, tx.tx_hash)

    def withdrawal_mined(self, key: str, ok: bool, tx_hash: str) -> None:
        """The relayed order's transaction is final: confirmed, or reverted/dropped (the
        contract moved nothing then: the store's debit goes back)."""
        if not ok:
            self._refusals.setdefault(key, f"its transaction {tx_hash} reverted or was dropped")
        self.store.finish_withdrawal(key, ok=ok, tx_hash=tx_hash if ok else None)

    def withdrawal_answer(self, key: str) -> tuple[int, dict[str, Any]]:
        record = self.store.withdrawal(key)
        assert record is not None
        tx = self.store.tx(f"withdraw:{key}")
        body: dict[str, Any] = {
            "state": record.state, "amount": record.amount, "to": record.recipient,
            "transaction": record.tx_hash or (tx.tx_hash if tx else None)}
        if record.state == vault_store.TX_CONFIRMED:
            body["message"] = f"withdrawn: {record.amount} sent to {record.recipient}"
            return 200, body
        if record.state == vault_store.TX_SUBMITTED:
            body["reason"] = api.WITHDRAWAL_PENDING
            body["message"] = ("relayed, not mined yet: your balance stays in the pool until it "
                               "is; ask again with the same order to see")
            return 202, body
        why = self._refusals.get(key, "the contract refused the order")
        # Worded from the chain's balance: the client may have emptied it herself meanwhile.
        pooled = self.manager.pooled(self.address, record.client)
        where = ("still in the pool" if pooled else "nothing is left in the pool to withdraw")
        body.update(error=api.WITHDRAWAL_REFUSED, reason=api.WITHDRAWAL_REFUSED,
                    pooled=str(pooled),
                    message=f"refused ({why}); nothing moved: your pool balance with this "
                    f"vault is {pooled} on-chain, {where}: sign another order (another "
                    "`to`, the same nonce), or take it out yourself with withdrawFromPool")
        return 409, body
