"""What a chain observer sees of vault mode run by its host (:mod:`a402.vault.mode`): 20
clients pay 5 providers through the service, the worker's rounds confirm deposits, resolve
payments and settle the payouts the scheduler batches. Printed: every transaction to the
vault and what it shows."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from a402.chain.node import Chain
from a402.vault.settlement_schedule import SchedulePolicy
from a402.vault_accounts import CLAIM_WINDOW

from .helpers import balance, increase_time
from .test_privacy import observe
from .test_service import Harness, conserved

pytestmark = pytest.mark.anvil

DEPOSIT = 100_000


class _Observed:
    """What :func:`tests.vault_mode.test_privacy.observe` reads: the chain and the vault."""

    def __init__(self, h: Harness) -> None:
        self.chain, self.vault, self.vm = h.chain, h.contract, h.vm


def test_twenty_clients_five_providers_through_the_service_leave_no_pair_on_chain(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    rng = random.Random(29)
    h = Harness(vault_chain, usdc, tmp_path, SchedulePolicy(
        window=60, jitter=30, min_participants=5, max_per_tx=10))
    service = h.service
    start_block = int(vault_chain.w3.eth.block_number)
    clients = [Account.create() for _ in range(20)]
    providers = [h.vm.provider() for _ in range(5)]
    for c in clients:
        h.deposit(c.address, DEPOSIT)
    service.tick()
    assert all(service.balance(c.address)["free"] == str(DEPOSIT) for c in clients)

    spend: dict[tuple[str, str], int] = defaultdict(int)
    channel_ids: list[bytes] = []
    block = vault_chain.w3.eth.block_number
    calls = 0
    for i, c in enumerate(clients):
        for p in (providers[i % 5], providers[(i + rng.randrange(1, 5)) % 5]):
            cid, side, _ = h.open(c, p, 20_000)
            channel_ids.append(cid)
            for k in range(rng.randrange(2, 5)):
                price = rng.randrange(1, 10) * 100
                call = h.vm.call(c, key=f"{cid.hex()}-{k}", max_price=price,
                                 pay_to=h.service.accounts.terms(cid).provider)
                exec_ = service.request(cid, call, price)
                side.receive(exec_, now=time.time())
                auth = service.receive(cid, side.reply(exec_.request_id, b"ok"))
                reveal = side.receive(auth.step.send[0], now=time.time()).send[0]
                ack = service.receive(cid, reveal)
                side.receive(ack.step.send[0], now=time.time())
                spend[(c.address, p.address)] += price
                calls += 1
            service.close(cid)
    assert vault_chain.w3.eth.block_number == block, "a paid call touched the chain"
    conserved(h)
    increase_time(vault_chain, CLAIM_WINDOW + 1)
    service.tick()  # the payments resolve to the providers' accounts
    for p in providers:
        earned = sum(v for (_, pp), v in spend.items() if pp == p.address)
        assert service.balance(p.address)["free"] == str(earned)

    everyone = [c.address for c in clients] + [p.address for p in providers]
    for who in rng.sample(everyone, len(everyone)):
        service.withdraw(who, int(service.balance(who)["free"]))
    later = time.time() + 1_000  # past every request's window and jitter
    settlements = 0
    while service.scheduler.waiting:
        landed = service.tick(now=later)
        assert landed, "a due batch was not settled"
        settlements += len(landed)
        assert all(5 <= x.payees <= 10 for x in landed)
        conserved(h)
    assert settlements >= 3  # 25 payees, 5 to 10 a batch
    assert sum(x.payees for x in service.landed) == 25

    for c in clients:
        spent = sum(v for (cc, _), v in spend.items() if cc == c.address)
        assert balance(usdc, c.address) == DEPOSIT - spent
    for p in providers:
        assert balance(usdc, p.address) == sum(
            v for (_, pp), v in spend.items() if pp == p.address)
    assert balance(usdc, h.contract.address) == 0

    seen = observe(_Observed(h), start_block)  # type: ignore[arg-type]
    print(f"\n{calls} paid calls, {len(channel_ids)} channels; what a chain observer sees:")
    for line in seen["lines"]:
        print("  " + line)
    blob = b"".join(seen["raw"])
    assert all(cid not in blob for cid in channel_ids), "a channel id reached the chain"
    assert all(n <= 1 for n in seen["per_log_participants"]), "a log names two participants"
    assert seen["payouts"] and not set(spend.values()) & set(seen["payouts"]), \
        "a payout equals one client's spend at one provider"
