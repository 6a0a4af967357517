"""The tunnel around the exchange: attestation, replays, tampering, concurrency, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from a402.asc import (
    Ack,
    Exec,
    LocalProtocolError,
    Reason,
    Reply,
    Status,
    VaultChannel,
    decode,
)
from a402.background import serve_in_thread
from a402.provider.a402_store import SqlChannelStore
from a402.tee import PROVIDER_PURPOSES, AttestationError, SimulatedPlatform, SimulatedVerifier
from a402.vault import CheckpointReason, ProviderUnavailable
from a402.vault.tunnel import Checkpoint, ProviderTunnel
from a402.wire.a402 import (
    MESSAGE_PATH,
    TUNNEL_HEADER,
    Envelope,
    HttpRequest,
    Kind,
    Refusal,
)

from .helpers import DEPOSIT, PRICE, PROVIDER_CODE, WEATHER, Calls, World, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]



class Wire(httpx.AsyncBaseTransport):
    """The network between vault and provider: records frames, and can flip bits in them."""

    def __init__(self, *, tamper_requests: int = 0, tamper_responses: int = 0) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.tamper_requests, self.tamper_responses = tamper_requests, tamper_responses
        self.frames: list[tuple[str, bytes]] = []  # (tunnel id, request body) per /message
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        is_frame = request.url.path == MESSAGE_PATH
        if is_frame:
            body = await request.aread()
            self.frames.append((request.headers[TUNNEL_HEADER], body))
            if self.tamper_requests:
                self.tamper_requests -= 1
                request = httpx.Request(request.method, request.url, headers=request.headers,
                                        content=body[:-1] + bytes([body[-1] ^ 1]))
        response = await self.inner.handle_async_request(request)
        if not is_frame:
            return response
        content = await response.aread()
        self.statuses.append(response.status_code)
        if self.tamper_responses and response.status_code == 200:
            self.tamper_responses -= 1
            content = content[:20] + bytes([content[20] ^ 0x80]) + content[21:]
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ------------------------------------------------------------------ attestation


@pytest.mark.parametrize("case", ["untrusted_root", "measurement", "simulation_refused"])
async def test_a_provider_whose_attestation_does_not_verify_is_refused(
    world: World, case: str
) -> None:
    if case == "untrusted_root":
        enclave = SimulatedPlatform.generate().launch(PROVIDER_CODE,
                                                      allowed_purposes=PROVIDER_PURPOSES)
        provider, kwargs = world.provider(enclave=enclave), {}
        expected = "untrusted_root"
    elif case == "measurement":
        enclave = world.platform.launch(b"\x07" * 48, allowed_purposes=PROVIDER_PURPOSES)
        provider, kwargs = world.provider(enclave=enclave), {}
        expected = "measurement_mismatch"
    else:
        provider = world.provider()
        kwargs = {"verifiers": [SimulatedVerifier(world.platform.root.public_key)]}
        expected = "simulated_not_allowed"
    vault = world.vault()
    with serve_in_thread(provider.app) as url:
        tunnel = world.tunnel(vault, url, **kwargs)
        with pytest.raises(AttestationError) as refused:
            await tunnel.connect()
        await tunnel.aclose()
    assert refused.value.reason == expected
    assert tunnel.info is None


async def test_a_vault_whose_attestation_does_not_verify_gets_no_tunnel(world: World) -> None:
    provider, vault = world.provider(), world.vault(measurement=b"\x09" * 48)
    with serve_in_thread(provider.app) as url:
        tunnel = world.tunnel(vault, url)
        with pytest.raises(AttestationError) as refused:
            await tunnel.connect()
        await tunnel.aclose()
    assert refused.value.reason == "measurement_mismatch"


# ---------------------------------------------------------------------- replays


async def test_replayed_frames_and_messages_are_rejected(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    wire = Wire()
    with serve_in_thread(provider.app) as url:
        http = httpx.AsyncClient(transport=wire)
        async with world.tunnel(vault, url, http=http) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()
            first_auth = next(c for c in vault.checkpoints
                              if c.reason is CheckpointReason.AUTHORIZED)

            # 1. A recorded frame sent again, byte for byte: the secure channel refuses it.
            tunnel_id, exec_frame = wire.frames[1]  # [0] is OPEN, [1] the first EXEC
            async with httpx.AsyncClient() as raw:
                replayed = await raw.post(url + MESSAGE_PATH, content=exec_frame,
                                          headers={TUNNEL_HEADER: tunnel_id})
            assert replayed.status_code == 400 and replayed.json()["error"] == "replay"

            # 2. The old EXEC and AUTH, re-encrypted in fresh frames: the channel refuses them.
            old_exec = Exec(channel.channel_id, 0, 0, PRICE, WEATHER.encode())
            old_auth = VaultChannel.restore(first_auth.snapshot, vault.signer).pending_auth()
            assert old_auth is not None
            for message in (old_exec, old_auth):
                answer = await tunnel.exchange(Envelope.asc(message.encode()))
                assert answer.kind is Kind.ERROR
                assert Refusal.from_body(answer.body).reason == Reason.REPLAYED

            # The tunnel and the channel are unharmed; nothing ran or was paid twice.
            paid = await tunnel.request(channel, WEATHER, PRICE)
    assert provider.calls["weather"] == 2
    assert paid.receipt is not None
    assert (paid.receipt.state.version, paid.receipt.state.provider_balance) == (2, 2 * PRICE)


# --------------------------------------------------------------- piggybacked ACKs


async def test_the_previous_ack_rides_on_the_next_exec(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    wire = Wire()
    with serve_in_thread(provider.app) as url:
        http = httpx.AsyncClient(transport=wire)
        async with world.tunnel(vault, url, http=http, ack_delay=600) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            slot = provider.runtime.channels.slot(channel.channel_id)
            assert slot is not None and slot.channel.status is Status.PENDING  # no ACK yet
            await tunnel.request(channel, WEATHER, PRICE)
            # OPEN, then EXEC and AUTH for each request: no frame of the ACK's own.
            assert len(wire.frames) == 5
            assert slot.channel.state.version == 1  # request 0's ACK came with EXEC 1
            await tunnel.flush_acks()
            assert len(wire.frames) == 6 and slot.channel.state == channel.state
    assert provider.calls["weather"] == 2


async def test_a_held_delivered_is_durable_before_its_ack_leaves_with_an_exec_or_alone(
    world: World,
) -> None:
    """A tunnel with a ``durable`` hook marks DELIVERED deferrable; a persister may hold it.
    It is written before any frame carrying its ACK: with the next request's LOCKED (the
    EXEC the ACK rides on leaves after it), or by the hook before the ACK leaves alone."""
    provider, vault, client = world.provider(), world.vault(), world.client()
    wire = Wire()
    held: list[Checkpoint] = []
    written: list[tuple[str, int]] = []  # (reason, frames sent by then)

    async def persist(checkpoint: Checkpoint) -> None:
        if checkpoint.deferrable:
            held.append(checkpoint)
            return
        for c in [*held, checkpoint]:  # a held one is written with the next checkpoint
            written.append((c.reason.value, len(wire.frames)))
        held.clear()

    async def durable(channel_id: bytes) -> None:
        for c in held:
            assert c.channel_id == channel_id
            written.append((c.reason.value, len(wire.frames)))
        held.clear()

    with serve_in_thread(provider.app) as url:
        http = httpx.AsyncClient(transport=wire)
        async with world.tunnel(vault, url, http=http, ack_delay=600, persist=persist,
                                durable=durable) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            assert [c.reason for c in held] == [CheckpointReason.DELIVERED]
            assert written[-1] == ("authorized", 2)  # OPEN and EXEC out; AUTH next
            await tunnel.request(channel, WEATHER, PRICE)  # its EXEC carries request 0's ACK
            # request 0's DELIVERED written with request 1's LOCKED, before that EXEC (frame 4)
            assert written[3:5] == [("delivered", 3), ("locked", 3)]
            assert [c.reason for c in held] == [CheckpointReason.DELIVERED]
            slot = provider.runtime.channels.slot(channel.channel_id)
            assert slot is not None and slot.channel.state.version == 1
            await tunnel.flush_acks()  # request 1's ACK, on its own: its DELIVERED first
            assert written[-1] == ("delivered", 5) and not held
            assert len(wire.frames) == 6 and slot.channel.state == channel.state
    assert provider.calls["weather"] == 2


@contextlib.asynccontextmanager
async def one_paid_ack_unsent(world: World, provider: Any
                              ) -> AsyncIterator[tuple[ProviderTunnel, VaultChannel, Ack]]:
    """A tunnel whose channel has paid one request and holds its ACK back."""
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url, ack_delay=600) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            ack = channel.last_ack()
            assert ack is not None
            yield tunnel, channel, ack


async def test_a_piggybacked_ack_that_does_not_verify_refuses_the_frame(world: World) -> None:
    provider = world.provider()
    async with one_paid_ack_unsent(world, provider) as (tunnel, channel, ack):
        exec_ = Exec(channel.channel_id, 1, 1, PRICE, WEATHER.encode())
        forged = replace(ack, signature=ack.signature[:-1] + bytes([ack.signature[-1] ^ 1]))
        elsewhere = replace(ack, channel_id=bytes(32))
        for bad, reason in ((forged, Reason.BAD_STATE_SIGNATURE), (elsewhere, "malformed")):
            answer = await tunnel.exchange(Envelope.acked(bad.encode(), exec_.encode()))
            assert answer.kind is Kind.ERROR
            assert Refusal.from_body(answer.body).reason == reason
        # Nothing ran and nothing was acknowledged; the real ACK still settles request 0.
        slot = provider.runtime.channels.slot(channel.channel_id)
        assert slot is not None and slot.channel.status is Status.PENDING
        assert provider.calls["weather"] == 1
        paid = await tunnel.request(channel, WEATHER, PRICE)
    assert paid.receipt is not None and paid.receipt.state.version == 2
    assert provider.calls["weather"] == 2


async def test_an_ack_riding_on_a_refused_exec_is_kept_across_a_provider_restart(
    world: World,
) -> None:
    provider = world.provider()
    async with one_paid_ack_unsent(world, provider) as (tunnel, channel, ack):
        wrong_price = Exec(channel.channel_id, 1, 1, PRICE + 1, WEATHER.encode())
        answer = await tunnel.exchange(Envelope.acked(ack.encode(), wrong_price.encode()))
        assert Refusal.from_body(answer.body).reason == "amount_mismatch"
    # The payment the ACK acknowledged was written down although its frame was refused.
    enclave = world.platform.restore(PROVIDER_CODE, provider.enclave.export_sealed(),
                                     allowed_purposes=PROVIDER_PURPOSES)
    restarted = world.provider(enclave=enclave, operator=provider.config.operator,
                               store=SqlChannelStore(provider.config.store.url))
    [slot] = [s for s in await restarted.runtime.channels.load_active()
              if s.channel_id == channel.channel_id]
    assert slot.channel.status is Status.OPEN and slot.channel.state == channel.state


async def test_a_vault_restarted_with_an_ack_unsent_delivers_it_with_the_resumed_exec(
    world: World,
) -> None:
    """The ACK of request 0 was to ride on EXEC 1; the vault died with EXEC 1 LOCKED."""
    provider, vault, client = world.provider(), world.vault(), world.client()
    stored: list[Checkpoint] = []

    async def persist_then_crash(checkpoint: Checkpoint) -> None:
        stored.append(checkpoint)
        if checkpoint.reason is CheckpointReason.LOCKED and checkpoint.next_request_id == 2:
            raise Crash  # durable, and nothing (neither ACK 0 nor EXEC 1) left

    with serve_in_thread(provider.app) as url:
        channel = await second_request_crashes(world, vault, client, url, persist_then_crash,
                                               ack_delay=600)
        slot = provider.runtime.channels.slot(channel.channel_id)
        assert slot is not None and slot.channel.status is Status.PENDING  # ACK 0 never came

        restored = VaultChannel.restore(stored[-1].snapshot, vault.signer)
        async with world.tunnel(vault, url, ack_delay=600) as tunnel:
            await tunnel.attach(restored)
            resumed = await tunnel.resume(restored)
            again = await tunnel.request(restored, WEATHER, PRICE)
    assert resumed is not None and resumed.request_id == 1
    assert again.receipt is not None and again.receipt.state.version == 3
    assert provider.calls["weather"] == 3


# ---------------------------------------------------------------------- tampering


async def test_tampered_frames_are_rejected_by_the_channel_and_retried(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    wire = Wire()
    with serve_in_thread(provider.app) as url:
        http = httpx.AsyncClient(transport=wire)
        async with world.tunnel(vault, url, http=http) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            # One frame corrupted on the way in, one answer on the way out.
            wire.tamper_requests, wire.tamper_responses = 1, 1
            paid = await tunnel.request(channel, WEATHER, PRICE)
    # The provider refused the corrupted frame (400) without breaking the tunnel; the
    # corrupted answer failed the vault's check and the retry got the recorded answer.
    assert 400 in wire.statuses
    assert (wire.tamper_requests, wire.tamper_responses) == (0, 0)
    assert provider.calls["weather"] == 1
    assert paid.receipt is not None and paid.receipt.state.provider_balance == PRICE


async def test_a_wire_that_corrupts_everything_costs_nothing(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    wire = Wire()
    with serve_in_thread(provider.app) as url:
        http = httpx.AsyncClient(transport=wire)
        async with world.tunnel(vault, url, http=http) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            wire.tamper_requests = 10**6
            with pytest.raises(ProviderUnavailable):
                await tunnel.request(channel, WEATHER, PRICE)
    assert set(wire.statuses[1:]) == {400}
    assert (channel.status, channel.free, channel.provider_balance) == (Status.OPEN, DEPOSIT, 0)
    assert provider.calls["weather"] == 0


# -------------------------------------------------------------------- concurrency


async def test_concurrent_requests_on_one_channel_take_turns(world: World) -> None:
    """The third request is made while ``/slow`` is held in the provider's handler (not
    after a fixed 0.1 s, which assumed the 0.5 s ``/slow`` was still running then)."""
    release = threading.Event()
    provider = world.provider(calls=Calls(slow_release=release))
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            paid = await asyncio.gather(
                *(tunnel.request(channel, WEATHER, PRICE) for _ in range(3))
            )
            slow = asyncio.create_task(tunnel.request(channel, HttpRequest("GET", "/slow"),
                                                       1_500))
            try:
                await wait_until(lambda: provider.calls["slow"] == 1)  # in flight, held
                with pytest.raises(LocalProtocolError) as busy:
                    await tunnel.request(channel, WEATHER, PRICE, wait=False)
            finally:
                release.set()
            await slow
    assert busy.value.reason is Reason.REQUEST_IN_FLIGHT
    assert sorted(p.request_id for p in paid) == [0, 1, 2]
    assert sorted(json.loads(p.response.body)["n"] for p in paid) == [1, 2, 3]
    assert (channel.free, channel.provider_balance) == (DEPOSIT - 4_500, 4_500)
    assert channel.version == 4


async def test_two_tunnels_racing_execs_on_one_channel_get_one_reply(world: World) -> None:
    """Bypassing the vault's own ordering: the provider still runs and commits only one."""
    provider, vault, client = world.provider(), world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as first, world.tunnel(vault, url) as second:
            channel = await world.open_channel(first, vault, client)
            await second.attach(channel)
            slow = HttpRequest("GET", "/slow").encode()
            answers = await asyncio.gather(*(
                tunnel.exchange(Envelope.asc(Exec(channel.channel_id, rid, 0, 1_500,
                                                   slow).encode()))
                for rid, tunnel in ((0, first), (1, second))
            ))
    replies = [a for a in answers if a.kind is Kind.ASC]
    refusals = [Refusal.from_body(a.body).reason for a in answers if a.kind is Kind.ERROR]
    assert len(replies) == 1 and isinstance(decode(replies[0].body), Reply)
    assert refusals in ([Reason.REQUEST_IN_FLIGHT], [Reason.REPLAYED])
    assert provider.calls["slow"] == 1


