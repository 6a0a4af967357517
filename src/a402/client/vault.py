"""Paying through a Liquidity Vault instead of paying ``exact`` from the client's wallet.

The vault holds the client's deposit and pays providers inside Atomic Service
Channels; the client only signs its calls to the vault. Three ways in:

* :class:`VaultClient` / :class:`AsyncVaultClient`: the vault's API (deposit,
  account, invoke, withdraw, close);
* :mod:`a402.client.vault_transport`: an httpx transport that sends every
  request through the vault's ``/v1/invoke`` and returns the provider's
  response as the response, with what was paid attached
  (:func:`vault_payment_of`), and ``vault_paying_client`` to build one with
  the same limits as the ``exact`` client.

Each call carries an idempotency key and its creation time (``createdAt``);
a retry after a lost answer reuses both (this client remembers the creation
time of the keys it used; a retry from another process passes ``created_at``),
so the vault answers from its record and never pays twice — the vault's enclave
pays each (key, creation time) once, and refuses a call created too long ago
(``stale_call``: nothing was paid) rather than risk paying it again. Every call
is signed for the vault's *life* (``GET /v1/info``): a vault that lost its
ledger starts a new life, and a call signed for the old one is refused
(``wrong_life``); this client then reads the vault's info again and says so. A wallet-funded
channel (``funding="wallet"``) needs one signature from the client when it
opens: the vault answers 428 with the EIP-712 ``receiveWithAuthorization``
it proposes, this client checks it pays the ASCManager the vault named, from
this client, no more than the deposit it allowed, then signs and retries.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from a402.client.errors import PaymentError
from a402.client.wallet import load_account
from a402.wire import vault_api as api

VAULT_EXTENSION: Final = "a402.vault"
"""Key of the :class:`VaultResult` in ``response.extensions``."""
DEFAULT_PENDING_WAIT: Final = 120.0
"""How long a call waits for a PENDING payment to deliver before reporting it."""
REMEMBERED_CALLS: Final = 4096
"""How many idempotency keys' creation times a client remembers (for its retries)."""


