"""A402Vault: deposits pulled inside the aggregated settlement ("Pulled deposits" in the
contract docs).

A participant signs the token's EIP-3009 ReceiveWithAuthorization to the vault (amount,
deadline, nonce `pullNonce(pull, ledger)`; no approval, no transaction); the vault key signs
the settlement that carries the pull record (participant, index, amount, pull id, deadline).
A pull that cannot be made is skipped (the rest lands), a pull id is made at most once,
later settlements prove pulls made or not made (pull checks), and a statement counting an
unconfirmed pull pays it on exit only if the pull was made. Every test asserts token balances.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractCustomError

from a402.chain.node import Chain
from a402.chain.tx import deploy_contract, transact
from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import (
    BalanceStatement,
    PullRecord,
    pack_payouts,
    pack_pull_checks,
    pack_pull_signatures,
    pack_pulls,
    pull_nonce,
    settlement_digest,
    statement_digest,
    unpack_pull_checks,
    unpack_pulls,
)
from a402.evm.keccak import keccak256
from a402.vault_contract import A402Vault, AccountStatus, Lane

from .helpers import (
    SETTLE_WINDOW,
    balance,
    fund_pool,
    funded,
    increase_time,
    index_of,
    leave,
    now,
    reverts_with,
    selector,
)
from .test_escape_hatch import Channel

pytestmark = pytest.mark.anvil

HOUR = 3_600


def _holding(chain: Chain, token: Any, tokens: int) -> LocalAccount:
    """A participant holding ``tokens`` and no ETH: a pull needs no transaction of its own."""
    return funded(chain, token, tokens, eth=0)


def _cancel(chain: Chain, token: Any, who: LocalAccount, pull: int,
            ledger: bytes = bytes(16)) -> None:
    """``who`` cancels its authorization for pull ``pull`` (of ledger life ``ledger``) by the
    token's EIP-3009 ``cancelAuthorization`` (sent by someone else: ``who`` holds no ETH); the
    nonce is then used and nothing moved."""
    nonce = pull_nonce(pull, ledger)
    typehash = keccak256(b"CancelAuthorization(address authorizer,bytes32 nonce)")
    struct = keccak256(typehash + bytes(12) + bytes.fromhex(who.address[2:]) + nonce)
    digest = keccak256(b"\x19\x01" + bytes(token.functions.DOMAIN_SEPARATOR().call()) + struct)
    sig = who.unsafe_sign_hash(digest)
    transact(chain, chain.accounts[0], token.functions.cancelAuthorization(
        who.address, nonce, sig.v, sig.r.to_bytes(32, "big"),
        sig.s.to_bytes(32, "big")))


def _pull(vault: A402Vault, who: LocalAccount, amount: int, pull: int, *,
          deadline: int | None = None, signer: LocalAccount | None = None,
          signed_amount: int | None = None, signed_pull: int | None = None
          ) -> tuple[PullRecord, bytes]:
    """A pull record and its intent, signed by ``signer`` (default: the participant) for
    ``signed_amount``/``signed_pull`` (default: the record's)."""
    end = now(vault.chain) + HOUR if deadline is None else deadline
    record = PullRecord(who.address, index_of(who.address), amount, pull, end)
    signature = vault.sign_pull(signer or who, who.address,
                                amount if signed_amount is None else signed_amount,
                                pull if signed_pull is None else signed_pull, end)
    return record, signature


def _settle(key: EcdsaSigner, vault: A402Vault, sender: LocalAccount,
            pulls: Sequence[tuple[PullRecord, bytes]] = (),
            payouts: Sequence[tuple[str, int]] = (),
            checks: Sequence[tuple[int, bool]] = ()) -> Any:
    """The next settlement, signed by the vault key over its pulls, checks and payouts."""
    epoch = vault.last_epoch() + 1
    packed = pack_payouts(sorted(((a, index_of(a), x) for a, x in payouts),
                                 key=lambda r: r[1]))
    records = pack_pulls(r for r, _ in pulls)
    intents = pack_pull_signatures(s for _, s in pulls)
    packed_checks = pack_pull_checks(checks)
    claims = vault.claim_state()
    signature = key.sign_digest(settlement_digest(
        vault.domain, epoch, packed, claims, packed_pulls=records,
        packed_pull_checks=packed_checks))
    return vault.settle(sender, packed, epoch, claims, signature, packed_pulls=records,
                        pull_signatures=intents, packed_pull_checks=packed_checks)


def _statement(key: EcdsaSigner, vault: A402Vault, who: str, balance_: int, *, epoch: int,
               nonce: int = 1, pull: int = 0, pulling: int = 0
               ) -> tuple[BalanceStatement, bytes]:
    st = BalanceStatement(who, index_of(who), balance_, 0, epoch, nonce, 0, pull, pulling)
    return st, key.sign_digest(statement_digest(vault.domain, st))


def _exit(vault: A402Vault, sender: LocalAccount, statements: Sequence[
        tuple[BalanceStatement, bytes]]) -> dict[str, int]:
    """Every statement's participant exits with it; what each was paid."""
    for st, sig in statements:
        leave(vault, sender, st, sig)
    increase_time(vault.chain, SETTLE_WINDOW)
    paid = {}
    for st, _ in statements:
        receipt = vault.final_force_settle(sender, st.participant)
        paid[st.participant] = int(vault.events("ForceSettleFinalized", receipt)[0]["payout"])
    return paid


# ------------------------------------------------------------------ encoders


def test_the_pure_pull_encoders_give_the_contracts_own_digests(vault: A402Vault) -> None:
    a, b = funded(vault.chain, None, eth=0).address, funded(vault.chain, None, eth=0).address
    records = [PullRecord(a.lower(), 7, 2**96 - 1, 1, 2**64 - 1),
               PullRecord(b.lower(), 2**31 - 1, 0, 2**31 - 1, 0)]
    packed = pack_pulls(records)
    assert len(packed) == 96 and unpack_pulls(packed) == records
    checks = pack_pull_checks([(1, True), (2**31 - 1, False)])
    assert checks.hex() == "00000001" + "ffffffff"
    assert unpack_pull_checks(checks) == [(1, True), (2**31 - 1, False)]
    for pulls, pull_checks in ((packed, b""), (b"", checks), (packed, checks)):
        assert settlement_digest(vault.domain, 3, b"", 9, 5, packed_pulls=pulls,
                                 packed_pull_checks=pull_checks) == vault.settlement_digest(
            3, b"", 9, 5, packed_pulls=pulls, packed_pull_checks=pull_checks)
    assert settlement_digest(vault.domain, 3, b"", 9, packed_pulls=packed) != (
        settlement_digest(vault.domain, 3, b"", 9, packed_pull_checks=packed[:48]))
    for ledger in (bytes(16), bytes(range(16))):
        assert pull_nonce(6, ledger) == vault.pull_nonce(6, ledger)
    st = BalanceStatement(a, 99, 123, 45, 6, 7, 8, 2**31 - 1, 2**128 - 1)
    assert statement_digest(vault.domain, st) == vault.statement_digest(st)
    for bad in (PullRecord(a, 1, 2**96, 1, 0), PullRecord(a, 2**31, 1, 1, 0),
                PullRecord(a, 1, 1, 0, 0), PullRecord(a, 1, 1, 2**31, 0)):
        with pytest.raises(ValueError):
            pack_pulls([bad])
    for bad_checks in ([(0, True)], [(2**31, False)]):
        with pytest.raises(ValueError):
            pack_pull_checks(bad_checks)
    with pytest.raises(ValueError):
        pack_pull_signatures([bytes(64)])
    with pytest.raises(ValueError):
        unpack_pulls(packed[:47])


# ------------------------------------------------------------------ pulls


def test_a_pull_moves_exactly_its_amount_and_sets_its_bit_without_touching_lane_or_deposits(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    receipt = _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 3_000, 1)])
    assert balance(usdc, alice.address) == 2_000
    assert balance(usdc, vault.address) == 3_000 == vault.available()
    assert vault.pulled(1) and not vault.pulled(2)
    assert vault.lane(index_of(alice.address)) == Lane(0, False)  # statements stay usable
    assert vault.deposited(alice.address) == 0  # no per-participant word
    assert vault.events("Settled", receipt) == [{"epoch": 1, "count": 0, "total": 0}]
    assert vault.events("Deposited", receipt) == []


