"""What a token's refusals (USDC paused, an address blocklisted) do to the pool: they never
leave a client's money in between, and the client is told the truth.

The pool is on-chain (``ASCManager.pooled``). A pool channel's refund goes back into the
client's pool balance without any transfer, so a paused token cannot hold it up. A
withdrawal order whose transfer the token refuses reverts whole: nothing moved, the
balance is still in the pool, the answer says so, and the client signs another order
(another ``to``, the same nonce: at most one of the two can ever go through). Checked on
anvil, with the token's code swapped for :file:`contracts/RestrictedToken.sol`'s (same
ERC-20 storage) while it refuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, contract_at, deploy_contract, transact
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World, fresh_account
from tests.asc.helpers import selector

from .helpers import assert_conserved, client_of, running_vault, wait_for

pytestmark = pytest.mark.anvil

_PAUSED_SLOT = 6  # RestrictedToken's `paused` (after ERC-20's five slots and `blocklisted`)


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


@contextlib.contextmanager
def token_refusing(world: World, *, paused: bool = False, blocked: tuple[str, ...] = ()
                   ) -> Iterator[None]:
    """``world.token`` refusing every transfer (``paused``, as USDC's ``pause``) or those
    from or to ``blocked`` (as USDC's blocklist), meanwhile."""
    w3, admin, token = world.chain.w3, world.chain.accounts[0], world.token.address
    original = w3.eth.get_code(token)
    slot = w3.eth.get_storage_at(token, _PAUSED_SLOT)
    restricted = deploy_contract(world.chain, admin, "RestrictedToken")
    w3.provider.make_request("anvil_setCode",  # type: ignore[arg-type]
                             [token, w3.eth.get_code(restricted.address).to_0x_hex()])
    swapped = contract_at(world.chain, "RestrictedToken", token).functions
    if paused:
        transact(world.chain, admin, swapped.setPaused(True))
    for who in blocked:
        transact(world.chain, admin, swapped.setBlocklisted(who, True))
    try:
        yield
    finally:
        for who in blocked:
            transact(world.chain, admin, swapped.setBlocklisted(who, False))
        w3.provider.make_request("anvil_setStorageAt",  # type: ignore[arg-type]
                                 [token, hex(_PAUSED_SLOT), slot.to_0x_hex()])
        w3.provider.make_request("anvil_setCode", [token, original.to_0x_hex()])  # type: ignore[arg-type]


def test_a_pool_refund_while_the_token_is_paused_is_back_in_the_pool_at_once(
        world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=100_000, deposit=50_000)
        paid = client.invoke(f"{site}/weather", max_price=1_000)
        assert paid.amount == 1_000
        [channel] = client.account_info()["channels"]
        with token_refusing(world, paused=True):
            closed = client.close_channel(channel["channelId"])
            assert (closed["phase"], closed["clientPayout"], closed["providerPayout"]) == (
                vault_store.SETTLED, "9000", "1000")
            # No transfer was needed for the client's share: it is in the pool already.
            assert world.manager.pooled(vault.address, account.address) == 49_000
            assert world.manager.owed(vault.address) == 0
            assert world.manager.owed(provider.address) == 1_000
        wait_for(lambda: world.manager.owed(provider.address) == 0, timeout=60,
                 what="the provider collecting the payout the token refused")
        assert world.balance(provider.address) == 1_000
        assert client.account_info()["balance"] == str(50_000 - 1_000)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()


def test_a_withdrawal_to_a_blocklisted_address_is_refused_nothing_moves_and_another_to_is_paid(
        world: World) -> None:
    """A `to` the token refuses for good (blocklisted) used to leave a withdrawal pending
    forever. Now the contract refuses the order whole: the answer says nothing moved and
    the balance is still in the pool; the client signs the same nonce to another address,
    which is paid; the first order can never go through after that."""
    with running_vault(world) as vault:
        account, client = client_of(world, vault, funds=5_000, deposit=5_000)
        blocked, elsewhere = fresh_account(world.chain), fresh_account(world.chain)
        nonce = int(client.account_info()["poolWithdrawalNonce"])
        with token_refusing(world, blocked=(blocked.address,)):
            refused = client.withdraw(3_000, to=blocked.address, nonce=nonce)
            assert (refused["state"], refused["reason"]) == (vault_store.TX_FAILED,
                                                             api.WITHDRAWAL_REFUSED), refused
            assert "nothing moved" in refused["message"]
            assert "still in the pool" in refused["message"]
            assert world.manager.pooled(vault.address, account.address) == 5_000
            view = client.account_info()
            assert (view["balance"], view["pooled"]) == ("5000", "5000")
            assert int(view["poolWithdrawalNonce"]) == nonce  # unused: sign it again
            paid = client.withdraw(3_000, to=elsewhere.address, nonce=nonce)
            assert paid["state"] == vault_store.TX_CONFIRMED, paid
        assert world.balances(elsewhere.address, blocked.address) == (3_000, 0)
        assert world.manager.pooled(vault.address, account.address) == 2_000
        # The refused order, relayed again now that the address is unblocked: its nonce is
        # used, so it moves nothing.
        deadline = world.manager.chain_time() + 600
        _, order = world.manager.pool_withdrawal_order(account, vault.address, blocked.address,
                                                       2_000, deadline, nonce=nonce)
        with pytest.raises(TransactionFailed, match=selector("WrongNonce(uint256,uint256)")):
            world.manager.withdraw_from_pool_for(world.chain.accounts[1], vault.address,
                                                 account.address, blocked.address, 2_000,
                                                 nonce, deadline, order)
        assert world.balance(blocked.address) == 0
        assert client.account_info()["balance"] == "2000"
        assert_conserved(world, vault.store, vault.address)
        client.close()


def test_a_withdrawal_while_the_token_is_paused_is_refused_and_goes_through_signed_again(
        world: World) -> None:
    with running_vault(world) as vault:
        account, client = client_of(world, vault, funds=5_000, deposit=5_000)
        with token_refusing(world, paused=True):
            refused = client.withdraw(5_000)
            assert refused["state"] == vault_store.TX_FAILED, refused
            assert "nothing moved" in refused["message"]
            assert world.manager.pooled(vault.address, account.address) == 5_000
        assert world.balance(account.address) == 0
        paid = client.withdraw(5_000)
        assert paid["state"] == vault_store.TX_CONFIRMED, paid["message"]
        assert world.balance(account.address) == 5_000
        assert world.manager.pooled(vault.address, account.address) == 0
        assert client.account_info()["balance"] == "0"
        assert_conserved(world, vault.store, vault.address)
        client.close()
