"""Hostile input to a provider's A402 endpoint (``/.well-known/a402/{info,session,message}``
and the ``…/stream`` WebSocket) never crashes it, is answered with a reason, and changes
nothing: the handler runs only for the vault's own paid requests, the provider's channel
balance does not move, and the real tunnel keeps working afterwards.

The vault's recorded handshake messages and frames are the seeds: replayed byte for byte,
mutated, wrapped in hostile JSON, sent on a session that is not theirs. The provider runs in
this process behind real HTTP: a crash fails the run."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from a402.background import serve_in_thread
from a402.wire.a402 import HANDSHAKE_PATH, INFO_PATH, MESSAGE_PATH, STREAM_PATH, TUNNEL_HEADER
from a402.wire.transport import MAX_FRAME
from tests.hostile import (
    FUZZ,
    METHODS,
    assert_answered,
    hostile_bodies,
    hostile_headers,
    hostile_queries,
)

from .helpers import PRICE, WEATHER, World

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


class Recorder(httpx.AsyncBaseTransport):
    """The vault's HTTP traffic to the provider, kept: (path, tunnel header, body)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, str | None, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append((request.url.path, request.headers.get(TUNNEL_HEADER), body))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_hostile_requests_to_the_a402_endpoint_are_answered_and_change_nothing(
    world: World
) -> None:
    # The probes block this test's event loop, the vault's: an ACK the provider waits for
    # must not time out meanwhile (it would close the channel, as it should).
    provider, vault, client = world.provider(ack_timeout=600), world.vault(), world.client()
    recorder = Recorder()
    with serve_in_thread(provider.app) as url:
        async with world.tunnel(vault, url, http=httpx.AsyncClient(transport=recorder)) \
                as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            paid = await tunnel.request(channel, WEATHER, PRICE)
            assert paid.receipt is not None
            await tunnel.flush_acks()
            handshakes = [b for p, _, b in recorder.sent if p == HANDSHAKE_PATH]
            frames = [(t, b) for p, t, b in recorder.sent if p == MESSAGE_PATH]
            assert handshakes and frames
            tunnel_id = frames[-1][0]
            assert tunnel_id is not None
            calls = provider.calls["weather"]
            probes: list[str] = []

            @settings(FUZZ, max_examples=70)
            @given(data=st.data(), kind=st.sampled_from(
                ["session", "session", "message", "message", "info", "any", "stream"]))
            def probe(data: st.DataObject, kind: str) -> None:
                probes.append(kind)
                with httpx.Client(base_url=url, timeout=30) as http:
                    if kind == "session":
                        seed = data.draw(st.sampled_from(handshakes))
                        body = data.draw(hostile_bodies(seed, large=64 * 1024))
                        answer = http.post(HANDSHAKE_PATH, content=body)
                        assert_answered(answer)
                        if answer.status_code == 200:  # a fresh handshake's first step
                            assert "session" in answer.json(), answer.text[:300]
                    elif kind == "message":
                        _, seed = data.draw(st.sampled_from(frames))
                        body = data.draw(st.one_of(
                            st.just(seed), st.binary(max_size=2_000),
                            st.builds(lambda at, b: seed[:at] + b + seed[at + len(b):],
                                      st.integers(0, len(seed)), st.binary(min_size=1,
                                                                           max_size=8)),
                            st.just(b"\x00" * (MAX_FRAME + 1))))
                        session = data.draw(st.one_of(
                            st.just(tunnel_id.encode()), hostile_headers(tunnel_id)))
                        answer = http.post(MESSAGE_PATH, content=body,
                                           headers={TUNNEL_HEADER: session})
                        assert_answered(answer)
                        assert answer.status_code != 200, answer.text[:300]
                    elif kind == "info":
                        query = data.draw(st.one_of(
                            hostile_queries("nonce=" + "ab" * 16),
                            st.just("nonce=" + "ab" * 5_000)))
                        assert_answered(http.get(INFO_PATH + "?" + query))
                    elif kind == "any":
                        method = data.draw(st.sampled_from(METHODS))
                        path = data.draw(st.sampled_from(
                            [INFO_PATH, HANDSHAKE_PATH, MESSAGE_PATH, STREAM_PATH,
                             "/.well-known/a402", "/.well-known/a402/x"]))
                        answer = http.request(method, path, content=b"{}"
                                              if method not in ("GET", "HEAD") else None)
                        assert_answered(answer, reason_key=None if method == "HEAD" else "error")
                    else:
                        _stream_probe(url, tunnel_id, frames, data)

            probe()
            assert len(probes) >= 60
            assert provider.calls["weather"] == calls
            again = await tunnel.request(channel, WEATHER, PRICE)
    assert again.receipt is not None
    assert again.receipt.state.provider_balance == 2 * PRICE
    assert provider.calls["weather"] == calls + 1


def _stream_probe(url: str, tunnel_id: str, frames: list[tuple[str | None, bytes]],
                  data: st.DataObject) -> None:
    """A WebSocket to ``…/stream`` with a hostile session and hostile messages: each is
    answered with a JSON refusal (or the connection is closed with a code); none runs."""
    session = data.draw(st.one_of(st.just(tunnel_id), hostile_queries(tunnel_id)))
    target = "ws" + url.removeprefix("http") + STREAM_PATH + "?session=" + session
    messages = data.draw(st.lists(st.one_of(
        st.sampled_from([b for _, b in frames]),
        st.binary(max_size=500), st.text(max_size=50),
        st.just(json.dumps({"x": 1}) * 3), st.just(base64.b64encode(b"\x00" * 300))),
        min_size=1, max_size=3))
    try:
        with ws_connect(target, open_timeout=10, close_timeout=5, max_size=2 << 20) as ws:
            for message in messages:
                ws.send(message)
                answer: Any = ws.recv(timeout=10)
                if isinstance(answer, str):
                    assert isinstance(json.loads(answer)["error"], str), answer
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code != 1011, closed  # 1011: a crash
    except Exception as e:  # the upgrade refused: an HTTP status, never a 5xx
        status = getattr(getattr(e, "response", None), "status_code", None)
        assert status is not None and status < 500, repr(e)
