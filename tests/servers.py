"""Real HTTP servers for tests: the package's own background server, under a short name,
and loopback ports that no other server can be handed."""

from __future__ import annotations

import atexit
import contextlib
import socket
from collections.abc import Iterator

from a402.background import serve_in_thread as serve

__all__ = ["dead_url", "reserved_port", "serve"]


def dead_url() -> str:
    """A loopback URL that refuses connections for the rest of the session.

    Its port stays bound but never listens. A port merely bound and released could be
    handed to the next server started on port 0, which would then answer in its place.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    atexit.register(sock.close)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def held_port() -> socket.socket:
    """:func:`reserved_port` for a server process that lives longer than a ``with`` block
    (restarted on its port, as the crash and fail-over tests do): the caller closes the
    socket once the server is stopped for good."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held for a server started later on it (``serve(app, port=...)``).

    While held (bound with SO_REUSEADDR, not listening), neither a bind to port 0 nor an
    outgoing connection is given the port, yet a server binding it with SO_REUSEADDR, as
    ``serve`` does, still can — as often as it likes.
    """
    with held_port() as sock:
        yield int(sock.getsockname()[1])
