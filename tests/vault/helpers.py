"""Building blocks for the vault tests: a running vault, funded clients, conservation checks.

Conservation is checked two ways after every scenario: the vault's own ledger
(``deposits == balances + in_channels + paid + withdrawn``); and the chain —
every client's on-chain pool balance (``ASCManager.pooled[vault][client]``) is
exactly the host's balance (plus a withdrawal relayed but not mined), the
vault's address holds no tokens, every settled channel paid its provider
exactly what the ledger says, and the ASCManager still escrows exactly the
deposits of the channels not settled (plus the pool).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import create_engine, select

from a402.background import serve_in_thread
from a402.client.vault import ExpectedVault, VaultClient
from a402.exact.eip3009 import Eip712Domain
from a402.observe import Observer
from a402.tee import AttestationPolicy
from a402.vault import store as vault_store
from a402.vault.app import create_app
from a402.vault.identity import _IDENTITY, vault_enclave
from a402.vault.service import VaultConfig, VaultService
from a402.vault.settings import Batching, Connections, Deposits, Timing
from a402.vault.store import VaultStore
from a402.vault.tables import AccountRow
from a402.vault_enclave import VaultEnclaveCode
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PROVIDER_CODE, VAULT_CODE, World, fresh_account


@dataclass
class Vault:
    service: VaultService
    url: str
    account: LocalAccount
    store: VaultStore

    @property
    def address(self) -> str:
        """The vault's address: its enclave's key (``account`` only pays gas)."""
        return self.service.address

    @property
    def signed_as(self) -> str:
        """What a client's call signatures name: this vault on its chain."""
        return api.vault_account(self.service.chain.network, self.address)

    @property
    def life(self) -> str:
        """The vault's life (``GET /v1/info``'s ``life``), signed into every call."""
        return self.service.vault.life_id


def vault_config(world: World, account: LocalAccount, store: VaultStore,
                 **overrides: Any) -> VaultConfig:
    """A vault of ``world``; ``overrides`` name settings of any group (each name is in one)."""
    store.claim_for(account.address)
    # Every party of these tests is on 127.0.0.1.
    settings: dict[str, Any] = {"poll_interval": 0.2, "deposit_multiple": 10,
                                "allow_private_targets": True}
    settings.update(overrides)
    groups = {name: group(**{f.name: settings.pop(f.name) for f in fields(group)
                             if f.name in settings})
              for name, group in _SETTINGS_GROUPS.items()}
    assert not settings, f"no such vault setting: {sorted(settings)}"
    return VaultConfig(
        chain=world.chain, account=account, manager=world.manager.address, store=store,
        enclave=vault_enclave(world.platform, VAULT_CODE, store), verifiers=[world.verifier],
        provider_policy=AttestationPolicy(frozenset({PROVIDER_CODE})), token=world.token_info,
        **groups,
    )


_SETTINGS_GROUPS: dict[str, type[Any]] = {
    "timing": Timing, "deposits": Deposits, "batching": Batching, "connections": Connections}


@contextlib.contextmanager
def running_vault(world: World, *, db_url: str | None = None,
                  account: LocalAccount | None = None, observer: Observer | None = None,
                  console: bool = False, **overrides: Any) -> Iterator[Vault]:
    account = account or fresh_account(world.chain)
    store = VaultStore(db_url or f"sqlite:///{world.tmp}/vault-{account.address}.db")
    service = VaultService(vault_config(world, account, store, **overrides))
    with serve_in_thread(create_app(service, observer=observer, console=console)) as url:
        yield Vault(service, url, account, store)
    store.close()


CREATED_SCHEMAS: list[tuple[str, str]] = []
"""(server URL, schema) of every schema :func:`fresh_schema` made; the suite drops them."""


def fresh_schema(url: str) -> str:
    """A PostgreSQL URL whose tables live in a schema of their own (one database per vault)."""
    name = f"vault_{secrets.token_hex(6)}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine.dispose()
    CREATED_SCHEMAS.append((url, name))
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def drop_created_schemas() -> None:
    """Drop the schemas this run made (at the end of the session: every vault is stopped)."""
    for url, name in CREATED_SCHEMAS:
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        except Exception:  # a schema still locked by a process the test leaked: left behind
            pass
        finally:
            engine.dispose()
    CREATED_SCHEMAS.clear()