def test_the_same_pull_id_again_reverts_the_settlement_and_moves_nothing(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice, bob = (_holding(vault_chain, usdc, 5_000) for _ in range(2))
    gas_payer = funded(vault_chain, usdc)
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 1_000, 300)])
    # In a later settlement (even for another participant's fresh intent) ...
    with reverts_with("PullRepeated(uint32)"):
        _settle(vault_key, vault, gas_payer, [_pull(vault, bob, 1_000, 300)])
    # ... or twice in one settlement.
    with reverts_with("PullRepeated(uint32)"):
        _settle(vault_key, vault, gas_payer,
                [_pull(vault, bob, 1_000, 301), _pull(vault, alice, 1_000, 301)])
    assert (balance(usdc, alice.address), balance(usdc, bob.address)) == (4_000, 5_000)
    assert balance(usdc, vault.address) == 1_000
    assert vault.last_epoch() == 1 and not vault.pulled(301)


def test_a_pull_that_cannot_be_made_is_skipped_and_the_rest_of_the_settlement_lands(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    fund_pool(vault_chain, usdc, vault, 10_000)
    good, forged, late, cancelled, poor, leaving = (
        _holding(vault_chain, usdc, 5_000) for _ in range(6))
    provider, gas_payer = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc)
    _cancel(vault_chain, usdc, cancelled, 4)
    transact(vault_chain, vault_chain.accounts[0], {"to": poor.address}, value=10**16)
    transact(vault_chain, poor, usdc.functions.transfer(gas_payer.address, 4_500))
    # `leaving` is force-settling when the settlement carrying its pull lands.
    _settle(vault_key, vault, gas_payer, payouts=[(leaving.address, 0)])
    leave(vault, gas_payer, *_statement(vault_key, vault, leaving.address, 0, epoch=1))
    pulls = [
        _pull(vault, good, 1_000, 1),
        _pull(vault, forged, 1_000, 2, signer=good),                   # not its signature
        _pull(vault, late, 1_000, 3, deadline=now(vault_chain) - 1),   # intent expired
        _pull(vault, cancelled, 1_000, 4),                             # authorization cancelled
        _pull(vault, poor, 1_000, 5),                                  # balance too low
        _pull(vault, leaving, 1_000, 6),                               # lane frozen
    ]
    receipt = _settle(vault_key, vault, gas_payer, pulls, payouts=[(provider.address, 700)])
    assert [vault.pulled(i) for i in range(1, 7)] == [True] + [False] * 5
    assert balance(usdc, good.address) == 4_000
    assert [balance(usdc, a.address) for a in (forged, late, cancelled, leaving)] == [5_000] * 4
    assert balance(usdc, poor.address) == 500
    assert balance(usdc, provider.address) == 700
    assert balance(usdc, vault.address) == 10_000 + 1_000 - 700
    assert vault.events("Settled", receipt) == [{"epoch": 2, "count": 1, "total": 700}]
    # A skipped pull's id is still free: a later settlement may make it (the authorization
    # holds), unless it was cancelled.
    transact(vault_chain, gas_payer, usdc.functions.transfer(poor.address, 4_500))
    _settle(vault_key, vault, gas_payer, [pulls[4], pulls[3]])
    assert vault.pulled(5) and balance(usdc, poor.address) == 4_000
    assert not vault.pulled(4) and balance(usdc, cancelled.address) == 5_000


