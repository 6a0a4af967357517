"""One way to get a chain, three backends.

- ``embedded_chain()``: an in-process EVM (eth-tester + py-evm). No
  installation beyond Python, so ``make demo`` runs anywhere.
- ``start_anvil()``: a real node, anvil, started and stopped by us; the
  integration tests and ``a402 devnet`` use it.
- ``connect(url)``: any JSON-RPC endpoint.

Each gives a ``Chain``: a web3 handle, the CAIP-2 network id and the local
accounts whose keys we hold.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3

from a402.evm.address import address_key
from a402.wire.networks import LOCAL_CHAIN_IDS, v1_name

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
"""Anvil's default development mnemonic: public, so these keys guard nothing."""

MAX_CHAIN_ID: Final = 2**53 - 1
"""The largest chain id every EVM tool can carry (EIP-2294's bound)."""


def public_chain_id_warning(chain_id: int) -> str | None:
    """The warning a local node must print when it borrows a public chain's id, else None.

    A devnet may take a public id (``--chain-id 84532``) so that clients which
    only know v1 network names (``base-sepolia``) can be tried locally. What is
    signed there is signed for that public chain: an EIP-712 domain names the
    chain id and the token's address, so an EIP-3009 authorization (or any
    typed-data signature) made on the devnet is valid on the public chain for a
    contract at the same address with the same domain. Only the public anvil
    keys belong on such a devnet. And simulated enclaves, which prove nothing, are
    refused there as on the public chain (:func:`a402.tee.require_development_chain`).
    """
    if chain_id in LOCAL_CHAIN_IDS:
        return None
    name = v1_name(chain_id)
    which = f"the public chain {name!r} (eip155:{chain_id})" if name else (
        f"eip155:{chain_id}, not a development chain id ({sorted(LOCAL_CHAIN_IDS)})")
    return (
        f"WARNING: this LOCAL devnet uses the chain id of {which}.\n"
        "It is still a local anvil: nothing here is on that chain, and nothing "
        "settled here is real money.\n"
        "But signatures are made for that chain id: never use a key here that "
        "holds anything on the public chain, and never sign here what you would "
        "not sign there."
    )


@dataclass
class Chain:
    w3: Web3
    accounts: list[LocalAccount]
    rpc_url: str | None = None
    _nonce_locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def network(self) -> str:
        """The CAIP-2 id, ``eip155:<chainId>``."""
        return f"eip155:{self.chain_id}"

    def sender_lock(self, address: str) -> threading.Lock:
        """Serialises transactions from one account so nonces never collide."""
        with self._guard:
            return self._nonce_locks.setdefault(address_key(address), threading.Lock())


class _SerialTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe; servers call it from worker threads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self._lock:
            return super().make_request(method, params)


def embedded_chain() -> Chain:
    """A fresh in-process chain with ten funded accounts."""
    provider = _SerialTesterProvider()
    tester = provider.ethereum_tester
    assert tester is not None  # the provider makes one when given none
    tester.backend.chain.gas_estimator = _two_run_gas_estimate
    keys = tester.backend.account_keys
    accounts = [Account.from_key(k.to_bytes()) for k in keys]
    return Chain(w3=Web3(provider), accounts=accounts)


def _two_run_gas_estimate(state: Any, transaction: Any) -> int:
    """Gas estimates in two executions instead of a dozen, for the in-process chain.

    py-evm estimates by binary search over the block gas limit, executing the
    transaction about twelve times, which dominates the demo's run time. Run it
    once with the whole block's gas, offer what it used plus a fifth and 25,000,
    confirm that runs, and fall back to the binary search if not. Transactions
    and their effects are unchanged; only their gas limits are less tight.
    """
    from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
    from eth.vm.spoof import SpoofTransaction

    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(
            SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0))
        if computation.is_error:
            raise computation.error
        used = state.gas_limit - computation.get_gas_remaining()
    finally:
        state.revert(snapshot)
    guess = min(state.gas_limit, used + used // 5 + 25_000)
    snapshot = state.snapshot()
    try:
        fits = not state.apply_transaction(
            SpoofTransaction(transaction, gas=guess, gas_price=0)).is_error
    finally:
        state.revert(snapshot)
    return guess if fits else int(binary_gas_search_intrinsic_tolerance(state, transaction))


def connect(rpc_url: str, keys: Sequence[str | bytes] = ()) -> Chain:
    """A chain reached over JSON-RPC, with the accounts whose keys are given."""
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    return Chain(w3=w3, accounts=[Account.from_key(k) for k in keys], rpc_url=rpc_url)


def dev_keys(count: int, mnemonic: str = ANVIL_MNEMONIC) -> list[LocalAccount]:
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)
    ]


