"""``a402 demo --act channels``: the same paid API, paid through one A402 channel.

Act 1 pays every request with its own on-chain ``transferWithAuthorization``.
Here a client deposits once into a Liquidity Vault (in-process, simulated
enclave), the vault opens one Atomic Service Channel to the weather API
(``createASC``), every request is paid off-chain inside that channel with the
full A402 exchange (EXEC, REPLY, AUTH, REVEAL, ACK over an attested tunnel),
and a cooperative ``closeASC`` settles it. The API serves ``exact`` and
``a402`` side by side, and a short ``exact`` batch is paid in the same run, on
the same chain, so the comparison is measured, not recalled.

Every transaction mined during the act is counted from the chain itself (block
by block), so nothing the vault or facilitator sends can go unaccounted for.
Simulated enclaves are accepted only because the verifiers here are built with
``allow_simulated=True`` over this run's own simulation root.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain, embedded_chain
from a402.chain.tx import contract_at, transact
from a402.client.vault import ExpectedVault, VaultClient
from a402.demos.common import CITIES, PRICE, atomic_units, format_usdc, pay_weather, weather_api
from a402.facilitator.app import create_app as facilitator_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_store import SqlChannelStore
from a402.provider.middleware import PaymentMiddleware
from a402.provider.settings import Watching
from a402.tee import PROVIDER_PURPOSES, AttestationPolicy, SimulatedPlatform, SimulatedVerifier
from a402.vault.app import create_app as vault_app
from a402.vault.identity import vault_enclave
from a402.vault.service import VaultConfig, VaultService
from a402.vault.settings import Connections, Deposits, Timing
from a402.vault.store import VaultStore

PROVIDER_CODE = hashlib.sha384(b"a402 demo provider enclave").digest()
VAULT_CODE = hashlib.sha384(b"a402 demo vault enclave").digest()
EXACT_BATCH = 5
"""x402 ``exact`` payments made in this act for the comparison: enough to show that
each costs the same gas, few enough to keep the act quick."""

Say = Callable[..., None]


@dataclass
class Ledger:
    """Transactions mined in a block range, grouped by what they called."""

    count: dict[str, int] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, gas: int) -> None:
        self.count[name] = self.count.get(name, 0) + 1
        self.gas[name] = self.gas.get(name, 0) + gas

    @property
    def total_count(self) -> int:
        return sum(self.count.values())

    @property
    def total_gas(self) -> int:
        return sum(self.gas.values())


def _mined(chain: Chain, contracts: list[Any], first: int, last: int) -> Ledger:
    """Every transaction in blocks ``first..last``, named by the function it called."""
    ledger = Ledger()
    for number in range(first, last + 1):
        block = chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            assert not isinstance(tx, HexBytes)  # full_transactions: each a dict, not a hash
            gas = int(chain.w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
            data = tx.get("input", tx.get("data", b""))  # py-evm says "data", anvil "input"
            name = "ETH transfer" if not data or data in (b"", "0x") else "other"
            for contract in contracts:
                if tx.get("to") == contract.address:
                    with contextlib.suppress(ValueError):  # not one of its functions
                        name = contract.decode_function_input(data)[0].fn_name
            ledger.add(name, gas)
    return ledger


def _fresh_account(chain: Chain) -> LocalAccount:
    """A new account with gas money and no tokens, so its token balance is only its role's."""
    account: LocalAccount = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=10**18)
    return account


