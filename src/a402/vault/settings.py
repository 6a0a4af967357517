"""What an operator may tune in a vault, in four groups: timing, deposits, batching and
connections; and a fifth, :class:`Mode`, that picks the funding mode (standard, or vault
mode's :mod:`a402.vault.mode`) and vault mode's settlement schedule.

:class:`~a402.vault.service.VaultConfig` holds one of each; the vault's parts take the
groups they need as they are (:class:`~a402.vault.channels.Channels` reads all four), and
``a402 vault`` generates one flag per field (:mod:`a402.settings`): ``lock_timeout`` is
``--lock-timeout``, with the same default and help.

Δ: ``lock_timeout`` (Δ_lock) is raised to the provider's own lock plus ``lock_margin``
if that is longer, so the provider never still executes a request whose lock the vault
considers expired (:mod:`a402.vault.tunnel` refuses a Δ_lock not above the provider's);
``pending_escalation``: how long a PENDING request (or an unfinished close) may wait for
the provider before the vault starts a force-close.
"""

from __future__ import annotations

from dataclasses import dataclass

from a402.settings import setting
from a402.wire import vault_api as api

from .settlement_schedule import SchedulePolicy

__all__ = ["Batching", "Connections", "Deposits", "Mode", "Timing"]


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How long the vault waits and keeps things, in seconds."""

    lock_timeout: float = setting(
        30.0, help="Δ_lock in seconds (raised above the provider's own lock)")
    lock_margin: float = setting(
        5.0, help="seconds Δ_lock is kept above a provider's own lock when that lock is "
                  "the longer")
    pending_escalation: float = setting(
        600.0, help="seconds a PENDING payment waits for the provider before the vault "
                    "force-closes the channel")
    chain_timeout: float = setting(
        30.0, help="seconds a call waits for a transaction to be mined")
    queue_timeout: float = setting(
        30.0, help="seconds a call waits while another call to the same provider is in "
                   "flight before it is answered busy (retryable)")
    retry_wait: float = setting(
        10.0, help="seconds a retried call waits for the worker to finish the same call "
                   "an earlier process left in flight")
    poll_interval: float = setting(
        1.0, help="seconds between watchtower/recovery rounds")
    offer_ttl: float = setting(
        300.0, help="seconds a provider's 402 offer for a URL is reused before it is "
                    "fetched again")
    auth_window: int = setting(
        api.DEFAULT_AUTH_WINDOW, help="seconds a signed API request's timestamp may be "
                                      "off the vault's clock (nonces are kept twice as long)")


@dataclass(frozen=True, kw_only=True)
class Deposits:
    """What a new channel escrows: a multiple of the price, within bounds and within the
    client's balance.

    A pool channel escrows ``deposit_multiple`` × the price, at least ``min_deposit``, at
    most ``max_deposit`` (never less than the price), within the client's balance — and
    within what the client's call allows, which the vault's enclave enforces whatever is
    configured here: the call's ``deposit``, else
    :data:`a402.vault_enclave.POOL_DEPOSIT_MULTIPLE` × its ``maxPrice``."""

    deposit_multiple: int = setting(
        100, help="a new pooled channel escrows this many times the price")
    min_deposit: int = setting(0, help="a new pooled channel escrows at least this "
                                       "(atomic units)")
    max_deposit: int | None = setting(None, help="a new pooled channel escrows at most this, "
                                                 "or the price if more (atomic units)")
    authorization_validity: int = setting(
        3600, help="seconds a wallet-funded channel's proposed deposit authorization "
                   "(EIP-3009) stays valid")


@dataclass(frozen=True, kw_only=True)
class Batching:
    """Opens (pool channels) and cooperative closes that come together share one
    transaction.

    Those that come within ``batch_window`` seconds of each other share one, at most
    ``batch_limit`` channels each (:mod:`a402.vault.aggregate`)."""

    batch_window: float = setting(
        0.25, help="seconds within which opens, or closes, share one transaction")
    batch_limit: int = setting(50, help="most channels one batch transaction carries")


@dataclass(frozen=True, kw_only=True)
class Connections:
    """How the vault reaches providers and the URLs it pays for."""

    tunnels_per_provider: int = setting(
        4, help="attested tunnels kept with each provider (one frame in flight on each; a "
                "channel always uses the same one)")
    http_timeout: float = setting(
        30.0, help="seconds an HTTP request of the vault, or a frame's round trip with a "
                   "provider, may take")
    allow_private_targets: bool = setting(
        False, help="also pay URLs on loopback, private and link-local addresses "
                    "(development: every party on one machine)")


@dataclass(frozen=True, kw_only=True)
class Mode:
    """Which funding mode the vault runs: ``standard`` (one ASCManager channel per client
    and provider, opened and closed on-chain) or ``vault`` (Liquidity Vault mode: every
    participant's balance in the enclave over an A402Vault, channels with no transaction,
    aggregated settlements batched by the scheduler below)."""

    mode: str = setting("standard", help="standard (ASCManager channels) or vault (A402Vault "
                                         "accounts; default: %(default)s)")
    a402_vault: str | None = setting(None, metavar="ADDRESS",
                                     help="vault mode: the A402Vault whose vault signer is "
                                          "this enclave's key (default: the manifest's)")
    a402_vault_salt: str | None = setting(
        None, metavar="HEX", help="vault mode: the CREATE2 salt --a402-vault was deployed with "
                                  "(published in /v1/info: participants check the contract's "
                                  "creation with it before they deposit)")
    deploy_a402_vault: bool = setting(
        False, help="vault mode, development chains: deploy an A402Vault for this enclave's "
                    "key on the manifest's token at first start (then reused from the "
                    "database)")
    settle_window: float = setting(
        120.0, help="vault mode: seconds a payout request waits before it may be settled")
    settle_jitter: float = setting(
        30.0, help="vault mode: a batch waits a random 0..this many more seconds")
    settle_min_participants: int = setting(
        2, help="vault mode: a batch pays at least this many participants, or waits")
    settle_max_per_tx: int = setting(
        100, help="vault mode: at most this many payees per settlement transaction")
    confirmations: int | None = setting(
        None, metavar="BLOCKS",
        help="vault mode: report deposits and claims this many blocks behind the head "
             "(default: at the chain's finalized block, which no reorg undoes; 0 only on a "
             "development chain that mines no blocks by itself)")

    def schedule(self) -> SchedulePolicy:
        """The settlement scheduler's policy these settings give."""
        return SchedulePolicy(window=self.settle_window, jitter=self.settle_jitter,
                              min_participants=self.settle_min_participants,
                              max_per_tx=self.settle_max_per_tx)
