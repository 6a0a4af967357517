"""Paying through a Liquidity Vault instead of paying ``exact`` from the client's wallet.

The vault holds the client's deposit and pays providers inside Atomic Service
Channels; the client only signs its calls to the vault. Three ways in:

* :class:`VaultClient` / :class:`AsyncVaultClient`: the vault's API (deposit,
  account, invoke, withdraw, close);
* :func:`pooled` and :func:`withdraw_from_pool`: the pool on-chain, without the
  vault (read the balance; take it out with ``withdrawFromPool``, sent by the
  client: the exit that needs nothing of the vault);
* :mod:`a402.client.vault_transport`: an httpx transport that sends every
  request through the vault's ``/v1/invoke`` and returns the provider's
  response as the response, with what was paid attached
  (:func:`vault_payment_of`), and ``vault_paying_client`` to build one with
  the same limits as the ``exact`` client.

The pool is on-chain (``ASCManager.pooled[vault][client]``). A deposit is the
client's EIP-3009 ``receiveWithAuthorization`` to the manager whose nonce names
this vault, this client and the amount (the vault relays it and can credit
nothing else with it); a withdrawal is the client's signed
``A402PoolWithdrawal`` order, which the vault relays and the contract carries
out only as signed (its ``to``, its amount, once).


Each call carries an idempotency key and its creation time (``createdAt``);
a retry after a lost answer reuses both (this client remembers the creation
time of the keys it used; a key it generates embeds it, ``<createdAt>.<hex>``,
so a retry of that key from another process or object recovers it; for a key
of your own, a retry from another process passes ``created_at``, which every
:class:`VaultCallError` of the call carries as ``createdAt``), so the vault
answers from its record and never pays twice — the vault's enclave pays each
(key, creation time) once, refuses the key with another creation time while
it remembers the paid one (``replayed_call``), and refuses a call created too
long ago (``stale_call``: nothing was paid) rather than risk paying it again.
A retry is signed no earlier than its ``createdAt`` (a machine whose clock is
behind the one that created the call). Every call
is signed for the vault's *life* (``GET /v1/info``): a vault that lost its
ledger starts a new life, and a call signed for the old one is refused
(``wrong_life``); this client then reads the vault's info again and says so,
and refuses to sign a key it signed for the old life for the new one unless
told (``allow_new_life``): the old life may have paid it. A wallet-funded
channel (``funding="wallet"``) needs one signature from the client when it
opens: the vault answers 428 with the EIP-712 ``receiveWithAuthorization``
it proposes, this client checks it pays the ASCManager the vault named, from
this client, no more than the deposit it allowed, then signs and retries.

Fail-over: a vault may run as replicas over one database, one active at a time
(:mod:`a402.vault.lease`). Give the client every replica's URL (a list) and it
sends each call to the one that last answered; if that one cannot be reached,
drops the connection, or answers ``503 vault_standby`` (or ``503 answer_dropped``: the
replica lost its lease while it ran the call), it signs the call again
(a fresh nonce; the same idempotency key, so a call the dead replica had
started is answered from the vault's record, never paid twice) and tries the
next, for up to ``failover_wait`` seconds from the first failure (30 by default
with several URLs, 0 with one). A replica that is paused rather than dead holds a
call until the client's ``timeout``; then the call fails over too. Behind one
address (a load balancer routing by ``/healthz``, which answers 503 on a
standby), pass ``failover_wait`` to ride out the switch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32

from a402.client.errors import PaymentError
from a402.client.wallet import load_account
from a402.wire import vault_api as api
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimits, check_bounds

VAULT_EXTENSION: Final = "a402.vault"
"""Key of the :class:`VaultResult` in ``response.extensions``."""
DEFAULT_PENDING_WAIT: Final = 120.0
"""How long a call waits for a PENDING payment to deliver before reporting it."""
REMEMBERED_CALLS: Final = 4096
"""How many idempotency keys' creation times a client remembers (for its retries)."""
DEFAULT_FAILOVER_WAIT: Final = 30.0
"""With several replica URLs: how long a call keeps trying them for an active one."""
_FAILOVER_PAUSE: Final = 0.2
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExpectedVault:
    """The vault a client means to use, known before it asks the vault anything: its
    address (the key of its attested enclave, which approves every channel), the ASCManager
    its pool lives in, and the token. ``GET /v1/info`` is unauthenticated: a host could
    name its own plain key as ``vault`` (then a pool deposit is credited to that key, which
    can spend it alone) or another manager or token. So the client checks the info against
    this and refuses any difference, before it signs or sends anything.

    Where it comes from: configuration (the vault's published address, checked against its
    attestation out of band) and the devnet manifest for the manager and token
    (:meth:`from_manifest`). Attesting the vault's key from here is not built."""

    vault: str
    manager: str
    token: str

    @classmethod
    def from_manifest(cls, vault: str, manifest: Any) -> ExpectedVault:
        """``vault``, with the manager and token of an :class:`a402.chain.deploy.Manifest`."""
        return cls(vault, manifest.contracts["ASCManager"], manifest.token.address)

    def differences(self, info: dict[str, Any]) -> list[str]:
        """What ``info`` names differently from this (empty: it matches). A vault in vault
        mode (``"mode": "vault"``) pools in an ``A402Vault``: ``manager`` is that contract."""
        named = {"vault": info.get("vault"), "ascManager": _pool_contract(info),
                 "token": (info.get("token") or {}).get("address")
                 if isinstance(info.get("token"), dict) else None}
        wanted = {"vault": self.vault, "ascManager": self.manager, "token": self.token}
        return [f"{field} {named[field]} (expected {wanted[field]})"
                for field in wanted
                if str(named[field] or "").lower() != str(wanted[field]).lower()]


