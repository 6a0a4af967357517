"""``a402 mcp serve`` as a process: a paywall in front of an MCP server it starts (stdio)
or reaches (HTTP), serving HTTP or stdio; one ledger shared by two processes refuses a
payment replayed from one to the other. On anvil, balances asserted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.cli import main
from a402.mcp import PayingMCPSession, ToolPaywall
from a402.mcp.proxy import Upstream, proxy_app
from a402.mcp.wire import PAYMENT_META_KEY
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import PRICE, PRICE_TEXT, balance, mcp_session, text_of
from tests.servers import serve
from tests.test_cli_end_to_end import Stderr, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
A402 = str(Path(sys.executable).with_name("a402"))
UPSTREAM_SCRIPT = str(Path(weather_server.__file__).resolve())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stdio_proxy(upstream: list[str], pay_to: str, manifest_file: str, facilitator_url: str,
                 tmp_path: Path, **env: str) -> StdioServerParameters:
    """``a402 mcp serve --stdio`` in front of ``upstream`` (its flags), selling forecast."""
    return StdioServerParameters(command=A402, args=[
        "mcp", "serve", "--stdio", *upstream, "--tool", f"forecast={PRICE_TEXT}",
        "--manifest", manifest_file, "--pay-to", pay_to, "--facilitator", facilitator_url,
        "--ledger-db", f"sqlite:///{tmp_path / 'ledger.db'}"], env=_env(**env))


@contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([A402, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def manifest_file(tmp_path: Path, dev_stack: Manifest) -> str:
    path = tmp_path / "devnet.json"
    path.write_text(dev_stack.to_json())
    return str(path)


async def test_mcp_serve_in_front_of_a_stdio_server_and_a_replay_to_another_process_is_refused(
        tmp_path: Path, manifest_file: str, facilitator_url: str, anvil_chain: Chain,
        dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        reserve_port: Callable[[], int]) -> None:
    pay_to = str(Account.create().address)
    ledger = f"sqlite:///{tmp_path / 'shared-ledger.db'}"
    runs = tmp_path / "runs.txt"
    port = reserve_port()
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    args = ["mcp", "serve", "--upstream-command", f"{sys.executable} {UPSTREAM_SCRIPT}",
            "--tool", f"forecast={PRICE_TEXT}", "--manifest", manifest_file,
            "--pay-to", pay_to, "--facilitator", facilitator_url, "--ledger-db", ledger,
            "--port", str(port)]
    with running(args, _env(WEATHER_RUNS=str(runs))) as proc:
        started = Stderr(proc).json_line("mcp")
        wait_until(lambda: _accepts(port), "the proxy's port")
        assert started["tools"] == {"forecast": str(PRICE)}  # type: ignore[comparison-overlap]
        async with mcp_session(started["mcp"]) as session:
            unpaid = await session.call_tool("forecast", {"city": "Rome"})
            answer = await PayingMCPSession(session, payer, max_per_request=PRICE).call_tool(
                "forecast", {"city": "Rome"})
    assert unpaid.isError and unpaid.structuredContent is not None
    assert unpaid.structuredContent["error"] == "payment_required"
    assert answer.paid and text_of(answer.result) == "sunny in Rome, 21 C"
    assert answer.payment is not None
    assert runs.read_text().split() == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE

    # Another process with the same ledger (here, this one) refuses the same payment for
    # another call, and answers the identical call with the result it bought (kept).
    payload = json.loads(answer.payment.header_value)
    with serve(weather_server.app()) as upstream:
        other = proxy_app(Upstream.http(upstream + "/mcp"), ToolPaywall(
            {"forecast": PRICE_TEXT}, pay_to=pay_to, token=dev_stack.token,
            network=dev_stack.network, facilitator=facilitator_url, ledger=ledger))
        with serve(other) as base:
            async with mcp_session(base + "/mcp") as session:
                replay = await session.call_tool("forecast", {"city": "Oslo"},
                                                 meta={PAYMENT_META_KEY: payload})
                resent = await session.call_tool("forecast", {"city": "Rome"},
                                                 meta={PAYMENT_META_KEY: payload})
    assert replay.isError and replay.structuredContent is not None
    assert replay.structuredContent["error"] == "payment_already_used"
    assert not resent.isError and text_of(resent) == "sunny in Rome, 21 C"
    assert runs.read_text().split() == ["forecast"]
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_mcp_serve_on_stdio_in_front_of_an_http_server(
        tmp_path: Path, manifest_file: str, facilitator_url: str, anvil_chain: Chain,
        dev_stack: Manifest, new_payer: Callable[..., LocalAccount]) -> None:
    pay_to = str(Account.create().address)
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    with serve(weather_server.app()) as upstream:
        params = _stdio_proxy(["--upstream", upstream + "/mcp"], pay_to, manifest_file,
                              facilitator_url, tmp_path)
        async with (stdio_client(params) as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            answer = await PayingMCPSession(session, payer, max_per_request=PRICE
                                            ).call_tool("forecast", {"city": "Nice"})
    assert answer.paid and text_of(answer.result) == "sunny in Nice, 21 C"
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


async def test_mcp_serve_on_stdio_says_it_is_ready_only_once_its_upstream_answered(
        tmp_path: Path, manifest_file: str, facilitator_url: str, anvil_chain: Chain,
        dev_stack: Manifest, new_payer: Callable[..., LocalAccount]) -> None:
    # The upstream command is held between its start and its MCP handshake: in that time
    # a call would fail, so the proxy must not yet say it is ready; it says so once the
    # upstream answered, and the first call then reaches it and is paid.
    pay_to = str(Account.create().address)
    payer = new_payer()
    before = balance(anvil_chain, dev_stack, payer.address)
    gate, stderr = tmp_path / "upstream-gate", tmp_path / "proxy-stderr.txt"
    params = _stdio_proxy(["--upstream-command", f"{sys.executable} {UPSTREAM_SCRIPT}"],
                          pay_to, manifest_file, facilitator_url, tmp_path,
                          WEATHER_START_GATE=str(gate))
    with stderr.open("w") as errlog:
        async with (stdio_client(params, errlog=errlog) as (read, write),
                    ClientSession(read, write) as session):
            waiting = Path(f"{gate}.waiting")
            try:
                with anyio.fail_after(60):
                    while not waiting.exists():
                        await anyio.sleep(0.05)
                assert '"mcp"' not in stderr.read_text(), stderr.read_text()  # not ready yet
            finally:
                gate.touch()
            await session.initialize()
            ready = [json.loads(line) for line in stderr.read_text().splitlines()
                     if line.startswith("{") and '"mcp"' in line]
            assert [r["mcp"] for r in ready] == ["stdio"], stderr.read_text()
            assert ready[0]["tools"] == {"forecast": str(PRICE)}
            answer = await PayingMCPSession(session, payer, max_per_request=PRICE
                                            ).call_tool("forecast", {"city": "Turin"})
    assert answer.paid and text_of(answer.result) == "sunny in Turin, 21 C"
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give exactly one of --upstream URL and --upstream-command"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--upstream-command", "x"], "exactly one"),
    (["--upstream", "http://127.0.0.1:1/mcp"], "price at least one tool"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast"], "is not 'NAME=PRICE'"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=0.0000001"],
     "decimals"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=a402:0.01"],
     "sold only in A402 channels, which need --a402"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=0.01", "--a402"],
     "--a402 sells the tools priced 'a402'"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=a402:0.01", "--a402",
      "--stdio"], "drop --stdio"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=a402:0.01", "--a402"],
     "--a402 needs --rpc"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=0.01",
      "--vault-measurement", "0x00"], "--vault-measurement: only with --a402"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=upto:0.01/0.02"],
     "exceeds the maximum"),
    (["--upstream", "http://127.0.0.1:1/mcp", "--tool", "forecast=0.01",
      "--tool", "forecast=0.02"], "priced twice"),
])
def test_mcp_serve_refuses_bad_options_before_serving(
        manifest_file: str, extra: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["mcp", "serve", "--manifest", manifest_file,
                 "--facilitator", "http://127.0.0.1:1", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("a402 mcp serve: ") and message in err, err
