"""A malicious provider *host* around an honest provider enclave cannot be paid for nothing.

Issue 12, finding 1: the host used to draw ``t``, seal the result and build
``m``, and the enclave pre-signed any ``m`` under any ``T``; a host pairing a
valid pre-signature with a sealed result that does not open got σ_U and was
paid on-chain. Now the enclave does all of that itself and encrypts the REPLY
(:mod:`a402.provider_enclave`). Each scenario plays what such a host can still
do — rewrite the frames it relays, ask its enclave for a pre-signature, submit
its own ``forceClose`` — and asserts the balances.
"""

from __future__ import annotations

import inspect
import json
import os

import pytest
from eth_hash.auto import keccak

from a402.asc import ForceCloseClaim, Reply, Status, VaultChannel, decode
from a402.background import serve_in_thread
from a402.crypto import EVM, generate_adaptor
from a402.provider import (
    a402_app,
    a402_channels,
    a402_config,
    a402_driver,
    a402_execute,
    a402_offer,
    a402_runtime,
    a402_tunnels,
    a402_watch,
)
from a402.provider.a402_channels import Slot
from a402.provider.a402_driver import FrameDriver
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider_enclave import Answer, Outcome, ProviderEnclave, ProviderEnclaveBoundary
from a402.tee import Enclave, EnclaveError
from a402.vault import PaymentPending, ProviderUnavailable, find_provider_force_close
from a402.wire.a402 import REQUEST_AD, RESPONSE_AD

from .helpers import DEPOSIT, DISPUTE_WINDOW, PRICE, WEATHER, World, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


class ResultSwappingRelay(FrameDriver):
    """Rewrites every REPLY it relays where the sealed result travels (the frame's tail;
    it cannot read the frame, so it cannot aim better), as a host swapping EncRes for
    garbage, or for a result sealed under another ``t``, would have to."""

    async def relay(self, slot: Slot | None, outcome: Outcome) -> bytes:
        frame = await super().relay(slot, outcome)
        if isinstance(outcome, Answer) and outcome.incoming == "Exec":
            tail = bytes(b ^ 0x5A for b in frame[-48:-16])
            frame = frame[:-48] + tail + frame[-16:]
        return frame


class ResultSwappingHost(ProviderRuntime):
    driver_cls = ResultSwappingRelay


class RevealDroppingRelay(FrameDriver):
    """Relays everything but the REVEAL: it keeps the vault PENDING to claim on-chain."""

    async def relay(self, slot: Slot | None, outcome: Outcome) -> bytes:
        frame = await super().relay(slot, outcome)
        if isinstance(outcome, Answer) and outcome.incoming == "Auth":
            return os.urandom(len(frame))
        return frame


class RevealDroppingHost(ProviderRuntime):
    driver_cls = RevealDroppingRelay


def _pending_reply(channel: VaultChannel) -> Reply:
    stored = json.loads(channel.snapshot())["pending"]["reply"]
    reply = decode(bytes.fromhex(stored))
    assert isinstance(reply, Reply)
    return reply


def test_the_host_has_no_call_that_signs_a_message_of_its_choosing() -> None:
    # Neither the enclave interface nor the provider enclave's boundary pre-signs or signs.
    offered = {name for name in dir(ProviderEnclaveBoundary) if not name.startswith("_")}
    assert offered == {
        "provider_key", "receive", "found", "executed", "failed", "forget", "view", "poll",
        "claim", "closed_on_chain", "export", "restore",
    }
    assert offered == {n for n in dir(ProviderEnclave) if not n.startswith("_")}
    for name in ("schnorr_pre_sign", "pre_sign", "commit", "reply"):
        assert not hasattr(Enclave, name) and not hasattr(ProviderEnclaveBoundary, name)
    # ... and no part of the host calls one (nor the tunnel's plaintext).
    for module in (a402_runtime, a402_config, a402_tunnels, a402_driver, a402_execute,
                   a402_channels, a402_watch, a402_app, a402_offer):
        source = inspect.getsource(module)
        for call in ("pre_sign", "channel_encrypt", "channel_decrypt", ".seal(", ".unseal("):
            assert call not in source, (module.__name__, call)


