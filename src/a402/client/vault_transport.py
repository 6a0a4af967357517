"""httpx, paid through a Liquidity Vault: a transport and the clients built on it.

``vault_paying_client(vault_url, key, max_per_request=…)`` is the counterpart
of :func:`a402.client.paying_client`: every request goes to the vault's
``/v1/invoke``, the provider is paid inside an A402 channel, and the
provider's response comes back as the response, with the call's
:class:`~a402.client.vault.VaultResult` attached (:func:`vault_payment_of`).
The per-request maximum and the optional ``Budget`` work as for ``exact``.

Retries: set an ``Idempotency-Key`` header; for a key of your own, a retry from
another process or client also sets ``A402-Created-At`` to the first attempt's
``createdAt`` (every :class:`~a402.client.vault.VaultCallError` carries it). A
request without a key gets one that embeds its creation time
(:func:`~a402.client.vault.new_idempotency_key`), so re-sending the error's
``idempotencyKey`` is enough. A call the vault answered 202 (paid, or may have
been) keeps its budget reservation whatever the polls that follow answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from a402.client.vault import (
    VAULT_EXTENSION,
    AsyncVaultClient,
    ExpectedVault,
    VaultCallError,
    VaultClient,
    VaultResult,
)
from a402.wire import vault_api as api

# ---------------------------------------------------------------------- transports


@dataclass
class _Limits:
    """The per-request maximum (atomic units) and the optional budget of a transport."""

    max_price: int
    budget: Any = None  # a402.client.budget.Budget
    asset: str = ""
    funding: str = api.POOL
    deposit: int | None = None
    spent: list[VaultResult] = field(default_factory=list)


def _to_response(request: httpx.Request, result: VaultResult) -> httpx.Response:
    headers = [(k, v) for k, v in result.headers if k.lower() not in (
        b"content-length", b"transfer-encoding", b"content-encoding")]
    return httpx.Response(result.status, headers=headers, content=result.content,
                          request=request, extensions={VAULT_EXTENSION: result})


CREATED_AT_HEADER = "a402-created-at"
"""The request header naming the ``createdAt`` of a retried idempotency key."""


def _idempotency_key(request: httpx.Request) -> str | None:
    """The caller's ``Idempotency-Key`` header if it set one (so its retries are safe);
    None: the client generates one that embeds the call's creation time."""
    return request.headers.get("idempotency-key") or None


def _created_at(request: httpx.Request) -> int | None:
    """The caller's ``A402-Created-At`` header (a retry's first ``createdAt``), if set."""
    given = request.headers.get(CREATED_AT_HEADER)
    if given is None:
        return None
    try:
        return int(given)
    except ValueError:
        raise VaultCallError(0, {"error": api.BAD_REQUEST, "message": (
            f"nothing was sent: {CREATED_AT_HEADER} must be a unix time in seconds")}) from None


#: Not forwarded: transport details of the call to the vault, and ``accept-encoding``
#: (the service's body comes back inside JSON; a compressed one would only be re-wrapped).
_NOT_FORWARDED = (b"host", b"content-length", b"idempotency-key", b"accept-encoding",
                  b"connection", CREATED_AT_HEADER.encode())


def _call_headers(request: httpx.Request) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED)


class VaultTransport(httpx.BaseTransport):
    """Sends each request through the vault: the provider is paid in a channel, within limits.

    A budget (``a402.client.Budget``) is charged ``max_price`` before the call
    and settled to the amount actually paid after it; a call that ended
    PENDING (or ``replayed_call``) keeps the whole reservation (it is paid, or may be).
    """

    def __init__(self, client: VaultClient, limits: _Limits) -> None:
        self.client = client
        self.limits = limits

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        reservation = _reserve(self.limits)
        try:
            result = self.client.invoke(
                str(request.url), method=request.method, headers=_call_headers(request),
                content=request.content, max_price=self.limits.max_price,
                idempotency_key=_idempotency_key(request), funding=self.limits.funding,
                deposit=self.limits.deposit, created_at=_created_at(request))
        except VaultCallError as e:
            _settle(self.limits, reservation, None, pending=e.may_have_paid)
            raise
        _settle(self.limits, reservation, result, pending=False)
        return _to_response(request, result)

    def close(self) -> None:
        self.client.close()


