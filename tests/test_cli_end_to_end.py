"""The README's path, through the real ``a402`` executables: a devnet, a facilitator,
a gateway in front of an unmodified API, and ``a402 pay`` paying for one request, with
``exact`` or, through ``a402 vault``, inside an A402 channel (``a402 gateway --a402``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.asc_manager import ASCManager, OnChainStatus
from a402.background import serve_in_thread
from a402.chain.deploy import DEV_DISPUTE_WINDOW, Manifest, token_balance
from a402.chain.node import connect
from a402.client.vault import ExpectedVault, VaultClient
from a402.tee.identity import load_platform
from a402.wire.headers import decode_payment_required

A402 = str(Path(sys.executable).with_name("a402"))


#: How every refusal of ``a402 gateway`` before it serves begins: the money state.
NOT_STARTED = "a402 gateway: not started, nothing was paid"


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


class Stderr:
    """A process's stderr, read line by line in the background (so its pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self.reader.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def json_line(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        """The first JSON line naming ``key`` (the start-up line the services print)."""
        found: dict[str, str] = {}

        def ready() -> bool:
            for line in list(self.lines):
                if line.startswith("{") and key in (data := json.loads(line)):
                    found.update(data)
                    return True
            if self.proc.poll() is not None and not self.reader.is_alive():
                raise AssertionError(f"exited with {self.proc.returncode}: {''.join(self.lines)}")
            return False

        try:
            wait_until(ready, f"a start-up line with {key!r}", timeout)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; stderr so far: {''.join(self.lines)[-2000:]!r}") from None
        return found


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
def test_devnet_facilitator_gateway_and_pay_from_the_command_line(
        tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    manifest_path = tmp_path / "devnet.json"
    # Each port is held (``reserve_port``) until the test ends: no other server, of this
    # test or of another process, is given it before the one started on it binds it.
    chain_port = reserve_port()
    with running("devnet", "--port", str(chain_port), "--manifest-out", str(manifest_path)):
        wait_until(manifest_path.exists, "devnet")
        manifest = Manifest.load(manifest_path)
        assert manifest.network == "eip155:31337" and manifest.rpc_url
        assert os.stat(manifest_path).st_mode & 0o077 == 0

        facilitator_key = str(tmp_path / "facilitator.key")  # written by devnet
        assert Path(facilitator_key).read_text().strip() == (
            manifest.account("facilitator").private_key)
        facilitator_port = reserve_port()
        with running("facilitator", "--rpc", manifest.rpc_url, "--network", manifest.network,
                     "--key-file", facilitator_key, "--db", f"sqlite:///{tmp_path}/j.db",
                     "--port", str(facilitator_port)):
            facilitator = f"http://127.0.0.1:{facilitator_port}"
            wait_until(lambda: httpx.get(f"{facilitator}/healthz").status_code == 200,
                       "facilitator")
            with serve_in_thread(upstream_api()) as upstream:
                gateway_port = reserve_port()
                with running(
                    "gateway", "--upstream", upstream, "--route", "GET /quote=0.25",
                    "--manifest", str(manifest_path), "--facilitator", facilitator,
                    "--ledger-db", f"sqlite:///{tmp_path}/ledger.db", "--port", str(gateway_port),
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


def leave_a_wallet_funded_channel_without_the_vault(
    gateway: str, vault: str, vault_address: str, manifest_path: Path, key_file: Path
) -> dict[str, str]:
    """``a402 pay --funding wallet`` opens a channel from the client's wallet and pays once;
    then the client force-closes it with ``a402 channels force-close`` (version 0: the
    whole deposit back). The others answer within the window: the vault's watchtower (or
    the provider's watcher) with the state both co-signed (version 1: one payment), or the
    provider, if its ACK is not in yet, with its claim (``forceClose``, settled at once).
    Either way, after the window (anvil time travel) the client has paid exactly the one
    payment, whoever sent the last transaction."""
    where = ["--key-file", str(key_file), "--manifest", str(manifest_path)]
    paid = subprocess.run([A402, "pay", f"{gateway}/quote", "--vault", vault, *where,
                           "--vault-address", vault_address,
                           "--max", "0.01", "--funding", "wallet"],
                          capture_output=True, text=True, timeout=90)
    assert paid.returncode == 0, paid.stderr
    listed = subprocess.run([A402, "channels", *where, "--json"], capture_output=True,
                            text=True, timeout=60)
    # The client's pool channel (closed already) is its own on-chain too; the new one is
    # the wallet-funded one.
    pool, mine = json.loads(listed.stdout)["channels"]
    assert (pool["role"], pool["funding"], pool["status"]) == ("client", "pool", "closed")
    assert (mine["role"], mine["funding"], mine["status"]) == ("client", "wallet", "open")
    started = subprocess.run([A402, "channels", "force-close", mine["channelId"], *where],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith(f"nothing paid out yet: force-close of "
                                     f"{mine['channelId']} started")
    manifest = Manifest.load(manifest_path)
    chain = connect(manifest.rpc_url)
    manager = ASCManager(chain, manifest.contracts["ASCManager"])
    cid = bytes.fromhex(mine["channelId"][2:])

    def answered() -> bool:
        record = manager.channel(cid)
        return record.status == OnChainStatus.CLOSED or record.version >= 1

    wait_until(answered, "an answer to the stale force-close", timeout=60)
    chain.w3.provider.make_request("evm_increaseTime", [DEV_DISPUTE_WINDOW])
    chain.w3.provider.make_request("evm_mine", [])
    finished = subprocess.run([A402, "channels", "force-close", mine["channelId"], *where],
                              capture_output=True, text=True, timeout=60)
    # 0: ours paid out; 4: already closed (the provider's claim, or the vault's
    # finalForceClose came first); 1: the vault's landed in the same block, ours reverted.
    assert finished.returncode in (0, 1, 4), finished.stderr
    assert "Traceback" not in finished.stderr
    wait_until(lambda: manager.channel(cid).status == OnChainStatus.CLOSED, "the payout")
    return mine


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


@pytest.mark.anvil
def test_a_gateway_with_a402_is_paid_through_a_vault_from_the_command_line(
    tmp_path: Path, reserve_port: Callable[[], int],
) -> None:
    """devnet, facilitator, ``a402 gateway --a402`` in front of an unmodified API, ``a402
    vault`` trusting the gateway's enclave, and ``a402 pay --vault`` paying in a channel."""
    manifest_path = tmp_path / "devnet.json"
    vault_code = "0x" + hashlib.sha384(b"the vault's enclave, for this test").hexdigest()
    # The vault's platform exists before the gateway starts: the gateway trusts its root.
    vault_platform = tmp_path / "vault-platform.json"
    vault_root = load_platform(vault_platform).root.public_key.hex()
    chain_port = reserve_port()
    with running("devnet", "--port", str(chain_port), "--manifest-out", str(manifest_path)):
        wait_until(manifest_path.exists, "devnet")
        manifest = Manifest.load(manifest_path)
        assert "ASCManager" in manifest.contracts
        chain = connect(manifest.rpc_url)
        token = manifest.token.address
        client, provider = manifest.account("client"), manifest.account("provider").address
        gas_account = manifest.account("client", 1).address  # the vault's key file: gas only
        holders = [client.address, gas_account, provider, manifest.contracts["ASCManager"]]
        before = {a: token_balance(chain, token, a) for a in holders}

        facilitator_port = reserve_port()
        with running("facilitator", "--rpc", manifest.rpc_url, "--network", manifest.network,
                     "--key-file", str(tmp_path / "facilitator.key"),
                     "--db", f"sqlite:///{tmp_path}/j.db", "--port", str(facilitator_port)):
            facilitator = f"http://127.0.0.1:{facilitator_port}"
            wait_until(lambda: httpx.get(f"{facilitator}/healthz").status_code == 200,
                       "facilitator")
            with serve_in_thread(upstream_api()) as upstream:
                gateway_port = reserve_port()
                gateway_args = [
                    "gateway", "--upstream", upstream, "--route", "GET /quote=0.001",
                    "--manifest", str(manifest_path), "--facilitator", facilitator,
                    "--a402", "--rpc", manifest.rpc_url,
                    "--operator-key-file", str(tmp_path / "provider.key"),
                    "--channel-db", f"sqlite:///{tmp_path}/channels.db",
                    "--ledger-db", f"sqlite:///{tmp_path}/ledger.db",
                    "--platform-file", str(tmp_path / "provider-platform.json"),
                    "--identity-file", str(tmp_path / "provider-identity.bin"),
                    "--allow-simulated-attestation", "--trust-root", vault_root,
                    "--vault-measurement", vault_code]
                with running(*gateway_args, "--port", str(gateway_port)) as gateway_proc:
                    started = Stderr(gateway_proc).json_line("gateway")
                    gateway = f"http://127.0.0.1:{gateway_port}"
                    assert started["gateway"] == gateway and started["provider"] == provider
                    # No --public-url: the operator is told the payer's Host names the resource.
                    assert "--public-url" in started["warning"]
                    wait_until(lambda: httpx.get(f"{gateway}/free").status_code == 200, "gateway")
                    unpaid = httpx.get(f"{gateway}/quote")
                    offers = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"])

                    vault_port = reserve_port()
                    with running(
                        "vault", "--rpc", manifest.rpc_url, "--manifest", str(manifest_path),
                        "--key-file", str(tmp_path / "vault.key"),
                        "--db", f"sqlite:///{tmp_path}/vault.db",
                        "--platform-file", str(vault_platform), "--measurement", vault_code,
                        "--allow-simulated-attestation", "--trust-root",
                        started["rootPublicKey"], "--provider-measurement",
                        started["measurement"], "--port", str(vault_port),
                        "--allow-private-targets",
                    ) as vault_proc:
                        vault = f"http://127.0.0.1:{vault_port}"
                        # The vault's address is its enclave's key (a fresh one: no tokens).
                        vault_address = Stderr(vault_proc).json_line("vault")["address"]
                        assert token_balance(chain, token, vault_address) == 0
                        wait_until(lambda: httpx.get(f"{vault}/v1/info").status_code == 200,
                                   "vault")
                        # The client knows the vault's key beforehand (published, attested)
                        # and the manifest's manager and token: its info must name them.
                        with VaultClient(vault, client.private_key,
                                         expect=ExpectedVault.from_manifest(
                                             vault_address, manifest)) as account:
                            assert account.deposit(1_000_000)["state"] == "credited"
                            paid = subprocess.run(
                                [A402, "pay", f"{gateway}/quote", "--vault", vault,
                                 "--vault-address", vault_address,
                                 "--manifest", str(manifest_path),
                                 "--key-file", str(tmp_path / "client.key"), "--max", "0.01"],
                                capture_output=True, text=True, timeout=90)
                            assert paid.returncode == 0, paid.stderr
                            channel = account.account_info()["channels"][0]
                            account.close_channel(channel["channelId"])
                            wait_until(lambda: account.account_info()["channels"][0]["phase"]
                                       == "settled", "the cooperative close", timeout=60)
                            view = account.account_info()
                            left = leave_a_wallet_funded_channel_without_the_vault(
                                gateway, vault, vault_address, manifest_path,
                                tmp_path / "client.key")
                # The identity survives a restart: the same enclave key, so the same channels.
                # (The measurement is given: the package's may change under concurrent edits.)
                restart_port = reserve_port()
                with running(*gateway_args, "--measurement", started["measurement"],
                             "--port", str(restart_port)) as again:
                    restarted = Stderr(again).json_line("gateway")

        after = {a: token_balance(chain, token, a) for a in holders}
        vault_after = token_balance(chain, token, vault_address)
        # The provider sees the channel the vault opened and closed, from the chain alone.
        listed = subprocess.run(
            [A402, "channels", "--key-file", str(tmp_path / "provider.key"), "--manifest",
             str(manifest_path), "--json"], capture_output=True, text=True, timeout=60)
        mismatch = subprocess.run(
            [A402, *gateway_args[:gateway_args.index("--manifest")], "--network", "eip155:1",
             "--asset", token, "--pay-to", provider, "--manager", manifest.contracts["ASCManager"],
             *gateway_args[gateway_args.index("--facilitator"):], "--port", str(reserve_port())],
            capture_output=True, text=True, timeout=60)
        no_code = subprocess.run(
            [A402, *gateway_args, "--manager", "0x" + "42" * 20, "--port", str(reserve_port())],
            capture_output=True, text=True, timeout=60)

    assert [o.scheme for o in offers.accepts] == ["exact", "a402"]
    assert json.loads(paid.stdout) == {"quote": "the map is not the territory"}
    summary = json.loads(paid.stderr.strip().splitlines()[-1])
    assert summary["outcome"] == "paid" and summary["payment"]["amount"] == "1000"
    assert channel["provider"].lower() == provider.lower()
    assert (channel["providerBalance"], channel["version"]) == ("1000", 1)
    assert view["paid"] == "1000" and view["balance"] == str(1_000_000 - 1000)
    assert view["channels"][0]["providerPayout"] == "1000"
    # Money is conserved: the client's deposit went into its pool balance in the
    # ASCManager, the price from there to the provider through the channel, and the
    # rest stayed in the pool (the vault's own address holds nothing).
    # The wallet-funded channel cost the client exactly its one payment.
    assert {a: after[a] - before[a] for a in holders} == {
        client.address: -1_000_000 - 1000, gas_account: 0, provider: 2000,
        manifest.contracts["ASCManager"]: 1_000_000 - 1000}
    assert vault_after == 0
    assert listed.returncode == 0, listed.stderr
    onchain = {c["channelId"]: c for c in json.loads(listed.stdout)["channels"]}
    assert set(onchain) == {channel["channelId"], left["channelId"]}
    pool = onchain[channel["channelId"]]
    assert (pool["role"], pool["funding"], pool["status"]) == ("provider", "pool", "closed")
    assert (pool["closed"]["provider"], pool["closed"]["credited"]) == ("0.001000", {})
    mine = onchain[left["channelId"]]
    assert (mine["funding"], mine["status"]) == ("wallet", "closed")
    assert mine["closed"]["by"] in ("ForceCloseFinalized", "ProviderForceClosed")
    assert mine["closed"]["provider"] == "0.001000"
    assert (restarted["providerKey"], restarted["measurement"]) == (
        started["providerKey"], started["measurement"])
    assert os.stat(tmp_path / "provider-identity.bin").st_mode & 0o077 == 0
    assert mismatch.returncode == 2
    assert mismatch.stderr.strip().splitlines()[-1] == (
        f"{NOT_STARTED} (a402_setup): {manifest.rpc_url} is eip155:31337, but the "
        "gateway charges on eip155:1")
    assert no_code.returncode == 2 and f"{NOT_STARTED} (a402_setup): no contract at" in \
        no_code.stderr


def test_gateway_with_a402_refuses_to_start_without_what_it_needs(tmp_path: Path) -> None:
    """Exit code 2 and a one-line reason, before touching any chain or file."""
    base = [A402, "gateway", "--upstream", "http://127.0.0.1:9", "--route", "GET /q=0.001",
            "--facilitator", "http://127.0.0.1:9", "--network", "eip155:31337",
            "--asset", "0x" + "11" * 20, "--pay-to", "0x" + "22" * 20,
            "--platform-file", str(tmp_path / "platform.json"),
            "--identity-file", str(tmp_path / "identity.bin")]
    a402 = ["--a402", "--rpc", "http://127.0.0.1:9", "--operator-key-file",
            key_file(tmp_path / "provider.key", "0x" + "01" * 32)]
    measurement = ["--vault-measurement", "0x" + "ab" * 48]

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr.strip()

    assert run(*a402, *measurement) == (2, (
        f"{NOT_STARTED} (a402_setup): the only enclave backend here is "
        "simulated; pass "
        "--allow-simulated-attestation to run it (development only)"))
    assert run(*a402, "--allow-simulated-attestation") == (
        2, f"{NOT_STARTED} (a402_setup): --a402 needs --vault-measurement")
    assert run("--a402", "--allow-simulated-attestation", *measurement) == (
        2, f"{NOT_STARTED} (a402_setup): --a402 needs --rpc, "
           "--operator-key-file")
    assert run(*measurement, "--allow-simulated-attestation") == (
        2, f"{NOT_STARTED} (usage): --platform-file, --identity-file, "
           "--allow-simulated-attestation, "
           "--vault-measurement: only with --a402")
    assert not (tmp_path / "platform.json").exists() and not (tmp_path / "identity.bin").exists()
