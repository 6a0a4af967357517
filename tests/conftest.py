"""Shared fixtures: a real anvil node with the dev stack deployed, funded payers,
and the PostgreSQL URL for store tests.

Tests that need anvil share one node per session; each test that moves money
gets fresh accounts (``new_payer``), so balance assertions are exact deltas and
tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import contract_at, transact
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore

from .servers import reserved_port

POSTGRES_URL_ENV = "A402_TEST_POSTGRES_URL"


SHARED_CHAIN_FORBIDDEN = frozenset({
    "evm_increaseTime", "evm_setNextBlockTimestamp", "anvil_setNextBlockTimestamp",
    "anvil_setTime", "evm_revert", "anvil_reset",
})
"""Calls that move the shared node's clock or history for everyone. Tests sign
authorizations against its clock, so a test that needs these starts its own
anvil (``start_anvil()``) instead."""


@pytest.fixture(scope="session", autouse=True)
def payment_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``a402 pay`` records each payment (``a402.client.history``); in the tests, in a
    file of the session's, for in-process runs and child processes alike, never in the
    working directory."""
    path = str(tmp_path_factory.mktemp("history") / "payments.jsonl")
    before = os.environ.get("A402_HISTORY")
    os.environ["A402_HISTORY"] = path
    yield path
    if before is None:
        os.environ.pop("A402_HISTORY", None)
    else:
        os.environ["A402_HISTORY"] = before


@pytest.fixture(scope="session")
def anvil_chain() -> Iterator[Chain]:
    with start_anvil(accounts=12) as chain:
        provider = chain.w3.provider
        make_request = provider.make_request

        def guarded(method: str, params: Any) -> Any:
            if method in SHARED_CHAIN_FORBIDDEN:
                raise RuntimeError(f"{method} on the shared anvil_chain: use a private "
                                   "start_anvil() for tests that move time or history")
            return make_request(method, params)

        provider.make_request = guarded  # type: ignore[method-assign]
        yield chain


@pytest.fixture(scope="session")
def dev_stack(anvil_chain: Chain) -> Manifest:
    return deploy_dev_stack(anvil_chain)


@pytest.fixture
def new_payer(anvil_chain: Chain, dev_stack: Manifest) -> Callable[..., LocalAccount]:
    """Make a fresh key holding ``funds`` token units (and no ETH: EIP-3009 is gasless)."""
    token = contract_at(anvil_chain, "TestUSDC", dev_stack.token.address)
    deployer = anvil_chain.accounts[0]

    def make(funds: int = 10 * 10**6) -> LocalAccount:
        account = Account.create()
        if funds:
            transact(anvil_chain, deployer, token.functions.mint(account.address, funds))
        return account

    return make


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real PostgreSQL to test against; CI sets it and refuses to skip."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        if os.environ.get("A402_REQUIRE_POSTGRES"):
            pytest.fail(f"{POSTGRES_URL_ENV} is required here but not set")
        pytest.skip(f"set {POSTGRES_URL_ENV} to run the PostgreSQL tests")
    return url


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    """The PostgreSQL schemas tests made for their vaults go when the session ends."""
    yield
    from .vault.helpers import drop_created_schemas

    drop_created_schemas()


@pytest.fixture(scope="session")
def facilitator(anvil_chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Facilitator:
    """Our facilitator on anvil, journaling to a throwaway SQLite file."""
    db = tmp_path_factory.mktemp("facilitator") / "journal.db"
    return Facilitator(anvil_chain, anvil_chain.accounts[1], SettlementStore(f"sqlite:///{db}"))


@pytest.fixture(scope="session")
def facilitator_url(facilitator: Facilitator) -> Iterator[str]:
    """The same facilitator behind real HTTP on a loopback port."""
    with serve_in_thread(create_app(facilitator)) as url:
        yield url


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio: a402's services and vault are asyncio code (trio is
    installed only as selenium's dependency, for the console's browser tests)."""
    return "asyncio"


@pytest.fixture
def reserve_port() -> Iterator[Callable[[], int]]:
    """``reserve_port()``: a loopback port for a server the test starts later (a child
    process, or ``serve(app, port=...)``), held as :func:`tests.servers.reserved_port`
    holds it until the test ends. A port merely found free (``free_port``) is free only
    when asked: on a shared host another process may bind it before the server does, which
    then exits with "Address already in use"."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(reserved_port())
