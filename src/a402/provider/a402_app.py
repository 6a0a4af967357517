"""The ``/.well-known/a402/*`` endpoints: the provider's end of the HTTP transports.

Mounted by :class:`~a402.provider.a402_payments.A402Payments` (and so by the
gateway when it is given an ``a402=`` configuration) in front of the payment
middleware, ahead of everything else; it hands it the WebSocket connections
under the prefix too.
See :mod:`a402.wire.a402` for the protocol. This module is the provider's end of
the HTTP transports (:mod:`a402.wire.transport`): it only moves bytes between
HTTP (or a WebSocket) and the runtime's parts — handshakes to its tunnels
(:mod:`a402.provider.a402_tunnels`), frames to its frame driver
(:mod:`a402.provider.a402_driver`), the same driver an in-memory transport
hands frames to.

Errors outside the secure channel are JSON ``{"error", "message"}``: 400 for
a frame that does not authenticate (tampered, replayed, reordered — the
tunnel stays usable), 403 for a handshake whose attestation fails, 404 for
an unknown tunnel (the vault opens a new one), 413 for an oversized body.
Everything inside a tunnel, refusals included, is an encrypted 200.

The stream (``…/stream?session=<tunnel id>``, a WebSocket) carries the frames of
``…/message`` for one tunnel over one connection: each binary message is
one frame, answered by exactly one message, in order (frames of a connection
are handled one after the other: Noise counters are ordered anyway). The
errors map one to one: what ``…/message`` answers 400 or 413 is a text
message with the same JSON; an unknown tunnel — at connect or mid-stream —
closes the connection with :data:`~a402.wire.a402.STREAM_UNKNOWN_TUNNEL`.
A WebSocket to any other path under the prefix is refused before the upgrade
(HTTP 403), which is what a vault reads as "no stream here, use POST".
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from a402.provider.a402_runtime import ProviderRuntime
from a402.serving import read_body
from a402.tee import AttestationError, TeeError
from a402.wire.a402 import (
    FRAME_MEDIA_TYPE,
    HANDSHAKE_PATH,
    INFO_PATH,
    MESSAGE_PATH,
    STREAM_PATH,
    STREAM_UNKNOWN_TUNNEL,
    TUNNEL_HEADER,
    WELL_KNOWN_PREFIX,
    FrameError,
    b64,
    unb64,
)
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimitError, JsonLimits, loads_object
from a402.wire.transport import MAX_FRAME, FrameRefused, UnknownTunnel

log = logging.getLogger("a402.provider.a402")

_MAX_HANDSHAKE_BODY = 64 * 1024
_HANDSHAKE_LIMITS = JsonLimits(max_bytes=_MAX_HANDSHAKE_BODY)
#: An EXEC carries at most one request blob plus framing (a POST body or a stream message).
_MAX_FRAME_BODY = MAX_FRAME
_UNKNOWN_TUNNEL_CLOSE: dict[str, Any] = {
    "type": "websocket.close", "code": STREAM_UNKNOWN_TUNNEL, "reason": "open a new session",
}


async def _respond(
    send: Send, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, data: dict[str, Any]) -> None:
    await _respond(send, status, json.dumps(data, separators=(",", ":")).encode())


async def _error(send: Send, status: int, error: str, message: str) -> None:
    await _json(send, status, {"error": error, "message": message})


def _stream_error(error: str, message: str) -> dict[str, Any]:
    """A stream's answer to a frame it could not take: the JSON ``…/message`` would send."""
    text = json.dumps({"error": error, "message": message}, separators=(",", ":"))
    return {"type": "websocket.send", "text": text}


def _http_view(scope: Scope) -> dict[str, Any]:
    """The websocket scope as the paid requests of its frames see it.

    The executor (:mod:`a402.provider.a402_execute`) builds each paid request's
    scope from the scope of the request that carried the frame (host, client,
    server, scheme, state); on the stream that is the upgrade request, seen as
    the HTTP request it began as.
    """
    view = dict(scope)
    view["type"] = "http"
    view["method"] = "GET"
    view["scheme"] = "https" if scope.get("scheme") == "wss" else "http"
    return view


def _query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


