"""A paid stream's request headers, hostile: every bad ``A402-Stream-Group`` is a 400
StreamError (the enclave charges nothing for it), never another exception."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Receive, Scope, Send

from a402.provider.a402_streams import (
    END_HEADER,
    FAILED_HEADER,
    MAX_GROUP,
    STREAM_HEADER,
    StreamError,
    StreamTable,
    group_size,
)
from a402.wire.a402 import HttpResponse


@pytest.mark.parametrize("value", [b"\xb2", b"1\xb9", b"\xb3", b"0", b"-1", b"+5", b"1e3",
                                   b"", b" ", b"9" * 40, str(MAX_GROUP + 1).encode(),
                                   "\u0665".encode(), b"\x00"])
def test_a_bad_stream_group_is_refused_as_bad_stream_group(value: bytes) -> None:
    with pytest.raises(StreamError) as refused:
        group_size([(b"a402-stream-group", value)])
    assert (refused.value.status, refused.value.reason) == (400, "bad_stream_group")


def test_a_good_stream_group_is_read() -> None:
    assert group_size([(b"A402-Stream-Group", b" 50 ")]) == 50
    assert group_size([(b"a402-stream-group", str(MAX_GROUP).encode())]) == MAX_GROUP
    assert group_size([(b"other", b"1")]) is None


def test_a_services_own_stream_headers_are_dropped_and_a_cut_short_group_says_so() -> None:
    """A service that sends ``A402-Stream-End: 1`` (or any ``A402-Stream*``) cannot end or
    rename the stream at the client: only the host's headers go out. A service that fails
    mid-stream: its last group carries ``A402-Stream-Failed`` with ``A402-Stream-End: 1``."""

    async def service(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"A402-Stream-End", b"1"),
            (b"a402-stream", b"forged"), (b"a402-stream-failed", b"forged"), (b"x-kept", b"1")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i,
                        "more_body": True})
        raise RuntimeError("upstream died")

    async def run() -> list[HttpResponse]:
        table = StreamTable(clock=time.monotonic)
        scope = {"type": "http", "method": "POST", "path": "/s", "headers": []}
        first = await table.open(b"c" * 32, 2, service, scope, b"")
        sid = next(v for k, v in first.headers if k == STREAM_HEADER).decode()
        second = await table.next(b"c" * 32, sid)
        table.close()
        return [first, second]

    first, second = asyncio.run(run())
    for response, end in ((first, b"0"), (second, b"1")):
        names = [k.lower() for k, _ in response.headers]
        assert names.count(END_HEADER) == names.count(STREAM_HEADER) == 1
        assert (END_HEADER, end) in response.headers and (b"x-kept", b"1") in response.headers
        assert b"forged" not in [v for _, v in response.headers]
    assert FAILED_HEADER not in [k for k, _ in first.headers]
    assert (FAILED_HEADER, b"service_error: RuntimeError") in second.headers
    assert second.body == b"data: 2\n\n"