def run_channels_act(requests: int = 100, out: TextIO = sys.stdout,
                     exact_batch: int = EXACT_BATCH, channel_covers: int | None = None) -> int:
    """Act: ``requests`` paid calls through one channel, against ``exact_batch`` exact ones.

    The vault funds the channel for ``channel_covers`` calls (default: all of them);
    fewer makes it open a second channel, which the act must report as a failure.
    """
    say: Say = lambda line="": print(line, file=out, flush=True)  # noqa: E731
    say(f"a402 demo: {requests} requests through one A402 channel, against x402 `exact`\n")
    started = time.perf_counter()
    chain = embedded_chain()
    manifest = deploy_dev_stack(chain, asc_manager=True)
    manager_address = manifest.contracts["ASCManager"]
    token = contract_at(chain, "TestUSDC", manifest.token.address)
    manager = contract_at(chain, "ASCManager", manager_address)
    say(f"chain      {manifest.network} (in-process py-evm), TestUSDC at "
        f"{manifest.token.address}, ASCManager at {manager_address}")
    client_dev = manifest.account("client")
    client = Account.from_key(client_dev.private_key)
    operator = _fresh_account(chain)  # the provider: paid by both schemes, holds nothing yet
    vault_account = _fresh_account(chain)
    platform = SimulatedPlatform.generate()
    verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    price = atomic_units(PRICE)
    with tempfile.TemporaryDirectory() as tmp:
        settlements = SettlementStore(f"sqlite:///{Path(tmp) / 'journal.db'}")
        facilitator = Facilitator(chain, chain.accounts[1], settlements)
        provider_store = SqlChannelStore(f"sqlite:///{Path(tmp) / 'provider.db'}")
        a402 = A402Config(
            enclave=platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES),
            operator=operator, chain=chain, manager=manager_address,
            vault_policy=AttestationPolicy(frozenset({VAULT_CODE})), verifiers=[verifier],
            store=provider_store, watching=Watching(poll_interval=0.2),
        )
        vault_store = VaultStore(f"sqlite:///{Path(tmp) / 'vault.db'}")
        vault_store.claim_for(vault_account.address)
        vault = VaultService(VaultConfig(
            chain=chain, account=vault_account, manager=manager_address, store=vault_store,
            enclave=vault_enclave(platform, VAULT_CODE, vault_store), verifiers=[verifier],
            provider_policy=AttestationPolicy(frozenset({PROVIDER_CODE})),
            token=manifest.token, deposits=Deposits(deposit_multiple=channel_covers or requests),
            timing=Timing(poll_interval=0.2),
            connections=Connections(allow_private_targets=True),  # the provider: 127.0.0.1
        ))
        # The vault's money sits at its enclave's address; its own account only pays gas.
        watched = {"client": client.address, "provider": operator.address,
                   "vault": vault.address, "ASCManager pool": manager_address}
        before = _balances(chain, manifest, watched)
        with serve_in_thread(facilitator_app(facilitator)) as facilitator_url:
            api = A402Payments(PaymentMiddleware(
                weather_api(), routes={"GET /weather/*": PRICE}, pay_to=operator.address,
                token=manifest.token, network=manifest.network, facilitator=facilitator_url,
            ), a402)
            with serve_in_thread(api) as api_url, serve_in_thread(vault_app(vault)) as vault_url:
                say(f"paid API   {api_url}/weather/<city> ({PRICE} USDC per call; "
                    "schemes exact and a402, simulated provider enclave)")
                say(f"vault      {vault_url} (simulated enclave; simulation root trusted "
                    "explicitly)\n")
                # x402 exact, measured here on the same chain, for the comparison.
                first = chain.w3.eth.block_number + 1
                exact_calls = pay_weather(chain, api_url, client_dev.private_key, exact_batch)
                exact = _mined(chain, [token, manager], first, chain.w3.eth.block_number)
                mid = _balances(chain, manifest, watched)

                first = chain.w3.eth.block_number + 1
                run = _through_vault(say, client, vault_url, api_url, requests, price,
                                     ExpectedVault(vault.address, manager_address,
                                                   manifest.token.address))
                a402_txs = _mined(chain, [token, manager], first, chain.w3.eth.block_number)
        settlements.close()
        provider_store.close()
        vault_store.close()

    after = _balances(chain, manifest, watched)
    exact_ok = len(exact_calls) == exact_batch and all(
        c.status == 200 and c.transaction for c in exact_calls)
    _summary(say, requests, run, exact_calls, exact, a402_txs, before, mid, after)
    conserved = sum(before.values()) == sum(after.values())
    deposit = 2 * requests * price
    ok = (conserved and exact_ok and run.ok and len(run.latencies) == requests
          and before["client"] - mid["client"] == exact_batch * price
          and mid["provider"] - before["provider"] == exact_batch * price
          and mid["client"] - after["client"] == deposit
          and after["provider"] - mid["provider"] == requests * price
          and after["vault"] == mid["vault"] == before["vault"]
          and after["ASCManager pool"] - mid["ASCManager pool"]
          == deposit - requests * price == run.vault_balance
          and a402_txs.count.get("createASCFromPool") == 1
          and a402_txs.count.get("closeASC") == 1)
    say(f"\nran in {time.perf_counter() - started:.1f} s on {manifest.network}")
    say("result     " + ("OK: one channel, every request paid once, balances conserved"
                         if ok else "FAILED"))
    return 0 if ok else 1


@dataclass
class VaultRun:
    """What the client saw: per-call latency, what it paid, and the channel's outcome."""

    latencies: list[float] = field(default_factory=list)
    paid: int = 0
    channels: int = 0
    close: dict[str, Any] = field(default_factory=dict)
    vault_balance: int = -1
    ok: bool = False


