"""A metered ``upto`` gateway route whose upstream compresses its answer
(``Content-Encoding: gzip``, as most servers do for a client that sends
``Accept-Encoding: gzip``, which httpx and every browser do): the gateway forwards the
compressed bytes untouched, and the route's rule must still measure what the payer
receives once decoded. Measured on the compressed bytes, a ``per-event`` stream counted
no events and was delivered for nothing (no transaction), and a ``per-field`` answer was
unreadable (withheld: the provider could never be paid). Real HTTP, anvil, balances."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.metering import MAX_JSON_BODY, UsageUnreadable, parse_rule
from a402.provider import create_gateway
from a402.wire.headers import PAYMENT_RESPONSE, decode_settle_response
from tests.interop.official_upto import fresh_account, sdk_upto_client, upto_payer

FUNDS = 1_000_000
EVENTS = 12
PER_EVENT = 100  # 0.0001 with 6 decimals
TOKENS = 321
PER_TOKEN = 20  # 0.00002 with 6 decimals


def _compressed(request: Request, content: bytes, media: str) -> Response:
    """As a compressing server: brotli when the client accepts it (a coding the rule
    cannot decode; stood in for by a marker), else gzip when it accepts that."""
    if "br" in request.headers.get("accept-encoding", ""):
        return Response(b"BROTLI" + content, media_type=media,
                        headers={"content-encoding": "br"})
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(gzip.compress(content), media_type=media,
                        headers={"content-encoding": "gzip"})
    return Response(content, media_type=media)


def upstream() -> Starlette:
    async def events(request: Request) -> Response:
        stream = b"".join(b"data: {\"token\": %d}\n\n" % i for i in range(EVENTS))
        return _compressed(request, stream, "text/event-stream")

    async def chat(request: Request) -> Response:
        return _compressed(request, b'{"usage": {"total_tokens": %d}}' % TOKENS,
                           "application/json")

    return Starlette(routes=[Route("/events", events), Route("/chat", chat)])


@pytest.mark.anvil
@pytest.mark.anyio
async def test_a_compressed_upstream_answer_is_charged_what_it_decodes_to(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator_url: str,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = fresh_account()

    def balances() -> list[int]:
        return [token_balance(anvil_chain, dev_stack.token.address, who)
                for who in (payer.address, pay_to)]

    with serve_in_thread(upstream()) as origin:
        gateway = create_gateway(
            origin, [], meters=[
                "GET /events=upto:per-event:0.0001,max=0.01",
                "GET /chat=upto:per-field:usage.total_tokens:0.00002,max=0.05",
            ], pay_to=pay_to, token=dev_stack.token, network=dev_stack.network,
            facilitator_url=facilitator_url)
        with serve_in_thread(gateway) as base:
            async with sdk_upto_client(payer) as client:
                streamed = await client.get(f"{base}/events",
                                            headers={"accept-encoding": "gzip"})
                assert streamed.status_code == 200, streamed.text
                assert streamed.headers["content-encoding"] == "gzip"  # forwarded as is
                assert streamed.text.count("data:") == EVENTS
                receipt = decode_settle_response(streamed.headers[PAYMENT_RESPONSE])
                assert receipt.amount == str(EVENTS * PER_EVENT) and receipt.transaction
                assert balances() == [FUNDS - EVENTS * PER_EVENT, EVENTS * PER_EVENT]

                chat = await client.get(f"{base}/chat", headers={"accept-encoding": "gzip"})
                assert chat.status_code == 200, chat.text
                assert chat.json() == {"usage": {"total_tokens": TOKENS}}
                spent = EVENTS * PER_EVENT + TOKENS * PER_TOKEN
                assert balances() == [FUNDS - spent, spent]

                # A browser's Accept-Encoding (br first): the upstream is asked only for
                # codings the rule reads, so the answer is measured, not withheld.
                browser = await client.get(f"{base}/chat", headers={
                    "accept-encoding": "br, gzip;q=0.9, zstd"})
                assert browser.status_code == 200, browser.text
                assert browser.headers["content-encoding"] == "gzip"
                assert browser.json() == {"usage": {"total_tokens": TOKENS}}
                spent += TOKENS * PER_TOKEN
                assert balances() == [FUNDS - spent, spent]


def _sse(n: int) -> bytes:
    return b"".join(b"data: %d\n\n" % i for i in range(n))


def test_rules_read_decoded_bodies() -> None:
    events = parse_rule("per-event:1,max=1000000", 0)
    field = parse_rule("per-field:usage.n:1,max=1000000", 0)
    json_body = b'{"usage": {"n": 42}}'

    def enc(name: str) -> list[tuple[bytes, bytes]]:
        return [(b"content-encoding", name.encode())]

    assert events.charge(200, enc("gzip"), gzip.compress(_sse(7))) == 7
    assert events.charge(200, enc("x-gzip"), gzip.compress(_sse(7))) == 7
    assert events.charge(200, enc("deflate"), zlib.compress(_sse(5))) == 5
    raw = zlib.compressobj(wbits=-15)
    assert events.charge(200, enc("deflate"), raw.compress(_sse(4)) + raw.flush()) == 4
    assert events.charge(200, enc("identity"), _sse(3)) == 3
    assert events.charge(200, enc("gzip, gzip"), gzip.compress(gzip.compress(_sse(6)))) == 6
    assert field.charge(200, enc("GZIP"), gzip.compress(json_body)) == 42
    # What cannot be decoded is unreadable: withheld, nothing charged.
    with pytest.raises(UsageUnreadable, match="br"):
        field.charge(200, enc("br"), b"\x0b\x02\x80")
    with pytest.raises(UsageUnreadable, match="gzip"):
        field.charge(200, enc("gzip"), json_body)  # says gzip, is not
    with pytest.raises(UsageUnreadable, match="gzip"):
        events.charge(200, enc("gzip"), gzip.compress(_sse(3))[:-9])  # truncated
    # A small bomb decodes no further than the rule would read.
    bomb = gzip.compress(b" " * (MAX_JSON_BODY + 10))
    assert len(bomb) < 10_000
    with pytest.raises(UsageUnreadable, match="larger"):
        field.charge(200, enc("gzip"), bomb)
    # per-byte counts the bytes sent, as they were sent.
    per_byte = parse_rule("per-byte:1,max=1000000", 0)
    assert per_byte.charge(200, enc("gzip"), gzip.compress(_sse(100))) == \
        len(gzip.compress(_sse(100)))


def test_a_metered_request_asks_only_for_codings_the_rule_reads() -> None:
    from a402.metering import readable_request

    def ask(value: bytes) -> bytes:
        return dict(readable_request([(b"host", b"x"), (b"Accept-Encoding", value)]))[
            b"accept-encoding"]

    assert ask(b"br, gzip;q=0.9, zstd") == b"gzip;q=0.9"
    assert ask(b"gzip, deflate, br, zstd") == b"gzip, deflate"
    assert ask(b"br") == b"identity"
    assert ask(b"*") == b"identity"
    # None given: the proxy's HTTP client would add its own (br too, with brotli).
    assert readable_request([(b"host", b"x")]) == [(b"host", b"x"),
                                                   (b"accept-encoding", b"identity")]
