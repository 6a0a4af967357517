"""``a402 pay --vault URL``: the same command, paid through a Liquidity Vault.

The body goes to stdout, one JSON line about the call to stderr (outcome,
amount, channel, the co-signed receipt), and the exit codes of
:mod:`a402.client.pay` keep their meaning.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, BinaryIO, TextIO

import httpx

from a402.client.budget import Budget, asset_key
from a402.client.errors import PaymentRefused
from a402.client.history import record_vault_call
from a402.client.limits import MaxAmount
from a402.client.vault import (
    KEY_OF_ANOTHER_LIFE,
    ExpectedVault,
    VaultCallError,
    VaultClient,
    new_idempotency_key,
)
from a402.client.vault_transport import vault_limits
from a402.client.wallet import Wallet
from a402.wire import vault_api as api

PROG = "a402 pay"
EXIT_OK, EXIT_REQUEST_FAILED, EXIT_REFUSED, EXIT_NOT_SETTLED, EXIT_HTTP_ERROR = 0, 1, 3, 4, 5


def run_vault_pay(
    args: argparse.Namespace, key: str, wallet: Wallet, *, method: str,
    headers: list[tuple[str, str]], content: bytes | None, cap: MaxAmount,
    budget: Budget | None, out: BinaryIO, err: TextIO,
    mandate: dict[str, Any] | None = None, evidence: Any = None,
) -> int:
    """``mandate``: the owner's signed mandate, signed into the call: the vault's enclave
    pays only within it (``mandate_*`` refusals exit 3, nothing paid); ``evidence``: where
    the paid call's record goes (an :class:`~a402.mandate.evidence.EvidenceLog`)."""
    def fail(code: int, message: str) -> int:
        print(f"{PROG}: {message}", file=err)
        return code

    expect = None
    if not args.trust_vault_info:
        from a402.chain.locate import DEFAULT_MANIFEST, ChainNotFound, load_manifest

        if not args.vault_address:
            return fail(EXIT_REFUSED, "nothing was sent or paid: give --vault-address (the "
                                      "vault's published address) so that its info can be "
                                      "checked, or --trust-vault-info to take it unchecked")
        manager, token = args.vault_manager, args.vault_token
        if not (manager and token):
            try:
                manifest = load_manifest(args.manifest or DEFAULT_MANIFEST)
            except ChainNotFound as e:
                return fail(EXIT_REFUSED, f"nothing was sent or paid: {e} (or give "
                                          "--vault-manager and --vault-token)")
            manager = manager or manifest.contracts.get("ASCManager")
            token = token or manifest.token.address
        expect = ExpectedVault(args.vault_address, str(manager), token)
    created_at = getattr(args, "created_at", None)
    # Named here, so that every failure can print how to run the same call again.
    idempotency_key = args.idempotency_key or new_idempotency_key(
        created_at if created_at is not None else int(time.time()))
    with VaultClient(args.vault, key, timeout=args.timeout, expect=expect,
                     trust_on_first_use=args.trust_vault_info) as vault:
        vault.mandate, vault.evidence = mandate, evidence
        try:
            info = vault.info()
            refusal = _allowed(wallet, info)
            if refusal:
                return fail(EXIT_REFUSED, f"payment refused ({refusal}); nothing was signed")
            limits = vault_limits(info, cap, budget=budget, funding=args.funding)
            result = vault.invoke(
                args.url, method=method,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                content=content or b"", max_price=limits.max_price,
                idempotency_key=idempotency_key, funding=args.funding, created_at=created_at)
        except PaymentRefused as e:
            return fail(EXIT_REFUSED, f"payment refused ({e.reason}); nothing was signed")
        except VaultCallError as e:
            print(json.dumps({"success": False, "status": e.status, **e.body}), file=err)
            again = _retry_advice(e.body)
            if e.reason == api.PAYMENT_PENDING:
                return fail(EXIT_NOT_SETTLED, "paid, or may have been paid, but the result is "
                                              f"not in yet; {again} to get it")
            if e.reason == api.REPLAYED_CALL:
                return fail(EXIT_NOT_SETTLED, "this call was paid already, or may have been "
                                              f"(replayed_call); {again} to get its answer")
            if e.reason == KEY_OF_ANOTHER_LIFE:
                return fail(EXIT_REFUSED, "not sent: an earlier attempt of this key may have "
                                          "been paid in the vault's old life (key_of_another_"
                                          "life); find out before paying it again")
            if e.status >= 500 or e.status in (409, 428) or e.body.get("retryable"):
                return fail(EXIT_REQUEST_FAILED, f"the vault could not pay ({e.reason}); "
                                                 f"nothing was paid by this attempt; {again} "
                                                 "to retry it")
            return fail(EXIT_REFUSED, f"the vault refused ({e.reason}); nothing was paid by "
                                      "this attempt")
        except httpx.HTTPError as e:
            created = vault.created_at(idempotency_key)
            again = _retry_advice({"idempotencyKey": idempotency_key, "createdAt": created})
            return fail(EXIT_REQUEST_FAILED, f"vault unreachable: {type(e).__name__}: {e}; if "
                                             "the call reached it, it may have been paid: "
                                             f"{again} to get its answer")
    out.write(result.content)
    out.flush()
    record_vault_call(result.summary(), payer=wallet.address, vault=args.vault, method=method,
                      url=args.url)
    print(json.dumps(result.summary()), file=err)
    if result.status >= 400:
        return fail(EXIT_HTTP_ERROR, f"HTTP {result.status} ({result.outcome})")
    return EXIT_OK


def _retry_advice(body: dict[str, Any]) -> str:
    """How to run the same call again: its key and creation time, as the error names them."""
    key, created = body.get("idempotencyKey"), body.get("createdAt")
    if key is None:
        return "run again with the same --idempotency-key"
    return (f"run again with --idempotency-key {key}"
            + (f" --created-at {created}" if created is not None else ""))


def _allowed(wallet: Wallet, info: dict[str, Any]) -> str | None:
    """The wallet's network/asset allow-lists apply to the vault's chain and token too."""
    if wallet.networks is not None and info["network"] not in wallet.networks:
        return "network_not_allowed"
    if wallet.assets is not None and asset_key(info["token"]["address"]) not in wallet.assets:
        return "asset_not_allowed"
    return None
