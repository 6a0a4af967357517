"""The vault enclave's ledger in the store: replicas serialize on its row, and a vault never
starts with an empty ledger when it had one.

Replicas of one vault share the database and so the enclave identity
(:mod:`a402.vault.identity`); each runs the enclave's code with a ledger in its
memory. The row is written by compare-and-set on the version sealed inside the
ledger (:mod:`a402.vault.ledger`): a replica whose ledger is older loads the
stored one before it changes it, and one that loses the race loads the winner's
and runs its change again. The ledger holds the channels the enclave approved
(and per-client freshness, the clock, the life): the pool's balances are
on-chain, not in it. Real enclave code, real seals, real databases; deposits
and restarts on anvil.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import delete

from a402.asc import ChannelTerms
from a402.background import serve_in_thread
from a402.chain.tx import transact
from a402.crypto import EVM
from a402.tee import EnclaveError, SimulatedPlatform
from a402.vault.ledger import Ledger, LedgerMissing
from a402.vault.service import VaultService
from a402.vault.store import VaultStore
from a402.vault.tables import LedgerRow
from a402.vault_enclave import VaultEnclave, VaultEnclaveCode
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import (
    assert_conserved,
    client_of,
    fresh_schema,
    running_vault,
    vault_config,
)
from .test_enclave_code import CODE, DOMAIN, NETWORK, NOW, TOKEN

# ------------------------------------------------------------ two replicas, one row


class _Identity:
    """One enclave identity (sealed), which any number of instances run."""

    def __init__(self) -> None:
        self.platform = SimulatedPlatform.generate()
        self.sealed = self.platform.launch(CODE).export_sealed()

    def instance(self, store: VaultStore) -> Ledger:
        """An instance of it (a replica, or a restart) over ``store``, its ledger loaded."""
        vault = VaultEnclaveCode.start(self.platform.restore(CODE, self.sealed), domain=DOMAIN,
                                       network=NETWORK, token=TOKEN,
                                       first_boot=Ledger.first_boot(store))
        ledger = Ledger(vault, store)
        ledger.load()
        return ledger


def _replicas(tmp_path: Any) -> tuple[VaultStore, _Identity, list[Ledger]]:
    """One store and two instances of one enclave identity, each with its ledger keeper."""
    identity = _Identity()
    store = VaultStore(f"sqlite:///{tmp_path}/replicas.db")
    return store, identity, [identity.instance(store), identity.instance(store)]


_PROVIDER = "0x" + "77" * 20
_PROVIDER_KEY = EVM.generate_key().public_key


def _approve(vault: VaultEnclave) -> bytes:
    """A change of the ledger: the enclave approves a new wallet channel; its id."""
    terms = ChannelTerms(Account.create().address, vault.address, _PROVIDER, _PROVIDER_KEY,
                         1_000, vault.salt())
    vault.approve_wallet_channel(terms, lock_timeout=10.0, now=NOW)
    return terms.channel_id(DOMAIN)


def _racing(other: Callable[[], Any], mine: Callable[[], Any]) -> Callable[[], Any]:
    """``mine``, with ``other`` (the other replica's whole change) landing first the first
    time: after this replica read the row and before it writes it."""
    raced: list[bool] = []

    def op() -> Any:
        if not raced:
            raced.append(True)
            other()
        return mine()

    return op


def test_two_replicas_approving_channels_at_once_keep_both_approvals(tmp_path: Any) -> None:
    """Replica 2 approves channel B while replica 1's approval of C lands between its read
    and its write: its write loses, it loads replica 1's ledger and approves B again on
    it. The stored ledger — what a restart loads — knows A, B and C."""
    store, identity, (one, two) = _replicas(tmp_path)
    approved: dict[str, bytes] = {}
    one.change(lambda: approved.setdefault("a", _approve(one.vault)))
    two.change(_racing(lambda: one.change(lambda: approved.setdefault("c", _approve(one.vault))),
                       lambda: approved.__setitem__("b", _approve(two.vault))))
    assert store.ledger_version() == two.vault.ledger_version == 3
    restarted = identity.instance(store).vault
    assert all(restarted.approved_until(cid) == NOW + 300 for cid in approved.values())
    store.close()


def test_a_running_enclave_refuses_a_ledger_older_than_its_own(tmp_path: Any) -> None:
    store, _, (one, _) = _replicas(tmp_path)
    one.change(lambda: _approve(one.vault))
    old = one.vault.export_ledger()
    one.change(lambda: _approve(one.vault))
    with pytest.raises(EnclaveError, match="older"):
        one.vault.restore_ledger(old)
    # Nor can a change it has not exported yet be dropped by handing it the stored ledger.
    cid = _approve(one.vault)
    with pytest.raises(EnclaveError, match="older"):
        one.vault.restore_ledger(store.ledger()[1])  # type: ignore[index]
    assert one.vault.approved_until(cid) == NOW + 300
    store.close()


# ------------------------------------------------------------------- on anvil


@pytest.mark.anvil
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_deposits_credited_by_two_vault_replicas_survive_a_restart(
        world: World, backend: str, request: pytest.FixtureRequest) -> None:
    """Two vault services over one database (one serving the API, the other a replica
    taking deposit reports), each crediting another client's mined pool deposit: after a
    restart both balances are there, in the host's store and on-chain alike."""
    url = (fresh_schema(request.getfixturevalue("postgres_url")) if backend == "postgres"
           else f"sqlite:///{world.tmp}/shared.db")
    with running_vault(world, db_url=url) as vault:
        alice, alice_client = client_of(world, vault.url, funds=6_000, deposit=5_000)
        replica_store = VaultStore(url)
        replica = VaultService(vault_config(world, vault.account, replica_store))
        assert replica.address == vault.address
        bob = world.client(7_000)
        transact(world.chain, bob, world.token.functions.approve(world.manager.address, 7_000))
        mined = world.manager.deposit_to_pool(bob, vault.address, bob.address, 7_000)
        status, answer = asyncio.run(replica.funds.deposit(
            bob.address, {"transaction": mined["transactionHash"].to_0x_hex()}))
        assert (status, answer["state"], answer["pooled"]) == (200, "credited", "7000")
        assert alice_client.deposit(1_000)["state"] == "credited"
        alice_client.close()
        asyncio.run(replica.http.aclose())
        replica_store.close()
    with running_vault(world, db_url=url, account=vault.account) as restarted:
        assert (restarted.store.balance(alice.address),
                restarted.store.balance(bob.address)) == (6_000, 7_000)
        assert (world.manager.pooled(restarted.address, alice.address),
                world.manager.pooled(restarted.address, bob.address)) == (6_000, 7_000)
        assert world.balance(restarted.address) == 0
        assert_conserved(world, restarted.store, restarted.address)


# ------------------------------------------------------------- a missing ledger


def test_a_vault_whose_ledger_row_is_gone_refuses_to_start(world: World) -> None:
    """Deleting the ledger row and restarting would start the enclave with no memory of
    the channels it approved or wrote off: refused, with the reason."""
    url = f"sqlite:///{world.tmp}/lost.db"
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world, db_url=url) as vault:
        account, client = client_of(world, vault.url, funds=50_000, deposit=50_000)
        assert client.invoke(f"{site}/weather", max_price=1_000).outcome == api.PAID
        [channel] = client.account_info()["channels"]
        client.close()
    store = VaultStore(url)
    with store._tx() as s:
        s.execute(delete(LedgerRow))
    with pytest.raises(LedgerMissing, match="refusing to start with an empty ledger"):
        VaultService(vault_config(world, vault.account, store))
    assert store.channel(channel["channelId"]) is not None  # nothing was changed
    assert store.balance(account.address) == 40_000
    store.close()


def test_a_new_vault_starts_its_enclave_code_as_a_first_boot(tmp_path: Any) -> None:
    store = VaultStore(f"sqlite:///{tmp_path}/new.db")
    assert Ledger.first_boot(store)
    platform = SimulatedPlatform.generate()
    vault = VaultEnclaveCode.start(platform.launch(CODE), domain=DOMAIN, network=NETWORK,
                                   token=TOKEN, first_boot=True)
    ledger = Ledger(vault, store)
    ledger.load()
    ledger.change(lambda: _approve(vault))
    assert not Ledger.first_boot(store)
    store.close()
