"""Payouts the token refused (USDC paused while a channel settled) come back once it sends:
the pool's refund to the vault, the provider's payout to the provider.

ASCManager credits a payout its token refuses to the receiver (``owed``) instead of
blocking the settlement. For a pool channel the receiver of the refund is the vault,
and the vault's ledger credits the client's balance when the channel settles, so the
vault must take what it is owed back into its wallet: otherwise its wallet holds less
than the balances it owes its clients, and the last of them cannot withdraw. Checked
on anvil, with the token's code swapped for :file:`contracts/RestrictedToken.sol`'s
(same ERC-20 storage) while it is paused.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, contract_at, deploy_contract, transact
from a402.client.vault import VaultCallError
from a402.vault import store as vault_store
from a402.vault.app import create_app
from a402.vault.service import VaultService
from a402.vault.store import VaultStore
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import assert_conserved, client_of, running_vault, vault_config, wait_for

pytestmark = pytest.mark.anvil

_PAUSED_SLOT = 6  # RestrictedToken's `paused` (after ERC-20's five slots and `blocklisted`)


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


@contextlib.contextmanager
def token_paused(world: World) -> Iterator[None]:
    """Every transfer of ``world.token`` refused, as USDC's ``pause`` does, meanwhile."""
    w3, admin, token = world.chain.w3, world.chain.accounts[0], world.token.address
    original = w3.eth.get_code(token)
    slot = w3.eth.get_storage_at(token, _PAUSED_SLOT)
    restricted = deploy_contract(world.chain, admin, "RestrictedToken")
    w3.provider.make_request("anvil_setCode",  # type: ignore[arg-type]
                             [token, w3.eth.get_code(restricted.address).to_0x_hex()])
    transact(world.chain, admin, contract_at(world.chain, "RestrictedToken", token)
             .functions.setPaused(True))
    try:
        yield
    finally:
        w3.provider.make_request("anvil_setStorageAt",  # type: ignore[arg-type]
                                 [token, hex(_PAUSED_SLOT), slot.to_0x_hex()])
        w3.provider.make_request("anvil_setCode", [token, original.to_0x_hex()])  # type: ignore[arg-type]


def test_a_refund_credited_while_the_token_was_paused_returns_to_the_pool(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault.url, funds=100_000, deposit=50_000)
        paid = client.invoke(f"{site}/weather", max_price=1_000)
        assert paid.amount == 1_000
        [channel] = client.account_info()["channels"]
        with token_paused(world):
            closed = client.close_channel(channel["channelId"])
            assert (closed["phase"], closed["clientPayout"], closed["providerPayout"]) == (
                vault_store.SETTLED, "9000", "1000")
            assert world.manager.owed(vault.address) == 9_000
        # Once the token sends again, each takes back what it is owed: the provider its
        # payout, the vault the pool's refund.
        wait_for(lambda: world.manager.owed(provider.address) == 0, timeout=10,
                 what="the provider collecting the payout the token refused")
        assert world.balance(provider.address) == 1_000
        wait_for(lambda: world.manager.owed(vault.address) == 0, timeout=10,
                 what="the vault collecting the refund the token refused")
        assert client.account_info()["balance"] == str(50_000 - 1_000)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()



