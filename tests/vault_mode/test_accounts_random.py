"""Vault mode inside the enclave under a long random run (no chain): deposits, channels
opened, paid (revealed or not), closed, settlements with payouts, time passing. After every
step no unit is created or lost (confirmed deposits = free + locked + pending + paid out,
plus what is still unconfirmed), no balance is negative, and every statement handed out
verifies and is newer than the last one of its participant."""

from __future__ import annotations

import random

import pytest

from a402.asc import Status
from a402.crypto import PaymentDomain
from a402.crypto.vault_messages import statement_digest
from a402.evm.ecdsa import OPENZEPPELIN, recover_address
from a402.vault_accounts import CLAIM_WINDOW, SignedStatement

from .accounts_setup import PRICE, client, vault_mode

DOMAIN = PaymentDomain(31337, bytes.fromhex("b7f8bc63bbcad18155201308c8f3540b07f84f5e"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_long_random_run_creates_and_loses_nothing(seed: int) -> None:
    rng = random.Random(seed)
    vm = vault_mode(DOMAIN)
    clients = [client() for _ in range(5)]
    providers = [vm.provider() for _ in range(3)]
    everyone = [c.address for c in clients] + [p.address for p in providers]
    channels: list[tuple[bytes, object, object]] = []  # (cid, client, provider side)
    nonces: dict[str, int] = {}
    deposited = 0
    t = 1_700_000_000
    keys = iter(range(10**9))
    done = {"paid": 0, "unrevealed": 0, "closed": 0, "payouts": 0}

    def handed(statements: tuple[SignedStatement, ...]) -> None:
        for st in statements:
            s = st.statement
            assert recover_address(statement_digest(DOMAIN, s, vm.vault.ledger), st.signature,
                                   policy=OPENZEPPELIN) == vm.vault.address
            assert s.nonce > nonces.get(s.participant, 0)
            assert s.epoch <= vm.vault.epoch
            nonces[s.participant] = s.nonce

    for _ in range(300):
        op = rng.choice(["deposit", "deposit", "settle", "open", "pay", "pay", "pay", "close",
                         "time"])
        if op == "deposit":
            who = rng.choice(clients).address
            amount = rng.randrange(1, 20) * PRICE
            vm.deposit(who, amount)
            deposited += amount
        elif op == "settle":
            payouts = []
            for p in rng.sample(everyone, 3):
                free = vm.vault.balance(p)[0]
                if free and rng.random() < 0.5:
                    payouts.append((p, rng.randrange(1, free + 1)))
            try:
                settled = vm.vault.settle(payouts, now=t)
            except Exception as e:
                assert "nothing_to_settle" in str(e) or "unknown_participant" in str(e), e
            else:
                handed(settled.statements)
                done["payouts"] += len(payouts)
        elif op == "open":
            c = rng.choice(clients)
            free = vm.vault.balance(c.address)[0]
            if free >= PRICE:
                cid, side = vm.open(c, rng.choice(providers), rng.randrange(1, free // PRICE + 1)
                                    * PRICE)
                channels.append((cid, c, side))
                handed((vm.vault.statement(c.address),))
        elif op == "pay" and channels:
            cid, c, side = rng.choice(channels)
            try:
                status = vm.vault.channel_status(cid)
            except Exception:
                status = Status.CLOSED
            if status is Status.OPEN:
                reveal = rng.random() < 0.8
                try:
                    changed = vm.pay(cid, side, vm.call(c, key=f"k{next(keys)}", ts=t,
                                                      pay_to=vm.vault.terms(cid).provider),
                                     reveal=reveal, now=t)
                except Exception as e:
                    assert "insufficient" in str(e).lower() or "INSUFFICIENT" in str(e), e
                else:
                    handed(changed.statements)
                    done["paid" if reveal else "unrevealed"] += 1
        elif op == "close" and channels:
            cid, c, _ = rng.choice(channels)
            try:
                if vm.vault.channel_status(cid) is Status.OPEN:
                    _, statements = vm.vault.close_channel(cid)
                    handed(statements)
                    done["closed"] += 1
            except Exception as e:
                assert "unknown_channel" in str(e), e
        elif op == "time":
            t += rng.choice([10, 600, CLAIM_WINDOW + 1])
        totals = vm.vault.totals()
        assert (totals["free"] + totals["locked"] + totals["pending"] + totals["paid_out"]
                + totals["unconfirmed"]) == deposited
        assert all(min(vm.vault.balance(p)) >= 0 for p in everyone)
    assert done["paid"] >= 10 and done["unrevealed"] >= 1 and done["closed"] >= 1, done
    assert done["payouts"] >= 1, done
    # Finally: everything due is settled, every channel closed, everything paid out.
    t += CLAIM_WINDOW + 1
    try:
        vm.vault.settle([], now=t)
    except Exception as e:
        assert "nothing_to_settle" in str(e), e
    for cid, _, _ in channels:
        try:
            if vm.vault.channel_status(cid) is Status.OPEN:
                vm.vault.close_channel(cid)
        except Exception as e:
            assert "unknown_channel" in str(e), e
    payouts = [(p, vm.vault.balance(p)[0]) for p in everyone if vm.vault.balance(p)[0]]
    if payouts:
        vm.vault.settle(payouts, now=t + 1)
    totals = vm.vault.totals()
    assert totals["paid_out"] + totals["locked"] == deposited
    assert totals["locked"] == sum(vm.vault.balance(p)[1] for p in everyone)
    assert totals["pending"] == totals["free"] == totals["unconfirmed"] == 0
