"""Snapshots of a channel's state machine: the bytes a runtime persists (pure).

A payment runtime must write every transition down before it sends the next
message (architecture, "Persistence and scale"): a vault that forgot it issued
σ_U could not extract ``t`` from the provider's on-chain claim, and a provider
that forgot ``t`` could not claim at all. :meth:`VaultChannel.snapshot` and
:meth:`ProviderChannel.snapshot` produce these bytes; ``restore`` turns them
back into a machine that behaves exactly as the original would have.

Format: UTF-8 JSON with sorted keys, byte strings as lowercase hex, protocol
messages as the hex of their canonical encoding (:mod:`a402.asc.messages`), a
``format`` tag naming the side and the version. JSON rather than a binary
layout because snapshots are read by operators and migrations, not parsed on
a hot path, and every field here is already canonical. Keys are **not** in a
snapshot: the caller passes them back to ``restore``, which checks they match
the channel's terms. A provider snapshot contains the adaptor secret ``t`` of
the request in flight, so it must be stored sealed (``Enclave.seal``); a vault
snapshot contains no secret but is the client's money, so it belongs behind
the vault's own sealing as well.

Deadlines (Δ_lock, Δ_ack) are stored as the numbers the machine was given;
a runtime that persists must use a clock that survives restarts (wall time),
not a monotonic one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, TypeVar

from a402 import jsonbytes
from a402.crypto import CryptoError, PaymentDomain

from .errors import MessageError
from .messages import DOMAIN_TAG, HEADER, Message, MessageType, decode
from .terms import BalanceState, ChannelTerms

VAULT_FORMAT = "a402/asc-vault/v1"
PROVIDER_FORMAT = "a402/asc-provider/v1"

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
    return jsonbytes.dumps(document, sort_keys=True)


def loads(data: bytes, expected_format: str) -> dict[str, Any]:
    try:
        document = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        raise SnapshotError("not a JSON snapshot") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise SnapshotError(f"not a {expected_format} snapshot")
    return document
