"""Vault-mode replicas over one PostgreSQL, as real ``a402 vault --mode vault`` processes,
and a participant's signed calls given every replica's URL (the fail-over test and
``bench/failover.py --mode vault``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.tee import measure_package
from a402.vault.command import _deploy_a402_vault
from a402.vault.identity import load_platform, vault_enclave
from a402.vault.store import VaultStore
from a402.vault_contract import A402Vault
from a402.wire import vault_api as api

from ..servers import held_port
from .helpers import funded


class Replica:
    """``a402 vault --mode vault`` as a child process over a shared PostgreSQL ``db``."""

    def __init__(self, chain: Chain, gas: LocalAccount, db: str, contract: str,
                 workdir: Path, platform: Path, name: str, *, ttl: float = 3.0,
                 measurement: bytes, extra: Sequence[str] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        key = workdir / f"{name}.key"
        key.write_text(gas.key.hex())
        key.chmod(0o600)
        # Held for its server (restarts included) until stop(): a port merely found free
        # could be bound by another process on a shared host before the server started.
        self._port = held_port()
        self.port = int(self._port.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.args = [
            sys.executable, "-m", "a402.cli", "vault", "--mode", "vault",
            "--rpc", str(chain.rpc_url), "--key-file", str(key), "--db", db,
            "--port", str(self.port), "--platform-file", str(platform),
            "--allow-simulated-attestation",
            *([] if "--provider-measurement" in extra else ["--provider-measurement", "00" * 32]),
            "--a402-vault", contract, "--measurement", measurement.hex(),
            "--poll-interval", "0.2", "--settle-window", "0", "--settle-jitter", "0",
            "--settle-min-participants", "1", "--lease-ttl", str(ttl),
            "--confirmations", "0",  # anvil mines on demand: records at the head
            *extra]
        self.measurement = measurement
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, role: str, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.wait_role(role, timeout)

    def wait_role(self, role: str, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"a402 vault exited: {self.log.read_text()[-3000:]}")
            if self.health().get("role") == role:
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"not {role} in time: {self.log.read_text()[-3000:]}")

    def health(self) -> dict[str, Any]:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            return dict(httpx.get(self.url + "/healthz", timeout=2).json())
        return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._port.close()


@dataclass
class Outcome:
    """One logical call: its one final answer, and how many answers were lost on the way
    (a connection dropped by the kill: the call is signed again and sent to the other URL)."""

    status: int
    body: dict[str, Any]
    lost: int = 0
    standby: int = 0


@dataclass
class FailoverCaller:
    """A participant's signed calls, given every replica's URL: a dropped connection or a
    ``503 vault_standby`` (or ``503 answer_dropped``: the replica lost its lease while it ran
    the call) sends the call (signed again, a fresh nonce) to the next URL."""

    urls: list[str]
    key: LocalAccount
    wait: float = 60.0
    info: dict[str, Any] = field(default_factory=dict)
    at: int = 0

    def _info(self, http: httpx.Client) -> dict[str, Any]:
        if not self.info:
            r = http.get(self.urls[self.at] + "/v1/info")
            if r.status_code != 200:
                raise httpx.ConnectError("standby")
            self.info = dict(r.json())
        return self.info

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Outcome:
        raw = b"" if body is None else json.dumps(body).encode()
        lost = standby = 0
        deadline = time.monotonic() + self.wait
        with httpx.Client(timeout=30, trust_env=False) as http:
            while time.monotonic() < deadline:
                try:
                    info = self._info(http)
                    account = api.vault_account(info["network"], info["vault"])
                    headers = {"content-type": "application/json"} if raw else {}
                    headers.update(api.sign_request(self.key, account, method, path, raw,
                                                    life=info["life"]))
                    r = http.request(method, self.urls[self.at] + path, content=raw,
                                     headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout):  # nothing was sent
                    self.at = (self.at + 1) % len(self.urls)
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError:
                    if method == "POST":
                        lost += 1  # sent, maybe done, no answer
                    self.at = (self.at + 1) % len(self.urls)
                    time.sleep(0.05)
                    continue
                data = r.json()
                if r.status_code == 503 and data.get("error") in (api.VAULT_STANDBY,
                                                                  api.ANSWER_DROPPED):
                    standby += 1
                    self.at = (self.at + 1) % len(self.urls)
                    time.sleep(0.05)
                    continue
                return Outcome(r.status_code, data, lost, standby)
        raise TimeoutError(f"{method} {path}: no replica answered in {self.wait} s")


@contextlib.contextmanager
def two_replicas(chain: Chain, usdc: Any, db: str, tmp: Path, *, ttl: float = 3.0,
                 extra: Sequence[str] = ()
                 ) -> Iterator[tuple[LocalAccount, A402Vault, list[Replica]]]:
    """An A402Vault whose signer is the replicas' shared enclave, and two replicas of it:
    the first active, the second standing by (``extra``: more ``a402 vault`` flags; the
    simulated platform is ``tmp/platform.json``)."""
    gas = funded(chain, usdc)
    platform = tmp / "platform.json"
    measurement = measure_package()  # once: every replica runs this same code
    store = VaultStore(db)
    try:
        store.claim_for(gas.address)
        enclave = vault_enclave(load_platform(platform), measurement, store)
        address = _deploy_a402_vault(chain, gas, usdc.address, enclave).address
    finally:
        store.close()
    replicas = [Replica(chain, gas, db, address, tmp, platform, f"replica{i}", ttl=ttl,
                        measurement=measurement, extra=extra) for i in (0, 1)]
    try:
        replicas[0].start("active")
        replicas[1].start("standby")
        yield gas, A402Vault(chain, address), replicas
    finally:
        for r in replicas:
            r.stop()
