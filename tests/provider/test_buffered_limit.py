"""The buffering bound (:data:`a402.provider.asgi.MAX_BUFFERED_BODY`) on the A402 channel
path: a service streaming far more than the limit is cut off as it streams, and the
executor reports ``response_too_large`` (the enclave is told ``failed``: nothing charged);
an app that swallows the cut-off is refused all the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from a402.provider.a402_execute import Executor, ServiceFailed
from a402.provider.asgi import ResponseTooLarge, run_buffered
from a402.provider_enclave import Execute
from a402.wire.a402 import HttpRequest, HttpResponse

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024


def _service(produced: list[int]) -> Starlette:
    async def endless(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            while True:  # never ends: only the bound (or, failing it, the budget) stops it
                produced.append(4096)
                await asyncio.sleep(0)
                yield b"x" * 4096

        return StreamingResponse(chunks())

    async def small(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/endless", endless), Route("/small", small)])


async def test_the_executor_cuts_off_an_endless_answer_and_charges_nothing() -> None:
    produced: list[int] = []
    executor = Executor(_service(produced), budget=3.0)
    executor.max_body = LIMIT
    failed = await executor.run(Execute(b"\x01" * 32, 1, HttpRequest("GET", "/endless")))
    assert isinstance(failed, ServiceFailed)
    assert failed.reason == "response_too_large" and str(LIMIT) in failed.detail
    assert LIMIT < sum(produced) <= LIMIT + 2 * 4096  # stopped as it came, not at the budget
    answered = await executor.run(Execute(b"\x01" * 32, 2, HttpRequest("GET", "/small")))
    assert isinstance(answered, HttpResponse) and answered.body == b"ok"


async def test_an_app_that_swallows_the_cut_off_is_refused_all_the_same() -> None:
    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for more in [True] * 10 + [False]:  # swallows every refusal, then returns
            with contextlib.suppress(ResponseTooLarge):
                await send({"type": "http.response.body", "body": b"x" * LIMIT * more,
                            "more_body": more})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    with pytest.raises(ResponseTooLarge):
        await run_buffered(stubborn, {"type": "http", "headers": []}, receive, limit=LIMIT)
