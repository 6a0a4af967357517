"""When the provider does not play along, or the client cheats: the chain decides, and the
vault gets it right — the result recovered from the provider's claim, a stuck payment
escalated and refunded, a stale client force-close answered by the watchtower.

Each test gets its own anvil: they move the chain's clock past the dispute window.
"""

from __future__ import annotations

from typing import Any

import pytest

from a402.asc import snapshot as snap
from a402.asc_manager import OnChainStatus
from a402.background import serve_in_thread
from a402.client.vault import VaultCallError, VaultClient
from a402.vault import records
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.faulty import WithholdingProvider
from tests.a402_exchange.helpers import DISPUTE_WINDOW, World

from .helpers import assert_conserved, client_of, running_vault, wait_for

pytestmark = pytest.mark.anvil

PRICE = 1_000


@pytest.fixture
def world(private_world: World) -> World:
    return private_world


def _pending(client: VaultClient, url: str, key: str) -> dict[str, Any]:
    with pytest.raises(VaultCallError) as pending:
        client.invoke(url, max_price=PRICE, idempotency_key=key)
    assert (pending.value.status, pending.value.reason) == (202, api.PAYMENT_PENDING)
    return pending.value.body


def test_a_withheld_reveal_is_claimed_on_chain_and_the_vault_still_gets_the_result(
    world: World,
) -> None:
    # Δ_ack long enough for the first request's ACK to arrive in time on a loaded machine.
    provider = world.provider(runtime_cls=WithholdingProvider, ack_timeout=5.0)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)
        # The second request's REVEAL is withheld: the provider claims δ on-chain after
        # Δ_ack, which publishes s; the vault extracts t and opens the result.
        result = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="w2")
        # The call is answered as the claim is found, just before the ledger records the
        # client's refund (that order survives a crash: see Channels.settle).
        [channel] = wait_for(lambda: [c for c in vault.store.channels()
                                      if c.phase == vault_store.SETTLED], what="the credit")
        assert_conserved(world, vault.store, vault.address, escrow)
    assert result.outcome == api.PAID and result.payment is not None
    assert result.payment["onChain"] and result.payment["transaction"] == channel.settle_tx
    assert result.content == b'{"weather":"sunny","n":2}'
    assert (channel.phase, channel.provider_payout, channel.client_payout) == (
        vault_store.SETTLED, str(2 * PRICE), str(10 * PRICE - 2 * PRICE))
    assert world.balance(provider.address) == 2 * PRICE


def test_a_payment_stuck_pending_is_escalated_and_refunded(world: World) -> None:
    provider = world.provider(runtime_cls=WithholdingProvider, watch=False)  # never claims
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, pending_escalation=1.0) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.pending_wait = 1.0
        client.invoke(f"{site}/weather", max_price=PRICE)
        _pending(client, f"{site}/weather", "stuck")
        # The vault gives up waiting and starts a force-close with its latest state …
        wait_for(lambda: (vault.store.channels()[0].deadline is not None), what="force-close")
        assert world.manager.channel(bytes.fromhex(vault.store.channels()[0].cid[2:])).status \
            is OnChainStatus.CLOSING
        # … which nobody answers: after the window it is final, and δ comes back.
        world.increase_time(DISPUTE_WINDOW + 1)
        status, answer = wait_for(lambda: (lambda o: o if o[0] == 200 else None)(
            client.outcome("stuck")), what="the call's final answer")
        # The call is answered as the settlement is found, just before the ledger
        # records what came back (that order survives a crash: see Channels.settle).
        [channel] = wait_for(lambda: [c for c in vault.store.channels()
                                      if c.phase == vault_store.SETTLED], what="the credit")
        assert_conserved(world, vault.store, vault.address, escrow)
    assert (status, answer["outcome"]) == (200, api.ABORTED)
    assert (channel.phase, channel.provider_payout) == (vault_store.SETTLED, str(PRICE))
    assert world.balance(vault.address) == 0
    assert world.manager.pooled(vault.address, account.address) == 20_000 - PRICE
    assert world.balance(provider.address) == PRICE
    assert world.balance(account.address) == 0


def test_a_stale_client_force_close_loses_to_the_watchtower(world: World) -> None:
    # The provider is offline as far as the chain goes: the vault's watchtower alone answers.
    provider = world.provider(watch=False)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=10_000)
        paid = [client.invoke(f"{site}/weather", max_price=PRICE, funding=api.WALLET,
                              deposit=5_000) for _ in range(3)]
        receipts = [p.payment["receipt"] for p in paid if p.payment]
        [row] = vault.store.channels()
        terms = snap.terms_from_json(row.terms)
        # The client force-closes with its first receipt: one payment instead of three.
        world.manager.init_force_close(account, terms, records.signed_from_json(receipts[0]))
        wait_for(lambda: vault.store.channel(row.cid).disputed_version == 3,
                 what="the watchtower's challenge")
        onchain = world.manager.channel(bytes.fromhex(row.cid[2:]))
        assert (onchain.status, onchain.version, onchain.provider_balance) == (
            OnChainStatus.CLOSING, 3, 3 * PRICE)
        world.increase_time(DISPUTE_WINDOW + 1)
        wait_for(lambda: vault.store.channel(row.cid).phase == vault_store.SETTLED,
                 what="settlement")
        settled = vault.store.channel(row.cid)
        assert_conserved(world, vault.store, vault.address, escrow)
    assert [r["version"] for r in receipts] == [1, 2, 3]
    assert settled is not None and (settled.provider_payout, settled.client_payout) == (
        str(3 * PRICE), str(5_000 - 3 * PRICE))
    assert world.balance(account.address) == 10_000 - 3 * PRICE
    assert world.balance(provider.address) == 3 * PRICE
