"""Atomic pay-per-group streaming through the vault (issue 16, part 3), end to end on anvil.

An LLM-style service streams 1,000 tokens as server-sent events; the route is metered
per event (10 atomic units a token, at most one group of 50: 500). Each group of 50 is
one signed call of the client and one exchange in the channel. Balances are asserted in
the vault's ledger and on-chain after the channel settles."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from starlette.types import ASGIApp, Receive, Scope, Send

from a402.background import serve_in_thread
from a402.chain.tx import deploy_contract
from a402.client import vault_stream
from a402.client.pay import pay_main
from a402.client.vault_stream import StreamEnd, paid_stream
from a402.crypto import EcdsaSigner
from a402.mandate import Domain, Mandate, sign_mandate
from a402.mandate.registry import MandateRegistry
from a402.metering import parse_rule
from a402.provider.routes import RouteConfig
from a402.vault import store as vault_store
from tests.a402_exchange.helpers import World

from .helpers import assert_conserved, client_of, key_file, running_vault, vault_flags

pytestmark = pytest.mark.anvil

TOKENS = 1_000
GROUP = 50
RATE = 10  # atomic units a token
PER_GROUP = GROUP * RATE
RULE = parse_rule("per-event:0.00001,max=0.0005", 6)
ROUTES = {"POST /llm/stream": RouteConfig(price=RULE.maximum, meter=RULE)}


@dataclass
class Upstream:
    """What the streaming handler did: tokens produced, and whether it was told to stop."""

    produced: int = 0
    closed: bool = False
    finished: bool = False
    fail_after: int | None = None
    events: list[str] = field(default_factory=list)


def llm_service(upstream: Upstream) -> ASGIApp:
    """``POST /llm/stream``: 1,000 tokens as server-sent events, one ``send`` each (a raw
    ASGI app, so that being cancelled — told to stop — shows at the ``send`` it waits in)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(TOKENS):
                if upstream.fail_after is not None and i == upstream.fail_after:
                    raise RuntimeError("the model's connection died")
                upstream.produced += 1
                await send({"type": "http.response.body", "body": f"data: tok{i}\n\n".encode(),
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            upstream.finished = True
        finally:
            upstream.closed = True

    return app


def pay_stream(world: World, vault, site: str, account, folder: Path,  # type: ignore[no-untyped-def]
               *flags: str) -> tuple[int, bytes, str]:
    """``a402 pay --vault --stream GROUP --max 0.0005 FLAGS`` of the LLM stream: its exit
    code, stdout and stderr."""
    out, err = io.BytesIO(), io.StringIO()
    code = pay_main([f"{site}/llm/stream", "-X", "POST", "--key-file",
                     str(key_file(folder, account)), "--vault", vault.url,
                     *vault_flags(world, vault), "--stream", str(GROUP), "--max", "0.0005",
                     *flags], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _tokens(content: bytes) -> list[str]:
    return [line[6:] for line in content.decode().split("\n") if line.startswith("data: ")]


def _settle(world: World, client, vault, provider, escrow: int, paid: int) -> None:  # type: ignore[no-untyped-def]
    """Close every channel of the client: the chain pays the provider exactly ``paid``."""
    view = client.account_info()
    assert view["paid"] == str(paid)
    before = world.balance(provider.address)
    for channel in view["channels"]:
        assert client.close_channel(channel["channelId"])["phase"] == vault_store.SETTLED
    assert world.balance(provider.address) - before == paid
    assert client.account_info()["balance"] == str(200_000 - paid)
    assert_conserved(world, vault.store, vault.address, escrow)


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_streamed_llm_response_is_paid_group_by_group_exactly_for_what_arrived(
    world: World,
) -> None:
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, end=end))
        assert [len(_tokens(g.content)) for g in groups] == [GROUP] * (TOKENS // GROUP)
        assert [t for g in groups for t in _tokens(g.content)] == [
            f"tok{i}" for i in range(TOKENS)]
        assert all(g.amount == PER_GROUP for g in groups) and groups[-1].last
        assert (end.reason, end.groups, end.paid) == ("end", 20, TOKENS * RATE)
        assert end.complete and end.message().endswith("the whole stream arrived")
        assert upstream.finished and len(provider.runtime.driver.executor.streams) == 0
        # one channel carried every group: 20 exchanges
        assert len(client.account_info()["channels"]) == 1
        _settle(world, client, vault, provider, escrow, TOKENS * RATE)
        client.close()


def test_a_client_killed_mid_stream_paid_only_for_groups_received_and_the_upstream_closes(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client dies after 7 groups without a word (no stop): it paid 7 × 500; the
    provider read at most one group ahead, and its idle timer closes the upstream."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    provider.runtime.driver.executor.streams.idle = 1.0
    monkeypatch.setattr(vault_stream, "stop", lambda *a, **k: None)  # a dead client says nothing
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        stream = paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                             max_price=PER_GROUP)
        received = [next(stream) for _ in range(7)]
        stream.close()
        assert sum(g.amount for g in received) == 7 * PER_GROUP
        _wait(lambda: upstream.closed)
        assert not upstream.finished
        assert upstream.produced <= 8 * GROUP + 3  # one group read ahead, never delivered
        _settle(world, client, vault, provider, escrow, 7 * PER_GROUP)
        client.close()


def test_the_upstream_dying_mid_stream_charges_only_the_tokens_delivered(
    world: World,
) -> None:
    """The provider's side of the stream dies after 430 tokens: the last group holds the 30
    that came and costs 300 (per event); nothing more is sold; balances settle exactly."""
    upstream = Upstream(fail_after=430)
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, end=end))
        delivered = [t for g in groups for t in _tokens(g.content)]
        assert delivered == [f"tok{i}" for i in range(430)]
        assert end.paid == 430 * RATE and groups[-1].amount == 30 * RATE
        # the last group says the response was cut short: not a complete stream
        assert groups[-1].last and not end.complete
        assert (end.reason, end.detail) == ("service_failed", "service_error: RuntimeError")
        assert "the provider's service failed" in end.message()
        _settle(world, client, vault, provider, escrow, 430 * RATE)
        client.close()


