"""Faulty providers against an honest vault: every fault ends in Success or Abort, never in
"paid without the result" — and every settlement conserves the deposit exactly.

Success: the vault has the result and the provider has δ (off-chain, or on-chain
through ``forceClose`` from which the vault extracts ``t``). Abort: nothing is
paid for the request (no σ_U was issued, or the client's force-close returns δ).
"""

from __future__ import annotations

import json

import pytest

from a402.asc import (
    Reason,
    RemoteProtocolError,
    Reply,
    Status,
    VaultChannel,
    decode,
)
from a402.asc_manager import OnChainStatus
from a402.background import serve_in_thread
from a402.crypto import EVM, is_adaptor_secret
from a402.vault import (
    CheckpointReason,
    PaymentPending,
    ProtocolViolation,
    ProviderRefused,
    find_provider_force_close,
    recover_from_force_close,
)
from a402.wire.a402 import HttpRequest

from .faulty import (
    MovedResultProvider,
    ReplayingProvider,
    WithholdingProvider,
    WrongHashProvider,
    WrongPointProvider,
    WrongSecretProvider,
)
from .helpers import DEPOSIT, DISPUTE_WINDOW, PRICE, WEATHER, World, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]



def pending_reply(channel: VaultChannel) -> Reply:
    """The REPLY the vault holds for its PENDING request (as its snapshot records it)."""
    stored = json.loads(channel.snapshot())["pending"]["reply"]
    reply = decode(bytes.fromhex(stored))
    assert isinstance(reply, Reply)
    return reply


class Settlement:
    """Payouts and escrow around one on-chain settlement, asserted exactly."""

    def __init__(self, world: World, client: str, provider: str) -> None:
        self.world, self.client, self.provider = world, client, provider
        self.before = world.balances(client, provider, world.manager.address)

    def assert_paid(self, *, client: int, provider: int) -> None:
        after = self.world.balances(self.client, self.provider, self.world.manager.address)
        deltas = tuple(a - b for a, b in zip(after, self.before, strict=True))
        assert deltas == (client, provider, -DEPOSIT)
        assert client + provider == DEPOSIT


async def test_withheld_reveal_is_claimed_after_ack_timeout_and_the_vault_recovers_the_result(
    world: World,
) -> None:
    # Δ_ack must be long enough for request 0's ACK to arrive in time on a loaded machine.
    provider = world.provider(runtime_cls=WithholdingProvider, ack_timeout=5.0)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            await tunnel.request(channel, WEATHER, PRICE)  # request 0: revealed as usual
            with pytest.raises(PaymentPending) as pending:
                await tunnel.request(channel, WEATHER, PRICE)
            assert (pending.value.reason, pending.value.request_id) == ("withheld", 1)
            assert channel.status is Status.PENDING
            assert vault.checkpoints[-1].reason is CheckpointReason.AUTHORIZED  # σ_U persisted
            assert (channel.provider_balance, channel.locked) == (PRICE, PRICE)
            reply = pending_reply(channel)
            spare = VaultChannel.restore(channel.snapshot(), vault.signer)

            # Δ_ack passes without ACK: the provider's watcher claims on-chain by itself.
            cid = channel.channel_id
            await wait_until(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSED,
                             timeout=60)
            tx = find_provider_force_close(world.manager, cid)
            assert tx is not None
            settlement.assert_paid(client=DEPOSIT - 2 * PRICE, provider=2 * PRICE)

            # t from the calldata and from the log: the same, and the log of T.
            receipt = world.chain.w3.eth.get_transaction_receipt(tx)
            presignature = EVM.presignature_from_bytes(reply.presignature)
            from_calldata = world.manager.signature_from_calldata(tx)
            (from_log,) = world.manager.signatures_from_logs(receipt)
            t = EVM.extract(presignature, from_calldata.signature, reply.adaptor_point)
            assert EVM.extract(presignature, from_log.signature, reply.adaptor_point) == t
            assert is_adaptor_secret(t, reply.adaptor_point)

            # The vault opens the result it paid for: calldata + log, and log alone.
            recovered = await tunnel.recover(channel, world.manager, tx_hash=tx)
            from_log_only = recover_from_force_close(spare, world.manager, receipt=receipt)
    for paid in (recovered, from_log_only):
        assert paid is not None and paid.on_chain and paid.transaction == tx
        assert (paid.request_id, paid.amount) == (1, PRICE)
        assert json.loads(paid.response.body) == {"weather": "sunny", "n": 2}
    assert channel.status is Status.CLOSED and spare.status is Status.CLOSED
    assert vault.checkpoints[-1].reason is CheckpointReason.FORCE_CLOSED


async def test_a_provider_that_never_reveals_nor_claims_loses_delta_to_a_client_force_close(
    world: World,
) -> None:
    provider = world.provider(runtime_cls=WithholdingProvider, watch=False)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            await tunnel.request(channel, WEATHER, PRICE)
            with pytest.raises(PaymentPending):
                await tunnel.request(channel, WEATHER, PRICE)
    # Nobody answers: the client closes with the latest co-signed state it got from the vault.
    latest = channel.latest_state()
    assert latest.state.version == 1
    world.manager.init_force_close(client, channel.terms, latest)
    world.increase_time(DISPUTE_WINDOW)
    world.manager.final_force_close(client, channel.terms)
    # The δ locked for the unrevealed request is the client's again.
    settlement.assert_paid(client=DEPOSIT - PRICE, provider=PRICE)