def test_an_intent_signed_for_another_amount_or_pull_id_is_useless(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    more = _pull(vault, alice, 5_000, 7, signed_amount=100)   # the host raised the amount
    other = _pull(vault, alice, 100, 8, signed_pull=7)        # replayed under another id
    _settle(vault_key, vault, gas_payer, [more, other])
    assert not vault.pulled(7) and not vault.pulled(8)
    assert balance(usdc, alice.address) == 5_000 and balance(usdc, vault.address) == 0
    # The intent as signed works once, under its own id and amount.
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 100, 7)])
    assert vault.pulled(7) and balance(usdc, alice.address) == 4_900


def test_the_vault_key_binds_the_pull_records_a_sender_cannot_change_them(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    record, intent = _pull(vault, alice, 1_000, 1)
    signature = vault_key.sign_digest(settlement_digest(
        vault.domain, 1, b"", 0, packed_pulls=pack_pulls([record])))
    raised = PullRecord(record.participant, record.index, 5_000, 1, record.deadline)
    with reverts_with("BadSignature(address)"):
        vault.settle(gas_payer, b"", 1, 0, signature, packed_pulls=pack_pulls([raised]),
                     pull_signatures=intent)
    with reverts_with("MalformedPayouts()"):  # one intent signature per record
        vault.settle(gas_payer, b"", 1, 0, signature, packed_pulls=pack_pulls([record]),
                     pull_signatures=intent + intent)
    assert balance(usdc, alice.address) == 5_000 and vault.last_epoch() == 0


def test_a_contract_wallet_pulls_by_eip1271_and_one_that_burns_gas_is_only_skipped(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    deployer = vault_chain.accounts[0]
    owner, gas_payer = funded(vault_chain, usdc, eth=0), funded(vault_chain, usdc)
    wallets = []
    for burn in (0, 10**7):  # the second uses any gas it is given
        w = deploy_contract(vault_chain, deployer, "GasBurningWallet", owner.address, burn)
        transact(vault_chain, deployer, usdc.functions.mint(w.address, 1_000))
        wallets.append(w)
    end = now(vault_chain) + HOUR
    pulls = []
    for pull, w in enumerate(wallets, start=1):
        record = PullRecord(w.address, index_of(w.address), 1_000, pull, end)
        pulls.append((record, vault.sign_pull(owner, w.address, 1_000, pull, end)))
    # Sent with too little gas to give the token call its whole PULL_GAS, the settlement
    # reverts (a sender cannot starve a good pull into a skip).
    records, intents = pack_pulls([pulls[0][0]]), pulls[0][1]
    signature = vault_key.sign_digest(settlement_digest(vault.domain, 1, b"", 0,
                                                        packed_pulls=records))
    starved = vault.contract.functions.settle((0, 1, 0, 0, bytes(16), 0, bytes(32)), b"", b"",
                                              (records, intents, b""), b"", signature)
    with pytest.raises(ContractCustomError, match=selector("InsufficientGas()")):
        starved.call({"from": gas_payer.address, "gas": 200_000})
    assert starved.estimate_gas({"from": gas_payer.address}) > 250_000
    _settle(vault_key, vault, gas_payer, pulls)
    assert vault.pulled(1) and not vault.pulled(2)
    assert [balance(usdc, w.address) for w in wallets] == [0, 1_000]
    assert balance(usdc, vault.address) == 1_000


def test_a_token_without_eip3009_skips_every_pull_and_moves_nothing(
    vault_chain: Chain, vault_key: EcdsaSigner
) -> None:
    deployer = vault_chain.accounts[0]
    plain = deploy_contract(vault_chain, deployer, "FeeOnTransferToken")  # no EIP-3009
    plain_vault = A402Vault.deploy(vault_chain, deployer, plain.address,
                                   "0x" + vault_key.address.hex(), SETTLE_WINDOW)
    alice, gas_payer = _holding(vault_chain, plain, 1_000), funded(vault_chain, None)
    record = PullRecord(alice.address, index_of(alice.address), 1_000, 1, now(vault_chain) + HOUR)
    _settle(vault_key, plain_vault, gas_payer, [(record, bytes(65))])
    assert plain_vault.last_epoch() == 1 and not plain_vault.pulled(1)
    assert balance(plain, alice.address) == 1_000 and balance(plain, plain_vault.address) == 0


# ------------------------------------------------------------------ pull checks


def test_pull_checks_confirm_made_pulls_and_void_unmade_ones(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice, bob = (_holding(vault_chain, usdc, 5_000) for _ in range(2))
    gas_payer = funded(vault_chain, usdc)
    _cancel(vault_chain, usdc, bob, 2)
    _settle(vault_key, vault, gas_payer,
            [_pull(vault, alice, 1_000, 1), _pull(vault, bob, 1_000, 2)])
    assert (vault.pulled(1), vault.pulled(2)) == (True, False)
    for wrong, error in (([(2, True)], "PullNotMade(uint32)"),
                         ([(1, False)], "PullMade(uint32)"),
                         ([(1, True), (9, True)], "PullNotMade(uint32)")):
        with reverts_with(error):
            _settle(vault_key, vault, gas_payer, checks=wrong)
    _settle(vault_key, vault, gas_payer, checks=[(1, True), (2, False), (2**31 - 1, False)])
    assert vault.last_epoch() == 2
    # Checks read the bitmap a settlement leaves: its own pulls count.
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 500, 600)], checks=[(600, True)])
    _cancel(vault_chain, usdc, bob, 601)
    with reverts_with("PullNotMade(uint32)"):
        _settle(vault_key, vault, gas_payer, [_pull(vault, bob, 500, 601)], checks=[(601, True)])
    assert balance(usdc, alice.address) == 3_500 and balance(usdc, bob.address) == 5_000
    assert balance(usdc, vault.address) == 1_500


