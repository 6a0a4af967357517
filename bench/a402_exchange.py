"""Latency of one paid request through an Atomic Service Channel, over loopback HTTP.

Real everything: anvil holds the channel (opened once with ``createASC``), the
provider is ``A402Payments`` and the payment middleware around a trivial Starlette
handler, served by uvicorn in a thread; the vault is ``ProviderTunnel`` with
its own simulated enclave, posting one frame per HTTP request (``http=`` given: no
WebSocket stream, so every frame is seen and timed). Each paid request is two round
trips inside the attested tunnel: EXEC→REPLY and AUTH→REVEAL. Its ACK costs none of
its own: the vault keeps it and sends it with the channel's next EXEC (one ``acked``
envelope), or alone after ``ack_delay`` if no EXEC comes (a quarter of Δ_ack, at most
five seconds: never, in this tight loop, except for the last request's).

Breakdown, per request:

* ``exec_rtt``, ``auth_rtt``: wall time of each HTTP round trip as the vault
  sees it (the POST of the encrypted frame to the answer's bytes); they include
  everything the provider does: decrypt, state machine (``exec_rtt`` also the
  previous request's ACK), the handler, sealing, the enclave's pre-signature, the
  sealed write of the channel record to SQLite (WAL, ``synchronous=FULL``), encrypt.
* ``provider_persist``: time inside the provider's store writes (the fsyncs).
* ``vault_cpu``: the rest — REPLY pre-verification and σ_U, REVEAL checks,
  opening the result, the vault's state signature (the vault's persist
  callback is a no-op here: its store is the vault service's).

Prints a table and writes ``bench/results/a402_exchange.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.asc import VaultChannel, sign_channel_open
from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract, transact
from a402.crypto import EcdsaSigner
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_runtime import A402Config
from a402.provider.a402_store import SqlChannelStore
from a402.provider.middleware import PaymentMiddleware
from a402.provider.settings import ChannelTimeouts
from a402.tee import PROVIDER_PURPOSES, AttestationPolicy, SimulatedPlatform, SimulatedVerifier
from a402.vault import ProviderTunnel
from a402.wire.a402 import MESSAGE_PATH, HttpRequest, binding_digest
from machine import machine

PRICE = 1_000
#: Round trips of one paid request: EXEC (with the previous ACK) → REPLY, AUTH → REVEAL.
ROUND_TRIPS = 2
PROVIDER_CODE = hashlib.sha384(b"bench provider").digest()
VAULT_CODE = hashlib.sha384(b"bench vault").digest()


class _KeyAuthority:
    """OPEN's binding signed with the bench's own vault key (a bare machine, no service)."""

    def __init__(self, signer: EcdsaSigner, enclave: Any) -> None:
        self._signer, self._enclave, self.address = signer, enclave, signer.address

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        return self._signer.sign_digest(
            binding_digest(self._enclave.channel_binding(handle), channel_id))


class TimedTransport(httpx.AsyncBaseTransport):
    """Times every /message round trip."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rtts: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if request.url.path == MESSAGE_PATH:
            self.rtts.append(time.perf_counter() - start)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class TimedStore(SqlChannelStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.spent = 0.0

    async def save(self, channel_id: bytes, blob: bytes, *, active: bool) -> None:
        start = time.perf_counter()
        await super().save(channel_id, blob, active=active)
        self.spent += time.perf_counter() - start


async def data(_: Any) -> JSONResponse:
    return JSONResponse({"data": 42})


async def run(count: int, warmup: int) -> dict[str, Any]:
    with start_anvil(accounts=2) as chain, tempfile.TemporaryDirectory() as tmp:
        deployer = chain.accounts[0]
        token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                                deployer.address)
        manager = ASCManager.deploy(chain, deployer, token.address, 600)
        platform = SimulatedPlatform.generate()
        verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
        operator, vault_account, client = (Account.create() for _ in range(3))
        for account in (operator, vault_account, client):
            transact(chain, deployer, {"to": account.address}, value=10**18)
        store = TimedStore(f"sqlite:///{tmp}/provider.db")
        config = A402Config(
            enclave=platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES),
            operator=operator, chain=chain, manager=manager.address,
            vault_policy=AttestationPolicy(frozenset({VAULT_CODE})), verifiers=[verifier],
            store=store, timeouts=ChannelTimeouts(lock_timeout=5.0),
        )
        app = A402Payments(PaymentMiddleware(
            Starlette(routes=[Route("/data", data)]), routes={"GET /data": PRICE},
            pay_to=operator.address, token=TokenInfo(token.address, "USD Coin", "USDC", "2", 6),
            network=chain.network, facilitator="http://127.0.0.1:9",
        ), config)
        deposit = (count + warmup + 10) * PRICE
        transact(chain, deployer, token.functions.mint(client.address, deposit))
        transact(chain, client, token.functions.approve(manager.address, deposit))
        vault_key = EcdsaSigner(bytes(vault_account.key))  # a bare machine: the bench's own key
        vault_enclave = platform.launch(VAULT_CODE)
        timed = TimedTransport()
        with serve_in_thread(app) as url:
            async with ProviderTunnel(
                url, enclave=vault_enclave, verifiers=[verifier],
                policy=AttestationPolicy(frozenset({PROVIDER_CODE})),
                vault=_KeyAuthority(vault_key, vault_enclave),
                http=httpx.AsyncClient(transport=timed),
            ) as tunnel:
                terms = tunnel.terms(client=client.address, deposit=deposit)
                consent = sign_channel_open(EcdsaSigner(bytes(client.key)), manager.domain,
                                            terms)
                manager.create(vault_account, terms, consent)
                channel = VaultChannel(terms, manager.domain, vault_key, lock_timeout=10.0)
                await tunnel.attach(channel)
                request = HttpRequest("GET", "/data")
                for _ in range(warmup):
                    await tunnel.request(channel, request, PRICE)
                totals, rtts, persists = [], [], []
                for _ in range(count):
                    timed.rtts.clear()
                    store.spent = 0.0
                    start = time.perf_counter()
                    await tunnel.request(channel, request, PRICE)
                    totals.append(time.perf_counter() - start)
                    assert len(timed.rtts) == ROUND_TRIPS, timed.rtts
                    rtts.append(list(timed.rtts))
                    persists.append(store.spent)
        assert channel.provider_balance == (count + warmup) * PRICE

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000

    breakdown = {
        "exec_rtt": [r[0] for r in rtts],
        "auth_rtt": [r[1] for r in rtts],
        "provider_persist": persists,
        "vault_cpu": [t - sum(r) for t, r in zip(totals, rtts, strict=True)],
    }
    return {
        "requests": count,
        "total_ms": {"p50": p(totals, 50), "p90": p(totals, 90), "p99": p(totals, 99),
                     "mean": statistics.fmean(totals) * 1000},
        "breakdown_p50_ms": {k: statistics.median(v) * 1000 for k, v in breakdown.items()},
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.warmup))
    print(f"one paid request through a channel, loopback, {result['requests']} requests")
    for key, value in result["total_ms"].items():
        print(f"  total {key:>4}: {value:7.2f} ms")
    for key, value in result["breakdown_p50_ms"].items():
        print(f"  {key:>17} p50: {value:7.2f} ms")
    out = Path(__file__).parent / "results" / "a402_exchange.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
