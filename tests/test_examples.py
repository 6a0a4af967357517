"""The files under examples/ run as the README says, against a real anvil and our
facilitator, and move exactly the price from the payer to the payee."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, token_balance
from a402.chain.node import Chain
from a402.client import paying_client, receipt_of, token_units_max

ROOT = Path(__file__).resolve().parents[1]
PROVIDER = ROOT / "examples" / "provider.py"
PRICE_ATOMIC = 1_000  # examples/provider.py charges "0.001" of a 6-decimal token


@contextmanager
def example(*args: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"example exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


def test_the_provider_example_charges_one_weather_request_exactly_its_price(
    anvil_chain: Chain, dev_stack: Manifest, facilitator_url: str, tmp_path: Path,
    new_payer: Callable[..., LocalAccount], reserve_port: Callable[[], int],
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(dev_stack.to_json())
    pay_to = Account.create().address
    payer = new_payer()
    token = dev_stack.token.address
    payer_before = token_balance(anvil_chain, token, payer.address)
    port = reserve_port()
    base = f"http://127.0.0.1:{port}"
    with example(str(PROVIDER), "--manifest", str(manifest), "--facilitator", facilitator_url,
                 "--pay-to", pay_to, "--port", str(port)) as proc:
        wait_for(base + "/", proc)
        assert httpx.get(base + "/").status_code == 200  # the free route stays free
        unpaid = httpx.get(base + "/weather/paris")
        assert unpaid.status_code == 402
        assert token_balance(anvil_chain, token, pay_to) == 0
        with paying_client(payer, max_per_request=token_units_max("0.01"),
                           networks=[dev_stack.network]) as http:
            paid = http.get(base + "/weather/paris")
    assert paid.status_code == 200, paid.text
    assert paid.json() == {"city": "paris", "weather": "sunny"}
    receipt = receipt_of(paid)
    assert receipt is not None and receipt.success
    assert token_balance(anvil_chain, token, pay_to) == PRICE_ATOMIC
    assert token_balance(anvil_chain, token, payer.address) == payer_before - PRICE_ATOMIC


def test_the_readme_provider_snippet_is_taken_from_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Charging for an API (provider)", 1)[1].split("\n## ", 1)[0]
    snippet = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    source = PROVIDER.read_text()
    for line in snippet.splitlines():
        if line.strip() and not line.strip().startswith("..."):
            assert line.strip() in source, f"README line not in examples/provider.py: {line}"
    assert "examples/provider.py" in section
