"""The ASC messages and their one canonical binary encoding (pure).

One paid request is EXEC → REPLY → AUTH → REVEAL → ACK (paper Alg. 2); a
cooperative close is CLOSE → CLOSE_ACK. Vault → provider: EXEC, AUTH, ACK,
CLOSE. Provider → vault: REPLY, REVEAL, CLOSE_ACK.

Encoding
--------
Every message is::

    "A402/ASC" (8 bytes, domain tag) ‖ 0x02 (format version) ‖ type (1 byte) ‖ fields

(version 2: REPLY carries the charge δ', which metered routes make differ from δ)

and each field has one fixed width, in a fixed order, big-endian:

=====================  ======  ===============================================
field                  bytes
=====================  ======  ===============================================
channel id             32
request id, version    8       u64
amount, balances       16      u128 (the contract escrows at most 2^128 − 1)
is_final               1       0x00 or 0x01, nothing else
hashes, t, e           32
adaptor point T        33      compressed secp256k1 point (0x02/0x03 prefix)
pre-signature          64      ``e ‖ ŝ`` (EVM flavour)
ECDSA signature        65      ``r ‖ s ‖ v``
request, sealed result 4 + n   u32 length, then the bytes
=====================  ======  ===============================================

Why this and not CBOR or JSON: every message is a short fixed sequence of
fixed-size fields with at most one opaque blob, so a fixed layout says all there
is to say. It is canonical by construction — no integer-width choices, no maps
to order, no optional fields, no text normalisation — so one message has exactly
one encoding, and decoding is "exact length or reject" with no parser to get
wrong (a generic CBOR decoder is attack surface for no gain here). It is a few
lines in any language, and the blobs travel without base64. The domain tag
makes these bytes unmistakable for any other protocol's on the same transport
(and for anything ever hashed or signed); the version byte lets the format
change without ambiguity.

The secure channel between the enclaves authenticates and encrypts these bytes;
the protocol checks (signatures, replay, state) are the state machine's
(:mod:`a402.asc.machine`).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple, Self

from a402.wire.a402 import DEFAULT_MAX_BLOB as DEFAULT_MAX_BLOB

from .errors import MessageError
from .terms import BalanceState

DOMAIN_TAG = b"A402/ASC"
FORMAT_VERSION = 2
HEADER = DOMAIN_TAG + bytes([FORMAT_VERSION])

_U64 = 8
_U128 = 16


class MessageType(IntEnum):
    EXEC = 1
    REPLY = 2
    AUTH = 3
    REVEAL = 4
    ACK = 5
    CLOSE = 6
    CLOSE_ACK = 7


# ------------------------------------------------------------------ primitives


class _Writer:
    __slots__ = ("_parts",)

    def __init__(self, kind: MessageType) -> None:
        self._parts = [HEADER, bytes([kind])]

    def fixed(self, value: bytes, size: int, what: str) -> _Writer:
        if len(value) != size:
            raise ValueError(f"{what} must be {size} bytes")
        self._parts.append(bytes(value))
        return self

    def uint(self, value: int, size: int, what: str) -> _Writer:
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{what} must fit in {8 * size} bits")
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def blob(self, value: bytes, what: str) -> _Writer:
        if len(value) >= 1 << 32:
            raise ValueError(f"{what} is too long")
        self._parts.append(struct.pack(">I", len(value)) + bytes(value))
        return self

    def state(self, state: BalanceState) -> _Writer:
        self.uint(state.version, _U64, "version")
        self.uint(state.client_balance, _U128, "client balance")
        self.uint(state.provider_balance, _U128, "provider balance")
        self._parts.append(b"\x01" if state.is_final else b"\x00")
        return self

    def done(self) -> bytes:
        return b"".join(self._parts)


class _Reader:
    __slots__ = ("_data", "_max_blob", "_pos")

    def __init__(self, data: bytes, max_blob: int) -> None:
        self._data = data
        self._pos = len(HEADER) + 1  # tag, version, type
        self._max_blob = max_blob

    def take(self, size: int, what: str) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise MessageError(f"truncated at {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def blob(self, what: str) -> bytes:
        size = self.uint(4, f"{what} length")
        if size > self._max_blob:
            raise MessageError(f"{what} longer than {self._max_blob} bytes")
        return self.take(size, what)

    def point(self, what: str) -> bytes:
        value = self.take(33, what)
        if value[0] not in (2, 3):
            raise MessageError(f"{what} is not a compressed point")
        return value

    def state(self) -> BalanceState:
        version = self.uint(_U64, "version")
        client = self.uint(_U128, "client balance")
        provider = self.uint(_U128, "provider balance")
        flag = self.take(1, "is_final")[0]
        if flag > 1:
            raise MessageError("is_final must be 0 or 1")
        return BalanceState(version, client, provider, bool(flag))

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MessageError("trailing bytes")


# -------------------------------------------------------------------- messages


class _Codec(NamedTuple):
    write: Callable[[_Writer, Any, str], object]
    read: Callable[[_Reader, str], Any]
    kind: str  # for the compiled layout (_Compiled): fixed, uint, point, state or blob
    size: int = 0


def _fixed(size: int) -> _Codec:
    return _Codec(lambda w, v, what: w.fixed(v, size, what), lambda r, what: r.take(size, what),
                  "fixed", size)


def _uint(size: int) -> _Codec:
    return _Codec(lambda w, v, what: w.uint(v, size, what), lambda r, what: r.uint(size, what),
                  "uint", size)


_BLOB = _Codec(lambda w, v, what: w.blob(v, what), lambda r, what: r.blob(what), "blob")
_POINT = _Codec(lambda w, v, what: w.fixed(v, 33, what), lambda r, what: r.point(what),
                "point", 33)
_STATE = _Codec(lambda w, v, what: w.state(v), lambda r, what: r.state(), "state")

_U64_MAX = (1 << 64) - 1
_U128_LIMIT = 1 << 128
_U32_LIMIT = 1 << 32


class _Compiled:
    """A message's layout as one :mod:`struct` format: the fast path of encode and decode.

    Every field but the blob (always last) has a fixed width, so a whole message is
    one ``struct.pack``/``unpack_from`` plus the conversions struct cannot do (u128,
    the point prefix, the state). The fast path checks exactly what :class:`_Writer`
    and :class:`_Reader` check; whenever a check fails it gives up (``None``) and the
    generic writer or reader runs instead, so the errors raised (and their messages)
    are theirs, and the two paths cannot disagree on what is valid.
    """

    __slots__ = ("blob", "fields", "layout", "struct")

    def __init__(self, layout: tuple[tuple[str, str, _Codec], ...]) -> None:
        parts = []
        fields: list[tuple[str, str, int]] = []
        self.blob = False
        for i, (name, _, codec) in enumerate(layout):
            if codec.kind == "blob":
                if i != len(layout) - 1:
                    raise AssertionError("a blob is the last field")
                self.blob = True
            elif codec.kind == "uint" and codec.size == _U64:
                parts.append("Q")
            elif codec.kind == "state":
                parts.append("Q16s16sB")
            else:  # fixed bytes, a point, a u128
                parts.append(f"{codec.size}s")
            fields.append((name, codec.kind, codec.size))
        self.layout = layout
        self.fields = tuple(fields)
        self.struct = struct.Struct(">" + "".join(parts))

    def encode(self, message: object, kind: MessageType) -> bytes | None:
        values: list[Any] = []
        blob: bytes = b""
        for name, field, size in self.fields:
            value = getattr(message, name)
            if field == "fixed" or field == "point":
                if type(value) is not bytes or len(value) != size:
                    return None
                values.append(value)
            elif field == "uint":
                if type(value) is not int or not 0 <= value < 1 << (8 * size):
                    return None
                values.append(value if size == _U64 else value.to_bytes(size, "big"))
            elif field == "state":
                if type(value) is not BalanceState:
                    return None
                version, client, provider = (value.version, value.client_balance,
                                             value.provider_balance)
                if not (0 <= version <= _U64_MAX and 0 <= client < _U128_LIMIT
                        and 0 <= provider < _U128_LIMIT):
                    return None
                values += (version, client.to_bytes(16, "big"), provider.to_bytes(16, "big"),
                           1 if value.is_final else 0)
            else:  # the blob
                if type(value) is not bytes or len(value) >= _U32_LIMIT:
                    return None
                blob = len(value).to_bytes(4, "big") + value
        try:
            fixed = self.struct.pack(*values)
        except struct.error:
            return None
        return b"".join((HEADER, _TYPE_BYTE[kind], fixed, blob))

    def decode(self, cls: type[Any], data: bytes, max_blob: int) -> Any | None:
        start = len(HEADER) + 1
        end = start + self.struct.size
        if self.blob:
            if len(data) < end + 4:
                return None
            size = int.from_bytes(data[end : end + 4], "big")
            if size > max_blob or len(data) != end + 4 + size:
                return None
        elif len(data) != end:
            return None
        raw = self.struct.unpack_from(data, start)
        args: list[Any] = []
        i = 0
        for _, field, size in self.fields:
            if field == "state":
                version, client, provider, flag = raw[i : i + 4]
                if flag > 1:
                    return None
                args.append(BalanceState(version, int.from_bytes(client, "big"),
                                         int.from_bytes(provider, "big"), bool(flag)))
                i += 4
            elif field == "blob":
                args.append(data[end + 4 :])
            else:
                value = raw[i]
                if field == "uint" and size != _U64:
                    value = int.from_bytes(value, "big")
                elif field == "point" and value[0] not in (2, 3):
                    return None
                args.append(value)
                i += 1
        return cls(*args)


_TYPE_BYTE = {kind: bytes([kind]) for kind in MessageType}

_CHANNEL = ("channel_id", "channel id", _fixed(32))
_REQUEST = ("request_id", "request id", _uint(_U64))
_SIGNATURE = ("signature", "signature", _fixed(65))
_BALANCES = ("state", "state", _STATE)


class _Message:
    """A message is its type byte and a fixed sequence of fields (``LAYOUT``), written
    in order; one generic writer and reader keep every message's encoding canonical."""

    # The encoding, kept once made: a runtime encodes the same message for the wire and
    # again for every snapshot that holds it (a REPLY is in three on the vault's side).
    # It is not a dataclass field, so equality, hashing and ``replace`` ignore it.
    __slots__ = ("_wire",)
    _wire: bytes
    TYPE: ClassVar[MessageType]
    LAYOUT: ClassVar[tuple[tuple[str, str, _Codec], ...]]

    def encode(self) -> bytes:
        try:
            return self._wire
        except AttributeError:
            pass
        wire = _COMPILED[type(self)].encode(self, self.TYPE)
        if wire is None:  # something to refuse: the generic writer says what
            writer = _Writer(self.TYPE)
            for name, what, codec in self.LAYOUT:
                codec.write(writer, getattr(self, name), what)
            wire = writer.done()
        object.__setattr__(self, "_wire", wire)
        return wire

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(**{name: codec.read(r, what) for name, what, codec in cls.LAYOUT})


