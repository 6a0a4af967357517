"""Plain transfers to A402Vault: a token ``transfer`` straight to the vault, which no ledger
credits, stays its sender's — proven by a receipt proof (``TransferProver``, checked against
the chain's block hashes) it is paid back in the sender's exit, once; money the vault takes in
by its own functions is never counted as one; a forged or stale proof changes nothing.
Real anvil, real receipts, every test asserts token balances."""

from __future__ import annotations

from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from eth_abi import decode, encode
from eth_account.signers.local import LocalAccount

from a402.chain.create2 import transfer_prover_address
from a402.chain.node import Chain
from a402.chain.receipts import receipt_proof
from a402.chain.tx import TransactionFailed, transact
from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import anchor_commitment, pack_payouts, settlement_digest
from a402.evm.keccak import keccak256 as keccak
from a402.evm.receipts import (
    PlainTransfer,
    ProofError,
    encode_receipt,
    header_rlp,
    link_headers,
    plain_transfers,
    proven_receipt,
    read_header,
)
from a402.vault_contract import A402Vault, AccountStatus

from .helpers import (
    SETTLE_WINDOW,
    balance,
    fund_pool,
    funded,
    increase_time,
    index_of,
    leave,
    reverts_with,
    statement,
)

pytestmark = pytest.mark.anvil


def _transfer(chain: Chain, usdc: Any, sender: LocalAccount, to: str, amount: int) -> Any:
    return transact(chain, sender, usdc.functions.transfer(to, amount))


PROOF = ("bytes[]", "uint256", "bytes[]", "uint256")


def _proof(chain: Chain, receipt: Any, log_index: int = 0) -> bytes:
    """The proof, once a block follows the transfer's (``BLOCKHASH`` does not know the block
    being built on)."""
    if int(chain.w3.eth.block_number) == receipt["blockNumber"]:
        chain.w3.provider.make_request("evm_mine", [])
    return receipt_proof(chain, receipt["transactionHash"], log_index)


def test_a_plain_transfer_is_paid_back_in_its_senders_exit_once(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    sender = funded(vault_chain, usdc, 300)
    sent = _transfer(vault_chain, usdc, sender, vault.address, 300)
    assert balance(usdc, vault.address) == 10_300  # in the pool, counted by no ledger
    proof = _proof(vault_chain, sent)
    receipt = vault.prove_transfer(gas_payer, proof)  # anyone sends it
    (event,) = vault.events("TransferProven", receipt)
    assert (event["from"], event["amount"]) == (sender.address, 300)
    assert event["position"] >> 64 == sent["blockNumber"]
    with reverts_with("TransferAlreadyProven(uint256)"):
        vault.prove_transfer(gas_payer, proof)
    # The vault goes dark; the sender exits with the statement it holds (1,000 of its own).
    leave(vault, gas_payer, *statement(vault_key, vault, sender.address, 1_000, nonce=2))
    assert vault.settlement_of(sender.address) == 1_300
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, sender.address)
    assert balance(usdc, sender.address) == 1_300
    assert balance(usdc, vault.address) == 9_000
    with reverts_with("TransferAlreadyProven(uint256)"):
        vault.prove_transfer(gas_payer, proof)
    assert balance(usdc, sender.address) == 1_300