# ------------------------------------------------------------------------ restarts


class Crash(Exception):
    """The vault process dies right after a checkpoint is durable."""


async def second_request_crashes(world: World, vault: Any, client: Any, url: str,
                                 persist: Any, **tunnel_args: Any) -> VaultChannel:
    """Open a channel and pay one request; the second dies in ``persist`` (raises Crash)."""
    tunnel = world.tunnel(vault, url, **tunnel_args)
    tunnel.persist = persist
    await tunnel.connect()
    channel = await world.open_channel(tunnel, vault, client)
    await tunnel.request(channel, WEATHER, PRICE)
    with pytest.raises(Crash):
        await tunnel.request(channel, WEATHER, PRICE)
    await tunnel.aclose()
    return channel


async def test_both_sides_restart_mid_request_and_finish_it_exactly_once(world: World) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    stored: list[Checkpoint] = []

    async def persist_then_crash(checkpoint: Checkpoint) -> None:
        stored.append(checkpoint)  # durable first …
        if checkpoint.reason is CheckpointReason.AUTHORIZED and checkpoint.version == 1:
            raise Crash  # … then the process dies before AUTH leaves

    with serve_in_thread(provider.app) as url:
        await second_request_crashes(world, vault, client, url, persist_then_crash)
    assert stored[-1].status is Status.PENDING

    # The provider restarts from its sealed store, with its enclave restored from its
    # sealed identity; the vault restores the channel from its last checkpoint.
    enclave = world.platform.restore(PROVIDER_CODE, provider.enclave.export_sealed(),
                                     allowed_purposes=PROVIDER_PURPOSES)
    restarted = world.provider(enclave=enclave, operator=provider.config.operator,
                               store=SqlChannelStore(provider.config.store.url),
                               calls=provider.calls)
    restored = VaultChannel.restore(stored[-1].snapshot, vault.signer)
    with serve_in_thread(restarted.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            await tunnel.attach(restored)
            resumed = await tunnel.resume(restored)
            again = await tunnel.request(restored, WEATHER, PRICE)
    assert resumed is not None and (resumed.request_id, resumed.amount) == (1, PRICE)
    assert json.loads(resumed.response.body)["n"] == 2
    assert json.loads(again.response.body)["n"] == 3
    assert provider.calls["weather"] == 3  # nothing ran twice
    assert again.receipt is not None
    assert (again.receipt.state.version, again.receipt.state.provider_balance) == (3, 3 * PRICE)



async def test_a_provider_store_written_by_earlier_code_restores_and_keeps_paying(
    world: World,
) -> None:
    """The provider's records were JSON with the sealed export in hex (twice the bytes);
    now they are binary. A store of JSON records restores after the upgrade: the channel
    pays on from where it was, and its next write is binary. Bytes that are neither are
    refused, not guessed at."""
    provider, vault, client = world.provider(), world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            first = await tunnel.request(channel, WEATHER, PRICE)
    assert first.receipt is not None and first.receipt.state.provider_balance == PRICE

    store = SqlChannelStore(provider.config.store.url)
    [cid] = store.active()
    stored = store.load(cid)
    assert stored is not None and stored.startswith(b"A4PR\x01")
    flags, size = stored[5], stored[6]
    legacy = json.dumps({
        "format": "a402/provider-channel-record/v2", "sealed": stored[7 + size:].hex(),
        "closingOnChain": bool(flags & 1), "forceCloseDue": bool(flags & 2),
        "onchainClosed": bool(flags & 4), "closeTx": None}).encode()
    await store.save(cid, legacy, active=True)

    enclave = world.platform.restore(PROVIDER_CODE, provider.enclave.export_sealed(),
                                     allowed_purposes=PROVIDER_PURPOSES)
    restarted = world.provider(enclave=enclave, operator=provider.config.operator,
                               store=store, calls=provider.calls)
    with pytest.raises(ValueError, match="not a provider channel record"):
        restarted.runtime.channels._restore(cid, b"garbage")
    with serve_in_thread(restarted.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            await tunnel.attach(channel)
            again = await tunnel.request(channel, WEATHER, PRICE)
    assert again.receipt is not None
    assert (again.receipt.state.version, again.receipt.state.provider_balance) == (2, 2 * PRICE)
    assert provider.calls["weather"] == 2
    rewritten = store.load(cid)
    assert rewritten is not None and rewritten.startswith(b"A4PR\x01")
