"""The ``a402`` scheme over HTTP: paths, framing, and the provider's info document (pure).

A provider that accepts A402 payments advertises an ``a402`` entry in its 402
``accepts`` (next to ``exact``) and serves four endpoints under
:data:`WELL_KNOWN_PREFIX`:

===============================  =========================================================
``GET  …/info?nonce=<hex>``      JSON :class:`ProviderInfo`: chain, ASCManager, token, the
                                 provider's address and Schnorr key, timeouts, prices, and
                                 attestation evidence made for the caller's nonce
``POST …/session``               the Noise XX handshake (:mod:`a402.tee.channel`), two
                                 round trips of JSON ``{"session"?, "message": base64}``
``POST …/message``               one encrypted :class:`Envelope` in the body (header
                                 ``A402-Session``), one encrypted :class:`Envelope` back
``GET  …/stream?session=<id>``   WebSocket upgrade: the same frames as ``…/message``, one
                                 binary message per frame each way, for the whole tunnel
===============================  =========================================================

A *tunnel* is one attested Noise XX secure channel between a vault enclave and
a provider enclave (:class:`a402.tee.channel.SecureChannel`), opened by the
handshake at ``…/session`` and named by the id the handshake returns. The wire
calls that id ``session`` (the JSON key, the query parameter, the
``A402-Session`` header, the ``unknown_session`` error): those spellings are
the protocol's and stay; in the code the thing is a tunnel
(:data:`HANDSHAKE_PATH`, :data:`TUNNEL_HEADER`, :data:`STREAM_UNKNOWN_TUNNEL`).

The stream is what a vault uses by default: one persistent WebSocket per
tunnel costs a fraction of an HTTP request per frame. It changes
nothing inside the channel — the same encrypted frames, the same idempotent
retries. The provider reads the frames of one connection in order and answers
each with exactly one message, in order: a binary message is the encrypted
answer frame; a text message is a JSON ``{"error", "message"}`` for a frame
that does not authenticate or is too large (as ``…/message`` answers 400 or
413: the tunnel stays usable, the vault retries in a fresh frame). A tunnel
the provider does not know — at connect, or forgotten mid-stream — closes the
connection with :data:`STREAM_UNKNOWN_TUNNEL` (the vault opens a new tunnel,
as on a 404). A provider without a stream refuses the upgrade (HTTP 403/404);
the vault then falls back to ``…/message``.

Inside the secure channel every frame carries one envelope::

    "A402/HTTP" ‖ 0x01 ‖ kind (1 byte) ‖ body

* ``ASC`` (both ways): one canonical ASC message (:mod:`a402.asc.messages`);
* ``OPEN`` (vault → provider): the channel terms and the vault's signature over
  :func:`binding_digest` — binds the channel to this tunnel, so only
  the holder of the channel's vault key can drive it over a tunnel;
* ``ASC_ACKED`` (vault → provider): the ACK of a channel's previous request
  followed by the channel's next message (an EXEC), as ``u32 length ‖ ACK ‖
  message``: the acknowledgement rides on the next request instead of costing
  a round trip (and a provider write) of its own. The provider takes the ACK
  first — one it already has, or one for a channel settled meanwhile, is
  ignored as it would be alone — then answers the message;
* ``OK`` (provider → vault): accepted, nothing to send back (after ACK, OPEN);
* ``ERROR`` (provider → vault): refused, with a reason code, a detail and,
  when the paid service itself failed, its (unpaid, unsealed) response.

The request EXEC carries is an :class:`HttpRequest`; the result the provider
seals and pre-signs is an :class:`HttpResult`: the service's response together
with the hash of the request that produced it, so that ``h = H(result)`` commits
to *which* request was served, not only to what came back (checked by the vault's
host once it opens the result). Before anything is paid, ``m`` itself binds the
request: it commits to ``answer_hash(request, h)`` over the EXEC's request bytes,
which the vault's machine takes from the EXEC it sent (:mod:`a402.asc.machine`).

Encodings are fixed layouts with length prefixes, like the ASC messages, and
for the same reasons: one encoding per value, exact-length decoding, no
parser to get wrong. Decoding raises :class:`FrameError`.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from a402.evm.keccak import keccak256 as keccak

SCHEME_A402 = "a402"
WELL_KNOWN_PREFIX = "/.well-known/a402"
INFO_PATH = WELL_KNOWN_PREFIX + "/info"
HANDSHAKE_PATH = WELL_KNOWN_PREFIX + "/session"
MESSAGE_PATH = WELL_KNOWN_PREFIX + "/message"
STREAM_PATH = WELL_KNOWN_PREFIX + "/stream"
#: The WebSocket close code for "no such tunnel": open a new one (``…/message``'s 404).
STREAM_UNKNOWN_TUNNEL = 4404
#: The header naming the tunnel a ``…/message`` frame travels in (its value: the tunnel id).
TUNNEL_HEADER = "a402-session"
FRAME_MEDIA_TYPE = "application/vnd.a402.frame"
#: The Noise prologue both ends use: a handshake meant for anything else fails.
PROLOGUE = b"a402/http/vault->provider/v1"
#: Associated data of frames, per direction: a frame cannot be reflected back.
REQUEST_AD = b"a402/http/request"
RESPONSE_AD = b"a402/http/response"
#: The ``…/info`` document's version: 2 since payments bind the request (the pre-signed
#: ``m`` commits to ``answer_hash(request, H(result))``, ``a402.crypto.answer_hash``). A
#: vault and a provider of different versions could not complete a payment (every REPLY
#: would be refused ``bad_presignature``), so each refuses the other's document up front.
INFO_VERSION = 2
#: Default bound on a request or a sealed result (16 MiB): the ASC messages that carry
#: them refuse larger blobs (:func:`a402.asc.messages.decode`), and the frames and the
#: vault API's call bodies are sized from it.
DEFAULT_MAX_BLOB = 16 * 1024 * 1024

_ENVELOPE_TAG = b"A402/HTTP\x01"
_REQUEST_TAG = b"A402/REQ\x01"
_RESPONSE_TAG = b"A402/RES\x01"
_RESULT_TAG = b"A402/RESULT\x01"
_USER_DATA_TAG = b"A402/provider-info/v1"
_BINDING_TAG = b"A402/bind-channel/v1"
#: Terms in an OPEN: client, vault, provider (20 each), key (32), deposit (16), salt (32).
_TERMS_SIZE = 20 * 3 + 32 + 16 + 32
_SIGNATURE_SIZE = 65
_MAX_HEADERS = 256


class FrameError(ValueError):
    """Bytes that are not a well-formed a402 HTTP frame, request or result."""


class Kind(IntEnum):
    ASC = 1
    OPEN = 2
    OK = 3
    ERROR = 4
    ASC_ACKED = 5
    #: Vault mode: AUTH with the vault's signed pending record (:class:`PendingNote`).
    ASC_PENDING = 6


#: Each kind by its byte, and where that byte is in an envelope.
_KINDS: dict[int, Kind] = {kind.value: kind for kind in Kind}
_KIND_AT = len(_ENVELOPE_TAG)


# ---------------------------------------------------------------- primitives


class _Writer:
    __slots__ = ("parts",)

    def __init__(self, tag: bytes) -> None:
        self.parts = [tag]

    def raw(self, data: bytes) -> _Writer:
        self.parts.append(bytes(data))
        return self

    def lp(self, data: bytes, width: int, what: str) -> _Writer:
        size = len(data)
        if size >= 1 << (8 * width):
            raise ValueError(f"{what} is too long")
        self.parts += (size.to_bytes(width, "big"), bytes(data))  # joined once, in done()
        return self

    def u16(self, value: int) -> _Writer:
        self.parts.append(struct.pack(">H", value))
        return self

    def headers(self, headers: tuple[tuple[bytes, bytes], ...]) -> _Writer:
        if len(headers) > _MAX_HEADERS:
            raise ValueError(f"more than {_MAX_HEADERS} headers")
        self.u16(len(headers))
        for name, value in headers:
            self.lp(name, 2, "header name").lp(value, 4, "header value")
        return self

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, tag: bytes, what: str) -> None:
        data = bytes(data)
        if not data.startswith(tag):
            raise FrameError(f"not an a402 {what}")
        self.data, self.pos = data, len(tag)

    def take(self, size: int, what: str) -> bytes:
        start = self.pos
        end = start + size
        if end > len(self.data):
            raise FrameError(f"truncated at {what}")
        self.pos = end
        return self.data[start:end]

    def uint(self, width: int, what: str) -> int:
        return int.from_bytes(self.take(width, what), "big")

    def lp(self, width: int, what: str) -> bytes:
        """A ``width``-byte big-endian length, then that many bytes."""
        data, start = self.data, self.pos + width
        if start > len(data):
            raise FrameError(f"truncated at {what} length")
        end = start + int.from_bytes(data[self.pos:start], "big")
        if end > len(data):
            raise FrameError(f"truncated at {what}")
        self.pos = end
        return data[start:end]

    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        count = self.uint(2, "header count")
        if count > _MAX_HEADERS:
            raise FrameError(f"more than {_MAX_HEADERS} headers")
        lp = self.lp
        return tuple([(lp(2, "header name"), lp(4, "header value")) for _ in range(count)])

    def rest(self) -> bytes:
        chunk, self.pos = self.data[self.pos :], len(self.data)
        return chunk

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError("trailing bytes")


# ------------------------------------------------------------ HTTP exchange


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The paid request EXEC carries: what the provider runs against its service.

    ``path`` is the decoded path (as ASGI's ``scope["path"]``), ``query`` the
    raw query string, ``headers`` raw ``(name, value)`` byte pairs.
    """

    method: str
    path: str
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.method or not self.method.isascii() or not self.method.isalpha():
            raise ValueError(f"not an HTTP method: {self.method!r}")
        if not self.path.startswith("/"):
            raise ValueError("the path must start with '/'")
        object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(
            self, "headers", tuple([(bytes(k).lower(), bytes(v)) for k, v in self.headers])
        )

    def encode(self) -> bytes:
        return (
            _Writer(_REQUEST_TAG)
            .lp(self.method.encode("ascii"), 1, "method")
            .lp(self.path.encode("utf-8"), 4, "path")
            .lp(self.query, 4, "query")
            .headers(self.headers)
            .lp(self.body, 4, "body")
            .done()
        )

    @classmethod
    def decode(cls, data: bytes) -> HttpRequest:
        r = _Reader(data, _REQUEST_TAG, "request")
        try:
            method = r.lp(1, "method").decode("ascii")
            path = r.lp(4, "path").decode("utf-8")
            query, headers, body = r.lp(4, "query"), r.headers(), r.lp(4, "body")
            r.end()
            return cls(method, path, query, headers, body)
        except (UnicodeDecodeError, ValueError) as e:
            if isinstance(e, FrameError):
                raise
            raise FrameError(f"bad request: {e}") from None

    def header(self, name: str) -> bytes | None:
        key = name.lower().encode("latin-1")
        return next((v for k, v in self.headers if k == key), None)


