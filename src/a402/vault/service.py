"""The Liquidity Vault service: its configuration, its parts, and what its API calls do.

:class:`VaultService` composes the store, the vault enclave, the channels
(:mod:`~a402.vault.channels`), the paying proxy (:mod:`~a402.vault.invoke`: one
:class:`~a402.vault.call.PaidCall` per call),
deposits and withdrawals (:mod:`~a402.vault.funds`) and the worker
(:mod:`~a402.vault.worker`). :mod:`a402.vault.app` is its HTTP face and
``a402 vault`` its command line; in-process (the demo, benchmarks), build
``VaultService(VaultConfig(...))`` and serve :func:`a402.vault.app.create_app`.

Keys: the vault *is* its enclave's attested key (:mod:`a402.vault_enclave`).
Its Ethereum address is every channel's ``vault``, holds the pooled deposits
(clients pay it; ``GET /v1/info`` names it and clients sign their calls for
it), and signs σ_U, states, approvals and withdrawals — only from the
enclave's code, against the client balances and the client-signed calls it
checks. The host's Ethereum account (``account``) pays gas and nothing else:
it holds no tokens, and no signature of it moves any. The vault enclave also
attests the vault to providers (the tunnel's Noise handshake) and seals what
the vault stores. Its ledger (client balances, approvals, withdrawals) is
stored by :mod:`a402.vault.ledger`: replicas serialize on that row, and a
vault whose database has channels or deposits but no ledger refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from a402.asc_manager import ASCManager
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import contract_at
from a402.evm.address import address_key
from a402.exact.eip3009 import Eip712Domain
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import SettlementStore
from a402.tee import AttestationPolicy, AttestationVerifier, Enclave
from a402.tee.chains import check_backends
from a402.vault_enclave import VaultEnclaveCode
from a402.wire import vault_api as api

from . import store as vault_store
from .channels import Channels, VaultError
from .funds import Funds
from .invoke import Invoker
from .ledger import Ledger
from .offers import OfferCache
from .settings import Batching, Connections, Deposits, Timing
from .txjournal import TxJournal
from .worker import Worker

log = logging.getLogger("a402.vault")

_MAX_ALLOWANCE = 2**256 - 1


@dataclass(frozen=True, kw_only=True)
class VaultConfig:
    """Everything a vault needs: its parts, and its settings in four groups.

    - ``chain``, ``account``, ``manager``: where channels live, and the host's gas
      account (the vault's address is its enclave's: :attr:`VaultService.address`).
    - ``store``: :class:`~a402.vault.store.VaultStore`; its URL is used for the
      deposit journal (the facilitator's tables) in the same database.
    - ``enclave``: the vault enclave (attests the vault, seals its state);
      ``verifiers``/``provider_policy``: which provider enclaves are acceptable.
    - ``token``: the channel token's EIP-712 name/version (read from the chain if None).
    - ``timing``, ``deposits``, ``batching``, ``connections``: what an operator may
      tune (:mod:`a402.vault.settings`, one ``a402 vault`` flag per field). By default
      the vault refuses to fetch URLs on loopback, private and link-local addresses
      (``connections.allow_private_targets``, :mod:`a402.vault.targets`).
    """

    chain: Chain
    account: LocalAccount
    manager: str
    store: vault_store.VaultStore
    enclave: Enclave
    verifiers: Sequence[AttestationVerifier]
    provider_policy: AttestationPolicy
    token: TokenInfo | None = None
    timing: Timing = field(default_factory=Timing)
    deposits: Deposits = field(default_factory=Deposits)
    batching: Batching = field(default_factory=Batching)
    connections: Connections = field(default_factory=Connections)


def read_token(chain: Chain, address: str) -> TokenInfo:
    """A token's EIP-712 domain name/version, symbol and decimals, from the token itself."""
    token = contract_at(chain, "TestUSDC", address)
    return TokenInfo(token.address, token.functions.name().call(),
                     token.functions.symbol().call(), token.functions.version().call(),
                     int(token.functions.decimals().call()))


class VaultService:
    """One vault: ``start()`` it (recovery runs first), serve its API, ``stop()`` it."""

    def __init__(self, config: VaultConfig) -> None:
        self.config = config
        self.chain = config.chain
        self.account = config.account  # pays gas only
        self.store = config.store
        config.store.claim_for(config.account.address)
        self.manager = ASCManager(config.chain, config.manager)
        check_backends(self.manager.domain.chain_id,
                       [config.enclave.kind, *(v.kind for v in config.verifiers)])
        self.token = config.token or read_token(config.chain, self.manager.token)
        if address_key(self.token.address) != address_key(self.manager.token):
            raise ValueError(f"the ASCManager escrows {self.manager.token}, "
                             f"not {self.token.address}")
        timing = config.timing
        # A store with a history but no ledger row lost it: refused (LedgerMissing).
        first_boot = Ledger.first_boot(config.store)
        self.vault = VaultEnclaveCode.start(
            config.enclave, domain=self.manager.domain, network=config.chain.network,
            token=Eip712Domain(self.token.name, self.token.version, config.chain.chain_id,
                               self.token.address),
            auth_window=timing.auth_window, first_boot=first_boot)
        #: The enclave's ledger and its row (replicas serialize on it).
        self.ledger = Ledger(self.vault, config.store)
        self.ledger.load()
        if first_boot:  # stored at once: a restart keeps this life (and what it issued)
            self.ledger.store_first()
        #: The vault's address: its enclave's key.
        self.address = self.vault.checksum_address
        self.http = httpx.AsyncClient(timeout=config.connections.http_timeout, trust_env=False)
        self.journal = TxJournal(config.chain, config.account, config.store)
        self.channels = Channels(
            account=config.account, manager=self.manager, token=self.token, store=config.store,
            journal=self.journal, enclave=config.enclave, vault=self.vault, ledger=self.ledger,
            verifiers=config.verifiers,
            policy=config.provider_policy, timing=timing, deposits=config.deposits,
            batching=config.batching, connections=config.connections,
        )
        self.invoker = Invoker(self.channels, http=self.http, offers=OfferCache(timing.offer_ttl),
                               queue_timeout=timing.queue_timeout, retry_wait=timing.retry_wait,
                               allow_private_targets=config.connections.allow_private_targets,
                               nonce_keep=2 * timing.auth_window)
        self.channels.on_unfinished = self.invoker.record_aborted
        facilitator = Facilitator(config.chain, config.account,
                                  SettlementStore(config.store.url),
                                  FacilitatorConfig(receipt_timeout=timing.chain_timeout))
        self.funds = Funds(chain=config.chain, channels=self.channels, token=self.token,
                           store=config.store, facilitator=facilitator, journal=self.journal,
                           chain_timeout=timing.chain_timeout)
        self.worker = Worker(self.channels, self.invoker, self.funds,
                             poll_interval=timing.poll_interval,
                             pending_escalation=timing.pending_escalation)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Take the vault's lock, let the manager pull pooled deposits, then run recovery
        and the worker."""
        self.store.lock_for(self.account.address)
        # A standby built before the process it takes over from last changed the ledger.
        await asyncio.to_thread(self.ledger.refresh)
        await asyncio.to_thread(self._approve)
        await self.worker.start()

    def _approve(self) -> None:
        """The enclave's EIP-2612 permit for the ASCManager (the only spender it permits),
        submitted by the gas account."""
        token = contract_at(self.chain, "TestUSDC", self.token.address)
        allowance = token.functions.allowance(self.address, self.manager.address).call()
        if allowance < _MAX_ALLOWANCE // 2:
            nonce = int(token.functions.nonces(self.address).call())
            deadline = _MAX_ALLOWANCE
            signature = self.vault.permit(self.manager.address, _MAX_ALLOWANCE, nonce, deadline)
            v = signature[64] if signature[64] >= 27 else signature[64] + 27
            call = token.functions.permit(self.address, self.manager.address, _MAX_ALLOWANCE,
                                          deadline, v, signature[:32], signature[32:64])
            tx = self.journal.send(f"approve:{self.manager.address}:{time.time_ns()}", "approve",
                                   self.manager.address, call)
            if not self.journal.wait(tx, self.config.timing.chain_timeout).ok:
                raise RuntimeError(f"permitting the ASCManager failed ({tx.tx_hash})")

    async def stop(self) -> None:
        await self.worker.stop()
        await self.channels.aclose()
        await self.http.aclose()

    # ----------------------------------------------------------------- facts

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: who the vault is and how to pay it (no authentication)."""
        return {
            "vault": self.address,
            "network": self.chain.network,
            "chainId": self.chain.chain_id,
            "ascManager": self.manager.address,
            "disputeWindow": self.manager.dispute_window,
            "token": {"address": self.token.address, "name": self.token.name,
                      "version": self.token.version, "symbol": self.token.symbol,
                      "decimals": self.token.decimals},
            "deposit": self.funds.requirement(0).to_wire(),
            "enclave": {"kind": self.config.enclave.kind,
                        "measurement": "0x" + self.config.enclave.measurement.hex()},
            "funding": [api.POOL, api.WALLET],
            "authWindow": self.config.timing.auth_window,
            # Signed into every call: a new life means this vault lost its ledger.
            "life": self.vault.life_id,
        }

    async def account_view(self, client: str) -> dict[str, Any]:
        """``GET /v1/account``: balance, conservation terms and channels of one client."""
        totals = await asyncio.to_thread(self.store.totals, client)
        channels = await asyncio.to_thread(self.store.channels, client=client)
        return {
            "client": client,
            "balance": str(totals.balances),
            "deposits": str(totals.deposits),
            "inChannels": str(totals.in_channels),
            "paid": str(totals.paid),
            "withdrawn": str(totals.withdrawn),
            "channels": [_channel_json(c) for c in channels if c.phase != vault_store.PROPOSED],
        }

    async def close_channel(self, client: str, cid: str) -> tuple[int, dict[str, Any]]:
        """``POST /v1/channels/{cid}/close``: cooperative close, the rest back to the client."""
        row = await asyncio.to_thread(self.store.channel, cid.lower())
        if row is None or row.client != address_key(client):
            raise VaultError(404, api.NOT_FOUND, "no such channel of yours")
        if row.phase == vault_store.OPEN:
            lock = self.channels.pair_lock(row.client, row.provider)
            try:
                await asyncio.wait_for(lock.acquire(), self.config.timing.queue_timeout)
            except TimeoutError:
                raise VaultError(409, api.CHANNEL_BUSY, "a request is in flight; try again",
                                 retryable=True) from None
            try:
                fresh = await asyncio.to_thread(self.store.channel, row.cid)
                if fresh is not None and fresh.phase == vault_store.OPEN:
                    await self.channels.close(fresh)
            except Exception as e:  # the worker finishes or escalates it
                log.warning("close of %s not finished: %s", row.cid, e)
            finally:
                lock.release()
        row = await asyncio.to_thread(self.store.channel, row.cid)
        assert row is not None
        return (200 if row.phase == vault_store.SETTLED else 202), _channel_json(row)


def _channel_json(row: vault_store.Channel) -> dict[str, Any]:
    return {
        "channelId": row.cid, "provider": row.provider, "endpoint": row.endpoint,
        "funding": row.funding, "phase": row.phase, "status": row.status,
        "deposit": row.deposit, "version": row.version, "free": row.free,
        "locked": row.locked, "providerBalance": row.provider_balance,
        "clientPayout": row.client_payout, "providerPayout": row.provider_payout,
        "settlement": row.settle_tx, "disputeDeadline": row.deadline,
    }
