"""The README's path, through the real ``a402`` executables: a devnet, a facilitator,
a gateway in front of an unmodified API, and ``a402 pay`` paying for one request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import connect, free_port

A402 = str(Path(sys.executable).with_name("a402"))


@contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([A402, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up")


def key_file(path: Path, key: str) -> str:
    path.write_text(key + "\n")
    path.chmod(0o600)
    return str(path)


def upstream_api() -> Starlette:
    async def quote(_: object) -> JSONResponse:
        return JSONResponse({"quote": "the map is not the territory"})

    async def free(_: object) -> JSONResponse:
        return JSONResponse({"free": True})

    return Starlette(routes=[Route("/quote", quote), Route("/free", free)])


@pytest.mark.anvil
def test_devnet_facilitator_gateway_and_pay_from_the_command_line(tmp_path: Path) -> None:
    manifest_path = tmp_path / "devnet.json"
    # Each port is reserved right before its server binds it, and after every in-process
    # server (which binds port 0) is up: no server can take a port reserved for another.
    chain_port = free_port()
    with running("devnet", "--port", str(chain_port), "--manifest-out", str(manifest_path)):
        wait_until(manifest_path.exists, "devnet")
        manifest = Manifest.load(manifest_path)
        assert manifest.network == "eip155:31337" and manifest.rpc_url
        assert os.stat(manifest_path).st_mode & 0o077 == 0

        facilitator_key = str(tmp_path / "facilitator.key")  # written by devnet
        assert Path(facilitator_key).read_text().strip() == (
            manifest.account("facilitator").private_key)
        facilitator_port = free_port()
        with running("facilitator", "--rpc", manifest.rpc_url, "--network", manifest.network,
                     "--key-file", facilitator_key, "--db", f"sqlite:///{tmp_path}/j.db",
                     "--port", str(facilitator_port)):
            facilitator = f"http://127.0.0.1:{facilitator_port}"
            wait_until(lambda: httpx.get(f"{facilitator}/healthz").status_code == 200,
                       "facilitator")
            with serve_in_thread(upstream_api()) as upstream:
                gateway_port = free_port()
                with running(
                    "gateway", "--upstream", upstream, "--route", "GET /quote=0.25",
                    "--manifest", str(manifest_path), "--facilitator", facilitator,
                    "--port", str(gateway_port),
                ):
                    gateway = f"http://127.0.0.1:{gateway_port}"
                    wait_until(lambda: httpx.get(f"{gateway}/free").status_code == 200, "gateway")
                    assert httpx.get(f"{gateway}/quote").status_code == 402

                    client = manifest.account("client")
                    chain = connect(manifest.rpc_url)
                    token = manifest.token.address
                    provider = manifest.account("provider").address
                    before = [token_balance(chain, token, a) for a in (client.address, provider)]
                    paid = subprocess.run(
                        [A402, "pay", f"{gateway}/quote",
                         "--key-file", str(tmp_path / "client.key"), "--max", "0.5"],
                        capture_output=True, text=True, timeout=60,
                    )
                    after = [token_balance(chain, token, a) for a in (client.address, provider)]

    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout) == {"quote": "the map is not the territory"}
    receipt = json.loads(paid.stderr.strip().splitlines()[-1])
    assert receipt["success"] is True and receipt["transaction"].startswith("0x")
    assert after == [before[0] - 250_000, before[1] + 250_000]


def test_pay_refuses_a_price_above_the_maximum_and_signs_nothing(tmp_path: Path) -> None:
    """Against a gateway-less server that asks too much: exit code 3, no payment made."""
    async def pricey(_: object) -> JSONResponse:
        from a402.wire.headers import encode_header
        from a402.wire.x402 import PaymentRequired, PaymentRequirements, ResourceInfo

        offer = PaymentRequirements(
            scheme="exact", network="eip155:31337", amount="5000000",
            asset="0x" + "11" * 20, pay_to="0x" + "22" * 20, max_timeout_seconds=60,
            extra={"name": "USD Coin", "version": "2"})
        required = PaymentRequired(resource=ResourceInfo(url="http://x/"), accepts=[offer])
        return JSONResponse({}, status_code=402,
                            headers={"PAYMENT-REQUIRED": encode_header(required)})

    with serve_in_thread(Starlette(routes=[Route("/", pricey)])) as url:
        paid = subprocess.run(
            [A402, "pay", url + "/", "--key-file", key_file(tmp_path / "k", "0x" + "01" * 32),
             "--max", "0.01"], capture_output=True, text=True, timeout=60)
    assert paid.returncode == 3
    assert "price_above_maximum" in paid.stderr