def test_a_withdrawal_the_token_refuses_stays_pending_and_pays_exactly_once_when_it_sends(
        world: World) -> None:
    """USDC paused while a client withdraws: the transfer the enclave signed is refused. The
    withdrawal stays pending — its amount reserved in the host's ledger and the
    enclave's alike, the client told so — and once the token sends again the worker's
    retry of the same EIP-3009 authorization pays it, once: a second signature of it
    (same nonce) moves nothing, and the client withdraws the rest and not a token more."""
    with running_vault(world) as vault:
        account, client = client_of(world, vault.url, funds=5_000, deposit=5_000)
        enclave = vault.service.vault
        with token_paused(world):
            answer = client.withdraw(3_000, idempotency_key="during-pause")
            assert (answer["state"], answer["reason"]) == (vault_store.TX_SUBMITTED,
                                                           api.WITHDRAWAL_PENDING), answer
            assert "reserved" in answer["message"]
            assert client.account_info()["balance"] == "2000"
            assert enclave.balance(account.address) == 2_000
            again = client.withdraw(3_000, idempotency_key="during-pause")
            assert again["state"] == vault_store.TX_SUBMITTED
            time.sleep(1.5)  # worker ticks, each refused too
            assert world.balance(account.address) == 0
            assert world.balance(vault.address) == 5_000
            assert (client.account_info()["balance"], enclave.balance(account.address)) == (
                "2000", 2_000)
            assert_conserved(world, vault.store, vault.address)  # reserved, not lost
        wait_for(lambda: world.balance(account.address) == 3_000, timeout=30,
                 what="the worker sending the refused withdrawal again")
        key = f"{account.address.lower()}:during-pause"
        wait_for(lambda: vault.store.withdrawal(key).state == vault_store.TX_CONFIRMED,  # type: ignore[union-attr]
                 timeout=10, what="the withdrawal confirmed")
        assert client.withdraw(3_000, idempotency_key="during-pause")["state"] == (
            vault_store.TX_CONFIRMED)
        # Its authorization signed once more (same nonce) is refused by the token.
        replay = enclave.withdrawal_again(key, now=int(time.time()))
        v = replay.signature[64] if replay.signature[64] >= 27 else replay.signature[64] + 27
        checksum = world.chain.w3.to_checksum_address
        with pytest.raises(TransactionFailed, match="authorization is used"):
            transact(world.chain, world.chain.accounts[1], world.token.functions
                     .transferWithAuthorization(checksum(replay.source), checksum(replay.to),
                                                replay.value,
                                                replay.valid_after, replay.valid_before,
                                                replay.nonce, v, replay.signature[:32],
                                                replay.signature[32:64]))
        rest = client.withdraw(2_000, idempotency_key="the-rest")
        assert rest["state"] == vault_store.TX_CONFIRMED, rest
        with pytest.raises(VaultCallError) as refused:
            client.withdraw(1, idempotency_key="one-more")
        assert refused.value.status == 402
        assert world.balance(account.address) == 5_000
        assert world.balance(vault.address) == 0
        assert (client.account_info()["balance"], enclave.balance(account.address)) == ("0", 0)
        assert_conserved(world, vault.store, vault.address)
        client.close()


def test_a_standby_taking_over_a_refused_withdrawal_sends_it_and_never_gives_it_back(
        world: World) -> None:
    """A standby vault process built (its enclave's ledger loaded) before the active one
    signed a withdrawal the paused token refused takes over: it loads the newer ledger,
    keeps the withdrawal pending while the token is paused, and pays it once after."""
    url = f"sqlite:///{world.tmp}/failover.db"
    with contextlib.ExitStack() as paused:
        with running_vault(world, db_url=url) as vault:
            account, client = client_of(world, vault.url, funds=5_000, deposit=5_000)
            standby_store = VaultStore(url)
            standby = VaultService(vault_config(world, vault.account, standby_store))
            paused.enter_context(token_paused(world))
            answer = client.withdraw(3_000, idempotency_key="w")
            assert answer["state"] == vault_store.TX_SUBMITTED, answer
            client.close()
        key = f"{account.address.lower()}:w"
        with serve_in_thread(create_app(standby)):
            wait_for(lambda: standby.worker.ticks >= 3, timeout=10, what="standby ticks")
            record = standby_store.withdrawal(key)
            assert record is not None and record.state == vault_store.TX_SUBMITTED
            assert (standby_store.balance(account.address),
                    standby.vault.balance(account.address)) == (2_000, 2_000)
            assert world.balance(account.address) == 0
            paused.close()
            wait_for(lambda: world.balance(account.address) == 3_000, timeout=30,
                     what="the standby sending the refused withdrawal")
            wait_for(lambda: standby_store.withdrawal(key).state  # type: ignore[union-attr]
                     == vault_store.TX_CONFIRMED, timeout=10, what="the withdrawal confirmed")
            assert world.balance(standby.address) == 2_000
            assert_conserved(world, standby_store, standby.address)
        standby_store.close()
