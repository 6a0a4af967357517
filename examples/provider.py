"""A paid API: one Starlette app, one route charged for with a402's middleware.

Run it against the devnet of the README's "The command line" (``a402 devnet`` and
``a402 facilitator`` running):

    python examples/provider.py --manifest .a402/devnet.json \
        --facilitator http://127.0.0.1:4021 --port 8000

then pay for one request:

    a402 pay http://127.0.0.1:8000/weather/paris --key-file .a402/client.key --max 0.01

``GET /weather/<city>`` costs 0.001 token units; ``GET /`` is free. The payment is
verified before the handler runs and settled by the facilitator after it answered
(status < 400), so a failing handler charges nothing. The token's EIP-712 name and
version come from the manifest (the devnet's token: "USD Coin", version "2"); they are
part of every signature, and a wrong one fails as ``invalid signature``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a402.provider import PaymentMiddleware, TokenInfo

PRICE = "0.001"  # token units: 1000 atomic units of a 6-decimal token


async def weather(request: Request) -> JSONResponse:
    return JSONResponse({"city": request.path_params["city"], "weather": "sunny"})


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"paid": ["GET /weather/<city>"], "price": PRICE})


def build_app(manifest_path: str, facilitator: str, pay_to: str | None = None) -> Starlette:
    """The app, charging ``PRICE`` per weather request, paid to ``pay_to`` (default:
    the manifest's provider account) in the manifest's token on its network."""
    manifest = json.loads(Path(manifest_path).read_text())
    token = TokenInfo(**manifest["token"])  # devnet: name "USD Coin", version "2", 6 decimals
    if pay_to is None:
        pay_to = next(a["address"] for a in manifest["accounts"] if a["role"] == "provider")
    app = Starlette(routes=[Route("/", index), Route("/weather/{city}", weather)])
    app.add_middleware(PaymentMiddleware, routes={"GET /weather/*": PRICE}, token=token,
                       pay_to=pay_to, network=manifest["network"], facilitator=facilitator)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="a paid weather API (a402 provider example)")
    parser.add_argument("--manifest", default=".a402/devnet.json")
    parser.add_argument("--facilitator", default="http://127.0.0.1:4021")
    parser.add_argument("--pay-to", default=None, help="default: the manifest's provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = build_app(args.manifest, args.facilitator, args.pay_to)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
