"""The vault's end of the link to a provider: how its tunnel's bytes travel (I/O only).

:class:`~a402.vault.tunnel.ProviderTunnel` decides what to send and what an
answer means; a :class:`ProviderLink` only carries bytes:

* :meth:`ProviderLink.info` fetches the provider's attested ``…/info`` (with
  the vault's fresh nonce), and :meth:`~ProviderLink.open_tunnel` /
  :meth:`~ProviderLink.finish_tunnel` carry the three Noise handshake messages;
* :attr:`ProviderLink.frames` is the :class:`~a402.wire.transport.FrameTransport`
  that carries the tunnel's frames, with the transport's three failures
  (:class:`~a402.wire.transport.UnknownTunnel`,
  :class:`~a402.wire.transport.FrameRefused`,
  :class:`~a402.wire.transport.LinkDown`).

Implementations: :class:`HttpLink` (the provider's HTTP endpoint: frames over
:class:`StreamTransport`, one WebSocket per tunnel, or :class:`PostTransport`,
one ``POST …/message`` per frame) and :class:`InMemoryLink` (a provider in the
same process, its frames through an :class:`~a402.wire.transport.InMemoryTransport`).

Safety argument: nothing here decides anything. A link sees ciphertext (the
frames), public evidence (``…/info``, which the tunnel verifies against its
attestation policy and the vault's nonce) and handshake messages (which the
vault enclave checks, binding the peer's evidence to the transcript). What a
hostile link can do — drop, delay, replay or alter bytes — the enclave's AEAD
and the tunnel's nonces refuse, and the tunnel's retries, the provider's
record of answered messages and the channel's timeouts cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, cast
from urllib.parse import quote

import httpx
from websockets.client import ClientProtocol
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from a402.tee import AttestationError
from a402.wire.a402 import (
    FRAME_MEDIA_TYPE,
    HANDSHAKE_PATH,
    INFO_PATH,
    MESSAGE_PATH,
    STREAM_PATH,
    STREAM_UNKNOWN_TUNNEL,
    TUNNEL_HEADER,
    FrameError,
    ProviderInfo,
    b64,
    unb64,
)
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object
from a402.wire.transport import (
    MAX_FRAME,
    FrameRefused,
    FrameTransport,
    InMemoryTransport,
    LinkDown,
    LinkError,
    UnknownTunnel,
)

log = logging.getLogger("a402.vault.link")

#: How frames reach the provider over HTTP: the tunnel's WebSocket, or one POST each.
Mode = Literal["stream", "http"]
#: How long ``aclose`` waits for the provider to finish closing the stream.
_STREAM_CLOSE_TIMEOUT: Final = 2.0
#: How often an idle stream pings the provider; one silent for a whole period after a
#: ping is cut (as a WebSocket client's keepalive: a dead peer found before a frame waits
#: out its timeout on it, and proxies see an idle stream live).
_KEEPALIVE: Final = 20.0


class BadInfo(LinkError):
    """The provider's ``…/info`` is not a well-formed description (a protocol violation)."""


class ProviderLink(Protocol):
    """What carries a tunnel's bytes to one provider: attestation, handshake, frames."""

    frames: FrameTransport

    async def info(self, nonce: bytes) -> ProviderInfo:
        """The provider's ``…/info`` for ``nonce``; :class:`LinkDown` if none came,
        :class:`BadInfo` if it does not decode."""
        ...

    async def open_tunnel(self, first: bytes) -> tuple[str, bytes]:
        """Handshake message 1 out; the tunnel's id and message 2 back. Raises
        :class:`~a402.tee.AttestationError` when the provider refuses the vault's
        evidence, :class:`LinkDown` when it failed otherwise."""
        ...

    async def finish_tunnel(self, tunnel: str, third: bytes) -> None:
        """Handshake message 3 out (as :meth:`open_tunnel` fails)."""
        ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------ HTTP


class PostTransport:
    """A :class:`~a402.wire.transport.FrameTransport` over ``POST …/message``, one frame each.

    404 is :class:`UnknownTunnel`; 400 and 413 :class:`FrameRefused`; any other
    status, or no answer, :class:`LinkDown`.
    """

    def __init__(self, http: httpx.AsyncClient, origin: str) -> None:
        self.http = http
        self.url = origin + MESSAGE_PATH
        #: How many frames this transport carried (answered or not).
        self.carried = 0

    async def carry(self, tunnel: str, frame: bytes) -> bytes:
        self.carried += 1
        try:
            response = await self.http.post(
                self.url, content=frame,
                headers={TUNNEL_HEADER: tunnel, "content-type": FRAME_MEDIA_TYPE},
            )
        except httpx.TransportError as e:
            raise LinkDown("transport", repr(e)) from None
        if response.status_code == 404:
            raise UnknownTunnel(tunnel, "the provider forgot the tunnel")
        if response.status_code in (400, 413):
            raise FrameRefused(_error_of(response.content),
                               f"{response.status_code}: {response.text}")
        if response.status_code != 200:
            raise LinkDown(str(response.status_code), str(_json_or_empty(response)))
        return response.content

    async def aclose(self) -> None:
        return None


