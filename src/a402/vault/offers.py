"""Reading a provider's ``a402`` offer from its 402, and remembering it.

A client's first request to a URL goes out unpaid, as any x402 client's does;
a 402 names the price and, in its ``a402`` requirement, the provider's A402
endpoint, ASCManager and Schnorr key. :func:`pick_offer` keeps only an offer
this vault can pay: its network, its ASCManager, that manager's token, and an
endpoint on the *same origin* as the URL (otherwise a 402 could send the
payment and the request to some other attested service). What the offer
claims about the provider is checked again against the provider's attested
``/info`` (:func:`check_against_info`) before anything is paid.

:class:`OfferCache` keeps offers for a while, keyed by method and URL without
the query, so repeated calls skip the unpaid round trip; a provider refusing
the amount makes the caller drop the entry and ask again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from a402.memo import memo_short
from a402.wire import vault_api as api
from a402.wire.a402 import SCHEME_A402, WELL_KNOWN_PREFIX, ProviderInfo
from a402.wire.convert import to_v2_requirements
from a402.wire.errors import WireError
from a402.wire.headers import PAYMENT_REQUIRED
from a402.wire.networks import to_caip2
from a402.wire.required import read_payment_required


class OfferError(Exception):
    """No payable offer: ``reason`` is an :mod:`a402.wire.vault_api` reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Offer:
    """One payable ``a402`` requirement: who is paid, how much, where the exchange runs."""

    amount: int
    pay_to: str
    endpoint: str
    provider_key: str
    manager: str
    network: str
    asset: str


@memo_short(4096)
def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (kept for the last URLs seen: a pure function);
    ``ValueError`` for a port that is not one."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def pick_offer(
    response: httpx.Response, url: str, *, network: str, manager: str, token: str,
    contract_field: str = "ascManager",
) -> Offer:
    """The ``a402`` offer of a 402 this vault can pay, or :class:`OfferError`.
    ``contract_field``: the ``extra`` entry that must name ``manager`` (``"a402Vault"``
    for a vault in vault mode: the provider admits that A402Vault's channels)."""
    try:
        required = read_payment_required(response.headers.get(PAYMENT_REQUIRED),
                                         response.content)
    except WireError as e:
        raise OfferError(api.NO_ACCEPTABLE_OFFER, e.message) from None
    seen: list[str] = []
    for raw in required.accepts:
        try:
            req = to_v2_requirements(raw)
            network_of = to_caip2(req.network)
        except WireError as e:
            seen.append(f"unreadable requirement ({e.reason})")
            continue
        if req.scheme != SCHEME_A402:
            seen.append(req.scheme)
            continue
        extra = req.extra or {}
        endpoint, key, their_manager = (
            extra.get("endpoint"), extra.get("providerKey"), extra.get(contract_field)
        )
        if not all(isinstance(v, str) for v in (endpoint, key, their_manager)):
            seen.append(f"a402 without endpoint/providerKey/{contract_field}")
            continue
        assert isinstance(endpoint, str) and isinstance(key, str)
        assert isinstance(their_manager, str)
        try:
            same_origin = origin(endpoint) == origin(url)
        except ValueError:  # the provider's endpoint names a port that is not one
            same_origin = False
        problems = [
            what for what, ok in (
                (f"network {network_of}", network_of == network),
                (f"{contract_field} {their_manager}", their_manager.lower() == manager.lower()),
                (f"asset {req.asset}", req.asset.lower() == token.lower()),
                ("an endpoint on another origin",
                 same_origin and endpoint.rstrip("/").endswith(WELL_KNOWN_PREFIX)),
            ) if not ok
        ]
        if problems:
            seen.append("a402 with " + ", ".join(problems))
            continue
        try:
            amount = req.amount_int
        except WireError:
            seen.append("a402 with a malformed amount")
            continue
        return Offer(amount, req.pay_to, endpoint.rstrip("/"), key, their_manager, network_of,
                     req.asset)
    raise OfferError(api.NO_ACCEPTABLE_OFFER,
                     "no a402 requirement this vault can pay: " + ("; ".join(seen) or "none"))


def check_against_info(offer: Offer, info: ProviderInfo) -> None:
    """The 402's claims must be what the provider's enclave attested (``/info``)."""
    mismatches = [
        what for what, ok in (
            ("payTo", offer.pay_to.lower() == "0x" + info.provider.hex()),
            ("providerKey", offer.provider_key.lower() == "0x" + info.provider_key.hex()),
            ("ascManager", offer.manager.lower() == "0x" + info.asc_manager.hex()),
            ("network", offer.network == info.network),
            ("asset", offer.asset.lower() == "0x" + info.token.hex()),
        ) if not ok
    ]
    if mismatches:
        raise OfferError(api.OFFER_MISMATCH,
                         "the 402 disagrees with the attested provider on " + ", ".join(mismatches))


class OfferCache:
    """Offers by (method, URL without query), for ``ttl`` seconds."""

    def __init__(self, ttl: float = 300.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._offers: dict[tuple[str, str], tuple[float, Offer]] = {}

    @staticmethod
    def _key(method: str, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return method.upper(), f"{origin(url)}{parts.path}"

    def get(self, method: str, url: str) -> Offer | None:
        entry = self._offers.get(self._key(method, url))
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, method: str, url: str, offer: Offer) -> None:
        if len(self._offers) >= self.size:
            self._offers.pop(next(iter(self._offers)))
        self._offers[self._key(method, url)] = (time.monotonic(), offer)

    def drop(self, method: str, url: str) -> None:
        self._offers.pop(self._key(method, url), None)