def test_an_exit_pays_only_the_proven_transfers_its_statement_does_not_count(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """The enclave counted the first transfer (300, in the statement's balance and
    ``transferred``); the second (200) it never saw. Proving both pays the 200 on top, never
    the 300 twice; proving only the counted one adds nothing."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    sender = funded(vault_chain, usdc, 500)
    counted = _transfer(vault_chain, usdc, sender, vault.address, 300)
    hidden = _transfer(vault_chain, usdc, sender, vault.address, 200)
    vault.prove_transfer(gas_payer, _proof(vault_chain, counted))
    leave(vault, gas_payer, *statement(vault_key, vault, sender.address, 700, nonce=4,
                                       transferred=300))
    assert vault.settlement_of(sender.address) == 700  # proven 300 − counted 300: nothing more
    vault.prove_transfer(gas_payer, _proof(vault_chain, hidden))
    assert (vault.transferred(sender.address), vault.settlement_of(sender.address)) == (500, 900)
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, sender.address)
    assert balance(usdc, sender.address) == 900
    assert balance(usdc, vault.address) == 10_500 - 900


def test_a_transfer_proven_after_its_senders_exit_is_final_pays_only_what_it_adds(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """The final statement counted a 300 transfer nobody had proven: proving it afterwards
    pays nothing (the exit paid it in the balance); a late 250 top-up is paid at once."""
    fund_pool(vault_chain, usdc, vault, 5_000)
    sender = funded(vault_chain, usdc, 550)
    counted = _transfer(vault_chain, usdc, sender, vault.address, 300)
    leave(vault, gas_payer, *statement(vault_key, vault, sender.address, 300, nonce=1,
                                       transferred=300))
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, sender.address)
    assert vault.status(sender.address) is AccountStatus.SETTLED
    assert balance(usdc, sender.address) == 550
    vault.prove_transfer(gas_payer, _proof(vault_chain, counted))
    assert balance(usdc, sender.address) == 550  # counted already: paid by the exit
    late = _transfer(vault_chain, usdc, sender, vault.address, 250)
    assert balance(usdc, sender.address) == 300
    vault.prove_transfer(gas_payer, _proof(vault_chain, late))
    assert balance(usdc, sender.address) == 550
    assert balance(usdc, vault.address) == 5_000


def test_a_settlement_lands_only_if_its_anchor_is_the_chains_block(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """What makes the plain transfers the enclave read the chain's word: the header chain it
    read them from ends in a block whose hash the settlement carries."""
    w3 = vault_chain.w3
    fund_pool(vault_chain, usdc, vault, 1_000)
    payee = funded(vault_chain, usdc, eth=0)
    w3.provider.make_request("anvil_mine", [hex(3)])
    block = w3.eth.get_block(int(w3.eth.block_number) - 1)
    real = (int(block["number"]), anchor_commitment(bytes(block["hash"]), usdc.address))
    for anchor, anchor_hash in (
        (real[0], anchor_commitment(keccak(b"a forged chain"), usdc.address)),
        (real[0], anchor_commitment(bytes(block["hash"]), gas_payer.address)),  # another token
        (real[0] + 10, anchor_commitment(bytes(32), usdc.address)),  # not mined: hash 0
    ):
        with reverts_with("UnknownAnchor(uint64)"):
            _settle(vault, vault_key, gas_payer, payee.address, anchor, anchor_hash)
    _settle(vault, vault_key, gas_payer, payee.address, *real)
    assert balance(usdc, payee.address) == 100
    assert vault.last_epoch() == 1


def _settle(vault: A402Vault, key: EcdsaSigner, sender: LocalAccount, payee: str,
            anchor: int, anchor_hash: bytes) -> Any:
    packed = pack_payouts([(payee, index_of(payee), 100)])
    claims = vault.claim_state()
    signature = key.sign_digest(settlement_digest(vault.domain, 1, packed, claims,
                                                  anchor=anchor, anchor_hash=anchor_hash))
    return vault.settle(sender, packed, 1, claims, signature, anchor=anchor,
                        anchor_hash=anchor_hash)


def test_money_the_vault_takes_in_by_its_own_functions_is_not_a_plain_transfer(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount,
) -> None:
    """A deposit's Transfer log is in a transaction where the vault emits ``Deposited``: its
    own records count it already (the same holds for the pulls a settlement makes)."""
    depositor = funded(vault_chain, usdc, 400)
    transact(vault_chain, depositor, usdc.functions.approve(vault.address, 400))
    receipt = vault.deposit(depositor, depositor.address, 400)
    transfer_log = next(i for i, log in enumerate(receipt["logs"])
                        if log["address"] == usdc.address)
    with reverts_with("NotPlain()"):
        vault.prove_transfer(gas_payer, _proof(vault_chain, receipt, transfer_log))
    assert vault.deposited(depositor.address) == 400
    assert balance(usdc, vault.address) == 400


def test_a_proof_of_anything_but_a_transfer_to_the_vault_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount,
) -> None:
    sender = funded(vault_chain, usdc, 100)
    elsewhere = _transfer(vault_chain, usdc, sender, gas_payer.address, 40)
    approval = transact(vault_chain, sender, usdc.functions.approve(vault.address, 5))
    for receipt, log in ((elsewhere, 0), (approval, 0), (elsewhere, 1)):
        with reverts_with("NotATransfer()"):
            vault.prove_transfer(gas_payer, _proof(vault_chain, receipt, log))
    assert balance(usdc, vault.address) == 0


def test_a_forged_header_or_receipt_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount,
) -> None:
    """Every byte the prover reads is authenticated by the chain's block hash: change the
    header (any field, here its extra data), a header of the chain leading to a known one,
    or a trie node, and nothing is counted."""
    sender = funded(vault_chain, usdc, 100)
    sent = _transfer(vault_chain, usdc, sender, vault.address, 100)
    vault_chain.w3.provider.make_request("anvil_mine", [hex(3)])
    (header, *later), tx_index, nodes, log_index = decode(
        list(PROOF), receipt_proof(vault_chain, sent["transactionHash"], 0,
                                   through=sent["blockNumber"] + 2))
    fields = rlp.decode(header)
    fields[12] = b"a header of the host's"  # extraData: the same receipts, another hash
    with reverts_with("UnknownAnchor(uint64)"):  # its hash is not the chain's
        vault.prove_transfer(gas_payer, encode(PROOF, [[rlp.encode(fields)], tx_index, nodes,
                                                       log_index]))
    with reverts_with("UnknownBlock()"):  # the next header does not name it as parent
        vault.prove_transfer(gas_payer, encode(PROOF, [[rlp.encode(fields), *later], tx_index,
                                                       nodes, log_index]))
    with reverts_with("UnknownBlock()"):  # a header missing from the chain
        vault.prove_transfer(gas_payer, encode(PROOF, [[header, later[1]], tx_index, nodes,
                                                       log_index]))
    last = bytearray(nodes[-1])
    last[-40] ^= 1  # a byte of the receipt's log data: the amount
    forged_receipt = encode(PROOF, [[header, *later], tx_index, [*nodes[:-1], bytes(last)],
                                    log_index])
    with reverts_with("TrieProofTraversalError(uint8)"):
        vault.prove_transfer(gas_payer, forged_receipt)
    assert not vault.contract.functions.transferProven(
        sent["blockNumber"] << 64 | sent["transactionIndex"] << 32).call()


def test_a_transfer_is_proven_through_later_headers_to_a_block_the_vault_keeps(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """A landed settlement's anchor (or a ``checkpoint``) is kept for good: a transfer is
    proven through the headers from its block to it, however old both are. (The chain
    forgets a block after 8,191; not mined here: anvil takes ~25 s per 1,000 blocks.)"""
    fund_pool(vault_chain, usdc, vault, 1_000)
    sender = funded(vault_chain, usdc, 100)
    sent = _transfer(vault_chain, usdc, sender, vault.address, 100)
    vault_chain.w3.provider.make_request("anvil_mine", [hex(6)])
    w3 = vault_chain.w3
    anchor = sent["blockNumber"] + 4
    anchor_hash = bytes(w3.eth.get_block(anchor)["hash"])
    payee = funded(vault_chain, usdc, eth=0)
    _settle(vault, vault_key, gas_payer, payee.address, anchor,
            anchor_commitment(anchor_hash, usdc.address))
    assert vault.block_hash(anchor) == anchor_hash  # kept by the settlement
    receipt = vault.prove_transfer(gas_payer, receipt_proof(
        vault_chain, sent["transactionHash"], 0, through=anchor))
    assert [e["amount"] for e in vault.events("TransferProven", receipt)] == [100]
    later = _transfer(vault_chain, usdc, sender, vault.address, 0)
    vault_chain.w3.provider.make_request("evm_mine", [])
    vault.checkpoint(gas_payer, later["blockNumber"])
    assert vault.block_hash(later["blockNumber"]) == bytes(
        w3.eth.get_block(later["blockNumber"])["hash"])
    with reverts_with("UnknownAnchor(uint64)"):  # not mined yet: nothing to keep
        vault.checkpoint(gas_payer, int(w3.eth.block_number) + 5)


def test_a_settlement_with_anchor_zero_is_checked_like_any_other(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    gas_payer: LocalAccount,
) -> None:
    """Review s17b-1: the anchor hash, not the number, says whether a settlement confirms
    plain transfers; "block 0" with a hash of the host's own is refused."""
    fund_pool(vault_chain, usdc, vault, 1_000)
    payee = funded(vault_chain, usdc, eth=0)
    forged = anchor_commitment(keccak(b"a header of the host's numbered 0"), usdc.address)
    with reverts_with("UnknownAnchor(uint64)"):
        _settle(vault, vault_key, gas_payer, payee.address, 0, forged)
    assert balance(usdc, payee.address) == 0


def test_a_transfer_older_than_blockhashs_256_blocks_is_proven_through_eip_2935(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount,
) -> None:
    """Past ``BLOCKHASH``'s 256 blocks the hash comes from the EIP-2935 history contract
    (8,191 blocks; beyond, the hash is zero and the proof is refused like a forged header:
    not mined here, anvil takes ~25 s per 1,000 blocks)."""
    sender = funded(vault_chain, usdc, 100)
    sent = _transfer(vault_chain, usdc, sender, vault.address, 100)
    proof = _proof(vault_chain, sent)
    vault_chain.w3.provider.make_request("anvil_mine", [hex(300)])
    receipt = vault.prove_transfer(gas_payer, proof)
    assert [e["amount"] for e in vault.events("TransferProven", receipt)] == [100]


def test_the_prover_is_one_contract_at_the_address_its_code_fixes(
    vault_chain: Chain, vault: A402Vault,
) -> None:
    assert vault.contract.functions.transferProver().call() == transfer_prover_address()
    assert vault_chain.w3.eth.get_code(transfer_prover_address())


# ----------------------------------------------- the enclave's reading (a402.evm.receipts)


def _headers(chain: Chain, first: int, last: int) -> list[bytes]:
    return [header_rlp(chain.w3.eth.get_block(n)) for n in range(first, last + 1)]


def test_the_enclaves_reading_of_a_receipt_proof_agrees_with_the_contracts(
    vault_chain: Chain, usdc: Any, vault: A402Vault, gas_payer: LocalAccount,
) -> None:
    """For each receipt, :func:`plain_transfers` finds what ``proveTransfer`` accepts: the
    transfer to the vault; not a deposit's transfer, one elsewhere, or an approval."""
    sender = funded(vault_chain, usdc, 1_000)
    transact(vault_chain, sender, usdc.functions.approve(vault.address, 100))
    cases = [
        (_transfer(vault_chain, usdc, sender, vault.address, 300), True),
        (vault.deposit(sender, sender.address, 100), False),
        (_transfer(vault_chain, usdc, sender, gas_payer.address, 5), False),
        (transact(vault_chain, sender, usdc.functions.approve(vault.address, 1)), False),
    ]
    for receipt, plain in cases:
        (header,), tx_index, nodes, _ = decode(PROOF, _proof(vault_chain, receipt))
        (head,) = link_headers([header])
        found = plain_transfers(proven_receipt(head, tx_index, nodes), token=usdc.address,
                                to=vault.address, block=head.number, tx_index=tx_index)
        log = next(i for i, entry in enumerate(receipt["logs"])
                   if entry["address"] == usdc.address)
        if plain:
            assert found == [PlainTransfer(sender.address, 300,
                                           head.number << 64 | tx_index << 32 | log)]
            vault.prove_transfer(gas_payer, _proof(vault_chain, receipt, log))
        else:
            assert found == []
            with pytest.raises(TransactionFailed):
                vault.prove_transfer(gas_payer, _proof(vault_chain, receipt, log))


def test_the_enclave_takes_headers_only_as_a_chain_and_receipts_only_with_their_proof(
    vault_chain: Chain, usdc: Any, vault: A402Vault,
) -> None:
    sender = funded(vault_chain, usdc, 100)
    sent = _transfer(vault_chain, usdc, sender, vault.address, 100)
    _, tx_index, nodes, _ = decode(PROOF, _proof(vault_chain, sent))
    vault_chain.w3.provider.make_request("anvil_mine", [hex(4)])
    n = sent["blockNumber"]
    chain = link_headers(_headers(vault_chain, n, n + 4))
    assert [h.number for h in chain] == list(range(n, n + 5))
    assert chain[-1].hash == bytes(vault_chain.w3.eth.get_block(n + 4)["hash"])
    assert link_headers(_headers(vault_chain, n + 5, n + 5), after=chain[-1])
    for broken in (_headers(vault_chain, n, n + 1) + _headers(vault_chain, n + 3, n + 4),
                   _headers(vault_chain, n + 1, n + 1) + _headers(vault_chain, n, n)):
        with pytest.raises(ProofError, match="does not follow"):
            link_headers(broken)
    fields = rlp.decode(_headers(vault_chain, n, n)[0])
    fields[5] = bytes(32)  # another receipts root: another hash, the child no longer links
    with pytest.raises(ProofError, match="does not follow"):
        link_headers([rlp.encode(fields), *_headers(vault_chain, n + 1, n + 1)])
    with pytest.raises(ProofError):
        read_header(b"\xc0" * 3)
    bad = [*nodes[:-1], bytes(nodes[-1][:-1]) + bytes([nodes[-1][-1] ^ 1])]
    with pytest.raises(ProofError, match="does not verify"):
        proven_receipt(chain[0], tx_index, bad)
    with pytest.raises(ProofError):
        proven_receipt(chain[0], tx_index + 7, nodes)
    assert proven_receipt(chain[0], tx_index, nodes) == encode_receipt(sent)