def test_a_provider_restart_mid_stream_is_reported_truthfully_and_nothing_more_is_paid(
    world: World, tmp_path: Path,
) -> None:
    """The provider loses its open streams after 3 groups (what a restart does: they are
    host memory). ``a402 pay --vault --stream`` exits 1 and says first what was paid
    (1,500 for the 3 groups received), then that the stream was lost and the next group
    refused unpaid; the channel settles exactly 1,500 on-chain."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    streams = provider.runtime.driver.executor.streams
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        account, client = client_of(world, vault, funds=200_000, deposit=200_000)
        out = _LoseStreamsAfter(3 * GROUP, streams)
        err = io.StringIO()
        code = pay_main([f"{site}/llm/stream", "-X", "POST", "--key-file",
                         str(key_file(tmp_path, account)), "--vault", vault.url,
                         *vault_flags(world, vault), "--stream", str(GROUP), "--max", "0.0005"],
                        stdout=out, stderr=err)
        assert code == 1, err.getvalue()
        assert _tokens(out.getvalue()) == [f"tok{i}" for i in range(3 * GROUP)]
        text = err.getvalue()
        first = next(line for line in text.splitlines() if line.startswith("a402 pay:"))
        assert first.startswith(f"a402 pay: {3 * PER_GROUP} (atomic units) paid for the 3 "
                                "groups received, each paid only with its delivery; the stream "
                                "did not reach its end: the provider no longer has this stream")
        summary = json.loads(text.splitlines()[-1])
        assert (summary["success"], summary["groups"], summary["paid"], summary["reason"],
                summary["complete"]) == (False, 3, str(3 * PER_GROUP), "stream_lost", False)
        _settle(world, client, vault, provider, escrow, 3 * PER_GROUP)
        client.close()


class _LoseStreamsAfter(io.BytesIO):
    """stdout that, once ``after`` tokens were written, makes the provider lose its streams
    (as a restart would), from the provider's own event loop."""

    def __init__(self, after: int, streams) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.after, self.streams, self.lost = after, streams, False

    def flush(self) -> None:
        super().flush()
        if not self.lost and len(_tokens(self.getvalue())) >= self.after:
            self.lost = True
            loop = self.streams._reaper.get_loop()
            asyncio.run_coroutine_threadsafe(_close(self.streams), loop).result(5)


async def _close(streams) -> None:  # type: ignore[no-untyped-def]
    streams.close()


def test_the_stream_stops_cleanly_at_the_clients_maximum_and_the_provider_is_told(
    world: World,
) -> None:
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, max_total=2_200, end=end))
        assert (len(groups), end.paid, end.reason) == (4, 4 * PER_GROUP, "max_total")
        _wait(lambda: upstream.closed, timeout=5.0)  # told to stop: no idle wait
        assert not upstream.finished
        assert len(provider.runtime.driver.executor.streams) == 0
        _settle(world, client, vault, provider, escrow, 4 * PER_GROUP)
        client.close()


def test_a402_pay_vault_stream_prints_each_group_and_stops_at_max_total(
    world: World, tmp_path: Path,
) -> None:
    """``a402 pay --vault --stream 50 --max 0.0005 --max-total 0.0015``: three groups on
    stdout (150 tokens), one JSON line each and a summary on stderr, 1,500 paid."""
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        account, client = client_of(world, vault, funds=200_000, deposit=200_000)
        code, out, err = pay_stream(world, vault, site, account, tmp_path,
                                    "--max-total", "0.0015")
        assert code == 0, err
        assert _tokens(out) == [f"tok{i}" for i in range(3 * GROUP)]
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert [line.get("group") for line in lines[:3]] == [1, 2, 3]
        summary = lines[-1]
        message = summary.pop("message")
        assert message.startswith(f"{3 * PER_GROUP} (atomic units) paid for the "
                                  "3 groups received")
        assert "more than --max-total allowed" in message, message
        # Each group paid is in the payer's local records (a402 payments), as any call.
        from a402.client.history import history_path, read_history
        mine = [r for r in read_history(history_path()) if r.get("url") == f"{site}/llm/stream"]
        assert [(r["amount"], r["status"], r["scheme"]) for r in mine] == \
            [(str(PER_GROUP), "paid", "a402")] * 3
        assert summary == {"success": True, "outcome": "stream", "groups": 3,
                           "paid": str(3 * PER_GROUP), "reason": "max_total",
                           "complete": False}
        _wait(lambda: upstream.closed, timeout=5.0)
        _settle(world, client, vault, provider, escrow, 3 * PER_GROUP)
        client.close()