def _through_vault(say: Say, client: LocalAccount, vault_url: str, api_url: str,
                   requests: int, price: int, expect: ExpectedVault) -> VaultRun:
    """Deposit, pay ``requests`` calls through the vault, then close the one channel."""
    run = VaultRun()
    with VaultClient(vault_url, client, expect=expect) as vault:
        deposited = vault.deposit(2 * requests * price)  # half stays in the pool
        if deposited.get("state") != "credited":
            say(f"deposit    not credited: {deposited}")
            return run
        statuses = []
        for i in range(requests):
            city = CITIES[i % len(CITIES)]
            t0 = time.perf_counter()
            result = vault.invoke(f"{api_url}/weather/{city}", max_price=price)
            run.latencies.append((time.perf_counter() - t0) * 1000)
            statuses.append((result.outcome, result.status))
            run.paid += result.amount
        view = vault.account_info()
        open_channels = [c for c in view["channels"] if c["phase"] != "settled"]
        run.channels = len(view["channels"])
        if len(open_channels) != 1:
            say(f"channels   expected one open channel, found {view['channels']}")
            return run
        run.close = vault.close_channel(open_channels[0]["channelId"])
        view = vault.account_info()
    run.vault_balance = int(view["balance"])
    run.ok = (all(s == ("paid", 200) for s in statuses) and run.paid == requests * price
              and run.channels == 1 and run.close.get("phase") == "settled"
              and int(run.close.get("providerPayout", -1)) == requests * price
              and int(view["paid"]) == requests * price)
    return run


def _balances(chain: Chain, manifest: Manifest, who: dict[str, str]) -> dict[str, int]:
    return {name: token_balance(chain, manifest.token.address, a) for name, a in who.items()}


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _summary(say: Say, requests: int, run: VaultRun, exact_calls: list[Any],
             exact: Ledger, a402: Ledger, before: dict[str, int], mid: dict[str, int],
             after: dict[str, int]) -> None:
    say(f"requests   {requests} through one channel ({run.channels} opened), "
        f"{format_usdc(run.paid)} USDC paid in all; {len(exact_calls)} x402 exact for comparison")
    say(f"channel    {run.close.get('channelId', '?')}: closed {run.close.get('phase', '?')}, "
        f"provider {format_usdc(int(run.close.get('providerPayout', 0)))}, "
        f"client back {format_usdc(int(run.close.get('clientPayout', 0)))}")
    say("\non-chain transactions (counted block by block from the chain)")
    say(f"  {'scheme':<14}{'function':<28}{'txs':>5}{'gas':>12}")
    for scheme, ledger in (("x402 exact", exact), ("A402 channel", a402)):
        for name, n in ledger.count.items():
            say(f"  {scheme:<14}{name:<28}{n:>5}{ledger.gas[name]:>12,}")
    # The first exact payment to a fresh payee also creates its balance slot; the
    # later ones are the steady price, so N payments = the measured batch plus the
    # rest at the steady (median) gas.
    steady = statistics.median([c.gas for c in exact_calls[1:]] or [exact.total_gas])
    exact_n = exact.total_gas + (requests - len(exact_calls)) * steady
    lifecycle = a402.gas.get("createASCFromPool", 0) + a402.gas.get("closeASC", 0)
    say(f"\n{'gas':<30}{'x402 exact':>16}{'A402 channel':>16}")
    say(f"{f'for {requests} requests':<30}{exact_n:>16,.0f}{a402.total_gas:>16,}")
    say(f"{'per request':<30}{exact_n / requests:>16,.0f}{a402.total_gas / requests:>16,.0f}")
    say(f"{f'transactions for {requests}':<30}{requests:>16}{a402.total_count:>16}")
    say(f"  channel lifecycle (createASCFromPool + closeASC) {lifecycle:,} gas; the rest of "
        "the A402 column is the client's deposit into its pool balance with the vault "
        "(depositToPoolWithAuthorization: one signature, relayed by the vault)")
    say(f"  x402 exact for {requests}: the {len(exact_calls)} payments measured here plus "
        f"{requests - len(exact_calls)} more at their steady {steady:,.0f} gas "
        "(one transferWithAuthorization each)")
    if exact_n and a402.total_gas:
        say(f"  ratio      {exact_n / a402.total_gas:.1f}× less gas through the channel")
    say(f"\nlatency p50  exact {_p50([c.latency_ms for c in exact_calls]):.1f} ms "
        f"(402, sign, verify, serve, settle on-chain)   A402 {_p50(run.latencies):.1f} ms "
        "(vault, EXEC, REPLY, AUTH, REVEAL, ACK)")
    say(f"\n{'balances (USDC)':<20}{'before':>16}{'after exact':>16}{'after A402':>16}"
        f"{'change':>16}")
    for name in before:
        say(f"{name:<20}{format_usdc(before[name]):>16}{format_usdc(mid[name]):>16}{format_usdc(after[name]):>16}"
            f"{(after[name] - before[name]) / 1e6:>+16,.6f}")
    total = [sum(b.values()) for b in (before, mid, after)]
    say(f"{'total':<20}{format_usdc(total[0]):>16}{format_usdc(total[1]):>16}{format_usdc(total[2]):>16}"
        f"{(total[2] - total[0]) / 1e6:>+16,.6f}")
    say(f"vault ledger: the client's balance in the vault is {format_usdc(run.vault_balance)} USDC "
        "(= its pool balance in the ASCManager, which it can take out without the vault; "
        "the vault's own address holds nothing)")