def expected(world: World, vault: Vault) -> ExpectedVault:
    """What a client of ``vault`` knows beforehand: its key, the manager, the token."""
    return ExpectedVault(vault.address, world.manager.address, world.token.address)


def vault_flags(world: World, vault: Vault) -> list[str]:
    """``a402 pay``'s flags naming the vault, manager and token a client expects."""
    return ["--vault-address", vault.address, "--vault-manager", world.manager.address,
            "--vault-token", world.token.address]


def client_of(world: World, vault: Vault, *, funds: int, deposit: int = 0
              ) -> tuple[LocalAccount, VaultClient]:
    """A fresh client holding ``funds`` tokens, ``deposit`` of them deposited in the vault."""
    account = world.client(funds)
    client = VaultClient(vault.url, account, expect=expected(world, vault))
    if deposit:
        answer = client.deposit(deposit)
        assert answer["state"] == "credited", answer
    return account, client


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


def enclave_twin(world: World, store: VaultStore) -> VaultEnclaveCode:
    """The enclave's ledger as the store holds it: opened by a twin of the vault's enclave
    (its sealed identity is in the store; the test holds the platform), never by the host."""
    sealed = store.get_meta(_IDENTITY)
    stored = store.ledger()
    assert sealed is not None and stored is not None, "no enclave identity or ledger stored"
    token = world.token_info
    twin = VaultEnclaveCode.start(
        world.platform.restore(VAULT_CODE, sealed), domain=world.manager.domain,
        network=world.chain.network,
        token=Eip712Domain(token.name, token.version, world.chain.chain_id, token.address))
    twin.restore_ledger(stored[1])
    assert twin.ledger_version == stored[0]
    return twin._code


def assert_conserved(world: World, store: VaultStore, vault_address: str,
                     escrow_before: int | None = None) -> vault_store.Totals:
    """The ledger balances, and so does the chain (see the module docstring)."""
    totals = store.totals()
    assert totals.conserved, totals
    # A withdrawal relayed but not mined is out of the host's balance, still in the pool.
    pending: dict[str, int] = {}
    for w in store.pending_withdrawals():
        pending[w.client] = pending.get(w.client, 0) + int(w.amount)
    clients = {c.client for c in store.channels()} | set(_accounts(store))
    host = {a: store.balance(a) + pending.get(a, 0) for a in clients}
    chain = {a: world.manager.pooled(vault_address, a) for a in clients}
    assert chain == host, ("the chain's pool and the host's mirror differ", chain, host)
    assert world.balance(vault_address) == 0, "the vault's address holds tokens"
    channels = store.channels()
    by_provider: dict[str, int] = {}
    for c in channels:
        if c.phase == vault_store.SETTLED:
            by_provider[c.provider] = by_provider.get(c.provider, 0) + int(c.provider_payout or 0)
    for provider, paid in by_provider.items():
        assert world.balance(world.chain.w3.to_checksum_address(provider)) == paid
    if escrow_before is not None:
        unsettled = sum(int(c.deposit) for c in channels if c.phase in vault_store.FUNDED)
        assert world.balance(world.manager.address) == (
            escrow_before + unsettled + totals.balances + sum(pending.values()))
    return totals


def _accounts(store: VaultStore) -> list[str]:
    with store._read() as s:
        return list(s.scalars(select(AccountRow.address)))


def key_file(folder: object, account: Any) -> Path:
    """The account's key where ``a402 pay --key-file`` wants it (mode 600)."""
    key = Path(str(folder)) / "client.key"
    key.write_text(account.key.hex())
    key.chmod(0o600)
    return key


def answer_lost_front(vault_url: str) -> Any:
    """An ASGI app in front of the vault that forwards every call, then answers each
    ``/invoke`` with a 502 of its own: the vault paid, its answer was lost on the way (a
    proxy whose upstream broke)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=60) as http:
            upstream = await http.request(
                request.method, vault_url + request.url.path, content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k != "host"})
        if request.url.path.endswith("/invoke"):
            return JSONResponse({"error": "bad_gateway"}, status_code=502)
        return Response(upstream.content, status_code=upstream.status_code,
                        media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