def request_digest(raw_request: bytes) -> bytes:
    """keccak-256 of the request bytes EXEC carried: what the sealed result commits to.

    Always over the bytes as sent, never a re-encoding, so both ends agree
    whatever the sender's encoder did.
    """
    return keccak(bytes(raw_request))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A service's response: status, raw headers, body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 999:
            raise ValueError(f"not an HTTP status: {self.status}")
        object.__setattr__(
            self, "headers", tuple([(bytes(k).lower(), bytes(v)) for k, v in self.headers])
        )

    def encode(self) -> bytes:
        return self._write(_Writer(_RESPONSE_TAG)).done()

    def _write(self, writer: _Writer) -> _Writer:
        return writer.u16(self.status).headers(self.headers).lp(self.body, 4, "body")

    @classmethod
    def decode(cls, data: bytes) -> HttpResponse:
        r = _Reader(data, _RESPONSE_TAG, "response")
        status, headers, body = r.uint(2, "status"), r.headers(), r.lp(4, "body")
        r.end()
        try:
            return cls(status, headers, body)
        except ValueError as e:
            raise FrameError(str(e)) from None

    def header(self, name: str) -> bytes | None:
        key = name.lower().encode("latin-1")
        return next((v for k, v in self.headers if k == key), None)


@dataclass(frozen=True, slots=True)
class HttpResult:
    """What the provider seals and pre-signs: the response and the request it answers."""

    request_digest: bytes
    response: HttpResponse

    def encode(self) -> bytes:
        if len(self.request_digest) != 32:
            raise ValueError("the request digest is 32 bytes")
        # the response's encoding follows the digest, joined once (the body is copied once)
        return self.response._write(
            _Writer(_RESULT_TAG + self.request_digest + _RESPONSE_TAG)).done()

    @classmethod
    def decode(cls, data: bytes) -> HttpResult:
        r = _Reader(data, _RESULT_TAG, "result")
        digest = r.take(32, "request digest")
        return cls(digest, HttpResponse.decode(r.rest()))


