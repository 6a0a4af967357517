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

Record format (``A4PR`` version 1): the magic, one byte of flags (closing on
chain, force close due, closed on chain), the closing transaction's hash (one
length byte, then its ASCII; length 0: none), then the sealed export as it is.
Binary, because the record is written twice per paid request: the JSON with
the sealed export in hex that earlier code wrote was twice the bytes (SQLite
overflow pages on every write). Such a JSON record still restores
(:meth:`Channels._restore`), and the channel's next write is in this format.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from a402.asc import SignedState
from a402.asc.snapshot import unhex
from a402.provider.a402_store import ChannelBlobStore
from a402.provider_enclave import ChannelView, ProviderEnclave

#: The record's magic and version (see the module docstring).
_RECORD_MAGIC = b"A4PR\x01"
#: The JSON record earlier code wrote (the sealed export in hex): still restored.
_LEGACY_FORMAT = "a402/provider-channel-record/v2"
_CLOSING, _FORCE_CLOSE_DUE, _ONCHAIN_CLOSED = 1, 2, 4
_KNOWN_FLAGS = _CLOSING | _FORCE_CLOSE_DUE | _ONCHAIN_CLOSED


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
        flags = ((_CLOSING if slot.closing_on_chain else 0)
                 | (_FORCE_CLOSE_DUE if slot.force_close_due else 0)
                 | (_ONCHAIN_CLOSED if slot.onchain_closed else 0))
        tx = (slot.close_tx or "").encode("ascii")
        if len(tx) > 255:
            raise ValueError("a closing transaction's hash is at most 255 characters")
        record = b"".join((_RECORD_MAGIC, bytes((flags, len(tx))), tx,
                           self.provider_enclave.export(slot.channel_id)))
        await self.store.save(slot.channel_id, record, active=not slot.onchain_closed)

    def _view(self, channel_id: bytes) -> ChannelView:
        view = self.provider_enclave.view(channel_id)
        if view is None:
            raise LookupError(f"the enclave runs no channel {channel_id.hex()}")
        return view

    def _restore(self, channel_id: bytes, blob: bytes) -> Slot:
        """The slot of a stored record (this format, or the JSON one earlier code wrote).

        The host wrote these bytes and may have altered them: only what :meth:`persist`
        could have written is taken (:func:`_record_fields`), anything else is refused
        with a ``ValueError`` before the enclave sees the sealed export (which the enclave
        checks itself). The bookkeeping is the host's own, as in the JSON records before:
        the enclave signs a close only from its sealed state (its claim, the co-signed
        final state), so altered flags or a substituted record (JSON for binary, or an
        older one) cost only the provider whose host this is (a claim, close or challenge
        it skips, calls it refuses), beyond the older sealed state any host can hand back
        (:mod:`a402.tee.sealing`)."""
        sealed, closing, due, closed, tx = _record_fields(blob)
        self.provider_enclave.restore(channel_id, sealed)
        return Slot(self._view(channel_id), closing_on_chain=closing, force_close_due=due,
                    onchain_closed=closed, close_tx=tx)


def _record_fields(blob: bytes) -> tuple[bytes, bool, bool, bool, str | None]:
    """``(sealed export, closing, force close due, closed, closing tx)`` of a stored record,
    or ``ValueError``: unknown flag bits, a length that overruns the record, a JSON record
    with a field missing or of another type, and a closing transaction :meth:`persist`
    could not write again (not ASCII, over 255 characters) are all refused."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ValueError("not a provider channel record")
    blob = bytes(blob)
    if blob.startswith(_RECORD_MAGIC):
        at = len(_RECORD_MAGIC)
        if len(blob) < at + 2 or len(blob) < at + 2 + blob[at + 1]:
            raise ValueError("a provider channel record cut short")
        flags, size = blob[at], blob[at + 1]
        if flags & ~_KNOWN_FLAGS:
            raise ValueError(f"a provider channel record with unknown flags {flags:#04x}")
        try:
            tx = blob[at + 2 : at + 2 + size].decode("ascii") or None
        except UnicodeDecodeError:
            raise ValueError("a provider channel record whose closing tx is not ASCII") from None
        return (blob[at + 2 + size :], bool(flags & _CLOSING), bool(flags & _FORCE_CLOSE_DUE),
                bool(flags & _ONCHAIN_CLOSED), tx)
    if not blob.startswith(b"{"):
        raise ValueError("not a provider channel record")
    try:
        record = json.loads(blob)
    except (ValueError, RecursionError) as e:  # (also bad UTF-8, or nested too deep)
        raise ValueError(f"a provider channel record that is not JSON: {e}") from None
    if not isinstance(record, dict) or record.get("format") != _LEGACY_FORMAT:
        raise ValueError("not a provider channel record")
    closing, due, closed = (record.get(name)
                            for name in ("closingOnChain", "forceCloseDue", "onchainClosed"))
    if not (isinstance(closing, bool) and isinstance(due, bool) and isinstance(closed, bool)):
        raise ValueError("a provider channel record whose flags are not all true or false")
    tx = record.get("closeTx", ...)
    if tx is not None and not (isinstance(tx, str) and tx.isascii() and len(tx) <= 255):
        raise ValueError("a provider channel record with no closing tx it could write again")
    try:
        sealed = unhex(record.get("sealed"))
    except ValueError:
        raise ValueError("a provider channel record whose sealed export is not hex") from None
    return sealed, closing, due, closed, tx or None


__all__ = ["Channels", "Slot"]
