"""The MuSig2 cooperative close's two messages and their one canonical encoding (pure).

After CLOSE / CLOSE_ACK (the ASC machine's final state, :mod:`a402.asc.messages`), the vault
and the provider turn that state into the key-path spend in two more messages
(:class:`~a402.bitcoin.exchange.CooperativeClose`)::

    vault ── COOP_PROPOSAL (channel id, vault's public nonce, unsigned close) ──▶ provider
    vault ◀── COOP_ANSWER (channel id, provider's public nonce, partial signature) ── provider

Encoding, in the ASC messages' style (fixed widths, fixed order, big-endian)::

    "A402/BTC" (8 bytes, domain tag) ‖ 0x01 (format version) ‖ type (1 byte) ‖ fields

=====================  ======  ===============================================
field                  bytes
=====================  ======  ===============================================
channel id             32      SHA-256 of the funding outpoint (ChannelParams)
public nonce           66      BIP-327: two compressed points, both on the curve
partial signature      32      BIP-327: a scalar below the group order n
unsigned close         2 + n   u16 length, then a transaction without witness,
                               its one serialisation, n ≤ 512
=====================  ======  ===============================================

COOP_PROPOSAL (type 1) is channel id ‖ public nonce ‖ unsigned close; COOP_ANSWER (type 2)
is channel id ‖ public nonce ‖ partial signature (exactly 140 bytes after the header).

Decoding is "bounded, exact or refuse": the length is checked against the largest message
before anything is read (a hostile peer's megabytes cost one comparison), then the tag, the
version, the type and the exact length the type fixes; the points and the scalar are parsed
by libsecp256k1 (:mod:`a402.bitcoin.musig`, which checks every length before its ctypes
call reads a fixed-size buffer); the unsigned close must parse and re-serialise to the same
bytes. There is no nesting, no optional field and no integer-width choice, so one message
has one encoding and there is no recursion to exhaust. Every refusal is a
:class:`CoopWireError` (an :class:`~a402.bitcoin.channel.ExchangeError`) whose ``reason`` is
one of :data:`WIRE_REASONS`; nothing else escapes for any input.

What the encoding does not decide (the protocol does, in
:mod:`a402.bitcoin.exchange`): whether the channel id is this channel's (``wrong-channel``),
whether the unsigned close is the final state's (``wrong-state``), and whether the partial
signature verifies (``bad-partial-signature``). The secret nonces never travel and are never
stored (BIP-327): a side that restarts between the two messages proposes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bitcointx.core import CTransaction

from . import (
    _backend,  # noqa: F401  (bitcointx on coincurve's libsecp256k1)
    musig,
)
from .channel import ExchangeError

DOMAIN_TAG: Final = b"A402/BTC"
FORMAT_VERSION: Final = 1
HEADER: Final = DOMAIN_TAG + bytes([FORMAT_VERSION])
COOP_PROPOSAL: Final = 1
COOP_ANSWER: Final = 2

CHANNEL_ID_SIZE: Final = 32
PUBNONCE_SIZE: Final = 66
PARTIAL_SIG_SIZE: Final = 32
#: The largest unsigned close a proposal may carry (a cooperative close is 137 bytes or less).
MAX_UNSIGNED_TX: Final = 512
_PREFIX = len(HEADER) + 1
_ANSWER_SIZE: Final = _PREFIX + CHANNEL_ID_SIZE + PUBNONCE_SIZE + PARTIAL_SIG_SIZE
_PROPOSAL_MIN: Final = _PREFIX + CHANNEL_ID_SIZE + PUBNONCE_SIZE + 2
#: No message of this format is longer.
MAX_MESSAGE: Final = _PROPOSAL_MIN + MAX_UNSIGNED_TX

#: Every ``reason`` a decode refuses with.
WIRE_REASONS: Final = frozenset({
    "malformed", "too-large", "truncated", "not-a-coop-message", "unsupported-version",
    "unknown-type", "unexpected-type", "wrong-length", "bad-nonce", "bad-partial-signature",
    "bad-transaction",
})


class CoopWireError(ExchangeError):
    """Bytes that are no well-formed cooperative-close message; ``reason`` says why."""


@dataclass(frozen=True)
class CoopProposal:
    """The vault's key-path close of the final state: the unsigned spend, its MuSig2 nonce."""

    channel_id: bytes
    unsigned: bytes
    pubnonce: bytes

    def encode(self) -> bytes:
        """The canonical bytes; :class:`ValueError` if a field cannot be encoded."""
        head = _head(COOP_PROPOSAL, self.channel_id, self.pubnonce)
        if not isinstance(self.unsigned, bytes) or not 0 < len(self.unsigned) <= MAX_UNSIGNED_TX:
            raise ValueError(f"the unsigned close must be 1..{MAX_UNSIGNED_TX} bytes")
        return head + len(self.unsigned).to_bytes(2, "big") + self.unsigned


@dataclass(frozen=True)
class CoopAnswer:
    """The provider's nonce and partial signature on the proposed close."""

    channel_id: bytes
    pubnonce: bytes
    partial_signature: bytes

    def encode(self) -> bytes:
        """The canonical bytes; :class:`ValueError` if a field cannot be encoded."""
        head = _head(COOP_ANSWER, self.channel_id, self.pubnonce)
        _width(self.partial_signature, PARTIAL_SIG_SIZE, "partial signature")
        return head + self.partial_signature


