"""Benchmark of x402 ``exact`` on a real anvil node.

Measures, in one run on one machine:

1. facilitator ``/verify`` throughput: a402's facilitator (in-process and over
   loopback HTTP) against the official x402 SDK's facilitator logic, both
   verifying the same signed payloads against the same node;
2. end-to-end paid-request latency (p50/p99): a402 client → a402 middleware →
   a402 facilitator → anvil, one request at a time;
3. gas per payment: a402's settlement transactions against the same
   ``transferWithAuthorization`` submitted directly.

Prints a table and writes ``bench/results/exact.json``. Figures are ratios
measured in the same run; absolute numbers depend on the machine (recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
from eth_typing import HexStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from web3.types import TxParams

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest, deploy_dev_stack
from a402.chain.exact_transfer import transfer_calldata
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import transact
from a402.client import Budget, paying_client, receipt_of
from a402.exact.eip3009 import build_payment_payload
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.provider.middleware import PaymentMiddleware
from a402.wire.x402 import PaymentRequirements
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.interop.official import official_facilitator  # noqa: E402  (the SDK, configured)

PRICE = 1_000


def requirement(stack: Manifest) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact", network=stack.network, amount=str(PRICE), asset=stack.token.address,
        pay_to=stack.account("provider").address, max_timeout_seconds=300,
        extra=stack.token.eip712_extra())


def signed_bodies(stack: Manifest, key: str, count: int) -> list[dict[str, Any]]:
    req = requirement(stack)
    return [{"x402Version": 2, "paymentPayload": build_payment_payload(req, key).to_wire(),
             "paymentRequirements": req.to_wire()} for _ in range(count)]


def rate(fn: Callable[[dict[str, Any]], bool], bodies: list[dict[str, Any]]) -> float:
    """Sequential verifications per second; every one must say valid."""
    start = time.perf_counter()
    for body in bodies:
        if not fn(body):
            raise RuntimeError("a valid payload was refused")
    return len(bodies) / (time.perf_counter() - start)


def verify_throughput(chain: Chain, stack: Manifest, bodies: list[dict[str, Any]],
                      journal: str) -> dict[str, float]:
    ours = Facilitator(chain, chain.accounts[1], SettlementStore(journal))
    rate(lambda b: ours.verify(b).is_valid, bodies[:20])  # warm up both sides alike
    result = {"a402_in_process": rate(lambda b: ours.verify(b).is_valid, bodies)}
    with serve_in_thread(create_app(ours)) as url, httpx.Client(base_url=url) as http:
        result["a402_http"] = rate(
            lambda b: http.post("/verify", json=b).json()["isValid"], bodies)

    from x402.schemas import parse_payment_payload, parse_payment_requirements

    sdk = official_facilitator(chain, stack, chain.accounts[3])
    parsed = [(parse_payment_payload(b["paymentPayload"]),
               parse_payment_requirements(2, b["paymentRequirements"])) for b in bodies]

    async def sdk_run(items: list[Any]) -> float:
        start = time.perf_counter()
        for payload, req in items:
            if not (await sdk.verify(payload, req)).is_valid:
                raise RuntimeError("the SDK refused a valid payload")
        return len(items) / (time.perf_counter() - start)

    asyncio.run(sdk_run(parsed[:20]))
    result["sdk_in_process"] = asyncio.run(sdk_run(parsed))
    return result


def paid_requests(chain: Chain, stack: Manifest, count: int, journal: str) -> dict[str, Any]:
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(journal))

    async def data(_: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/data", data)])
    latencies, transactions = [], []
    with serve_in_thread(create_app(facilitator)) as facilitator_url:
        paid = PaymentMiddleware(app, routes={"GET /data": PRICE},
                                 pay_to=stack.account("provider").address, token=stack.token,
                                 network=stack.network, facilitator=facilitator_url)
        with serve_in_thread(paid) as api, paying_client(
            stack.account("client", 1).private_key, max_per_request=PRICE,
            budget=Budget(PRICE * count),
        ) as http:
            for _ in range(count):
                start = time.perf_counter()
                response = http.get(f"{api}/data")
                latencies.append((time.perf_counter() - start) * 1000)
                receipt = receipt_of(response)
                if response.status_code != 200 or receipt is None or not receipt.success:
                    raise RuntimeError(f"paid request failed: {response.status_code}")
                transactions.append(receipt.transaction)
    gas = [int(chain.w3.eth.get_transaction_receipt(HexStr(tx))["gasUsed"])
           for tx in transactions]
    latencies.sort()
    return {
        "requests": count,
        "latency_ms_p50": statistics.median(latencies),
        "latency_ms_p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "gas_per_payment_median": statistics.median(gas[1:] or gas),
        "transactions_per_payment": len(set(transactions)) / count,
    }


def direct_transfer_gas(chain: Chain, stack: Manifest, count: int) -> float:
    """The same transfer, submitted by the payee itself: the floor for settlement gas."""
    bodies = signed_bodies(stack, stack.account("client", 2).private_key, count)
    gas = []
    for body in bodies:
        evm = body["paymentPayload"]["payload"]
        calldata = transfer_calldata(evm["authorization"], bytes.fromhex(evm["signature"][2:]))
        receipt = transact(chain, chain.accounts[2], cast(TxParams, {
            "to": stack.token.address, "data": "0x" + calldata.hex()}))
        gas.append(int(receipt["gasUsed"]))
    return statistics.median(gas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=300, help="payloads verified per side")
    parser.add_argument("--requests", type=int, default=100, help="end-to-end paid requests")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "exact.json"))
    args = parser.parse_args()

    with start_anvil(accounts=8) as chain, tempfile.TemporaryDirectory() as tmp:
        stack = deploy_dev_stack(chain)
        bodies = signed_bodies(stack, stack.account("client").private_key, args.payloads + 20)
        verify = verify_throughput(chain, stack, bodies, f"sqlite:///{tmp}/verify.db")
        e2e = paid_requests(chain, stack, args.requests, f"sqlite:///{tmp}/e2e.db")
        direct = direct_transfer_gas(chain, stack, 10)

    ratio = verify["a402_in_process"] / verify["sdk_in_process"]
    gas_ratio = e2e["gas_per_payment_median"] / direct
    results = {
        "machine": machine(),
        "verify_per_second": verify,
        "verify_ratio_a402_over_sdk": ratio,
        "end_to_end": e2e,
        "direct_transfer_gas_median": direct,
        "gas_ratio_settlement_over_direct_transfer": gas_ratio,
        "targets": {"verify_ratio_at_least": 2.0, "gas_ratio": 1.0},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    m = results["machine"]
    print(f"x402 exact on anvil — {m['cpu_model']}, {m['usable_cores']} cores, "
          f"Python {m['python']}, load {m['load_average_1m']:.2f}\n")
    print(f"{'facilitator /verify':<40}{'per second':>12}")
    print(f"{'  a402, in-process':<40}{verify['a402_in_process']:>12.0f}")
    print(f"{'  a402, over loopback HTTP':<40}{verify['a402_http']:>12.0f}")
    print(f"{'  official x402 SDK, in-process':<40}{verify['sdk_in_process']:>12.0f}")
    print(f"{'  ratio a402 / SDK (in-process)':<40}{ratio:>11.2f}x   (target ≥ 2x)\n")
    print(f"{'paid request, end to end':<40}{'value':>12}")
    print(f"{'  latency p50 (ms)':<40}{e2e['latency_ms_p50']:>12.1f}")
    print(f"{'  latency p99 (ms)':<40}{e2e['latency_ms_p99']:>12.1f}")
    print(f"{'  on-chain transactions per payment':<40}{e2e['transactions_per_payment']:>12.2f}")
    print(f"{'  gas per payment (median)':<40}{e2e['gas_per_payment_median']:>12,.0f}")
    print(f"{'  direct transferWithAuthorization gas':<40}{direct:>12,.0f}")
    print(f"{'  ratio settlement / direct':<40}{gas_ratio:>11.3f}x   (target 1x)")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
