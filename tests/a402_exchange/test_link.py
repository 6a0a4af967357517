"""The vault's frame transports fail alike: POST, stream and in-memory.

Whatever carries a tunnel's frames (:mod:`a402.vault.link`'s
:class:`~a402.vault.link.PostTransport` and :class:`~a402.vault.link.StreamTransport`
to the provider's real HTTP endpoint, or an
:class:`~a402.wire.transport.InMemoryTransport` into its frame driver), the vault
sees the same three failures — an unknown tunnel, a frame refused outside the
channel, a frame too large — and the tunnel stays usable after each: the next
paid request goes through, once, and the balances show it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from a402.background import serve_in_thread
from a402.provider import a402_app
from a402.vault.link import PostTransport, StreamTransport
from a402.wire.a402 import Envelope
from a402.wire.transport import FrameRefused, FrameTransport, InMemoryTransport, UnknownTunnel

from .helpers import DEPOSIT, PRICE, WEATHER, Provider, World
from .test_in_memory import ScriptedVault

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

#: A frame limit low enough to reach (the real one is above uvicorn's message limit).
LIMIT = 4096


@pytest.fixture
def provider(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Provider, str]]:
    monkeypatch.setattr(a402_app, "_MAX_FRAME_BODY", LIMIT)
    provider = world.provider(watch=False)
    with serve_in_thread(provider.app) as url:
        yield provider, url


def transport_of(kind: str, provider: Provider, url: str,
                 http: httpx.AsyncClient) -> FrameTransport:
    post = PostTransport(http, url)
    if kind == "post":
        return post
    if kind == "stream":
        return StreamTransport(url, fallback=post, timeout=10.0)
    return InMemoryTransport(provider.runtime.driver.handle_frame, max_frame=LIMIT)


@pytest.mark.parametrize("kind", ["post", "stream", "memory"])
async def test_every_frame_transport_refuses_alike_and_the_tunnel_goes_on(
    world: World, provider: tuple[Provider, str], kind: str
) -> None:
    served, url = provider
    vault, client = world.vault(), world.client()
    http = httpx.AsyncClient(trust_env=False)
    transport = transport_of(kind, served, url, http)
    peer = ScriptedVault(world, vault, served.runtime, transport)
    peer.connect()
    channel = await peer.open_channel(client)

    with pytest.raises(UnknownTunnel):
        await transport.carry("no-such-tunnel", peer.frame(Envelope.ok()))
    tampered = bytearray(peer.frame(Envelope.ok()))
    tampered[-1] ^= 1
    with pytest.raises(FrameRefused):
        await transport.carry(peer.tunnel_id, bytes(tampered))
    with pytest.raises(FrameRefused) as too_large:
        await transport.carry(peer.tunnel_id, b"\0" * (LIMIT + 1))
    assert too_large.value.reason == "too_large"
    assert served.calls["weather"] == 0  # nothing ran for a refused frame

    # None of it touched the tunnel: the next paid request goes through, once.
    result = await peer.pay(channel, WEATHER, PRICE)
    assert json.loads(result.response.body) == {"weather": "sunny", "n": 1}
    assert served.calls["weather"] == 1

    before = world.balances(client.address, served.address)
    ready = await peer.close(channel)
    world.manager.close(vault.account, channel.terms, ready.signed)
    after = world.balances(client.address, served.address)
    assert (after[0] - before[0], after[1] - before[1]) == (DEPOSIT - PRICE, PRICE)
    await transport.aclose()
    await http.aclose()
