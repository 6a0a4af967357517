"""The vault service end to end: deposits, paid calls through channels, idempotent retries,
cooperative close — over real HTTP, on anvil, on SQLite and on PostgreSQL, with exact
conservation."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from a402.background import serve_in_thread
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICES, World

from .helpers import assert_conserved, client_of, fresh_schema, running_vault

pytestmark = pytest.mark.anvil


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_paid_calls_through_a_channel_then_a_cooperative_close(
    world: World, backend: str, request: pytest.FixtureRequest,
) -> None:
    db_url = fresh_schema(request.getfixturevalue("postgres_url")) if backend == "postgres" \
        else None
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world, db_url=db_url) as vault:
        _, client = client_of(world, vault, funds=100_000, deposit=50_000)
        first = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="w-1")
        echo = client.invoke(f"{site}/echo?x=1", method="POST", content=b"hello",
                             headers=[(b"x-test", b"yes")], max_price=5_000)
        again = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="w-1")

        assert (first.outcome, first.status, first.amount) == (api.PAID, 200, 1_000)
        assert json.loads(first.content) == {"weather": "sunny", "n": 1}
        assert json.loads(echo.content) == {"echo": "hello", "header": "yes", "query": "x=1"}
        assert echo.amount == PRICES["POST /echo"]
        # The retry is answered from the record: same answer, nothing ran or was paid again.
        assert again == first
        assert provider.calls["weather"] == 1
        receipt = echo.payment["receipt"] if echo.payment else None
        assert receipt is not None and (receipt["version"], receipt["providerBalance"]) == (
            2, "3500")

        view = client.account_info()
        assert (view["balance"], view["inChannels"], view["paid"]) == (
            str(50_000 - 10_000), str(10_000 - 3_500), "3500")
        [channel] = view["channels"]
        assert (channel["phase"], channel["funding"], channel["deposit"]) == (
            vault_store.OPEN, api.POOL, "10000")
        assert_conserved(world, vault.store, vault.address, escrow)

        closed = client.close_channel(channel["channelId"])
        assert (closed["phase"], closed["clientPayout"], closed["providerPayout"]) == (
            vault_store.SETTLED, "6500", "3500")
        assert client.account_info()["balance"] == str(50_000 - 3_500)
        assert world.balance(provider.address) == 3_500
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()


def test_a_paid_call_on_an_open_channel_takes_three_commits(world: World) -> None:
    """LOCKED written together with the call's record and nonce, AUTHORIZED, and DELIVERED
    written together with the call's answer: nothing is acknowledged before it is durable,
    and nothing more is written on the way."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=100_000, deposit=50_000)
        assert client.invoke(f"{site}/weather", max_price=1_000).outcome == api.PAID  # opens
        writes: list[list[tuple[str, str]]] = []
        submit = vault.store._submit

        async def counting(statements):  # type: ignore[no-untyped-def]
            writes.append([(sql.split()[0], re.findall(r'"(\w+)"', sql)[0])
                           for sql, _ in statements])
            return await submit(statements)

        vault.store._submit = counting  # type: ignore[method-assign]
        paid = client.invoke(f"{site}/weather", max_price=1_000, idempotency_key="w-2")
        assert (paid.outcome, paid.amount) == (api.PAID, 1_000)
        checkpoint = [("UPDATE", "a402_vault_channels"), ("UPDATE", "a402_vault_requests")]
        # σ_U signed: the channel's log of paid calls gets its entry in the same commit.
        authorized = [("UPDATE", "a402_vault_channels"), ("INSERT", "a402_vault_consumed"),
                      ("UPDATE", "a402_vault_requests")]
        assert writes == [
            [("INSERT", "a402_vault_nonces"), ("INSERT", "a402_vault_requests"),
             ("UPDATE", "a402_vault_channels")],  # LOCKED, with the call's record
            authorized,  # AUTHORIZED
            checkpoint,  # DELIVERED, with the call's answer
        ]
        record = vault.store.request(f"{client.account.address.lower()}:w-2")
        assert record is not None and record.state == vault_store.DONE and record.secret is not None
        assert client.invoke(f"{site}/weather", max_price=1_000,
                             idempotency_key="w-2") == paid  # answered from that record
        client.close()


def test_a_call_whose_cached_price_went_up_is_recorded_once_and_paid_at_the_new_price(
    world: World,
) -> None:
    """The provider raised its price after the vault cached its offer. The EXEC at the old
    price is refused (``amount_mismatch``: no σ_U, δ released), the call asks for a fresh
    offer and pays the new price in the same ``/invoke``: its record was written once, by
    the first LOCKED checkpoint, and the second LOCKED does not claim it again."""
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=100_000, deposit=50_000)
        first = client.invoke(f"{site}/weather", max_price=2_000)  # opens; the offer is cached
        assert (first.outcome, first.amount) == (api.PAID, 1_000)
        table = provider.runtime.routes  # the middleware's table too: the 402 says 1 200
        table.__init__(tuple(  # type: ignore[misc]
            dataclasses.replace(r, amount=1_200) if r.pattern.text == "GET /weather" else r
            for r in table.routes))
        writes: list[list[tuple[str, str]]] = []
        submit = vault.store._submit

        async def counting(statements):  # type: ignore[no-untyped-def]
            writes.append([(sql.split()[0], re.findall(r'"(\w+)"', sql)[0])
                           for sql, _ in statements])
            return await submit(statements)

        vault.store._submit = counting  # type: ignore[method-assign]
        paid = client.invoke(f"{site}/weather", max_price=2_000, idempotency_key="w-2")
        vault.store._submit = submit  # type: ignore[method-assign]
        assert (paid.outcome, paid.amount) == (api.PAID, 1_200)
        assert provider.calls["weather"] == 2  # the refused EXEC ran nothing
        checkpoint = [("UPDATE", "a402_vault_channels"), ("UPDATE", "a402_vault_requests")]
        assert writes == [
            [("INSERT", "a402_vault_nonces"), ("INSERT", "a402_vault_requests"),
             ("UPDATE", "a402_vault_channels")],  # LOCKED at 1 000, with the call's record
            checkpoint,  # EXPIRED: refused at the old price, the call RELEASED
            checkpoint,  # LOCKED at 1 200: the call is recorded, not claimed again
            [("UPDATE", "a402_vault_channels"), ("INSERT", "a402_vault_consumed"),
             ("UPDATE", "a402_vault_requests")],  # AUTHORIZED, with the log's entry
            checkpoint,  # DELIVERED, with the call's answer
        ]
        [channel] = client.account_info()["channels"]
        closed = client.close_channel(channel["channelId"])
        assert (closed["clientPayout"], closed["providerPayout"]) == (
            str(int(channel["deposit"]) - 2_200), "2200")
        assert world.balance(provider.address) == 2_200
        assert client.account_info()["balance"] == str(50_000 - 2_200)
        assert_conserved(world, vault.store, vault.address, escrow)
        client.close()
