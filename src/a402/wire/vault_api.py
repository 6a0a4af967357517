"""The vault's HTTP API as both ends see it: request signing, reasons, JSON shapes (pure).

Money moves on these calls, so every call but ``GET /v1/info`` is signed by
the client's Ethereum key (EIP-191 ``personal_sign``) over one canonical text::

    a402-vault-request/v3
    <vault account, CAIP-10>        the vault the call is for, on its chain:
                                    eip155:<chain id>:<address, lowercase>
                                    (no replay to another vault, nor to the same
                                    vault key on another chain or deployment)
    <life id>                       the vault's life (``life`` in ``GET /v1/info``):
                                    a new one after a vault lost its ledger, so no
                                    call signed for an earlier life is paid again
    <METHOD>
    <path?query>
    <sha256(body), hex>
    <unix timestamp>
    <nonce>

sent as the headers :data:`CLIENT_HEADER`, :data:`TIMESTAMP_HEADER`,
:data:`NONCE_HEADER`, :data:`SIGNATURE_HEADER` and :data:`LIFE_HEADER`. A call
without the life header is an older client's (:data:`CLIENT_OUTDATED`), one for
another life is refused :data:`WRONG_LIFE`: the vault lost its ledger since the
client read its info (what it held before is not in this vault's books). The
vault accepts a timestamp within :data:`DEFAULT_AUTH_WINDOW` seconds of its
clock and each ``(client, nonce)`` once (it remembers nonces for twice the
window), so a captured call can be neither replayed nor delayed. Both ends
import this module; it does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import coincurve
from eth_account.signers.local import LocalAccount

from a402.evm.address import address_key, to_checksum
from a402.evm.ecdsa import ETH_ACCOUNT, recover_address
from a402.evm.keccak import keccak256 as keccak
from a402.memo import memo_short
from a402.wire.a402 import DEFAULT_MAX_BLOB

API_PREFIX: Final = "/v1"
CLIENT_HEADER: Final = "a402-client"
TIMESTAMP_HEADER: Final = "a402-timestamp"
NONCE_HEADER: Final = "a402-nonce"
SIGNATURE_HEADER: Final = "a402-signature"
LIFE_HEADER: Final = "a402-life"
DEFAULT_AUTH_WINDOW: Final = 60
_TAG: Final = "a402-vault-request/v3"
_MAX_NONCE: Final = 64
#: The largest call body the vault reads: a request the provider could take (its blob,
#: base64 in JSON) and room for the rest; a larger one is refused before it is read.
MAX_CALL_BODY: Final = DEFAULT_MAX_BLOB * 4 // 3 + 64 * 1024

# --- reasons (the ``error`` field of every non-2xx answer) --------------------------------
UNAUTHENTICATED: Final = "unauthenticated"  # headers missing or malformed
BAD_SIGNATURE: Final = "bad_signature"
STALE_REQUEST: Final = "stale_request"  # timestamp outside the window
REPLAYED_REQUEST: Final = "replayed_request"  # nonce already used
#: The call lacks what this vault needs signed (the life header, an invoke's ``createdAt``):
#: an older client. Nothing was paid; upgrade the client.
CLIENT_OUTDATED: Final = "client_outdated"
#: The call was signed for another life of the vault: the vault lost its ledger and
#: started anew since the client read ``GET /v1/info``. Nothing was paid by this call.
WRONG_LIFE: Final = "wrong_life"
#: The vault enclave refused a call too old to pay: signed, or (an invoke) created, before
#: the horizon its record of paid calls keeps. Nothing was paid by this call.
STALE_CALL: Final = "stale_call"
#: The vault enclave refused a call it has paid (σ_U signed) or is paying elsewhere, or an
#: idempotency key it paid with another ``createdAt``: this call was paid already (or may
#: have been): ask ``GET /v1/requests/<key>`` for its answer, never a new key blindly.
REPLAYED_CALL: Final = "replayed_call"
#: An invoke's ``createdAt`` is more than the auth window after its signature's timestamp
#: (the signing machine's clock is behind the one that created the call). Nothing was
#: paid; retry once the clock is right (this SDK signs no earlier than ``createdAt``).
CREATED_AFTER_SIGNATURE: Final = "created_after_signature"
BAD_REQUEST: Final = "bad_request"
REQUEST_TOO_LARGE: Final = "request_too_large"
TARGET_NOT_ALLOWED: Final = "target_not_allowed"  # not a public address (see targets.py)
INSUFFICIENT_BALANCE: Final = "insufficient_balance"
PRICE_ABOVE_MAXIMUM: Final = "price_above_maximum"
NO_ACCEPTABLE_OFFER: Final = "no_acceptable_offer"
OFFER_MISMATCH: Final = "offer_mismatch"  # the 402 disagrees with the provider's attestation
ATTESTATION_FAILED: Final = "attestation_failed"
PROVIDER_REFUSED: Final = "provider_refused"
PROTOCOL_VIOLATION: Final = "protocol_violation"
PROVIDER_UNAVAILABLE: Final = "provider_unavailable"
CHAIN_UNAVAILABLE: Final = "chain_unavailable"
#: This vault process is a standby (another replica holds the lease, or this one lost it):
#: nothing was done; call the active replica (``active`` in the body, when known) or retry.
VAULT_STANDBY: Final = "vault_standby"
#: This replica lost its lease while it ran the call, and so withheld the answer it had:
#: the call may have been paid (the vault's record has it). Call the active replica (or
#: this one again) with the same idempotency key: the recorded answer comes back, never a
#: second payment.
ANSWER_DROPPED: Final = "answer_dropped"
CHANNEL_BUSY: Final = "channel_busy"
#: The provider still holds an earlier request of the channel (its ACK had not reached it,
#: e.g. after a vault restart): nothing was paid, the vault re-sent it, call again.
CHANNEL_RECOVERING: Final = "channel_recovering"
#: The vault's enclave refused to open the wallet channel it had proposed (e.g. proposed by
#: an earlier life of the vault): nothing was paid; call again for a new proposal.
PROPOSAL_REFUSED: Final = "proposal_refused"
IDEMPOTENCY_KEY_REUSED: Final = "idempotency_key_reused"
REQUEST_IN_PROGRESS: Final = "request_in_progress"
PAYMENT_PENDING: Final = "payment_pending"
#: A call given up before it was paid (its lock released, no σ_U): recorded as refused,
#: nothing was paid, and the same key may run again.
LOCK_RELEASED: Final = "lock_released"
#: A withdrawal order relayed but not mined yet: the balance stays in the pool until it is
#: (the contract moves it in one step, or not at all).
WITHDRAWAL_PENDING: Final = "withdrawal_pending"
#: The contract refused a withdrawal order (a blocklisted `to`, a used nonce, more than the
#: pool balance): nothing moved, the balance is still in the pool.
WITHDRAWAL_REFUSED: Final = "withdrawal_refused"
RESULT_MISMATCH: Final = "result_mismatch"
AUTHORIZATION_REQUIRED: Final = "channel_authorization_required"
BAD_AUTHORIZATION: Final = "bad_channel_authorization"
NOT_FOUND: Final = "not_found"
CONFLICT: Final = "conflict"

# --- request outcomes (``outcome`` of a finished /v1/invoke) -------------------------------
PAID: Final = "paid"  # the provider was paid δ and the result was delivered
FREE: Final = "free"  # the target did not ask to be paid; its answer is returned
UNPAID: Final = "unpaid"  # the paid service failed (status >= 400): nothing was paid
REFUSED: Final = "refused"  # the vault or the provider refused: nothing was paid
PENDING: Final = "pending"  # σ_U is out and the result is not in yet
ABORTED: Final = "aborted"  # a pending payment ended without the result: δ went back

#: Funding of a new channel: the client's vault balance, or its own wallet (EIP-3009).
POOL: Final = "pool"
WALLET: Final = "wallet"


WRONG_LIFE_MESSAGE: Final = (
    "nothing was paid or moved by this call: it was signed for another life of this vault. "
    "The vault lost its ledger and started anew (a new life): balances, channels and calls "
    "from before are not in its books. Read GET /v1/info again (its 'life') to call it anew")


class AuthError(Exception):
    """A call the vault must answer 401: ``reason`` is one of the reasons above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def vault_account(network: str, address: str) -> str:
    """The CAIP-10 account a call is signed for: the vault's address on its chain
    (``network`` in CAIP-2 form, as ``GET /v1/info`` gives it)."""
    return f"{network}:{address_key(address)}"


