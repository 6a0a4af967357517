"""Plain transfers as deposits, end to end on anvil: a participant sends the vault's token
straight to the A402Vault (one ``transfer``, the cheapest way in); the vault-mode host hands
its enclave the headers and receipt proofs, the enclave credits the sender, a settlement
anchored at the last header it read confirms it, and from then on it is money like any
other: spent, paid out, counted in statements (``transferred``), conserved. A host that
hands over a forged chain or receipt credits nothing; one that hides a transfer cannot keep
it from its sender's exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from eth_account import Account

from a402.chain.node import Chain
from a402.chain.receipts import block_receipts_trie, trie_proof
from a402.chain.tx import transact
from a402.evm.receipts import header_rlp
from a402.tee import EnclaveError
from a402.vault_contract import AccountStatus

from .helpers import SETTLE_WINDOW, balance, funded, increase_time, reverts_with
from .test_service import Harness, conserved, verifies

pytestmark = pytest.mark.anvil


@pytest.fixture
def h(vault_chain: Chain, usdc: Any, tmp_path: Path) -> Harness:
    return Harness(vault_chain, usdc, tmp_path)


def _send(h: Harness, sender: Any, amount: int) -> Any:
    """The transfer, and a block after it (the host reads no transfer in the newest block)."""
    sent = transact(h.chain, sender, h.usdc.functions.transfer(h.contract.address, amount))
    h.chain.w3.provider.make_request("evm_mine", [])
    return sent


def test_a_plain_transfer_is_credited_once_a_settlement_anchors_it_then_spent_like_a_deposit(
    h: Harness, vault_chain: Chain,
) -> None:
    sender = funded(vault_chain, h.usdc, 7_000)
    first = _send(h, sender, 5_000)
    h.service.tick()  # reads it, confirms it in a settlement anchored after its block
    assert h.contract.last_epoch() == 1
    seen = h.service.balance(sender.address)
    assert (seen["free"], seen["locked"], seen["unconfirmed"]) == ("5000", "0", "0")
    statement = h.service.statement(sender.address)
    assert (statement.statement.balance, statement.statement.transferred) == (5_000, 5_000)
    assert verifies(h, statement)
    conserved(h)
    assert h.service.accounts.totals()["transferred"] == 5_000
    # Once: the next round reads only later blocks, and a second transfer adds to it.
    _send(h, sender, 2_000)
    h.service.tick()
    assert h.service.balance(sender.address)["free"] == "7000"
    assert h.service.statement(sender.address).statement.transferred == 7_000
    assert h.contract.last_epoch() == 2
    conserved(h)
    # Spent like any money: withdrawn in the scheduler's batch (two payees at least).
    other = funded(vault_chain, h.usdc, 1_000)
    _send(h, other, 1_000)
    h.service.tick()
    h.service.withdraw(sender.address, 3_000)
    h.service.withdraw(other.address, 1_000)
    h.service.tick()
    assert (h.paid_to(sender.address), h.paid_to(other.address)) == (3_000, 1_000)
    assert balance(h.usdc, h.contract.address) == 4_000
    conserved(h)
    # Read but not yet anchored, across a restart (the journal entry carries it).
    late = funded(vault_chain, h.usdc, 250)
    _send(h, late, 250)
    assert h.service.observe_deposits() == 0  # (counts Deposited records only)
    assert h.service.accounts.balance(late.address) == (0, 0, 250)
    restarted = h.start()
    assert restarted.accounts.balance(late.address) == (0, 0, 250)
    assert restarted.accounts.transfer_tip == h.service.accounts.transfer_tip
    h.service = restarted
    h.service.tick()
    assert h.service.balance(late.address)["free"] == "250"
    conserved(h)
    # A restart from the sealed ledger reads on from where it stopped: nothing twice.
    tip = h.service.accounts.transfer_tip
    again = h.start()
    assert again.accounts.transfer_tip == tip
    again.tick()
    assert again.balance(sender.address)["free"] == "4000"
    assert again.accounts.totals()["transferred"] == 8_250
    assert first["blockNumber"] <= tip[0]


def test_the_exit_pays_a_credited_transfer_once_and_a_hidden_one_by_its_proof(
    h: Harness, vault_chain: Chain, usdc: Any,
) -> None:
    from a402.chain.receipts import receipt_proof

    sender = funded(vault_chain, usdc, 1_000)
    credited = _send(h, sender, 600)
    h.service.tick()
    kept = h.service.statement(sender.address)
    assert kept.statement.transferred == 600
    del h.service  # the vault goes dark; a later transfer is read by nobody
    hidden = _send(h, sender, 400)
    vault_chain.w3.provider.make_request("evm_mine", [])
    gas = funded(vault_chain, usdc)
    for receipt in (credited, hidden):  # the sender proves both: only the hidden one adds
        h.contract.prove_transfer(gas, receipt_proof(vault_chain, receipt["transactionHash"], 0))
    order = h.contract.exit_order(sender, kept.statement)
    h.contract.init_force_settle(gas, kept.statement, kept.signature, order)
    increase_time(vault_chain, SETTLE_WINDOW)
    h.contract.final_force_settle(gas, sender.address)
    assert h.contract.status(sender.address) is AccountStatus.SETTLED
    assert h.paid_to(sender.address) == 1_000
    assert balance(usdc, h.contract.address) == 0


def test_a_host_that_forges_the_chain_or_a_receipt_credits_nothing(
    h: Harness, vault_chain: Chain,
) -> None:
    accounts = h.service.accounts
    sender = funded(vault_chain, h.usdc, 900)
    sent = _send(h, sender, 900)
    n = int(sent["blockNumber"])
    vault_chain.w3.provider.make_request("anvil_mine", [hex(2)])
    header, trie = block_receipts_trie(vault_chain, n)
    index = int(sent["transactionIndex"])
    proof = trie_proof(trie, index)
    after = [header_rlp(vault_chain.w3.eth.get_block(k)) for k in (n + 1, n + 2)]
    fields = rlp.decode(header)
    fields[12] = b"another chain"  # extraData: a header of the host's, with the same receipts
    forged = rlp.encode(fields)
    refused = [
        ([forged, *after], [(n, index, proof)]),          # the next header does not link
        ([header, *after[1:]], [(n, index, proof)]),       # a header missing
        ([header, *after], [(n, index, proof[:-1])]),      # a receipt without its proof
        ([header, *after], [(n + 1, index, proof)]),       # the proof of another block
        ([header, *after], [(n, index, proof), (n, index, proof)]),  # the same receipt twice
        ([rlp.encode([*fields[:8], b"", *fields[9:]])], [(0, index, proof)]),  # "block 0"
    ]
    for headers, receipts in refused:
        with pytest.raises(EnclaveError) as e:
            accounts.read_transfers(headers, receipts)
        assert e.value.reason == "bad_transfers"
    assert accounts.transfer_tip is None and accounts.balance(sender.address) == (0, 0, 0)
    # A forged chain the enclave cannot tell from the real one (the host's own headers,
    # linked): the settlement anchoring it does not land, and nothing it signed is usable.
    fake_receipts = [(n, index, proof)]
    assert accounts.read_transfers([forged], fake_receipts) == 1
    signed = h.service.accounts.settle([], now=int(vault_chain.w3.eth.get_block("latest")
                                                   ["timestamp"]))
    from a402.vault.landing import land

    with reverts_with("UnknownAnchor(uint64)"):
        land(h.contract, h.operator, signed.settlement)
    assert h.contract.last_epoch() == 0


def test_a_transfer_of_another_token_or_to_another_address_is_not_credited(
    h: Harness, vault_chain: Chain, usdc: Any,
) -> None:
    from a402.chain.tx import deploy_contract

    other = deploy_contract(vault_chain, vault_chain.accounts[0], "TestUSDC", "USD Coin",
                            "USDC", "2", vault_chain.accounts[0].address)
    sender = funded(vault_chain, usdc, 100)
    transact(vault_chain, vault_chain.accounts[0], other.functions.mint(sender.address, 100))
    transact(vault_chain, sender, other.functions.transfer(h.contract.address, 100))
    transact(vault_chain, sender, usdc.functions.transfer(Account.create().address, 50))
    h.service.tick()
    assert h.service.accounts.balance(sender.address) == (0, 0, 0)
    assert h.contract.last_epoch() == 0


def test_a_round_whose_transfer_reading_fails_still_reads_deposits_and_says_why(
    h: Harness, vault_chain: Chain,
) -> None:
    """Review s17b-4: reading plain transfers is no precondition of the rest of the round
    (a node that fails, or an enclave that refuses what it was handed); a store that fails
    stops the round as anywhere else (``test_payout_crash``)."""
    def down(start: int, end: int, *, first: bool) -> Any:
        raise ValueError("the node refused eth_getLogs")

    h.service._transfers_in = down  # type: ignore[method-assign]
    sender = funded(vault_chain, h.usdc, 100)
    _send(h, sender, 100)
    client = Account.create()
    h.deposit(client.address, 700)
    h.service.tick()
    assert h.service.balance(client.address)["free"] == "700"
    assert h.service.status()["transfersError"] == "ValueError: the node refused eth_getLogs"
    assert h.service.accounts.balance(sender.address) == (0, 0, 0)
    del h.service._transfers_in  # the node answers again: read, credited, confirmed
    vault_chain.w3.provider.make_request("evm_mine", [])
    h.service.tick()
    assert h.service.status()["transfersError"] is None
    assert h.service.balance(sender.address)["free"] == "100"
