"""Whether a channel opened is the chain's to say, not the vault's own receipt (review F1).

The vault's gas account sends ``createASC`` with the enclave's approval; the
transaction is public, so anyone can send a copy first. The copy opens the
channel (the pool's deposit leaves), the vault's own transaction then reverts
(``ChannelExists``). A vault that trusted its receipt would mark the channel
FAILED and give the client its deposit back while the tokens sit in an OPEN
channel: the pool would owe more than it holds. The vault reads the manager's
record of the id instead (``Channels.settle_open``): OPEN, the debit kept, and
the channel serves the call. Real anvil, a real second account, balances
checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from a402.asc_manager import ASCManager, OnChainChannel, OnChainStatus
from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, transact
from a402.client.vault import VaultCallError
from a402.vault import store as vault_store
from a402.vault import worker as worker_module
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICE, World, fresh_account
from tests.asc.helpers import selector

from .helpers import assert_conserved, client_of, running_vault, wait_for

pytestmark = pytest.mark.anvil

FUNDS = 20_000


@dataclass
class WithheldOpen:
    """A first call whose channel open the host withheld: the call failed, its open unsent."""

    vault: Any
    account: Any
    cid: bytes
    deposit: int
    withheld: list[Any]  # the open's call, as the host kept it
    send: Any  # the journal's own send, to put back

    def phase(self) -> str | None:
        fresh = self.vault.store.channel("0x" + self.cid.hex())
        return None if fresh is None else fresh.phase


def withhold_the_first_open(world: World, vault: Any, site: str) -> WithheldOpen:
    """A funded client's first call, with the host withholding the channel's open (its
    journal raises instead of sending it): the call fails, the channel is OPENING."""
    account, client = client_of(world, vault, funds=FUNDS, deposit=FUNDS)
    journal = vault.service.journal
    send = journal.send
    withheld: list[Any] = []

    def withhold(key: str, kind: str, ref: str, call: Any) -> Any:
        if kind == "open":
            withheld.append(call)
            raise TransactionFailed("withheld by the host")
        return send(key, kind, ref, call)

    journal.send = withhold
    with pytest.raises(VaultCallError, match="withheld"):
        client.invoke(f"{site}/weather", max_price=PRICE)
    [row] = vault.store.channels(client=account.address)
    return WithheldOpen(vault, account, bytes.fromhex(row.cid[2:]), int(row.deposit),
                        withheld, send)


def let_it_lapse_failed(world: World, vault: Any, opening: WithheldOpen) -> tuple[Any, int]:
    """Snapshot the chain, move it past the open's approval and finalize that: the worker
    marks the channel FAILED. Returns the snapshot (to revert to, as a reorg would) and the
    chain time it was taken at."""
    rpc = world.chain.w3.provider.make_request
    before = rpc("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    stamped = world.manager.chain_time()
    world.increase_time(vault.service.vault.approved_until(opening.cid) - stamped + 1)
    rpc("anvil_mine", [2])  # type: ignore[arg-type]
    wait_for(lambda: opening.phase() == vault_store.FAILED, what="the lapsed open FAILED")
    return before, stamped


def test_a_copy_of_the_gas_payers_open_lands_first_and_the_channel_is_open_with_the_debit_kept(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    stranger = fresh_account(world.chain)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=FUNDS, deposit=FUNDS)
        journal = vault.service.journal
        send = journal.send
        copies: list[Any] = []

        def copied_first(key: str, kind: str, ref: str, call: Any) -> Any:
            """The stranger saw the open in the mempool and sent the same call first."""
            if kind == "open" and not copies:
                copies.append(transact(world.chain, stranger, call))
            return send(key, kind, ref, call)

        journal.send = copied_first  # type: ignore[method-assign]
        answer = client.invoke(f"{site}/weather", max_price=PRICE)

        (copy,) = copies
        assert copy["from"] == stranger.address and copy["status"] == 1
        [row] = vault.store.channels(client=account.address)
        cid = bytes.fromhex(row.cid[2:])
        assert world.manager.events("ChannelOpened", copy)[0]["channelId"] == cid
        assert world.manager.channel(cid).status is OnChainStatus.OPEN
        assert row.phase == vault_store.OPEN  # not FAILED: the chain says it opened
        assert answer.outcome == api.PAID  # and the channel serves the call
        # The deposit left the pool once and was not given back to the client.
        deposit = int(row.deposit)
        assert world.manager.pooled(vault.address, account.address) == FUNDS - deposit
        assert vault.store.balance(account.address) == FUNDS - deposit
        assert world.balance(world.manager.address) == escrow + FUNDS
        assert_conserved(world, vault.store, vault.address, escrow)


def test_a_withheld_open_keeps_the_debit_until_its_approval_lapses_then_fails_without_archive_state(
    private_world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host never sends the open (it withholds it, or its send failed): the approval may
    still be mined by whoever holds it, so the client's deposit stays debited while it is
    good. Once the chain is past its deadline with the id unopened, the worker marks the
    channel FAILED and the deposit comes back (store and enclave); the withheld call,
    replayed now, is refused by the contract. (An anvil of its own: the test moves its
    clock.) The vault's node keeps no archive state (review s8-rev1, F8): the decision
    reads the contract at the head and only the finalized block's timestamp."""
    world = private_world
    monkeypatch.setattr(worker_module, "_OPENING_GRACE", 0.0)
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    stranger = fresh_account(world.chain)
    read_at_head = ASCManager.channel

    def no_archive(self: ASCManager, channel_id: bytes, block: int | None = None
                   ) -> OnChainChannel:
        if block is not None and block < self.chain.w3.eth.block_number - 1:
            raise ValueError("missing trie node: no state kept below the head")
        return read_at_head(self, channel_id)

    monkeypatch.setattr(ASCManager, "channel", no_archive)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        opening = withhold_the_first_open(world, vault, site)
        account, cid, deposit, phase = opening.account, opening.cid, opening.deposit, opening.phase
        deadline = vault.service.vault.approved_until(cid)
        assert deadline > world.manager.chain_time()
        # Still good: the channel may open, so nothing comes back (several worker ticks).
        ticks = vault.service.worker.ticks
        wait_for(lambda: vault.service.worker.ticks > ticks + 2, what="worker ticks")
        assert phase() == vault_store.OPENING
        assert vault.store.balance(account.address) == FUNDS - deposit
        assert world.manager.pooled(vault.address, account.address) == FUNDS  # never debited

        world.increase_time(deadline - world.manager.chain_time() + 1)
        # The head is past the deadline, but not yet a finalized block (review 3, F3: a
        # reorg could still mine the open below the head): nothing comes back yet.
        ticks = vault.service.worker.ticks
        wait_for(lambda: vault.service.worker.ticks > ticks + 2, what="worker ticks")
        assert phase() == vault_store.OPENING
        assert vault.store.balance(account.address) == FUNDS - deposit
        world.chain.w3.provider.make_request("anvil_mine", [2])  # type: ignore[arg-type]
        wait_for(lambda: phase() == vault_store.FAILED, what="the lapsed open FAILED")
        assert vault.store.balance(account.address) == FUNDS
        (call,) = opening.withheld
        with pytest.raises(TransactionFailed, match=selector("ApprovalExpired(uint256)")):
            transact(world.chain, stranger, call)
        assert world.manager.channel(cid).status is OnChainStatus.NONE
        assert world.manager.pooled(vault.address, account.address) == FUNDS
        assert world.balance(world.manager.address) == escrow + FUNDS
        assert_conserved(world, vault.store, vault.address, escrow)


