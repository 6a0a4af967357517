"""``a402 pay --vault --stream N`` whose vault stops answering mid-stream: the groups
already received were paid, the one in flight may have been. The command says so, with
what it paid, and does not advise running it again with its idempotency key (a stream's
groups are calls of their own: running the command again starts a new stream and pays
for it again). Before, it said "vault unreachable ... run again with --idempotency-key
K to get its answer". Real vault, provider enclave, anvil; the vault's ledger checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from a402.background import serve_in_thread
from a402.client.vault import VaultClient
from tests.a402_exchange.helpers import World

from .helpers import client_of, running_vault
from .test_paid_stream import GROUP, PER_GROUP, ROUTES, Upstream, llm_service, pay_stream

pytestmark = pytest.mark.anvil


def test_a_stream_whose_vault_stops_answering_says_what_it_paid(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        account, client = client_of(world, vault, funds=200_000, deposit=200_000)
        real = VaultClient.invoke
        calls: list[int] = []

        def flaky(self: VaultClient, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:  # the connection drops before the third group is sent
                raise httpx.ConnectError("connection refused")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(VaultClient, "invoke", flaky)
        code, out, said = pay_stream(world, vault, site, account, tmp_path)
        monkeypatch.setattr(VaultClient, "invoke", real)
        assert code == 1, said
        assert out.count(b"data: ") == 2 * GROUP  # two groups received
        first = next(line for line in said.splitlines() if line.startswith("a402 pay:"))
        assert first.startswith("a402 pay: payment unknown"), said
        assert f"2 groups received, {2 * PER_GROUP} paid" in first, first
        assert "--idempotency-key" not in first and "new stream" in first, first
        summary = json.loads(said.strip().splitlines()[-1])
        assert (summary["groups"], summary["paid"]) == (2, str(2 * PER_GROUP))
        assert client.account_info()["paid"] == str(2 * PER_GROUP)
        client.close()


def test_a_stream_group_left_pending_is_not_advised_a_rerun_by_key(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The vault answers a group ``payment_pending`` (paid, or may be, answer not in):
    the command's ``--idempotency-key`` does not name that group's call, so the advice
    to re-run with the group's key would start a new stream and pay again."""
    from a402.client.vault import VaultCallError
    from a402.wire import vault_api as api

    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        account, client = client_of(world, vault, funds=200_000, deposit=200_000)
        real = VaultClient.invoke
        calls: list[int] = []

        def pending(self: VaultClient, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:  # as the vault answers a call whose result is not in yet
                raise VaultCallError(202, {"error": api.PAYMENT_PENDING,
                                           "idempotencyKey": "1.group-two", "createdAt": 1})
            return real(self, *args, **kwargs)

        monkeypatch.setattr(VaultClient, "invoke", pending)
        code, out, said = pay_stream(world, vault, site, account, tmp_path)
        monkeypatch.setattr(VaultClient, "invoke", real)
        first = next(line for line in said.splitlines() if line.startswith("a402 pay:"))
        assert code == 4, said
        assert first.startswith("a402 pay: payment pending"), first
        assert f"1 groups received, {PER_GROUP} paid" in first, first
        assert "--idempotency-key" not in first and "new stream" in first, first
        assert out.count(b"data: ") == GROUP
        assert client.account_info()["paid"] == str(PER_GROUP)
        client.close()
