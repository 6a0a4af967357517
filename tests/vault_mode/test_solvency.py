"""Randomized: deposits, off-chain payments, settlements (some naming a participant that
is already exiting, as a settlement signed before the enclave learnt of it would), stale
and fresh force-settles, challenges and exits, on anvil. After every step the pool holds
exactly what was deposited minus what was paid; every participant's tokens plus what the
vault still owes it equal everything it was ever credited; an exited participant holds all
of it (nothing lost, nothing paid twice); and a force-settle asking more than the pool
holds is refused rather than paid from nothing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact
from a402.crypto import EcdsaSigner
from a402.crypto.vault_messages import BalanceStatement
from a402.vault_contract import A402Vault, AccountStatus

from .helpers import (
    MAX_UINT,
    SETTLE_WINDOW,
    balance,
    funded,
    increase_time,
    index_of,
    leave,
    reverts_with,
    settle,
    statement,
)

pytestmark = pytest.mark.anvil


@dataclass
class Participant:
    account: LocalAccount
    free: int = 0          # the enclave's ledger: what the vault owes it now
    credited: int = 0      # everything ever credited to it (deposits + earnings - spending)
    nonce: int = 0
    deposited: int = 0     # counted by its statements from the next one on
    onchain: int = 0       # its ``deposited`` on-chain (more if a deposit is not counted yet)
    statements: list[tuple[BalanceStatement, bytes]] | None = None
    exiting: bool = False
    exited: bool = False

    @property
    def address(self) -> str:
        return self.account.address


def test_no_sequence_of_settlements_and_force_settles_pays_more_than_was_deposited(
    vault_chain: Chain, usdc: Any, vault: A402Vault, vault_key: EcdsaSigner
) -> None:
    rng = random.Random(402)
    funder = funded(vault_chain, usdc, 10**12)
    transact(vault_chain, funder, usdc.functions.approve(vault.address, MAX_UINT))
    gas = funded(vault_chain, usdc)
    people = [Participant(funded(vault_chain, usdc, eth=0), statements=[]) for _ in range(8)]
    deposited = 0
    epoch = 0
    withheld_counted = 0

    def sign(p: Participant) -> None:
        p.nonce += 1
        assert p.statements is not None
        p.statements.append(statement(vault_key, vault, p.address, p.free, epoch=epoch,
                                      nonce=p.nonce, deposited=p.deposited))

    def check() -> None:
        held = balance(usdc, vault.address)
        paid = sum(balance(usdc, p.address) for p in people)
        assert held + paid == deposited
        assert held >= vault.available() >= 0
        for p in people:
            if p.exited:
                assert balance(usdc, p.address) == p.credited
            elif not p.exiting:
                unconfirmed = p.onchain - p.deposited
                assert vault.deposited(p.address) == p.onchain
                assert balance(usdc, p.address) + p.free + unconfirmed == p.credited

    for _ in range(70):
        active = [p for p in people if not p.exiting]
        op = rng.choice(["deposit", "deposit", "unconfirmed", "pay", "pay", "settle", "settle",
                         "exit", "final"])
        if op == "deposit" and active:
            # Confirmed: its statements count it from now on (with any earlier one not yet).
            p, amount = rng.choice(active), rng.randint(1, 5_000)
            vault.deposit(funder, p.address, amount)
            deposited += amount
            p.onchain += amount
            p.credited += amount
            p.free += p.onchain - p.deposited
            p.deposited = p.onchain
            sign(p)
        elif op == "unconfirmed" and active:
            # A deposit no statement counts yet (the vault went dark, or has not confirmed it):
            # the exit pays it on top of whatever statement wins (review F2).
            p, amount = rng.choice(active), rng.randint(1, 5_000)
            vault.deposit(funder, p.address, amount)
            deposited += amount
            p.onchain += amount
            p.credited += amount
        elif op == "pay" and len(active) >= 2:
            c, s = rng.sample(active, 2)
            x = rng.randint(0, c.free)
            c.free, c.credited, s.free, s.credited = c.free - x, c.credited - x, s.free + x, \
                s.credited + x
            sign(c)
            sign(s)
        elif op == "settle":
            payees = [p for p in active if p.free]
            chosen = rng.sample(payees, rng.randint(0, len(payees)))
            # A settlement signed before the enclave learnt that someone is exiting.
            late = [p for p in people if p.exiting and not p.exited and p.free]
            chosen += rng.sample(late, min(len(late), rng.randint(0, 1)))
            if not chosen:
                continue
            amounts = {p.address: rng.randint(1, p.free) for p in chosen}
            epoch += 1
            settle(vault_key, vault, gas, [(a, x) for a, x in amounts.items()])
            for p in chosen:
                p.free -= amounts[p.address]  # the enclave debits when it signs
                sign(p)
                if p.exiting and rng.random() < 0.5:  # the newest is net of the withheld
                    vault.challenge_force_settle(gas, *p.statements[-1])  # type: ignore[index]
                    withheld_counted += 1
        elif op == "exit" and active:
            p = rng.choice(active)
            assert p.statements is not None
            if not p.statements:
                continue
            old_st, old_sig = rng.choice(p.statements)
            paid_at = vault.lane(index_of(p.address)).last_paid_epoch
            if old_st.epoch < paid_at:  # it predates a settlement that paid p
                with reverts_with("StaleStatement(uint64,uint64,uint64)"):
                    leave(vault, gas, old_st, old_sig)
                old_st, old_sig = p.statements[-1]
            leave(vault, gas, old_st, old_sig)
            latest = p.statements[-1]
            if latest[0].nonce > old_st.nonce:  # the watchtower answers with the newest
                vault.challenge_force_settle(gas, *latest)
            p.exiting = True
        elif op == "final":
            exiting = [p for p in people if p.exiting and not p.exited]
            if not exiting:
                continue
            increase_time(vault_chain, SETTLE_WINDOW)
            for p in exiting:
                # The winning statement is the newest with epoch ≤ lastEpoch; it plus the
                # payouts withheld that it is net of is exactly what the enclave owes p.
                assert vault.settlement_of(p.address) == p.credited - balance(usdc, p.address)
                vault.final_force_settle(gas, p.address)
                assert vault.status(p.address) is AccountStatus.SETTLED
                p.exited = True
                p.free = 0
        check()
    assert any(p.exited for p in people) and epoch > 3 and withheld_counted
    assert any(p.exited and p.onchain > p.deposited for p in people)  # an unconfirmed one paid

    # The backstop: a statement for more than the pool holds is never paid from nothing.
    rich = Participant(funded(vault_chain, usdc, eth=0))
    leave(vault, gas, *statement(vault_key, vault, rich.address,
                                            balance(usdc, vault.address) + 1, epoch=epoch))
    increase_time(vault_chain, SETTLE_WINDOW)
    with pytest.raises(TransactionFailed):
        vault.final_force_settle(gas, rich.address)
    check()