# ------------------------------------------------------------------ force-settle


def test_an_exit_with_a_statement_counting_an_unmade_pull_pays_that_pull_less(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """Alice's statement counts her pull (1,000) and 500 a provider paid her; her pull
    failed (she cancelled its authorization): her exit pays 500. Bob's identical one was made: his
    pays 1,500."""
    fund_pool(vault_chain, usdc, vault, 1_000)
    alice, bob = (_holding(vault_chain, usdc, 5_000) for _ in range(2))
    gas_payer = funded(vault_chain, usdc)
    _cancel(vault_chain, usdc, alice, 1)
    _settle(vault_key, vault, gas_payer,
            [_pull(vault, alice, 1_000, 1), _pull(vault, bob, 1_000, 2)])
    paid = _exit(vault, gas_payer, [
        _statement(vault_key, vault, alice.address, 1_500, epoch=1, pull=1, pulling=1_000),
        _statement(vault_key, vault, bob.address, 1_500, epoch=1, pull=2, pulling=1_000)])
    assert paid == {alice.address: 500, bob.address: 1_500}
    assert balance(usdc, alice.address) == 5_500 and balance(usdc, bob.address) == 5_500
    assert balance(usdc, vault.address) == 0


def test_a_pull_landing_after_its_participants_exit_started_is_skipped_and_not_paid(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """The enclave handed Alice a statement counting pull 1 before the settlement carrying
    it landed; she exits first: the pull is skipped (her lane is frozen), the bit stays clear
    and her exit pays the statement less that pull, whatever lands in between."""
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    _settle(vault_key, vault, gas_payer, payouts=[(alice.address, 0)])
    st = _statement(vault_key, vault, alice.address, 1_000, epoch=1, pull=1, pulling=1_000)
    leave(vault, gas_payer, *st)
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 1_000, 1)])
    assert not vault.pulled(1) and balance(usdc, alice.address) == 5_000
    recorded = vault.force_settle(alice.address)
    assert (recorded.pull, recorded.pulling, recorded.balance) == (1, 1_000, 1_000)
    assert vault.settlement_of(alice.address) == 0
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, alice.address)
    assert balance(usdc, alice.address) == 5_000 and balance(usdc, vault.address) == 0
    assert vault.status(alice.address) == AccountStatus.SETTLED


