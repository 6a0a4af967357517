"""``a402 mcp serve --a402`` from the command line: a tool of an unchanged MCP server sold in
an Atomic Service Channel, paid by ``a402 vault`` for :class:`a402.mcp.PayingMCPSession`.

devnet, the paywall proxy (its upstream started on stdio), the vault trusting the proxy's
enclave; the channel is closed cooperatively and the provider's payout read on-chain.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import connect
from a402.client.vault import ExpectedVault, VaultClient
from a402.mcp import PayingMCPSession
from a402.tee.identity import load_platform
from tests.paid_mcp import weather_server
from tests.paid_mcp.helpers import mcp_session, text_of
from tests.test_cli_end_to_end import Stderr, running, wait_until

pytestmark = pytest.mark.anvil

PRICE = 1_000  # forecast=a402:0.001


def test_a402_mcp_serve_sells_a_tool_in_a_channel_paid_through_a_vault(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    manifest_path = tmp_path / "devnet.json"
    vault_code = "0x" + hashlib.sha384(b"the vault's enclave, mcp test").hexdigest()
    vault_platform = tmp_path / "vault-platform.json"
    vault_root = load_platform(vault_platform).root.public_key.hex()
    with running("devnet", "--port", str(reserve_port()), "--manifest-out", str(manifest_path)):
        wait_until(manifest_path.exists, "devnet")
        manifest = Manifest.load(manifest_path)
        chain = connect(manifest.rpc_url)
        token = manifest.token.address
        client, provider = manifest.account("client"), manifest.account("provider").address
        provider_before = token_balance(chain, token, provider)
        port = reserve_port()
        with running(
            "mcp", "serve", "--upstream-command",
            f"{sys.executable} {Path(weather_server.__file__)}",
            "--tool", "forecast=a402:0.001", "--manifest", str(manifest_path),
            "--facilitator", "http://127.0.0.1:9", "--port", str(port),
            "--ledger-db", f"sqlite:///{tmp_path}/ledger.db",
            "--a402", "--rpc", manifest.rpc_url,
            "--operator-key-file", str(tmp_path / "provider.key"),
            "--channel-db", f"sqlite:///{tmp_path}/channels.db",
            "--platform-file", str(tmp_path / "provider-platform.json"),
            "--identity-file", str(tmp_path / "provider-identity.bin"),
            "--allow-simulated-attestation", "--trust-root", vault_root,
            "--vault-measurement", vault_code,
        ) as proxy:
            started = Stderr(proxy).json_line("mcp")
            assert started["mcp"] == f"http://127.0.0.1:{port}/mcp"
            assert started["provider"] == provider
            vault_port = reserve_port()
            with running(
                "vault", "--rpc", manifest.rpc_url, "--manifest", str(manifest_path),
                "--key-file", str(tmp_path / "vault.key"),
                "--db", f"sqlite:///{tmp_path}/vault.db",
                "--platform-file", str(vault_platform), "--measurement", vault_code,
                "--allow-simulated-attestation", "--trust-root", started["rootPublicKey"],
                "--provider-measurement", started["measurement"], "--port", str(vault_port),
                "--allow-private-targets",
            ) as vault_proc:
                vault = f"http://127.0.0.1:{vault_port}"
                vault_address = Stderr(vault_proc).json_line("vault")["address"]
                wait_until(lambda: httpx.get(f"{vault}/v1/info").status_code == 200, "vault")
                with VaultClient(vault, client.private_key, expect=ExpectedVault.from_manifest(
                        vault_address, manifest)) as account:
                    assert account.deposit(100_000)["state"] == "credited"

                    async def call() -> tuple[bool, str, int]:
                        async with mcp_session(started["mcp"]) as session:
                            answer = await PayingMCPSession(
                                session, client.private_key, max_per_request=PRICE,
                                vault=account).call_tool("forecast", {"city": "Quito"})
                        assert answer.channel is not None
                        return answer.paid, text_of(answer.result), answer.channel.amount

                    assert anyio.run(call) == (True, "sunny in Quito, 21 C", PRICE)
                    channel = account.account_info()["channels"][0]
                    account.close_channel(channel["channelId"])
                    wait_until(lambda: account.account_info()["channels"][0]["phase"]
                               == "settled", "the cooperative close", timeout=60)
                    assert account.account_info()["paid"] == str(PRICE)
        assert token_balance(chain, token, provider) == provider_before + PRICE
