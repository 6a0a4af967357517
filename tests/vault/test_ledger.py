"""The vault enclave's ledger in the store: replicas serialize on its row, and a vault never
starts with an empty ledger when it had one.

Replicas of one vault share the database and so the enclave identity
(:mod:`a402.vault.identity`); each runs the enclave's code with a ledger in its
memory. The row is written by compare-and-set on the version sealed inside the
ledger (:mod:`a402.vault.ledger`): a replica whose ledger is older loads the
stored one before it changes it, and one that loses the race loads the winner's
and runs its change again. Real enclave code, real seals, real databases;
deposits and restarts on anvil.
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
from a402.vault_enclave import WITHDRAW_PATH, SignedCall, VaultEnclave, VaultEnclaveCode
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import (
    assert_conserved,
    client_of,
    enclave_balances,
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


def _now() -> int:
    """The host's clock now (a call signed now is not in the future of it)."""
    return int(time.time())


def _withdrawal(vault: VaultEnclave, client: Any, amount: int, key: str) -> SignedCall:
    raw = json.dumps({"amount": str(amount), "idempotencyKey": key}).encode()
    headers = api.sign_request(client, vault.account, "POST", WITHDRAW_PATH, raw,
                               life=vault.life_id)
    return SignedCall.of(headers, "POST", WITHDRAW_PATH, raw)


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


def test_two_replicas_crediting_different_clients_at_once_keep_both_credits(
        tmp_path: Any) -> None:
    """Replica 2 credits bob while replica 1's credit of alice lands between its read and
    its write: its write loses, it loads replica 1's ledger and credits bob again on it.
    The stored ledger — what a restart loads — holds both."""
    store, identity, (one, two) = _replicas(tmp_path)
    alice, bob = Account.create(), Account.create()
    one.change(lambda: one.vault.credit_deposit("0xaa:0", alice.address, 5_000))
    two.change(_racing(
        lambda: one.change(lambda: one.vault.credit_deposit("0xab:0", alice.address, 1_000)),
        lambda: two.vault.credit_deposit("0xbb:0", bob.address, 7_000)))
    assert store.ledger_version() == two.vault.ledger_version == 3
    # Replica 1's next change starts from the ledger replica 2 stored.
    one.change(lambda: one.vault.credit_deposit("0xac:0", alice.address, 500))
    restarted = identity.instance(store).vault
    assert (restarted.balance(alice.address), restarted.balance(bob.address)) == (6_500, 7_000)
    # A deposit reported to both replicas counts once.
    assert not two.change(lambda: two.vault.credit_deposit("0xbb:0", bob.address, 7_000))
    assert identity.instance(store).vault.balance(bob.address) == 7_000
    store.close()


def test_two_replicas_cannot_both_withdraw_one_balance(tmp_path: Any) -> None:
    """Alice's 5,000 asked for twice, once through each replica, the second while the first
    lands between its read and its write: the second runs again on the ledger holding
    the first's debit, and is refused there. One withdrawal is stored, balance 0."""
    store, identity, (one, two) = _replicas(tmp_path)
    alice = Account.create()
    one.change(lambda: one.vault.credit_deposit("0xaa:0", alice.address, 5_000))
    first = _withdrawal(one.vault, alice, 5_000, "w1")
    second = _withdrawal(two.vault, alice, 5_000, "w2")
    with pytest.raises(EnclaveError, match="5000 > balance 0"):
        two.change(_racing(lambda: one.change(lambda: one.vault.withdraw(first, now=_now())),
                           lambda: two.vault.withdraw(second, now=_now())))
    assert (one.vault.balance(alice.address), two.vault.balance(alice.address)) == (0, 0)
    # The replica that lost knows the winner's withdrawal (same nonce signed again), and no
    # other: a restart loads exactly one.
    key = f"{alice.address.lower()}:w1"
    assert two.vault.withdrawal_again(key, now=1).nonce == one.vault.withdrawal_again(
        key, now=2).nonce
    with pytest.raises(EnclaveError, match="no such withdrawal"):
        two.vault.withdrawal_again(f"{alice.address.lower()}:w2", now=0)
    restarted = identity.instance(store).vault
    assert restarted.balance(alice.address) == 0
    restarted.withdrawal_again(key, now=3)
    with pytest.raises(EnclaveError, match="no such withdrawal"):
        restarted.withdrawal_again(f"{alice.address.lower()}:w2", now=0)
    store.close()