def find_anvil() -> str:
    """The anvil binary: $A402_ANVIL, the npm package's binary, or PATH."""
    if explicit := os.environ.get("A402_ANVIL"):
        return explicit
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine()
    )
    pkg = f"@foundry-rs/anvil-{sys.platform}-{arch}"
    for base in (Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents):
        binary = base / "node_modules" / pkg / "bin" / "anvil"
        if binary.is_file():
            return str(binary)
    if found := shutil.which("anvil"):
        return found
    raise FileNotFoundError(
        "anvil not found: run `npm ci` in the project (it installs @foundry-rs/anvil-linux-amd64) "
        "or set A402_ANVIL to the binary"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _held_port() -> socket.socket:
    """A loopback port held for a server about to bind it: bound with SO_REUSEADDR and not
    listening. While it is held the kernel gives it to no other ``bind`` (port 0 or this
    port) nor to an outgoing connection, yet a server that binds it with SO_REUSEADDR, as
    anvil does, can. (A port from :func:`free_port` is free only when asked: on a shared
    host another process may bind it before the server does.)"""
    held = socket.socket()
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
    except BaseException:
        held.close()
        raise
    return held


def _die_with_parent() -> None:
    """Linux: anvil is killed if the Python process dies, so no node outlives a test run."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def start_anvil(
    *,
    port: int | None = None,
    block_time: float | None = None,
    chain_id: int = 31337,
    accounts: int = 10,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> Iterator[Chain]:
    """Run anvil on 127.0.0.1 for the duration of the ``with`` block.

    ``chain_id`` may be a public chain's (see ``public_chain_id_warning``,
    which callers that face a user must print).
    """
    if not 1 <= chain_id <= MAX_CHAIN_ID:
        raise ValueError(f"chain id must be in 1..{MAX_CHAIN_ID}, got {chain_id}")
    anvil = find_anvil()
    options = ["--chain-id", str(chain_id), "--accounts", str(accounts), "--mnemonic",
               ANVIL_MNEMONIC, "--silent"]
    if block_time:
        options += ["--block-time", str(block_time)]
    if "--slots-in-an-epoch" not in extra_args:
        # Its ``safe`` and ``finalized`` blocks one and two behind the head (not 32 and 64):
        # what the vault decides at ``finalized`` is decided a few blocks later, not 64.
        options += ["--slots-in-an-epoch", "1"]
    cache = None
    if "--cache-path" not in extra_args:
        # Anvil moves older states to disk, by default under ~/.foundry/anvil/tmp, and a
        # killed anvil leaves them there (tens of GB over many test runs): keep them in a
        # folder of this run's, removed when it stops.
        cache = tempfile.mkdtemp(prefix="a402-anvil-")
        options += ["--cache-path", cache]
    options += list(extra_args)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # Without a port given, one is held for anvil until it answers: the kernel gives it
        # to no one else meanwhile (a port merely found free could be bound by another
        # process first, and anvil then exited with "Address already in use"). A process
        # that found the same port free before it was held may still bind it first: then
        # anvil is started again on another one.
        for attempt in range(1 if port else _PORT_ATTEMPTS):
            held = None if port else _held_port()
            at = int(held.getsockname()[1]) if held is not None else port
            url = f"http://127.0.0.1:{at}"
            try:
                proc = subprocess.Popen(
                    [anvil, "--host", "127.0.0.1", "--port", str(at), *options],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
                _wait_for_rpc(url, proc, startup_timeout)
                break
            except _PortTaken:
                if held is None or attempt + 1 == _PORT_ATTEMPTS:
                    raise
                assert proc is not None and proc.stderr is not None
                proc.stderr.close()  # it exited: the next attempt is another process
            finally:
                if held is not None:
                    held.close()  # anvil listens on it now (or never will)
        assert proc is not None
        yield connect(url, [a.key for a in dev_keys(accounts)])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)


_PORT_ATTEMPTS = 5


class _PortTaken(RuntimeError):
    """Anvil exited at start-up because another process had bound its port."""


def _wait_for_rpc(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            error = _PortTaken if "Address already in use" in err else RuntimeError
            raise error(f"anvil exited with {proc.returncode}: {err.strip()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url, json=body, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"anvil did not answer on {url} within {timeout}s")
