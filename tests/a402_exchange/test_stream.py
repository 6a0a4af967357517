"""The exchange over the provider's WebSocket stream (``…/stream``), the vault's default.

The provider is served as in the other exchange tests, wrapped in a
:class:`Recorder` that sees every request and every stream message (and can
lose, cut or corrupt them); the vault is a plain :class:`ProviderTunnel`,
which goes by the stream unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from a402.asc import Status, VaultChannel
from a402.background import serve_in_thread
from a402.observe import OperatorRoutes
from a402.provider import a402_app, create_gateway
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider.a402_store import SqlChannelStore
from a402.provider.settings import Limits
from a402.tee import PROVIDER_PURPOSES
from a402.vault.tunnel import ProviderTunnel
from a402.wire.a402 import (
    HANDSHAKE_PATH,
    INFO_PATH,
    MESSAGE_PATH,
    STREAM_PATH,
    STREAM_UNKNOWN_TUNNEL,
    HttpRequest,
)

from .helpers import (
    DEPOSIT,
    PRICE,
    PRICES,
    PROVIDER_CODE,
    UNUSED_FACILITATOR,
    WEATHER,
    Calls,
    Provider,
    World,
    service_app,
    wait_until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

#: Bound on any single wait in these tests (a loaded 2-core machine is slow, not stuck).
WAIT = 20.0


class Recorder:
    """The provider's front door: records what comes in, and can spoil stream traffic.

    Stream frames are numbered across all connections in arrival order (0 is
    usually the OPEN of the first channel). ``lose`` drops a frame before the
    provider sees it and closes the connection; ``cut`` lets the provider
    handle the frame, then closes the connection instead of answering;
    ``corrupt`` flips a bit in the frame on its way in.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.http: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self.streams: list[tuple[str, str]] = []  # (path, query) of every WebSocket
        self.frames: list[bytes] = []  # every binary message the vault sent on a stream
        self.answers: list[str] = []  # "frame", "error:<error>" or "close:<code>"
        self.lose: set[int] = set()
        self.cut: set[int] = set()
        self.corrupt: set[int] = set()

    def posts(self, path: str) -> int:
        return sum(1 for method, p in self.http if (method, p) == ("POST", path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.http.append((scope["method"], scope["path"]))
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.streams.append((scope["path"], scope["query_string"].decode()))
        number = -1
        closed = False

        async def inbound() -> Message:
            nonlocal number, closed
            message = await receive()
            frame = message.get("bytes") if message["type"] == "websocket.receive" else None
            if frame is None:
                return message
            number = len(self.frames)
            self.frames.append(frame)
            if number in self.lose:
                closed = True
                self.answers.append("close:1011")
                await send({"type": "websocket.close", "code": 1011})
                return {"type": "websocket.disconnect", "code": 1011}
            if number in self.corrupt:
                message = {**message, "bytes": frame[:-1] + bytes([frame[-1] ^ 1])}
            return message

        async def outbound(message: Message) -> None:
            nonlocal closed
            if closed:
                return
            if message["type"] == "websocket.send" and number in self.cut:
                closed = True
                message = {"type": "websocket.close", "code": 1011}
            if message["type"] == "websocket.send":
                text = message.get("text")
                self.answers.append(
                    "frame" if text is None else "error:" + json.loads(text)["error"]
                )
            elif message["type"] == "websocket.close":
                self.answers.append(f"close:{message.get('code', 1000)}")
            await send(message)

        await self.app(scope, inbound, outbound)


class NoStream:
    """A provider from before the stream: every WebSocket is refused (HTTP 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1003})
            return
        await self.app(scope, receive, send)


def ws_url(url: str, path: str = STREAM_PATH) -> str:
    return "ws://" + url.removeprefix("http://") + path


def tunnel_id(recorder: Recorder, index: int = -1) -> str:
    """The tunnel id a recorded stream connected with."""
    query = recorder.streams[index][1]
    assert query.startswith("session=")
    return query.removeprefix("session=")


def conserved(channel: VaultChannel, runtime: ProviderRuntime) -> None:
    """No money appears or vanishes, and the provider agrees on the state (once ACKed)."""
    assert channel.free + channel.locked + channel.provider_balance == DEPOSIT
    slot = runtime.channels.slot(channel.channel_id)
    assert slot is not None and slot.channel.state == channel.state


@pytest.fixture
def served(world: World) -> Iterator[tuple[Provider, Recorder, str]]:
    provider = world.provider()
    recorder = Recorder(provider.app)
    with serve_in_thread(recorder) as url:
        yield provider, recorder, url


# -------------------------------------------------------------------- the stream


async def test_paid_requests_travel_over_one_stream(
    world: World, served: tuple[Provider, Recorder, str]
) -> None:
    provider, recorder, url = served
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url, ack_delay=600) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        paid = [await tunnel.request(channel, WEATHER, PRICE) for _ in range(3)]
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    assert [json.loads(p.response.body)["n"] for p in paid] == [1, 2, 3]
    assert provider.calls["weather"] == 3
    assert (channel.free, channel.provider_balance) == (DEPOSIT - 3 * PRICE, 3 * PRICE)
    # One stream for the whole tunnel; the handshake is the only HTTP the vault spoke.
    assert recorder.streams == [(STREAM_PATH, f"session={tunnel_id(recorder)}")]
    assert recorder.posts(MESSAGE_PATH) == 0
    assert recorder.posts(HANDSHAKE_PATH) == 2
    # OPEN, then EXEC and AUTH per request (the ACKs ride on EXECs), then the last ACK.
    assert len(recorder.frames) == 1 + 2 * 3 + 1
    assert recorder.answers == ["frame"] * len(recorder.frames)


@pytest.mark.parametrize(
    ("fault", "frames"),
    [
        ("cut", {1}),  # EXEC ran; its REPLY was lost with the connection
        ("lose", {1}),  # EXEC never reached the provider
        ("cut", {2}),  # AUTH taken; the REVEAL was lost (σ_U is out: PENDING until resent)
        ("cut", {1, 2}),  # lost again on the fresh stream: a counted retry, with backoff
    ],
)
async def test_a_stream_that_drops_mid_exchange_is_retried_and_paid_once(
    world: World, served: tuple[Provider, Recorder, str], fault: str, frames: set[int]
) -> None:
    provider, recorder, url = served
    setattr(recorder, fault, frames)
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        paid = await tunnel.request(channel, WEATHER, PRICE)
        again = await tunnel.request(channel, WEATHER, PRICE)  # and the tunnel goes on
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    assert "close:1011" in recorder.answers
    assert len(recorder.streams) == 1 + len(frames)  # a new stream after each drop
    assert recorder.posts(MESSAGE_PATH) == 0
    assert provider.calls["weather"] == 2  # the retried EXEC was answered from the record
    assert (paid.request_id, again.request_id) == (0, 1)
    assert again.receipt is not None
    assert (again.receipt.state.version, again.receipt.state.provider_balance) == (2, 2 * PRICE)
    assert channel.status is Status.OPEN and channel.provider_balance == 2 * PRICE


async def test_a_frame_whose_answer_is_late_is_sent_again_on_a_new_stream(
    world: World, served: tuple[Provider, Recorder, str]
) -> None:
    """The late answer must not be read as the next frame's: the stream is cut, not reused."""
    provider, recorder, url = served
    provider.calls.slow_release = threading.Event()
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url, timeout=2.0) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        slow = asyncio.create_task(
            tunnel.request(channel, HttpRequest("GET", "/slow"), PRICES["GET /slow"])
        )
        await wait_until(lambda: len(recorder.streams) == 2, WAIT)  # the vault stopped waiting
        provider.calls.slow_release.set()
        paid = await slow
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    assert provider.calls["slow"] == 1
    assert recorder.posts(MESSAGE_PATH) == 0
    assert paid.receipt is not None
    assert paid.receipt.state.provider_balance == PRICES["GET /slow"]


async def test_a_corrupted_frame_gets_an_error_answer_and_is_sent_again(
    world: World, served: tuple[Provider, Recorder, str]
) -> None:
    provider, recorder, url = served
    recorder.corrupt = {1}  # the EXEC
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        await tunnel.request(channel, WEATHER, PRICE)
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    # Refused outside the channel, on the same stream, which went on serving.
    assert recorder.answers[1].startswith("error:")
    assert recorder.answers[2:] == ["frame"] * (len(recorder.frames) - 2)
    assert len(recorder.streams) == 1
    assert provider.calls["weather"] == 1 and channel.provider_balance == PRICE


async def test_frames_the_stream_cannot_take_get_error_answers_and_leave_the_tunnel_usable(
    world: World, served: tuple[Provider, Recorder, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, recorder, url = served
    # The real limit (16 MiB) is above uvicorn's own message limit: lower ours to reach it.
    monkeypatch.setattr(a402_app, "_MAX_FRAME_BODY", 4096)
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        await tunnel.request(channel, WEATHER, PRICE)
        tid = tunnel_id(recorder)
        # A second connection to the same tunnel, from someone who has its id only.
        async with connect(ws_url(url) + f"?session={tid}", compression=None) as raw:
            answers = []
            for message in (recorder.frames[1], b"\x00" * 4097, b"x" * 64, "text"):
                await raw.send(message)
                answers.append(json.loads(await asyncio.wait_for(raw.recv(), WAIT)))
        assert [a["error"] for a in answers[:2]] == ["replay", "too_large"]
        assert answers[2]["error"] not in ("replay", "too_large")  # does not authenticate
        assert answers[3]["error"] == "not_binary"
        assert all(set(a) == {"error", "message"} for a in answers)
        # None of it touched the tunnel: the vault's next frames authenticate as before.
        again = await tunnel.request(channel, WEATHER, PRICE)
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    assert provider.calls["weather"] == 2
    assert again.receipt is not None and again.receipt.state.provider_balance == 2 * PRICE


@pytest.mark.parametrize("query", ["?session=no-such-session", ""])
async def test_an_unknown_tunnel_at_connect_is_closed_with_4404(
    served: tuple[Provider, Recorder, str], query: str
) -> None:
    _, recorder, url = served
    async with connect(ws_url(url) + query, compression=None) as raw:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), WAIT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == STREAM_UNKNOWN_TUNNEL == 4404
    assert recorder.answers == ["close:4404"]


@pytest.mark.parametrize("path", [INFO_PATH, MESSAGE_PATH, "/weather"])
async def test_no_other_path_upgrades(served: tuple[Provider, Recorder, str], path: str) -> None:
    _, _, url = served
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(url, path), compression=None, open_timeout=WAIT)
    assert refused.value.response.status_code == 403


# ------------------------------------------------------------- forgotten tunnels


async def test_a_tunnel_forgotten_mid_stream_is_closed_and_opened_again(
    world: World, served: tuple[Provider, Recorder, str]
) -> None:
    provider, recorder, url = served
    provider.config.limits = Limits(max_tunnels=1)  # the next handshake evicts the current tunnel
    vault, client = world.vault(), world.client()
    async with world.tunnel(vault, url) as tunnel:
        channel = await world.open_channel(tunnel, vault, client)
        await tunnel.request(channel, WEATHER, PRICE)
        async with world.tunnel(world.vault(), url):  # evicts ours while its stream is open
            pass
        paid = await tunnel.request(channel, WEATHER, PRICE)
        await tunnel.flush_acks()
        conserved(channel, provider.runtime)
    assert "close:4404" in recorder.answers
    assert recorder.posts(HANDSHAKE_PATH) == 2 + 2 + 2  # ours, the other one, ours again
    assert recorder.posts(MESSAGE_PATH) == 0
    assert provider.calls["weather"] == 2
    assert paid.receipt is not None and paid.receipt.state.provider_balance == 2 * PRICE


async def test_a_restarted_provider_gets_a_new_tunnel_and_the_request_is_paid_once(
    world: World,
) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    async with contextlib.AsyncExitStack() as stack:
        with serve_in_thread(provider.app) as url:
            tunnel = await stack.enter_async_context(world.tunnel(vault, url))
            channel = await world.open_channel(tunnel, vault, client)
            await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()
        # The provider restarts on the same address with its sealed identity and store: it
        # knows the channel, not the tunnel. The vault's stream died with the old process.
        enclave = world.platform.restore(PROVIDER_CODE, provider.enclave.export_sealed(),
                                         allowed_purposes=PROVIDER_PURPOSES)
        restarted = world.provider(enclave=enclave, operator=provider.config.operator,
                                   store=SqlChannelStore(provider.config.store.url),
                                   calls=provider.calls)
        recorder = Recorder(restarted.app)
        with serve_in_thread(recorder, port=int(url.rsplit(":", 1)[1])):
            paid = await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()
            conserved(channel, restarted.runtime)
    assert provider.calls["weather"] == 2
    assert paid.receipt is not None
    assert (paid.receipt.state.version, paid.receipt.state.provider_balance) == (2, 2 * PRICE)
    # The old tunnel id was refused at connect, then a new handshake, a new stream.
    assert recorder.answers[0] == "close:4404"
    assert recorder.posts(HANDSHAKE_PATH) == 2 and recorder.posts(MESSAGE_PATH) == 0
    assert tunnel_id(recorder, 0) != tunnel_id(recorder, -1)


# ------------------------------------------------------------------- POST instead


@pytest.mark.parametrize("why", ["no_stream", "asked"])
async def test_frames_go_by_post_without_a_stream(
    world: World, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider, vault, client = world.provider(), world.vault(), world.client()
    recorder = Recorder(NoStream(provider.app) if why == "no_stream" else provider.app)
    kwargs: dict[str, Any] = {"ack_delay": 600}
    if why == "asked":
        kwargs["transport"] = "http"
    caplog.set_level(logging.WARNING, logger="a402.vault.link")
    with serve_in_thread(recorder) as url:
        async with world.tunnel(vault, url, **kwargs) as tunnel:
            channel = await world.open_channel(tunnel, vault, client)
            for _ in range(2):
                await tunnel.request(channel, WEATHER, PRICE)
            await tunnel.flush_acks()
            conserved(channel, provider.runtime)
    refusals = [r for r in caplog.records if "refused the a402 stream" in r.getMessage()]
    # Tried once, refused, logged once; every frame by POST.
    assert len(recorder.streams) == len(refusals) == (1 if why == "no_stream" else 0)
    assert recorder.posts(MESSAGE_PATH) == 1 + 2 * 2 + 1
    assert provider.calls["weather"] == 2


async def test_the_transport_is_checked(world: World) -> None:
    with pytest.raises(ValueError, match="transport"):
        ProviderTunnel("http://127.0.0.1:9", enclave=world.vault().enclave, verifiers=[],
                        policy=None, vault=None, transport="carrier-pigeon")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- gateway


async def test_the_gateway_routes_the_stream_to_the_a402_endpoint(world: World) -> None:
    calls = Calls()
    # The provider's parts (enclave, operator, store); the gateway builds its own runtime.
    config = world.provider(calls=calls).config
    vault, client = world.vault(), world.client()
    with serve_in_thread(service_app(calls)) as upstream:
        gateway = Recorder(create_gateway(
            upstream, dict(PRICES), pay_to=config.operator.address, token=world.token_info,
            network=world.chain.network, facilitator_url=UNUSED_FACILITATOR, a402=config,
        ))
        with serve_in_thread(gateway) as url:
            async with world.tunnel(vault, url) as tunnel:
                channel = await world.open_channel(tunnel, vault, client)
                paid = await tunnel.request(channel, WEATHER, PRICE)
                await tunnel.flush_acks()
            # Every other WebSocket still meets the proxy, which refuses it.
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(url, "/weather"), compression=None, open_timeout=WAIT)
            await wait_until(lambda: len(gateway.streams) == 2, WAIT)
    assert refused.value.response.status_code == 403
    assert json.loads(paid.response.body)["weather"] == "sunny"
    assert calls["weather"] == 1
    assert gateway.streams[0][0] == STREAM_PATH and gateway.posts(MESSAGE_PATH) == 0
    assert gateway.answers == ["frame"] * len(gateway.frames) + ["close:1003"]  # the proxy's
    operator = gateway.app  # /metrics and /operator/… in front (a402.observe)
    assert isinstance(operator, OperatorRoutes) and isinstance(operator.app, A402Payments)
    conserved(channel, operator.app.runtime)
