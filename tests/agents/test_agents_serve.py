"""``a402 agents serve``: the real command, in its own process, registers a paid agent
on-chain, serves it in front of an upstream HTTP endpoint or a Python function, and a
paying A2A client that discovers it on-chain pays exactly the price, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from a402.agents.a2a_client import A2APaymentFailed, PayingAgentClient, discover
from a402.agents.onchain import FactoryCardSource
from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.cli import main
from a402.client import token_units_max

from .onchain_helpers import fresh_account

pytestmark = pytest.mark.anvil

ROOT = Path(__file__).resolve().parents[2]
PRICE, PRICE_ATOMIC = "0.002", 2_000


@pytest.fixture(scope="module")
def manifest_path(dev_stack: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agents-serve") / "devnet.json"
    path.write_text(dev_stack.to_json())
    path.chmod(0o600)
    assert main(["agents", "deploy", "--manifest", str(path)]) == 0
    return path


class Served:
    """``a402 agents serve`` in a child process; its stderr read in the background."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        threading.Thread(target=self._read, args=(proc.stderr,), daemon=True).start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def started(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith("{") and '"a2a"' in line:
                    info: dict[str, Any] = json.loads(line)
                    try:
                        httpx.get(info["card"], timeout=1.0)
                        return info
                    except httpx.HTTPError:
                        pass
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {''.join(self.lines)}")
            time.sleep(0.1)
        raise TimeoutError("".join(self.lines))


@contextmanager
def agents_serve(*args: str, cwd: Path | None = None) -> Iterator[Served]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", "a402.cli", "agents", "serve", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    try:
        yield Served(proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def key_file(tmp_path: Path, account: LocalAccount) -> str:
    path = tmp_path / "owner.key"
    path.write_text(account.key.hex())
    path.chmod(0o600)
    return str(path)


def pay_one_task(agent_id: str, source: FactoryCardSource, payer: LocalAccount,
                 text: str) -> Any:
    async def run() -> Any:
        agent = await discover(agent_id, source)  # the served card must equal the chain's
        async with PayingAgentClient(payer.key,
                                     max_per_request=token_units_max("0.05")) as client:
            return await client.send(agent, text)

    return anyio.run(run)


def test_serve_registers_an_agent_in_front_of_an_upstream_and_one_paid_task_pays_the_price(
    anvil_chain: Chain, dev_stack: Manifest, manifest_path: Path, facilitator_url: str,
    new_payer: Callable[..., LocalAccount], tmp_path: Path, reserve_port: Callable[[], int],
) -> None:
    received: list[str] = []

    async def upper(request: Request) -> PlainTextResponse:
        received.append((await request.body()).decode())
        return PlainTextResponse(received[-1].upper())

    owner = fresh_account(anvil_chain)
    payee = Account.create().address
    payer = new_payer(1_000_000)
    token = dev_stack.token.address
    upstream = Starlette(routes=[Route("/upper", upper, methods=["POST"])])
    with serve_in_thread(upstream) as up, agents_serve(
        "--manifest", str(manifest_path), "--upstream", f"{up}/upper", "--name", "Upper",
        "--description", "Upper-cases text.", "--price", PRICE, "--pay-to", payee,
        "--facilitator", facilitator_url, "--port", str(reserve_port()), "--register",
        "--key-file", key_file(tmp_path, owner),
    ) as served:
        info = served.started()
        assert info["priceAtomic"] == str(PRICE_ATOMIC) and info["payTo"] == payee
        source = FactoryCardSource(anvil_chain, Manifest.load(manifest_path)
                                   .contracts["AgentFactory"])
        assert source.factory.is_agent(info["agent"])
        result = pay_one_task(info["agent"], source, payer, "hello there")

    assert result.text == "HELLO THERE"
    assert received == ["hello there"]  # the upstream got the task's text, once
    assert result.receipt is not None and result.receipt.success
    assert token_balance(anvil_chain, token, payee) == PRICE_ATOMIC
    assert token_balance(anvil_chain, token, payer.address) == 1_000_000 - PRICE_ATOMIC


def test_serve_runs_a_python_function_and_a_failing_one_charges_nothing(
    anvil_chain: Chain, dev_stack: Manifest, manifest_path: Path, facilitator_url: str,
    new_payer: Callable[..., LocalAccount], tmp_path: Path, reserve_port: Callable[[], int],
) -> None:
    (tmp_path / "my_agent.py").write_text(
        "def reverse(text):\n"
        "    if text == 'fail':\n"
        "        raise RuntimeError('no')\n"
        "    return text[::-1]\n")
    owner = fresh_account(anvil_chain)
    payee = Account.create().address
    payer = new_payer(1_000_000)
    token = dev_stack.token.address
    with agents_serve("--manifest", str(manifest_path), "--handler", "my_agent:reverse",
                      "--name", "Reverser", "--price", PRICE, "--pay-to", payee,
                      "--facilitator", facilitator_url, "--port", str(reserve_port()),
                      "--register", "--key-file", key_file(tmp_path, owner),
                      cwd=tmp_path) as served:
        info = served.started()
        source = FactoryCardSource(anvil_chain, Manifest.load(manifest_path)
                                   .contracts["AgentFactory"])
        result = pay_one_task(info["agent"], source, payer, "abc")
        assert result.text == "cba"
        with pytest.raises(A2APaymentFailed) as failed:
            pay_one_task(info["agent"], source, payer, "fail")
        assert failed.value.reason == "service_failed"
    assert token_balance(anvil_chain, token, payee) == PRICE_ATOMIC  # one task, not two
    assert token_balance(anvil_chain, token, payer.address) == 1_000_000 - PRICE_ATOMIC


def test_serve_refuses_a_price_finer_than_the_token_before_serving_or_sending_anything(
    manifest_path: Path, capsys: pytest.CaptureFixture[str], reserve_port: Callable[[], int],
) -> None:
    code = main(["agents", "serve", "--manifest", str(manifest_path), "--upstream",
                 "http://127.0.0.1:9/x", "--name", "A", "--price", "0.0000001",
                 "--port", str(reserve_port())])
    assert code == 2
    assert "--price" in capsys.readouterr().err
