"""Fixtures for interop tests: the official SDK's facilitator, served once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from tests.interop.official import official_facilitator_app
from tests.servers import serve

GAS_FUNDS_WEI = 100 * 10**18


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio: the SDK and uvicorn are asyncio-only."""
    return "asyncio"


@pytest.fixture(scope="session")
def official_facilitator_account(anvil_chain: Chain) -> LocalAccount:
    """A gas payer of the SDK facilitator's own, not ``accounts[1]``.

    The SDK's signer keeps its own nonce counter; sharing a key with a402's
    facilitator (which serialises on ``Chain.sender_lock``) would let the two
    race for nonces when tests mix them.
    """
    account = Account.create()
    anvil_chain.w3.provider.make_request(
        "anvil_setBalance", [account.address, hex(GAS_FUNDS_WEI)]
    )
    return account


@pytest.fixture(scope="session")
def official_facilitator_url(
    anvil_chain: Chain, dev_stack: Manifest, official_facilitator_account: LocalAccount
) -> Iterator[str]:
    """Base URL of the SDK facilitator (``/verify``, ``/settle``, ``/supported``) on anvil."""
    app = official_facilitator_app(anvil_chain, dev_stack, official_facilitator_account)
    with serve(app) as url:
        yield url
