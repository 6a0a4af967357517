"""The A402 exchange over real HTTP: paid requests through one channel, then a cooperative close.

Provider: ``A402Payments`` and the payment middleware around a FastAPI service,
on loopback. Vault: :class:`ProviderTunnel` with its own simulated enclave.
Money: TestUSDC escrowed by a real ASCManager on anvil.
"""

from __future__ import annotations

import json

import pytest

from a402.asc import Status, state_signer
from a402.asc_manager import OnChainStatus
from a402.background import serve_in_thread
from a402.vault import CheckpointReason
from a402.wire.a402 import HttpRequest

from .helpers import DEPOSIT, PRICES, World, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


async def test_three_paid_requests_then_a_cooperative_close(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    escrow_before = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            cid = channel.channel_id
            assert world.balance(world.manager.address) == escrow_before + DEPOSIT
            requests = [
                (HttpRequest("GET", "/weather"), PRICES["GET /weather"]),
                (HttpRequest("POST", "/echo", b"x=1", ((b"x-test", b"yes"),), b"hello"),
                 PRICES["POST /echo"]),
                (HttpRequest("GET", "/weather"), PRICES["GET /weather"]),
            ]
            paid = [await tunnel.request(channel, r, amount) for r, amount in requests]

            # The service ran once per request and its answers came back intact.
            assert [p.response.status for p in paid] == [200, 200, 200]
            assert json.loads(paid[0].response.body) == {"weather": "sunny", "n": 1}
            assert json.loads(paid[1].response.body) == {
                "echo": "hello", "header": "yes", "query": "x=1"
            }
            assert json.loads(paid[2].response.body)["n"] == 2
            assert (provider.calls["weather"], provider.calls["echo"]) == (2, 1)

            # Exact off-chain balances, and every receipt is co-signed.
            spent = 0
            for version, (p, (_, amount)) in enumerate(zip(paid, requests, strict=True), 1):
                spent += amount
                assert (p.request_id, p.amount, p.on_chain) == (version - 1, amount, False)
                assert p.receipt is not None
                state = p.receipt.state
                assert (state.version, state.client_balance, state.provider_balance) == (
                    version, DEPOSIT - spent, spent
                )
                domain = world.manager.domain
                assert state_signer(domain, cid, state, p.receipt.vault_signature) == \
                    channel.terms.vault
                assert state_signer(domain, cid, state, p.receipt.provider_signature) == \
                    channel.terms.provider
            assert (channel.free, channel.locked, channel.provider_balance) == (
                DEPOSIT - spent, 0, spent
            )
            await tunnel.flush_acks()  # the last ACK would otherwise ride on a next EXEC
            slot = provider.runtime.channels.slot(cid)
            assert slot is not None and slot.channel.state == channel.state
            assert slot.channel.status is Status.OPEN

            # Every transition was persisted before the next message left.
            assert vault.reasons() == ["attached"] + ["locked", "authorized", "delivered"] * 3

            client_before, provider_before = world.balances(client.address, provider.address)
            signed = await tunnel.close(channel)
            assert vault.checkpoints[-1].reason is CheckpointReason.CLOSE_READY
            world.manager.close(vault.account, channel.terms, signed)

        client_after, provider_after = world.balances(client.address, provider.address)
        assert (client_after - client_before, provider_after - provider_before) == (
            DEPOSIT - spent, spent
        )
        assert world.balance(world.manager.address) == escrow_before
        assert world.manager.channel(cid).status is OnChainStatus.CLOSED
        # The provider's watcher sees the settlement and stops watching the channel.
        await wait_until(lambda: slot.onchain_closed)