# ----------------------------------------------------------------- envelopes


@dataclass(frozen=True, slots=True)
class Envelope:
    """One frame's plaintext: a kind and its body (see the module docstring)."""

    kind: Kind
    body: bytes = b""

    def encode(self) -> bytes:
        return _ENVELOPE_TAG + bytes([self.kind]) + self.body

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        data = bytes(data)
        if not data.startswith(_ENVELOPE_TAG):
            raise FrameError("not an a402 envelope")
        if len(data) <= _KIND_AT:
            raise FrameError("truncated at kind")
        kind = _KINDS.get(data[_KIND_AT])
        if kind is None:
            raise FrameError(f"unknown envelope kind {data[_KIND_AT]}")
        return cls(kind, data[_KIND_AT + 1:])

    @classmethod
    def asc(cls, message_bytes: bytes) -> Envelope:
        return cls(Kind.ASC, bytes(message_bytes))

    @classmethod
    def ok(cls) -> Envelope:
        return cls(Kind.OK)

    @classmethod
    def acked(cls, ack_bytes: bytes, message_bytes: bytes) -> Envelope:
        """ASC_ACKED: the previous request's ACK riding on the next message."""
        return cls(Kind.ASC_ACKED, _Writer(b"").lp(ack_bytes, 4, "ACK").raw(message_bytes).done())

    @classmethod
    def with_pending(cls, note: PendingNote, message_bytes: bytes) -> Envelope:
        """ASC_PENDING: a vault-mode AUTH with the pending record signed with its σ_U."""
        return cls(Kind.ASC_PENDING, note.encode() + bytes(message_bytes))

    def pending_and_message(self) -> tuple[PendingNote, bytes]:
        """The (pending record, AUTH) of an ASC_PENDING envelope."""
        if self.kind is not Kind.ASC_PENDING or len(self.body) <= PendingNote.SIZE:
            raise FrameError("ASC_PENDING carries a pending record and a message")
        return (PendingNote.decode(self.body[:PendingNote.SIZE]),
                self.body[PendingNote.SIZE:])

    def ack_and_message(self) -> tuple[bytes, bytes]:
        """The (ACK, message) of an ASC_ACKED envelope."""
        if self.kind is not Kind.ASC_ACKED:
            raise FrameError(f"{self.kind.name} is not ASC_ACKED")
        r = _Reader(self.body, b"", "ASC_ACKED body")
        ack = r.take(r.uint(4, "ACK length"), "ACK")
        message = r.rest()
        if not ack or not message:
            raise FrameError("ASC_ACKED carries an ACK and a message")
        return ack, message


