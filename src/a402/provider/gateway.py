"""``a402 gateway``: charge for an existing HTTP service without changing it.

The gateway is ``PaymentMiddleware`` around a streaming ``ReverseProxy``: paid
routes get the full x402 flow, every other request is proxied for free (with A402
channels on, ``A402Payments`` is in front of the middleware). Route
specs come from the command line as ``'GET /path/*=0.001'``: a route pattern
(see ``a402.provider.routes``), ``=``, and a price in *token units* (a leading
``$`` is allowed; an integer such as ``=2`` means two whole tokens, not two
atomic units, because a command line is read by people).

The gateway remembers which payments bought a response in a replay ledger in
a database (``--ledger-db``; :class:`a402.provider.ledger.SqlLedger`), by
default a SQLite file next to its other data. Replicas of one gateway, and
gateways paid to the same ``payTo`` through one facilitator, must share one
(a PostgreSQL URL), or one payment header could buy a response from each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from starlette.types import ASGIApp

from a402.chain.deploy import TokenInfo
from a402.facilitator.client import FacilitatorClient
from a402.metering import MeterError, MeterRule, parse_meter_spec
from a402.observe import MAX_LIMIT, Observer, OperatorRoutes, PaymentFilter, payment_record
from a402.provider.ledger import PaymentLedger
from a402.provider.middleware import PaymentMiddleware
from a402.provider.proxy import ReverseProxy
from a402.provider.routes import Price, RouteConfig, RouteError, RoutePattern, RouteTable
from a402.provider.settings import PaymentSettings, PaymentTiming, Paywall
from a402.provider.usage import Meter
from a402.serving import JsonErrors
from a402.serving import run as serve

if TYPE_CHECKING:  # the A402 code loads only for a gateway that takes A402 payments
    from a402.provider.a402_config import A402Config

log = logging.getLogger("a402.gateway")

UPTO_PREFIX = "upto:"
"""A route spec's price ``upto:MAX``: sold by usage, at most ``MAX`` token units."""

DEFAULT_LEDGER_DB = "sqlite:///a402-provider-ledger.db"
"""Where ``a402 gateway`` keeps its replay ledger unless told (beside ``--channel-db``'s)."""


def parse_route_spec(spec: str) -> tuple[str, str | RouteConfig]:
    """``"GET /path/*=0.001"`` → ``("GET /path/*", "0.001")``; RouteError if malformed.

    The last ``=`` separates the price, so a pattern may not contain one
    (paths in route patterns never need it). ``"GET /llm=upto:0.05"`` sells the route
    with x402 ``upto``: 0.05 is the maximum a payer authorises, and the upstream's
    response says what it used (:mod:`a402.provider.usage`).
    """
    pattern, sep, price = spec.rpartition("=")
    pattern, price = pattern.strip(), price.strip()
    if not sep or not pattern or not price:
        raise RouteError(f"route spec {spec!r} is not 'METHOD /path=PRICE'")
    RoutePattern.parse(pattern)
    if price.startswith(UPTO_PREFIX):
        maximum = price.removeprefix(UPTO_PREFIX).strip()
        if not maximum:
            raise RouteError(f"route spec {spec!r} names no maximum after 'upto:'")
        return pattern, RouteConfig(price=maximum, scheme="upto")
    return pattern, price


def parse_metered_spec(spec: str, decimals: int) -> tuple[str, MeterRule, str]:
    """A ``--meter`` spec → ``(pattern, rule, x402 scheme)``; RouteError if malformed.

    ``'GET /llm=per-field:usage.total_tokens:0.00002,max=0.05'``: A402 channels pay
    what the rule measures, x402 payers ``exact`` its max. ``'GET /llm=upto:per-field:…'``
    (the same rule after ``upto:``): the route is offered to x402 payers as ``upto`` (at
    most max), and settled for what the same rule measures on the upstream's response
    (:meth:`PaymentMiddleware._usage`); A402 channels are charged by it as before.
    """
    pattern, sep, rule = spec.partition("=")
    scheme = "exact"
    if sep and rule.strip().startswith(UPTO_PREFIX):
        scheme, spec = "upto", f"{pattern}={rule.strip().removeprefix(UPTO_PREFIX)}"
    try:
        pattern, parsed = parse_meter_spec(spec, decimals)
    except MeterError as e:
        raise RouteError(str(e)) from None
    RoutePattern.parse(pattern)
    return pattern, parsed, scheme


