"""The channels a provider's host holds: one :class:`Slot` each, loaded from and saved to
the store sealed.

A slot is the host's handle on one channel the enclave runs: a read-only
:class:`~a402.provider_enclave.ChannelView` (public facts, no ``t``, σ̂ or σ_U),
the lock that keeps one message of the channel in the enclave at a time, and
the host's own on-chain bookkeeping (a force-close under way, a claim due,
settled, the closing transaction).

Persistence. :meth:`Channels.persist` writes the slot's record — the
enclave's sealed export of the channel (:meth:`ProviderEnclave.export`) and
the bookkeeping — and returns once it is durable; the frame driver calls it
*before* the answer that changed the channel leaves, so a crash never loses
a σ_U the provider acknowledged nor a ``t`` it revealed, and a retransmitted
message is answered from the enclave's record byte for byte. A channel not
in memory is brought back by :meth:`load` (the enclave restores it from the
sealed blob); the host cannot read or move a blob to another channel (the
seal's label names the channel), only hand back an older one, which the
chain bounds (:mod:`a402.tee.sealing`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from a402 import jsonbytes
from a402.asc import SignedState
from a402.asc.snapshot import hx, unhex
from a402.provider.a402_store import ChannelBlobStore
from a402.provider_enclave import ChannelView, ProviderEnclave

_RECORD_FORMAT = "a402/provider-channel-record/v2"


@dataclass
class Slot:
    """One channel as the host holds it: a view of the enclave's channel (public facts
    only) plus the host's own on-chain bookkeeping."""

    channel: ChannelView
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing_on_chain: bool = False
    force_close_due: bool = False
    onchain_closed: bool = False
    close_tx: str | None = None

    @property
    def channel_id(self) -> bytes:
        return self.channel.channel_id

    @property
    def final(self) -> SignedState | None:
        return self.channel.final

    @property
    def closed_at(self) -> float | None:
        return self.channel.closed_at


class Channels:
    """The host's channels by id, over ``store``; ``provider_enclave`` runs them."""

    def __init__(self, provider_enclave: ProviderEnclave, store: ChannelBlobStore) -> None:
        self.provider_enclave = provider_enclave
        self.store = store
        self._slots: dict[bytes, Slot] = {}
        #: Held while an OPEN decides whether a channel is new (one admission at a time).
        self.admitting = asyncio.Lock()

    def slot(self, channel_id: bytes) -> Slot | None:
        """The channel if it is in memory (for the watcher, and tests' read-only checks)."""
        return self._slots.get(channel_id)

    def active(self) -> list[Slot]:
        """The channels in memory that are not settled on-chain."""
        return [s for s in self._slots.values() if not s.onchain_closed]

    def closing(self, channel_id: bytes) -> bool:
        """Whether a force-close of the channel is under way (it takes no new EXEC)."""
        slot = self._slots.get(channel_id)
        return slot is not None and slot.closing_on_chain

    def new(self, channel_id: bytes) -> Slot:
        """A slot for a channel the enclave just admitted; :meth:`add` it once persisted."""
        return Slot(self._view(channel_id))

    def add(self, slot: Slot) -> None:
        self._slots[slot.channel_id] = slot

    async def load(self, channel_id: bytes) -> Slot | None:
        """The channel, from memory or from the store (restored into the enclave)."""
        slot = self._slots.get(channel_id)
        if slot is not None:
            return slot
        blob = await asyncio.to_thread(self.store.load, channel_id)
        if blob is None:
            return None
        return self._slots.setdefault(channel_id, self._restore(channel_id, blob))

    async def load_active(self) -> list[Slot]:
        """Every stored channel not settled on-chain (after a restart: resume watching)."""
        ids = await asyncio.to_thread(self.store.active)
        slots = [await self.load(cid) for cid in ids]
        return [s for s in slots if s is not None]

    async def persist(self, slot: Slot) -> None:
        """Store ``slot``: the enclave's sealed channel state and the host's bookkeeping
        (durable when this returns)."""
        record = {
            "format": _RECORD_FORMAT,
            "sealed": hx(self.provider_enclave.export(slot.channel_id)),
            "closingOnChain": slot.closing_on_chain,
            "forceCloseDue": slot.force_close_due,
            "onchainClosed": slot.onchain_closed,
            "closeTx": slot.close_tx,
        }
        await self.store.save(slot.channel_id, jsonbytes.dumps(record),
                              active=not slot.onchain_closed)

    def _view(self, channel_id: bytes) -> ChannelView:
        view = self.provider_enclave.view(channel_id)
        if view is None:
            raise LookupError(f"the enclave runs no channel {channel_id.hex()}")
        return view

    def _restore(self, channel_id: bytes, blob: bytes) -> Slot:
        record = json.loads(blob)
        if record.get("format") != _RECORD_FORMAT:
            raise ValueError("not a provider channel record")
        self.provider_enclave.restore(channel_id, unhex(record["sealed"]))
        return Slot(
            self._view(channel_id),
            closing_on_chain=bool(record["closingOnChain"]),
            force_close_due=bool(record["forceCloseDue"]),
            onchain_closed=bool(record["onchainClosed"]),
            close_tx=record["closeTx"],
        )


__all__ = ["Channels", "Slot"]
