"""``start_anvil()`` without a port on a shared host: another process binding anvil's port
while anvil starts neither makes the start fail nor takes the port.

Each test starts anvil through a wrapper that records its arguments and waits, before
running the real anvil, until an "intruder" (another process's server, here a thread) has
tried to bind the port anvil was given. The port used to be merely found free
(``free_port``) and released before anvil bound it: the intruder's bind succeeded and
anvil exited with "Address already in use" (CI runs start hundreds of nodes and servers
among several sessions).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from a402.chain import node

pytestmark = pytest.mark.anvil


class Intruder:
    """Binds (and listens on) the port of anvil's first start, with or without
    SO_REUSEADDR (as a uvicorn server does), then lets anvil go on."""

    def __init__(self, folder: Path, *, reuse: bool) -> None:
        self.args, self.go, self.reuse = folder / "args", folder / "go", reuse
        self.anvil = node.find_anvil()
        self.bound: list[socket.socket | None] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def wrapper(self, folder: Path) -> str:
        script = folder / "anvil"
        script.write_text(
            "#!/bin/sh\n"
            f'echo "$@" >> "{self.args}"\n'
            f'while [ ! -e "{self.go}" ]; do sleep 0.02; done\n'
            f'exec "{self.anvil}" "$@"\n')
        script.chmod(0o755)
        return str(script)

    def ports(self) -> list[int]:
        """The port of each start of anvil so far (complete lines only)."""
        text = self.args.read_text() if self.args.exists() else ""
        lines = text.split("\n")[:-1]  # the last one may still be being written
        return [int(a.split()[a.split().index("--port") + 1]) for a in lines if a.strip()]

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while not self.ports():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            s = socket.socket()
            if self.reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.ports()[0]))
                s.listen()
                self.bound.append(s)
            except OSError:
                s.close()
                self.bound.append(None)
        finally:
            self.go.touch()  # anvil goes on whatever happened here

    def close(self) -> None:
        self.thread.join(60)
        for s in self.bound:
            if s is not None:
                s.close()


def _start_with(intruder: Intruder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[int, int]:
    monkeypatch.setattr(node, "find_anvil", lambda: intruder.wrapper(tmp_path))
    intruder.thread.start()
    try:
        with node.start_anvil() as chain:
            assert chain.rpc_url is not None
            answered = chain.w3.eth.chain_id
            port = int(chain.rpc_url.rsplit(":", 1)[1])
    finally:
        intruder.close()
    assert answered == 31337
    return port, len(intruder.ports())


def test_a_process_binding_anvils_port_while_it_starts_is_refused_and_anvil_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    intruder = Intruder(tmp_path, reuse=False)
    port, starts = _start_with(intruder, tmp_path, monkeypatch)
    assert intruder.bound == [None]  # the port was held for anvil
    assert (starts, port) == (1, intruder.ports()[0])


def test_a_server_that_bound_anvils_port_first_keeps_it_and_anvil_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server with SO_REUSEADDR that found the same port free before it was held binds
    it (a held port does not stop that): anvil exits on it and is started again on
    another port."""
    intruder = Intruder(tmp_path, reuse=True)
    port, starts = _start_with(intruder, tmp_path, monkeypatch)
    assert intruder.bound and intruder.bound[0] is not None  # the intruder listens there
    assert starts == 2 and port == intruder.ports()[1] != intruder.ports()[0]