class AsyncVaultTransport(httpx.AsyncBaseTransport):
    """The ``asyncio`` twin of :class:`VaultTransport`."""

    def __init__(self, client: AsyncVaultClient, limits: _Limits) -> None:
        self.client = client
        self.limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        reservation = _reserve(self.limits)
        try:
            result = await self.client.invoke(
                str(request.url), method=request.method, headers=_call_headers(request),
                content=request.content, max_price=self.limits.max_price,
                idempotency_key=_idempotency_key(request), funding=self.limits.funding,
                deposit=self.limits.deposit, created_at=_created_at(request))
        except VaultCallError as e:
            _settle(self.limits, reservation, None, pending=e.may_have_paid)
            raise
        _settle(self.limits, reservation, result, pending=False)
        return _to_response(request, result)

    async def aclose(self) -> None:
        await self.client.aclose()


def _reserve(limits: _Limits) -> Any:
    return None if limits.budget is None else limits.budget.reserve(limits.asset,
                                                                    limits.max_price)


def _settle(limits: _Limits, reservation: Any, result: VaultResult | None, *,
            pending: bool) -> None:
    """Give back what the call did not spend (all of it if nothing was paid)."""
    if result is not None:
        limits.spent.append(result)
    if reservation is None or pending:
        return
    limits.budget.release(reservation)
    if result is not None and result.amount:
        limits.budget.reserve(limits.asset, result.amount)


def vault_limits(info: Mapping[str, Any], max_per_request: Any, *, budget: Any = None,
                 funding: str = api.POOL, deposit: int | None = None) -> _Limits:
    """The atomic per-request maximum for the vault's token, from any ``max_per_request``."""
    from a402.client.errors import ASSET_NOT_ALLOWED, PaymentRefused
    from a402.client.limits import as_max_amount
    from a402.wire.x402 import PaymentRequirements

    token = info["token"]
    requirement = PaymentRequirements(
        scheme="a402", network=info["network"], amount="0", asset=token["address"],
        pay_to=info["vault"], max_timeout_seconds=60, extra={"decimals": token["decimals"]})
    cap = as_max_amount(max_per_request)(requirement)
    if cap is None:
        raise PaymentRefused(ASSET_NOT_ALLOWED, f"no maximum for the vault's token "
                                                f"{token['address']}")
    return _Limits(cap, budget, token["address"], funding, deposit)


# ---------------------------------------------------------------------- constructors


def vault_paying_client(
    vault_url: str, key: str | bytes | LocalAccount, *, max_per_request: Any,
    budget: Any = None, funding: str = api.POOL, deposit: int | None = None,
    timeout: float = 120.0, expect: ExpectedVault | None = None,
    trust_on_first_use: bool = False, **httpx_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` whose every request is paid through the vault at ``vault_url``.

    The counterpart of :func:`a402.client.paying_client` (same ``max_per_request``
    forms, same ``Budget``); what was paid is on each response
    (:func:`vault_payment_of`). Set an ``Idempotency-Key`` header on a request
    to make its retries safe across connection losses. ``expect`` is the vault, manager
    and token the client knows beforehand (:class:`~a402.client.vault.ExpectedVault`):
    required, unless ``trust_on_first_use`` is asked for.
    """
    client = VaultClient(vault_url, key, timeout=timeout, expect=expect,
                         trust_on_first_use=trust_on_first_use)
    try:
        limits = vault_limits(client.info(), max_per_request, budget=budget, funding=funding,
                              deposit=deposit)
    except BaseException:
        client.close()
        raise
    return httpx.Client(transport=VaultTransport(client, limits), timeout=timeout,
                        **httpx_kwargs)


async def async_vault_paying_client(
    vault_url: str, key: str | bytes | LocalAccount, *, max_per_request: Any,
    budget: Any = None, funding: str = api.POOL, deposit: int | None = None,
    timeout: float = 120.0, expect: ExpectedVault | None = None,
    trust_on_first_use: bool = False, **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of :func:`vault_paying_client` (a coroutine: it reads
    the vault's ``/v1/info`` first)."""
    client = AsyncVaultClient(vault_url, key, timeout=timeout, expect=expect,
                              trust_on_first_use=trust_on_first_use)
    try:
        limits = vault_limits(await client.info(), max_per_request, budget=budget,
                              funding=funding, deposit=deposit)
    except BaseException:
        await client.aclose()
        raise
    return httpx.AsyncClient(transport=AsyncVaultTransport(client, limits), timeout=timeout,
                             **httpx_kwargs)
