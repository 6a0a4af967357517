"""Landing a settlement the vault's enclave signed (``A402Vault.settle``), the one way the
host, its watchtower and the tests send one: every signed field as signed, the claims mined
since it was signed, each pull with its participant's intent (65 zero bytes for one not
held: the contract skips that pull and the next settlement drops it), and its anchor kept
first if the chain is about to forget it."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from a402.crypto.vault_messages import pack_pull_signatures, unpack_pulls
from a402.vault_accounts import SignedSettlement
from a402.vault_contract import A402Vault

#: An anchor older than this many blocks is kept by ``A402Vault.checkpoint`` before its
#: settlement is sent: the chain forgets a block hash after 8,191, and a settlement whose anchor
#: it forgot could never land, nor any after it (review s17b-2).
CHECKPOINT_AGE = 4_096


def land(contract: A402Vault, sender: LocalAccount, signed: SignedSettlement,
         intent: Callable[[int], bytes | None] = lambda pull: None) -> TxReceipt:
    """Send ``signed`` from ``sender``; ``intent(pull id)``: the intent held for that pull."""
    if (signed.anchor_hash != bytes(32)
            and int(contract.chain.w3.eth.block_number) - signed.anchor > CHECKPOINT_AGE
            and contract.block_hash(signed.anchor) == bytes(32)):
        contract.checkpoint(sender, signed.anchor)
    intents = [intent(r.pull) or bytes(65) for r in unpack_pulls(signed.pulls)]
    return contract.settle(
        sender, signed.payouts, signed.epoch, signed.claims, signed.signature,
        contract.claims_since(signed.claims), signed.not_before, prev_epoch=signed.prev,
        packed_confirms=signed.confirms, packed_pulls=signed.pulls,
        pull_signatures=pack_pull_signatures(intents), packed_pull_checks=signed.pull_checks,
        ledger=signed.ledger, anchor=signed.anchor, anchor_hash=signed.anchor_hash)


__all__ = ["CHECKPOINT_AGE", "land"]
