"""A provider whose gateway restarts at another URL (same sealed identity, same state) is
paid on the channel it already has; another provider identity at that URL never is."""

from __future__ import annotations

import pytest

from a402.background import serve_in_thread
from a402.provider.a402_store import SqlChannelStore
from a402.tee import PROVIDER_PURPOSES
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PROVIDER_CODE, Provider, World

from .helpers import assert_conserved, client_of, running_vault, wait_for

pytestmark = pytest.mark.anvil

PRICE = 1_000
ACK_TIMEOUT = 4.0  # the vault's ACK of a call leaves on its own after a second


def _restarted(world: World, provider: Provider) -> Provider:
    """``provider``'s gateway again: its enclave restored from its sealed identity, its
    operator and channel store the same (what ``a402 gateway`` does on a restart)."""
    enclave = world.platform.restore(PROVIDER_CODE, provider.enclave.export_sealed(),
                                     allowed_purposes=PROVIDER_PURPOSES)
    return world.provider(enclave=enclave, operator=provider.config.operator,
                          store=SqlChannelStore(provider.config.store.url), calls=provider.calls,
                          ack_timeout=ACK_TIMEOUT)


def _provider_state(provider: Provider, cid: str) -> tuple[int, int] | None:
    """(version, provider balance) of the channel as the provider's enclave holds it."""
    slot = provider.runtime.channels.slot(bytes.fromhex(cid[2:]))
    if slot is None:
        return None
    return slot.channel.state.version, slot.channel.state.provider_balance


def test_a_provider_restarted_at_another_url_is_paid_on_its_channel(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with running_vault(world) as vault:
        _, client = client_of(world, vault, funds=50_000, deposit=50_000)
        with serve_in_thread(provider.app) as old_site:
            first = client.invoke(f"{old_site}/weather", max_price=PRICE)
        moved = _restarted(world, provider)
        with serve_in_thread(moved.app) as new_site:
            assert new_site != old_site
            second = client.invoke(f"{new_site}/weather", max_price=PRICE)
            [channel] = vault.store.channels()
            # The provider (restarted) holds the channel at version 2: both calls are its.
            wait_for(lambda: _provider_state(moved, channel.cid) == (2, 2 * PRICE),
                     what="the provider's channel at version 2")
        view = client.account_info()
        assert_conserved(world, vault.store, vault.address, escrow)
    assert (first.outcome, second.outcome) == (api.PAID, api.PAID)
    assert view["paid"] == str(2 * PRICE)
    assert view["balance"] == str(50_000 - int(channel.deposit))
    # One channel, paid twice, and now reached (and recorded) at the new URL.
    assert (channel.phase, channel.version, channel.provider_balance) == (
        vault_store.OPEN, 2, str(2 * PRICE))
    assert channel.endpoint.startswith(new_site)
    assert provider.calls["weather"] == 2


def test_another_provider_key_at_the_new_url_gets_nothing_from_the_old_channel(
    world: World,
) -> None:
    """The same operator (same pay-to) but another enclave at the new URL: the old channel
    names the old enclave's key, so it is never bound there; a channel of its own is
    opened with the new key, and the old channel keeps exactly what it had."""
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with running_vault(world) as vault:
        _, client = client_of(world, vault, funds=50_000, deposit=50_000)
        with serve_in_thread(provider.app) as old_site:
            client.invoke(f"{old_site}/weather", max_price=PRICE)
        [before] = vault.store.channels()
        # A fresh enclave key, with a channel store of its own.
        impostor = world.provider(
            operator=provider.config.operator, ack_timeout=ACK_TIMEOUT,
            store=SqlChannelStore(f"sqlite:///{world.tmp}/impostor.db"))
        with serve_in_thread(impostor.app) as new_site:
            paid = client.invoke(f"{new_site}/weather", max_price=PRICE)
            [new] = [c for c in vault.store.channels() if c.cid != before.cid]
            wait_for(lambda: _provider_state(impostor, new.cid) == (1, PRICE),
                     what="the impostor's own channel at version 1")
            assert _provider_state(impostor, before.cid) is None  # never bound there
        [old] = [c for c in vault.store.channels() if c.cid == before.cid]
        [new] = [c for c in vault.store.channels() if c.cid != before.cid]
        view = client.account_info()
        assert_conserved(world, vault.store, vault.address, escrow)
    assert paid.outcome == api.PAID
    assert old.terms == before.terms and new.terms["providerKey"] != old.terms["providerKey"]
    assert new.provider == old.provider  # the same pay-to: only the enclave key differs
    assert (old.version, old.provider_balance) == (1, str(PRICE))  # nothing more
    assert (new.version, new.provider_balance) == (1, str(PRICE))
    assert old.endpoint.startswith(old_site)
    assert view["paid"] == str(2 * PRICE)
