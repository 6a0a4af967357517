"""``a402 pay --vault URL``: the same command, paid through a Liquidity Vault.

The body goes to stdout, one JSON line about the call to stderr (outcome,
amount, channel, the co-signed receipt), and the exit codes of
:mod:`a402.client.pay` keep their meaning.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

import httpx

from a402.client import errors
from a402.client.budget import Budget, Reservation, asset_key
from a402.client.errors import BudgetExceeded, PaymentRefused
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
    the paid call's record goes (an :class:`~a402.mandate.evidence.EvidenceLog`).

    ``budget`` (``--budget``): the call's maxPrice (what the vault's enclave may pay at
    most) is reserved in it before the call is sent, lowered to what it leaves (none
    left: refused, exit 3, nothing sent). The reservation is then settled to the amount
    paid, given back if the vault refused (nothing paid), and kept whole if the call may
    have been paid (pending, replayed, no answer), as the ``exact`` path does
    (:mod:`a402.client.budget`)."""
    def fail(code: int, message: str) -> int:
        print(f"{PROG}: {message}", file=err)
        return code

    expect = None
    reservation: Reservation | None = None
    lowered: str | None = None  # the --max a retry must give, if --budget lowered maxPrice
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
                return fail(EXIT_REFUSED, f"nothing was paid: payment refused ({refusal}); "
                                          "nothing was signed")
            limits = vault_limits(info, cap, budget=budget, funding=args.funding)
            if budget is not None:
                # Reserved before anything is signed, and the call's maxPrice lowered to
                # the reservation: the vault's enclave pays at most maxPrice, so a call
                # whose price is above what the budget leaves is refused by the vault
                # (price_above_maximum) with nothing paid, and the budget is never overrun.
                room = budget.remaining(limits.asset)
                if room <= 0:
                    raise BudgetExceeded(limits.asset, limits.max_price, room)
                if room < limits.max_price:
                    limits.max_price = room
                    lowered = _token_units(room, getattr(args, "decimals", None))
                # A stream pays many groups: it reserves all that is left, and its total
                # is held to that (``_stream``).
                reservation = budget.reserve(
                    limits.asset, room if getattr(args, "stream", None) else limits.max_price)
            pay_to = None
            if info.get("mode") == "vault":  # the call names its payee: the offer's payTo
                pay_to = offered_payee(args.url, method, headers, content or b"",
                                       str(info.get("a402Vault")), timeout=args.timeout)
            if getattr(args, "stream", None):
                return _stream(vault, args, method=method, headers=headers,
                               content=content or b"", max_price=limits.max_price,
                               pay_to=pay_to, out=out, err=err, payer=wallet.address,
                               budget=_Reserved(budget, reservation))
            result = vault.invoke(
                args.url, method=method,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                content=content or b"", max_price=limits.max_price,
                idempotency_key=idempotency_key, funding=args.funding, created_at=created_at,
                pay_to=pay_to)
        except BudgetExceeded as e:
            return fail(EXIT_REFUSED, f"nothing was paid: payment refused ({e.reason}: "
                                      f"--budget leaves {e.remaining} atomic units); "
                                      "nothing was signed")
        except PaymentRefused as e:
            _Reserved(budget, reservation).settle(0)
            return fail(EXIT_REFUSED, f"nothing was paid: payment refused ({e.reason}); "
                                      "nothing was signed")
        except VaultCallError as e:
            if not e.may_have_paid:  # else paid, or may be: the reservation stays
                _Reserved(budget, reservation).settle(0)
            code, line = _call_failed(e, lowered)
            if e.reason == api.PRICE_ABOVE_MAXIMUM and budget is not None:
                line += f" (maxPrice {limits.max_price}: --max, within what --budget leaves)"
            print(f"a402 pay: {line}", file=err)
            print(json.dumps({"success": False, "status": e.status, **e.body}), file=err)
            return code
        except httpx.HTTPError as e:  # may have been paid: the reservation stays
            created = vault.created_at(idempotency_key)
            again = _retry_advice({"idempotencyKey": idempotency_key, "createdAt": created},
                                  lowered)
            return fail(EXIT_REQUEST_FAILED, f"payment unknown: vault unreachable "
                                             f"({type(e).__name__}: {e}); if the call reached "
                                             f"it, it may have been paid: {again} to get its "
                                             "answer")
    _Reserved(budget, reservation).settle(result.amount)
    out.write(result.content)
    out.flush()
    record_vault_call(result.summary(), payer=wallet.address, vault=args.vault, method=method,
                      url=args.url)
    print(json.dumps(result.summary()), file=err)
    if result.status >= 400:
        return fail(EXIT_HTTP_ERROR, f"HTTP {result.status} ({result.outcome})")
    return EXIT_OK


#: The provider did not answer the unpaid request that names the payee: nothing sent.
PROVIDER_UNREACHABLE = "provider_unreachable"


