"""The parties of a paid request, each in a process of its own, for the benchmarks.

A deployment runs the facilitator, the provider and the vault on different
machines; running them as threads of one Python process would measure the
GIL handing itself between four servers rather than the protocol. Each role
here is a top-level function that a ``spawn`` child runs: it rebuilds its
part of the stack from plain values (keys, addresses, the simulated
platform's secrets) and serves it with uvicorn on a given loopback port until
the parent terminates it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PRICE = 1_000


@dataclass(frozen=True)
class Shared:
    """What every role needs to find the chain, the contracts and the enclave platform."""

    rpc_url: str
    manifest_json: str
    platform_root: bytes
    platform_secret: bytes
    provider_code: bytes
    vault_code: bytes
    db_dir: str

    def manifest(self) -> Any:
        from a402.chain.deploy import Manifest

        return Manifest.from_json(self.manifest_json)

    def platform(self) -> Any:
        from a402.tee import SimulatedPlatform
        from a402.tee.simulated import SimulationRoot

        return SimulatedPlatform(SimulationRoot.from_private_bytes(self.platform_root),
                                 self.platform_secret)

    def verifier(self) -> Any:
        from a402.tee import SimulatedVerifier

        return SimulatedVerifier(self.platform().root.public_key, allow_simulated=True)


def zero_cost_service() -> Starlette:
    """The paid API: answers at once, so what is measured is the payment."""
    async def data(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/data", data)])


# ------------------------------------------------------------------ the roles


def service(_: Shared, port: int) -> None:
    _serve(zero_cost_service(), port)


def facilitator(shared: Shared, port: int, signer_key: str) -> None:
    from a402.chain.node import connect
    from a402.facilitator.app import create_app
    from a402.facilitator.core import Facilitator
    from a402.facilitator.store import SettlementStore

    chain = connect(shared.rpc_url, [signer_key])
    store = SettlementStore(f"sqlite:///{shared.db_dir}/journal.db")
    _serve(create_app(Facilitator(chain, chain.accounts[0], store)), port)


def _provider_a402(shared: Shared, operator_key: str) -> tuple[Any, Any, Any]:
    """A provider's A402 side: its enclave, operator, chain and SQLite channel store
    (``(manifest, operator account, A402Config)``)."""
    from a402.chain.node import connect
    from a402.provider.a402_runtime import A402Config
    from a402.provider.a402_store import SqlChannelStore
    from a402.tee import PROVIDER_PURPOSES, AttestationPolicy

    manifest = shared.manifest()
    operator = Account.from_key(operator_key)
    chain = connect(shared.rpc_url, [operator_key])
    return manifest, operator, A402Config(
        enclave=shared.platform().launch(shared.provider_code,
                                         allowed_purposes=PROVIDER_PURPOSES),
        operator=operator, chain=chain, manager=manifest.contracts["ASCManager"],
        vault_policy=AttestationPolicy(frozenset({shared.vault_code})),
        verifiers=[shared.verifier()],
        store=SqlChannelStore(f"sqlite:///{shared.db_dir}/provider.db"),
    )


def provider(shared: Shared, port: int, operator_key: str, facilitator_url: str) -> None:
    """The zero-cost API behind the payment middleware, accepting ``exact`` and ``a402``."""
    from a402.provider.a402_payments import A402Payments
    from a402.provider.middleware import PaymentMiddleware

    manifest, operator, a402 = _provider_a402(shared, operator_key)
    api = A402Payments(PaymentMiddleware(
        zero_cost_service(), routes={"GET /data": PRICE}, pay_to=operator.address,
        token=manifest.token, network=manifest.network, facilitator=facilitator_url), a402)
    _serve_deployed(api, port)


def _vault_service(shared: Shared, vault_key: str, deposit_multiple: int,
                   **settings: Any) -> Any:
    """A vault service of the bench's chain (its enclave, its SQLite store); ``settings``
    are VaultConfig's other groups (batching, connections)."""
    from a402.chain.node import connect
    from a402.tee import AttestationPolicy
    from a402.vault.identity import vault_enclave
    from a402.vault.service import VaultConfig, VaultService
    from a402.vault.settings import Deposits
    from a402.vault.store import VaultStore

    manifest = shared.manifest()
    chain = connect(shared.rpc_url, [vault_key])
    store = VaultStore(f"sqlite:///{shared.db_dir}/vault-{chain.accounts[0].address}.db")
    store.claim_for(chain.accounts[0].address)
    return VaultService(VaultConfig(
        chain=chain, account=chain.accounts[0], manager=manifest.contracts["ASCManager"],
        store=store, enclave=vault_enclave(shared.platform(), shared.vault_code, store),
        verifiers=[shared.verifier()],
        provider_policy=AttestationPolicy(frozenset({shared.provider_code})),
        token=manifest.token, deposits=Deposits(deposit_multiple=deposit_multiple),
        **settings,
    ))


def vault(shared: Shared, port: int, vault_key: str, tunnels: int, deposit_multiple: int,
          batch_window: float) -> None:
    from a402.vault.app import create_app
    from a402.vault.settings import Batching, Connections

    _serve_deployed(create_app(_vault_service(
        shared, vault_key, deposit_multiple, batching=Batching(batch_window=batch_window),
        # every party is on 127.0.0.1
        connections=Connections(tunnels_per_provider=tunnels, allow_private_targets=True),
    )), port)


