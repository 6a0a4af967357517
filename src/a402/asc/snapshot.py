"""Snapshots of a channel's state machine: the bytes a runtime persists (pure).

A payment runtime must write every transition down before it sends the next
message (architecture, "Persistence and scale"): a vault that forgot it issued
σ_U could not extract ``t`` from the provider's on-chain claim, and a provider
that forgot ``t`` could not claim at all. :meth:`VaultChannel.snapshot` and
:meth:`ProviderChannel.snapshot` produce these bytes; ``restore`` turns them
back into a machine that behaves exactly as the original would have.

Two formats; ``restore`` reads both. Version 1 (``snapshot()``): UTF-8 JSON with
sorted keys, byte strings as lowercase hex, protocol messages as the hex of their
canonical encoding (:mod:`a402.asc.messages`), a ``format`` tag naming the side
and the version: for operators, tools and records that hold a snapshot as text.
Version 2 (``snapshot(binary=True)``), what the enclaves seal at every step of
every paid request (three times per request on the vault's side, twice on the
provider's): half the bytes and less CPU. A magic naming the side (``A4SV``
vault, ``A4SP`` provider) and the version byte 2, then the channel
(:data:`WHERE`: encoded once per machine, it never changes) and the fields in a
fixed order (:data:`VAULT_FIELDS`, :data:`PROVIDER_FIELDS`), each as
:func:`b` (byte strings: a 4-byte length, then the bytes; ``ff ff ff ff`` for
none), :func:`i` (integers: a length byte, then big-endian two's complement;
``ff`` for none), :func:`f` (numbers: an IEEE double), :func:`t` (one byte, 0 or
1), :func:`s` (a short text); an optional group starts with one byte, 0 absent or
1 present; messages are their canonical encoding. :func:`loads` reads either
into the same document (version 1's shape), so one ``restore`` serves both.

Keys are **not** in a snapshot: the caller passes them back to ``restore``,
which checks they match the channel's terms. A provider snapshot contains the
adaptor secret ``t`` of the request in flight, so it must be stored sealed
(``Enclave.seal``); a vault snapshot contains no secret but is the client's
money, so it belongs behind the vault's own sealing as well.

Deadlines (Δ_lock, Δ_ack) are stored as the numbers the machine was given (in
version 2 as doubles; restored as floats either way); a runtime that persists
must use a clock that survives restarts (wall time), not a monotonic one.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from typing import Any, TypeVar

from a402 import jsonbytes
from a402.crypto import CryptoError, PaymentDomain

from .errors import MessageError
from .messages import DOMAIN_TAG, HEADER, Message, MessageType, decode
from .settlement import EvmSettlement, Settlement
from .terms import BalanceState, ChannelTerms

VAULT_FORMAT = "a402/asc-vault/v1"
PROVIDER_FORMAT = "a402/asc-provider/v1"
#: The magic and version byte of a binary (version 2) snapshot of each side.
VAULT_HEADER = b"A4SV\x02"
PROVIDER_HEADER = b"A4SP\x02"

M = TypeVar("M", bound=Message)


class SnapshotError(ValueError):
    """Bytes that are not a snapshot of this kind (or are damaged)."""


def hx(value: bytes) -> str:
    return value.hex() if type(value) is bytes else bytes(value).hex()  # (no copy of bytes)


def unhex(value: Any) -> bytes:
    if not isinstance(value, str):
        raise SnapshotError("expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise SnapshotError("not a hex string") from None


def terms_to_json(terms: ChannelTerms) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client": hx(terms.client),
        "vault": hx(terms.vault),
        "provider": hx(terms.provider),
        "providerKey": hx(terms.provider_key),
        "deposit": terms.deposit,
        "salt": hx(terms.salt),
    }
    if terms.vault_mode:  # absent for standard mode: older records read as they were
        doc["vaultMode"] = True
    return doc


def terms_from_json(data: dict[str, Any]) -> ChannelTerms:
    return ChannelTerms(
        client=unhex(data["client"]),
        vault=unhex(data["vault"]),
        provider=unhex(data["provider"]),
        provider_key=unhex(data["providerKey"]),
        deposit=_int(data["deposit"]),
        salt=unhex(data["salt"]),
        vault_mode=data.get("vaultMode", False) is True,
    )


def domain_to_json(domain: PaymentDomain) -> dict[str, Any]:
    return {"chainId": domain.chain_id, "contract": hx(domain.verifying_contract)}


def domain_from_json(data: dict[str, Any]) -> PaymentDomain:
    return PaymentDomain(_int(data["chainId"]), unhex(data["contract"]))


def state_to_json(state: BalanceState) -> list[Any]:
    return [state.version, state.client_balance, state.provider_balance, state.is_final]


def state_from_json(data: Any) -> BalanceState:
    if not isinstance(data, list) or len(data) != 4 or not isinstance(data[3], bool):
        raise SnapshotError("a state is [version, client, provider, isFinal]")
    return BalanceState(_int(data[0]), _int(data[1]), _int(data[2]), data[3])


def message_to_json(message: Message | None) -> str | None:
    return None if message is None else hx(message.encode())


#: The message format snapshots written before format version 2 hold (REPLY without δ').
_V1 = 1
_REPLY_V1_CHARGE_AT = len(DOMAIN_TAG) + 1 + 1 + 32 + 8  # tag, version, type, cid, rid


def _upgraded(raw: bytes, v1_charge: int | None) -> bytes:
    """A message stored in format version 1 (before metered charges), as version 2.

    Only REPLY changed (it gained the charge δ' after the request id); every other
    message is the same bytes under the new version byte (no signature covers the
    encoding: states and digests are signed, not messages). A version-1 REPLY charged
    its δ, which its holder passes as ``v1_charge``."""
    if len(raw) <= len(HEADER) or not raw.startswith(DOMAIN_TAG) or raw[len(DOMAIN_TAG)] != _V1:
        return raw
    body = HEADER + raw[len(HEADER):]
    if raw[len(HEADER)] == MessageType.REPLY:
        if v1_charge is None or not 0 <= v1_charge < 1 << 128:
            return raw  # refused by decode, as before
        at = _REPLY_V1_CHARGE_AT
        body = body[:at] + v1_charge.to_bytes(16, "big") + body[at:]
    return body


def message_from_json(data: Any, kind: type[M], *, v1_charge: int | None = None) -> M | None:
    """A stored message; one stored in format version 1 is read as version 2
    (``v1_charge``: the δ of a version-1 REPLY, see :func:`_upgraded`)."""
    if data is None:
        return None
    try:
        message = decode(_upgraded(unhex(data), v1_charge))
    except MessageError as e:
        raise SnapshotError(f"stored message: {e}") from None
    if not isinstance(message, kind):
        raise SnapshotError(f"stored message is not a {kind.__name__}")
    return message


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotError("expected a number")
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError("expected an integer")
    return value


integer = _int


@contextlib.contextmanager
def parsing(side: str) -> Iterator[None]:
    """Turn any parse failure inside the block into a :class:`SnapshotError`."""
    try:
        yield
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, CryptoError) as e:
        raise SnapshotError(f"damaged {side} snapshot: {e!r}") from None


def dumps(document: dict[str, Any]) -> bytes:
    """A version-1 (JSON) snapshot's bytes."""
    return jsonbytes.dumps(document, sort_keys=True)


def loads(data: bytes, expected_format: str) -> dict[str, Any]:
    """The document of a snapshot of ``expected_format``'s side, version 2 (binary) or 1
    (JSON), in version 1's shape: byte strings as hex, messages as the hex of their
    encoding (so one ``restore`` reads both)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotError(f"a snapshot is bytes, not {type(data).__name__}")
    data = bytes(data)
    header, fields = _BINARY[expected_format]
    if data[:4] == header[:4]:
        document = read(data, header, fields)
        document["format"] = expected_format
        return document
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SnapshotError("not a snapshot") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise SnapshotError(f"not a {expected_format} snapshot")
    return document


# -- the binary encoding (version 2) ----------------------------------------------------

_NONE_BYTES = b"\xff\xff\xff\xff"
_NONE_INT = b"\xff"
_MAX_INT_SIZE = 254
_DOUBLE = struct.Struct(">d")
#: An optional group (:data:`VAULT_FIELDS`): absent, or present and its fields follow.
ABSENT, PRESENT = b"\x00", b"\x01"
TRUE, FALSE = b"\x01", b"\x00"


def b(value: bytes | None) -> bytes:
    """A byte string (or none)."""
    if value is None:
        return _NONE_BYTES
    return len(value).to_bytes(4, "big") + value


def m(message: Message | None) -> bytes:
    """A protocol message (or none): its canonical encoding."""
    return _NONE_BYTES if message is None else b(message.encode())


def i(value: int | None) -> bytes:
    """An integer of at most 254 bytes (or none)."""
    if value is None:
        return _NONE_INT
    size = (value.bit_length() + 8) >> 3  # room for the sign
    if size > _MAX_INT_SIZE:
        raise ValueError("an integer too large for a snapshot")
    return size.to_bytes(1, "big") + value.to_bytes(size, "big", signed=True)


def f(value: float) -> bytes:
    """A number (Δ and deadlines), as an IEEE double."""
    return _DOUBLE.pack(value)


def t(value: bool) -> bytes:
    return TRUE if value else FALSE


def of(value: float | None) -> bytes:
    """A number or none."""
    return ABSENT if value is None else PRESENT + _DOUBLE.pack(value)


def s(value: str) -> bytes:
    """A short text (a status)."""
    return b(value.encode())


def where(settlement: Settlement) -> bytes:
    """The channel a snapshot is of, as :data:`WHERE_EVM` or :data:`WHERE_OTHER` reads it:
    an EVM channel's terms and domain, or any other's id and settlement binding."""
    if isinstance(settlement, EvmSettlement):
        terms, domain = settlement.terms, settlement.domain
        return b"".join((
            PRESENT, PRESENT, b(terms.client), b(terms.vault), b(terms.provider),
            b(terms.provider_key), i(terms.deposit), b(terms.salt), t(terms.vault_mode),
            PRESENT, i(domain.chain_id), b(domain.verifying_contract), ABSENT,
        ))
    return b"".join((ABSENT, PRESENT, b(settlement.channel_id), b(settlement.binding)))


class _Reader:
    """Reads the fields of a binary snapshot in order; any damage is a SnapshotError."""

    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes, at: int) -> None:
        self._data, self._at = data, at

    def _take(self, size: int) -> bytes:
        at = self._at
        if size < 0 or at + size > len(self._data):
            raise SnapshotError("a snapshot cut short")
        self._at = at + size
        return self._data[at : at + size]

    def bytes_(self) -> bytes | None:
        size = int.from_bytes(self._take(4), "big")
        return None if size == 0xFFFFFFFF else self._take(size)

    def int_(self) -> int | None:
        size = self._take(1)[0]
        if size == 0xFF:
            return None
        if size == 0:
            raise SnapshotError("an empty integer in a snapshot")
        return int.from_bytes(self._take(size), "big", signed=True)

    def flag(self) -> bool:
        value = self._take(1)[0]
        if value > 1:
            raise SnapshotError("a flag that is neither 0 nor 1 in a snapshot")
        return value == 1

    def value(self, kind: str) -> Any:
        if kind == "b" or kind == "m":
            raw = self.bytes_()
            return None if raw is None else raw.hex()
        if kind == "raw":
            return self.bytes_()
        if kind == "of":
            return _DOUBLE.unpack(self._take(8))[0] if self.flag() else None
        if kind == "i":
            return self.int_()
        if kind == "f":
            return _DOUBLE.unpack(self._take(8))[0]
        if kind == "t":
            return self.flag()
        if kind == "s":
            raw = self.bytes_()
            try:
                return None if raw is None else raw.decode()
            except UnicodeDecodeError:
                raise SnapshotError("a text that is not UTF-8 in a snapshot") from None
        if kind == "state":
            return [self.int_(), self.int_(), self.int_(), self.flag()]
        raise AssertionError(kind)

    def group(self, fields: Fields) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for key, kind in fields:
            if isinstance(kind, str):
                document[key] = self.value(kind)
            elif not self.flag():
                if key:  # (a group without a key adds its fields only when present)
                    document[key] = None
            elif key:
                document[key] = self.group(kind)
            else:
                document.update(self.group(kind))
        return document

    def end(self) -> None:
        if self._at != len(self._data):
            raise SnapshotError("bytes after the end of a snapshot")


def read(data: bytes, header: bytes, fields: Fields) -> dict[str, Any]:
    """The document of binary ``data`` written as ``header`` and then ``fields`` (each
    byte string as hex, but those of kind ``raw``), or :class:`SnapshotError`."""
    if not data.startswith(header):
        raise SnapshotError(f"not a record of this kind and version: {data[:len(header)]!r}")
    reader = _Reader(data, len(header))
    document = reader.group(fields)
    reader.end()
    return document


#: A binary snapshot's fields in order: (key, kind) with kind one of ``b`` (bytes, read as
#: hex), ``raw`` (bytes, read as they are), ``m`` (a message), ``i``, ``f``, ``of`` (a
#: number or none), ``t``, ``s``, ``state`` (version, client, provider as ``i``, final as
#: ``t``), or an optional group's fields (keyless: merged when present).
Fields = tuple[tuple[str, Any], ...]

#: The channel: an EVM channel's terms and domain, or any other's id and settlement.
WHERE: Fields = (
    ("", (("terms", (("client", "b"), ("vault", "b"), ("provider", "b"),
                     ("providerKey", "b"), ("deposit", "i"), ("salt", "b"),
                     ("vaultMode", "t"))),
          ("domain", (("chainId", "i"), ("contract", "b"))))),
    ("", (("channelId", "b"), ("settlement", "b"))),
)
COMMON: Fields = (
    ("status", "s"), ("state", "state"), ("vaultSignature", "b"),
    ("providerSignature", "b"), ("nextRequestId", "i"),
)
VAULT_FIELDS: Fields = (
    *COMMON, ("lockTimeout", "f"),
    ("pending", (("requestId", "i"), ("amount", "i"), ("request", "b"),
                 ("lockDeadline", "f"), ("reply", "m"), ("authorization", "b"))),
    ("lastReveal", "m"), ("lastAck", "m"), ("lastExpired", "i"), ("final", "m"),
    ("finalAcked", "t"),
)
PROVIDER_FIELDS: Fields = (
    *COMMON, ("ackTimeout", "f"), ("lockTimeout", "f"),
    ("inflight", (("requestId", "i"), ("amount", "i"), ("request", "b"),
                  ("lockDeadline", "f"), ("adaptorSecret", "b"), ("adaptorPoint", "b"),
                  ("resultHash", "b"), ("message", "b"), ("charge", "i"),
                  ("presignature", "b"), ("reveal", "m"), ("authorization", "b"),
                  ("ackDeadline", "f"), ("forceCloseSignalled", "t"))),
    ("closeAck", "m"),
    ("", (("answeredAuth", "m"), ("answeredReveal", "m"))),
)

_BINARY: dict[str, tuple[bytes, Fields]] = {
    VAULT_FORMAT: (VAULT_HEADER, (*WHERE, *VAULT_FIELDS)),
    PROVIDER_FORMAT: (PROVIDER_HEADER, (*WHERE, *PROVIDER_FIELDS)),
}