def test_a_challenge_replaces_the_recorded_pull_with_the_newer_statements(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """Alice exits with a stale statement that counts her failed pull 1 as unmade money and
    nothing else; the watchtower answers with the newer one (pull 2, made, plus 300 she was
    paid): the exit pays the newer one in full."""
    fund_pool(vault_chain, usdc, vault, 300)
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 1_000, 1, deadline=0),
                                          _pull(vault, alice, 1_000, 2)])
    leave(vault, gas_payer, *_statement(vault_key, vault, alice.address, 1_000, epoch=1,
                                        pull=1, pulling=1_000))
    assert vault.settlement_of(alice.address) == 0
    vault.challenge_force_settle(gas_payer, *_statement(
        vault_key, vault, alice.address, 1_300, epoch=1, nonce=2, pull=2, pulling=1_000))
    assert vault.settlement_of(alice.address) == 1_300
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, alice.address)
    assert balance(usdc, alice.address) == 4_000 + 1_300 and balance(usdc, vault.address) == 0


@pytest.mark.parametrize(("made", "balance_", "paid"), [
    (False, 1_000, 0),      # 1,000 + 700 − 700 claimed − 1,000 never pulled
    (True, 1_000, 1_000),   # the pull was made: only the claim comes off
    (False, 500, 0),        # the deductions exceed what it counts: zero, not a revert
])
def test_an_exit_takes_off_both_the_claims_and_an_unmade_pull_never_below_zero(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner,
    made: bool, balance_: int, paid: int,
) -> None:
    """The client's statement (nonce 5) counts its pull of 1,000 in `balance` and a pending
    payment of 700 in `locked`; the provider claims the 700 while the client exits."""
    fund_pool(vault_chain, usdc, vault, 10_000)
    ch = Channel(vault_chain, usdc, vault, vault_key, amount=700, client_nonce=5,
                 deadline=now(vault_chain) + 3 * SETTLE_WINDOW)
    client, gas_payer = ch.client, funded(vault_chain, usdc)
    transact(vault_chain, vault_chain.accounts[0], {"to": client.address}, value=10**17)
    transact(vault_chain, vault_chain.accounts[0], usdc.functions.mint(client.address, 5_000))
    if not made:
        _cancel(vault_chain, usdc, client, 1)
    _settle(vault_key, vault, gas_payer, [_pull(vault, client, 1_000, 1)])
    assert vault.pulled(1) is made
    st = BalanceStatement(client.address, index_of(client.address), balance_, 700, 1, 5, 0, 1,
                          1_000)
    leave(vault, gas_payer, st, vault_key.sign_digest(statement_digest(vault.domain, st)))
    vault.claim_payment(gas_payer, ch.terms, ch.claim())
    assert vault.settlement_of(client.address) == paid
    increase_time(vault_chain, SETTLE_WINDOW)
    vault.final_force_settle(gas_payer, client.address)
    assert balance(usdc, client.address) == 5_000 - (1_000 if made else 0) + paid
    assert balance(usdc, ch.provider.address) == 700
    assert balance(usdc, vault.address) == 10_000 + (1_000 if made else 0) - 700 - paid


