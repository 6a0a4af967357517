"""``A402Config``: what a provider's A402 side is made of, and its settings.

Kept apart from the runtime so that the command line, the gateway and the
demos can name a configuration without loading the channel code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain
from a402.provider.a402_store import ChannelBlobStore
from a402.provider.settings import ChannelTimeouts, Limits, Watching
from a402.tee import AttestationPolicy, AttestationVerifier, Enclave


@dataclass
class A402Config:
    """How a provider accepts ``a402``: its parts, and its settings in three groups.

    - ``enclave``: the provider enclave; its attested key (launched with
      ``PROVIDER_PURPOSES``) makes every pre-signature and is the channels'
      ``providerKey``.
    - ``operator``: the provider's Ethereum account: its address is the
      channels' ``provider`` (it is paid, it signs states, it sends
      ``forceClose``); it needs gas.
    - ``chain``, ``manager``: where channels live (an ``ASCManager`` address);
      its token must be the token the middleware charges in.
    - ``vault_policy``, ``verifiers``: which vault enclaves may open tunnels.
    - ``store``: where sealed channel records go (:mod:`a402.provider.a402_store`).
    - ``timeouts``: Δ_ack and the lock (:class:`~a402.provider.settings.ChannelTimeouts`:
      no ACK ``ack_timeout`` after REVEAL, and the provider claims on-chain;
      ``lock_timeout``: how long the provider refuses a new EXEC while one executes;
      keep it below the vaults' Δ_lock).
    - ``watching``: the watcher's period and ``close_grace``, how long after
      co-signing a final state the provider waits for someone else to submit
      ``closeASC`` before submitting it itself (:class:`~a402.provider.settings.Watching`);
      ``watch``: whether the watcher runs at all.
    - ``limits``: how many tunnels, idle for how long (:class:`~a402.provider.settings.Limits`).
    - ``clock``: Unix time (a seam for tests).
    - ``vault_contract``: an ``A402Vault`` (Liquidity Vault mode) whose vault-mode channels
      the provider also admits: opened inside that vault's enclave against a client's
      pooled account, with no transaction; the earnings accrue to the provider's account
      there (``a402 vault withdraw`` pays them out). Its token must be the middleware's.
    """

    enclave: Enclave
    operator: LocalAccount
    chain: Chain
    manager: str
    vault_policy: AttestationPolicy
    verifiers: Sequence[AttestationVerifier]
    store: ChannelBlobStore
    timeouts: ChannelTimeouts = field(default_factory=ChannelTimeouts)
    watching: Watching = field(default_factory=Watching)
    limits: Limits = field(default_factory=Limits)
    watch: bool = True
    clock: Callable[[], float] = time.time
    vault_contract: str | None = None


__all__ = ["A402Config"]
