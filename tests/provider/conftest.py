"""Fixtures for the provider tests: an asyncio backend and a fresh payee per test."""

from __future__ import annotations

import pytest
from eth_account import Account


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (uvicorn and our servers are asyncio-only)."""
    return "asyncio"


@pytest.fixture
def pay_to() -> str:
    """A fresh payee, so balance assertions are exact deltas whatever ran before."""
    return Account.create().address


# The official SDK facilitator, for interop tests: the same fixtures the interop
# suite uses (session-scoped, so one SDK facilitator serves this directory).
from tests.interop.conftest import (  # noqa: E402
    official_facilitator_account,
    official_facilitator_url,
)

__all__ = ["anyio_backend", "official_facilitator_account", "official_facilitator_url", "pay_to"]
