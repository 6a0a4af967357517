"""What a chain observer sees of vault mode: 20 clients paying 5 providers through the
enclave's accounts, payouts batched by the scheduler, everything landed on anvil. The
pieces are driven here the way the vault's host will drive them (deposits reported from
events, settlements signed and submitted, payout requests batched).

What still shows (the paper's caveat, printed below): each participant's deposits and
payouts, so a client that deposits and withdraws everything shows its total spend, and a
provider its total earnings — not whom they paid or were paid by, nor per request."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from a402.crypto.vault_messages import unpack_payouts
from a402.vault.settlement_schedule import SchedulePolicy, SettlementScheduler
from a402.vault_accounts import CLAIM_WINDOW

from .accounts_setup import Host, client
from .helpers import balance, increase_time, now

pytestmark = pytest.mark.anvil

DEPOSIT = 100_000


def test_the_chain_shows_no_channel_no_pair_and_no_payout_equal_to_one_clients_spend(
    host: Host,
) -> None:
    rng = random.Random(13)
    vm, vault, usdc = host.vm, host.vault, host.token
    start_block = int(host.chain.w3.eth.block_number)
    clients = [client() for _ in range(20)]
    providers = [vm.provider() for _ in range(5)]
    for c in clients:
        host.deposit(c.address, DEPOSIT)
    host.report_deposits()
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)

    spend: dict[tuple[str, str], int] = defaultdict(int)
    channel_ids: list[bytes] = []
    t0 = now(host.chain)
    for i, c in enumerate(clients):
        # Each provider serves at least four clients; each client pays two providers.
        mine = [providers[i % 5], providers[(i + rng.randrange(1, 5)) % 5]]
        for p in mine:
            cid, side = vm.open(c, p, 20_000)
            channel_ids.append(cid)
            for k in range(rng.randrange(2, 5)):
                price = rng.randrange(1, 10) * 100
                vm.pay(cid, side, vm.call(c, key=f"{cid.hex()}-{k}", max_price=price, ts=t0,
                                          pay_to=vm.vault.terms(cid).provider),
                       price, now=t0)
                spend[(c.address, p.address)] += price
            vm.vault.close_channel(cid)
    increase_time(host.chain, CLAIM_WINDOW + 1)
    host.submit(vm.vault.settle([], now=now(host.chain)).settlement)  # earnings credited

    # Everyone asks for their money back, at scattered times; the scheduler batches.
    scheduler = SettlementScheduler(
        SchedulePolicy(window=60, jitter=30, min_participants=5, max_per_tx=10), rng)
    everyone = [c.address for c in clients] + [p.address for p in providers]
    t = float(now(host.chain))
    for who in rng.sample(everyone, len(everyone)):
        t += rng.uniform(0, 20)
        scheduler.request(who, vm.vault.balance(who)[0], now=t)
    batches = 0
    while scheduler.waiting:
        wake = scheduler.next_wakeup()
        assert wake is not None, "a remainder below the minimum would wait for others"
        batch = scheduler.due(now=wake)
        assert batch is not None and 5 <= len(batch.payouts) <= 10
        host.submit(vm.vault.settle(batch.pairs(), now=now(host.chain)).settlement)
        scheduler.done(batch)
        batches += 1
    assert batches >= 3  # 25 payees, 5 to 10 a batch

    # Every unit is where it belongs.
    for c in clients:
        spent = sum(v for (cc, _), v in spend.items() if cc == c.address)
        assert balance(usdc, c.address) == DEPOSIT - spent
    for p in providers:
        assert balance(usdc, p.address) == sum(
            v for (_, pp), v in spend.items() if pp == p.address)
    assert balance(usdc, vault.address) == 0

    # What the observer sees: every transaction to the vault and every log it emitted.
    seen = observe(host, start_block)
    print("\nWhat a chain observer sees of the vault:")
    for line in seen["lines"]:
        print("  " + line)
    blob = b"".join(seen["raw"])
    for cid in channel_ids:
        assert cid not in blob, "a channel id reached the chain"
    assert seen["per_tx_participants"] and all(
        n <= 1 for n in seen["per_log_participants"]), "a log names two participants"
    pair_spends = set(spend.values())
    payouts = seen["payouts"]
    assert payouts and not pair_spends & set(payouts), \
        "a payout equals one client's spend at one provider"


def observe(host: Host, start_block: int) -> dict[str, Any]:
    """Transactions to the vault (decoded) and its logs, from ``start_block`` on."""
    w3, vault = host.chain.w3, host.vault
    participants = {a.lower() for a in _participants(host)}
    lines: list[str] = []
    raw: list[bytes] = []
    payouts: list[int] = []
    per_log: list[int] = []
    per_tx: list[int] = []
    for number in range(start_block, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] is None or tx["to"].lower() != vault.address.lower():
                continue
            data = bytes(tx["input"])
            raw.append(data)
            fn, args = vault.contract.decode_function_input(data)
            if fn.fn_name == "settle":
                records = unpack_payouts(args["payouts"])
                payouts += [amount for _, _, amount in records]
                per_tx.append(len(records))
                lines.append(f"settle epoch {args['h']['epoch']}: {len(records)} payees, amounts "
                             f"{sorted(a for _, _, a in records)}")
            else:
                per_tx.append(1)
                lines.append(f"{fn.fn_name}({args.get('participant', '')}, "
                             f"{args.get('amount', '')})")
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            for log in receipt["logs"]:
                if log["address"].lower() != vault.address.lower():
                    continue
                body = b"".join(bytes(x) for x in log["topics"]) + bytes(log["data"])
                raw.append(body)
                per_log.append(sum(1 for a in participants if bytes.fromhex(a[2:]) in body))
    return {"lines": lines, "raw": raw, "payouts": payouts, "per_log_participants": per_log,
            "per_tx_participants": per_tx}


def _participants(host: Host) -> list[str]:
    return [r[0] for r in host.vault.deposits()] + [p.address for p in host.vm.providers]
