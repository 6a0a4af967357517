"""What carries a tunnel's frames between a vault and a provider: the transport interface (pure).

A *frame* is one Noise-encrypted :class:`~a402.wire.a402.Envelope` of a tunnel
(:mod:`a402.wire.a402`); a vault sends one and the provider answers with
exactly one. What carries them is a pluggable object, as in httpx, whose
``AsyncBaseTransport`` is the model: a :class:`FrameTransport` has one method,
:meth:`~FrameTransport.carry`, that takes a frame of a named tunnel to the
provider and returns the answer frame. Implementations:

* over HTTP: ``POST …/message`` (one request per frame) and the ``…/stream``
  WebSocket (one message per frame, in order), served by the provider's
  :class:`~a402.provider.a402_app.A402Endpoint`;
* :class:`InMemoryTransport`: hands each frame straight to a provider's frame
  handler (:meth:`~a402.provider.a402_driver.FrameDriver.handle_frame`) in the
  same process, for tests and embedded setups.

Every transport reports the same three failures, so that a vault treats them
alike whatever carries its frames:

* :class:`UnknownTunnel`: the provider holds no tunnel under that id
  (expired, evicted, never finished): handshake again (HTTP: 404, or the
  stream closed with :data:`~a402.wire.a402.STREAM_UNKNOWN_TUNNEL`).
* :class:`FrameRefused`: the provider could not take the frame (it does not
  authenticate — tampered, replayed, reordered — or is too large); answered
  *outside* the channel, so the tunnel stays usable: retry in a fresh frame
  (HTTP: 400/413, or a text message on the stream).
* :class:`LinkDown`: no answer (network, timeout, the provider went away):
  retry; the provider answers a repeated message from its record.

Safety argument: a transport moves ciphertext only. It cannot read a frame,
and any change it makes to one fails the receiving enclave's AEAD; the worst
it can do is drop, delay or replay frames, which the tunnel's nonces refuse
and the channel's timeouts and disputes cover.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from a402.wire.a402 import DEFAULT_MAX_BLOB

#: The largest frame either way: one request or result blob plus framing.
MAX_FRAME: Final = DEFAULT_MAX_BLOB + 4096

#: A provider's side of a transport: one frame of a tunnel in, its answer frame out.
#: Raises :class:`UnknownTunnel` or :class:`FrameRefused` as a transport does.
FrameHandler = Callable[[str, bytes], Awaitable[bytes]]


class LinkError(Exception):
    """Base of the transport failures; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UnknownTunnel(LinkError):
    """No established tunnel under that id (expired, evicted, or never finished)."""

    def __init__(self, tunnel: str = "", detail: str = "open a new session") -> None:
        super().__init__("unknown_session", detail)
        self.tunnel = tunnel


class FrameRefused(LinkError):
    """The frame was refused outside the channel (does not authenticate, too large);
    the tunnel stays usable."""


class LinkDown(LinkError):
    """No answer came (network, timeout, the peer went away); the frame may be retried."""


class FrameTransport(Protocol):
    """Carries one frame of ``tunnel`` to the provider and returns its answer frame.

    One frame is in flight per tunnel (its Noise counters must arrive in order):
    callers serialise :meth:`carry` per tunnel. Raises :class:`UnknownTunnel`,
    :class:`FrameRefused` or :class:`LinkDown`, nothing else for a failed frame.
    """

    async def carry(self, tunnel: str, frame: bytes) -> bytes: ...

    async def aclose(self) -> None: ...


class InMemoryTransport:
    """A :class:`FrameTransport` to a provider in the same process: no network, no HTTP.

    ``handler`` is the provider's frame handler (``FrameDriver.handle_frame``).
    Frames over :data:`MAX_FRAME` are refused as the HTTP endpoint refuses them;
    any other exception of the handler is a :class:`LinkDown`, as a 500 would be.
    """

    def __init__(self, handler: FrameHandler, *, max_frame: int = MAX_FRAME) -> None:
        self.handler = handler
        self.max_frame = max_frame
        self.closed = False

    async def carry(self, tunnel: str, frame: bytes) -> bytes:
        if self.closed:
            raise LinkDown("closed", "the transport is closed")
        if len(frame) > self.max_frame:
            raise FrameRefused("too_large", "frame too large")
        try:
            return bytes(await self.handler(tunnel, bytes(frame)))
        except LinkError:
            raise
        except Exception as e:  # the provider failed: what an HTTP peer would see as a 500
            raise LinkDown("provider_error", f"{type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        self.closed = True


__all__ = [
    "MAX_FRAME",
    "FrameHandler",
    "FrameRefused",
    "FrameTransport",
    "InMemoryTransport",
    "LinkDown",
    "LinkError",
    "UnknownTunnel",
]
