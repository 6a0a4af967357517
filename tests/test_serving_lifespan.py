"""A service whose lifespan fails before it answers startup does not serve.

Under uvicorn's default ``lifespan="auto"`` an exception raised while the app waits for
the startup message (as ``a402 mcp serve --a402`` raised when its channel watcher could
not restore its channels) is taken for an app without a lifespan: the server listened
and answered every call 500, its upstream never connected. :func:`a402.serving.run`
runs the lifespan "on", so such a start exits 3 and a supervisor sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

APP = """
import sys
from a402.serving import run

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        async def failing():
            await receive()
            raise RuntimeError("the channel watcher cannot start")
        await failing()
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"serving unstarted"})

run(app, host="127.0.0.1", port=int(sys.argv[1]))
"""


def test_a_lifespan_that_raises_before_startup_stops_the_service(
        reserve_port: Callable[[], int]) -> None:
    run = subprocess.run([sys.executable, "-c", APP, str(reserve_port())],
                         env={**os.environ, "PYTHONPATH": SRC}, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    assert "the channel watcher cannot start" in run.stderr
