"""The provider side of x402 ``exact``: ASGI payment middleware and the reverse-proxy gateway."""

from a402.provider.gateway import create_gateway, parse_route_spec, run_gateway
from a402.provider.ledger import InMemoryLedger, PaymentKey, PaymentLedger, SqlLedger
from a402.provider.middleware import PaymentMiddleware
from a402.provider.proxy import ReverseProxy
from a402.provider.routes import (
    PaidRoute,
    RouteConfig,
    RouteError,
    RouteMatch,
    RoutePattern,
    RouteTable,
    to_atomic,
)

__all__ = [
    "InMemoryLedger",
    "PaidRoute",
    "PaymentKey",
    "PaymentLedger",
    "PaymentMiddleware",
    "ReverseProxy",
    "RouteConfig",
    "RouteError",
    "RouteMatch",
    "RoutePattern",
    "RouteTable",
    "SqlLedger",
    "create_gateway",
    "parse_route_spec",
    "run_gateway",
    "to_atomic",
]
