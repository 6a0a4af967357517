"""Building blocks for the exchange tests: a paid service, a provider, a vault, channels.

Everything is real: anvil, the ASCManager, HTTP over loopback (uvicorn in a
thread), simulated enclaves whose quotes a verifier accepts only because it was
built with ``allow_simulated=True``. A deliberately faulty provider is the real
:class:`ProviderRuntime` with one of its two seams (``commit``, ``outgoing``)
overridden.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from a402.asc import VaultChannel, sign_channel_open
from a402.asc_manager import ASCManager
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.crypto import EcdsaSigner
from a402.provider.a402_app import A402Endpoint
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider.a402_store import SqlChannelStore
from a402.provider.middleware import PaymentMiddleware
from a402.provider.settings import ChannelTimeouts, Watching
from a402.tee import (
    PROVIDER_PURPOSES,
    AttestationPolicy,
    SimulatedEnclave,
    SimulatedPlatform,
    SimulatedVerifier,
)
from a402.vault import Checkpoint, ProviderTunnel
from a402.wire.a402 import HttpRequest, binding_digest

DISPUTE_WINDOW = 600
PROVIDER_CODE = hashlib.sha384(b"a402 test provider enclave").digest()
VAULT_CODE = hashlib.sha384(b"a402 test vault enclave").digest()
#: The vault's Δ_lock; the provider's lock ends earlier (network delay, clock skew).
LOCK = 8.0
PROVIDER_LOCK = 5.0
DEPOSIT = 100_000
#: How long a gated ``/slow`` holds its answer at most: inside the provider's handler
#: budget (0.8 × PROVIDER_LOCK), so a test that never releases it still gets an answer.
SLOW_HOLD = PROVIDER_LOCK * 0.8 - 0.5
PRICES = {"GET /weather": 1_000, "POST /echo": 2_500, "GET /boom": 1_000, "GET /slow": 1_500}
ETH = 10**18
UNUSED_FACILITATOR = "http://127.0.0.1:9"  # exact is never paid in these tests
#: The paid request most scenarios make, and its price.
WEATHER = HttpRequest("GET", "/weather")
PRICE = PRICES["GET /weather"]


@dataclass
class Calls:
    """How often each handler ran: a refused or replayed EXEC must not run it again."""

    counts: dict[str, int] = field(default_factory=dict)
    #: If set, ``/slow`` answers once this is set (at most SLOW_HOLD s) rather than after 0.5 s.
    slow_release: threading.Event | None = None

    def hit(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def service_app(calls: Calls) -> FastAPI:
    app = FastAPI()

    @app.get("/weather")
    async def weather() -> dict[str, Any]:
        return {"weather": "sunny", "n": calls.hit("weather")}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        calls.hit("echo")
        body = await request.body()
        return {"echo": body.decode(), "header": request.headers.get("x-test"),
                "query": request.url.query}

    @app.get("/boom")
    async def boom() -> JSONResponse:
        calls.hit("boom")
        return JSONResponse({"error": "kaput"}, status_code=500)

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        calls.hit("slow")
        if calls.slow_release is None:
            await asyncio.sleep(0.5)
        else:  # poll: blocking on the event would stall the provider's event loop
            deadline = time.monotonic() + SLOW_HOLD
            while not calls.slow_release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        return {"slow": True}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        return {"free": True}

    return app


def fresh_account(chain: Chain, eth: int = ETH) -> LocalAccount:
    account = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=eth)
    return account


@dataclass
class Provider:
    app: A402Payments
    runtime: ProviderRuntime
    config: A402Config
    enclave: SimulatedEnclave
    calls: Calls

    @property
    def address(self) -> str:
        return self.config.operator.address


class HostKeyAuthority:
    """A :class:`~a402.vault.tunnel.TunnelAuthority` over a vault key held by this process,
    for bare :class:`~a402.asc.VaultChannel` machines (tests and the bench only: the vault
    service's authority is its enclave)."""

    def __init__(self, signer: EcdsaSigner, enclave: SimulatedEnclave) -> None:
        self._signer = signer
        self._enclave = enclave
        self.address = signer.address

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        return self._signer.sign_digest(
            binding_digest(self._enclave.channel_binding(handle), channel_id))


@dataclass
class Vault:
    account: LocalAccount
    enclave: SimulatedEnclave
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def signer(self) -> EcdsaSigner:
        """A test vault key in this process (the vault service's is in its enclave)."""
        return EcdsaSigner(bytes(self.account.key))

    @property
    def authority(self) -> HostKeyAuthority:
        return HostKeyAuthority(self.signer, self.enclave)

    async def persist(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint)

    def reasons(self) -> list[str]:
        return [c.reason.value for c in self.checkpoints]


@dataclass
class World:
    chain: Chain
    token: Any
    token_info: TokenInfo
    manager: ASCManager
    platform: SimulatedPlatform
    verifier: SimulatedVerifier
    tmp: Path

    # -- providers --------------------------------------------------------------

    def provider(
        self,
        *,
        runtime_cls: type[ProviderRuntime] = ProviderRuntime,
        ack_timeout: float = 30.0,
        watch: bool = True,
        enclave: SimulatedEnclave | None = None,
        operator: LocalAccount | None = None,
        store: SqlChannelStore | None = None,
        calls: Calls | None = None,
        poll_interval: float = 0.1,
        routes: Mapping[str, Any] | None = None,
        service: Any = None,
    ) -> Provider:
        """A provider in front of :func:`service_app` priced by :data:`PRICES`, or in front
        of ``service`` (an ASGI app) priced by ``routes``."""
        enclave = enclave or self.platform.launch(
            PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES
        )
        operator = operator or fresh_account(self.chain)
        store = store or SqlChannelStore(f"sqlite:///{self.tmp}/provider-{operator.address}.db")
        calls = calls or Calls()
        config = A402Config(
            enclave=enclave, operator=operator, chain=self.chain, manager=self.manager.address,
            vault_policy=AttestationPolicy(frozenset({VAULT_CODE})), verifiers=[self.verifier],
            store=store,
            timeouts=ChannelTimeouts(ack_timeout=ack_timeout, lock_timeout=PROVIDER_LOCK),
            watching=Watching(poll_interval=poll_interval), watch=watch,
        )
        inner = service_app(calls) if service is None else service
        payments = PaymentMiddleware(
            inner, routes=dict(PRICES if routes is None else routes), pay_to=operator.address,
            token=self.token_info, network=self.chain.network, facilitator=UNUSED_FACILITATOR,
        )
        app = A402Payments(payments, config)
        if runtime_cls is not ProviderRuntime:  # the same parts, one seam overridden
            app.endpoint = A402Endpoint(runtime_cls(
                config, app=inner, routes=payments.routes, token=payments.asset,
                network=payments.network,
            ))
        return Provider(app, app.runtime, config, enclave, calls)

    # -- vaults, clients, tunnels, channels -------------------------------------

    def vault(self, measurement: bytes = VAULT_CODE) -> Vault:
        return Vault(fresh_account(self.chain), self.platform.launch(measurement))

    def client(self, funds: int = DEPOSIT) -> LocalAccount:
        client = fresh_account(self.chain)
        transact(self.chain, self.chain.accounts[0], self.token.functions.mint(client.address,
                                                                             funds))
        return client

    def tunnel(self, vault: Vault, url: str, **kwargs: Any) -> ProviderTunnel:
        kwargs.setdefault("verifiers", [self.verifier])
        kwargs.setdefault("policy", AttestationPolicy(frozenset({PROVIDER_CODE})))
        kwargs.setdefault("persist", vault.persist)
        return ProviderTunnel(
            url, enclave=vault.enclave, vault=vault.authority, network=self.chain.network,
            **kwargs,
        )

    async def open_channel(
        self, tunnel: ProviderTunnel, vault: Vault, client: LocalAccount,
        deposit: int = DEPOSIT,
    ) -> VaultChannel:
        """createASC through the vault account (client approved and consented), then OPEN."""
        terms = tunnel.terms(client=client.address, deposit=deposit)
        transact(self.chain, client, self.token.functions.approve(self.manager.address, deposit))
        consent = sign_channel_open(EcdsaSigner(bytes(client.key)), self.manager.domain, terms)
        self.manager.create(vault.account, terms, consent)
        channel = VaultChannel(terms, self.manager.domain, vault.signer, lock_timeout=LOCK)
        await tunnel.attach(channel)
        return channel

    def balance(self, address: str) -> int:
        return int(self.token.functions.balanceOf(address).call())

    def balances(self, *addresses: str) -> tuple[int, ...]:
        return tuple(self.balance(a) for a in addresses)

    def increase_time(self, seconds: int) -> None:
        self.chain.w3.provider.make_request("evm_increaseTime", [seconds])
        self.chain.w3.provider.make_request("evm_mine", [])


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
