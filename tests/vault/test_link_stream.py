"""The vault's stream (:class:`~a402.vault.link.StreamTransport`) against a scripted WebSocket peer.

The exchange tests run the stream against the real provider; here a peer does what
a provider seldom does but a WebSocket may: answer in fragments, ping in between,
send a message nobody asked for, close with a code, or never answer. The stream
must read each answer whole, answer pings, and cut itself (never pass a stray
message off as the next frame's answer) whenever it is out of step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from a402.vault import link
from a402.vault.link import PostTransport, StreamTransport
from a402.wire.a402 import STREAM_UNKNOWN_TUNNEL
from a402.wire.transport import MAX_FRAME, FrameRefused, LinkDown, UnknownTunnel

pytestmark = pytest.mark.anyio

Script = Callable[[ServerConnection], Awaitable[None]]


class Peer:
    """A WebSocket server that runs ``script`` on every connection it accepts."""

    def __init__(self) -> None:
        self.script: Script = echo
        self.connections = 0
        self.paths: list[str] = []

    async def handler(self, connection: ServerConnection) -> None:
        self.connections += 1
        assert connection.request is not None
        self.paths.append(connection.request.path)
        await self.script(connection)


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, StreamTransport]]:
    peer = Peer()
    async with serve(peer.handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(trust_env=False) as http:
            origin = f"http://127.0.0.1:{port}"
            stream = StreamTransport(origin, fallback=PostTransport(http, origin), timeout=2.0)
            try:
                yield peer, stream
            finally:
                await stream.aclose()


async def test_frames_go_on_one_stream_each_answer_read_whole(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer
    for size in (0, 1, 125, 126, 65535, 65536, 300_000):
        frame = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert await stream.carry("tunnel-1", frame) == frame
    assert server.connections == 1
    assert server.paths == ["/.well-known/a402/stream?session=tunnel-1"]


async def test_an_answer_in_fragments_with_a_ping_between_is_read_as_one(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer

    async def fragments(connection: ServerConnection) -> None:
        async for message in connection:
            assert isinstance(message, bytes)
            pong = await connection.ping(b"are you there")
            await connection.send([message[:3], message[3:7], message[7:]])
            await pong  # the vault's stream answered the ping

    server.script = fragments
    assert await stream.carry("tunnel-1", b"a fragmented answer") == b"a fragmented answer"
    assert await stream.carry("tunnel-1", b"and another one") == b"and another one"
    assert server.connections == 1


async def test_a_message_nobody_asked_for_cuts_the_stream(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer
    stray = asyncio.Event()

    async def chatty(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)
            if server.connections == 1:
                await connection.send(b"unasked")  # would pass for the next frame's answer
                await connection.wait_closed()  # the vault's stream cut itself
                stray.set()
                return

    server.script = chatty
    assert await stream.carry("tunnel-1", b"first") == b"first"
    await stray.wait()
    assert await stream.carry("tunnel-1", b"second") == b"second"  # on a new stream
    assert server.connections == 2


async def test_a_close_with_the_unknown_tunnel_code_says_so(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer

    async def forgets(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.close(STREAM_UNKNOWN_TUNNEL, "open a new session")

    server.script = forgets
    with pytest.raises(UnknownTunnel):
        await stream.carry("tunnel-1", b"frame")


async def test_a_text_answer_is_a_refusal_and_the_stream_goes_on(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer

    async def refuses_once(connection: ServerConnection) -> None:
        refused = False
        async for message in connection:
            if not refused:
                refused = True
                await connection.send('{"error": "frame_too_large"}')
            else:
                await connection.send(message)

    server.script = refuses_once
    with pytest.raises(FrameRefused) as refused:
        await stream.carry("tunnel-1", b"frame")
    assert refused.value.reason == "frame_too_large"
    assert await stream.carry("tunnel-1", b"frame") == b"frame"
    assert server.connections == 1


async def test_no_answer_in_time_is_a_lost_link_and_the_next_frame_opens_a_new_stream(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer
    stream.timeout = 0.2

    async def silent_once(connection: ServerConnection) -> None:
        if server.connections == 1:
            await connection.recv()
            await connection.wait_closed()
            return
        await echo(connection)

    server.script = silent_once
    with pytest.raises(LinkDown):
        await stream.carry("tunnel-1", b"frame")
    assert await stream.carry("tunnel-1", b"frame") == b"frame"
    assert server.connections == 2


async def test_a_new_tunnel_gets_a_new_stream(peer: tuple[Peer, StreamTransport]) -> None:
    server, stream = peer
    assert await stream.carry("tunnel-1", b"one") == b"one"
    assert await stream.carry("tunnel-2", b"two") == b"two"
    assert server.paths[-1].endswith("session=tunnel-2")
    assert server.connections == 2


async def test_a_stream_dropped_while_idle_is_replaced_for_the_same_frame(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer

    async def drops_after_one(connection: ServerConnection) -> None:
        message = await connection.recv()
        await connection.send(message)
        if server.connections == 1:
            connection.transport.abort()  # a proxy timed the idle stream out
            return
        await echo(connection)

    server.script = drops_after_one
    assert await stream.carry("tunnel-1", b"one") == b"one"
    await asyncio.sleep(0.05)
    assert await stream.carry("tunnel-1", b"two") == b"two"
    assert server.connections == 2


async def test_an_answer_over_the_frame_limit_is_a_lost_link(
    peer: tuple[Peer, StreamTransport],
) -> None:
    server, stream = peer

    async def floods(connection: ServerConnection) -> None:
        await connection.recv()
        half = bytes(MAX_FRAME // 2 + 1)
        await connection.send([half, half])  # in fragments: the whole message counts

    server.script = floods
    with pytest.raises(LinkDown):
        await stream.carry("tunnel-1", b"frame")


async def test_an_idle_stream_whose_peer_went_silent_is_cut_before_the_next_frame(
    peer: tuple[Peer, StreamTransport], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, stream = peer
    monkeypatch.setattr(link, "_KEEPALIVE", 0.05)
    went_silent, done = asyncio.Event(), asyncio.Event()

    async def silent_after_one(connection: ServerConnection) -> None:
        await connection.send(await connection.recv())
        connection.transport.pause_reading()  # reads nothing more: no pong comes back
        went_silent.set()
        await done.wait()
        connection.transport.resume_reading()

    server.script = silent_after_one
    assert await stream.carry("tunnel-1", b"one") == b"one"
    await went_silent.wait()
    first = stream._stream
    assert first is not None
    for _ in range(400):  # a ping, then a whole period without an answer
        if first.closed:
            break
        await asyncio.sleep(0.05)
    assert first.closed
    done.set()
    server.script = echo
    assert await stream.carry("tunnel-1", b"two") == b"two"  # on a new stream
    assert server.connections == 2


async def test_an_idle_stream_whose_peer_answers_pings_stays(
    peer: tuple[Peer, StreamTransport], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, stream = peer
    monkeypatch.setattr(link, "_KEEPALIVE", 0.02)
    assert await stream.carry("tunnel-1", b"one") == b"one"
    await asyncio.sleep(0.3)  # many keepalive periods, each ping answered
    assert await stream.carry("tunnel-1", b"two") == b"two"
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
    b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nno WebSockets here",  # read to EOF
])
async def test_a_refused_upgrade_sends_frames_by_post(answer: bytes) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    async with server, httpx.AsyncClient(trust_env=False) as http:
        stream = StreamTransport(origin, fallback=PostTransport(http, origin), timeout=2.0)
        with pytest.raises(LinkDown):  # the POST reaches the same refusing server
            await stream.carry("tunnel-1", b"frame")
        assert not stream.use_stream
        await stream.aclose()