#: Each message class's compiled layout (filled below, once the classes exist).
_COMPILED: dict[type, _Compiled] = {}


@dataclass(frozen=True, slots=True)
class Exec(_Message):
    """Vault → provider: run ``request`` for ``amount``; ``version`` is the state it builds on."""

    TYPE: ClassVar[MessageType] = MessageType.EXEC
    LAYOUT: ClassVar = (
        _CHANNEL, _REQUEST, ("version", "version", _uint(_U64)),
        ("amount", "amount", _uint(_U128)), ("request", "request", _BLOB),
    )
    channel_id: bytes
    request_id: int
    version: int
    amount: int
    request: bytes


@dataclass(frozen=True, slots=True)
class Reply(_Message):
    """Provider → vault: the commitment ``(δ', h, T, σ̂, EncRes)`` for one executed request.

    ``amount`` is the charge δ' the provider's enclave computed for this result
    (δ for a fixed price; for a metered route at most the EXEC's δ): it is the
    amount in ``m``, so it is bound to ``h`` by the pre-signature, and the vault
    refuses a REPLY whose charge exceeds the δ it locked."""

    TYPE: ClassVar[MessageType] = MessageType.REPLY
    LAYOUT: ClassVar = (
        _CHANNEL, _REQUEST, ("amount", "charge", _uint(_U128)),
        ("result_hash", "result hash", _fixed(32)),
        ("adaptor_point", "adaptor point", _POINT),
        ("presignature", "pre-signature", _fixed(64)),
        ("sealed_result", "sealed result", _BLOB),
    )
    channel_id: bytes
    request_id: int
    amount: int
    result_hash: bytes
    adaptor_point: bytes
    presignature: bytes
    sealed_result: bytes