@dataclass(frozen=True, slots=True)
class PendingNote:
    """A vault-mode pending record as the provider gets it with AUTH: payment ``request_id``
    of ``channel_id`` is pending, counted by the client's statements up to ``client_nonce``,
    claimable with ``A402Vault.claimPayment`` once settlement ``epoch`` has landed and until
    ``deadline``; ``signature`` is the vault key's over
    :func:`~a402.crypto.vault_messages.pending_digest`."""

    channel_id: bytes
    request_id: int
    client_nonce: int
    epoch: int
    deadline: int
    signature: bytes
    ledger: bytes
    """The vault's ledger life (16 bytes) the record names: the one the A402Vault pinned
    with its first settlement, or the claim fails: the provider enclave reveals only if it
    equals ``A402Vault.ledger()`` as its host read it (``wrong_ledger``, or
    ``ledger_not_pinned`` before any settlement landed)."""

    SIZE: ClassVar[int] = 32 + 8 * 4 + _SIGNATURE_SIZE + 16

    def encode(self) -> bytes:
        if (len(self.channel_id) != 32 or len(self.signature) != _SIGNATURE_SIZE
                or len(self.ledger) != 16):
            raise ValueError("malformed pending record")
        return (self.channel_id + self.request_id.to_bytes(8, "big")
                + self.client_nonce.to_bytes(8, "big") + self.epoch.to_bytes(8, "big")
                + self.deadline.to_bytes(8, "big") + self.signature + self.ledger)

    @classmethod
    def decode(cls, data: bytes) -> PendingNote:
        if len(data) != cls.SIZE:
            raise FrameError(f"a pending record is {cls.SIZE} bytes")
        n = [int.from_bytes(data[32 + 8 * i: 40 + 8 * i], "big") for i in range(4)]
        return cls(data[:32], n[0], n[1], n[2], n[3], data[64:64 + _SIGNATURE_SIZE],
                   data[64 + _SIGNATURE_SIZE:])