def _route_table(
    routes: Sequence[str] | Mapping[str, Price | RouteConfig], decimals: int,
    meters: Sequence[str] = (),
) -> RouteTable:
    if isinstance(routes, str) or isinstance(meters, str):
        raise RouteError("routes and meters must be lists of specs, not one string")
    specs: list[tuple[str, Price | RouteConfig]] = list(
        routes.items() if isinstance(routes, Mapping)
        else (parse_route_spec(spec) for spec in routes))
    for spec in meters:
        pattern, rule, scheme = parse_metered_spec(spec, decimals)
        specs.append((pattern, RouteConfig(price=rule.maximum, meter=rule, scheme=scheme)))
    return RouteTable.build(specs, decimals=decimals)


def create_gateway(
    upstream_url: str,
    routes: Sequence[str] | Mapping[str, Price | RouteConfig],
    *,
    pay_to: str,
    token: TokenInfo,
    network: str,
    meters: Sequence[str] = (),
    facilitator_url: str | None = None,
    facilitator: FacilitatorClient | None = None,
    ledger: PaymentLedger | str | None = None,
    upstream_timeout: float = 60.0,
    a402: A402Config | None = None,
    paywall: Paywall | None = None,
    timing: PaymentTiming | None = None,
    observer: Observer | None = None,
    console: bool = False,
    meter: Meter | None = None,
    **settings: Unpack[PaymentSettings],
) -> ASGIApp:
    """The gateway as an ASGI app; ``routes`` are CLI specs or a ``{pattern: price}`` map.

    ``meters``: metered routes, as ``'METHOD /path=KIND:RATE,max=MAX'`` specs
    (:mod:`a402.metering`): an A402 channel pays the charge the provider's enclave
    computes from the response, at most MAX; an ``exact`` payment pays MAX. Written
    ``'METHOD /path=upto:KIND:RATE,max=MAX'``, the route is offered to x402 payers as
    ``upto`` instead, and settled for what the same rule measures (at most MAX; 0: no
    transaction) (:func:`parse_metered_spec`).

    ``observer`` (default: one with the operator API off) logs one JSON line per paid
    request and answers ``/metrics`` and ``/operator/payments`` ahead of the upstream
    (see :mod:`a402.observe`): the paid requests this process answered, newest first
    (kept in memory: the last 1,000 since it started; the replay ledger keeps no amounts).
    With ``console`` it also serves the operator console at ``/console`` (the same records
    in a browser, signed in with the same token: :mod:`a402.console`; ValueError if the
    observer has no operator token).

    Give either ``facilitator_url`` or a ``facilitator`` client. ``ledger`` is a
    :class:`PaymentLedger` or the SQLAlchemy URL of a shared one (see
    :class:`PaymentMiddleware`; ``run_gateway`` defaults it to a SQLite file).
    ``paywall``, ``timing`` and the settings one by one (``settle_before_serve=True``) go
    to :class:`PaymentMiddleware` as they are. With ``a402``
    the gateway also takes A402 channel payments (:class:`A402Payments` in front of the
    middleware); a paid EXEC runs against the upstream through the same proxy.

    ``upto`` routes (``'GET /llm=upto:0.05'``) charge what the upstream's response reports
    (``Settlement-Overrides`` or ``X-A402-Usage``), else what ``meter`` computes from it
    (a pure :data:`a402.provider.usage.Meter`: the hook a metering rule plugs into), else
    the maximum.
    """
    if (facilitator_url is None) == (facilitator is None):
        raise ValueError("give exactly one of facilitator_url and facilitator")
    table = _route_table(routes, token.decimals, meters)
    observer = observer if observer is not None else Observer("gateway")
    payments = PaymentMiddleware(
        ReverseProxy(upstream_url, timeout=upstream_timeout),
        routes=table,
        pay_to=pay_to,
        token=token,
        network=network,
        facilitator=facilitator if facilitator is not None else str(facilitator_url),
        ledger=ledger,
        paywall=paywall,
        timing=timing,
        observer=observer,
        meter=meter,
        **settings,
    )
    if a402 is None:
        observed = operator_routes(payments, observer, payments.ledger)
    else:
        from a402.provider.a402_payments import A402Payments

        observed = operator_routes(A402Payments(payments, a402), observer, payments.ledger)
    if not console:
        return observed
    from a402.console.operator import with_console

    return with_console(observed)