def offered_payee(url: str, method: str, headers: Sequence[tuple[str, str]], content: bytes,
                  a402_vault: str, *, timeout: float) -> str:
    """The payee of ``url``'s ``a402`` offer for channels of ``a402_vault``, read from the
    402 the provider answers an unpaid request with (nothing is signed or paid here):
    the call signed for a vault in vault mode names it, so that its enclave pays only a
    channel to that provider. ``PaymentRefused`` if the answer offers none, or if the
    provider cannot be reached (``provider_unreachable``): nothing was sent to the vault
    yet, so nothing was paid (not the "vault unreachable, may have been paid" of a call
    that was sent)."""
    from a402.client.records import payment_required_of
    from a402.evm.address import address_key
    from a402.wire.a402 import SCHEME_A402
    from a402.wire.convert import to_v2_requirements

    try:
        response = httpx.request(method, url, headers=list(headers), content=content,
                                 timeout=timeout)
    except httpx.HTTPError as e:
        raise PaymentRefused(PROVIDER_UNREACHABLE, f"{url} could not be asked for its offer "
                             f"({type(e).__name__}: {e})", url=url) from None
    if response.status_code != 402:
        raise PaymentRefused(errors.NO_ACCEPTABLE_REQUIREMENT, f"{url} answered "
                             f"{response.status_code}, not a 402 with an a402 offer", url=url)
    for raw in payment_required_of(response).accepts:
        req = to_v2_requirements(raw)
        named = (req.extra or {}).get("a402Vault")
        if (req.scheme == SCHEME_A402 and isinstance(named, str)
                and address_key(named) == address_key(a402_vault)):
            return str(req.pay_to)
    raise PaymentRefused(errors.NO_ACCEPTABLE_REQUIREMENT, f"{url} offers no a402 channel "
                         f"of A402Vault {a402_vault}", url=url)


def _call_failed(e: VaultCallError, lowered: str | None = None) -> tuple[int, str]:
    """The exit code and first line for a vault's refusal: what happened to the money first
    (the vault's reasons say it: see :class:`~a402.client.vault.VaultCallError`).
    ``lowered``: the maxPrice (``--max``) ``--budget`` lowered the call to (the advice to
    run it again names it: see :func:`_retry_advice`)."""
    again = _retry_advice(e.body, lowered)
    detail = f": {e.message}" if e.message else ""
    if e.reason == api.PAYMENT_PENDING:
        return EXIT_NOT_SETTLED, ("payment pending: paid, or may have been, but the result is "
                                  f"not in yet; {again} to get it")
    if e.reason == api.REPLAYED_CALL:
        return EXIT_NOT_SETTLED, ("payment pending: this call was paid already, or may have "
                                  f"been (replayed_call); {again} to get its answer")
    if e.reason == KEY_OF_ANOTHER_LIFE:
        return EXIT_REFUSED, ("payment unknown: not sent, but an earlier attempt of this key "
                              "may have been paid in the vault's old life (key_of_another_"
                              "life); find out before paying it again")
    if e.may_have_paid:  # an answer lost on the way (a proxy's 5xx, a host that died)
        return EXIT_REQUEST_FAILED, (f"payment unknown: the vault's answer was lost (HTTP "
                                     f"{e.status}, {e.reason}{detail}); if the call reached "
                                     f"it, it may have been paid: {again} to get its answer")
    if e.status >= 500 or e.status in (409, 428) or e.body.get("retryable"):
        return EXIT_REQUEST_FAILED, (f"nothing was paid by this attempt: the vault could not "
                                     f"pay ({e.reason}{detail}); {again} to retry it")
    return EXIT_REFUSED, f"nothing was paid by this attempt: the vault refused ({e.reason}{detail})"


def _retry_advice(body: dict[str, Any], lowered: str | None = None) -> str:
    """How to run the same call again: its key and creation time, as the error names them.

    ``lowered``: the call's maxPrice in ``--max`` form, when ``--budget`` lowered it. The
    key is bound to the call's terms, maxPrice included: run again without the same
    ``--budget`` or that ``--max``, the retry is another call under the same key, and the
    vault refuses it (``idempotency_key_reused``) instead of answering it."""
    key, created = body.get("idempotencyKey"), body.get("createdAt")
    if key is None:
        advice = "run again with the same --idempotency-key"
    else:
        advice = (f"run again with --idempotency-key {key}"
                  + (f" --created-at {created}" if created is not None else ""))
    if lowered is not None:
        advice += (f" and the same --budget, or --max {lowered} (the maxPrice --budget "
                   "lowered this call to; with another maxPrice the vault refuses the retry "
                   "as idempotency_key_reused)")
    return advice


