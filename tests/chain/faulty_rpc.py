"""A JSON-RPC proxy in front of a real node that fails chosen calls on purpose.

Every request is forwarded to the node unchanged, except calls of a method
broken with :meth:`FaultyRpc.fail` (until :meth:`FaultyRpc.heal`, or for a
number of calls): those get a dropped connection, an HTTP 502 page or a body
that is not JSON, as a load balancer or a crashing node would give. The node
behind it is real, so what does get through really happens on-chain.
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class Fault(enum.Enum):
    DROP = "drop"          # close the connection without answering
    BAD_GATEWAY = "502"    # HTTP 502 with a text/plain body
    NOT_JSON = "garbage"   # HTTP 200 with a body that is not JSON


class FaultyRpc:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._faults: dict[str, tuple[Fault, int | None]] = {}
        self._lock = threading.Lock()
        self.injected: list[tuple[str, Fault]] = []
        self._http = httpx.Client(timeout=30.0)

    def fail(self, method: str, fault: Fault, times: int | None = None) -> None:
        """Answer calls of ``method`` with ``fault``: the next ``times`` ones, or all
        of them until :meth:`heal`."""
        with self._lock:
            self._faults[method] = (fault, times)

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, method: str) -> Fault | None:
        with self._lock:
            if method not in self._faults:
                return None
            fault, times = self._faults[method]
            if times is not None:
                if times <= 1:
                    del self._faults[method]
                else:
                    self._faults[method] = (fault, times - 1)
            self.injected.append((method, fault))
            return fault

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    method = json.loads(body).get("method", "")
                except (ValueError, AttributeError):
                    method = ""  # a batch or junk: forward untouched
                fault = proxy._take(str(method))
                if fault is Fault.DROP:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault is Fault.BAD_GATEWAY:
                    return self._send(502, b"502 Bad Gateway", "text/plain")
                if fault is Fault.NOT_JSON:
                    return self._send(200, b"<html>upstream hiccup</html>", "application/json")
                answer = proxy._http.post(proxy.upstream, content=body,
                                          headers={"Content-Type": "application/json"})
                self._send(answer.status_code, answer.content, "application/json")

            def _send(self, status: int, content: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_: object) -> None:
                pass

        return Handler


@contextlib.contextmanager
def faulty_rpc(upstream: str) -> Iterator[tuple[str, FaultyRpc]]:
    """Serve a :class:`FaultyRpc` for ``upstream`` on a loopback port: (its URL, the proxy)."""
    proxy = FaultyRpc(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), proxy.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="faulty-rpc", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", proxy
    finally:
        server.shutdown()
        server.server_close()
        proxy._http.close()