def test_the_stream_stops_cleanly_at_the_owners_mandate(world: World) -> None:
    """A mandate with a budget of 1,750: three groups of 500 are paid, the fourth is
    refused by the vault's enclave (nothing reserved or paid), the stream ends with that
    reason and the provider is told to stop."""
    chain = world.chain
    registry = MandateRegistry(chain, deploy_contract(chain, chain.accounts[0],
                                                      "MandateRegistry").address)
    owner = Account.create()
    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        agent, client = client_of(world, vault, funds=200_000, deposit=200_000)
        now = int(time.time())
        client.mandate = sign_mandate(Mandate(
            owner=owner.address, agent=agent.address, max_per_payment=PER_GROUP,
            budget=3 * PER_GROUP + 250, valid_after=now - 60, valid_before=now + 3600,
            nonce=os.urandom(32), networks=(chain.network,), assets=(world.token.address,),
            schemes=("a402",)), Domain(chain.chain_id, registry.address),
            EcdsaSigner(bytes(owner.key)).sign_digest).to_json()
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, end=end))
        assert len(groups) == 3 and end.paid == 3 * PER_GROUP
        assert end.reason.startswith("mandate_"), end.reason
        _wait(lambda: upstream.closed, timeout=5.0)
        client.mandate = None
        _settle(world, client, vault, provider, escrow, 3 * PER_GROUP)
        client.close()


def test_a_streams_next_group_cannot_be_bought_at_a_cheaper_routes_price(
    world: World,
) -> None:
    """The stream was opened on ``POST /llm/stream`` (5,000 a group); its next group asked
    on the same channel through ``GET /cheap`` (1 unit) is refused (nothing paid), not
    sold at the cheap route's price: a stream is bound to its route as well as its channel."""
    expensive = 5_000
    routes = {"POST /llm/stream": RouteConfig(price=expensive),
              "GET /cheap": RouteConfig(price=1)}
    upstream = Upstream()
    provider = world.provider(routes=routes, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        first = client.invoke(f"{site}/llm/stream", method="POST",
                              headers=[(b"a402-stream-group", str(GROUP).encode())],
                              max_price=expensive)
        assert first.amount == expensive and len(_tokens(first.content)) == GROUP
        sid = dict(first.headers)[b"a402-stream"]
        cheap = client.invoke(f"{site}/cheap", method="GET",
                              headers=[(b"a402-stream", sid)], max_price=1)
        assert cheap.amount == 0 and _tokens(cheap.content) == [], (
            f"group sold for {cheap.amount}: {_tokens(cheap.content)[:3]}…")
        # the stream's next group is still sold on its own route, at its price
        second = client.invoke(f"{site}/llm/stream", method="POST",
                               headers=[(b"a402-stream", sid)], max_price=expensive)
        assert second.amount == expensive
        assert _tokens(second.content) == [f"tok{i}" for i in range(GROUP, 2 * GROUP)]
        _settle(world, client, vault, provider, escrow, 2 * expensive)
        client.close()


def test_a_route_metered_by_a_whole_response_report_is_not_sold_as_a_stream(
    world: World,
) -> None:
    """A ``per-unit`` route's handler reports the whole response's units in a header once;
    every group would repeat that header and be charged the whole report again (4 groups
    of 50 lines, each billed 200 units). Such a route (and ``per-field``, whose group is
    no JSON document) refuses a stream: nothing is paid, and a plain call still pays its
    report once."""
    rule = parse_rule("per-unit:0.00001,max=0.005", 6)
    routes = {"POST /llm/stream": RouteConfig(price=rule.maximum, meter=rule)}

    async def reported(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"a402-units", b"200")]})
        for i in range(200):
            await send({"type": "http.response.body", "body": f"line {i}\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    provider = world.provider(routes=routes, service=reported)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=rule.maximum, end=end))
        assert end.paid == 0 and groups == [], (end, [g.amount for g in groups])
        assert len(provider.runtime.driver.executor.streams) == 0
        whole = client.invoke(f"{site}/llm/stream", method="POST", max_price=rule.maximum)
        assert whole.amount == 200 * 10 and whole.content.count(b"\n") == 200
        _settle(world, client, vault, provider, escrow, 200 * 10)
        client.close()
