"""README's "Paid MCP tools" as written: examples/mcp_server.py behind `a402 mcp serve`,
paid by examples/mcp_client.py, on anvil; exactly the price moves, once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from tests.paid_mcp.helpers import PRICE, balance
from tests.paid_mcp.test_mcp_serve_command import _accepts, _env, running
from tests.test_cli_end_to_end import Stderr, wait_until

ROOT = Path(__file__).resolve().parents[2]
SERVER = str(ROOT / "examples" / "mcp_server.py")
CLIENT = str(ROOT / "examples" / "mcp_client.py")


def test_the_readme_paid_mcp_tool_flow_moves_exactly_the_price(
        tmp_path: Path, dev_stack: Manifest, facilitator_url: str, anvil_chain: Chain,
        new_payer: Callable[..., LocalAccount], reserve_port: Callable[[], int]) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())
    payer = new_payer()
    key_file = tmp_path / "client.key"
    key_file.write_text(payer.key.hex() + "\n")
    key_file.chmod(0o600)
    pay_to = str(Account.create().address)
    before = balance(anvil_chain, dev_stack, payer.address)
    port = reserve_port()
    args = ["mcp", "serve", "--upstream-command", f"{sys.executable} {SERVER}",
            "--tool", "forecast=0.001", "--manifest", str(manifest), "--pay-to", pay_to,
            "--facilitator", facilitator_url, "--port", str(port),
            "--ledger-db", f"sqlite:///{tmp_path / 'ledger.db'}"]
    with running(args, _env()) as proc:
        url = Stderr(proc).json_line("mcp")["mcp"]
        wait_until(lambda: _accepts(port), "the proxy's port")

        def client(*more: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, CLIENT, url, *more, "--key-file",
                                   str(key_file), "--max", "0.01"], capture_output=True,
                                  text=True, env=_env(), timeout=120)

        paid = client("forecast", '{"city": "Paris"}')
        free = client("echo", '{"text": "hello"}')
    assert paid.returncode == 0, paid.stderr
    assert paid.stdout.strip() == "sunny in Paris, 21 C"
    summary = json.loads(paid.stderr.strip().splitlines()[-1])
    assert summary["status"] == "settled" and summary["amount"] == str(PRICE)
    assert summary["payTo"] == pay_to and summary["transaction"]
    assert free.returncode == 0 and free.stdout.strip() == "hello", free.stderr
    assert json.loads(free.stderr.strip().splitlines()[-1]) == {"paid": "nothing"}
    assert balance(anvil_chain, dev_stack, payer.address) == before - PRICE
    assert balance(anvil_chain, dev_stack, pay_to) == PRICE


def test_the_example_client_pays_an_upto_tool_only_in_a_token_it_names(
        tmp_path: Path, dev_stack: Manifest, facilitator_url: str, anvil_chain: Chain,
        new_payer: Callable[..., LocalAccount], reserve_port: Callable[[], int]) -> None:
    """``--tool 'forecast=upto:0.004/0.001'`` (a tool that reports no usage: charged its
    maximum): without ``--asset`` the example refuses before signing (exit 3, nothing
    paid, no traceback); with it, after ``approve_permit2``, exactly the maximum moves."""
    from a402.client.permit2 import approve_permit2
    from tests.interop.official_upto import GAS_FUNDS_WEI

    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())
    payer = new_payer()
    anvil_chain.w3.provider.make_request(  # type: ignore[operator]
        "anvil_setBalance", [payer.address, hex(GAS_FUNDS_WEI)])
    key_file = tmp_path / "client.key"
    key_file.write_text(payer.key.hex() + "\n")
    key_file.chmod(0o600)
    token = dev_stack.token.address
    approve_permit2(str(anvil_chain.rpc_url), payer.key.hex(), token)
    pay_to = str(Account.create().address)
    before = balance(anvil_chain, dev_stack, payer.address)
    port = reserve_port()
    args = ["mcp", "serve", "--upstream-command", f"{sys.executable} {SERVER}",
            "--tool", "forecast=upto:0.004/0.001", "--manifest", str(manifest),
            "--pay-to", pay_to, "--facilitator", facilitator_url, "--port", str(port),
            "--ledger-db", f"sqlite:///{tmp_path / 'ledger.db'}"]
    with running(args, _env()) as proc:
        url = Stderr(proc).json_line("mcp")["mcp"]
        wait_until(lambda: _accepts(port), "the proxy's port")

        def client(*more: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, CLIENT, url, "forecast",
                                   '{"city": "Paris"}', "--key-file", str(key_file),
                                   "--max", "0.01", *more], capture_output=True,
                                  text=True, env=_env(), timeout=120)

        refused = client()
        assert refused.returncode == 3 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith("nothing was paid: payment refused")
        assert balance(anvil_chain, dev_stack, payer.address) == before
        paid = client("--asset", token)
    assert paid.returncode == 0, paid.stderr
    assert paid.stdout.strip() == "sunny in Paris, 21 C"
    summary = json.loads(paid.stderr.strip().splitlines()[-1])
    assert summary["status"] == "settled" and summary["amount"] == "4000"
    assert balance(anvil_chain, dev_stack, payer.address) == before - 4000
    assert balance(anvil_chain, dev_stack, pay_to) == 4000