def test_a_write_off_that_loses_the_ledger_race_runs_again_and_gives_back_once(
        tmp_path: Any) -> None:
    """Review 4, finding 4: replica 1 reports alice's pool channel as never opened while
    replica 2's credit of bob lands between its read and its write. The write-off's change
    runs again on replica 2's ledger (its machine already closed by the first run) and
    gives the deposit back there, once; before, it was refused ``channel_used`` and the
    channel stayed OPENING until a restart."""
    store, identity, (one, two) = _replicas(tmp_path)
    alice, bob = Account.create(), Account.create()
    one.change(lambda: one.vault.credit_deposit("0xaa:0", alice.address, 5_000))
    provider_key = EVM.secret_key(EVM.generate_key().to_bytes()).public_key
    terms = ChannelTerms(one.vault.address, one.vault.address, os.urandom(20), provider_key,
                         4_000, one.vault.salt())
    cid = terms.channel_id(DOMAIN)
    approval = one.change(lambda: one.vault.approve_pool_channel(
        call(one.vault, alice, key="needs-a-channel"), terms, lock_timeout=10.0, now=NOW))
    assert one.vault.balance(alice.address) == 1_000
    credited = one.change(_racing(
        lambda: two.change(lambda: two.vault.credit_deposit("0xbb:0", bob.address, 7_000)),
        lambda: one.vault.open_failed(cid, now=approval.deadline + 1)))
    assert credited == 4_000
    assert one.change(lambda: one.vault.open_failed(cid, now=approval.deadline + 2)) == 0
    restarted = identity.instance(store).vault
    assert (restarted.balance(alice.address), restarted.balance(bob.address)) == (5_000, 7_000)
    store.close()


def test_a_running_enclave_refuses_a_ledger_older_than_its_own(tmp_path: Any) -> None:
    store, _, (one, _) = _replicas(tmp_path)
    alice = Account.create()
    one.change(lambda: one.vault.credit_deposit("0xaa:0", alice.address, 5_000))
    old = one.vault.export_ledger()
    one.change(lambda: one.vault.withdraw(_withdrawal(one.vault, alice, 5_000, "w"), now=_now()))
    with pytest.raises(EnclaveError, match="older"):
        one.vault.restore_ledger(old)
    # Nor can a change it has not exported yet be dropped by handing it the stored ledger.
    one.vault.credit_deposit("0xcc:0", alice.address, 1)
    with pytest.raises(EnclaveError, match="older"):
        one.vault.restore_ledger(store.ledger()[1])  # type: ignore[index]
    assert one.vault.balance(alice.address) == 1
    store.close()


# ------------------------------------------------------------------- on anvil


@pytest.mark.anvil
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_deposits_credited_by_two_vault_replicas_survive_a_restart(
        world: World, backend: str, request: pytest.FixtureRequest) -> None:
    """Two vault services over one database (one serving the API, the other a replica
    taking deposit reports), each crediting another client's mined transfer: after a
    restart both balances are there, in the host's ledger and the enclave's alike."""
    url = (fresh_schema(request.getfixturevalue("postgres_url")) if backend == "postgres"
           else f"sqlite:///{world.tmp}/shared.db")
    with running_vault(world, db_url=url) as vault:
        alice, alice_client = client_of(world, vault.url, funds=6_000, deposit=5_000)
        replica_store = VaultStore(url)
        replica = VaultService(vault_config(world, vault.account, replica_store))
        assert replica.address == vault.address
        bob = world.client(7_000)
        mined = transact(world.chain, bob, world.token.functions.transfer(vault.address, 7_000))
        status, answer = asyncio.run(replica.funds.deposit(
            bob.address, {"transaction": mined["transactionHash"].to_0x_hex()}))
        assert (status, answer["state"]) == (200, "credited")
        # The serving vault's enclave never saw bob's credit: its next change loads it first.
        assert vault.service.vault.balance(bob.address) == 0
        assert alice_client.deposit(1_000)["state"] == "credited"
        assert vault.service.vault.balance(bob.address) == 7_000
        alice_client.close()
        asyncio.run(replica.http.aclose())
        replica_store.close()
    with running_vault(world, db_url=url, account=vault.account) as restarted:
        enclave = restarted.service.vault
        assert (enclave.balance(alice.address), enclave.balance(bob.address)) == (6_000, 7_000)
        assert (restarted.store.balance(alice.address),
                restarted.store.balance(bob.address)) == (6_000, 7_000)
        assert enclave_balances(world, restarted.store) == {
            alice.address.lower(): 6_000, bob.address.lower(): 7_000}
        assert world.balance(restarted.address) == 13_000
        assert_conserved(world, restarted.store, restarted.address)


# ------------------------------------------------------------- a missing ledger


def test_a_vault_whose_ledger_row_is_gone_refuses_to_start(world: World) -> None:
    """Deleting the ledger row and restarting would start the enclave with empty balances
    and no memory of the channels it approved or refunded: refused, with the reason."""
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
    ledger.change(lambda: vault.credit_deposit("0x" + os.urandom(32).hex() + ":0",
                                               Account.create().address, 1))
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
