"""What a settled payment delivered, kept so the identical resend gets it again (pure).

The problem: the payment settles, the response is released, and the connection drops
before the payer has it. The payer resends the same payment; the replay ledger, which
must refuse a settled authorization (one payment, one response), refused it, and the
payer had paid once for nothing. So the provider keeps what it delivered for a settled
payment, in the shared replay ledger (:class:`~a402.provider.ledger.DeliveryLedger`),
*before* it releases it, until the authorization expires; a resend that is the same
payment (same signed payload: :func:`~a402.exact.replay.payment_fingerprint`) for the
same request (:func:`request_digest`) is answered with that stored response and its
settlement receipt: nothing is settled again and the handler does not run again.

Safety argument:

- Nothing more is sold: the stored response is the one the payment bought. A different
  signature over the same nonce, or the same payment for another request (another
  path, query, method, body, tool or arguments), is refused as before: it would be a
  second response for one payment.
- Durable before released: the delivery is written (and committed) before the first
  byte of the response leaves, so a process dying after the release still lets a
  resend, at any replica sharing the ledger, get it.
- Bounded: a body above :data:`MAX_KEPT_BODY` is not kept; only the fact that it was
  delivered and not kept is, so the resend is told the truth: paid and settled, the
  response was not kept (:data:`RESPONSE_NOT_KEPT`).
- Whoever holds the payment header and the request can fetch the stored response until
  the authorization expires: the header already was a bearer credential for that
  response, as it is until the response is first served.
- Headers that belong to one connection or one session (hop-by-hop headers,
  ``set-cookie``) are not kept; the receipt header is added afresh on each delivery.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAX_KEPT_BODY: Final = 1024 * 1024
"""The largest body kept for a resend (1 MiB); a larger one is delivered once only."""

RESPONSE_NOT_KEPT: Final = "response_not_kept"
"""Reason: the payment was settled and its response delivered, but too large to keep: it
cannot be sent again (the payer is charged; nothing is charged again)."""

_NOT_REPLAYED: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "set-cookie", "date",
    "payment-response", "x-payment-response",
})
"""Headers of one connection or one session, and the receipt (added afresh)."""


@dataclass(frozen=True)
class Delivery:
    """One settled payment's delivered response, as kept (or the fact it was not)."""

    fingerprint: str
    """The paying payload's :func:`~a402.exact.replay.payment_fingerprint`."""
    request: str
    """:func:`request_digest` of the request it answered."""
    kept: bool
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    size: int
    """The body's size as delivered (``body`` is empty when not kept)."""

    @classmethod
    def of(cls, *, fingerprint: str, request: str, status: int,
           headers: Iterable[tuple[str, str]], body: bytes,
           limit: int = MAX_KEPT_BODY) -> Delivery:
        """Keep ``body`` if it fits in ``limit``; else only that it was delivered."""
        kept = len(body) <= limit
        safe = tuple((k.lower(), v) for k, v in headers if k.lower() not in _NOT_REPLAYED)
        return cls(fingerprint, request, kept, status, safe if kept else (),
                   body if kept else b"", len(body))

    def answers(self, fingerprint: str, request: str) -> bool:
        """Is this resend the same payment for the same request?"""
        return self.fingerprint == fingerprint and self.request == request


def request_digest(kind: str, **parts: Any) -> str:
    """A digest of what was asked (``kind`` ``http``: method, resource URL, body digest;
    ``mcp``: tool, arguments), independent of JSON key order."""
    canonical = json.dumps({"kind": kind, **parts}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