# ------------------------------------------------------------------ a paid stream's roles
# (bench/stream.py): served as a deployment serves them (:func:`a402.serving.run`: its HTTP
# protocol, its startup objects frozen out of the garbage collector), watchers and
# watchtower at their deployment defaults.


def token_stream(tokens: int) -> Any:
    """``POST /stream/<group>?pace=R&tokens=N``: N (default ``tokens``) ``text/event-stream``
    events, one a token, at R a second (0 or absent: flat out)."""
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
        pace = float(query.get("pace", "0"))
        count = int(query.get("tokens", tokens))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        start = time.monotonic()
        for i in range(count):
            if pace:
                delay = start + i / pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": b"data: t%d\n\n" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def stream_routes(groups: str) -> dict[str, Any]:
    """``POST /stream/<g>`` for each g of ``groups`` ("1,10,100"): at most g units, metered
    one unit an event."""
    from a402.metering import parse_rule
    from a402.provider.routes import RouteConfig

    return {f"POST /stream/{g}": RouteConfig(price=g, meter=parse_rule(
        f"per-event:0.000001,max={g / 10**6:.6f}", 6)) for g in map(int, groups.split(","))}


def stream_service(_: Shared, port: int, tokens: int) -> None:
    """The token stream alone, unpaid (the baseline)."""
    _serve_deployed(token_stream(tokens), port)


def stream_provider(shared: Shared, port: int, operator_key: str, tokens: int,
                    groups: str) -> None:
    """The token stream behind the payment middleware, metered per event, paid in A402
    channels (its own channel store)."""
    from a402.provider.a402_payments import A402Payments
    from a402.provider.middleware import PaymentMiddleware

    manifest, operator, a402 = _provider_a402(shared, operator_key)
    api = A402Payments(PaymentMiddleware(
        token_stream(tokens), routes=stream_routes(groups), pay_to=operator.address,
        token=manifest.token, network=manifest.network,
        facilitator="http://127.0.0.1:9"), a402)  # exact is never paid here
    _serve_deployed(api, port)


def stream_vault(shared: Shared, port: int, vault_key: str, deposit_multiple: int) -> None:
    """A vault (its enclave, its SQLite store), every other setting at its default."""
    from a402.vault.app import create_app
    from a402.vault.settings import Connections

    _serve_deployed(create_app(_vault_service(
        shared, vault_key, deposit_multiple,
        connections=Connections(allow_private_targets=True),  # every party is on 127.0.0.1
    )), port)


def _serve_deployed(app: Any, port: int) -> None:
    """``app`` served as ``a402 … serve`` serves it (:func:`a402.serving.run`)."""
    from a402.serving import run

    directory = os.environ.get(PROFILE_ENV)
    if directory:
        _profile_on_signals(Path(directory))
    run(app, host="127.0.0.1", port=port, access_log=False)


PROFILE_ENV = "A402_BENCH_PROFILE"
"""If set (a directory), every role can be profiled: SIGUSR1 starts cProfile in its
process, SIGUSR2 stops it and writes ``<dir>/<role>-<pid>.prof``; with
:data:`PROFILE_MODE_ENV` set to ``sample``, a CPU sampler (:mod:`sampler`) instead of
cProfile, writing ``<role>-<pid>.folded``."""
PROFILE_MODE_ENV = "A402_BENCH_PROFILE_MODE"


def _serve(app: Any, port: int) -> None:
    directory = os.environ.get(PROFILE_ENV)
    if directory:
        _profile_on_signals(Path(directory))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="on")


def _profile_on_signals(directory: Path) -> None:
    import cProfile
    import signal

    from sampler import Sampler

    sampling = os.environ.get(PROFILE_MODE_ENV) == "sample"
    profiler = cProfile.Profile(time.thread_time)  # this (main) thread's CPU, not wall time
    sampler = Sampler()
    name = multiprocessing.current_process().name

    def start(*_: object) -> None:
        if sampling:
            sampler.start()
        else:
            profiler.enable()

    def stop(*_: object) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if sampling:
            sampler.stop()
            sampler.dump(directory / f"{name}-{os.getpid()}.folded")
        else:
            profiler.disable()
            profiler.dump_stats(directory / f"{name}-{os.getpid()}.prof")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


# ------------------------------------------------------------------ the parent


@dataclass(frozen=True)
class Running:
    url: str
    pid: int

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux)."""
        return _cpu_of(Path(f"/proc/{self.pid}/stat"))

    def thread_cpu_seconds(self) -> dict[str, tuple[float, float]]:
        """(user, system) CPU time used so far by each live thread of the process, by
        thread id ("main" for the main thread), from /proc (Linux)."""
        used = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                used["main" if int(task.name) == self.pid else task.name] = \
                    _user_system(task / "stat")
        return used


def _user_system(stat: Path) -> tuple[float, float]:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu_of(stat: Path) -> float:
    return sum(_user_system(stat))


@contextlib.contextmanager
def running(role: Callable[..., None], shared: Shared, *args: Any,
            startup_timeout: float = 60.0) -> Iterator[Running]:
    """Start ``role`` in a spawned process on a free port; yields where it listens."""
    from a402.chain.node import free_port

    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=role, args=(shared, port, *args), daemon=True, name=role.__name__)
    process.start()
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {role.__name__} process did not start")
            time.sleep(0.05)
        assert process.pid is not None
        yield Running(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