@dataclass(frozen=True, slots=True)
class OpenChannel:
    """OPEN: the terms (their hash is the channel id) and the vault's binding signature."""

    client: bytes
    vault: bytes
    provider: bytes
    provider_key: bytes
    deposit: int
    salt: bytes
    signature: bytes

    def envelope(self) -> Envelope:
        body = (
            self.client + self.vault + self.provider + self.provider_key
            + self.deposit.to_bytes(16, "big") + self.salt + self.signature
        )
        if len(body) != _TERMS_SIZE + _SIGNATURE_SIZE:
            raise ValueError("malformed channel terms")
        return Envelope(Kind.OPEN, body)

    @classmethod
    def from_body(cls, body: bytes) -> OpenChannel:
        if len(body) != _TERMS_SIZE + _SIGNATURE_SIZE:
            raise FrameError("OPEN carries 140 bytes of terms and a 65-byte signature")
        client, vault, provider = body[:20], body[20:40], body[40:60]
        key, deposit, salt = body[60:92], int.from_bytes(body[92:108], "big"), body[108:140]
        return cls(client, vault, provider, key, deposit, salt, body[_TERMS_SIZE:])


@dataclass(frozen=True, slots=True)
class Refusal:
    """ERROR: why the provider refused, and the service's own response if it failed."""

    reason: str
    detail: str = ""
    response: HttpResponse | None = None

    def envelope(self) -> Envelope:
        w = _Writer(b"").lp(self.reason.encode("ascii"), 1, "reason")
        w.lp(self.detail.encode("utf-8")[:4096], 4, "detail")
        if self.response is None:
            w.raw(b"\x00")
        else:
            w.raw(b"\x01").raw(self.response.encode())
        return Envelope(Kind.ERROR, w.done())

    @classmethod
    def from_body(cls, body: bytes) -> Refusal:
        r = _Reader(body, b"", "refusal")
        try:
            reason = r.lp(1, "reason").decode("ascii")
            detail = r.lp(4, "detail").decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("refusal text is not text") from None
        flag = r.uint(1, "response flag")
        if flag > 1:
            raise FrameError("bad response flag")
        response = HttpResponse.decode(r.rest()) if flag else None
        r.end()
        return cls(reason, detail, response)


def binding_digest(tunnel_binding: bytes, channel_id: bytes) -> bytes:
    """What the vault signs in OPEN: this tunnel may drive this channel.

    ``tunnel_binding`` is the tunnel's Noise handshake hash
    (:attr:`a402.tee.channel.SecureChannel.binding`).
    """
    if len(tunnel_binding) != 32 or len(channel_id) != 32:
        raise ValueError("the tunnel binding and the channel id are 32 bytes")
    return keccak(_BINDING_TAG + tunnel_binding + channel_id)


