"""A paid stream whose service compresses (``Content-Encoding: gzip``, as an upstream
does for the ``Accept-Encoding: gzip`` the gateway's proxy, or the caller, sends): units
are cut from the bytes as they come, and compressed bytes have no event boundaries, so
the whole stream went out as one or two "units": the first group, charged for the events
it could count in compressed bytes (none), carried everything. A stream asks its service
for an unencoded answer, and refuses one that is encoded anyway (nothing charged).
Real vault, provider enclave, anvil; balances after the channel settles."""

from __future__ import annotations

import zlib

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from a402.background import serve_in_thread
from a402.client.vault_stream import StreamEnd, paid_stream
from tests.a402_exchange.helpers import World

from .helpers import client_of, running_vault
from .test_paid_stream import GROUP, PER_GROUP, RATE, ROUTES, _settle, _tokens

pytestmark = pytest.mark.anvil

TOKENS = 200


def compressing_llm(always: bool = False) -> ASGIApp:
    """``POST /llm/stream``: 200 tokens as server-sent events, gzip-compressed as they go
    when the request accepts gzip (or ``always``: a service that ignores what it is told)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        accepted = dict(scope["headers"]).get(b"accept-encoding", b"")
        gzip = always or b"gzip" in accepted
        headers = [(b"content-type", b"text/event-stream")]
        if gzip:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        for i in range(TOKENS):
            event = f"data: tok{i}\n\n".encode()
            chunk = packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH) if gzip else event
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": packer.flush() if gzip else b"",
                    "more_body": False})

    return app


def test_a_compressing_service_is_streamed_and_paid_group_by_group(world: World) -> None:
    provider = world.provider(routes=ROUTES, service=compressing_llm())
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, end=end,
                                  headers=[(b"accept-encoding", b"gzip, deflate")]))
        assert [len(_tokens(g.content)) for g in groups] == [GROUP] * (TOKENS // GROUP)
        assert all(g.amount == PER_GROUP for g in groups)
        assert (end.groups, end.paid) == (TOKENS // GROUP, TOKENS * RATE)
        _settle(world, client, vault, provider, escrow, TOKENS * RATE)
        client.close()


def test_a_stream_its_service_encodes_anyway_is_refused_with_nothing_paid(
    world: World,
) -> None:
    provider = world.provider(routes=ROUTES, service=compressing_llm(always=True))
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        _, client = client_of(world, vault, funds=200_000, deposit=200_000)
        end = StreamEnd()
        groups = list(paid_stream(client, f"{site}/llm/stream", method="POST", group=GROUP,
                                  max_price=PER_GROUP, end=end))
        # Refused by the provider (stream_encoded, 502): the vault pays nothing for it.
        assert groups == []
        assert (end.reason, end.groups, end.paid) == ("service_failed", 0, 0)
        assert client.account_info()["paid"] == "0"
        client.close()
