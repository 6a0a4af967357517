"""What the vault keeps about a paid call, and how it answers about it.

Content leaves the vault enclave only sealed (``Enclave.seal``, the label
naming the row it belongs to, so the host can neither read a blob nor move it
to another row): channel snapshots, the provider's sealed result and the
adaptor secret ``t`` that opens it, and the final answer (the service's
response). The host's database keeps in the clear only what the ledger needs:
who, how much, which state.

A request that was paid has two durable halves before its answer is recorded:
the sealed result (written with the AUTHORIZED checkpoint, when σ_U is about
to leave) and ``t`` with the receipt (written with the DELIVERED checkpoint,
before the ACK leaves). Either the call finishes and records the answer, or
recovery rebuilds the answer from those two halves: a crash between
"δ credited" and "answer recorded" loses nothing the client paid for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from a402 import jsonbytes
from a402.asc import BalanceState, SignedState
from a402.crypto import ResultContext, sealing
from a402.tee import Enclave
from a402.wire import vault_api as api
from a402.wire.a402 import HttpResponse, HttpResult


def label(kind: str, key: str) -> str:
    return f"a402/vault/{kind}/{key}"


def seal_json(enclave: Enclave, kind: str, key: str, value: Any) -> bytes:
    return enclave.seal(label(kind, key), jsonbytes.dumps(value, sort_keys=True))


def unseal_json(enclave: Enclave, kind: str, key: str, blob: bytes) -> Any:
    return json.loads(enclave.unseal(label(kind, key), blob))


def open_result(
    t: bytes, sealed: bytes, channel_id: bytes, request_id: int
) -> HttpResponse:
    """Open a sealed result with ``t`` (as the vault did when the REVEAL came)."""
    result = sealing.open(t, sealed, ResultContext(channel_id, request_id))
    return HttpResult.decode(result).response


# ----------------------------------------------------------------------- JSON


def receipt_json(channel_id: bytes, signed: SignedState) -> dict[str, Any]:
    """A co-signed state as the client gets it: enough for ``initForceClose`` or a check."""
    state = signed.state
    return {
        "channelId": "0x" + channel_id.hex(),
        "version": state.version,
        "clientBalance": str(state.client_balance),
        "providerBalance": str(state.provider_balance),
        "isFinal": state.is_final,
        "vaultSignature": "0x" + signed.vault_signature.hex(),
        "providerSignature": "0x" + signed.provider_signature.hex(),
    }


def signed_from_json(data: dict[str, Any]) -> SignedState:
    """The inverse of :func:`receipt_json`."""
    return SignedState(
        BalanceState(int(data["version"]), int(data["clientBalance"]),
                     int(data["providerBalance"]), bool(data["isFinal"])),
        bytes.fromhex(data["vaultSignature"][2:]), bytes.fromhex(data["providerSignature"][2:]),
    )


def response_json(response: HttpResponse) -> dict[str, Any]:
    return {
        "status": response.status,
        "headers": api.headers_to_json(response.headers),
        "body": api.b64(response.body),
    }


@dataclass(frozen=True)
class Payment:
    """What a paid call cost and the proof of it."""

    amount: int
    asset: str
    network: str
    provider: str
    channel_id: bytes
    request_id: int
    receipt: dict[str, Any] | None
    transaction: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "amount": str(self.amount), "asset": self.asset, "network": self.network,
            "provider": self.provider, "channelId": "0x" + self.channel_id.hex(),
            "requestId": self.request_id, "receipt": self.receipt,
            "transaction": self.transaction, "onChain": self.transaction is not None,
        }


def answer_json(
    outcome: str, key: str, *, response: HttpResponse | None = None,
    payment: Payment | None = None, reason: str | None = None, detail: str = "",
) -> dict[str, Any]:
    """The body of a finished ``/v1/invoke`` (also what ``GET /v1/requests/…`` returns)."""
    out: dict[str, Any] = {"outcome": outcome, "idempotencyKey": key}
    if response is not None:
        out["response"] = response_json(response)
    if payment is not None:
        out["payment"] = payment.to_json()
    if reason is not None:
        out["reason"] = reason
        out["message"] = detail
    return out