@dataclass(frozen=True, slots=True)
class Auth(_Message):
    """Vault → provider: ``σ_U``, the conditional payment signature."""

    TYPE: ClassVar[MessageType] = MessageType.AUTH
    LAYOUT: ClassVar = (_CHANNEL, _REQUEST, ("authorization", "authorization", _fixed(65)))
    channel_id: bytes
    request_id: int
    authorization: bytes


@dataclass(frozen=True, slots=True)
class Reveal(_Message):
    """Provider → vault: the adaptor secret ``t`` and the provider's signature on the state
    that pays it (so the vault holds a co-signed state as soon as it credits)."""

    TYPE: ClassVar[MessageType] = MessageType.REVEAL
    LAYOUT: ClassVar = (
        _CHANNEL, _REQUEST, ("adaptor_secret", "adaptor secret", _fixed(32)), _BALANCES,
        _SIGNATURE,
    )
    channel_id: bytes
    request_id: int
    adaptor_secret: bytes
    state: BalanceState
    signature: bytes


@dataclass(frozen=True, slots=True)
class Ack(_Message):
    """Vault → provider: the receipt — the vault's signature on the state that paid ``rid``."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    LAYOUT: ClassVar = (_CHANNEL, _REQUEST, _BALANCES, _SIGNATURE)
    channel_id: bytes
    request_id: int
    state: BalanceState
    signature: bytes


@dataclass(frozen=True, slots=True)
class Close(_Message):
    """Vault → provider: the proposed final state, signed by the vault."""

    TYPE: ClassVar[MessageType] = MessageType.CLOSE
    LAYOUT: ClassVar = (_CHANNEL, _BALANCES, _SIGNATURE)
    channel_id: bytes
    state: BalanceState
    signature: bytes


@dataclass(frozen=True, slots=True)
class CloseAck(_Message):
    """Provider → vault: the provider's signature on the final state."""

    TYPE: ClassVar[MessageType] = MessageType.CLOSE_ACK
    LAYOUT: ClassVar = (_CHANNEL, _BALANCES, _SIGNATURE)
    channel_id: bytes
    state: BalanceState
    signature: bytes


