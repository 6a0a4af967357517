"""``a402 pay URL --key-file F [--max 0.01]``: curl for paid URLs.

The body goes to stdout untouched (bytes), so it can be piped; everything
about the payment goes to stderr: one JSON line with the receipt when a
payment was made, and ``a402 pay: ...`` lines for problems. Exit codes are
stable so scripts and agents can branch on them:

    0  success (2xx; paid and settled, or nothing to pay)
    1  the request failed (network error, timeout)
    2  usage or configuration error (bad arguments, unreadable key file)
    3  payment refused by this client (price above --max, budget, no acceptable
       requirement, malformed 402, mandate); nothing was signed (or, refused by a mandate
       at its commit, signed in memory and discarded unsent)
    4  paid, settlement pending: the server did not confirm the settlement (pending
       transaction, no answer, missing receipt); the money may still move
    5  the server answered an HTTP error (>= 400) with no payment involved, or after a
       payment that settled
    6  signed, but nothing was paid: the server refused the payment (invalid,
       insufficient funds, settlement failed) or failed before settling (facilitator
       unreachable, upstream error), and said so

The first line on stderr says what happened to the money ("nothing was paid",
"paid, settlement pending", "paid and settled"); the JSON line after it carries
``moneyState`` (``not_paid``, ``pending``, ``settled``) and ``reason`` (see the
README's error catalogue and :mod:`a402.client.outcome`).

With ``--mandate FILE`` the payment must also fit the owner's signed mandate
(:mod:`a402.mandate`): its registry is read on the mandate's chain (``--mandate-rpc``,
else the devnet manifest's), and the spend is reserved durably in ``--spend-db``
(``sqlite:///.a402/<chain id>/mandates.db`` by default, so the budget spans
invocations) before the payment is sent. A payment outside it exits 3 with the mandate's reason
(``mandate_cap_exceeded``...). ``--max`` then defaults to none (the mandate's
per-payment maximum is the cap). With ``--vault`` the mandate is signed into the
vault call and the vault's enclave enforces it (its spend is the enclave's, sealed in
the vault's ledger, not ``--spend-db``'s); a refusal exits 3 with its reason.

With ``--vault URL`` the request goes through a Liquidity Vault, which pays
the provider inside an A402 channel from the key's vault balance; the same
codes apply (3: the vault refused, nothing was paid; 4: paid but the result
is not in yet — run again with the same ``--idempotency-key`` and ``--created-at``,
which the message prints, to get it).

Amounts (``--max``, ``--budget``) are token units converted exactly with
Decimal, assuming ``--decimals`` (6, as for USDC) decimals. A requirement whose
``extra.decimals`` claims fewer decimals is capped with that smaller number; a
claim of more is ignored, because it would raise the cap on the server's own
word (see ``limits.token_units_max``).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

import httpx

from a402.client.auth import DEFAULT_TIMEOUT, paying_auth
from a402.client.budget import Budget
from a402.client.errors import PaymentRefused
from a402.client.history import record_payment
from a402.client.limits import (
    DEFAULT_DECIMALS,
    as_max_amount,
    to_atomic_exact,
    token_units_max,
)
from a402.client.outcome import NOT_PAID, PENDING, outcome_of
from a402.client.records import payment_of
from a402.client.wallet import Wallet, private_key_bytes
from a402.exact.upto import ALLOWANCE_REQUIRED
from a402.wire.errors import WireError

EXIT_OK: Final = 0
EXIT_REQUEST_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3
EXIT_NOT_SETTLED: Final = 4
EXIT_HTTP_ERROR: Final = 5
EXIT_NOT_PAID: Final = 6

DEFAULT_MAX: Final = "0.01"
PROG: Final = "a402 pay"
DESCRIPTION: Final = (
    "Fetch a URL like curl; if it answers 402, pay it over x402 (exact, EVM) within --max. "
    "The body goes to stdout, the settlement receipt (JSON) to stderr."
)


class UsageError(Exception):
    """A bad argument or key file: exit 2 with the message."""


def add_pay_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``a402 pay``'s arguments on ``parser`` (a subcommand parser)."""
    parser.add_argument("url", help="the URL to fetch (and pay for, if it answers 402)")
    parser.add_argument("--key-file", required=True, metavar="F",
                        help="file holding the payer's hex private key (mode 600)")
    parser.add_argument("--max", default=None, metavar="AMOUNT",
                        help=f"most this one request may pay, in token units "
                             f"(default {DEFAULT_MAX}; with --mandate: the mandate's)")
    parser.add_argument("--budget", metavar="AMOUNT",
                        help="total this invocation may pay per asset, in token units "
                             "(one request pays at most once, so this only matters below --max; "
                             "with --vault the call's maxPrice is lowered to it, and a --stream's "
                             "total held to it)")
    parser.add_argument("--decimals", type=int, default=DEFAULT_DECIMALS, metavar="N",
                        help=f"decimals of the token the amounts are in "
                             f"(default {DEFAULT_DECIMALS})")
    parser.add_argument("--network", action="append", metavar="CAIP2",
                        help="allow paying on this network (repeatable; default: any EVM)")
    parser.add_argument("--asset", action="append", metavar="ADDRESS",
                        help="allow paying in this token (repeatable; default: any)")
    parser.add_argument("-X", "--request", dest="method", metavar="METHOD",
                        help="HTTP method (default GET, or POST with -d)")
    parser.add_argument("-d", "--data", metavar="DATA",
                        help="request body; @FILE reads a file, @- reads stdin")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                        help="extra request header (repeatable)")
    parser.add_argument("-L", "--location", action="store_true", help="follow redirects")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"HTTP timeout (default {DEFAULT_TIMEOUT:g}; settlement is on-chain)")
    parser.add_argument("--vault", metavar="URL",
                        help="pay through this Liquidity Vault (A402 channels, from the key's "
                             "vault balance) instead of signing an exact payment")
    parser.add_argument("--vault-address", metavar="ADDRESS",
                        help="with --vault: the vault's address (its attested enclave key, as "
                             "published): the vault's unauthenticated info must name it, the "
                             "manifest's ASCManager and token, or nothing is sent")
    parser.add_argument("--vault-manager", metavar="ADDRESS",
                        help="with --vault-address: the ASCManager the vault must name "
                             "(default: the manifest's)")
    parser.add_argument("--vault-token", metavar="ADDRESS",
                        help="with --vault-address: the token the vault must name (default: "
                             "the manifest's); with --vault-manager, no manifest is read")
    parser.add_argument("--trust-vault-info", action="store_true",
                        help="with --vault: take the vault, manager and token its info names "
                             "without checking them (a host could name its own key)")
    parser.add_argument("--funding", choices=("pool", "wallet"), default="pool",
                        help="with --vault: fund a new channel from the vault balance (pool) "
                             "or from the key's own wallet by one signature (wallet)")
    parser.add_argument("--mandate", metavar="FILE",
                        help="pay only inside this owner-signed mandate (a402 mandate create)")
    parser.add_argument("--spend-db", default=None, metavar="URL",
                        help="with --mandate: where its spending is recorded "
                             "(default: sqlite:///.a402/{chain_id}/mandates.db, the chain of the "
                             "mandate's registry)")
    parser.add_argument("--mandate-rpc", metavar="URL",
                        help="with --mandate: JSON-RPC URL of the mandate's chain, to read "
                             "revocations (default: the devnet manifest's rpcUrl)")
    parser.add_argument("--confirmation", metavar="FILE",
                        help="with --mandate: the owner's signed confirmation of this payment "
                             "(a402 mandate confirm), for amounts above the mandate's threshold")
    parser.add_argument("--manifest", default=None, metavar="PATH",
                        help="with --mandate: devnet manifest naming the chain's RPC URL; "
                             "with --vault: the ASCManager and token the vault must name "
                             "(default: .a402/devnet.json)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="with --vault: name this call, so that running the command again "
                             "returns the first outcome instead of paying again (without it, "
                             "one is generated and printed if the call fails)")
    parser.add_argument("--stream", type=int, metavar="N",
                        help="with --vault: buy the response as a paid stream, in groups of N "
                             "units (events or lines), each group one payment in the channel, "
                             "printed as it arrives")
    parser.add_argument("--max-total", metavar="AMOUNT",
                        help="with --stream: stop before a group at --max would take the "
                             "stream's cost above this, in token units (the provider is told "
                             "to stop)")
    parser.add_argument("--created-at", type=int, metavar="UNIX_TIME",
                        help="with --vault and a key of your own: the first attempt's "
                             "createdAt (printed when a call fails), so that a re-run is the "
                             "same call (a generated key carries it already)")


