"""Exceptions raised by :mod:`a402.asc`, each with a machine-readable reason.

Following h11, there are two kinds. :class:`RemoteProtocolError`: the peer sent
something this side must not act on (a bad signature, a replay, a message for
another request). :class:`LocalProtocolError`: the caller asked this side to do
something the protocol forbids (a second request while one is in flight). In
both cases the channel's state is exactly what it was before the call: a
rejected message never half-applies, so the caller can log the reason and go on.

Reasons are :class:`Reason` members (a ``StrEnum``, so they compare equal to
their string values and serialise as such): runtimes branch, count and report
them without parsing text.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message or an action was refused."""

    #: Bytes that are not a well-formed message of this protocol version.
    MALFORMED = "malformed"
    #: The message names another channel.
    WRONG_CHANNEL = "wrong_channel"
    #: The channel is closed (or its closing state is already signed).
    CHANNEL_CLOSED = "channel_closed"
    #: A request is already in flight; one per channel.
    REQUEST_IN_FLIGHT = "request_in_flight"
    #: The message is valid in the protocol but not in the channel's current status.
    UNEXPECTED_MESSAGE = "unexpected_message"
    #: A message for a request that was already handled (or superseded): a replay.
    REPLAYED = "replayed"
    #: A message for a request this side never issued or has not reached.
    UNKNOWN_REQUEST = "unknown_request"
    #: The vault's lock on the request expired before its REPLY arrived (Δ_lock).
    LOCK_EXPIRED = "lock_expired"
    #: The amount is zero or exceeds what the channel can pay.
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    #: The message's view of the channel state disagrees with this side's.
    STATE_MISMATCH = "state_mismatch"
    #: The pre-signature does not verify for m(cid, rid, δ, h) under T with the provider's key.
    BAD_PRESIGNATURE = "bad_presignature"
    #: σ_U is not the vault's signature over (m, δ, e).
    BAD_AUTHORIZATION = "bad_authorization"
    #: The revealed t is not the discrete logarithm of T.
    BAD_ADAPTOR_SECRET = "bad_adaptor_secret"
    #: A state signature does not come from the expected party.
    BAD_STATE_SIGNATURE = "bad_state_signature"
    #: The sealed result does not open under t for this (cid, rid): tampered or moved.
    RESULT_DOES_NOT_OPEN = "result_does_not_open"
    #: The sealed result opens but is not the result whose hash was paid for.
    RESULT_HASH_MISMATCH = "result_hash_mismatch"
    #: An on-chain signature is not the completion of this request's pre-signature.
    BAD_COMPLETION = "bad_completion"
    #: The caller may not do this now (e.g. reply to a request that is not executing).
    NOT_ALLOWED = "not_allowed"


class ASCError(ValueError):
    """Base class of every error raised by :mod:`a402.asc`."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class RemoteProtocolError(ASCError):
    """The peer's message was rejected; the channel state is unchanged."""


class LocalProtocolError(ASCError):
    """This side was asked to do something the protocol forbids; nothing changed."""


class MessageError(RemoteProtocolError):
    """Bytes that do not decode as a message (always :attr:`Reason.MALFORMED`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.MALFORMED, detail)