async def test_a_client_force_close_is_answered_at_once_by_the_provider_holding_sigma_u(
    world: World,
) -> None:
    provider = world.provider(runtime_cls=WithholdingProvider, ack_timeout=600.0)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            await tunnel.request(channel, WEATHER, PRICE)
            with pytest.raises(PaymentPending):
                await tunnel.request(channel, WEATHER, PRICE)
            world.manager.init_force_close(client, channel.terms, channel.latest_state())
            cid = channel.channel_id
            await wait_until(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSED)
            tx = find_provider_force_close(world.manager, cid)
            assert tx is not None
            paid = await tunnel.recover(channel, world.manager, tx_hash=tx)
    assert paid is not None and json.loads(paid.response.body)["n"] == 2
    settlement.assert_paid(client=DEPOSIT - 2 * PRICE, provider=2 * PRICE)


async def test_the_provider_challenges_a_stale_client_force_close(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            for _ in range(2):
                await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()  # the provider holds the co-signed state of both
            # The client tries to close on the opening state, as if nothing had been paid.
            world.manager.init_force_close(client, channel.terms,
                                           VaultChannel.restore(
                                               vault.checkpoints[0].snapshot, vault.signer
                                           ).latest_state())
            cid = channel.channel_id
            await wait_until(lambda: world.manager.channel(cid).version == 2)
    world.increase_time(DISPUTE_WINDOW)
    world.manager.final_force_close(client, channel.terms)
    settlement.assert_paid(client=DEPOSIT - 2 * PRICE, provider=2 * PRICE)


async def test_a_replayed_reply_is_rejected_and_nothing_is_paid(world: World) -> None:
    provider = world.provider(runtime_cls=ReplayingProvider)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            with pytest.raises(ProtocolViolation) as refused:
                await tunnel.request(channel, WEATHER, PRICE)
    assert refused.value.reason == Reason.REPLAYED
    assert channel.status is Status.OPEN
    assert (channel.free, channel.provider_balance) == (DEPOSIT - PRICE, PRICE)
    assert vault.reasons()[-2:] == ["locked", "expired"]  # no σ_U for request 1


@pytest.mark.parametrize("faulty", [WrongHashProvider, WrongPointProvider])
async def test_a_reply_whose_presignature_does_not_match_h_or_t_is_rejected(
    world: World, faulty: type,
) -> None:
    provider = world.provider(runtime_cls=faulty)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            with pytest.raises(ProtocolViolation) as refused:
                await tunnel.request(channel, WEATHER, PRICE)
    assert refused.value.reason == Reason.BAD_PRESIGNATURE
    assert (channel.status, channel.free, channel.provider_balance) == (Status.OPEN, DEPOSIT, 0)
    assert vault.reasons() == ["attached", "locked", "expired"]
    slot = provider.runtime.channels.slot(channel.channel_id)
    assert slot is not None and slot.channel.status is Status.LOCKED  # no AUTH ever reached it


async def test_a_reveal_whose_t_is_not_the_log_of_T_is_rejected(world: World) -> None:
    provider = world.provider(runtime_cls=WrongSecretProvider, ack_timeout=1.0)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            with pytest.raises(PaymentPending) as pending:
                await tunnel.request(channel, WEATHER, PRICE)
            assert pending.value.reason == Reason.BAD_ADAPTOR_SECRET
            assert (channel.status, channel.provider_balance) == (Status.PENDING, 0)
            # The provider still holds σ_U and claims with the true t; the vault opens the result.
            cid = channel.channel_id
            await wait_until(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSED)
            paid = await tunnel.recover(
                channel, world.manager, tx_hash=find_provider_force_close(world.manager, cid)
            )
    assert paid is not None and json.loads(paid.response.body)["n"] == 1
    settlement.assert_paid(client=DEPOSIT - PRICE, provider=PRICE)


async def test_a_sealed_result_moved_to_another_request_does_not_open(world: World) -> None:
    provider = world.provider(runtime_cls=MovedResultProvider, ack_timeout=1.0)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            settlement = Settlement(world, client.address, provider.address)
            with pytest.raises(PaymentPending) as pending:
                await tunnel.request(channel, WEATHER, PRICE)
            assert pending.value.reason == Reason.RESULT_DOES_NOT_OPEN
            assert (channel.status, channel.provider_balance) == (Status.PENDING, 0)
            cid = channel.channel_id
            await wait_until(lambda: world.manager.channel(cid).status is OnChainStatus.CLOSED)
            with pytest.raises(RemoteProtocolError) as unopened:
                await tunnel.recover(
                    channel, world.manager, tx_hash=find_provider_force_close(world.manager, cid)
                )
    # A faulty enclave can cost the vault at most the δ it authorised (the attested code is
    # what is trusted to seal the right result); the deposit is conserved exactly.
    assert unopened.value.reason == Reason.RESULT_DOES_NOT_OPEN
    assert channel.status is Status.CLOSED
    settlement.assert_paid(client=DEPOSIT - PRICE, provider=PRICE)


async def test_a_failing_service_is_not_charged_and_the_channel_goes_on(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            with pytest.raises(ProviderRefused) as refused:
                await tunnel.request(channel, HttpRequest("GET", "/boom"), PRICE)
            assert refused.value.reason == "service_failed"
            assert refused.value.response is not None
            assert refused.value.response.status == 500
            assert json.loads(refused.value.response.body) == {"error": "kaput"}
            assert (channel.status, channel.free) == (Status.OPEN, DEPOSIT)
            for request, amount, reason in (
                (HttpRequest("GET", "/free"), PRICE, "not_a_paid_route"),
                (WEATHER, PRICE + 1, "amount_mismatch"),
            ):
                with pytest.raises(ProviderRefused) as refused:
                    await tunnel.request(channel, request, amount)
                assert refused.value.reason == reason
            paid = await tunnel.request(channel, WEATHER, PRICE)  # at once: nothing is stuck
    assert paid.request_id == 3 and paid.receipt is not None
    assert paid.receipt.state.provider_balance == PRICE
    assert provider.calls["boom"] == 1
