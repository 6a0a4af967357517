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
import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
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
from .test_enclave_code import CODE, DOMAIN, NETWORK, NOW, TOKEN, call

# ------------------------------------------------------------ two replicas, one row


class _Identity:
    """One enclave identity (sealed), which any number of instances run."""

    def __init__(self) -> None:
        self.platform = SimulatedPlatform.generate()
        self.sealed = self.platform.launch(CODE).export_sealed()

    def instance(self, store: VaultStore) -> Ledger:
        """An instance of it (a replica, or a restart) over ``store``, its ledger loaded."""
        first_boot = Ledger.first_boot(store)
        vault = VaultEnclaveCode.start(self.platform.restore(CODE, self.sealed), domain=DOMAIN,
                                       network=NETWORK, token=TOKEN, first_boot=first_boot)
        ledger = Ledger(vault, store)
        ledger.load()
        if first_boot:  # as the service does: the new life is stored at once
            ledger.store_first()
        return ledger


def _replicas(tmp_path: Any) -> tuple[VaultStore, _Identity, list[Ledger]]:
    """One store and two instances of one enclave identity, each with its ledger keeper."""
    identity = _Identity()
    store = VaultStore(f"sqlite:///{tmp_path}/replicas.db")
    return store, identity, [identity.instance(store), identity.instance(store)]


_PROVIDER = "0x" + "77" * 20
_PROVIDER_KEY = EVM.generate_key().public_key


def _now() -> int:
    """The host's clock now (a call signed now is not in the future of it)."""
    return int(time.time())


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


def test_a_write_off_that_loses_the_ledger_race_runs_again_and_gives_back_once(
        tmp_path: Any) -> None:
    """Review 4, finding 4: replica 1 writes off alice's pool channel (reported never
    opened) while replica 2's approval of another channel lands between its read and its
    write. The write-off's change runs again on replica 2's ledger (its machine already
    closed by the first run) and writes the channel off there, once; before, it was
    refused ``channel_used`` and the channel stayed OPENING until a restart. Both changes
    are in the stored ledger."""
    store, identity, (one, two) = _replicas(tmp_path)
    alice = Account.create()
    provider_key = EVM.secret_key(EVM.generate_key().to_bytes()).public_key
    terms = ChannelTerms(alice.address, one.vault.address, os.urandom(20), provider_key,
                         4_000, one.vault.salt())
    cid = terms.channel_id(DOMAIN)
    approval = one.change(lambda: one.vault.approve_pool_channel(
        call(one.vault, alice, key="needs-a-channel"), terms, lock_timeout=10.0, now=NOW))
    other: list[bytes] = []
    written_off = one.change(_racing(
        lambda: two.change(lambda: other.append(_approve(two.vault))),
        lambda: one.vault.open_failed(cid, now=approval.deadline + 1)))
    assert written_off == 4_000
    assert one.change(lambda: one.vault.open_failed(cid, now=approval.deadline + 2)) == 0
    restarted = identity.instance(store).vault
    assert restarted.open_failed(cid, now=approval.deadline + 3) == 0  # written off, once
    assert restarted.approved_until(other[0]) == NOW + 300  # the racing change is kept
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
        alice, alice_client = client_of(world, vault, funds=6_000, deposit=5_000)
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
        account, client = client_of(world, vault, funds=50_000, deposit=50_000)
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


def _propose_then_answer(world: World, url: str, *, lose_ledger: bool
                         ) -> tuple[Any, httpx.Response, str, str, Any]:
    """A wallet-funded call to a new vault: its 428 proposal, then (after a restart, with
    the ledger row deleted first if ``lose_ledger``) the client's signed answer.
    Returns the client, the answer, both lives and the provider."""
    provider = world.provider()
    client = world.client(20_000)
    with serve_in_thread(provider.app) as site:
        with running_vault(world, db_url=url) as vault:
            life = vault.life
            body = json.dumps(api.InvokeRequest(
                url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=1_000,
                idempotency_key="young", funding=api.WALLET, deposit=10_000,
                created_at=_now()).to_json()).encode()
            headers = {**api.sign_request(client, vault.signed_as, "POST", "/v1/invoke", body,
                                          life=vault.life), "content-type": "application/json"}
            proposed = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers)
            assert proposed.status_code == 428, proposed.text
        if lose_ledger:  # a store from before first boots stored their ledger at once
            store = VaultStore(url)
            with store._tx() as s:
                s.execute(delete(LedgerRow))
            store.close()
        with running_vault(world, db_url=url, account=vault.account) as restarted:
            typed = proposed.json()["typedData"]
            signature = client.sign_message(encode_typed_data(full_message=typed)).signature
            answered = {**json.loads(body), "channelAuthorization": {
                "channelId": proposed.json()["channelId"],
                "signature": "0x" + bytes(signature).hex()}}
            raw = json.dumps(answered).encode()
            answer = httpx.post(restarted.url + "/v1/invoke", content=raw, headers={
                **api.sign_request(client, restarted.signed_as, "POST", "/v1/invoke", raw,
                                   life=restarted.life), "content-type": "application/json"},
                timeout=60)
            assert_conserved(world, restarted.store, restarted.address)
            if lose_ledger:
                [row] = restarted.store.channels()
                assert row.phase == "failed"
            return client, answer, life, restarted.life, provider


@pytest.mark.anvil
def test_a_new_vault_restarted_before_its_first_change_keeps_its_life_and_its_proposals(
        world: World) -> None:
    """Review 4, finding 6: a new vault proposes a wallet-funded channel (a salt its life
    issued; no ledger change) and restarts before anything changes its ledger. The first
    boot stored the ledger, life and all, at once: the restarted vault is the same life,
    so the client's signature of the proposal opens the channel and the call is paid."""
    client, paid, life, life_after, provider = _propose_then_answer(
        world, f"sqlite:///{world.tmp}/young.db", lose_ledger=False)
    assert life_after == life
    assert (paid.status_code, paid.json()["outcome"]) == (200, api.PAID), paid.text
    assert world.balance(client.address) == 20_000 - 10_000  # the channel's deposit
    assert provider.calls["weather"] == 1


@pytest.mark.anvil
def test_a_proposal_of_an_earlier_life_is_refused_with_a_reason_and_costs_nothing(
        world: World) -> None:
    """A store from before first boots stored their ledger (proposals, no ledger row): the
    restart is a first boot, a new life, and the earlier life's proposal can never open.
    Its answer is refused with a reason (not a 500), the row is FAILED, nothing moved."""
    client, refused, life, life_after, provider = _propose_then_answer(
        world, f"sqlite:///{world.tmp}/older.db", lose_ledger=True)
    assert life_after != life
    assert (refused.status_code, refused.json()["error"]) == (409, api.PROPOSAL_REFUSED)
    assert refused.json()["message"].startswith("nothing was paid")
    assert world.balance(client.address) == 20_000
    assert provider.calls["weather"] == 0