def _width(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")


def _head(kind: int, channel_id: bytes, pubnonce: bytes) -> bytes:
    """Header, type and the two fields both messages open with, each checked in that order."""
    _width(channel_id, CHANNEL_ID_SIZE, "channel id")
    _width(pubnonce, PUBNONCE_SIZE, "public nonce")
    return b"".join((HEADER, bytes([kind]), channel_id, pubnonce))


def _header(data: object) -> tuple[bytes, int]:
    """``(bytes, type)`` once the size, tag and version are right."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoopWireError("malformed", "a message is bytes")
    if len(data) > MAX_MESSAGE:  # before any copy or parse
        raise CoopWireError("too-large", f"{len(data)} bytes, at most {MAX_MESSAGE}")
    raw = bytes(data)
    if len(raw) < _PREFIX:
        raise CoopWireError("truncated", f"{len(raw)} bytes: no full header")
    if not raw.startswith(DOMAIN_TAG):
        raise CoopWireError("not-a-coop-message", "not an A402 Bitcoin cooperative-close message")
    if raw[len(DOMAIN_TAG)] != FORMAT_VERSION:
        raise CoopWireError("unsupported-version", f"format version {raw[len(DOMAIN_TAG)]}")
    return raw, raw[len(HEADER)]


def _nonce(raw: bytes, at: int) -> bytes:
    nonce = raw[at:at + PUBNONCE_SIZE]
    try:
        musig.check_pubnonce(nonce)
    except musig.MusigError:
        raise CoopWireError("bad-nonce", "the public nonce is not two curve points") from None
    return nonce


def decode(data: bytes) -> CoopProposal | CoopAnswer:
    """Parse exactly one cooperative-close message, or :class:`CoopWireError`."""
    raw, kind = _header(data)
    if kind == COOP_PROPOSAL:
        return _proposal(raw)
    if kind == COOP_ANSWER:
        return _answer(raw)
    raise CoopWireError("unknown-type", f"message type {kind}")


def decode_proposal(data: bytes) -> CoopProposal:
    """Parse exactly one COOP_PROPOSAL (another message is ``unexpected-type``)."""
    message = decode(data)
    if not isinstance(message, CoopProposal):
        raise CoopWireError("unexpected-type", "an answer where a proposal was expected")
    return message


def decode_answer(data: bytes) -> CoopAnswer:
    """Parse exactly one COOP_ANSWER (another message is ``unexpected-type``)."""
    message = decode(data)
    if not isinstance(message, CoopAnswer):
        raise CoopWireError("unexpected-type", "a proposal where an answer was expected")
    return message


def _proposal(raw: bytes) -> CoopProposal:
    if len(raw) < _PROPOSAL_MIN:
        raise CoopWireError("truncated", f"{len(raw)} bytes, a proposal has {_PROPOSAL_MIN}+")
    at = _PREFIX
    channel_id = raw[at:at + CHANNEL_ID_SIZE]
    at += CHANNEL_ID_SIZE
    size = int.from_bytes(raw[at + PUBNONCE_SIZE:at + PUBNONCE_SIZE + 2], "big")
    if not 0 < size <= MAX_UNSIGNED_TX:
        raise CoopWireError("bad-transaction", f"an unsigned close of {size} bytes")
    if len(raw) != _PROPOSAL_MIN + size:
        reason = "truncated" if len(raw) < _PROPOSAL_MIN + size else "wrong-length"
        raise CoopWireError(reason, f"{len(raw)} bytes, its length says {_PROPOSAL_MIN + size}")
    pubnonce = _nonce(raw, at)
    unsigned = raw[_PROPOSAL_MIN:]
    try:
        tx = CTransaction.deserialize(unsigned)
        canonical = bytes(tx.serialize()) == unsigned and tx.wit.is_null()
    except Exception:  # bitcointx raises several types on truncated or bad bytes
        raise CoopWireError("bad-transaction", "the unsigned close does not parse") from None
    if not canonical:
        raise CoopWireError("bad-transaction", "not one unsigned transaction's serialisation")
    return CoopProposal(channel_id, unsigned, pubnonce)


def _answer(raw: bytes) -> CoopAnswer:
    if len(raw) != _ANSWER_SIZE:
        reason = "truncated" if len(raw) < _ANSWER_SIZE else "wrong-length"
        raise CoopWireError(reason, f"{len(raw)} bytes, an answer has {_ANSWER_SIZE}")
    at = _PREFIX
    channel_id = raw[at:at + CHANNEL_ID_SIZE]
    at += CHANNEL_ID_SIZE
    pubnonce = _nonce(raw, at)
    partial = raw[at + PUBNONCE_SIZE:]
    try:
        musig.check_partial_signature(partial)
    except musig.MusigError:
        raise CoopWireError("bad-partial-signature", "not a scalar below n") from None
    return CoopAnswer(channel_id, pubnonce, partial)


__all__ = [
    "COOP_ANSWER",
    "COOP_PROPOSAL",
    "FORMAT_VERSION",
    "MAX_MESSAGE",
    "MAX_UNSIGNED_TX",
    "WIRE_REASONS",
    "CoopAnswer",
    "CoopProposal",
    "CoopWireError",
    "decode",
    "decode_answer",
    "decode_proposal",
]