def read_key_file(path: str | Path) -> str:
    """The hex key in ``path`` (``0x`` optional, whitespace ignored), as ``0x`` and 64
    hex digits, which every signer takes (eth_account refuses a trailing newline).

    Refused if group- or world-accessible, as ssh does: a payer key readable
    by others is a key others can pay with.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(
                f"key file {p} is accessible by group/others "
                f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {p}"
            )
        text = p.read_text(encoding="ascii")
    except OSError as e:
        raise UsageError(f"cannot read key file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"key file {p} is not a hex private key") from None
    try:
        raw = private_key_bytes(text)
    except ValueError as e:
        raise UsageError(f"key file {p}: {e}") from None
    return "0x" + raw.hex()  # normalised: a key file ends with a newline (a402 devnet's do)


def _headers(lines: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"header must look like 'Name: value', got {line!r}")
        out.append((name.strip(), value.strip()))
    return out


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {data[1:]}: {e.strerror or e}") from None
    return data.encode("utf-8")


def _amount(text: str, decimals: int, what: str) -> int:
    try:
        return to_atomic_exact(text, decimals)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{what}: {e}") from None


def run_pay(
    args: argparse.Namespace, *, stdout: BinaryIO | None = None, stderr: TextIO | None = None
) -> int:
    """Fetch ``args.url``, paying if asked; returns the exit code (see module doc)."""
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr

    def fail(code: int, message: str) -> int:
        print(f"{PROG}: {message}", file=err)
        return code

    mandate_given = getattr(args, "mandate", None) is not None
    try:
        if not 0 <= args.decimals <= 36:
            raise UsageError("--decimals must be between 0 and 36")
        cap = None
        if args.max is not None or not mandate_given:
            amount = args.max if args.max is not None else DEFAULT_MAX
            _amount(amount, args.decimals, "--max")
            cap = token_units_max(amount, args.decimals)
        budget = None
        if args.budget is not None:
            budget = Budget(_amount(args.budget, args.decimals, "--budget"))
        wallet = Wallet(read_key_file(args.key_file), networks=args.network, assets=args.asset)
        headers = _headers(args.header)
        content = _body(args.data)
        if content is not None and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))  # as curl
        method = (args.method or ("POST" if content is not None else "GET")).upper()
    except (UsageError, ValueError, WireError) as e:  # WireError: e.g. a --network typo
        return fail(EXIT_USAGE, f"nothing was paid: {e}")

    guard = None
    if mandate_given and args.vault:
        # The vault's enclave enforces the mandate (it is signed into the call): this
        # client sends the document; without --max the mandate's cap is the call's maximum.
        from a402.client.mandates import DEFAULT_SPEND_DB, spend_db_for
        from a402.client.vault_pay import run_vault_pay
        from a402.mandate.document import MandateError, load_signed
        from a402.mandate.evidence import EvidenceLog
        from a402.mandate.spend import SpendStore

        try:
            signed = load_signed(Path(args.mandate).read_text())
        except (OSError, MandateError) as e:
            return fail(EXIT_USAGE, f"--mandate {args.mandate}: {e}")
        # The evidence of each paid call goes next to the spend store (a402 audit).
        spend_db = args.spend_db or DEFAULT_SPEND_DB
        try:
            spend_db = spend_db_for(spend_db, signed.domain.chain_id,
                                    warn=lambda m: print(f"{PROG}: {m}", file=err))
            store = SpendStore(spend_db)
            store.register(signed)
        except Exception as e:
            return fail(EXIT_USAGE, f"cannot open the spend store {spend_db}: "
                                    f"{type(e).__name__}: {e}")
        try:
            return run_vault_pay(args, read_key_file(args.key_file), wallet, method=method,
                                 headers=headers, content=content,
                                 cap=cap if cap is not None
                                 else as_max_amount(signed.mandate.max_per_payment),
                                 budget=budget, out=out, err=err, mandate=signed.to_json(),
                                 evidence=EvidenceLog(store.engine))
        finally:
            store.close()
    if mandate_given:
        from a402.chain.locate import DEFAULT_MANIFEST, ChainNotFound
        from a402.client.mandates import DEFAULT_SPEND_DB, open_guard
        from a402.client.mandates import UsageError as MandateUsage

        try:
            guard = open_guard(args.mandate, wallet.address,
                               spend_db=args.spend_db or DEFAULT_SPEND_DB,
                               rpc=args.mandate_rpc, manifest_path=args.manifest
                               or DEFAULT_MANIFEST, confirmation=args.confirmation)
        except MandateUsage as e:
            return fail(EXIT_USAGE, str(e))
        except ChainNotFound as e:
            return fail(EXIT_REFUSED, f"nothing was paid: payment refused "
                                      f"(mandate_revocation_unknown): {e}; "
                                      "nothing was signed, nothing was paid")
    if args.vault:
        assert cap is not None
        from a402.client.vault_pay import run_vault_pay

        return run_vault_pay(args, read_key_file(args.key_file), wallet, method=method,
                             headers=headers, content=content, cap=cap, budget=budget, out=out,
                             err=err)
    auth = paying_auth(wallet, max_per_request=cap, budget=budget, mandate=guard)
    try:
        with httpx.Client(auth=auth, timeout=args.timeout, follow_redirects=args.location) as http:
            response = http.request(method, args.url, headers=headers, content=content)
        if guard is not None:
            _flush_outcome(guard, err)
    except PaymentRefused as e:
        # Refused before signing, or (under a mandate, at the commit) signed in memory and
        # discarded unsent, which the message says: nothing left this process either way.
        tail = "nothing was sent, nothing was paid" if "discarded unsent" in e.message \
            else "nothing was signed, nothing was paid"
        print(f"{PROG}: nothing was paid: payment refused ({e.reason}: {e.message}); {tail}",
              file=err)
        print(json.dumps({"success": False, "moneyState": NOT_PAID, "refused": e.reason,
                          "message": e.message,
                          "offered": [r.to_wire() for r in e.offered]}), file=err)
        return EXIT_REFUSED
    except httpx.InvalidURL as e:
        return fail(EXIT_USAGE, f"nothing was paid: invalid URL: {e}")
    except httpx.HTTPError as e:
        if guard is not None:
            _flush_outcome(guard, err)
        for sent in auth.payments:  # signed, then no answer: say so, it may settle
            record_payment(sent, method=method, url=args.url)
            outcome = outcome_of(sent, None)
            print(f"{PROG}: {outcome.headline} ({type(e).__name__})", file=err)
            print(json.dumps({**sent.summary(), "moneyState": outcome.state}), file=err)
            return EXIT_NOT_SETTLED
        return fail(EXIT_REQUEST_FAILED, f"nothing was paid: request failed: "
                                         f"{type(e).__name__}: {e}")

    out.write(response.content)
    out.flush()
    payment = payment_of(response)
    if payment is not None:
        record_payment(payment, method=method, url=args.url)
        outcome = outcome_of(payment, response)
        print(f"{PROG}: {outcome.headline}", file=err)
        print(json.dumps({**payment.summary(), "moneyState": outcome.state,
                          "reason": outcome.reason}), file=err)
        if outcome.state == NOT_PAID:
            if outcome.reason == ALLOWANCE_REQUIRED:
                from a402.client.permit2 import approve_hint

                print(f"{PROG}: {approve_hint(payment.asset, payment.network)}", file=err)
            return EXIT_NOT_PAID
        if outcome.state == PENDING:
            return EXIT_NOT_SETTLED
    if response.status_code >= 400:
        paid = "paid and settled, but " if payment is not None else "nothing was paid: "
        return fail(EXIT_HTTP_ERROR,
                    f"{paid}HTTP {response.status_code} {response.reason_phrase}")
    return EXIT_OK


def _flush_outcome(guard: Any, err: TextIO) -> None:
    """The payment's outcome record, written before the command exits (the payment's own
    record and reservation committed before it was sent). A failure is said, not
    raised: the payment stands either way."""
    try:
        guard.close()
    except Exception as e:
        print(f"{PROG}: the payment's outcome could not be added to the mandate's evidence "
              f"({type(e).__name__}: {e}); the payment itself is recorded", file=err)


def pay_main(
    argv: Sequence[str] | None = None,
    *,
    stdout: BinaryIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Stand-alone entry point: ``pay_main(["URL", "--key-file", "F"])`` → exit code."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_pay_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage message
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    return run_pay(args, stdout=stdout, stderr=stderr)
