"""What an operator sees of a running service: one JSON log line per paid request,
Prometheus metrics, and read-only payment endpoints behind an operator token.

The facilitator, the gateway and the vault each hold one :class:`Observer` and wrap
their ASGI app in :class:`OperatorRoutes`, which answers, ahead of the app:

- ``GET /metrics``: Prometheus text (``a402_paid_requests_total{service,scheme,outcome}``
  and the ``a402_paid_request_seconds`` latency histogram);
- ``GET /operator/payments``: the service's own records (a facilitator's journal, a
  gateway's ledger and recent paid requests, a vault's calls), filtered by ``since``,
  ``until`` (unix seconds), ``payer``, ``payee``, ``status`` and ``limit``;
- ``GET /operator/payments/{id}``: one record.

Safety of the operator endpoints: they only read. A request is answered with data only
when the service was configured with a token *and* the request carries
``Authorization: Bearer <that token>``, compared in constant time
(:func:`hmac.compare_digest`) so the answer's timing does not reveal a prefix. Without a
configured token every operator endpoint answers 404 ``operator_api_disabled``; without
a header 401 ``operator_token_required``; with another token 401
``operator_token_invalid``. ``/metrics`` carries counts and latencies only (no payer, no
amount of any one payment): it is open when no token is configured, and asks for the
token like the others when one is.

Each paid request is logged on the ``a402.paid`` logger, which has its own handler
(stderr, level INFO) and does not propagate: the line appears at the default log level
whatever the root logger's level is, exactly once.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PAID_LOGGER: Final = "a402.paid"

OPERATOR_API_DISABLED: Final = "operator_api_disabled"
OPERATOR_TOKEN_REQUIRED: Final = "operator_token_required"
OPERATOR_TOKEN_INVALID: Final = "operator_token_invalid"
BAD_FILTER: Final = "bad_filter"
NOT_FOUND: Final = "not_found"

METRICS_PATH: Final = "/metrics"
PAYMENTS_PATH: Final = "/operator/payments"

MAX_LIMIT: Final = 1000
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Stderr(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is when a line is written (not when the handler
    was made), as :data:`logging.lastResort` does: a process that swaps its stderr (a
    test runner, a daemon redirecting it) still gets every line."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _paid_logger() -> logging.Logger:
    logger = logging.getLogger(PAID_LOGGER)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


@dataclass(frozen=True)
class PaymentFilter:
    """Which records an operator asks for (every field optional)."""

    since: float | None = None
    until: float | None = None
    payer: str | None = None
    payee: str | None = None
    status: str | None = None
    limit: int = 100

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PaymentFilter:
        """The filter a query string names; ValueError (answered 400 ``bad_filter``) for
        an unknown parameter or a value that is not what it should be."""
        unknown = set(query) - {"since", "until", "payer", "payee", "status", "limit"}
        if unknown:
            raise ValueError(f"unknown filter {sorted(unknown)[0]!r}")

        def number(name: str) -> float | None:
            text = query.get(name)
            if text is None:
                return None
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} must be unix seconds, got {text!r}") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number")
            return value

        limit_text = query.get("limit", "100")
        if not limit_text.isascii() or not limit_text.isdigit() \
                or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer in 1..{MAX_LIMIT}")
        return cls(number("since"), number("until"), _lower(query.get("payer")),
                   _lower(query.get("payee")), query.get("status"), int(limit_text))

    def to_query(self) -> dict[str, str]:
        out = {name: str(value) for name, value in (
            ("since", self.since), ("until", self.until), ("payer", self.payer),
            ("payee", self.payee), ("status", self.status)) if value is not None}
        out["limit"] = str(self.limit)
        return out

    def admits(self, record: Mapping[str, Any]) -> bool:
        """Does a record in the common shape (:func:`payment_record`) pass the filter?"""
        when = float(record.get("time") or 0)
        return ((self.since is None or when >= self.since)
                and (self.until is None or when < self.until)
                and (self.payer is None or _lower(record.get("payer")) == self.payer)
                and (self.payee is None or _lower(record.get("payee")) == self.payee)
                and (self.status is None or record.get("status") == self.status))


def _lower(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def payment_record(*, source: str, id: str, time: float | None, payer: str | None,
                   payee: str | None, amount: int | str | None, scheme: str, status: str,
                   network: str | None = None, asset: str | None = None,
                   transaction: str | None = None, **extra: Any) -> dict[str, Any]:
    """One payment in the shape every source shares (what ``a402 payments`` prints).
    ``amount`` is in the token's atomic units, as a decimal string."""
    return {"source": source, "id": id, "time": time, "payer": payer, "payee": payee,
            "amount": None if amount is None else str(amount), "asset": asset,
            "network": network, "scheme": scheme, "status": status,
            "transaction": transaction or None, **extra}