class A402Endpoint:
    """ASGI app for ``/.well-known/a402/{info,session,message,stream}``."""

    def __init__(self, runtime: ProviderRuntime) -> None:
        self.runtime = runtime

    @staticmethod
    def handles(scope: Scope) -> bool:
        path = scope.get("path", "")
        return path == WELL_KNOWN_PREFIX or path.startswith(WELL_KNOWN_PREFIX + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._stream(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == INFO_PATH and method in ("GET", "HEAD"):
                await self._info(scope, send)
            elif path == HANDSHAKE_PATH and method == "POST":
                await self._handshake(await read_body(receive, _MAX_HANDSHAKE_BODY), send)
            elif path == MESSAGE_PATH and method == "POST":
                await self._message(scope, await read_body(receive, _MAX_FRAME_BODY), send)
            else:
                await _error(send, 404, "not_found", f"no a402 endpoint {method} {path}")
        except JsonLimitError:  # read_body's refusal of a body over its size bound
            await _error(send, 413, "too_large", "request body too large")
        except ConnectionError:
            return

    async def _info(self, scope: Scope, send: Send) -> None:
        nonce_hex = _query_param(scope, "nonce") or ""
        try:
            nonce = bytes.fromhex(nonce_hex.removeprefix("0x"))
            info = self.runtime.info(nonce)
        except ValueError as e:
            await _error(send, 400, "bad_nonce", str(e))
            return
        await _json(send, 200, info.to_json())

    async def _handshake(self, body: bytes, send: Send) -> None:
        try:
            request = loads_object(body, reason="malformed", limits=_HANDSHAKE_LIMITS)
            message = unb64(request["message"])
            tunnel_id = request.get("session")
        except WireError as e:  # bounded decoding: a deep body is refused, never parsed
            await _error(send, 400, e.reason, f"handshake body: {e.message}")
            return
        except (ValueError, KeyError, TypeError, FrameError) as e:
            await _error(send, 400, "malformed", f"handshake body: {e}")
            return
        try:
            if tunnel_id is None:
                tunnel_id, second = self.runtime.tunnels.open(message)
                await _json(send, 200, {"session": tunnel_id, "message": b64(second)})
            else:
                measurement = self.runtime.tunnels.finish(str(tunnel_id), message)
                await _json(send, 200, {"session": tunnel_id, "measurement": measurement.hex()})
        except UnknownTunnel:
            await _error(send, 404, "unknown_session", "no handshake in progress under that id")
        except AttestationError as e:
            log.warning("vault attestation refused: %s", e)
            await _error(send, 403, e.reason, e.detail)
        except TeeError as e:
            await _error(send, 400, e.reason, e.detail)

    async def _message(self, scope: Scope, body: bytes, send: Send) -> None:
        tunnel_id = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ())
             if k == TUNNEL_HEADER.encode()), None,
        )
        if tunnel_id is None:
            await _error(send, 400, "no_session", f"send the {TUNNEL_HEADER} header")
            return
        try:
            frame = await self.runtime.driver.handle_frame(tunnel_id, body, scope)
        except UnknownTunnel:
            await _error(send, 404, "unknown_session", "open a new session")
            return
        except FrameRefused as e:
            await _error(send, 400, e.reason, e.detail)
            return
        await _respond(send, 200, frame, FRAME_MEDIA_TYPE)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``…/stream``: one tunnel's frames, answered one by one, in order."""
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"] != STREAM_PATH:
            await send({"type": "websocket.close", "code": 1008})  # before the upgrade: 403
            return
        tunnel_id = _query_param(scope, "session")
        await send({"type": "websocket.accept"})
        # Checked at connect so that a vault learns of a forgotten tunnel before it spends
        # a frame; handle_frame stays the authority (a tunnel can still expire later).
        if tunnel_id is None or not self.runtime.tunnels.is_established(tunnel_id):
            await send(_UNKNOWN_TUNNEL_CLOSE)
            return
        outer = _http_view(scope)
        handle_frame = self.runtime.driver.handle_frame
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return  # websocket.disconnect: the vault retries on a new connection
                frame = message.get("bytes")
                if frame is None:
                    await send(_stream_error("not_binary", "send each frame as a binary message"))
                    continue
                if len(frame) > _MAX_FRAME_BODY:
                    await send(_stream_error("too_large", "frame too large"))
                    continue
                try:
                    answer = await handle_frame(tunnel_id, frame, outer)
                except UnknownTunnel:  # expired or evicted since the connect
                    await send(_UNKNOWN_TUNNEL_CLOSE)
                    return
                except FrameRefused as e:
                    await send(_stream_error(e.reason, e.detail))
                    continue
                await send({"type": "websocket.send", "bytes": answer})
        except OSError:  # the vault went away mid-answer (uvicorn's ClientDisconnected)
            return
