"""Fixtures for the paying client: real chains, real facilitators, real HTTP.

Besides the session's anvil (chain 31337, no x402 v1 name), v1 needs a chain
that v1 can name, so a second anvil runs as Base Sepolia (84532): a v1 server
then says ``"base-sepolia"`` exactly as real v1 servers do, and the client has
to map it to ``eip155:84532`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import contract_at, transact
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from tests.client.x402_server import PaidServer, requirement
from tests.servers import serve

BASE_SEPOLIA_CHAIN_ID = 84532


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Stack:
    """One chain with its token, a funded-payer factory and a facilitator URL."""

    chain: Chain
    manifest: Manifest
    facilitator_url: str

    @property
    def token(self) -> str:
        return self.manifest.token.address

    @property
    def pay_to(self) -> str:
        return self.manifest.account("provider").address

    def balance(self, owner: str) -> int:
        return token_balance(self.chain, self.token, owner)

    def new_payer(self, funds: int = 10 * 10**6) -> LocalAccount:
        account = Account.create()
        if funds:
            token = contract_at(self.chain, "TestUSDC", self.token)
            mint = token.functions.mint(account.address, funds)
            transact(self.chain, self.chain.accounts[0], mint)
        return account

    def requirement(self, amount: int, **kw: object) -> object:
        return requirement(network=self.manifest.network, asset=self.token, pay_to=self.pay_to,
                           amount=amount, extra=self.manifest.token.eip712_extra(), **kw)

    def server(self, amount: int, **kw: object) -> PaidServer:
        return PaidServer(self.facilitator_url, [self.requirement(amount)], **kw)  # type: ignore[arg-type]


def until(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    """Poll until ``condition()`` holds: a server settles on its own schedule, not the
    client's, so a client that gave up waiting cannot tell when the payment lands."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not observed within {within}s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def stack(anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str) -> Stack:
    """The session's anvil (eip155:31337) with our facilitator."""
    return Stack(anvil_chain, dev_stack, facilitator_url)


@pytest.fixture(scope="session")
def sepolia(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second anvil posing as Base Sepolia, with its own token and facilitator."""
    with start_anvil(chain_id=BASE_SEPOLIA_CHAIN_ID, accounts=4) as chain:
        manifest = deploy_dev_stack(chain)
        db = tmp_path_factory.mktemp("sepolia-facilitator") / "journal.db"
        facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(f"sqlite:///{db}"))
        with serve(create_app(facilitator)) as url:
            yield Stack(chain, manifest, url)


@pytest.fixture
def served() -> Iterator[Callable[[PaidServer], str]]:
    """Serve PaidServers for the duration of a test; returns their base URL."""
    import contextlib

    with contextlib.ExitStack() as stack:
        yield lambda server: stack.enter_context(serve(server.app()))
