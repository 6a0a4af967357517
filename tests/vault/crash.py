"""A real ``a402 vault`` process to kill, and a provider that can hold a message mid-flight.

:class:`VaultProcess` runs the command line exactly as an operator would
(``python -m a402.cli vault …``, its own database, key file and platform
file) and kills it with SIGKILL: no handler runs, nothing is flushed, only
what the database committed survives.

:class:`GatedProvider` is the honest provider runtime with one seam of its frame
driver used: when a chosen message arrives it signals, then waits at
``before_send`` — after the
vault wrote its checkpoint and sent the message, before the provider answers.
That is where the test kills the vault, so every crash lands exactly in the
state under test, not wherever a timer happened to fire.

:class:`OfflineProvider` is the honest runtime whose ``/info`` answers an error
while ``offline`` is set: a vault restarting then cannot reach it (no tunnel,
no frame), and the provider's channels are left exactly as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
from eth_account.signers.local import LocalAccount

from a402.asc.messages import Message
from a402.provider.a402_channels import Slot
from a402.provider.a402_driver import FrameDriver
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider_enclave import Answer
from a402.vault.identity import save_platform
from a402.vault.store import VaultStore
from a402.wire.a402 import ProviderInfo
from tests.a402_exchange.helpers import PROVIDER_CODE, VAULT_CODE, World
from tests.servers import held_port


class GatedProvider(ProviderRuntime):
    """Once ``armed``, holds its answer to the next ``hold`` message until ``release`` is set."""

    hold: ClassVar[type[Message] | None] = None
    armed: ClassVar[bool] = False
    reached: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    @classmethod
    def gate(cls, hold: type[Message], *bases: type[ProviderRuntime]) -> type[GatedProvider]:
        """A fresh subclass (fresh events, disarmed) holding ``hold``."""
        gate: type[GatedProvider] = type("Gated" + hold.__name__, (cls, *bases), {
            "hold": hold, "armed": False, "reached": threading.Event(),
            "release": threading.Event()})

        class GatedDriver(FrameDriver):
            def before_send(self, slot: Slot, answer: Answer) -> None:
                if gate.armed and answer.incoming == hold.__name__ \
                        and not gate.reached.is_set():
                    gate.reached.set()
                    gate.release.wait(60)
                super().before_send(slot, answer)

        gate.driver_cls = GatedDriver
        return gate


class OfflineProvider(ProviderRuntime):
    """Unreachable for new tunnels while ``offline`` is set (``/info`` answers 400)."""

    offline: ClassVar[bool] = False

    def info(self, nonce: bytes) -> ProviderInfo:
        if type(self).offline:
            raise ValueError("offline")
        return super().info(nonce)


class VaultProcess:
    """``a402 vault`` as a child process, restartable on the same database (``db``: a
    SQLAlchemy URL; a SQLite file in ``workdir`` by default)."""

    def __init__(self, world: World, account: LocalAccount, workdir: Path, *extra: str,
                 db: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.world = world
        self.account = account
        self.db = db or f"sqlite:///{workdir}/vault.db"
        key = workdir / "vault.key"
        key.write_text(account.key.hex())
        key.chmod(0o600)
        platform = workdir / "platform.json"
        save_platform(world.platform, platform)
        # Held for its server (restarts included) until stop(): a port merely found free
        # could be bound by another process on a shared host before the server started.
        self._port = held_port()
        self.port = int(self._port.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable, "-m", "a402.cli", "vault", "--rpc", str(world.chain.rpc_url),
            "--key-file", str(key), "--manager", world.manager.address, "--db", self.db,
            "--port", str(self.port), "--platform-file", str(platform),
            "--measurement", VAULT_CODE.hex(), "--allow-simulated-attestation",
            "--provider-measurement", PROVIDER_CODE.hex(), "--poll-interval", "0.2",
            "--deposit-multiple", "10", "--allow-private-targets", *extra,
        ]
        self.log = workdir / "vault.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, *, standby: bool = False) -> None:
        """Start it and wait until it recovered (the active one), or, with ``standby``,
        until it answers as a standby (a replica over a database another one serves)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"a402 vault exited: {self.log.read_text()[-2000:]}")
            health = self.health()
            if health.get("recovered") or (standby and health.get("role") == "standby"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"a402 vault did not recover in time: {self.log.read_text()[-2000:]}")

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (``{}`` if it does not answer)."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            return dict(httpx.get(self.url + "/healthz", timeout=2).json())
        return {}

    def signal(self, signum: signal.Signals) -> None:
        """SIGSTOP / SIGCONT: pause the process (its sockets stay open) and resume it."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    @property
    def address(self) -> str:
        """The vault's address (its enclave's key), as ``GET /v1/info`` names it."""
        return str(httpx.get(self.url + "/v1/info", timeout=5).json()["vault"])

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to do anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._port.close()

    def store(self) -> VaultStore:
        """The database as the dead (or live) process left it."""
        return VaultStore(self.db)

    def startup_line(self) -> dict[str, Any]:
        first = next(line for line in self.log.read_text().splitlines()
                     if line.startswith("{\"vault\""))
        return dict(json.loads(first))


@contextlib.contextmanager
def vault_process(world: World, account: LocalAccount, workdir: Path, *extra: str,
                  db: str | None = None) -> Iterator[VaultProcess]:
    process = VaultProcess(world, account, workdir, *extra, db=db)
    process.start()
    try:
        yield process
    finally:
        process.stop()
