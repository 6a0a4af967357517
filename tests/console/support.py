"""A service for console tests: a tiny app behind :class:`Console`, whose records the
test writes directly (hostile strings included)."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from a402.console import Console, ConsoleData, Table, token_check

TOKEN = "operator-token-for-tests-0123456789"
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>&amp;"\''


async def _service(_: Request) -> PlainTextResponse:
    return PlainTextResponse("the service itself")


inner = Starlette(routes=[Route("/{rest:path}", _service, methods=["GET", "POST"])])


class Records:
    """The payments a fake service reports, newest first."""

    def __init__(self) -> None:
        self.payments: list[dict[str, Any]] = []

    def add(self, payer: str, amount: int, tx: str, latency_ms: float = 12.5) -> None:
        self.payments.insert(0, {
            "source": "test", "id": f"req-{len(self.payments)}", "time": time.time(),
            "payer": payer, "payee": "0x" + "22" * 20, "amount": str(amount),
            "scheme": "exact", "status": "settled", "transaction": tx,
            "latencyMs": latency_ms})

    async def read(self) -> ConsoleData:
        return ConsoleData(payments=list(self.payments), tables=[Table(
            "Channels", ("channel", "state"), [("0xc1", "OPEN"), (HOSTILE, "LOCKED")])])


def console(records: Records) -> Console:
    return Console(inner, service="test", check_token=token_check(TOKEN), read=records.read)
