"""Paid streams: a streamed response (``text/event-stream``, or chunked) sold group by group,
each group one ordinary A402 exchange (issue 16, part 3).

There is no second protocol. A payer asks for a stream with the request header
``A402-Stream-Group: N`` on a paid route; the provider's host starts the service's
response and the first EXEC's answer (sealed, paid and released by the enclave as
any other) is its first group of N units, with the response headers
``A402-Stream: <id>``, ``A402-Stream-Seq: <k>`` and ``A402-Stream-End: 0|1``. Each next
group is the next paid request of the same route with ``A402-Stream: <id>``, on the
same channel: its EXEC, REPLY, AUTH, REVEAL and ACK are the channel's next exchange.
A unit is one server-sent event (a blank line ends it) for ``text/event-stream``, one
line for anything else, cut from the bytes as they come: the service is asked for them
unencoded (``Accept-Encoding: identity``), and a stream it compresses anyway is refused
(``stream_encoded``, 502, nothing charged; compressed bytes have no boundaries, so one
"unit" would carry the whole stream). A metered route (``per-event``) charges each group for the
units it holds, so a last short group costs less.

What each side risks: at most one group.

* The payer never pays for a group it did not receive: a group is released (``t``
  revealed) only with its payment, and the vault records it with its answer before
  answering the client (a client that dies mid-call gets it from the record). It pays
  for no group it did not ask for: every group is a call it signed.
* The provider never delivers a group unpaid (the exchange is atomic), and reads
  ahead of what was paid by at most one group: the service's response is read into a
  buffer of at most N units and then held (back-pressure on the service's ``send``:
  the upstream is not read further) until the next group is bought. A payer that
  stops asking leaves that one group unsold.
* A stream is bound to the channel and the request target (method and path) that
  opened it: another channel naming its id, or the same channel naming it on another
  route (whose price or metering may be cheaper), gets 404 (nothing charged). Its id
  is a 128-bit random capability; ``A402-Stream-Stop: <id>`` on any request (free, answered by
  :class:`~a402.provider.a402_payments.A402Payments` before the routes) ends it.
* The service is told to stop: ending a stream (a stop, ``idle`` seconds without a
  group, the provider's shutdown) cancels the task running the service's response;
  behind the gateway that closes the upstream connection, and an app waiting on
  ``receive`` gets ``http.disconnect``.

This is host-side state (a stream's buffer is plaintext of the service's response,
as the host sees every response it runs): the enclave still hashes, seals and charges
each group exactly as it was given, and nothing here signs or moves money. A provider
that restarts loses its streams; the next group is then refused (404 ``unknown_stream``:
nothing paid), which the client reports as a stream lost after the groups it bought
(:class:`a402.client.vault_stream.StreamEnd`). A stream is not resumed after a restart:
running the service again would not give the same response (an LLM does not repeat
itself), so "the units after the k-th" of a new run would not be the rest of the old one.
A last group cut short by the service's failure says so (``A402-Stream-Failed: <why>``,
with ``A402-Stream-End: 1``): the client knows the response did not reach its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.types import ASGIApp, Message

from a402.metering import MeterRule, Unit
from a402.wire.a402 import HttpResponse

log = logging.getLogger("a402.provider.streams")

GROUP_HEADER: Final = b"a402-stream-group"
STREAM_HEADER: Final = b"a402-stream"
SEQ_HEADER: Final = b"a402-stream-seq"
END_HEADER: Final = b"a402-stream-end"
STOP_HEADER: Final = b"a402-stream-stop"
#: On a last group cut short by the service's failure: why (the stream did not reach its end).
FAILED_HEADER: Final = b"a402-stream-failed"
#: The most units a group may hold.
MAX_GROUP: Final = 10_000
#: The most streams open at once (all channels), and per channel.
MAX_STREAMS: Final = 1_000
MAX_PER_CHANNEL: Final = 4
#: A unit larger than this ends the stream (a service that never sends a separator).
MAX_UNIT: Final = 1024 * 1024
_GROUP: Final = re.compile(r"[0-9]{1,6}")
_DROPPED: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class StreamError(Exception):
    """A group that cannot be served: ``status`` and ``reason`` answer the paid request
    (a status ≥ 400, so the enclave charges nothing for it)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> HttpResponse:
        body = json.dumps({"error": self.reason}).encode()
        return HttpResponse(self.status, ((b"content-type", b"application/json"),), body)


