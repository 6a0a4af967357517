"""The fixes of review s9, at the contract's and the enclave's own interfaces, on anvil:
the ledger life a first settlement pins (S9-5), exit credits (S9-6), calls that name their
payee (S9-3). The attacks themselves are played in ``test_review_s9.py``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import (
    EXIT_CREDIT,
    NO_LEDGER,
    BalanceStatement,
    pack_payouts,
    settlement_digest,
    statement_digest,
)
from a402.tee import EnclaveError
from a402.vault_contract import A402Vault, AccountStatus

from .accounts_setup import PRICE, Host, client
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
)
from .test_service import Harness

pytestmark = pytest.mark.anvil

OURS, THEIRS = b"\x11" * 16, b"\x22" * 16


def _settle(key: EcdsaSigner, vault: A402Vault, sender: Any,
            records: list[tuple[str, int, int]], ledger: bytes) -> Any:
    epoch = vault.last_epoch() + 1
    packed = pack_payouts(sorted(records, key=lambda r: r[1]))
    signature = key.sign_digest(settlement_digest(vault.domain, epoch, packed,
                                                  vault.claim_state(), ledger=ledger))
    return vault.settle(sender, packed, epoch, vault.claim_state(), signature, ledger=ledger)


def _statement(key: EcdsaSigner, vault: A402Vault, who: str, amount: int, epoch: int,
               nonce: int, ledger: bytes) -> tuple[BalanceStatement, bytes]:
    st = BalanceStatement(who, index_of(who), amount, 0, epoch, nonce, 0)
    return st, key.sign_digest(statement_digest(vault.domain, st, ledger))


def test_the_first_settlement_pins_its_ledger_life_and_no_other_life_lands_or_verifies(
    vault: A402Vault, vault_key: EcdsaSigner, usdc: Any, vault_chain: Any,
) -> None:
    """The same vault key signs for two ledger lives (a wiped ledger restarted): once the
    first settlement of life OURS landed, a settlement of THEIRS is refused
    (WrongLedger) and a statement of THEIRS does not verify; OURS's does, and so does an
    empty statement of epoch 0 (it names no life and pays only the chain's deposits)."""
    sender = funded(vault_chain, usdc)
    fund_pool(vault_chain, usdc, vault, 10_000)
    alice, bob = client(), client()
    _settle(vault_key, vault, sender, [(alice.address, index_of(alice.address), 1)], OURS)
    assert vault.ledger() == OURS and balance(usdc, alice.address) == 1
    with reverts_with("WrongLedger(bytes16,bytes16)"):
        _settle(vault_key, vault, sender, [(alice.address, index_of(alice.address), 1)],
                THEIRS)
    assert vault.last_epoch() == 1 and balance(usdc, alice.address) == 1
    forged = _statement(vault_key, vault, alice.address, 5_000, 1, 9, THEIRS)
    with reverts_with("BadSignature(address)"):
        leave(vault, sender, *forged)
    leave(vault, sender, *_statement(vault_key, vault, alice.address, 0, 1, 2, OURS))
    leave(vault, sender, *_statement(vault_key, vault, bob.address, 0, 0, 1, NO_LEDGER))
    increase_time(vault_chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(sender, alice.address)
    vault.final_force_settle(sender, bob.address)
    assert (balance(usdc, alice.address), balance(usdc, bob.address)) == (1, 0)


def test_an_exit_credit_is_paid_at_once_to_a_frozen_participant_and_moves_no_lane(
    vault: A402Vault, vault_key: EcdsaSigner, usdc: Any, vault_chain: Any,
) -> None:
    """Pat force-settles with her statement (1,000 at epoch 1). A settlement then pays her
    700 as an exit credit and 300 as an ordinary payout: the credit reaches her at once,
    the payout is withheld (her lane is frozen) and not added (her statement is gross of
    it); her exit then pays her statement's 1,000. Carl, active, gets an exit credit too:
    paid, and his lane (the last settlement that paid him) does not move."""
    sender = funded(vault_chain, usdc)
    fund_pool(vault_chain, usdc, vault, 10_000)
    pat, carl = client(), client()
    i_pat, i_carl = index_of(pat.address), index_of(carl.address)
    _settle(vault_key, vault, sender, [(pat.address, i_pat, 0), (carl.address, i_carl, 0)],
            OURS)
    leave(vault, sender, *_statement(vault_key, vault, pat.address, 1_000, 1, 3, OURS))
    _settle(vault_key, vault, sender, [(pat.address, i_pat | EXIT_CREDIT, 700),
                                       (pat.address, i_pat, 300),
                                       (carl.address, i_carl | EXIT_CREDIT, 50)], OURS)
    assert balance(usdc, pat.address) == 700 and balance(usdc, carl.address) == 50
    assert vault.lane(i_carl).last_paid_epoch == 1 and not vault.lane(i_carl).frozen
    increase_time(vault_chain, SETTLE_WINDOW + 1)
    vault.final_force_settle(sender, pat.address)
    assert balance(usdc, pat.address) == 1_700
    assert vault.status(pat.address) is AccountStatus.SETTLED


def test_a_call_that_names_no_payee_or_another_pays_nothing(host: Host) -> None:
    vm = host.vm
    alice = client()
    honest, other = vm.provider(), vm.provider()
    host.deposit(alice.address, 10_000)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)
    cid, _ = vm.open(alice, honest, 5 * PRICE)
    t0 = now(host.chain)
    vm.payees.pop(alice.address.lower())
    with pytest.raises(EnclaveError, match="payee_unsigned"):
        vm.vault.request(cid, vm.call(alice, key="none", ts=t0), PRICE, t0)
    with pytest.raises(EnclaveError, match="wrong_payee"):
        vm.vault.request(cid, vm.call(alice, key="other", ts=t0, pay_to=other.address),
                         PRICE, t0)
    assert vm.vault.balance(alice.address)[:2] == (5_000, 5_000)
    exec_ = vm.vault.request(cid, vm.call(alice, key="ok", ts=t0, pay_to=honest.address),
                             PRICE, t0)
    assert exec_.amount == PRICE


def test_a_service_whose_stored_ledger_is_gone_refuses_a_first_boot_once_a_settlement_landed(
    vault_chain: Any, usdc: Any, tmp_path: Path,
) -> None:
    """The host's database lost the sealed ledger (or the host deleted it) after epoch 1
    landed: the service refuses to start a new ledger life (nothing it signed would land,
    the contract is pinned to the first life) and says so; the chain is untouched."""
    h = Harness(vault_chain, usdc, tmp_path)
    alice = client()
    h.deposit(alice.address, 1_000)
    h.service.tick()
    assert h.contract.last_epoch() == 1
    with sqlite3.connect(tmp_path / "vault-mode.db") as db:
        db.execute("DELETE FROM a402_vault_meta WHERE key = ?", ("vault-mode/ledger",))
    with pytest.raises(ValueError, match="ledger is missing"):
        h.start()
    assert h.contract.last_epoch() == 1 and h.contract.deposited(alice.address) == 1_000
