"""What the demo's acts share: the paid weather API, its price, and paying it with ``exact``.

Used by :mod:`a402.demos.exact` and :mod:`a402.demos.channels` (which measures ``exact``
on its own chain for the comparison), so that neither act reaches into the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from eth_typing import HexStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.chain.node import Chain
from a402.client import Budget, paying_client, receipt_of, token_units_max

PRICE = "0.001"
CITIES = ("berlin", "lagos", "lima", "osaka", "perth", "quito", "tromsø", "ushuaia")


@dataclass(frozen=True)
class PaidCall:
    city: str
    status: int
    amount: int
    transaction: str
    gas: int
    latency_ms: float


def weather_api() -> Starlette:
    async def weather(request: Request) -> JSONResponse:
        city = request.path_params["city"]
        return JSONResponse({"city": city, "forecast": "sunny", "celsius": 10 + len(city)})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/weather/{city}", weather), Route("/health", health)])


def pay_weather(chain: Chain, api_url: str, key: str, count: int) -> list[PaidCall]:
    """``count`` paid calls to the weather API, each paid with ``exact`` by ``key``."""
    max_price = token_units_max("0.01")
    calls = []
    with paying_client(key, max_per_request=max_price, budget=Budget(1_000_000)) as http:
        for i in range(count):
            city = CITIES[i % len(CITIES)]
            t0 = time.perf_counter()
            response = http.get(f"{api_url}/weather/{city}")
            latency = (time.perf_counter() - t0) * 1000
            receipt = receipt_of(response)
            tx = receipt.transaction if receipt and receipt.success else ""
            gas = int(chain.w3.eth.get_transaction_receipt(HexStr(tx))["gasUsed"]) if tx else 0
            amount = atomic_units(PRICE) if tx else 0
            calls.append(PaidCall(city, response.status_code, amount, tx, gas, latency))
    return calls


def atomic_units(price: str, decimals: int = 6) -> int:
    """``"0.001"`` → ``1000`` (6 decimals)."""
    whole, _, frac = price.partition(".")
    return int(whole) * 10**decimals + int(frac.ljust(decimals, "0"))


def format_usdc(units: int) -> str:
    """Atomic units as USDC, six decimals."""
    return f"{units / 10**6:,.6f}"
