"""A whole paid exchange with no HTTP at all: frames carried by an in-memory transport.

The provider is the real runtime (``A402Payments``' runtime: enclave code,
frame driver, channels in a real SQLite store, the service run through the
executor); its frames travel over an :class:`~a402.wire.transport.InMemoryTransport`
straight into its frame driver. The vault is a *scripted peer*: the pure
vault machine (:class:`a402.asc.VaultChannel`) and a simulated vault enclave
for the attested Noise tunnel. The last test runs the
vault's own tunnel (:mod:`a402.vault.tunnel`) over an
:class:`~a402.vault.link.InMemoryLink`: attestation and handshake by the
runtime's parts, every frame through the in-memory transport (no socket, no
HTTP, the provider's endpoint not involved). Money is TestUSDC on anvil; each
test asserts balances.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import (
    Ack,
    ChannelTerms,
    CloseAck,
    CloseReady,
    Reply,
    ResultDelivered,
    Reveal,
    Status,
    VaultChannel,
    decode,
    sign_channel_open,
)
from a402.asc.messages import Message
from a402.chain.tx import transact
from a402.crypto import EcdsaSigner
from a402.provider.a402_runtime import ProviderRuntime
from a402.tee import AttestationPolicy
from a402.vault.link import InMemoryLink
from a402.wire.a402 import (
    PROLOGUE,
    REQUEST_AD,
    RESPONSE_AD,
    Envelope,
    HttpRequest,
    HttpResult,
    Kind,
    OpenChannel,
    Refusal,
    binding_digest,
    provider_user_data,
    request_digest,
)
from a402.wire.transport import (
    FrameRefused,
    FrameTransport,
    InMemoryTransport,
    UnknownTunnel,
)

from .helpers import DEPOSIT, LOCK, PRICE, PROVIDER_CODE, WEATHER, Vault, World

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


class ScriptedVault:
    """The vault's side of one tunnel, step by step, over any :class:`FrameTransport`."""

    def __init__(self, world: World, vault: Vault, runtime: ProviderRuntime,
                 transport: FrameTransport) -> None:
        self.world, self.vault, self.runtime, self.transport = world, vault, runtime, transport
        self.handle = self.tunnel_id = ""

    def connect(self) -> None:
        """Verify the provider's attestation (as ``…/info`` serves it), then handshake."""
        nonce = os.urandom(32)
        info = self.runtime.info(nonce)
        policy = AttestationPolicy(frozenset({PROVIDER_CODE}))
        attested = self.world.verifier.verify(info.evidence, policy.with_nonce(nonce))
        assert attested.signing_key == b"\x02" + info.provider_key
        assert attested.user_data == provider_user_data(info.chain_id, info.asc_manager,
                                                        info.provider)
        enclave = self.vault.enclave
        self.handle, first = enclave.channel_initiate(policy, [self.world.verifier],
                                                      prologue=PROLOGUE)
        self.tunnel_id, second = self.runtime.tunnels.open(first)
        third, peer = enclave.channel_finish(self.handle, second)
        assert peer.signing_key == attested.signing_key
        self.runtime.tunnels.finish(self.tunnel_id, third)

    def frame(self, envelope: Envelope) -> bytes:
        return self.vault.enclave.channel_encrypt(self.handle, envelope.encode(), ad=REQUEST_AD)

    async def exchange(self, envelope: Envelope) -> Envelope:
        answer = await self.transport.carry(self.tunnel_id, self.frame(envelope))
        return Envelope.decode(self.vault.enclave.channel_decrypt(self.handle, answer,
                                                                  ad=RESPONSE_AD))

    async def ask(self, message: Message) -> Message:
        answer = await self.exchange(Envelope.asc(message.encode()))
        assert answer.kind is Kind.ASC, Refusal.from_body(answer.body)
        return decode(answer.body)

    async def open_channel(self, client: LocalAccount) -> VaultChannel:
        """createASC on anvil (the client approved and consented), then OPEN on the tunnel."""
        world, manager = self.world, self.world.manager
        terms = ChannelTerms(client.address, self.vault.signer.address,
                             self.runtime.provider_address, self.runtime.provider_key, DEPOSIT,
                             os.urandom(32))
        transact(world.chain, client, world.token.functions.approve(manager.address, DEPOSIT))
        consent = sign_channel_open(EcdsaSigner(bytes(client.key)), manager.domain, terms)
        manager.create(self.vault.account, terms, consent)
        cid = terms.channel_id(manager.domain)
        signature = self.vault.signer.sign_digest(
            binding_digest(self.vault.enclave.channel_binding(self.handle), cid))
        answer = await self.exchange(OpenChannel(
            terms.client, terms.vault, terms.provider, terms.provider_key, terms.deposit,
            terms.salt, signature).envelope())
        assert answer.kind is Kind.OK
        return VaultChannel(terms, manager.domain, self.vault.signer, lock_timeout=LOCK)

    async def pay(self, channel: VaultChannel, request: HttpRequest, amount: int
                  ) -> HttpResult:
        """EXEC → REPLY (checked) → AUTH → REVEAL (checked, result opened) → ACK."""
        raw = request.encode()
        reply = await self.ask(channel.request(raw, amount, now=time.time()))
        assert isinstance(reply, Reply)
        auth = channel.receive(reply, now=time.time()).send[0]
        reveal = await self.ask(auth)
        assert isinstance(reveal, Reveal)
        step = channel.receive(reveal, now=time.time())
        ack, delivered = step.send[0], step.events[0]
        assert isinstance(ack, Ack) and isinstance(delivered, ResultDelivered)
        assert (await self.exchange(Envelope.asc(ack.encode()))).kind is Kind.OK
        result = HttpResult.decode(delivered.result)
        assert result.request_digest == request_digest(raw)  # it answers *this* request
        return result

    async def close(self, channel: VaultChannel) -> CloseReady:
        close_ack = await self.ask(channel.close())
        assert isinstance(close_ack, CloseAck)
        ready = channel.receive(close_ack, now=time.time()).events[0]
        assert isinstance(ready, CloseReady)
        return ready