def signing_text(
    vault: str, method: str, path: str, body: bytes, timestamp: int, nonce: str, *, life: str
) -> str:
    """The canonical text a client signs for one call to ``vault`` (its
    :func:`vault_account`) in its life ``life`` (see the module docstring)."""
    return "\n".join((
        _TAG, vault, life, method.upper(), path, hashlib.sha256(body).hexdigest(),
        str(timestamp), nonce,
    ))


class RequestSigner:
    """A client's key loaded once for signing its calls, for a client that makes many.

    Loading a secp256k1 key derives its public key, which costs about as much CPU
    as the signature itself: :func:`sign_request` given a :class:`LocalAccount`
    loads it on every call (and keeps nothing), given one of these it does not.
    The key lives as long as this object, which its owner holds instead of (or next
    to) the account; ``repr`` shows only the address.
    """

    __slots__ = ("_key", "address")

    def __init__(self, account: LocalAccount) -> None:
        self.address: str = account.address
        self._key = coincurve.PrivateKey(bytes(account.key))

    def sign(self, digest: bytes) -> bytes:
        """``r ‖ s ‖ recovery id`` (65 bytes) over a 32-byte digest."""
        return self._key.sign_recoverable(digest, hasher=None)

    def __repr__(self) -> str:
        return f"RequestSigner(address={self.address})"