class _Stream(asyncio.Protocol):
    """One WebSocket to the provider's ``…/stream``, as lean as the exchange needs it.

    The tunnel has one frame on a stream at a time, and its answer is the next message:
    so a stream is one awaited answer, not a queue. The WebSocket itself (the opening
    handshake, masking, fragments, pings, the closing handshake, the size limit) is
    websockets' own sans-I/O :class:`~websockets.client.ClientProtocol`; this adds only
    the asyncio glue: what comes in goes to the awaited answer, what the protocol has to
    send is written at once. A message nobody awaits (the provider never sends one
    unasked) cuts the stream, as it would pass for the next frame's answer. An idle
    stream pings every ``_KEEPALIVE`` seconds, and is cut if nothing came back by the
    next time.
    """

    def __init__(self, protocol: ClientProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.ws = protocol
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        #: Set once the upgrade is answered: ``None``, or why it failed.
        self.opened: asyncio.Future[None] = loop.create_future()
        #: The answer awaited, while a frame is out.
        self.answer: asyncio.Future[bytes | str] | None = None
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self._parts: list[bytes] = []  # a fragmented message so far
        self._text = False
        self._heard = self._pinged = False  # since the last keepalive tick
        self._ticker: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        self.ws.receive_data(data)
        self._received()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()  # may end an answer to the upgrade read to the end
        self._received()
        return None  # the transport closes itself

    def _received(self) -> None:
        for event in self.ws.events_received():
            if type(event) is Frame:
                self._frame(event)
            elif not self.opened.done():  # the upgrade's answer
                self._settle_open()
        if self.ws.handshake_exc is not None and not self.opened.done():
            self._settle_open()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        if not self.opened.done():
            self.opened.set_exception(
                ConnectionError("the connection closed during the upgrade") if exc is None
                else exc)
        self._fail(self._closed_error())
        if not self.lost.done():
            self.lost.set_result(None)

    # -- what the stream does

    async def exchange(self, frame: bytes, timeout: float) -> bytes | str:
        """Send ``frame``; its answer, or :class:`ConnectionClosed` / :class:`TimeoutError`."""
        if self.closed or self.ws.state is not State.OPEN:
            raise self._closed_error()
        if self.answer is not None:  # the tunnel's frame lock makes this impossible
            raise RuntimeError("a frame is already out on this stream")
        answer = self.answer = self.loop.create_future()
        self.ws.send_binary(frame)
        self._flush()
        late = self.loop.call_later(timeout, _time_out, answer)
        try:
            return await answer
        finally:
            late.cancel()
            self.answer = None

    def abort(self) -> None:
        self.closed = True
        if not self.opened.done():  # nobody waits for the upgrade any more
            self.opened.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout: float) -> None:
        """The closing handshake, at most ``timeout``; then the connection is cut."""
        if not self.closed and self.ws.state is State.OPEN:
            self.ws.send_close()
            self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self.lost)
        self.abort()

    # -- inside

    def _settle_open(self) -> None:
        failure = self.ws.handshake_exc
        if failure is not None:
            self.opened.set_exception(failure)
        else:
            self.opened.set_result(None)
            self._ticker = self.loop.call_later(_KEEPALIVE, self._tick)

    def _tick(self) -> None:
        """Keepalive: ping an idle stream; cut one that stayed silent since the last ping."""
        if self.closed:
            return
        if self._pinged and not self._heard:
            self.abort()  # gone without a word: the next frame opens a new stream
            return
        self._pinged = self._heard = False
        if self.answer is None and self.ws.state is State.OPEN:
            self.ws.send_ping(b"keepalive")
            self._flush()
            self._pinged = True
        self._ticker = self.loop.call_later(_KEEPALIVE, self._tick)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            self._text, self._parts = opcode is Opcode.TEXT, [bytes(frame.data)]
        elif opcode is Opcode.CONT:  # the protocol bounds the whole message (max_size)
            self._parts.append(bytes(frame.data))
        elif opcode is Opcode.CLOSE:  # the protocol answers it; the awaited answer fails
            self._fail(self._closed_error())
            return
        else:  # a ping (the protocol answers it) or a pong
            return
        if not frame.fin:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        answer = self.answer
        if answer is None or answer.done():  # unasked: it would pass for the next answer
            self.abort()
            return
        answer.set_result(data.decode("utf-8", "replace") if self._text else data)

    def _fail(self, error: BaseException) -> None:
        answer = self.answer
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def _closed_error(self) -> ConnectionClosed:
        ws = self.ws
        return ConnectionClosedError(ws.close_rcvd, ws.close_sent, ws.close_rcvd_then_sent)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.ws.state is State.CLOSED:
            transport.close()