async def test_a_paid_exchange_needs_no_http_only_a_transport_that_carries_frames(
    world: World,
) -> None:
    provider, vault, client = world.provider(watch=False), world.vault(), world.client()
    transport = InMemoryTransport(provider.runtime.driver.handle_frame)
    peer = ScriptedVault(world, vault, provider.runtime, transport)
    peer.connect()
    channel = await peer.open_channel(client)
    escrowed = world.balance(world.manager.address)

    first = await peer.pay(channel, WEATHER, PRICE)
    second = await peer.pay(channel, WEATHER, PRICE)

    assert (first.response.status, second.response.status) == (200, 200)
    assert [json.loads(r.response.body) for r in (first, second)] == [
        {"weather": "sunny", "n": 1}, {"weather": "sunny", "n": 2}]
    assert provider.calls["weather"] == 2
    assert (channel.free, channel.locked, channel.provider_balance) == (
        DEPOSIT - 2 * PRICE, 0, 2 * PRICE)
    slot = provider.runtime.channels.slot(channel.channel_id)
    assert slot is not None and slot.channel.state == channel.state
    assert slot.channel.status is Status.OPEN

    # The final state both signed settles on-chain: exactly what was paid moves.
    before = world.balances(client.address, provider.address)
    ready = await peer.close(channel)
    world.manager.close(vault.account, channel.terms, ready.signed)
    after = world.balances(client.address, provider.address)
    assert (after[0] - before[0], after[1] - before[1]) == (DEPOSIT - 2 * PRICE, 2 * PRICE)
    assert world.balance(world.manager.address) == escrowed - DEPOSIT
    await transport.aclose()


async def test_the_in_memory_transport_fails_as_the_http_one_does(world: World) -> None:
    """Unknown tunnel, a frame that does not authenticate, an oversized frame: the same
    three refusals as ``…/message``'s 404, 400 and 413, outside the channel, and the
    tunnel stays usable after each."""
    provider, vault, client = world.provider(watch=False), world.vault(), world.client()
    transport = InMemoryTransport(provider.runtime.driver.handle_frame, max_frame=64 * 1024)
    peer = ScriptedVault(world, vault, provider.runtime, transport)
    peer.connect()
    channel = await peer.open_channel(client)

    with pytest.raises(UnknownTunnel):
        await transport.carry("no-such-tunnel", peer.frame(Envelope.ok()))
    tampered = bytearray(peer.frame(Envelope.asc(channel.request(
        WEATHER.encode(), PRICE, now=time.time()).encode())))
    tampered[-1] ^= 1
    with pytest.raises(FrameRefused):
        await transport.carry(peer.tunnel_id, bytes(tampered))
    with pytest.raises(FrameRefused) as too_large:
        await transport.carry(peer.tunnel_id, b"\0" * (64 * 1024 + 1))
    assert too_large.value.reason == "too_large"
    assert provider.calls["weather"] == 0  # nothing ran for a refused frame

    # The same EXEC in a fresh frame is handled (the tampered one never reached the channel).
    exec_ = channel.pending_exec()
    assert exec_ is not None
    reply = await peer.ask(exec_)
    assert isinstance(reply, Reply) and provider.calls["weather"] == 1


async def test_the_vaults_own_tunnel_pays_over_the_in_memory_transport(world: World) -> None:
    provider, vault, client = world.provider(watch=False), world.vault(), world.client()
    runtime = provider.runtime
    frames = Counting(InMemoryTransport(runtime.driver.handle_frame))
    link = InMemoryLink(info=runtime.info, open_tunnel=runtime.tunnels.open,
                        finish_tunnel=runtime.tunnels.finish, frames=frames)
    async with world.tunnel(vault, "http://provider.invalid", link=link) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        paid = [await tunnel.request(channel, WEATHER, PRICE) for _ in range(2)]
        await tunnel.flush_acks()
        before = world.balances(client.address, provider.address)
        signed = await tunnel.close(channel)
        world.manager.close(vault.account, channel.terms, signed)
    assert [json.loads(p.response.body)["n"] for p in paid] == [1, 2]
    assert vault.reasons()[:7] == ["attached"] + ["locked", "authorized", "delivered"] * 2
    # OPEN, 2 × (EXEC, AUTH), the last ACK, CLOSE: every frame went through the transport.
    assert frames.carried == 1 + 2 * 2 + 1 + 1
    assert frames.inner.closed  # closing the tunnel closed its link
    after = world.balances(client.address, provider.address)
    assert (after[0] - before[0], after[1] - before[1]) == (DEPOSIT - 2 * PRICE, 2 * PRICE)


class Counting:
    """A :class:`FrameTransport` that counts the frames another one carries."""

    def __init__(self, inner: InMemoryTransport) -> None:
        self.inner, self.carried = inner, 0

    async def carry(self, tunnel: str, frame: bytes) -> bytes:
        self.carried += 1
        return await self.inner.carry(tunnel, frame)

    async def aclose(self) -> None:
        await self.inner.aclose()
