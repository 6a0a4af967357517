"""Landing a settlement the vault's enclave signed (``A402Vault.settle``), the one way the
host, its watchtower and the tests send one: every signed field as signed, the claims mined
since it was signed, and each pull with its participant's intent (65 zero bytes for one not
held: the contract skips that pull and the next settlement drops it)."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from a402.crypto.vault_messages import pack_pull_signatures, unpack_pulls
from a402.vault_accounts import SignedSettlement
from a402.vault_contract import A402Vault


def land(contract: A402Vault, sender: LocalAccount, signed: SignedSettlement,
         intent: Callable[[int], bytes | None] = lambda pull: None) -> TxReceipt:
    """Send ``signed`` from ``sender``; ``intent(pull id)``: the intent held for that pull."""
    intents = [intent(r.pull) or bytes(65) for r in unpack_pulls(signed.pulls)]
    return contract.settle(
        sender, signed.payouts, signed.epoch, signed.claims, signed.signature,
        contract.claims_since(signed.claims), signed.not_before, prev_epoch=signed.prev,
        packed_confirms=signed.confirms, packed_pulls=signed.pulls,
        pull_signatures=pack_pull_signatures(intents), packed_pull_checks=signed.pull_checks,
        ledger=signed.ledger, anchor=signed.anchor, anchor_hash=signed.anchor_hash)


__all__ = ["land"]