def _time_out(answer: asyncio.Future[bytes | str]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError("no answer in time"))


class StreamTransport:
    """A :class:`~a402.wire.transport.FrameTransport` over the ``…/stream`` WebSocket.

    One stream, for the tunnel it last carried a frame of (a new tunnel's first
    frame replaces it), so one frame is on it at a time and the next message is
    that frame's answer. A stream that drops, times out or is cancelled mid-frame
    is cut — an answer still on its way would otherwise be read as the next
    frame's — and the next frame opens a new one.

    A stream left open by earlier frames may have died while idle (a proxy timed
    it out): if sending on it fails, the same frame goes once more on a new
    stream before :class:`LinkDown`. If the provider had taken it after all, it
    refuses the repeat as a replay (:class:`FrameRefused`), and the tunnel sends
    its message again in a fresh frame: the provider answers a repeated message
    from its record, so this never runs or pays twice.

    A provider that refuses the upgrade (403, 404, 426 …: an endpoint without a
    stream, or a proxy that does not pass WebSockets) gets this frame and every
    later one by ``fallback`` (POST). A server error or a failed connection is
    transient: :class:`LinkDown`, and the retry connects again.

    The stream is a :class:`_Stream` (no proxy, as the httpx client: no environment;
    no compression): per frame, one write of the masked frame, one awaited answer
    and one timer — a fraction of a general WebSocket connection's cost.
    """

    def __init__(self, origin: str, *, fallback: PostTransport, timeout: float) -> None:
        scheme, _, rest = origin.partition("://")
        self._url = ("wss" if scheme == "https" else "ws") + "://" + rest + STREAM_PATH
        self.fallback = fallback
        self.timeout = timeout
        #: False once the provider refused the upgrade: POST from then on.
        self.use_stream = True
        self._stream: _Stream | None = None
        self._stream_tunnel: str | None = None

    async def carry(self, tunnel: str, frame: bytes) -> bytes:
        if not self.use_stream:
            return await self.fallback.carry(tunnel, frame)
        stream = self._stream
        if stream is not None and (self._stream_tunnel != tunnel or stream.closed):
            self._drop(stream)  # it carries an old tunnel, or it is gone
            stream = None
        for fresh in (stream is None, True):
            if stream is None:
                stream = await self._open(tunnel)
                if stream is None:
                    return await self.fallback.carry(tunnel, frame)
            try:
                answer = await stream.exchange(frame, self.timeout)
            except ConnectionClosed as e:
                self._drop(stream)
                if e.rcvd is not None and e.rcvd.code == STREAM_UNKNOWN_TUNNEL:
                    raise UnknownTunnel(tunnel, "the provider forgot the tunnel") from None
                if fresh:
                    raise LinkDown("stream_closed", str(e)) from None
                stream = None
                continue
            except OSError as e:  # timeouts included: the answer may still come, out of step
                self._drop(stream)
                raise LinkDown("stream", repr(e)) from None
            except BaseException:  # cancelled mid-frame: its answer would pass for the next's
                self._drop(stream)
                raise
            if isinstance(answer, str):  # refused outside the channel, as …/message's 400/413
                raise FrameRefused(_error_of(answer.encode()), answer)
            return answer
        raise AssertionError("unreachable: the second try is on a fresh stream")

    async def _open(self, tunnel: str) -> _Stream | None:
        """Connect ``tunnel``'s stream; ``None`` if the provider refuses the upgrade."""
        url = self._url + "?session=" + quote(tunnel, safe="")
        loop = asyncio.get_running_loop()
        stream: _Stream | None = None
        try:
            uri = parse_uri(url)
            protocol = ClientProtocol(uri, max_size=MAX_FRAME)
            async with asyncio.timeout(self.timeout):
                _, stream = await loop.create_connection(
                    lambda: _Stream(protocol, loop), uri.host, uri.port,
                    ssl=ssl.create_default_context() if uri.secure else None,
                    server_hostname=uri.host if uri.secure else None,
                )
                await stream.opened
        except InvalidStatus as e:
            if stream is not None:
                stream.abort()
            status = e.response.status_code
            if status >= 500 or status in (408, 429):
                raise LinkDown("stream_refused", f"HTTP {status}") from None
            self.use_stream = False
            log.warning("%s refused the a402 stream (HTTP %d): frames go by POST",
                        self._url, status)
            return None
        except (OSError, InvalidHandshake, InvalidURI) as e:
            if stream is not None:
                stream.abort()
            raise LinkDown("stream", repr(e)) from None
        except BaseException:
            if stream is not None:
                stream.abort()
            raise
        self._stream, self._stream_tunnel = stream, tunnel
        return stream

    def _drop(self, stream: _Stream) -> None:
        """Forget ``stream`` and cut it: dead or out of step, it carries no further frame.

        An abort, not a closing handshake: there is nothing to wait for.
        """
        if self._stream is stream:
            self._stream = self._stream_tunnel = None
        stream.abort()

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close(_STREAM_CLOSE_TIMEOUT)  # a clean close
        await self.fallback.aclose()


