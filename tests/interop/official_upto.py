"""The official x402 SDK's ``upto`` scheme (EVM, Permit2), wired to our anvil chain.

As :mod:`tests.interop.official` for ``exact``: configuration of the SDK only. The
SDK's upto client signs for Permit2 and the upto proxy at their fixed addresses,
which the dev stack fills on anvil with our contracts (``a402.chain.upto_settle``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request, Response
from x402 import x402Client, x402Facilitator, x402ResourceServer
from x402.http import (
    FacilitatorConfig,
    HTTPFacilitatorClient,
    PaymentOption,
    RouteConfig,
    x402HTTPResourceServer,
)
from x402.http.clients.httpx import x402HttpxClient
from x402.http.middleware.fastapi import payment_middleware, set_settlement_overrides
from x402.mechanisms.evm import EthAccountSigner, FacilitatorWeb3Signer
from x402.mechanisms.evm.upto import (
    UptoEvmClientScheme,
    UptoEvmFacilitatorScheme,
    UptoEvmServerScheme,
)
from x402.schemas import AssetAmount, PaymentPayload, PaymentRequired, PaymentRequirements
from x402.schemas import ResourceInfo as SdkResourceInfo

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.chain.upto_settle import approve_permit2_calldata

UPTO = "upto"
GAS_FUNDS_WEI = 10**18


def upto_payer(chain: Chain, manifest: Manifest, new_payer: Callable[..., LocalAccount],
               funds: int, allowance: int = 2**256 - 1) -> LocalAccount:
    """A fresh payer holding ``funds`` that has approved Permit2 (its one transaction)."""
    payer = new_payer(funds)
    chain.w3.provider.make_request("anvil_setBalance", [payer.address, hex(GAS_FUNDS_WEI)])
    transact(chain, payer, {"to": chain.w3.to_checksum_address(manifest.token.address),
                            "data": "0x" + approve_permit2_calldata(allowance).hex()})
    return payer


def upto_requirements(manifest: Manifest, pay_to: str, maximum: int, facilitator: str,
                      max_timeout_seconds: int = 60) -> PaymentRequirements:
    """An upto offer as the SDK server builds it (``extra.facilitatorAddress``)."""
    return PaymentRequirements(
        scheme=UPTO, network=manifest.network, asset=manifest.token.address,
        amount=str(maximum), pay_to=pay_to, max_timeout_seconds=max_timeout_seconds,
        extra={"assetTransferMethod": "permit2", **manifest.token.eip712_extra(),
               "facilitatorAddress": facilitator})


async def sdk_upto_payload(payer: LocalAccount, requirements: PaymentRequirements,
                           resource_url: str = "http://127.0.0.1/usage") -> PaymentPayload:
    """A v2 upto payload signed by the SDK client."""
    client = x402Client()
    client.register("eip155:*", UptoEvmClientScheme(EthAccountSigner(payer)))
    client.set_spend_controls(False)
    required = PaymentRequired(x402_version=2, resource=SdkResourceInfo(url=resource_url),
                               accepts=[requirements])
    payload = await client.create_payment_payload(required)
    assert isinstance(payload, PaymentPayload)
    return payload


def sdk_upto_client(payer: LocalAccount) -> x402HttpxClient:
    client = x402Client()
    client.register("eip155:*", UptoEvmClientScheme(EthAccountSigner(payer)))
    client.set_spend_controls(False)
    return x402HttpxClient(client, timeout=30.0)


def sdk_upto_facilitator(chain: Chain, manifest: Manifest, key: LocalAccount) -> x402Facilitator:
    """The SDK's upto facilitator, paying gas from ``key``."""
    assert chain.rpc_url is not None
    signer = FacilitatorWeb3Signer(private_key=key.key.to_0x_hex(), rpc_url=chain.rpc_url,
                                   confirmation_timeout_seconds=30.0)
    facilitator = x402Facilitator()
    facilitator.register([manifest.network], UptoEvmFacilitatorScheme(signer))
    return facilitator


def sdk_upto_paid_app(facilitator_url: str, pay_to: str, manifest: Manifest, maximum: int,
                      usage: Callable[[Request], int], path: str = "/usage") -> FastAPI:
    """The SDK's FastAPI middleware selling ``GET {path}`` by usage: the handler reports
    what it used with the SDK's ``Settlement-Overrides`` response header."""
    facilitator_client = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    server = x402ResourceServer(facilitator_client)
    server.register(manifest.network, UptoEvmServerScheme())
    routes = {f"GET {path}": RouteConfig(
        accepts=PaymentOption(
            scheme=UPTO, pay_to=pay_to, network=manifest.network, max_timeout_seconds=60,
            price=AssetAmount(amount=str(maximum), asset=manifest.token.address,
                              extra=manifest.token.eip712_extra())),
        description="metered", mime_type="application/json")}
    x402HTTPResourceServer(server, routes).initialize()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await facilitator_client.aclose()

    app = FastAPI(lifespan=lifespan)
    app.middleware("http")(payment_middleware(routes, server, sync_facilitator_on_start=False))

    @app.get(path)
    async def metered(request: Request, response: Response) -> dict[str, Any]:
        used = usage(request)
        set_settlement_overrides(response, {"amount": str(used)})
        return {"used": used}

    return app


def fresh_account() -> str:
    return str(Account.create().address)
