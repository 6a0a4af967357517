"""The vault's on-chain transactions, journaled before they are broadcast.

Every transaction the vault sends (``createASC``, ``closeASC``, a challenge,
``initForceClose``/``finalForceClose``, a withdrawal) is signed, written to
the store under a key naming its purpose, and only then broadcast — the
facilitator's discipline. So after a crash the vault knows exactly which
transactions may be in flight, and :meth:`TxJournal.reconcile` finishes each:
mined (confirmed or reverted), still pending, or dropped (rebroadcast while
its nonce is free; declared failed once another transaction used the nonce,
because then it can never be mined).

A key is used once: sending under a key that is already journaled returns the
journaled transaction instead of paying gas twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound
from web3.types import TxParams, TxReceipt

from a402.chain.node import Chain
from a402.chain.tx import SignedTx, TransactionFailed, broadcast, pending_nonce, revert_reason, sign

from .store import TX_CONFIRMED, TX_FAILED, TX_SUBMITTED, Transaction, VaultStore

log = logging.getLogger("a402.vault.chain")


@dataclass(frozen=True)
class Outcome:
    """What became of a journaled transaction: ``receipt`` once mined, ``dropped`` if it
    never can be; neither while it may still be mined."""

    record: Transaction
    receipt: TxReceipt | None = None
    dropped: bool = False

    @property
    def final(self) -> bool:
        return self.receipt is not None or self.dropped

    @property
    def ok(self) -> bool:
        return self.receipt is not None and int(self.receipt["status"]) == 1


class TxJournal:
    """Signs with ``account``, journals in ``store``, broadcasts to ``chain``."""

    def __init__(self, chain: Chain, account: LocalAccount, store: VaultStore, *,
                 gas_margin: float = 1.3) -> None:
        self.chain = chain
        self.account = account
        self.store = store
        self.gas_margin = gas_margin

    def send(
        self, key: str, kind: str, ref: str, call: ContractFunction | TxParams, *,
        again_if_failed: bool = False,
    ) -> Transaction:
        """Sign, journal, broadcast; the journaled transaction if ``key`` was sent before.

        With ``again_if_failed``, a journaled transaction that failed (reverted, or
        dropped: it can never be mined) is replaced by a new one under the same key —
        for a call whose own content makes it take effect once (a withdrawal's EIP-3009
        nonce). Raises :class:`~a402.chain.tx.TransactionFailed` when the call reverts
        in estimation: then nothing was journaled or sent.
        """
        with self.chain.sender_lock(self.account.address):  # also makes the check-then-send atomic
            known = self.store.tx(key)
            if known is not None and not (again_if_failed and known.state == TX_FAILED):
                return known
            signed = self._sign(call)
            self.store.journal_tx(key, kind=kind, ref=ref, tx_hash=signed.tx_hash,
                                  raw=signed.raw, nonce=signed.nonce)
            self._broadcast(signed)
        record = self.store.tx(key)
        assert record is not None
        return record

    def _sign(self, call: ContractFunction | TxParams) -> SignedTx:
        nonce = pending_nonce(self.chain, self.account.address)
        gas: int | None = None
        if isinstance(call, ContractFunction):
            try:
                gas = int(call.estimate_gas({"from": self.account.address}) * self.gas_margin)
            except ContractLogicError as e:
                raise TransactionFailed(revert_reason(e)) from e
        return sign(self.chain, self.account, call, nonce=nonce, gas=gas)

    def _broadcast(self, signed: SignedTx) -> None:
        try:
            broadcast(self.chain, signed)
        except Exception as e:  # journaled: reconcile decides what the refusal meant
            log.warning("broadcast of %s refused: %s", signed.tx_hash, e)

    def wait(self, record: Transaction, timeout: float) -> Outcome:
        """The outcome within ``timeout`` seconds (not final if it is still pending)."""
        try:
            receipt = self.chain.w3.eth.wait_for_transaction_receipt(
                HexBytes(record.tx_hash), timeout=timeout, poll_latency=0.05
            )
        except TimeExhausted:
            return self.reconcile(record)
        return self._finish(record, receipt)

    def _finish(self, record: Transaction, receipt: TxReceipt) -> Outcome:
        state = TX_CONFIRMED if int(receipt["status"]) == 1 else TX_FAILED
        if record.state == TX_SUBMITTED:
            self.store.finish_tx(record.key, state)
        return Outcome(record, receipt=receipt)

    def reconcile(self, record: Transaction) -> Outcome:
        """One step towards a final outcome: look, rebroadcast, or declare it dropped."""
        w3 = self.chain.w3
        try:
            receipt = w3.eth.get_transaction_receipt(HexBytes(record.tx_hash))
        except TransactionNotFound:
            receipt = None
        if receipt is not None:
            return self._finish(record, receipt)
        if int(w3.eth.get_transaction_count(self.account.address, "latest")) > record.nonce:
            # Another transaction took the nonce and this one has no receipt: it never will.
            time.sleep(0.2)  # unless its receipt was just being indexed
            try:
                receipt = w3.eth.get_transaction_receipt(HexBytes(record.tx_hash))
            except TransactionNotFound:
                receipt = None
            if receipt is not None:
                return self._finish(record, receipt)
            self.store.finish_tx(record.key, TX_FAILED)
            return Outcome(record, dropped=True)
        try:
            w3.eth.get_transaction(HexBytes(record.tx_hash))
        except TransactionNotFound:
            self._broadcast(SignedTx(record.tx_hash, record.raw, record.nonce))
        return Outcome(record)

    def unfinished(self) -> list[Transaction]:
        return self.store.txs()