def operator_routes(app: ASGIApp, observer: Observer,
                    ledger: PaymentLedger | None = None) -> OperatorRoutes:
    """``app`` with the gateway's ``/metrics`` and ``/operator/payments`` in front.

    The records are the replay ledger's entries (durable: which payments bought a
    response, and their transactions; a :class:`SqlLedger` only) joined with the paid
    requests ``observer`` saw since the process started (the amount, the payee, the
    latency, the request id: the ledger keeps none of them), plus those requests whose
    entry was released (refused or failed: nothing moved). A ledger entry this process
    did not see (before a restart, or a replica's) says ``amount: null``: check its
    transaction with ``a402 receipt``.
    """
    entries = getattr(ledger, "entries", None)

    async def records(wanted: PaymentFilter) -> list[dict[str, Any]]:
        seen = [_record(line) for line in reversed(observer.recent)]
        if entries is None:
            return seen
        rows = await asyncio.to_thread(entries, since=wanted.since, until=wanted.until,
                                       payer=wanted.payer, limit=MAX_LIMIT)
        by_nonce: dict[tuple[str, str], dict[str, Any]] = {}
        for record in seen:  # newest first: the latest request for a nonce wins
            by_nonce.setdefault((str(record["payer"]).lower(),
                                 str(record["nonce"]).lower()), record)
        out, joined = [], set()
        for row in rows:
            key = (row["payer"].lower(), row["nonce"].lower())
            request = by_nonce.get(key)
            joined.add(key)
            settlement = json.loads(row["settlement"]) if row["settlement"] else {}
            out.append(payment_record(
                source="gateway", id=request["id"] if request else row["nonce"],
                time=row["createdAt"], payer=row["payer"],
                payee=request["payee"] if request else None,
                amount=request["amount"] if request else None, scheme="exact",
                status=row["state"], network=row["network"], asset=row["asset"],
                transaction=settlement.get("transaction"), nonce=row["nonce"],
                expiresAt=row["expiresAt"], ledger=True,
                **({k: request[k] for k in ("latencyMs", "method", "path")} if request
                   else {})))
        out += [r for r in seen if (str(r["payer"]).lower(), str(r["nonce"]).lower())
                not in joined]
        return sorted(out, key=lambda r: r["time"] or 0.0, reverse=True)

    async def list_payments(wanted: PaymentFilter) -> list[dict[str, Any]]:
        return [r for r in await records(wanted) if wanted.admits(r)][:wanted.limit]

    async def get_payment(id: str) -> dict[str, Any] | None:
        wanted = id.lower()
        return next((r for r in await records(PaymentFilter())
                     if wanted in (str(r["id"]).lower(), str(r["nonce"]).lower(),
                                   str(r["transaction"]).lower())), None)

    return OperatorRoutes(app, observer, list_payments=list_payments,
                          get_payment=get_payment)


def _record(line: dict[str, Any]) -> dict[str, Any]:
    return payment_record(
        source=line["service"], id=line["requestId"], time=line["time"], payer=line["payer"],
        payee=line.get("payee"), amount=line["amount"], scheme=line["scheme"],
        status=line["outcome"], network=line.get("network"), asset=line.get("asset"),
        transaction=line.get("transaction"), latencyMs=line["latencyMs"],
        method=line.get("method"), path=line.get("path"), nonce=line.get("nonce"))


def run_gateway(
    *,
    upstream: str,
    routes: list[str],
    pay_to: str,
    token: TokenInfo,
    network: str,
    facilitator_url: str,
    meters: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 4021,
    ledger_db: str = DEFAULT_LEDGER_DB,
    log_level: str = "info",
    a402: A402Config | None = None,
    on_start: Callable[[], None] | None = None,
    paywall: Paywall | None = None,
    timing: PaymentTiming | None = None,
    observer: Observer | None = None,
    console: bool = False,
    meter: Meter | None = None,
    **settings: Unpack[PaymentSettings],
) -> None:
    """Serve the gateway until interrupted (blocking); ``paywall``, ``timing`` and
    ``settings`` as for :func:`create_gateway`.

    Bad routes or a bad ``a402`` config raise (``ValueError``) before a port is
    bound; ``on_start`` runs once the app is built, just before serving.
    """
    app = create_gateway(
        upstream, routes, pay_to=pay_to, token=token, network=network, meters=meters,
        facilitator_url=facilitator_url, a402=a402, ledger=ledger_db,
        paywall=paywall, timing=timing, observer=observer, console=console, meter=meter,
        **settings,
    )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for spec in [*routes, *meters]:
        log.info("charging %s (%s on %s, paid to %s)", spec, token.symbol, network, pay_to)
    log.info("replay ledger in %s", ledger_db)
    log.info("proxying to %s; facilitator %s%s", upstream, facilitator_url,
             "; A402 channels on " + a402.manager if a402 is not None else "")
    if on_start is not None:
        on_start()
    serve(JsonErrors(app), host=host, port=port, log_level=log_level)
