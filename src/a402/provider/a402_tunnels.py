"""The vault tunnels a provider holds: handshakes in, established tunnels by id, eviction.

A vault enclave opens a tunnel with the Noise XX handshake at ``…/session``
(:mod:`a402.tee.channel`; attestation verified both ways, bound to the
transcript): :meth:`Tunnels.open` takes message 1 and answers message 2 under
a fresh tunnel id, :meth:`Tunnels.finish` takes message 3 and verifies the
vault's evidence. Only then does the id name an established tunnel that the
frame driver (:mod:`a402.provider.a402_driver`) takes frames for.

The tunnel's keys stay in the enclave: the host keeps only the enclave's
opaque handle, when it was last used, and a lock that keeps one frame of a
tunnel in the enclave at a time (Noise counters are ordered anyway). Past
``limits.max_tunnels``, or idle longer than ``limits.tunnel_idle_timeout``,
a tunnel is forgotten (never while a frame of it is being handled); its
vault gets :class:`~a402.wire.transport.UnknownTunnel` and handshakes again.
Forgetting a tunnel loses nothing: channel state lives in the enclave and the
store, and a new tunnel must OPEN (prove it speaks for the channel's vault)
before it may drive a channel.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from a402.provider.a402_config import A402Config
from a402.provider_enclave import ProviderEnclave
from a402.tee import TeeError
from a402.wire.a402 import PROLOGUE
from a402.wire.transport import UnknownTunnel


@dataclass
class VaultTunnel:
    """One vault's tunnel as the host holds it: the enclave's secure-channel handle."""

    handle: str
    last_used: float
    established: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Tunnels:
    """The provider's tunnels by id. ``config`` gives the enclave, the vault policy and
    verifiers, the limits (read at each handshake) and the clock."""

    def __init__(self, config: A402Config, provider_enclave: ProviderEnclave) -> None:
        self.config = config
        self.enclave = config.enclave
        self.provider_enclave = provider_enclave
        self._tunnels: dict[str, VaultTunnel] = {}

    def open(self, first: bytes) -> tuple[str, bytes]:
        """Handshake message 1 in, tunnel id and message 2 out."""
        self._evict()
        handle, second = self.enclave.channel_respond(
            first, self.config.vault_policy, self.config.verifiers, prologue=PROLOGUE
        )
        tunnel_id = secrets.token_urlsafe(18)
        self._tunnels[tunnel_id] = VaultTunnel(handle, self.config.clock())
        return tunnel_id, second

    def finish(self, tunnel_id: str, third: bytes) -> bytes:
        """Handshake message 3 in: verifies the vault's evidence; returns its measurement.

        Raises :class:`UnknownTunnel` for an id with no handshake in progress, and the
        enclave's :class:`~a402.tee.TeeError` (the tunnel is dropped) for evidence refused.
        """
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or tunnel.established:
            raise UnknownTunnel(tunnel_id, "no handshake in progress under that id")
        try:
            peer = self.enclave.channel_accept(tunnel.handle, third)
        except TeeError:
            self._drop(tunnel_id)
            raise
        tunnel.established, tunnel.last_used = True, self.config.clock()
        return peer.measurement

    def is_established(self, tunnel_id: str) -> bool:
        """Whether ``tunnel_id`` names a finished handshake (it may still expire later)."""
        tunnel = self._tunnels.get(tunnel_id)
        return tunnel is not None and tunnel.established

    def get(self, tunnel_id: str) -> VaultTunnel:
        """The established tunnel ``tunnel_id``, or :class:`UnknownTunnel`."""
        tunnel = self._tunnels.get(tunnel_id)
        if tunnel is None or not tunnel.established:
            raise UnknownTunnel(tunnel_id)
        return tunnel

    def _drop(self, tunnel_id: str) -> None:
        tunnel = self._tunnels.pop(tunnel_id, None)
        if tunnel is not None:
            self.provider_enclave.forget(tunnel.handle)
            self.enclave.channel_close(tunnel.handle)

    def _evict(self) -> None:
        limits, now = self.config.limits, self.config.clock()
        stale = [
            tid for tid, t in self._tunnels.items()
            if now - t.last_used > limits.tunnel_idle_timeout and not t.lock.locked()
        ]
        for tid in stale:
            self._drop(tid)
        while len(self._tunnels) >= limits.max_tunnels:
            oldest = min(self._tunnels, key=lambda tid: self._tunnels[tid].last_used)
            self._drop(oldest)


__all__ = ["Tunnels", "VaultTunnel"]
