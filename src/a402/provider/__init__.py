"""The provider side of x402 ``exact``: ASGI payment middleware and the reverse-proxy gateway.

    from a402.provider import PaymentMiddleware, TokenInfo

    app.add_middleware(PaymentMiddleware, routes={"GET /weather/*": "0.001"}, token=usdc,
                       pay_to=..., network="eip155:84532", facilitator="http://127.0.0.1:4021")

The public API is :data:`__all__`. What only a provider that also takes ``a402``
needs (:class:`A402Config`, its channel store and enclave) loads lazily, so a
provider that takes only ``exact`` does not load the channel and enclave code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a402.chain.deploy import TokenInfo
from a402.lazy import lazy_attributes
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
from a402.provider.settings import ChannelTimeouts, Limits, PaymentTiming, Paywall, Watching

if TYPE_CHECKING:
    from a402.provider.a402_config import A402Config
    from a402.provider.a402_store import SqlChannelStore
    from a402.provider.identity import provider_enclave

_LAZY_MODULE_OF = {
    "A402Config": "a402.provider.a402_config",
    "SqlChannelStore": "a402.provider.a402_store",
    "provider_enclave": "a402.provider.identity",
}

__all__ = [
    "A402Config",
    "ChannelTimeouts",
    "InMemoryLedger",
    "Limits",
    "PaidRoute",
    "PaymentKey",
    "PaymentLedger",
    "PaymentMiddleware",
    "PaymentTiming",
    "Paywall",
    "ReverseProxy",
    "RouteConfig",
    "RouteError",
    "RouteMatch",
    "RoutePattern",
    "RouteTable",
    "SqlChannelStore",
    "SqlLedger",
    "TokenInfo",
    "Watching",
    "create_gateway",
    "parse_route_spec",
    "provider_enclave",
    "run_gateway",
    "to_atomic",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_MODULE_OF)
