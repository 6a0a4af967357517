"""Conservation of the ASCManager over every path, pool and wallet mixed (first written
by a review, s8-rev2).

``test_pool.py``'s random sequence opens pool channels one by one and closes them by the
cooperative and client exits. This one mixes, on one manager and
one blocklisting token: wallet opens (``createASC``, ``createASCBatch`` with members whose
deposit cannot be pulled), pool opens (``createASCFromPool(Batch)`` with members short of
balance and duplicates), and every exit of both kinds — ``closeASC``, ``closeASCBatch``
mixing pool and wallet channels of one client with a duplicate and a closed member,
``initForceClose`` → ``challengeForceClose`` → ``finalForceClose``, the provider's
``forceClose`` while Open or Closing — plus pool withdrawals and owed withdrawals, with
payees blocklisted at random. After every step, read from the contract:
token balance == Σ pooled + Σ deposits of channels Open or Closing + Σ owed; and every
closed pool channel paid its client nothing in tokens.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import pytest

from a402.asc import BalanceState, ChannelTerms, sign_channel_open
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
from a402.crypto import EVM, generate_adaptor

from .helpers import (
    DISPUTE_WINDOW,
    Parties,
    authorise,
    balance,
    fresh_account,
    increase_time,
    machines,
    pay,
)

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def token(asc_chain: Chain) -> Any:
    return deploy_contract(asc_chain, asc_chain.accounts[0], "RestrictedToken")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_path_keeps_the_tokens_equal_to_pool_plus_escrow_plus_owed(
    asc_chain: Chain, token: Any, seed: int
) -> None:
    chain = asc_chain
    manager = ASCManager.deploy(chain, chain.accounts[0], token.address, DISPUTE_WINDOW)
    rng = random.Random(seed)
    admin = chain.accounts[0]
    vaults = [fresh_account(chain) for _ in range(2)]
    clients = [fresh_account(chain) for _ in range(3)]
    providers = [fresh_account(chain) for _ in range(2)]
    for c in clients:
        transact(chain, admin, token.functions.mint(c.address, 50_000_000))
        transact(chain, c, token.functions.approve(manager.address, 2**255))
    channels: list[tuple[Parties, bool]] = []  # (parties, pool-funded)
    blocked: set[str] = set()
    everyone = [a.address for a in vaults + clients + providers]

    def parties(vault: Any, client: Any, deposit: int) -> Parties:
        provider = rng.choice(providers)
        schnorr = EVM.generate_key()
        terms = ChannelTerms(client.address, vault.address, provider.address, schnorr.public_key,
                             deposit, os.urandom(32))
        return Parties(chain, token, manager, client, vault, provider, schnorr, terms)

    def status(p: Parties) -> OnChainStatus:
        return manager.channel(p.cid).status

    def live() -> list[tuple[Parties, bool]]:
        return [(p, pool) for p, pool in channels
                if status(p) in (OnChainStatus.OPEN, OnChainStatus.CLOSING)]

    def check() -> None:
        pooled = sum(manager.pooled(v.address, c.address) for v in vaults for c in clients)
        escrow = sum(p.terms.deposit for p, _ in live())
        owed = sum(manager.owed(a) for a in everyone)
        assert balance(token, manager.address) == pooled + escrow + owed, (
            pooled, escrow, owed)

    def toggle_block() -> None:
        who = rng.choice([a.address for a in clients + providers])
        flag = who not in blocked
        transact(chain, admin, token.functions.setBlocklisted(who, flag))
        (blocked.add if flag else blocked.discard)(who)

    wallet_before = {c.address: balance(token, c.address) for c in clients}
    steps = 0
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for _ in range(60):
        op = rng.choice(["deposit", "wallet", "wallet_batch", "pool", "pool_batch",
                         "close", "close_batch", "force", "provider", "withdraw", "owed",
                         "block"])
        vault, client = rng.choice(vaults), rng.choice(clients)
        try:
            if op == "deposit":
                manager.deposit_to_pool(client, vault.address, client.address,
                                        rng.randint(1, 3_000_000))
            elif op == "wallet":
                p = parties(vault, client, rng.randint(1, 2_000_000))
                consent = sign_channel_open(p.client_signer, manager.domain, p.terms)
                manager.create(vault, p.terms, consent)
                channels.append((p, False))
            elif op == "wallet_batch":
                members = [parties(vault, rng.choice(clients), rng.randint(1, 2_000_000))
                           for _ in range(3)]
                poor = fresh_account(chain)  # no tokens: its run cannot be pulled
                members.insert(1, parties(vault, poor, 1_000))
                consents = [sign_channel_open(m.client_signer, manager.domain, m.terms)
                            for m in members]
                manager.create_batch(vault, [m.terms for m in members], consents)
                channels.extend((m, False) for m in members)
            elif op == "pool":
                available = manager.pooled(vault.address, client.address)
                if available == 0:
                    manager.deposit_to_pool(client, vault.address, client.address, 1_000_000)
                    available = 1_000_000
                p = parties(vault, client, rng.randint(1, available))
                manager.create_from_pool(vault, p.terms)
                channels.append((p, True))
            elif op == "pool_batch":
                members = [parties(vault, rng.choice(clients), rng.randint(1, 2_000_000))
                           for _ in range(3)]
                members.append(members[0])  # a duplicate: ChannelExists, skipped
                manager.create_from_pool_batch(vault, [m.terms for m in members])
                channels.extend((m, True) for m in members[:3])
            elif op == "close" and live():
                p, _ = rng.choice(live())
                paid = rng.randint(0, p.terms.deposit)
                manager.close(rng.choice([p.vault, p.provider, admin]), p.terms, p.signed(
                    BalanceState(7, p.terms.deposit - paid, paid, True)))
            elif op == "close_batch" and live():
                picked = rng.sample(live(), min(4, len(live())))
                items = []
                for p, _ in picked:
                    paid = rng.randint(0, p.terms.deposit)
                    items.append((p.terms, p.signed(
                        BalanceState(7, p.terms.deposit - paid, paid, True))))
                items.append(items[0])  # a duplicate: WrongStatus, skipped
                closed = [(p, pool) for p, pool in channels if status(p) == OnChainStatus.CLOSED]
                if closed:
                    p = closed[0][0]
                    items.append((p.terms, p.signed(BalanceState(9, p.terms.deposit, 0, True))))
                rng.shuffle(items)
                manager.close_batch(admin, items)
            elif op == "force" and live():
                p, _ = rng.choice([c for c in live() if status(c[0]) == OnChainStatus.OPEN]
                                  or live())
                if status(p) == OnChainStatus.OPEN:
                    manager.init_force_close(p.client, p.terms,
                                             p.signed(BalanceState(0, p.terms.deposit, 0)))
                    if rng.random() < 0.5:
                        paid = rng.randint(0, p.terms.deposit)
                        manager.challenge(admin, p.terms, p.signed(
                            BalanceState(3, p.terms.deposit - paid, paid)))
                increase_time(chain, DISPUTE_WINDOW + 1)
                for q, _ in live():  # every Closing channel's window is over now
                    if status(q) == OnChainStatus.CLOSING:
                        manager.final_force_close(admin, q.terms)
            elif op == "provider" and live():
                opened = [c for c in live() if status(c[0]) == OnChainStatus.OPEN]
                if opened:
                    p, _ = rng.choice(opened)
                    if rng.random() < 0.5:  # during the client's window, on its opening state
                        manager.init_force_close(p.client, p.terms,
                                                 p.signed(BalanceState(0, p.terms.deposit, 0)))
                    vm, pm = machines(p)
                    first = rng.randint(0, p.terms.deposit // 2)
                    if first:
                        pay(vm, pm, first, b"one")
                    authorise(vm, pm, rng.randint(1, p.terms.deposit - first), b"two",
                              generate_adaptor()[0])
                    manager.force_close(p.provider, p.terms, pm.claim())
            elif op == "withdraw":
                available = manager.pooled(vault.address, client.address)
                if available:
                    to = rng.choice([client.address, fresh_account(chain).address])
                    manager.withdraw_from_pool(client, vault.address, to,
                                               rng.randint(1, available))
            elif op == "owed":
                who = rng.choice(clients + providers)
                if manager.owed(who.address):
                    manager.withdraw(who, fresh_account(chain).address)
            elif op == "block":
                toggle_block()
            done[op] = done.get(op, 0) + 1
        except TransactionFailed:
            failed[op] = failed.get(op, 0) + 1  # a refusal: it moved nothing
        check()
        steps += 1
    for address in list(blocked):
        transact(chain, admin, token.functions.setBlocklisted(address, False))
    # A pool channel never paid its client in tokens: a client's wallet moved only by its
    # wallet opens, its deposits, its withdrawals and wallet-channel refunds — checked
    # globally above; here, that every pool channel that closed is still CLOSED and
    # pool-flagged, and every wallet channel is not pool-flagged.
    for p, pool in channels:
        if status(p) != OnChainStatus.NONE:
            assert manager.pool_funded(p.cid) == pool
    assert steps == 60 and wallet_before
    assert len(done) >= 8, (done, failed)  # most kinds of step actually ran


def test_a_wallet_open_approval_seen_in_the_mempool_does_not_open_from_the_pool(
    asc_chain: Chain, token: Any
) -> None:
    """The vault approved a *wallet* channel (the client consents on-chain by signing the
    id and pays from its wallet). ``createASCFromPool`` needs no client consent, so were
    it to take that A402Open, anyone who sees the approval (calldata in the mempool, the
    host) would open the channel from the client's pool instead. It takes only an
    A402PoolOpen, of its own type: the front-run reverts and the pool is untouched; the
    vault's A402PoolOpen for the same terms does open it."""
    from a402.asc import sign_open_approval, sign_pool_open_approval

    chain = asc_chain
    manager = ASCManager.deploy(chain, chain.accounts[0], token.address, DISPUTE_WINDOW)
    client, vault, provider, stranger = (fresh_account(chain) for _ in range(4))
    transact(chain, chain.accounts[0], token.functions.mint(client.address, 2_000))
    transact(chain, client, token.functions.approve(manager.address, 2_000))
    manager.deposit_to_pool(client, vault.address, client.address, 1_000)  # pooled elsewhere
    terms = ChannelTerms(client.address, vault.address, provider.address,
                         EVM.generate_key().public_key, 1_000, os.urandom(32))
    p = Parties(chain, token, manager, client, vault, provider, EVM.generate_key(), terms)
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 600
    approval = sign_open_approval(p.vault_signer, manager.domain, terms, deadline)
    with contextlib.suppress(TransactionFailed):
        manager.create_from_pool(stranger, terms, approval, deadline)  # the front-run
    assert manager.pooled(vault.address, client.address) == 1_000, (
        "a wallet channel's approval moved the client's pool")
    pool_approval = sign_pool_open_approval(p.vault_signer, manager.domain, terms, deadline)
    assert manager.pool_open_approval_digest(p.cid, deadline) != manager.open_approval_digest(
        p.cid, deadline)
    manager.create_from_pool(stranger, terms, pool_approval, deadline)
    assert manager.pooled(vault.address, client.address) == 0
