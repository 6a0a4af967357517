"""Gas of every ASCManager entry point, measured on anvil, next to the A402 paper's Table 1.

Each figure is the ``gasUsed`` of one real transaction (21,000 intrinsic gas
and calldata included), with signatures and claims produced by the channel
state machines (:mod:`a402.asc.machine`), so the calldata is what a deployment
would send.

Scenario ("steady state"): the manager already escrows other channels, the
client keeps some tokens after its deposit, and the provider already holds
tokens, so no token balance goes from zero to non-zero (an ERC-20 balance
slot created from zero costs ~17,100 gas more; the table shows that case once
for closeASC). The client approved the manager once, with an unlimited
allowance (listed separately; createASCWithAuthorization needs no approval).
Two rows show a vault whose key never sends (an enclave's): a gas payer sends
``createASC`` with the vault's signed A402Open(channel id, deadline), and
``initForceCloseFor`` with the vault's signed force-close request (each with
its deadline).

Pool rows: a client's tokens pooled with the vault on-chain (``depositToPool``,
``depositToPoolWithAuthorization``); ``createASCFromPool`` opens a channel by
debiting that balance (no token moves) and its close credits the client's share
back to it, and ``withdrawFromPool`` takes it out.

Batches (second table): the vault opens N channels from a client's pool balance
(as ``a402 vault`` does for pool-funded channels) with one
``createASCFromPoolBatch``, three payments go through each, and it closes all N
with one ``closeASCBatch``. The figure per channel is the gasUsed of those two
transactions divided by N, nothing left out. Same steady state: the pool
balance stays non-zero, every provider already holds some tokens. Two provider
mixes: N distinct providers (one payout transfer per channel) and one provider
for all N (one payout in all). The "single calls" row is the same pool channel
through createASCFromPool + closeASC, for comparison.

Usage: ``python bench/asc_gas.py`` — prints a table and writes
``bench/results/asc_gas.json``. Needs anvil (``npm ci``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import RPCEndpoint

from a402.asc import (
    BalanceState,
    ChannelTerms,
    CloseReady,
    ProviderChannel,
    SignedState,
    VaultChannel,
    decode,
    encode,
    force_close_digest,
    sign_channel_open,
    sign_open_approval,
    sign_pool_open_approval,
)
from a402.asc_manager import ASCManager
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import deploy_contract, transact
from a402.crypto import EVM, EcdsaSigner, SecretKey

RESULTS = Path(__file__).resolve().parent / "results" / "asc_gas.json"
DEPOSIT = 10_000_000
DISPUTE_WINDOW = 86_400
MAX_UINT = 2**256 - 1

#: Batch sizes of the second table.
BATCH_SIZES = (1, 2, 5, 10, 50)

#: A402 paper, Table 1 (Ethereum, standard mode). The paper does not say how it measured.
PAPER = {
    "createASC": 26_050,
    "closeASC": 57_637,
    "lifecycle (createASC + closeASC)": 83_687,
    "forceClose (provider)": 116_650,
    "initForceClose": 51_980,
    "finalForceClose": 62_787,
}


@dataclass
class Setup:
    chain: Chain
    token: Any
    manager: ASCManager
    client: LocalAccount
    vault: LocalAccount
    provider: LocalAccount
    schnorr: SecretKey

    def terms(
        self, client: LocalAccount | None = None, provider: LocalAccount | None = None
    ) -> ChannelTerms:
        return ChannelTerms(
            client=(client or self.client).address,
            vault=self.vault.address,
            provider=(provider or self.provider).address,
            provider_key=self.schnorr.public_key,
            deposit=DEPOSIT,
            salt=os.urandom(32),
        )

    def machines(
        self, terms: ChannelTerms, provider: LocalAccount | None = None
    ) -> tuple[VaultChannel, ProviderChannel]:
        domain = self.manager.domain
        vault = VaultChannel(terms, domain, EcdsaSigner(bytes(self.vault.key)), lock_timeout=30)
        key = EcdsaSigner(bytes((provider or self.provider).key))
        return vault, ProviderChannel(
            terms, domain, key, self.schnorr, ack_timeout=10, lock_timeout=29
        )

    def open(self, terms: ChannelTerms, client: LocalAccount | None = None) -> int:
        consent = sign_channel_open(
            EcdsaSigner(bytes((client or self.client).key)), self.manager.domain, terms
        )
        return int(self.manager.create(self.vault, terms, consent)["gasUsed"])


def _wire(message: Any) -> Any:
    return decode(encode(message))


def _pay(vault: VaultChannel, provider: ProviderChannel, amount: int, *, ack: bool = True) -> None:
    exec_ = vault.request(b"GET /resource", amount, now=0)
    provider.receive(_wire(exec_), now=0)
    auth = vault.receive(_wire(provider.reply(exec_.request_id, b"result")), now=0).send[0]
    reveal = provider.receive(_wire(auth), now=0).send[0]
    if ack:
        provider.receive(_wire(vault.receive(_wire(reveal), now=0).send[0]), now=0)


def _close(vault: VaultChannel, provider: ProviderChannel) -> SignedState:
    close_ack = provider.receive(_wire(vault.close()), now=0).send[0]
    ready = vault.receive(_wire(close_ack), now=0).events[0]
    assert isinstance(ready, CloseReady)
    return ready.signed


def _funded(chain: Chain, token: Any, tokens: int) -> LocalAccount:
    from eth_account import Account

    account = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=10**18)
    if tokens:
        transact(chain, chain.accounts[0], token.functions.mint(account.address, tokens))
    return account


def _increase_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
    chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])


def _setup(chain: Chain) -> Setup:
    deployer = chain.accounts[0]
    token = deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2", deployer.address)
    manager = ASCManager.deploy(chain, deployer, token.address, DISPUTE_WINDOW)
    s = Setup(
        chain,
        token,
        manager,
        client=_funded(chain, token, 100 * DEPOSIT),
        vault=_funded(chain, token, 0),
        provider=_funded(chain, token, 1),
        schnorr=EVM.generate_key(),
    )
    return s


def measure(chain: Chain) -> dict[str, int]:
    """Gas per entry point, in the steady-state scenario of the module docstring."""
    s = _setup(chain)
    token, manager = s.token, s.manager
    gas: dict[str, int] = {}
    gas["approve (client, once)"] = int(
        transact(chain, s.client, token.functions.approve(manager.address, MAX_UINT))["gasUsed"]
    )
    s.open(s.terms())  # warm-up: the manager's token balance is now non-zero

    # Cooperative lifecycle.
    terms = s.terms()
    gas["createASC"] = s.open(terms)
    vault, provider = s.machines(terms)
    for _ in range(3):
        _pay(vault, provider, 1_000)
    signed = _close(vault, provider)
    cooperative = SignedState(signed.state, b"", signed.provider_signature)  # the vault sends
    gas["closeASC"] = int(manager.close(s.vault, terms, cooperative)["gasUsed"])
    gas["lifecycle (createASC + closeASC)"] = gas["createASC"] + gas["closeASC"]

    # EIP-3009 opening (no approval).
    terms = s.terms()
    now = chain.w3.eth.get_block("latest")["timestamp"]
    auth = manager.sign_receive_authorization(
        s.client,
        terms,
        token_name="USD Coin",
        token_version="2",
        valid_after=0,
        valid_before=now + 3_600,
    )
    gas["createASCWithAuthorization"] = int(
        manager.create_with_authorization(s.vault, terms, auth)["gasUsed"]
    )

    # Provider force-close from OPEN: state 3 (vault-signed) + the pending payment 3.
    terms = s.terms()
    s.open(terms)
    vault, provider = s.machines(terms)
    for _ in range(3):
        _pay(vault, provider, 1_000)
    _pay(vault, provider, 1_000, ack=False)
    gas["forceClose (provider)"] = int(
        manager.force_close(s.provider, terms, provider.claim())["gasUsed"]
    )

    # Client force-close: init (co-signed state, two signatures), challenge, final.
    terms = s.terms()
    s.open(terms)
    vault, provider = s.machines(terms)
    _pay(vault, provider, 1_000)
    older = vault.latest_state()
    _pay(vault, provider, 1_000)
    newer = vault.latest_state()
    gas["initForceClose"] = int(manager.init_force_close(s.client, terms, older)["gasUsed"])
    challenge = SignedState(newer.state, newer.vault_signature, b"")  # the provider sends
    gas["challengeForceClose"] = int(manager.challenge(s.provider, terms, challenge)["gasUsed"])
    _increase_time(chain, DISPUTE_WINDOW)
    gas["finalForceClose"] = int(manager.final_force_close(s.client, terms)["gasUsed"])

    # Client force-close of the opening state (no signatures at all).
    terms = s.terms()
    s.open(terms)
    opening = SignedState(BalanceState(0, DEPOSIT, 0), b"", b"")
    gas["initForceClose (opening state)"] = int(
        manager.init_force_close(s.client, terms, opening)["gasUsed"]
    )

    # The provider answers a client force-close by claiming.
    terms = s.terms()
    s.open(terms)
    vault, provider = s.machines(terms)
    _pay(vault, provider, 1_000)
    _pay(vault, provider, 1_000, ack=False)
    manager.init_force_close(s.client, terms, opening)
    gas["forceClose (provider, during a dispute)"] = int(
        manager.force_close(s.provider, terms, provider.claim())["gasUsed"]
    )

    # The vault approving by signature: its key (an enclave's) never sends, a gas payer does.
    gas_payer = _funded(chain, token, 0)
    vault_key = EcdsaSigner(bytes(s.vault.key))
    terms = s.terms()
    consent = sign_channel_open(EcdsaSigner(bytes(s.client.key)), manager.domain, terms)
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 600
    approval = sign_open_approval(vault_key, manager.domain, terms, deadline)
    gas["createASC (vault signs, payer sends)"] = int(
        manager.create(gas_payer, terms, consent, approval, deadline)["gasUsed"]
    )
    vault, provider = s.machines(terms)
    _pay(vault, provider, 1_000)
    latest = vault.latest_state()
    request = vault_key.sign_digest(force_close_digest(
        manager.domain, terms.channel_id(manager.domain), latest.state.version, deadline))
    gas["initForceCloseFor (vault signs)"] = int(
        manager.init_force_close_for(gas_payer, terms, latest, request, deadline=deadline)[
            "gasUsed"]
    )

    # The pool: deposits, an open from it, its close back into it, the client's exit.
    gas["depositToPool"] = int(
        manager.deposit_to_pool(s.client, s.vault.address, s.client.address, 10 * DEPOSIT)[
            "gasUsed"]
    )
    now = chain.w3.eth.get_block("latest")["timestamp"]
    pool_auth = manager.sign_pool_deposit(
        s.client, s.vault.address, s.client.address, DEPOSIT, os.urandom(32),
        token_name="USD Coin", token_version="2", valid_after=0, valid_before=now + 3_600)
    gas["depositToPoolWithAuthorization"] = int(
        manager.deposit_to_pool_with_authorization(gas_payer, pool_auth)["gasUsed"]
    )
    terms = s.terms()
    gas["createASCFromPool"] = int(manager.create_from_pool(s.vault, terms)["gasUsed"])
    vault, provider = s.machines(terms)
    for _ in range(3):
        _pay(vault, provider, 1_000)
    signed = _close(vault, provider)
    gas["closeASC (pool channel)"] = int(
        manager.close(s.vault, terms, SignedState(signed.state, b"", signed.provider_signature))[
            "gasUsed"]
    )
    gas["lifecycle (createASCFromPool + closeASC)"] = (
        gas["createASCFromPool"] + gas["closeASC (pool channel)"])
    terms = s.terms()
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 600
    approval = sign_pool_open_approval(vault_key, manager.domain, terms, deadline)
    gas["createASCFromPool (vault signs, payer sends)"] = int(
        manager.create_from_pool(gas_payer, terms, approval, deadline)["gasUsed"]
    )
    gas["withdrawFromPool"] = int(
        manager.withdraw_from_pool(s.client, s.vault.address, s.client.address, DEPOSIT)[
            "gasUsed"]
    )

    # For contrast: closeASC when both payees' token balances start at zero.
    fresh_client, fresh_provider = _funded(chain, token, DEPOSIT), _funded(chain, token, 0)
    transact(chain, fresh_client, token.functions.approve(manager.address, MAX_UINT))
    terms = s.terms(fresh_client, fresh_provider)
    s.open(terms, fresh_client)
    vault, provider = s.machines(terms, fresh_provider)
    _pay(vault, provider, 1_000)
    signed = _close(vault, provider)
    gas["closeASC (payees' token balances were zero)"] = int(
        manager.close(s.vault, terms, SignedState(signed.state, b"", signed.provider_signature))[
            "gasUsed"
        ]
    )
    return gas


@dataclass(frozen=True)
class BatchLifecycle:
    """One pool-funded lifecycle of ``channels`` channels: open and close transactions."""

    channels: int
    providers: str  # "distinct" or "one"
    open_gas: int
    close_gas: int

    @property
    def per_channel(self) -> int:
        return round((self.open_gas + self.close_gas) / self.channels)


def _paid_final_states(s: Setup, channels: list[tuple[ChannelTerms, LocalAccount]]) -> list[Any]:
    """Three payments through each channel, then its final state (the vault will send)."""
    items = []
    for terms, provider_account in channels:
        vault, provider = s.machines(terms, provider_account)
        for _ in range(3):
            _pay(vault, provider, 1_000)
        signed = _close(vault, provider)
        items.append((terms, SignedState(signed.state, b"", signed.provider_signature)))
    return items


def measure_batches(
    chain: Chain, sizes: tuple[int, ...] = BATCH_SIZES
) -> list[BatchLifecycle]:
    """Lifecycle gas per channel when the vault opens and closes channels in batches."""
    s = _setup(chain)
    token, manager = s.token, s.manager
    transact(chain, chain.accounts[0], token.functions.mint(s.client.address, 10**6 * DEPOSIT))
    transact(chain, s.client, token.functions.approve(manager.address, MAX_UINT))
    # The client's pool balance with the vault (it stays non-zero throughout).
    manager.deposit_to_pool(s.client, s.vault.address, s.client.address, 10**6 * DEPOSIT)

    def lifecycle(n: int, providers: list[LocalAccount], *, batch: bool) -> BatchLifecycle:
        channels = [(s.terms(s.client, provider), provider) for provider in providers]
        terms_list = [terms for terms, _ in channels]
        if batch:
            open_gas = int(manager.create_from_pool_batch(s.vault, terms_list)["gasUsed"])
        else:
            (terms,) = terms_list
            open_gas = int(manager.create_from_pool(s.vault, terms)["gasUsed"])
        items = _paid_final_states(s, channels)
        if batch:
            close_gas = int(manager.close_batch(s.vault, items)["gasUsed"])
        else:
            ((terms, signed),) = items
            close_gas = int(manager.close(s.vault, terms, signed)["gasUsed"])
        mix = "one" if len(set(p.address for p in providers)) == 1 else "distinct"
        return BatchLifecycle(n, mix, open_gas, close_gas)

    rows = [lifecycle(1, [s.provider], batch=False)]
    for n in sizes:
        rows.append(lifecycle(n, [_funded(chain, token, 1) for _ in range(n)], batch=True))
        if n > 1:
            rows.append(lifecycle(n, [s.provider] * n, batch=True))
    return rows


def batch_table(rows: list[BatchLifecycle]) -> str:
    lines = [
        f"{'pool channels (createASCFromPool)':<36} {'providers':>9} {'open tx':>9} {'close tx':>9}"
        f" {'per channel':>12}",
        "-" * 79,
    ]
    for i, row in enumerate(rows):
        name = "single calls (FromPool, closeASC)" if i == 0 else f"one batch of {row.channels}"
        lines.append(
            f"{name:<36} {row.providers:>9} {row.open_gas:>9,} {row.close_gas:>9,}"
            f" {row.per_channel:>12,}"
        )
    paper = PAPER["lifecycle (createASC + closeASC)"]
    lines.append(f"{'paper: createASC + closeASC':<36} {'':>9} {'':>9} {'':>9} {paper:>12,}")
    return "\n".join(lines)


def table(gas: dict[str, int]) -> str:
    lines = [f"{'ASCManager entry point':<46} {'gas':>9} {'paper':>9}", "-" * 66]
    for name, used in gas.items():
        paper = PAPER.get(name)
        lines.append(
            f"{name:<46} {used:>9,} {paper:>9,}" if paper else f"{name:<46} {used:>9,} {'':>9}"
        )
    return "\n".join(lines)


def main() -> int:
    with start_anvil(accounts=2) as chain:
        gas = measure(chain)
        batches = measure_batches(chain)
    print(table(gas))
    print()
    print(batch_table(batches))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "asc_gas",
                "scenario": "steady state: no token balance created from zero, unlimited approval",
                "dispute_window_s": DISPUTE_WINDOW,
                "gas": gas,
                "batch_lifecycle": {
                    "scenario": "pool channels: one createASCFromPoolBatch of N, three"
                    " payments each, one closeASCBatch; per_channel = (open + close) / N",
                    "rows": [
                        {
                            "channels": row.channels,
                            "batched": i > 0,
                            "providers": row.providers,
                            "open_gas": row.open_gas,
                            "close_gas": row.close_gas,
                            "per_channel": row.per_channel,
                        }
                        for i, row in enumerate(batches)
                    ],
                },
                "paper_table_1": PAPER,
            },
            indent=2,
        )
        + "\n"
    )
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
