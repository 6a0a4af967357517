"""Where a provider keeps its channels: one sealed blob per channel, SQLite or PostgreSQL.

The provider enclave's channel state (its ``ProviderChannel`` snapshot, which
holds the adaptor secret ``t`` and σ_U of the request in flight, plus the last
exchange for idempotent retransmission) leaves the enclave only sealed
(``Enclave.seal``, label bound to the channel id), so the host stores opaque
bytes it can neither read nor move to another channel. The frame driver has a
channel's blob written (:meth:`a402.provider.a402_channels.Channels.persist`)
*before* it answers the message that changed it: a crash never loses a σ_U
the provider has acknowledged receiving, nor a ``t`` it revealed.

Rows also say whether the channel still needs watching (``active``): the
watcher reloads those on start to resume its Δ_ack timers and to answer a
client force-close. Sealing does not stop a host from handing back an older
blob (see :mod:`a402.tee.sealing`); the chain bounds what that can cost.

On SQLite, writes of concurrent channels share COMMITs (:mod:`a402.sqlite`);
a save is one plain-SQL upsert the event loop awaits without holding a thread.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

from sqlalchemy import Boolean, Float, LargeBinary, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from a402.sqlite import make_engine, readers, writes


class ChannelBlobStore(Protocol):
    """Durable storage of sealed channel blobs, keyed by channel id."""

    async def save(self, channel_id: bytes, blob: bytes, *, active: bool) -> None:
        """Replace the channel's blob; durable when this returns."""
        ...

    def load(self, channel_id: bytes) -> bytes | None: ...

    def active(self) -> list[bytes]:
        """Ids of the channels that are not settled on-chain yet."""
        ...


class _Base(DeclarativeBase):
    pass


class _ChannelRow(_Base):
    __tablename__ = "a402_provider_channels"

    channel_id: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, index=True)
    updated_at: Mapped[float] = mapped_column(Float)


_UPSERT: Final = (
    'INSERT INTO "a402_provider_channels" ("channel_id", "blob", "active", "updated_at") '
    "VALUES (:channel_id, :blob, :active, :updated_at) "
    'ON CONFLICT ("channel_id") DO UPDATE SET "blob" = excluded."blob", '
    '"active" = excluded."active", "updated_at" = excluded."updated_at"'
)


class SqlChannelStore:
    """:class:`ChannelBlobStore` over SQLAlchemy 2 (``sqlite:///path`` or a PostgreSQL URL)."""

    def __init__(self, url: str = "sqlite:///a402-provider-channels.db") -> None:
        self.url = url
        self.engine = make_engine(url)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = readers(self.engine)
        self._writes = writes(url, self._sessions, name="provider-channels")

    async def save(self, channel_id: bytes, blob: bytes, *, active: bool) -> None:
        values = {"channel_id": bytes(channel_id), "blob": bytes(blob), "active": active,
                  "updated_at": time.time()}
        await self._writes.execute([(_UPSERT, values)])

    def load(self, channel_id: bytes) -> bytes | None:
        with self._readers() as session:
            row = session.get(_ChannelRow, bytes(channel_id))
            return None if row is None else bytes(row.blob)

    def active(self) -> list[bytes]:
        with self._readers() as session:
            ids = session.scalars(select(_ChannelRow.channel_id).where(_ChannelRow.active))
            return [bytes(i) for i in ids]

    def close(self) -> None:
        self._writes.close()
        self.engine.dispose()