def _header(headers: Any, name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return bytes(v)
    return None


def group_size(headers: Any) -> int | None:
    """The ``A402-Stream-Group`` a request asks for (None: not a stream), or StreamError."""
    raw = _header(headers, GROUP_HEADER)
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    # ASCII digits only: str.isdigit admits '²' (latin-1 0xB2), which int() refuses
    if _GROUP.fullmatch(text) is None or not 1 <= int(text) <= MAX_GROUP:
        raise StreamError(400, "bad_stream_group")
    return int(text)


def streamable(rule: MeterRule | None) -> None:
    """Refuse (400 ``stream_not_metered_per_group``) a stream on a route whose metering
    reads a report of the whole response: a ``per-unit`` header (each group repeats the
    service's headers, so each would be charged the whole report again) or a
    ``per-field`` of a JSON body (a group is no JSON document). A fixed price, and
    ``per-byte``, ``per-event`` and ``per-second``, are measured on each group itself."""
    if rule is not None and rule.unit in (Unit.UNIT, Unit.FIELD):
        raise StreamError(400, "stream_not_metered_per_group")


def unencoded_request(headers: Any) -> list[tuple[bytes, bytes]]:
    """A stream's request headers asking its service for an unencoded answer
    (``Accept-Encoding: identity``): units are cut from the bytes as they come, and
    compressed bytes have none to cut at (an answer encoded anyway is refused,
    ``stream_encoded``, nothing charged)."""
    return [*((bytes(k), bytes(v)) for k, v in headers
              if bytes(k).lower() != b"accept-encoding"),
            (b"accept-encoding", b"identity")]


def _encoded(headers: Any) -> bool:
    return any(bytes(k).lower() == b"content-encoding"
               and bytes(v).strip().lower() not in (b"", b"identity") for k, v in headers)


def stream_id(headers: Any, name: bytes = STREAM_HEADER) -> str | None:
    raw = _header(headers, name)
    return None if raw is None else raw.decode("latin-1").strip()


class _Splitter:
    """Cuts a body into units: server-sent events (ending in a blank line) or lines."""

    def __init__(self, events: bool) -> None:
        self._events = events
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        units: list[bytes] = []
        separator = b"\n\n" if self._events else b"\n"
        start = 0
        while True:
            at = data.find(separator, start)
            if at < 0:
                break
            units.append(data[start : at + len(separator)])
            start = at + len(separator)
        self._pending = data[start:]
        if len(self._pending) > MAX_UNIT:
            raise StreamError(502, "stream_unit_too_large")
        return units

    def rest(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


@dataclass(eq=False)
class Stream:
    """One service response being sold group by group (see the module)."""

    id: str
    channel_id: bytes
    group: int
    last_used: float
    #: The ``(method, path)`` that opened it: each group is bought on that route only.
    target: tuple[str, str] = ("", "")
    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    units: deque[bytes] = field(default_factory=deque)
    done: bool = False
    failed: str | None = None
    seq: int = 0
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    disconnect: asyncio.Event = field(default_factory=asyncio.Event)

    def _poke(self) -> None:
        self.changed.set()

    async def take(self) -> tuple[bytes, bool]:
        """The next group (up to ``group`` units; fewer only at the end) and whether it is
        the last; waits for the service, until one unit past the group (so that a group
        that ends the stream says so, and no empty group is ever sold after it)."""
        while len(self.units) <= self.group and not self.done:
            self.changed.clear()
            self.room.set()
            await self.changed.wait()
        taken = [self.units.popleft() for _ in range(min(self.group, len(self.units)))]
        self.seq += 1
        if len(self.units) <= self.group:
            self.room.set()  # read ahead: one group (and the unit past it) at most
        return b"".join(taken), self.done and not self.units


class StreamTable:
    """The provider host's open streams; ``clock`` is monotonic seconds; a stream with no
    group bought for ``idle`` seconds is ended (its service told to stop)."""

    def __init__(self, *, clock: Callable[[], float], idle: float = 60.0) -> None:
        self._clock = clock
        self.idle = idle
        self._streams: dict[str, Stream] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, sid: str) -> Stream | None:
        return self._streams.get(sid)

    async def open(self, channel_id: bytes, group: int, app: ASGIApp,
                   scope: Mapping[str, Any], body: bytes,
                   target: tuple[str, str] = ("", "")) -> HttpResponse:
        """Start the service's response for a new stream; its first group. ``target``:
        the paid request's ``(method, path)``, the only route its next groups are sold on."""
        self.reap()
        if len(self._streams) >= MAX_STREAMS or sum(
                s.channel_id == channel_id for s in self._streams.values()) >= MAX_PER_CHANNEL:
            raise StreamError(429, "too_many_streams")
        stream = Stream(secrets.token_hex(16), channel_id, group, self._clock(), target)
        stream.room.set()
        self._streams[stream.id] = stream
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_while_open())
        started = asyncio.Event()
        stream.task = asyncio.create_task(self._run(stream, app, scope, body, started))
        try:
            await started.wait()  # the status line, or the service failed first
        except BaseException:
            self.stop(stream.id)
            raise
        if stream.failed is not None and not stream.status:
            self.stop(stream.id)
            raise StreamError(502, stream.failed)
        if stream.status >= 400:  # an error is not sold as a stream: buffered whole
            while not stream.done:
                stream.changed.clear()
                stream.room.set()
                await stream.changed.wait()
            body_bytes = b"".join(stream.units)
            self.stop(stream.id)
            return HttpResponse(stream.status, stream.headers, body_bytes)
        try:
            return await self._group(stream)
        except BaseException:  # no first group (the budget ran out): nobody knows its id
            self.stop(stream.id)
            raise

    async def next(self, channel_id: bytes, sid: str,
                   target: tuple[str, str] = ("", "")) -> HttpResponse:
        """The next group of stream ``sid``, for its own channel and route only (the
        enclave prices the group by the route of the request that buys it)."""
        self.reap()
        stream = self._streams.get(sid)
        if stream is None or stream.channel_id != channel_id or stream.target != target:
            raise StreamError(404, "unknown_stream")
        return await self._group(stream)

    async def _group(self, stream: Stream) -> HttpResponse:
        body, last = await stream.take()
        stream.last_used = self._clock()
        if stream.failed is not None and not body:
            self.stop(stream.id)
            raise StreamError(502, stream.failed)
        if last:
            self.stop(stream.id)
        headers = (*stream.headers, (STREAM_HEADER, stream.id.encode()),
                   (SEQ_HEADER, str(stream.seq).encode()), (END_HEADER, b"1" if last else b"0"))
        if last and stream.failed is not None:  # the response was cut short, not finished
            headers = (*headers, (FAILED_HEADER, stream.failed.encode("latin-1", "replace")))
        return HttpResponse(stream.status, headers, body)

    def stop(self, sid: str) -> bool:
        """End a stream now: its service's task is cancelled (the upstream closed)."""
        stream = self._streams.pop(sid, None)
        if stream is None:
            return False
        stream.disconnect.set()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.done = True
        stream._poke()
        return True

    def reap(self) -> None:
        """End the streams nobody bought a group of for ``idle`` seconds."""
        now = self._clock()
        for sid in [s.id for s in self._streams.values() if now - s.last_used > self.idle]:
            log.info("stream %s idle for %.0f s: ended", sid, self.idle)
            self.stop(sid)

    async def _reap_while_open(self) -> None:
        """While any stream is open, end the idle ones (a payer that vanished asks for no
        more groups: its service is told to stop after ``idle`` seconds)."""
        while self._streams:
            await asyncio.sleep(max(0.05, self.idle / 4))
            self.reap()

    def close(self) -> None:
        for sid in list(self._streams):
            self.stop(sid)
        if self._reaper is not None:
            self._reaper.cancel()

    async def _run(self, stream: Stream, app: ASGIApp, scope: Mapping[str, Any], body: bytes,
                   started: asyncio.Event) -> None:
        sent = False
        splitter = _Splitter(events=False)

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await stream.disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal splitter
            kind = message["type"]
            if kind == "http.response.start":
                stream.status = int(message["status"])
                headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
                if _encoded(headers):
                    # Compressed bytes have no event or line boundaries to cut groups
                    # at: sold as given, one "unit" would carry the whole stream.
                    raise StreamError(502, "stream_encoded")
                # the service's own ``A402-Stream*`` headers are dropped: only the host says
                # which stream, which group, and whether it is the last or failed
                stream.headers = tuple((k, v) for k, v in headers if k.lower() not in _DROPPED
                                       and not k.lower().startswith(b"a402-stream"))
                content_type = _header(headers, b"content-type") or b""
                splitter = _Splitter(events=content_type.lower().startswith(b"text/event-stream"))
                started.set()
            elif kind == "http.response.body":
                while len(stream.units) > stream.group and stream.status < 400:
                    stream.room.clear()  # back-pressure: hold the service until a group sells
                    await stream.room.wait()
                stream.units.extend(splitter.feed(bytes(message.get("body", b""))))
                if not message.get("more_body", False):
                    stream.units.extend(splitter.rest())
                    stream.done = True
                stream._poke()

        try:
            await app(dict(scope), receive, send)
        except asyncio.CancelledError:
            raise
        except StreamError as e:
            stream.failed = e.reason
        except Exception as e:  # the service crashed mid-stream: what came is sold, no more
            log.warning("stream %s: the service failed: %r", stream.id, e)
            stream.failed = f"service_error: {type(e).__name__}"
        finally:
            stream.units.extend(splitter.rest())
            stream.done = True
            started.set()
            stream._poke()
            with contextlib.suppress(Exception):
                stream.disconnect.set()


__all__ = [
    "END_HEADER",
    "FAILED_HEADER",
    "GROUP_HEADER",
    "SEQ_HEADER",
    "STOP_HEADER",
    "STREAM_HEADER",
    "Stream",
    "StreamError",
    "StreamTable",
    "group_size",
    "stream_id",
    "streamable",
    "unencoded_request",
]