class HttpLink:
    """A :class:`ProviderLink` to a provider's HTTP endpoint (``origin``, no ``…/.well-known``).

    ``mode``: ``"stream"`` (:class:`StreamTransport`, falling back to POST if the
    provider refuses the upgrade) or ``"http"`` (:class:`PostTransport`).
    Default: the stream, unless ``http`` is given — a caller that brings its own
    client wants to see the frames in it. ``timeout`` bounds each round trip.
    """

    def __init__(self, origin: str, *, http: httpx.AsyncClient | None = None,
                 mode: Mode | None = None, timeout: float = 30.0) -> None:
        if mode not in (None, "stream", "http"):
            raise ValueError(f"transport is 'stream' or 'http', not {mode!r}")
        self.origin = origin
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        post = PostTransport(self.http, origin)
        self.frames: FrameTransport = (
            StreamTransport(origin, fallback=post, timeout=timeout)
            if mode == "stream" or (mode is None and http is None) else post
        )

    async def info(self, nonce: bytes) -> ProviderInfo:
        response = await self.http.get(self.origin + INFO_PATH, params={"nonce": nonce.hex()})
        if response.status_code != 200:
            raise LinkDown("info_unavailable", f"GET info: {response.status_code}")
        try:  # a provider is a peer: its answers are decoded within bounds like a request
            return ProviderInfo.from_json(loads_object(response.content))
        except WireError as e:
            raise BadInfo("bad_info", e.message or e.reason) from None
        except (ValueError, FrameError) as e:
            raise BadInfo("bad_info", str(e)) from None

    async def open_tunnel(self, first: bytes) -> tuple[str, bytes]:
        opened = await self._post_json({"message": b64(first)})
        return str(opened["session"]), unb64(opened["message"])

    async def finish_tunnel(self, tunnel: str, third: bytes) -> None:
        await self._post_json({"session": tunnel, "message": b64(third)})

    async def _post_json(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(self.origin + HANDSHAKE_PATH, json=body)
        data = _json_or_empty(response)
        if response.status_code == 403:
            raise AttestationError(data.get("error", "refused"), data.get("message", ""))
        if response.status_code != 200 or not isinstance(data.get("session"), str):
            raise LinkDown(data.get("error", "handshake_failed"),
                           f"{response.status_code}: {data}")
        return data

    async def aclose(self) -> None:
        await self.frames.aclose()
        if self._own_http:
            await self.http.aclose()


# ------------------------------------------------------------------- in memory


class InMemoryLink:
    """A :class:`ProviderLink` to a provider in the same process: no network, no HTTP.

    ``info``, ``open_tunnel`` and ``finish_tunnel`` are the provider runtime's own
    (``ProviderRuntime.info``, ``.tunnels.open``, ``.tunnels.finish``); ``frames``
    its frame handler's transport (an
    :class:`~a402.wire.transport.InMemoryTransport`, or any other).
    """

    def __init__(
        self, *, info: Callable[[bytes], ProviderInfo],
        open_tunnel: Callable[[bytes], tuple[str, bytes]],
        finish_tunnel: Callable[[str, bytes], object], frames: FrameTransport,
    ) -> None:
        self._info, self._open, self._finish = info, open_tunnel, finish_tunnel
        self.frames = frames

    async def info(self, nonce: bytes) -> ProviderInfo:
        return self._info(nonce)

    async def open_tunnel(self, first: bytes) -> tuple[str, bytes]:
        return self._open(first)

    async def finish_tunnel(self, tunnel: str, third: bytes) -> None:
        self._finish(tunnel, third)

    async def aclose(self) -> None:
        await self.frames.aclose()


def _error_of(body: bytes) -> str:
    """The ``error`` of a refusal's JSON body (``frame_rejected`` if it has none)."""
    try:
        error = loads_object(body).get("error")
    except WireError:
        error = None
    return error if isinstance(error, str) and error else "frame_rejected"


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        return loads_object(response.content)
    except WireError:
        return {}


__all__ = [
    "BadInfo",
    "HttpLink",
    "InMemoryLink",
    "InMemoryTransport",
    "Mode",
    "PostTransport",
    "ProviderLink",
    "StreamTransport",
]