def sign_request(
    account: LocalAccount | RequestSigner, vault: str, method: str, path: str, body: bytes, *,
    life: str, now: float | None = None, nonce: str | None = None,
) -> dict[str, str]:
    """The five authentication headers for one call to ``vault`` (its :func:`vault_account`)
    in its life ``life`` (``GET /v1/info``'s ``life``)."""
    timestamp = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    digest = _personal_hash(signing_text(vault, method, path, body, timestamp, nonce,
                                         life=life))
    if isinstance(account, RequestSigner):
        rs_recid = account.sign(digest)
    else:  # not cached: a cache would keep clients' private keys alive past their accounts
        rs_recid = coincurve.PrivateKey(bytes(account.key)).sign_recoverable(digest, hasher=None)
    return {
        CLIENT_HEADER: account.address,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: "0x" + rs_recid[:64].hex() + f"{27 + rs_recid[64]:02x}",
        LIFE_HEADER: life,
    }


# EIP-191 ``personal_sign`` done directly on libsecp256k1 (coincurve), as eth_account does
# it underneath (its coincurve backend), without its per-call object layers: the same
# bytes both ways (deterministic RFC 6979 signatures, low s), a fraction of the CPU.
_EIP191_PREFIX: Final = b"\x19Ethereum Signed Message:\n"