def provider_user_data(chain_id: int, manager: bytes, provider: bytes) -> bytes:
    """The ``user_data`` the provider's attestation commits to in ``/info``.

    Binds the attested enclave (and so its Schnorr key) to the provider's
    on-chain address and its ASCManager, so a host cannot advertise another
    provider's enclave under its own address.
    """
    if len(manager) != 20 or len(provider) != 20:
        raise ValueError("addresses are 20 bytes")
    return _USER_DATA_TAG + chain_id.to_bytes(32, "big") + manager + provider


# ----------------------------------------------------------------- info document


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise FrameError("expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise FrameError("not base64") from None


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: Any, size: int | None, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise FrameError(f"{what} must be 0x-prefixed hex")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise FrameError(f"{what} is not hex") from None
    if size is not None and len(raw) != size:
        raise FrameError(f"{what} must be {size} bytes")
    return raw


@dataclass(frozen=True, slots=True)
class PricedRoute:
    route: str
    amount: int


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """``GET …/info``: everything a vault needs before it opens a channel on-chain."""

    network: str
    chain_id: int
    asc_manager: bytes
    token: bytes
    dispute_window: int
    provider: bytes
    provider_key: bytes
    attestation_kind: str
    evidence: bytes
    nonce: bytes
    lock_timeout: float
    ack_timeout: float
    routes: tuple[PricedRoute, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": INFO_VERSION,
            "scheme": SCHEME_A402,
            "network": self.network,
            "chainId": self.chain_id,
            "ascManager": _hex(self.asc_manager),
            "token": _hex(self.token),
            "disputeWindow": self.dispute_window,
            "provider": _hex(self.provider),
            "providerKey": _hex(self.provider_key),
            "attestation": {"kind": self.attestation_kind, "evidence": b64(self.evidence)},
            "nonce": _hex(self.nonce),
            "lockTimeout": self.lock_timeout,
            "ackTimeout": self.ack_timeout,
            "routes": [{"route": r.route, "amount": str(r.amount)} for r in self.routes],
        }

    @classmethod
    def from_json(cls, data: Any) -> ProviderInfo:
        try:
            if data["scheme"] == SCHEME_A402 and data["version"] == 1:
                raise FrameError(
                    "the provider runs an earlier a402 release (info version 1: its payments "
                    "do not bind the request), which this vault cannot pay: upgrade the "
                    "provider and the vault together; nothing was paid")
            if data["version"] != INFO_VERSION or data["scheme"] != SCHEME_A402:
                raise FrameError("unsupported info document")
            attestation = data["attestation"]
            numbers = (data["chainId"], data["disputeWindow"])
            timeouts = (data["lockTimeout"], data["ackTimeout"])
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
                raise FrameError("chainId and disputeWindow are integers")
            if not all(isinstance(t, int | float) and t > 0 for t in timeouts):
                raise FrameError("timeouts are positive numbers")
            if not isinstance(data["network"], str) or not isinstance(attestation["kind"], str):
                raise FrameError("network and attestation kind are strings")
            return cls(
                network=data["network"],
                chain_id=data["chainId"],
                asc_manager=_unhex(data["ascManager"], 20, "ascManager"),
                token=_unhex(data["token"], 20, "token"),
                dispute_window=data["disputeWindow"],
                provider=_unhex(data["provider"], 20, "provider"),
                provider_key=_unhex(data["providerKey"], 32, "providerKey"),
                attestation_kind=attestation["kind"],
                evidence=unb64(attestation["evidence"]),
                nonce=_unhex(data["nonce"], None, "nonce"),
                lock_timeout=float(timeouts[0]),
                ack_timeout=float(timeouts[1]),
                routes=tuple(
                    PricedRoute(str(r["route"]), int(r["amount"])) for r in data["routes"]
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, FrameError):
                raise
            raise FrameError(f"malformed info document: {e!r}") from None