def test_a_statement_whose_pulling_does_not_fit_uint128_is_refused(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    alice = _holding(vault_chain, usdc, 5_000)
    gas_payer = funded(vault_chain, usdc)
    _settle(vault_key, vault, gas_payer, [_pull(vault, alice, 1_000, 1)])
    st = BalanceStatement(alice.address, index_of(alice.address), 1_000, 0, 1, 1, 0, 1, 2**128)
    with reverts_with("InvalidTerms()"):
        vault.init_force_settle(alice, st, os.urandom(65))
    assert vault.status(alice.address) == AccountStatus.ACTIVE


# ------------------------------------------------------------------ conservation


def test_every_exit_after_pulls_confirms_voids_and_payouts_is_covered_by_the_pool(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    """A, B, C pull 1,000 each (C's fails); the next settlement confirms A's and B's pulls,
    voids C's, and pays B 300 that A paid him. Each exits with its latest statement; the pool
    pays every exit and ends empty: nothing created, nothing stranded."""
    a, b, c = (_holding(vault_chain, usdc, 5_000) for _ in range(3))
    gas_payer = funded(vault_chain, usdc)
    _cancel(vault_chain, usdc, c, 3)
    _settle(vault_key, vault, gas_payer,
            [_pull(vault, a, 1_000, 1), _pull(vault, b, 1_000, 2), _pull(vault, c, 1_000, 3)])
    assert balance(usdc, vault.address) == 2_000
    _settle(vault_key, vault, gas_payer, payouts=[(b.address, 300)],
            checks=[(1, True), (2, True), (3, False)])
    statements = [
        _statement(vault_key, vault, a.address, 700, epoch=2, nonce=2),
        _statement(vault_key, vault, b.address, 1_000, epoch=2, nonce=2),
        # C's newest statement still counts its pull: self-correcting, it pays 0.
        _statement(vault_key, vault, c.address, 1_000, epoch=1, pull=3, pulling=1_000),
    ]
    for st, sig in statements:
        leave(vault, gas_payer, st, sig)
    owed = sum(vault.settlement_of(st.participant) for st, _ in statements)
    assert owed == 1_700 == balance(usdc, vault.address) == vault.available()
    increase_time(vault_chain, SETTLE_WINDOW)
    for st, _ in statements:
        vault.final_force_settle(gas_payer, st.participant)
    assert [balance(usdc, x.address) for x in (a, b, c)] == [4_700, 5_300, 5_000]
    assert balance(usdc, vault.address) == 0

