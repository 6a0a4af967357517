"""Paid calls over real HTTP on anvil, both funding modes in one run: the mean wall time of
one ``VaultClient.invoke`` (one client, sequential; its channel already open) through a
standard vault (ASCManager channel, deposit 1000x the price) and through a vault in vault
mode (the client's A402Vault account), and the blocks mined during the calls.

    PYTHONPATH=src python bench/vault_mode_http.py [N]

Prints the figures and writes ``bench/results/vault_mode_http.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from tests.a402_exchange.helpers import PRICE, World
from tests.vault.helpers import client_of, running_vault
from tests.vault_mode import test_invoke_http as t

from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import start_anvil
from a402.chain.tx import deploy_contract
from a402.client.vault import ExpectedVault, VaultClient
from a402.tee import SimulatedPlatform, SimulatedVerifier

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
with start_anvil(accounts=4) as chain, tempfile.TemporaryDirectory() as tmp:
    d = chain.accounts[0]
    usdc = deploy_contract(chain, d, "TestUSDC", "USD Coin", "USDC", "2", d.address)
    # standard mode
    manager = ASCManager.deploy(chain, d, usdc.address, 600)
    platform = SimulatedPlatform.generate()
    world = World(chain, usdc, TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6), manager,
                  platform, SimulatedVerifier(platform.root.public_key, allow_simulated=True),
                  Path(tmp))
    provider = world.provider()
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=1000) as vault:
        _owner, client = client_of(world, vault, funds=10**6, deposit=10**6)
        client.invoke(f"{site}/weather", max_price=PRICE)  # opens the channel
        b0 = chain.w3.eth.block_number
        t0 = time.perf_counter()
        for _ in range(N):
            client.invoke(f"{site}/weather", max_price=PRICE)
        std = (time.perf_counter() - t0) / N
        std_tx = chain.w3.eth.block_number - b0
        client.close()
    # vault mode
    with t.running(chain, usdc, Path(tmp)) as (s, site, vurl):
        acct = Account.create()
        s.deposit(acct.address, 10**6)
        s.service.tick()
        vc = VaultClient(vurl, acct, expect=ExpectedVault(s.service.address, s.contract.address,
                                                          usdc.address))
        payee = s.provider.address  # the provider's payTo, signed into each call
        vc.invoke(f"{site}/weather", max_price=PRICE, pay_to=payee)  # opens the channel
        b0 = chain.w3.eth.block_number
        t0 = time.perf_counter()
        for _ in range(N):
            vc.invoke(f"{site}/weather", max_price=PRICE, pay_to=payee)
        vm = (time.perf_counter() - t0) / N
        vm_tx = chain.w3.eth.block_number - b0
        vc.close()
    print(f"standard: {std*1000:.1f} ms/call, {std_tx} blocks for {N} calls")
    print(f"vault mode: {vm*1000:.1f} ms/call, {vm_tx} blocks for {N} calls")
    print(f"vault mode / standard latency ratio: {vm/std:.2f}")
    out = Path(__file__).resolve().parent / "results" / "vault_mode_http.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "calls": N, "standard_ms_per_call": std * 1000, "vault_mode_ms_per_call": vm * 1000,
        "standard_blocks": std_tx, "vault_mode_blocks": vm_tx, "ratio": vm / std}, indent=2))