def _token_units(atomic: int, decimals: int | None) -> str:
    """``atomic`` as ``--max`` reads it (token units), or as is without ``decimals``."""
    if decimals is None:
        return str(atomic)
    text = f"{atomic:0{decimals + 1}d}" if decimals else str(atomic)
    if not decimals:
        return text
    whole, frac = text[:-decimals], text[-decimals:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _allowed(wallet: Wallet, info: dict[str, Any]) -> str | None:
    """The wallet's network/asset allow-lists apply to the vault's chain and token too."""
    if wallet.networks is not None and info["network"] not in wallet.networks:
        return "network_not_allowed"
    if wallet.assets is not None and asset_key(info["token"]["address"]) not in wallet.assets:
        return "asset_not_allowed"
    return None


class _Reserved:
    """A call's budget reservation (or none), settled once its outcome is known."""

    def __init__(self, budget: Budget | None, reservation: Reservation | None) -> None:
        self.budget, self.reservation = budget, reservation

    @property
    def room(self) -> int | None:
        """What the reservation allows in all (None: no budget)."""
        return None if self.reservation is None else self.reservation.amount

    def settle(self, paid: int) -> None:
        """The call paid ``paid`` (0: nothing): the rest of the reservation is given back."""
        if self.budget is None or self.reservation is None:
            return
        self.budget.release(self.reservation)
        if paid:
            self.budget.reserve(self.reservation.asset, paid)


def _stream(vault: VaultClient, args: argparse.Namespace, *, method: str,
            headers: list[tuple[str, str]], content: bytes, max_price: int, pay_to: str | None,
            out: BinaryIO, err: TextIO, budget: _Reserved | None = None,
            payer: str | None = None) -> int:
    """``--stream N``: each group written to ``out`` as soon as it is paid for and released
    (:mod:`a402.client.vault_stream`); one JSON line per group and a summary on ``err``.
    With a budget, the stream's total is at most what it reserved (``--max-total`` or
    less); the reservation is settled to what the groups paid, or kept whole if a group
    may have been paid without its answer."""
    from a402.client.limits import to_atomic_exact
    from a402.client.vault_stream import StreamEnd, paid_stream

    end = StreamEnd()
    try:
        max_total = None if args.max_total is None else to_atomic_exact(
            args.max_total, args.decimals)
    except (ValueError, TypeError) as e:
        if budget is not None:
            budget.settle(0)
        return _fail_usage(err, f"--max-total: {e}")
    end.cap = "--max-total"
    if budget is not None and budget.room is not None:
        if max_total is None or budget.room < max_total:
            end.cap = "--budget"
        max_total = budget.room if max_total is None else min(max_total, budget.room)
    try:
        for group in paid_stream(
                vault, args.url, group=args.stream, max_price=max_price,
                max_total=max_total, method=method, content=content, pay_to=pay_to,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                end=end):
            out.write(group.content)
            out.flush()
            if payer is not None:  # each group is a paid call: in the local records too
                record_vault_call(group.result.summary(), payer=payer, vault=args.vault,
                                  method=method, url=args.url)
            print(json.dumps({"group": group.seq, "amount": str(group.amount),
                              "last": group.last}), file=err)
    except VaultCallError as e:
        if budget is not None and not e.may_have_paid:
            budget.settle(end.paid)
        code, line = _call_failed(e)
        if e.may_have_paid:
            # The call is the group's, not the command's: re-running the command with
            # its key would start a new stream, paid again (not fetch this group).
            line = (f"payment pending: group {end.groups + 1} was paid, or may have been, "
                    f"but its answer is not in ({e.reason}); {end.groups} groups received, "
                    f"{end.paid} paid before it (atomic units); running this command again "
                    "starts a new stream and pays for it again")
        else:
            line += f" (after {end.groups} groups, {end.paid} paid)"
        print(f"a402 pay: {line}", file=err)
        print(json.dumps({"success": False, "status": e.status, "groups": end.groups,
                          "paid": str(end.paid), **e.body}), file=err)
        return code
    except httpx.HTTPError as e:
        # A group's call got no answer: it may have been paid (the reservation stays
        # whole). Its key is the group's own, so the command's --idempotency-key cannot
        # fetch it: running the command again starts a new stream, paid again.
        print(f"a402 pay: payment unknown: the vault did not answer for group "
              f"{end.groups + 1} ({type(e).__name__}: {e}), which may have been paid; "
              f"{end.groups} groups received, {end.paid} paid before it (atomic units); "
              "running this command again starts a new stream and pays for it again",
              file=err)
        print(json.dumps({"success": False, "error": "vault_unreachable",
                          "groups": end.groups, "paid": str(end.paid)}), file=err)
        return EXIT_REQUEST_FAILED
    if budget is not None:
        budget.settle(end.paid)
    summary = {"outcome": "stream", "groups": end.groups, "paid": str(end.paid),
               "reason": end.reason, "complete": end.complete, "message": end.message()}
    if end.detail:
        summary["detail"] = end.detail
    # the client's own limits end a stream as asked; anything else cut it short
    if not (end.complete or end.reason in ("max_total", "stopped")
            or end.reason.startswith("mandate_")):
        print(f"a402 pay: {end.message()}", file=err)
        print(json.dumps({"success": False, **summary}), file=err)
        return EXIT_REQUEST_FAILED
    print(json.dumps({"success": True, **summary}), file=err)
    return EXIT_OK


def _fail_usage(err: TextIO, message: str) -> int:
    print(f"{PROG}: nothing was paid: {message}", file=err)
    return EXIT_REFUSED
