"""Behind ``a402 gateway``, what the vault decrypts is byte for byte what the upstream sent.

Issue 12: "A provider behind ``a402 gateway`` hashes and seals exactly the bytes
the upstream returned: what the vault decrypts is what was paid for." The path
is upstream → the gateway's reverse proxy (raw bytes, never content-decoded)
→ the executor (buffered, joined) → the enclave's ``executed`` (hashes and
seals the result) → REPLY/REVEAL → the vault opens it and checks the hash.
Bodies a JSON round trip would change (whitespace, number spelling, key
order), bytes that are not text, a gzip body the proxy must not inflate, and
a body sent in several chunks: each arrives exactly, and is paid exactly.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from a402.background import serve_in_thread
from a402.provider import create_gateway
from a402.wire.a402 import HttpRequest

from .helpers import DEPOSIT, PRICE, World

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

#: path → (content-type, content-encoding or None, the body's chunks as the upstream sends them)
UPSTREAM: dict[str, tuple[bytes, bytes | None, list[bytes]]] = {
    "/bytes/json": (b"application/json", None,
                    [b'{ "weather" :  "sunny",\n', b'\t"n": 1.0e0, "a": "\\u00e9" }\r\n  ']),
    "/bytes/binary": (b"application/octet-stream", None,
                      [bytes(range(256)), b"\xff\xfe\x00\x00", bytes(range(255, -1, -1))]),
    "/bytes/gzip": (b"text/plain; charset=utf-8", b"gzip", [gzip.compress(b"sunny " * 500)]),
}


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI service: exactly these bytes, in these chunks, no framework in between."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    content_type, encoding, chunks = UPSTREAM[scope["path"]]
    headers = [(b"content-type", content_type)]
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_the_vault_decrypts_exactly_the_bytes_the_upstream_returned(world: World) -> None:
    vault, client = world.vault(), world.client()
    template = world.provider()  # for its config: enclave, operator, store
    assert json.dumps(json.loads(b"".join(UPSTREAM["/bytes/json"][2]))).encode() != \
        b"".join(UPSTREAM["/bytes/json"][2])  # JSON would normalise this body
    with serve_in_thread(upstream) as upstream_url:
        gateway = create_gateway(
            upstream_url, ["GET /bytes/*=0.001"], pay_to=template.address,
            token=world.token_info, network=world.chain.network,
            facilitator_url="http://127.0.0.1:9", a402=template.config,
        )
        with serve_in_thread(gateway) as url:
            async with world.tunnel(vault, url) as tunnel:
                channel = await world.open_channel(tunnel, vault, client)
                paid = {path: await tunnel.request(channel, HttpRequest("GET", path), PRICE)
                        for path in UPSTREAM}
                before = world.balances(client.address, template.address)
                signed = await tunnel.close(channel)
                world.manager.close(vault.account, channel.terms, signed)

    for path, (content_type, encoding, chunks) in UPSTREAM.items():
        response = paid[path].response
        assert response.status == 200
        assert response.body == b"".join(chunks), path  # not re-encoded, not inflated
        headers = dict(response.headers)
        assert headers[b"content-type"] == content_type
        assert headers.get(b"content-encoding") == encoding
    assert gzip.decompress(paid["/bytes/gzip"].response.body) == b"sunny " * 500
    # Each exact result was paid for once, and the chain pays exactly that.
    assert channel.provider_balance == len(UPSTREAM) * PRICE
    after = world.balances(client.address, template.address)
    assert (after[0] - before[0], after[1] - before[1]) == (
        DEPOSIT - len(UPSTREAM) * PRICE, len(UPSTREAM) * PRICE)