def test_an_open_mined_after_its_channel_failed_is_force_closed_and_the_pool_made_whole(
    private_world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 3, finding 3: the vault marks a withheld open FAILED (the client's deposit back
    in its balance), then a reorg deeper than the block it decided at (anvil's revert
    stands in for it) lets a stranger mine the withheld open before its deadline after
    all: the deposit is in an OPEN channel while the host's mirror of the client's pool
    balance counts it too. The worker's sweep of FAILED channels sees it open, force-closes
    it with its opening state and finalizes it: the whole deposit comes back to the
    client's pool balance on-chain, and the books balance again."""
    world = private_world
    monkeypatch.setattr(worker_module, "_OPENING_GRACE", 0.0)
    monkeypatch.setattr(worker_module, "_RECLAIM_EVERY", 1)
    rpc = world.chain.w3.provider.make_request
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    stranger = fresh_account(world.chain)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        opening = withhold_the_first_open(world, vault, site)
        vault.service.journal.send = opening.send  # type: ignore[method-assign]
        account, cid, deposit, phase = opening.account, opening.cid, opening.deposit, opening.phase
        before, stamped = let_it_lapse_failed(world, vault, opening)
        assert vault.store.balance(account.address) == FUNDS

        rpc("evm_revert", [before])  # type: ignore[arg-type]
        rpc("evm_setNextBlockTimestamp", [stamped + 1])  # type: ignore[arg-type]
        (call,) = opening.withheld
        assert transact(world.chain, stranger, call)["status"] == 1
        assert world.manager.channel(cid).status is OnChainStatus.OPEN
        # the client's pool balance on-chain short by it (the host's mirror gave it back)
        assert world.manager.pooled(vault.address, account.address) == FUNDS - deposit

        wait_for(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSING,
                 what="the reclaiming force-close")
        world.increase_time(world.manager.dispute_window + 1)
        wait_for(lambda: phase() == vault_store.SETTLED, what="the reclaimed channel settled")
        assert world.manager.channel(cid).status is OnChainStatus.CLOSED
        assert world.manager.pooled(vault.address, account.address) == FUNDS
        assert world.balance(world.manager.address) == escrow + FUNDS
        assert vault.store.balance(account.address) == FUNDS
        assert_conserved(world, vault.store, vault.address, escrow)


class _LaterWall:
    """The worker module's ``time``, ``offset`` seconds later on the wall clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_reclaim_started_late_in_the_sweeps_day_is_finalized_and_the_pool_made_whole(
    private_world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review s8-rev1, F3: the sweep of FAILED pool channels looks at rows failed in the
    last 24 h (``_RECLAIM_HORIZON``, wall clock). A reorg seen 23 h 55 min after the FAILED
    decision has the sweep start a reclaim force-close whose dispute window ends after that
    day: the sweep still finalizes it (a row whose reclaim started is swept whatever its
    age), and the client's pool balance on-chain is whole again."""
    world = private_world
    wall = _LaterWall()
    monkeypatch.setattr(worker_module, "time", wall)
    monkeypatch.setattr(worker_module, "_OPENING_GRACE", 0.0)
    monkeypatch.setattr(worker_module, "_RECLAIM_EVERY", 1)
    rpc = world.chain.w3.provider.make_request
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    stranger = fresh_account(world.chain)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        opening = withhold_the_first_open(world, vault, site)
        vault.service.journal.send = opening.send  # type: ignore[method-assign]
        account, cid, deposit, phase = opening.account, opening.cid, opening.deposit, opening.phase
        before, stamped = let_it_lapse_failed(world, vault, opening)

        # The reorg is seen 23 h 55 min after the FAILED decision: the sweep starts the
        # reclaim ...
        wall.offset = 86_400 - 300
        rpc("evm_revert", [before])  # type: ignore[arg-type]
        rpc("evm_setNextBlockTimestamp", [stamped + 1])  # type: ignore[arg-type]
        (call,) = opening.withheld
        assert transact(world.chain, stranger, call)["status"] == 1
        assert world.manager.pooled(vault.address, account.address) == FUNDS - deposit
        wait_for(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSING,
                 what="the reclaiming force-close")
        # ... and its dispute window ends after the sweep's day is over.
        wall.offset = 86_400 - 300 + world.manager.dispute_window + 1
        world.increase_time(world.manager.dispute_window + 1)
        wait_for(lambda: phase() == vault_store.SETTLED, what="the reclaimed channel settled")
        assert world.manager.channel(cid).status is OnChainStatus.CLOSED
        assert world.manager.pooled(vault.address, account.address) == FUNDS
        assert vault.store.balance(account.address) == FUNDS
        assert_conserved(world, vault.store, vault.address, escrow)
