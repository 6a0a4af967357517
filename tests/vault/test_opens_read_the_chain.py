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

from typing import Any

import pytest

from a402.asc_manager import OnChainStatus
from a402.background import serve_in_thread
from a402.chain.tx import transact
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICE, World, fresh_account

from .helpers import assert_conserved, client_of, running_vault

pytestmark = pytest.mark.anvil

FUNDS = 20_000


def test_a_copy_of_the_gas_payers_open_lands_first_and_the_channel_is_open_with_the_debit_kept(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    stranger = fresh_account(world.chain)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault.url, funds=FUNDS, deposit=FUNDS)
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
        assert world.balance(vault.address) == FUNDS - deposit
        assert vault.store.balance(account.address) == FUNDS - deposit
        assert vault.service.vault.balance(account.address) == FUNDS - deposit
        assert world.balance(world.manager.address) == escrow + deposit
        assert_conserved(world, vault.store, vault.address, escrow)