Message = Exec | Reply | Auth | Reveal | Ack | Close | CloseAck

_BY_TYPE: dict[int, type[Exec | Reply | Auth | Reveal | Ack | Close | CloseAck]] = {
    cls.TYPE: cls for cls in (Exec, Reply, Auth, Reveal, Ack, Close, CloseAck)
}

for _cls in _BY_TYPE.values():
    if tuple(name for name, _, _ in _cls.LAYOUT) != tuple(f.name for f in dataclasses.fields(_cls)):
        raise AssertionError(f"{_cls.__name__}: LAYOUT is not the fields' order")
    _COMPILED[_cls] = _Compiled(_cls.LAYOUT)


def encode(message: Message) -> bytes:
    """The canonical bytes of ``message``."""
    return message.encode()


def decode(data: bytes, *, max_blob: int = DEFAULT_MAX_BLOB) -> Message:
    """Parse exactly one message; :class:`~a402.asc.errors.MessageError` on anything else.

    Checks the domain tag, the format version, the type, every length, the
    point prefix and the ``is_final`` byte, and that nothing trails. Whether
    the message makes sense for a channel is the state machine's business.
    """
    data = bytes(data)
    if len(data) < len(HEADER) + 1 or not data.startswith(DOMAIN_TAG):
        raise MessageError("not an A402 ASC message")
    if data[len(DOMAIN_TAG)] != FORMAT_VERSION:
        raise MessageError(f"unsupported format version {data[len(DOMAIN_TAG)]}")
    cls = _BY_TYPE.get(data[len(HEADER)])
    if cls is None:
        raise MessageError(f"unknown message type {data[len(HEADER)]}")
    try:
        fast = _COMPILED[cls].decode(cls, data, max_blob)
        if fast is not None:
            # What the fast path accepts is canonical (every field fixed-width, or the
            # length-prefixed blob that ends the message; nothing trails), so ``data`` is
            # the very bytes ``encode`` would make: kept as the message's encoding, the
            # snapshots that hold a received message do not encode it again.
            object.__setattr__(fast, "_wire", data)
            return fast  # type: ignore[no-any-return]
        reader = _Reader(data, max_blob)  # something to refuse: the generic reader says what
        message = cls._read(reader)
    except ValueError as e:  # BalanceState range checks
        if isinstance(e, MessageError):
            raise
        raise MessageError(str(e)) from None
    reader.end()
    return message