class VaultCallError(PaymentError):
    """The vault refused or failed a call; ``reason`` is an :mod:`a402.wire.vault_api` reason.

    ``status`` is the vault's HTTP status, ``body`` its JSON answer. Unless
    ``reason`` is :data:`~a402.wire.vault_api.PAYMENT_PENDING`, nothing was paid.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error") or body.get("reason") or f"http_{status}"),
                         str(body.get("message") or ""))
        self.status = status
        self.body = body


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
    def __init__(self, url: str, key: str | bytes | LocalAccount, *,
                 pending_wait: float = DEFAULT_PENDING_WAIT) -> None:
        self.url = url.rstrip("/")
        self.account = load_account(key)
        self.pending_wait = pending_wait
        self._info: dict[str, Any] | None = None
        #: The creation time of each idempotency key this client used (the newest
        #: :data:`REMEMBERED_CALLS`): every retry of a key signs the same one.
        self._created: OrderedDict[str, int] = OrderedDict()

    @property
    def address(self) -> str:
        return self.account.address

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None
                 ) -> httpx.Request:
        assert self._info is not None
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        vault = api.vault_account(self._info["network"], self._info["vault"])
        life = self._info.get("life")
        if not isinstance(life, str):
            raise VaultCallError(0, {"error": "vault_outdated", "message": (
                "nothing was sent: the vault's info names no life (an older vault than "
                "this client)")})
        headers = api.sign_request(self.account, vault, method, path, content, life=life)
        if body is not None:
            headers["content-type"] = "application/json"
        return httpx.Request(method, self.url + path, headers=headers, content=content)

    def _info_flow(self) -> Flow:
        if self._info is None:
            response = yield httpx.Request("GET", self.url + api.API_PREFIX + "/info")
            assert response is not None
            if response.status_code != 200:
                raise VaultCallError(response.status_code, _json(response))
            self._info = response.json()
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
            raise VaultCallError(401, {
                "error": api.WRONG_LIFE, "signedLife": signed_for, "life": info.get("life"),
                "message": (
                    "nothing was paid or moved by this call. The vault at "
                    f"{self.url} lost its ledger and started anew (its life was "
                    f"{signed_for}, it is now {info.get('life')}): whatever you held there "
                    "before (balance, channels, calls) is not in its books. Calls made from "
                    "now on go to the new life")})
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

    def _deposit_flow(self, amount: int) -> Flow:
        info = yield from self._info_flow()
        requirement = dict(info["deposit"], amount=str(amount))
        from a402.exact.eip3009 import build_payment_payload
        from a402.wire.x402 import PaymentRequirements

        payload = build_payment_payload(PaymentRequirements.model_validate(requirement),
                                        self.account)
        _, data = yield from self._call_flow("POST", "/deposits",
                                             {"payload": payload.to_wire()}, ok=(200, 202))
        return data

    def _invoke_flow(
        self, url: str, *, method: str, headers: Sequence[tuple[bytes, bytes]], content: bytes,
        max_price: int, idempotency_key: str | None, funding: str, deposit: int | None,
        created_at: int | None = None,
    ) -> Flow:
        info = yield from self._info_flow()
        key = idempotency_key or uuid.uuid4().hex
        call = api.InvokeRequest(
            url=url, method=method.upper(), headers=tuple(headers), body=content,
            max_price=max_price, idempotency_key=key, funding=funding, deposit=deposit,
            created_at=self._created_at(key, created_at))
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
        deadline = time.monotonic() + self.pending_wait
        while response.status_code == 202 and time.monotonic() < deadline:
            yield 0.25
            response = yield from self._send(
                "GET", f"{api.API_PREFIX}/requests/{call.idempotency_key}")
            assert response is not None
            data = _json(response)
        if response.status_code == 202:
            raise VaultCallError(202, {**data, "error": api.PAYMENT_PENDING, "message":
                                       "paid (σ_U out) but the result is not in yet; ask "
                                       "again later with the same idempotency key"})
        if response.status_code != 200:
            raise VaultCallError(response.status_code, data)
        return VaultResult.from_json(data)

    def _created_at(self, key: str, given: int | None) -> int:
        """The creation time of the call named ``key``: ``given``, else the one this client
        signed for the key before (a retry keeps it), else now; remembered."""
        created = given if given is not None else self._created.get(key, int(time.time()))
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


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"error": f"http_{response.status_code}", "message": response.text[:200]}
    return data if isinstance(data, dict) else {"error": "malformed", "message": str(data)}


def _drive(flow: Flow, http: httpx.Client) -> Any:
    try:
        item = next(flow)
        while True:
            if isinstance(item, float):
                time.sleep(item)
                item = flow.send(None)
            else:
                item = flow.send(http.send(item))
    except StopIteration as stop:
        return stop.value


async def _adrive(flow: Flow, http: httpx.AsyncClient) -> Any:
    import asyncio

    try:
        item = next(flow)
        while True:
            if isinstance(item, float):
                await asyncio.sleep(item)
                item = flow.send(None)
            else:
                item = flow.send(await http.send(item))
    except StopIteration as stop:
        return stop.value


# ------------------------------------------------------------------------ clients


class VaultClient(_Base):
    """The vault's API for one client key (sync). Use as a context manager or ``close()``."""

    def __init__(self, url: str, key: str | bytes | LocalAccount, *,
                 http: httpx.Client | None = None, timeout: float = 120.0,
                 pending_wait: float = DEFAULT_PENDING_WAIT) -> None:
        super().__init__(url, key, pending_wait=pending_wait)
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
        return dict(_drive(self._info_flow(), self.http))

    def account_info(self) -> dict[str, Any]:
        return dict(_drive(self._call_flow("GET", "/account"), self.http)[1])

    def deposit(self, amount: int) -> dict[str, Any]:
        """Deposit ``amount`` atomic units by a signed EIP-3009 transfer (gasless)."""
        return dict(_drive(self._deposit_flow(amount), self.http))

    def report_deposit(self, tx_hash: str) -> dict[str, Any]:
        """Credit a token transfer this client made to the vault's address itself."""
        return dict(_drive(self._call_flow("POST", "/deposits", {"transaction": tx_hash},
                                           ok=(200, 202)), self.http)[1])

    def withdraw(self, amount: int, *, to: str | None = None,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Withdraw ``amount`` to ``to`` (this client by default): ``state`` ``confirmed``
        once paid; ``submitted`` (reason ``withdrawal_pending``) while its transfer is not
        through — the amount is reserved for it, and the vault sends it until it goes
        through (ask again with the same ``idempotency_key`` to see)."""
        body = {"amount": str(amount), "idempotencyKey": idempotency_key or uuid.uuid4().hex,
                **({"to": to} if to else {})}
        return dict(_drive(self._call_flow("POST", "/withdrawals", body, ok=(200, 202)),
                           self.http)[1])

    def close_channel(self, channel_id: str) -> dict[str, Any]:
        return dict(_drive(self._call_flow("POST", f"/channels/{channel_id}/close",
                                           ok=(200, 202)), self.http)[1])

    def outcome(self, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        """What the call named ``idempotency_key`` came to so far: (status, answer)."""
        status, body = _drive(self._call_flow(
            "GET", f"/requests/{idempotency_key}", ok=(200, 202, 402, 409, 422, 502, 503)),
            self.http)
        return int(status), dict(body)

    def invoke(
        self, url: str, *, method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (),
        content: bytes = b"", max_price: int, idempotency_key: str | None = None,
        funding: str = api.POOL, deposit: int | None = None, created_at: int | None = None,
    ) -> VaultResult:
        """One paid request; raises :class:`VaultCallError` when nothing was delivered.

        A retry passes the same ``idempotency_key``; this client signs the creation time it
        signed for that key before (``created_at`` overrides it: a retry from another
        process passes the first attempt's, see :meth:`created_at`)."""
        flow = self._invoke_flow(url, method=method, headers=headers, content=content,
                                 max_price=max_price, idempotency_key=idempotency_key,
                                 funding=funding, deposit=deposit, created_at=created_at)
        result: VaultResult = _drive(flow, self.http)
        return result


class AsyncVaultClient(_Base):
    """The ``asyncio`` twin of :class:`VaultClient`."""

    def __init__(self, url: str, key: str | bytes | LocalAccount, *,
                 http: httpx.AsyncClient | None = None, timeout: float = 120.0,
                 pending_wait: float = DEFAULT_PENDING_WAIT) -> None:
        super().__init__(url, key, pending_wait=pending_wait)
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
        return dict(await _adrive(self._info_flow(), self.http))

    async def account_info(self) -> dict[str, Any]:
        return dict((await _adrive(self._call_flow("GET", "/account"), self.http))[1])

    async def deposit(self, amount: int) -> dict[str, Any]:
        return dict(await _adrive(self._deposit_flow(amount), self.http))

    async def withdraw(self, amount: int, *, to: str | None = None,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """See :meth:`VaultClient.withdraw`."""
        body = {"amount": str(amount), "idempotencyKey": idempotency_key or uuid.uuid4().hex,
                **({"to": to} if to else {})}
        return dict((await _adrive(self._call_flow("POST", "/withdrawals", body, ok=(200, 202)),
                                   self.http))[1])

    async def close_channel(self, channel_id: str) -> dict[str, Any]:
        return dict((await _adrive(self._call_flow("POST", f"/channels/{channel_id}/close",
                                                   ok=(200, 202)), self.http))[1])

    async def outcome(self, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        status, body = await _adrive(self._call_flow(
            "GET", f"/requests/{idempotency_key}", ok=(200, 202, 402, 409, 422, 502, 503)),
            self.http)
        return int(status), dict(body)

    async def invoke(
        self, url: str, *, method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (),
        content: bytes = b"", max_price: int, idempotency_key: str | None = None,
        funding: str = api.POOL, deposit: int | None = None, created_at: int | None = None,
    ) -> VaultResult:
        """See :meth:`VaultClient.invoke`."""
        flow = self._invoke_flow(url, method=method, headers=headers, content=content,
                                 max_price=max_price, idempotency_key=idempotency_key,
                                 funding=funding, deposit=deposit, created_at=created_at)
        result: VaultResult = await _adrive(flow, self.http)
        return result
