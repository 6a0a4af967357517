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
from collections.abc import Iterator

import pytest

from a402.background import serve_in_thread
from a402.chain.tx import contract_at, deploy_contract, transact
from a402.vault import store as vault_store
from tests.a402_exchange.helpers import World

from .helpers import assert_conserved, client_of, running_vault, wait_for

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