def _pool_contract(info: dict[str, Any]) -> Any:
    """The contract a vault's info names for its pool: its ASCManager, or in vault mode
    its A402Vault (the client's account is there; paid calls are the same either way)."""
    return info.get("a402Vault") if info.get("mode") == "vault" else info.get("ascManager")


class VaultCallError(PaymentError):
    """The vault refused or failed a call; ``reason`` is an :mod:`a402.wire.vault_api` reason.

    ``status`` is the vault's HTTP status, ``body`` its JSON answer (for an invoke, with
    the call's ``idempotencyKey`` and ``createdAt``: retry with both). With ``reason``
    :data:`~a402.wire.vault_api.PAYMENT_PENDING` the call was paid, or may have been
    (the result is not in yet); with :data:`~a402.wire.vault_api.REPLAYED_CALL` it was
    paid already, or may have been; with ``key_of_another_life`` an earlier attempt may
    have been paid in the vault's old life. A 5xx that is not one of the vault's own
    refusals made before paying (:data:`REFUSED_BEFORE_PAYING`: a proxy's error page, a
    host that died mid-call) is an answer lost on the way: the call may have been paid.
    Otherwise nothing was paid by this attempt. :attr:`may_have_paid` says which.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error") or body.get("reason") or f"http_{status}"),
                         str(body.get("message") or ""))
        self.status = status
        self.body = body

    @property
    def may_have_paid(self) -> bool:
        """True unless the vault's answer says that nothing was paid by this attempt: a
        budget keeps a call's reservation, and a message says "may have been paid", when
        this is true."""
        if self.reason in MAY_BE_PAID or self.body.get("outcome") in (api.PAID, api.PENDING):
            return True
        return self.status >= 500 and self.reason not in REFUSED_BEFORE_PAYING


#: Reasons after which the call was paid, or may have been.
MAY_BE_PAID: Final = frozenset({api.PAYMENT_PENDING, api.REPLAYED_CALL, "key_of_another_life"})
#: The vault's 5xx refusals, all answered before σ_U leaves it (after σ_U, any failure is a
#: 202 ``payment_pending``): nothing was paid. Not ``protocol_violation``: a paid call
#: whose result does not open is answered with it (``"outcome": "paid"``); not
#: ``answer_dropped`` (a replica withheld the answer of a call it ran), ``vault_broken``
#: (a ledger write whose outcome is unknown) nor ``internal_error``. Pinned against the
#: vault's answers by tests/client/test_refused_before_paying.py: a new 5xx reason fails
#: there until it is classified.
REFUSED_BEFORE_PAYING: Final = frozenset({
    api.PROVIDER_REFUSED, api.PROVIDER_UNAVAILABLE, api.CHAIN_UNAVAILABLE, api.VAULT_STANDBY,
    api.ATTESTATION_FAILED, api.OFFER_MISMATCH, api.NO_ACCEPTABLE_OFFER,
    api.CHANNEL_RECOVERING, api.CHANNEL_BUSY, api.CONFLICT, api.LOCK_RELEASED,
    # vault mode's: an enclave refusal (it changed nothing), deposits unreadable at a safe
    # depth, an endpoint this vault does not serve
    "settlement_dead", "chain_unsafe", "not_configured"})


@dataclass(frozen=True)
class VaultResult:
    """What one call through the vault produced: the service's response and the payment."""

    outcome: str
    idempotency_key: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes
    payment: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def amount(self) -> int:
        return int(self.payment["amount"]) if self.payment else 0

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> VaultResult:
        response = body.get("response") or {"status": 502, "headers": [], "body": ""}
        return cls(
            outcome=str(body["outcome"]), idempotency_key=str(body["idempotencyKey"]),
            status=int(response["status"]), headers=api.headers_from_json(response["headers"]),
            content=api.unb64(response["body"]), payment=body.get("payment"),
            reason=body.get("reason"),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what ``a402 pay --vault`` prints)."""
        out: dict[str, Any] = {"success": self.outcome in (api.PAID, api.FREE),
                               "outcome": self.outcome, "idempotencyKey": self.idempotency_key,
                               "status": self.status}
        if self.payment:
            out["payment"] = self.payment
        if self.reason:
            out["reason"] = self.reason
        return out


def vault_payment_of(response: httpx.Response) -> VaultResult | None:
    """The vault call that produced ``response`` (None if it did not come from a vault)."""
    result = response.extensions.get(VAULT_EXTENSION)
    return result if isinstance(result, VaultResult) else None


# ------------------------------------------------------------------ the call flows
# Sans-IO: each flow yields httpx.Request (send it, send back the response) or a
# float (sleep that long), and returns its result; the sync and async clients drive it.

Flow = Generator["httpx.Request | float", "httpx.Response | None", Any]


class _Base:
    def __init__(self, url: str | Sequence[str], key: str | bytes | LocalAccount, *,
                 pending_wait: float = DEFAULT_PENDING_WAIT,
                 failover_wait: float | None = None, expect: ExpectedVault | None = None,
                 trust_on_first_use: bool = False) -> None:
        if expect is None and not trust_on_first_use:
            raise ValueError(
                "give the vault you expect (expect=ExpectedVault(vault, manager, token)): its "
                "GET /v1/info is unauthenticated, so this client pays and deposits only to a "
                "vault, manager and token it knows beforehand; or trust_on_first_use=True to "
                "take the first answer (a host could then name its own key)")
        #: The vault, manager and token every info answer must name (with trust on first
        #: use: the first answer's, pinned then).
        self.expect = expect
        #: The owner's signed mandate this client pays under (``SignedMandate.to_json()``),
        #: signed into every call: the vault enclave pays only within it, and once it saw
        #: one for this key, pays no call of this key without one.
        self.mandate: dict[str, Any] | None = None
        #: Where each paid call under :attr:`mandate` leaves its evidence record
        #: (:mod:`a402.mandate.evidence`; e.g. ``EvidenceLog(SpendStore(url).engine)``),
        #: with the channel's co-signed receipt, checked offline by ``a402 audit``.
        self.evidence: Any = None

        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give the vault's URL (or its replicas' URLs)")
        #: Every replica's URL; ``url`` is the one calls go to (the last that answered).
        self.urls = [u.rstrip("/") for u in urls]
        self.url = self.urls[0]
        self.account = load_account(key)
        #: The account's key loaded once for signing this client's calls (a stream signs
        #: one a group): the same headers as the account, without deriving its public
        #: key on every call. It lives exactly as long as :attr:`account`, which holds the
        #: same key; a different account put in its place gets a signer of its own.
        self._signer: tuple[LocalAccount, api.RequestSigner] | None = None
        self.pending_wait = pending_wait
        self.failover_wait = (failover_wait if failover_wait is not None
                              else DEFAULT_FAILOVER_WAIT if len(self.urls) > 1 else 0.0)
        self._info: dict[str, Any] | None = None
        #: The creation time of each idempotency key this client used (the newest
        #: :data:`REMEMBERED_CALLS`): every retry of a key signs the same one.
        self._created: OrderedDict[str, int] = OrderedDict()
        #: The vault life each of those keys was first signed for (see ``allow_new_life``).
        self._lives: OrderedDict[str, str] = OrderedDict()

    def _record(self, url: str, method: str, content: bytes, result: VaultResult) -> None:
        """The paid call's evidence record, if :attr:`evidence` and :attr:`mandate` are set.
        The call was paid whatever is written here: a failure is logged, not raised."""
        if self.evidence is None or self.mandate is None or result.payment is None \
                or self._info is None or result.outcome != api.PAID:
            return
        from a402.client.audit import vault_record
        from a402.crypto.authorization import EcdsaSigner
        from a402.mandate.document import load_signed

        try:
            fields = vault_record(mandate=load_signed(self.mandate).hash_hex,
                                  agent=self.account.address, method=method, url=url,
                                  content=content, result=result, info=self._info)
            self.evidence.append(fields, EcdsaSigner(bytes(self.account.key)).sign_digest)
        except Exception as e:
            log.error("a vault call was paid, but its evidence record could not be written "
                      "(%s: %s)", type(e).__name__, e)

    @property
    def address(self) -> str:
        return self.account.address

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None
                 ) -> httpx.Request:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        created = None if body is None else body.get("createdAt")
        return self._signed(method, path, content, json_body=body is not None,
                            created_at=created if isinstance(created, int) else 0)

    def _request_signer(self) -> api.RequestSigner:
        """:attr:`account`'s :class:`~a402.wire.vault_api.RequestSigner`, loaded on first use
        (again if :attr:`account` was replaced)."""
        account = self.account
        if self._signer is None or self._signer[0] is not account:
            self._signer = (account, api.RequestSigner(account))
        return self._signer[1]

    def _signed(self, method: str, path: str, content: bytes, *, json_body: bool,
                created_at: int | None = None) -> httpx.Request:
        """The call, signed now, or at its ``createdAt`` if this clock is behind that (a
        retry on a machine whose clock is behind the one that created the call: the vault
        refuses a signature before the call's creation). ``created_at``: the body's
        ``createdAt`` (0: none) when the caller has the body still as JSON, else read from
        ``content``."""
        assert self._info is not None
        vault = api.vault_account(self._info["network"], self._info["vault"])
        life = self._info.get("life")
        if not isinstance(life, str):
            raise VaultCallError(0, {"error": "vault_outdated", "message": (
                "nothing was sent: the vault's info names no life (an older vault than "
                "this client)")})
        if created_at is None:
            created_at = _created_in(content)
        headers = api.sign_request(self._request_signer(), vault, method, path, content,
                                   life=life, now=max(time.time(), created_at))
        if json_body:
            headers["content-type"] = "application/json"
        return httpx.Request(method, self.url + path, headers=headers, content=content)

    # ------------------------------------------------------------ fail-over

    def _standby(self, response: httpx.Response) -> bool:
        """A replica that is not the active one (it did nothing, or withheld the answer of
        a call it ran: the same key asked again gets the vault's recorded answer); moves
        ``url`` to the active one if it named one of ours."""
        if response.status_code != 503:
            return False
        data = _json(response)
        if data.get("error") not in (api.VAULT_STANDBY, api.ANSWER_DROPPED):
            return False
        active = str(data.get("active") or "").rstrip("/")
        if active in self.urls:
            self.url = active
        else:
            self._rotate()
        return True

    def _rotate(self) -> None:
        self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    def _again(self, request: httpx.Request) -> httpx.Request:
        """``request`` for the replica now in ``url``, signed again (a fresh nonce)."""
        path = request.url.raw_path.decode()
        if path == api.API_PREFIX + "/info":
            return httpx.Request("GET", self.url + path)
        return self._signed(request.method, path, request.content,
                            json_body="content-type" in request.headers)

    def _info_flow(self) -> Flow:
        if self._info is None:
            response = yield httpx.Request("GET", self.url + api.API_PREFIX + "/info")
            assert response is not None
            if response.status_code != 200:
                raise VaultCallError(response.status_code, _json(response))
            try:
                info = _decoded(response)
            except ValueError:
                info = None
            if not isinstance(info, dict):
                raise VaultCallError(0, {"error": "vault_mismatch", "message": (
                    f"nothing was sent or paid: the vault at {self.url} answered its info "
                    "with something else than a JSON object")})
            if self.expect is None:  # trust on first use, asked for: pinned from now on
                token = info.get("token")
                self.expect = ExpectedVault(
                    str(info.get("vault")), str(_pool_contract(info)),
                    str(token.get("address") if isinstance(token, dict) else None))
            wrong = self.expect.differences(info)
            if wrong:
                raise VaultCallError(0, {"error": "vault_mismatch", "message": (
                    f"nothing was sent or paid: the vault at {self.url} names "
                    + ", ".join(wrong) + "; a vault that names another key, manager or token "
                    "could take what you deposit or pay")})
            self._info = info
        return self._info

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Flow:
        """One signed call; its response. A call refused for another life of the vault
        (``wrong_life``: the vault lost its ledger and started anew since this client read
        its info) reads the info again, once, and raises saying so plainly."""
        assert self._info is not None
        signed_for = self._info.get("life")
        response = yield self._request(method, path, body)
        assert response is not None
        if response.status_code == 401 and _json(response).get("error") == api.WRONG_LIFE:
            self._info = None
            info = yield from self._info_flow()
            earlier = ""
            if body is not None and "idempotencyKey" in body:
                earlier = (f" An earlier attempt of idempotency key {body['idempotencyKey']} "
                           "may have been paid in the old life: find out (its answer, your "
                           "provider) before you retry the key for the new one "
                           "(allow_new_life).")
            raise VaultCallError(401, {
                "error": api.WRONG_LIFE, "signedLife": signed_for, "life": info.get("life"),
                "message": (
                    "nothing was paid or moved by this attempt. The vault at "
                    f"{self.url} lost its ledger and started anew (its life was "
                    f"{signed_for}, it is now {info.get('life')}): whatever you held there "
                    "before (balance, channels, calls) is not in its books. Calls made from "
                    "now on go to the new life." + earlier)})
        return response

    def _call_flow(self, method: str, path: str, body: dict[str, Any] | None = None,
                   ok: Sequence[int] = (200,)) -> Flow:
        yield from self._info_flow()
        response = yield from self._send(method, api.API_PREFIX + path, body)
        assert response is not None
        data = _json(response)
        if response.status_code not in ok:
            raise VaultCallError(response.status_code, data)
        return response.status_code, data

    def _deposit_flow(self, amount: int, validity: int = 3600) -> Flow:
        info = yield from self._info_flow()
        from a402.asc import pool_deposit_nonce
        from a402.crypto import PaymentDomain
        from a402.evm.eip3009 import sign_receive_authorization

        if amount <= 0:
            raise ValueError("a deposit is a positive amount")
        token, manager = info["token"], info["ascManager"]
        salt = os.urandom(32)
        nonce = pool_deposit_nonce(PaymentDomain(int(info["chainId"]), manager),
                                   info["vault"], self.address, amount, salt)
        valid_before = int(time.time()) + validity
        signed = sign_receive_authorization(
            self.account, token_name=token["name"], token_version=token["version"],
            chain_id=int(info["chainId"]), token=token["address"], to=manager, value=amount,
            valid_after=0, valid_before=valid_before, nonce=nonce)
        authorization = {"from": self.address, "amount": str(amount),
                         "salt": "0x" + salt.hex(), "validAfter": "0",
                         "validBefore": str(valid_before),
                         "signature": "0x" + (signed.r + signed.s + bytes([signed.v])).hex()}
        _, data = yield from self._call_flow("POST", "/deposits",
                                             {"authorization": authorization}, ok=(200, 202))
        return data

    def _withdraw_flow(self, amount: int, to: str | None, validity: int = 3600,
                       nonce: int | None = None) -> Flow:
        info = yield from self._info_flow()
        from a402.asc import pool_withdrawal_digest
        from a402.crypto import PaymentDomain

        if nonce is None:
            _, account = yield from self._call_flow("GET", "/account")
            nonce = int(account["poolWithdrawalNonce"])
        to = to or self.address
        deadline = int(time.time()) + validity
        digest = pool_withdrawal_digest(
            PaymentDomain(int(info["chainId"]), info["ascManager"]), info["vault"],
            self.address, to, amount, nonce, deadline)
        signature = bytes(self.account.unsafe_sign_hash(Hash32(digest)).signature)
        body = {"amount": str(amount), "to": to, "nonce": str(nonce),
                "deadline": str(deadline), "signature": "0x" + signature.hex()}
        _, data = yield from self._call_flow("POST", "/withdrawals", body,
                                             ok=(200, 202, 409))
        return data

    def _invoke_flow(
        self, url: str, *, method: str, headers: Sequence[tuple[bytes, bytes]], content: bytes,
        max_price: int, idempotency_key: str | None, funding: str, deposit: int | None,
        created_at: int | None = None, allow_new_life: bool = False, pay_to: str | None = None,
    ) -> Flow:
        info = yield from self._info_flow()
        if idempotency_key is None:
            created = created_at if created_at is not None else int(time.time())
            key = new_idempotency_key(created)
        else:
            key = idempotency_key
        created = self._created_at(key, created_at)
        try:
            return (yield from self._invoke_once(
                info, url, method=method, headers=headers, content=content,
                max_price=max_price, key=key, created=created, funding=funding,
                deposit=deposit, allow_new_life=allow_new_life, pay_to=pay_to))
        except VaultCallError as e:  # what a retry (from anywhere) needs to sign the same call
            e.body.setdefault("idempotencyKey", key)
            e.body.setdefault("createdAt", created)
            raise

    def _invoke_once(
        self, info: dict[str, Any], url: str, *, method: str,
        headers: Sequence[tuple[bytes, bytes]], content: bytes, max_price: int, key: str,
        created: int, funding: str, deposit: int | None, allow_new_life: bool,
        pay_to: str | None = None,
    ) -> Flow:
        life = str(info.get("life"))
        first = self._lives.setdefault(key, life)
        if first != life and not allow_new_life:
            raise VaultCallError(409, {"error": KEY_OF_ANOTHER_LIFE, "signedLife": first,
                                       "life": life, "message": (
                f"nothing was sent: idempotency key {key} was signed for another life of "
                f"the vault ({first}; it is now {life}), and an earlier attempt may have "
                "been paid in that old life, which the new one knows nothing of. Find out "
                "first; then retry with allow_new_life=True (or use a new key)")})
        self._lives[key] = life
        self._lives.move_to_end(key)
        while len(self._lives) > REMEMBERED_CALLS:
            self._lives.popitem(last=False)
        if info.get("mode") == "vault" and pay_to is None:
            raise VaultCallError(400, {"error": "payee_unsigned", "message": (
                "nothing was sent: a vault in vault mode pays only the payee the call names; "
                "pass pay_to (the provider's address: the payTo of its 402's a402 offer)")})
        call = api.InvokeRequest(
            url=url, method=method.upper(), headers=tuple(headers), body=content,
            max_price=max_price, idempotency_key=key, funding=funding, deposit=deposit,
            created_at=created, mandate=self.mandate, pay_to=pay_to)
        body = call.to_json()
        for _ in range(2):  # at most one 428 to answer
            response = yield from self._send("POST", api.API_PREFIX + "/invoke", body)
            assert response is not None
            data = _json(response)
            if response.status_code == 428 and data.get("error") == api.AUTHORIZATION_REQUIRED:
                body = {**body, "channelAuthorization": self._authorize(info, data, deposit,
                                                                        max_price)}
                continue
            break
        assert response is not None  # the loop above ran (mypy cannot see range(2) is not empty)
        if response.status_code != 202:
            if response.status_code != 200:
                raise VaultCallError(response.status_code, data)
            return VaultResult.from_json(data)
        # 202: σ_U is out (the call is paid, or may be): from here no failure says otherwise.
        deadline = time.monotonic() + self.pending_wait
        failure: dict[str, Any] | None = None
        while response.status_code == 202 and time.monotonic() < deadline:
            yield 0.25
            try:
                response = yield from self._send(
                    "GET", f"{api.API_PREFIX}/requests/{call.idempotency_key}")
            except VaultCallError as e:  # wrong_life, or the info unreadable
                failure = {"pollStatus": e.status, "pollError": e.body}
                break
            except httpx.TransportError as e:
                failure = {"pollError": {"error": type(e).__name__, "message": str(e)}}
                break
            assert response is not None
            data = _json(response)
            if response.status_code not in (200, 202):
                failure = {"pollStatus": response.status_code, "pollError": data}
                break
        if failure is not None or response.status_code != 200:
            raise VaultCallError(202, {**(data if failure is None else {}), **(failure or {}),
                                       "error": api.PAYMENT_PENDING, "message": (
                "paid, or may have been paid (the vault answered 202: σ_U is out), but the "
                "result is not in yet; ask again later with the same idempotency key "
                f"({key}) and createdAt ({created})")})
        return VaultResult.from_json(data)

    def _created_at(self, key: str, given: int | None) -> int:
        """The creation time of the call named ``key``: ``given``, else the one this client
        signed for the key before (a retry keeps it), else the one a key this SDK generated
        embeds (:func:`new_idempotency_key`: a retry from a new process or client object),
        else now; remembered."""
        created = given if given is not None else self._created.get(key)
        if created is None:
            created = created_at_of(key)
        if created is None:
            created = int(time.time())
        self._created[key] = created
        self._created.move_to_end(key)
        while len(self._created) > REMEMBERED_CALLS:
            self._created.popitem(last=False)
        return created

    def created_at(self, idempotency_key: str) -> int | None:
        """The creation time this client signed for ``idempotency_key`` (None if it does not
        remember one): a retry from another process passes it as ``created_at``."""
        return self._created.get(idempotency_key)

    def _authorize(self, info: dict[str, Any], data: dict[str, Any], deposit: int | None,
                   max_price: int) -> dict[str, str]:
        """Sign the vault's proposed channel deposit, after checking what it pays."""
        typed = data.get("typedData") or {}
        message, domain = typed.get("message") or {}, typed.get("domain") or {}
        cap = deposit if deposit is not None else None
        problems = [
            what for what, ok in (
                ("primaryType", typed.get("primaryType") == "ReceiveWithAuthorization"),
                ("from", str(message.get("from", "")).lower() == self.address.lower()),
                ("to", str(message.get("to", "")).lower() == info["ascManager"].lower()),
                ("token", str(domain.get("verifyingContract", "")).lower()
                 == info["token"]["address"].lower()),
                ("chainId", domain.get("chainId") == info["chainId"]),
                ("nonce", str(message.get("nonce", "")).lower() == str(data.get("channelId"))
                 .lower()),
                ("value", cap is None or int(message.get("value", 0)) <= cap),
                ("value", int(message.get("value", 0)) >= max_price),
            ) if not ok
        ]
        if problems:
            raise VaultCallError(428, {"error": api.BAD_AUTHORIZATION, "message":
                                       "the proposed channel deposit is not acceptable: "
                                       + ", ".join(sorted(set(problems)))})
        signed = self.account.sign_message(encode_typed_data(full_message=typed))
        return {"channelId": str(data["channelId"]),
                "signature": "0x" + bytes(signed.signature).hex()}


KEY_OF_ANOTHER_LIFE: Final = "key_of_another_life"
"""A key this client signed for an earlier life of the vault: nothing sent (see
``allow_new_life``)."""
_GENERATED_KEY = re.compile(r"^([0-9]{1,12})\.[0-9a-f]{32}$")


def new_idempotency_key(created_at: int) -> str:
    """An idempotency key that embeds its call's creation time, ``<createdAt>.<uuid hex>``:
    a retry of it from anywhere (a new process, a new client object, the CLI run again)
    recovers the ``createdAt`` to sign (:func:`created_at_of`), so the vault's enclave sees
    the same call and pays it at most once."""
    return f"{int(created_at)}.{uuid.uuid4().hex}"


def created_at_of(key: str) -> int | None:
    """The creation time a key from :func:`new_idempotency_key` embeds (None for others)."""
    match = _GENERATED_KEY.match(key)
    return int(match.group(1)) if match else None


def _created_in(content: bytes) -> int:
    """An invoke body's ``createdAt`` (0 for any other body)."""
    if b'"createdAt"' not in content:
        return 0
    try:
        value = json.loads(content).get("createdAt")
    except (ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) else 0


#: The bounds a vault's answer is decoded within: the host that runs a vault is not
#: trusted with the client's process either (an answer nested 100,000 deep raised
#: RecursionError, or overflowed the C stack, in the client). Any size a paid call's
#: answer may have; the depth and number length of :mod:`a402.wire.jsonstrict`.
_ANSWER_LIMITS: Final = JsonLimits(max_bytes=256 * 1024 * 1024)


def _decoded(response: httpx.Response) -> Any:
    """The answer's JSON, checked against :data:`_ANSWER_LIMITS` before it is parsed;
    ValueError if it is over them or not JSON."""
    try:
        return json.loads(check_bounds(response.content, _ANSWER_LIMITS))
    except WireError as e:
        raise ValueError(f"{e.reason}: {e.message}") from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = _decoded(response)
    except ValueError:
        return {"error": f"http_{response.status_code}", "message": response.text[:200]}
    return data if isinstance(data, dict) else {"error": "malformed", "message": str(data)[:200]}


def _send(client: _Base, http: httpx.Client, request: httpx.Request) -> httpx.Response:
    """``request``, to the active replica (see the module docstring: fail-over)."""
    deadline: float | None = None  # counted from the first failure
    while True:
        try:
            response = http.send(request)
            if not client._standby(response):
                return response
            deadline = deadline or time.monotonic() + client.failover_wait
            if time.monotonic() >= deadline:
                return response
        except httpx.TransportError:
            deadline = deadline or time.monotonic() + client.failover_wait
            if time.monotonic() >= deadline:
                raise
            client._rotate()
        time.sleep(_FAILOVER_PAUSE)
        request = client._again(request)


async def _asend(client: _Base, http: httpx.AsyncClient, request: httpx.Request
                 ) -> httpx.Response:
    import asyncio

    deadline: float | None = None  # counted from the first failure
    while True:
        try:
            response = await http.send(request)
            if not client._standby(response):
                return response
            deadline = deadline or time.monotonic() + client.failover_wait
            if time.monotonic() >= deadline:
                return response
        except httpx.TransportError:
            deadline = deadline or time.monotonic() + client.failover_wait
            if time.monotonic() >= deadline:
                raise
            client._rotate()
        await asyncio.sleep(_FAILOVER_PAUSE)
        request = client._again(request)


def _drive(flow: Flow, http: httpx.Client, client: _Base) -> Any:
    try:
        item = next(flow)
        while True:
            if isinstance(item, float):
                time.sleep(item)
                item = flow.send(None)
            else:
                try:
                    response = _send(client, http, item)
                except httpx.TransportError as e:  # the flow may know what it means
                    item = flow.throw(e)
                    continue
                item = flow.send(response)
    except StopIteration as stop:
        return stop.value


async def _adrive(flow: Flow, http: httpx.AsyncClient, client: _Base) -> Any:
    import asyncio

    try:
        item = next(flow)
        while True:
            if isinstance(item, float):
                await asyncio.sleep(item)
                item = flow.send(None)
            else:
                try:
                    response = await _asend(client, http, item)
                except httpx.TransportError as e:  # the flow may know what it means
                    item = flow.throw(e)
                    continue
                item = flow.send(response)
    except StopIteration as stop:
        return stop.value


# ------------------------------------------------------------------------ clients


class VaultClient(_Base):
    """The vault's API for one client key (sync). Use as a context manager or ``close()``."""

    def __init__(self, url: str | Sequence[str], key: str | bytes | LocalAccount, *,
                 http: httpx.Client | None = None, timeout: float = 120.0,
                 pending_wait: float = DEFAULT_PENDING_WAIT,
                 failover_wait: float | None = None, expect: ExpectedVault | None = None,
                 trust_on_first_use: bool = False) -> None:
        super().__init__(url, key, pending_wait=pending_wait, failover_wait=failover_wait,
                         expect=expect, trust_on_first_use=trust_on_first_use)
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout, trust_env=False)

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def info(self) -> dict[str, Any]:
        return dict(_drive(self._info_flow(), self.http, self))

    def account_info(self) -> dict[str, Any]:
        return dict(_drive(self._call_flow("GET", "/account"), self.http, self)[1])

    def deposit(self, amount: int) -> dict[str, Any]:
        """Pool ``amount`` atomic units with this vault, gasless: an EIP-3009 authorization
        to the ASCManager whose nonce names this vault, this client and the amount, which
        the vault relays. ``state`` ``credited`` once mined (``pooled``: the on-chain
        balance), ``pending`` while not."""
        return dict(_drive(self._deposit_flow(amount), self.http, self))

    def report_deposit(self, tx_hash: str) -> dict[str, Any]:
        """Credit a ``depositToPool`` this client sent to the ASCManager itself."""
        return dict(_drive(self._call_flow("POST", "/deposits", {"transaction": tx_hash},
                                           ok=(200, 202)), self.http, self)[1])

    def withdraw(self, amount: int, *, to: str | None = None,
                 nonce: int | None = None) -> dict[str, Any]:
        """Take ``amount`` of the pool balance out to ``to`` (this client by default): signs
        the A402PoolWithdrawal order (its next nonce, read from the vault unless given;
        valid an hour) and has the vault relay it. ``state`` ``confirmed`` with the
        ``transaction``; ``failed`` (``reason`` ``withdrawal_refused``, HTTP 409) when the
        contract refused it — nothing moved, the balance is still in the pool: sign another
        (e.g. another ``to``, the same ``nonce``); ``submitted`` while not mined. Without
        the vault at all: :func:`withdraw_from_pool`."""
        return dict(_drive(self._withdraw_flow(amount, to, nonce=nonce), self.http, self))

    def close_channel(self, channel_id: str) -> dict[str, Any]:
        return dict(_drive(self._call_flow("POST", f"/channels/{channel_id}/close",
                                           ok=(200, 202)), self.http, self)[1])

    def outcome(self, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        """What the call named ``idempotency_key`` came to so far: (status, answer)."""
        status, body = _drive(self._call_flow(
            "GET", f"/requests/{idempotency_key}", ok=(200, 202, 402, 409, 422, 502, 503)),
            self.http, self)
        return int(status), dict(body)

    def invoke(
        self, url: str, *, method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (),
        content: bytes = b"", max_price: int, idempotency_key: str | None = None,
        funding: str = api.POOL, deposit: int | None = None, created_at: int | None = None,
        allow_new_life: bool = False, pay_to: str | None = None,
    ) -> VaultResult:
        """One paid request; raises :class:`VaultCallError` when nothing was delivered.

        A retry passes the same ``idempotency_key``; this client signs the creation time it
        signed for that key before, or the one a generated key embeds (``created_at``
        overrides it: a retry of a key of your own from another process passes the first
        attempt's, see :meth:`created_at` and the error's ``createdAt``). Without a key, one
        is generated (:func:`new_idempotency_key`). ``allow_new_life``: sign a key this
        client signed for an earlier life of the vault for its new one (an attempt may have
        been paid in the old life: find out first). ``pay_to``: the payee (the provider's
        address), signed into the call; a vault in vault mode pays no call without it, and
        only a channel to that provider."""
        flow = self._invoke_flow(url, method=method, headers=headers, content=content,
                                 max_price=max_price, idempotency_key=idempotency_key,
                                 funding=funding, deposit=deposit, created_at=created_at,
                                 allow_new_life=allow_new_life, pay_to=pay_to)
        result: VaultResult = _drive(flow, self.http, self)
        self._record(url, method, content, result)
        return result


class AsyncVaultClient(_Base):
    """The ``asyncio`` twin of :class:`VaultClient`."""

    def __init__(self, url: str | Sequence[str], key: str | bytes | LocalAccount, *,
                 http: httpx.AsyncClient | None = None, timeout: float = 120.0,
                 pending_wait: float = DEFAULT_PENDING_WAIT,
                 failover_wait: float | None = None, expect: ExpectedVault | None = None,
                 trust_on_first_use: bool = False) -> None:
        super().__init__(url, key, pending_wait=pending_wait, failover_wait=failover_wait,
                         expect=expect, trust_on_first_use=trust_on_first_use)
        self._own = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def __aenter__(self) -> AsyncVaultClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def info(self) -> dict[str, Any]:
        return dict(await _adrive(self._info_flow(), self.http, self))

    async def account_info(self) -> dict[str, Any]:
        return dict((await _adrive(self._call_flow("GET", "/account"), self.http, self))[1])

    async def deposit(self, amount: int) -> dict[str, Any]:
        """See :meth:`VaultClient.deposit`."""
        return dict(await _adrive(self._deposit_flow(amount), self.http, self))

    async def report_deposit(self, tx_hash: str) -> dict[str, Any]:
        """See :meth:`VaultClient.report_deposit`."""
        return dict((await _adrive(self._call_flow("POST", "/deposits", {"transaction": tx_hash},
                                                   ok=(200, 202)), self.http, self))[1])

    async def withdraw(self, amount: int, *, to: str | None = None,
                       nonce: int | None = None) -> dict[str, Any]:
        """See :meth:`VaultClient.withdraw`."""
        return dict(await _adrive(self._withdraw_flow(amount, to, nonce=nonce), self.http, self))

    async def close_channel(self, channel_id: str) -> dict[str, Any]:
        return dict((await _adrive(self._call_flow("POST", f"/channels/{channel_id}/close",
                                                   ok=(200, 202)), self.http, self))[1])

    async def outcome(self, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        status, body = await _adrive(self._call_flow(
            "GET", f"/requests/{idempotency_key}", ok=(200, 202, 402, 409, 422, 502, 503)),
            self.http, self)
        return int(status), dict(body)

    async def invoke(
        self, url: str, *, method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (),
        content: bytes = b"", max_price: int, idempotency_key: str | None = None,
        funding: str = api.POOL, deposit: int | None = None, created_at: int | None = None,
        allow_new_life: bool = False, pay_to: str | None = None,
    ) -> VaultResult:
        """See :meth:`VaultClient.invoke`."""
        flow = self._invoke_flow(url, method=method, headers=headers, content=content,
                                 max_price=max_price, idempotency_key=idempotency_key,
                                 funding=funding, deposit=deposit, created_at=created_at,
                                 allow_new_life=allow_new_life, pay_to=pay_to)
        result: VaultResult = await _adrive(flow, self.http, self)
        self._record(url, method, content, result)
        return result


# ------------------------------------------------------------- the pool, without the vault


def pooled(rpc_url: str, manager: str, vault: str, client: str) -> int:
    """``client``'s pool balance with ``vault``, as the ASCManager at ``manager`` holds it:
    read from the chain (``rpc_url``), not from the vault."""
    from a402.asc_manager import ASCManager
    from a402.chain.node import connect

    return ASCManager(connect(rpc_url), manager).pooled(vault, client)


def withdraw_from_pool(rpc_url: str, manager: str, key: str | bytes | LocalAccount,
                       vault: str, amount: int | None = None, *, to: str | None = None
                       ) -> dict[str, Any]:
    """Take ``amount`` (all, by default) of the key's pool balance with ``vault`` out to ``to``
    (the key's address by default) with ``withdrawFromPool``, sent by the key itself (it
    pays the gas): the exit that needs nothing of the vault — not its host, not its
    enclave, not its being online. Raises if the contract refuses (more than the balance,
    a ``to`` the token refuses): nothing moved then."""
    from a402.asc_manager import ASCManager
    from a402.chain.node import connect

    account = load_account(key)
    asc = ASCManager(connect(rpc_url), manager)
    if amount is None:
        amount = asc.pooled(vault, account.address)
    receipt = asc.withdraw_from_pool(account, vault, to or account.address, amount)
    return {"state": "confirmed", "amount": str(amount), "to": to or account.address,
            "transaction": "0x" + bytes(receipt["transactionHash"]).hex(),
            "pooled": str(asc.pooled(vault, account.address))}