def _personal_hash(text: str) -> bytes:
    """keccak256 of the EIP-191 version-E message (eth_account's ``encode_defunct(text=)``)."""
    message = text.encode()
    return keccak(_EIP191_PREFIX + str(len(message)).encode() + message)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who signed a call (checksum address) and the nonce the vault must see only once."""

    client: str
    nonce: str
    timestamp: int


def verify_request(
    headers: Mapping[str, str], vault: str, method: str, path: str, body: bytes, *,
    life: str, now: float, window: int = DEFAULT_AUTH_WINDOW,
) -> Authenticated:
    """Check a call's signature, its life and freshness; :class:`AuthError` otherwise.

    The nonce is returned, not checked: remembering it is the store's job.
    """
    try:
        client = headers[CLIENT_HEADER]
        timestamp = int(headers[TIMESTAMP_HEADER])
        nonce = headers[NONCE_HEADER]
        signature = bytes.fromhex(headers[SIGNATURE_HEADER].removeprefix("0x"))
    except (KeyError, ValueError):
        raise AuthError(UNAUTHENTICATED, "sign the call (a402-client/-timestamp/-nonce/"
                                         "-signature headers)") from None
    if not 8 <= len(nonce) <= _MAX_NONCE or not nonce.isascii() or not nonce.isalnum():
        raise AuthError(UNAUTHENTICATED, "the nonce is 8 to 64 letters or digits")
    signed_life = headers.get(LIFE_HEADER)
    if signed_life is None:
        raise AuthError(CLIENT_OUTDATED, "sign the vault's life too (a402-life header, "
                                         f"{_TAG}): this client is older than the vault; "
                                         "nothing was done")
    if signed_life != life:
        raise AuthError(WRONG_LIFE, WRONG_LIFE_MESSAGE)
    if abs(now - timestamp) > window:
        raise AuthError(STALE_REQUEST, f"timestamp {timestamp} is more than {window}s away")
    text = signing_text(vault, method, path, body, timestamp, nonce, life=life)
    # Exactly what eth_account's ``recover_message`` accepts (ETH_ACCOUNT): v 0/1, 27/28 or
    # EIP-155 style; r and s below the curve order, high s included (the nonce, not the
    # signature's bytes, is what makes a call unique).
    try:
        signer = recover_address(_personal_hash(text), signature, policy=ETH_ACCOUNT)
    except Exception:  # a text that is not UTF-8
        signer = None
    if signer is None:
        raise AuthError(BAD_SIGNATURE, "the signature does not recover")
    if "0x" + signer.hex() != address_key(client):
        raise AuthError(BAD_SIGNATURE, "the signature is not the named client's")
    return Authenticated(to_checksum(signer), nonce, timestamp)


# ----------------------------------------------------------------------- JSON shapes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str = "body") -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None


def headers_to_json(headers: tuple[tuple[bytes, bytes], ...]) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers]


def headers_from_json(data: Any) -> tuple[tuple[bytes, bytes], ...]:
    if not isinstance(data, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in data
    ):
        raise ValueError("headers are a list of [name, value] strings")
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in data)


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    """``POST /v1/invoke``: one request to a paid URL, paid within ``max_price``.

    ``idempotency_key`` names the call: a retry with the same key returns the
    first outcome and never pays twice. ``created_at`` (unix seconds) is when the
    client made the call, signed with it and KEPT by every retry of the same key: the
    vault enclave pays each ``(client, idempotency key, created_at)`` once and refuses
    a call created before the horizon its record of paid calls keeps
    (:data:`STALE_CALL`), so no retry signature a host holds back can pay a call again
    once that record is pruned. A call without it is an older client's
    (:data:`CLIENT_OUTDATED`). ``funding`` is how a *new* channel is
    funded (:data:`POOL` or :data:`WALLET`); ``deposit`` caps the deposit of a
    wallet-funded channel. ``channel_authorization`` answers a 428
    (:data:`AUTHORIZATION_REQUIRED`). ``mandate`` is the owner's signed mandate the
    client pays under (the JSON object of :mod:`a402.mandate`), ``mandate_confirmation``
    the owner's signed approval of a payment above its threshold: the vault enclave
    checks both (:mod:`a402.mandate.enclave`) before anything is signed. ``pay_to``
    (``payTo``, a 0x address) is the provider the client agrees to pay: vault mode
    requires it and pays the call only on a channel to that provider (review S9-3).
    """

    url: str
    method: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    max_price: int
    idempotency_key: str
    funding: str = POOL
    deposit: int | None = None
    channel_authorization: dict[str, str] | None = None
    created_at: int | None = None
    mandate: dict[str, Any] | None = None
    mandate_confirmation: dict[str, Any] | None = None
    pay_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url, "method": self.method, "headers": headers_to_json(self.headers),
            "body": b64(self.body), "maxPrice": str(self.max_price),
            "idempotencyKey": self.idempotency_key, "funding": self.funding,
        }
        if self.deposit is not None:
            out["deposit"] = str(self.deposit)
        if self.created_at is not None:
            out["createdAt"] = self.created_at
        if self.channel_authorization is not None:
            out["channelAuthorization"] = dict(self.channel_authorization)
        if self.mandate is not None:
            out["mandate"] = self.mandate
        if self.mandate_confirmation is not None:
            out["mandateConfirmation"] = self.mandate_confirmation
        if self.pay_to is not None:
            out["payTo"] = self.pay_to
        return out

    @classmethod
    def from_json(cls, data: Any) -> InvokeRequest:
        """The call, or ValueError: a URL whose host or port cannot be read is refused here,
        before anything is recorded or any peer contacted."""
        if not isinstance(data, dict):
            raise ValueError("the body is a JSON object")
        url, method, key = data.get("url"), data.get("method", "GET"), data.get("idempotencyKey")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
                or not _has_host_and_port(url):
            raise ValueError("url must be an absolute http(s) URL")
        if not isinstance(method, str) or not method.isascii() or not method.isalpha():
            raise ValueError("method must be an HTTP method")
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise ValueError("idempotencyKey is 1 to 128 characters")
        funding = data.get("funding", POOL)
        if funding not in (POOL, WALLET):
            raise ValueError(f"funding is {POOL!r} or {WALLET!r}")
        authorization = data.get("channelAuthorization")
        if authorization is not None and not (
            isinstance(authorization, dict)
            and all(isinstance(v, str) for v in authorization.values())
        ):
            raise ValueError("channelAuthorization is an object of strings")
        deposit = data.get("deposit")
        created_at = data.get("createdAt")
        mandate, confirmation = data.get("mandate"), data.get("mandateConfirmation")
        if mandate is not None and not isinstance(mandate, dict):
            raise ValueError("mandate is the owner's signed mandate, a JSON object")
        if confirmation is not None and not isinstance(confirmation, dict):
            raise ValueError("mandateConfirmation is a JSON object")
        pay_to = data.get("payTo")
        if pay_to is not None and not (isinstance(pay_to, str) and _ADDRESS.fullmatch(pay_to)):
            raise ValueError("payTo is the payee's 0x address")
        return cls(
            url=url, method=method.upper(), headers=headers_from_json(data.get("headers", [])),
            body=unb64(data.get("body", "")), max_price=_amount(data.get("maxPrice"), "maxPrice"),
            idempotency_key=key, funding=funding,
            deposit=None if deposit is None else _amount(deposit, "deposit"),
            channel_authorization=authorization,
            created_at=None if created_at is None else _unix_seconds(created_at),
            mandate=mandate, mandate_confirmation=confirmation, pay_to=pay_to,
        )

    def fingerprint(self) -> str:
        """What makes a retry "the same call": everything but the channel authorization."""
        digest = hashlib.sha256()
        for part in (self.method, self.url, str(self.max_price), self.funding,
                     str(self.deposit)) + (() if self.pay_to is None else (self.pay_to,)):
            digest.update(part.encode() + b"\x00")
        for name, value in self.headers:
            digest.update(name + b"\x00" + value + b"\x00")
        digest.update(self.body)
        if self.mandate is not None or self.mandate_confirmation is not None:
            digest.update(json.dumps([self.mandate, self.mandate_confirmation],
                                     sort_keys=True).encode())
        return digest.hexdigest()


def _amount(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} is a decimal string of atomic units")
    text = str(value)
    if not text.isdigit() or len(text) > 78:
        raise ValueError(f"{what} is a decimal string of atomic units")
    return int(text)


def _unix_seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int) \
            or not str(value).isdigit() or len(str(value)) > 12:
        raise ValueError("createdAt is the call's creation time, in unix seconds")
    return int(value)


def parse_amount(value: Any, what: str) -> int:
    """An amount of atomic units as the API carries it (decimal string); ValueError if not."""
    return _amount(value, what)


#: A 0x address (any case; ``\Z``-free :meth:`re.Pattern.fullmatch`, so no trailing newline).
_ADDRESS: Final = re.compile(r"0[xX][0-9a-fA-F]{40}")


@memo_short(1024)  # clients call the same few URLs
def _has_host_and_port(url: str) -> bool:
    """Whether ``url``'s host and port can be read."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError:
        return False
    return bool(parts.hostname)
