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
import logging
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

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
    """

    def __init__(self, origin: str, *, fallback: PostTransport, timeout: float) -> None:
        scheme, _, rest = origin.partition("://")
        self._url = ("wss" if scheme == "https" else "ws") + "://" + rest + STREAM_PATH
        self.fallback = fallback
        self.timeout = timeout
        #: False once the provider refused the upgrade: POST from then on.
        self.use_stream = True
        self._stream: ClientConnection | None = None
        self._stream_tunnel: str | None = None

    async def carry(self, tunnel: str, frame: bytes) -> bytes:
        if not self.use_stream:
            return await self.fallback.carry(tunnel, frame)
        stream = self._stream
        if stream is not None and self._stream_tunnel != tunnel:  # it carries an old tunnel
            self._drop(stream)
            stream = None
        for fresh in (stream is None, True):
            if stream is None:
                stream = await self._open(tunnel)
                if stream is None:
                    return await self.fallback.carry(tunnel, frame)
            try:
                async with asyncio.timeout(self.timeout):
                    await stream.send(frame)
                    answer = await stream.recv()
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

    async def _open(self, tunnel: str) -> ClientConnection | None:
        """Connect ``tunnel``'s stream; ``None`` if the provider refuses the upgrade."""
        try:
            stream = await ws_connect(
                self._url + "?session=" + quote(tunnel, safe=""),
                compression=None, max_size=MAX_FRAME, open_timeout=self.timeout,
                close_timeout=_STREAM_CLOSE_TIMEOUT, proxy=None,  # as the httpx client: no env
            )
        except InvalidStatus as e:
            status = e.response.status_code
            if status >= 500 or status in (408, 429):
                raise LinkDown("stream_refused", f"HTTP {status}") from None
            self.use_stream = False
            log.warning("%s refused the a402 stream (HTTP %d): frames go by POST",
                        self._url, status)
            return None
        except (OSError, InvalidHandshake) as e:
            raise LinkDown("stream", repr(e)) from None
        self._stream, self._stream_tunnel = stream, tunnel
        return stream

    def _drop(self, stream: ClientConnection) -> None:
        """Forget ``stream`` and cut it: dead or out of step, it carries no further frame.

        An abort, not a closing handshake: there is nothing to wait for.
        """
        if self._stream is stream:
            self._stream = self._stream_tunnel = None
        stream.transport.abort()

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()  # a clean close, at most _STREAM_CLOSE_TIMEOUT
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