async def test_a_host_that_swaps_the_sealed_result_gets_no_reply_accepted_and_no_payment(
    world: World,
) -> None:
    provider = world.provider(runtime_cls=ResultSwappingHost, watch=False)
    vault, client = world.vault(), world.client()
    before = world.balances(client.address, provider.address, world.manager.address)
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            with pytest.raises(ProviderUnavailable):  # every REPLY frame fails AEAD
                await tunnel.request(channel, WEATHER, PRICE)
            assert channel.status is not Status.PENDING  # no σ_U was issued
            assert channel.provider_balance == 0
            runtime = provider.runtime
            slot = runtime.channels.slot(channel.channel_id)
            assert slot is not None and slot.channel.status is Status.LOCKED
            # The host cannot write its own REPLY on the tunnel, nor read the honest one...
            (tunnel_state,) = runtime.tunnels._tunnels.values()
            with pytest.raises(EnclaveError) as refused:
                provider.enclave.channel_encrypt(tunnel_state.handle, b"REPLY", ad=RESPONSE_AD)
            assert refused.value.reason == "owned_by_enclave_code"
            with pytest.raises(EnclaveError):
                provider.enclave.channel_decrypt(tunnel_state.handle, b"x" * 64, ad=REQUEST_AD)
            # ...and its enclave has nothing to claim on-chain without σ_U.
            with pytest.raises(EnclaveError) as refused:
                runtime.provider_enclave.claim(channel.channel_id)
            assert refused.value.reason == "nothing_to_claim"
    # The client leaves with its whole deposit.
    world.manager.init_force_close(client, channel.terms, channel.latest_state())
    world.increase_time(DISPUTE_WINDOW)
    world.manager.final_force_close(client, channel.terms)
    after = world.balances(client.address, provider.address, world.manager.address)
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (0, 0, 0)


async def test_a_force_close_with_anything_but_the_enclave_claim_is_refused_on_chain(
    world: World,
) -> None:
    provider = world.provider(runtime_cls=RevealDroppingHost, watch=False, ack_timeout=600.0)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            with pytest.raises((PaymentPending, ProviderUnavailable)):
                await tunnel.request(channel, WEATHER, PRICE)
            assert channel.status is Status.PENDING  # σ_U is out for request 0
            # Worst case: the host learnt σ_U and the REPLY (they are not secret to it).
            auth, reply = channel.pending_auth(), _pending_reply(channel)
            assert auth is not None
            runtime = provider.runtime
            terms, latest = channel.terms, channel.latest_state()
            presignature = EVM.presignature_from_bytes(reply.presignature)
            forged = {
                "the pre-signature itself": (reply.result_hash, reply.presignature),
                "completed with another t": (
                    reply.result_hash, EVM.adapt(presignature, generate_adaptor()[0])),
                "another result's hash": (keccak(b"another result"), reply.presignature),
            }
            parties = (client.address, provider.address, world.manager.address)
            before = world.balances(*parties)
            for what, (result_hash, signature) in forged.items():
                claim = ForceCloseClaim(
                    state=latest.state, vault_signature=latest.vault_signature,
                    request_id=reply.request_id, amount=PRICE, result_hash=result_hash,
                    signature=signature, authorization=auth.authorization,
                )
                with pytest.raises(Exception):  # noqa: B017 - reverted, whatever the node says
                    world.manager.force_close(runtime.operator, terms, claim)
                assert world.balances(*parties) == before, what
            # The enclave's own claim is accepted, and it pays for the result the vault opens.
            slot = runtime.channels.slot(channel.channel_id)
            assert slot is not None
            async with slot.lock:
                assert await runtime.onchain.force_close(slot)
            cid = channel.channel_id
            await wait_until(lambda: find_provider_force_close(world.manager, cid) is not None)
            tx = find_provider_force_close(world.manager, cid)
            paid = await tunnel.recover(channel, world.manager, tx_hash=tx)
    assert paid is not None and json.loads(paid.response.body)["weather"] == "sunny"
    after = world.balances(*parties)
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (
        DEPOSIT - PRICE, PRICE, -DEPOSIT)


async def test_a_host_replaying_an_old_answer_frame_is_refused_by_the_tunnel(
    world: World,
) -> None:
    """The REPLY of request 0, relayed again for request 1: it does not decrypt (the
    tunnel's nonces only move forward), so the vault pays for request 0 alone."""

    class ReplayingRelay(FrameDriver):
        first: bytes | None = None

        async def relay(self, slot: Slot | None, outcome: Outcome) -> bytes:
            frame = await super().relay(slot, outcome)
            if isinstance(outcome, Answer) and outcome.incoming == "Exec":
                if ReplayingRelay.first is None:
                    ReplayingRelay.first = frame
                return ReplayingRelay.first
            return frame

    class Replaying(ProviderRuntime):
        driver_cls = ReplayingRelay

    provider = world.provider(runtime_cls=Replaying, watch=False)
    vault, client = world.vault(), world.client()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            with pytest.raises(ProviderUnavailable):
                await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()
            assert channel.status is not Status.PENDING
            assert (channel.provider_balance, channel.state.version) == (PRICE, 1)