class Observer:
    """One service's log line, metrics and recent paid requests.

    ``operator_token`` (None: the operator API is off) guards :class:`OperatorRoutes`.
    ``recent`` keeps the last ``keep`` paid requests in memory (since the process
    started), for a service whose durable store does not say everything a log line says.
    """

    def __init__(self, service: str, *, operator_token: str | None = None,
                 keep: int = 1000) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        if operator_token is not None and len(operator_token) < 16:
            raise ValueError("the operator token must be at least 16 characters")
        self.service = service
        self._token = operator_token.encode() if operator_token else None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "a402_paid_requests", "Paid requests answered, by scheme and outcome",
            ["service", "scheme", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "a402_paid_request_seconds", "Seconds from a paid request's arrival to its answer",
            ["service", "scheme", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.log = _paid_logger()
        #: (scheme, outcome) → that pair's counter and histogram children: looked up
        #: once, not on every paid request (``labels`` validates and locks each time).
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    @property
    def operator_enabled(self) -> bool:
        return self._token is not None

    def paid(self, *, request_id: str, payer: str | None, amount: int | str | None,
             scheme: str, outcome: str, latency: float, **fields: Any) -> dict[str, Any]:
        """Record one paid request: its log line, its metrics, and the recent list."""
        line = {"event": "paid_request", "service": self.service, "time": time.time(),
                "requestId": request_id, "payer": payer,
                "amount": None if amount is None else str(amount), "scheme": scheme,
                "outcome": outcome, "latencyMs": round(latency * 1000, 3), **fields}
        children = self._children.get((scheme, outcome))
        if children is None:
            children = (self.requests.labels(self.service, scheme, outcome),
                        self.latency.labels(self.service, scheme, outcome))
            self._children[(scheme, outcome)] = children
        children[0].inc()
        children[1].observe(latency)
        self.recent.append(line)
        if self.log.isEnabledFor(logging.INFO):
            self.log.info(_log_line(line))
        return line

    def metrics(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def refusal(self, authorization: str | None) -> tuple[int, str, str] | None:
        """Why a request for operator data must be refused (status, reason, message), or
        None if it carries the configured token."""
        if self._token is None:
            return (404, OPERATOR_API_DISABLED,
                    "this service has no operator token configured (--operator-token), so "
                    "its operator API is off")
        if not authorization:
            return (401, OPERATOR_TOKEN_REQUIRED,
                    "send the operator token as 'Authorization: Bearer TOKEN'")
        scheme, _, given = authorization.partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), self._token)
        if scheme.lower() != "bearer" or not ok:
            return 401, OPERATOR_TOKEN_INVALID, "the operator token is not this service's"
        return None


#: Dataclasses and datetimes are written as their ``str``, as the standard library's
#: ``default=str`` writes them.
_AS_STR: Final = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _log_line(line: dict[str, Any]) -> str:
    """``line`` as compact JSON, anything not JSON written as its ``str``: orjson, or the
    standard library for an integer past 64 bits (so no amount is ever rounded)."""
    try:
        return orjson.dumps(line, default=str, option=_AS_STR).decode()
    except TypeError:
        return json.dumps(line, separators=(",", ":"), default=str)


def new_request_id(scope: Scope) -> str:
    """The request's ``x-request-id`` if it sent a sane one (up to 64 printable ASCII
    characters), else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and text.isascii() and text.isprintable():
                return text
    return uuid.uuid4().hex


Lister = Callable[[PaymentFilter], Awaitable[list[dict[str, Any]]]]
Getter = Callable[[str], Awaitable[dict[str, Any] | None]]
#: A read-only operator view of its own path: (HTTP status, JSON body).
View = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class OperatorRoutes:
    """ASGI: ``/metrics`` and ``/operator/payments[/{id}]`` (GET) answered here, every
    other request passed to ``app`` untouched. ``list_payments`` and ``get_payment``
    read the service's records (newest first, already filtered); without them (a service
    that keeps no payment records) those paths go to ``app``. ``views``: more read-only
    operator paths (each ``/operator/…``), behind the same token."""

    def __init__(self, app: ASGIApp, observer: Observer, *, list_payments: Lister | None,
                 get_payment: Getter | None, views: Mapping[str, View] | None = None) -> None:
        self.app = app
        self.observer = observer
        self.list_payments = list_payments
        self.get_payment = get_payment
        self.views = dict(views or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        ours = path == METRICS_PATH or path in self.views or (
            self.list_payments is not None
            and (path == PAYMENTS_PATH or path.startswith(PAYMENTS_PATH + "/")))
        if not ours:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET":
            await _json(send, 405, {"error": "method_not_allowed",
                                    "message": "the operator endpoints are read-only (GET)"})
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
        if path == METRICS_PATH:
            if self.observer.operator_enabled:
                refused = self.observer.refusal(authorization)
                if refused is not None:
                    await _refuse(send, refused)
                    return
            body = self.observer.metrics()
            await _send(send, 200, body, b"text/plain; version=0.0.4; charset=utf-8")
            return
        refused = self.observer.refusal(authorization)
        if refused is not None:
            await _refuse(send, refused)
            return
        if path in self.views:
            status, data = await self.views[path]()
            await _json(send, status, {"service": self.observer.service, **data})
            return
        assert self.list_payments is not None and self.get_payment is not None
        if path == PAYMENTS_PATH:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            try:
                wanted = PaymentFilter.from_query(query)
            except ValueError as e:
                await _json(send, 400, {"error": BAD_FILTER, "message": str(e)})
                return
            records = await self.list_payments(wanted)
            await _json(send, 200, {"service": self.observer.service,
                                    "payments": records[:wanted.limit]})
            return
        record = await self.get_payment(path[len(PAYMENTS_PATH) + 1:])
        if record is None:
            await _json(send, 404, {"error": NOT_FOUND, "message": "no such payment here"})
            return
        await _json(send, 200, {"service": self.observer.service, "payment": record})


async def _refuse(send: Send, refused: tuple[int, str, str]) -> None:
    status, reason, message = refused
    headers = [(b"www-authenticate", b'Bearer realm="a402-operator"')] if status == 401 else []
    await _json(send, status, {"error": reason, "message": message}, headers)


async def _json(send: Send, status: int, data: Any,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    await _send(send, status, body, b"application/json", headers)


async def _send(send: Send, status: int, body: bytes, content_type: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
