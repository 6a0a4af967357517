"""``a402 mandate create|show|verify|revoke|confirm|list|export|import``.

``create`` signs a mandate with the owner's key file and writes it as JSON (the file
the agent is given); ``confirm`` signs the owner's approval of one payment above the
mandate's threshold (``a402 pay --confirmation``); ``show`` prints its limits (the
signature is checked on reading); ``verify`` also asks the chain whether it is
revoked and whether it is valid now; ``revoke`` revokes it on-chain (the owner pays
the gas, or signs a revocation that ``--relayer-key-file`` submits); ``list`` prints
what a spend store recorded under each mandate; ``export --ap2`` writes a mandate as
an AP2 v0.2 open payment mandate (SD-JWT, signed by the owner) for an AP2 agent, and
``import --ap2`` verifies one and shows the a402 limits it maps to (with the owner's
key, it also writes them as an a402 mandate of the same hash). An AP2 SD-JWT file is
itself a mandate ``a402 pay --mandate`` and the other actions read (field mapping:
:mod:`a402.mandate.ap2`). Every command takes ``--json``.

Amounts are token units (``--decimals``, 6 by default, as for USDC) converted
exactly; the document stores atomic units. The chain, the registry, the network
and the asset default to the devnet manifest's (``--manifest``).

Exit codes: 0 done (``verify``: the mandate can pay now), 1 ``verify`` found it
unusable (revoked, expired, not yet valid, unknown), 2 usage or file error, 3 the
chain could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Final, TextIO

from a402.chain.locate import DEFAULT_MANIFEST, ChainNotFound
from a402.chain.rpc import ChainUnavailable, RpcError
from a402.client.mandates import (
    DEFAULT_SPEND_DB,
    UsageError,
    mandate_chain,
    manifest_or_none,
    read_mandate,
)
from a402.mandate.document import Domain, Mandate, MandateError

EXIT_OK: Final = 0
EXIT_UNUSABLE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CHAIN: Final = 3
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


# ---------------------------------------------------------------- helpers


def duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``30d`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"not a duration: {text!r} (e.g. 3600, 15m, 12h, 30d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _atomic(text: str | None, decimals: int, what: str) -> int:
    from a402.client.limits import parse_token_amount, to_atomic

    if text is None:
        return 0
    try:
        return to_atomic(parse_token_amount(text), decimals)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{what}: {e}") from None


def _key(path: str) -> Any:
    from a402.client.pay import UsageError as PayUsageError
    from a402.client.pay import read_key_file
    from a402.client.wallet import load_account

    try:
        return load_account(read_key_file(path))
    except PayUsageError as e:
        raise UsageError(str(e)) from None


def _rows(rows: list[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=out)


# ---------------------------------------------------------------- arguments


def add_mandate_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mandate_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def chain_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="PATH",
                       help="devnet manifest (chain, registry, token; default: %(default)s)")
        p.add_argument("--rpc", metavar="URL", help="JSON-RPC URL of the mandate's chain "
                       "(default: the manifest's rpcUrl)")

    create = sub.add_parser("create", help="sign a mandate with the owner's key")
    create.add_argument("--owner-key-file", required=True, metavar="F",
                        help="the fund owner's hex private key (mode 600)")
    create.add_argument("--agent", required=True, metavar="ADDRESS",
                        help="the agent's key the mandate lets pay")
    create.add_argument("--max-per-payment", required=True, metavar="AMOUNT",
                        help="most one payment may pay (token units)")
    create.add_argument("--budget", required=True, metavar="AMOUNT",
                        help="most all payments may pay together (token units)")
    create.add_argument("--period-budget", metavar="AMOUNT",
                        help="most per --period (token units)")
    create.add_argument("--period", metavar="DURATION", help="e.g. 1d, 12h (with --period-budget)")
    for flag, text in (("--payee", "allowed payee address"),
                       ("--origin", "allowed origin, scheme://host[:port]"),
                       ("--url-pattern", "allowed URL pattern (* is the one wildcard)"),
                       ("--skill", "allowed A2A skill"),
                       ("--network", "allowed CAIP-2 network (default: the manifest's)"),
                       ("--asset", "allowed token address (default: the manifest's token)"),
                       ("--scheme", "allowed scheme: exact, a402 (default: exact)")):
        create.add_argument(flag, action="append", default=[],
                            help=f"{text}; repeatable; none: any" if flag in (
                                "--payee", "--origin", "--url-pattern", "--skill")
                            else f"{text}; repeatable")
    create.add_argument("--valid-for", default="30d", metavar="DURATION",
                        help="how long from now it pays (default: %(default)s)")
    create.add_argument("--confirm-above", metavar="AMOUNT",
                        help="above this one payment needs the owner's signed confirmation")
    create.add_argument("--decimals", type=int, default=6,
                        help="decimals of the token the amounts are in (default: 6)")
    create.add_argument("--registry", metavar="ADDRESS",
                        help="MandateRegistry address (default: the manifest's)")
    create.add_argument("--chain-id", type=int, help="the registry's chain (default: the "
                        "manifest's)")
    create.add_argument("--out", metavar="FILE", help="write the signed mandate here "
                        "(default: stdout)")
    create.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="PATH",
                        help="devnet manifest for the defaults (default: %(default)s)")
    common(create)

    show = sub.add_parser("show", help="print a mandate's limits (its signature is checked)")
    show.add_argument("file")
    common(show)

    verify = sub.add_parser("verify", help="check a mandate: signature, validity now, "
                                           "revocation on-chain")
    verify.add_argument("file")
    verify.add_argument("--agent", metavar="ADDRESS", help="also check it is for this agent")
    chain_flags(verify)
    common(verify)

    revoke = sub.add_parser("revoke", help="revoke a mandate on-chain (the owner's key)")
    revoke.add_argument("file")
    revoke.add_argument("--owner-key-file", required=True, metavar="F")
    revoke.add_argument("--relayer-key-file", metavar="F",
                        help="submit the owner's signed revocation from this key (it pays "
                             "the gas; the owner needs none)")
    chain_flags(revoke)
    common(revoke)

    confirm = sub.add_parser("confirm", help="the owner signs one payment above the "
                                             "mandate's confirmation threshold")
    confirm.add_argument("file")
    confirm.add_argument("--owner-key-file", required=True, metavar="F")
    confirm.add_argument("--payee", required=True, metavar="ADDRESS")
    confirm.add_argument("--amount", required=True, metavar="AMOUNT",
                         help="exactly what the payment pays (token units)")
    what = confirm.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", help="the paid URL (HTTP payments)")
    what.add_argument("--skill", help="the A2A skill (A2A payments)")
    confirm.add_argument("--network", metavar="CAIP2",
                         help="default: the mandate's, if it names one")
    confirm.add_argument("--asset", metavar="ADDRESS",
                         help="default: the mandate's, if it names one")
    confirm.add_argument("--scheme", default="exact", choices=("exact", "a402"))
    confirm.add_argument("--valid-for", default="10m", metavar="DURATION",
                         help="how long the confirmation may be used (default: %(default)s)")
    confirm.add_argument("--decimals", type=int, default=6)
    confirm.add_argument("--out", metavar="FILE", help="default: stdout")
    common(confirm)

    export = sub.add_parser("export", help="write a mandate as an AP2 open payment mandate "
                                           "(SD-JWT VC) for an AP2 agent")
    export.add_argument("file")
    export.add_argument("--ap2", action="store_true", required=True,
                        help="AP2 v0.2 mandate.payment.open.1 (the one export format)")
    export.add_argument("--owner-key-file", required=True, metavar="F",
                        help="the owner signs the SD-JWT (ES256K) with the key that signed "
                        "the mandate")
    export.add_argument("--currency", default="USDC",
                        help="the AP2 currency code of the token (default: %(default)s)")
    export.add_argument("--decimals", type=int, default=6,
                        help="the token's decimals: AP2 budgets are in major units "
                        "(default: 6)")
    export.add_argument("--out", metavar="FILE", help="default: stdout")
    common(export)

    imp = sub.add_parser("import", help="verify an AP2 open payment mandate and show the "
                                        "a402 limits it maps to")
    imp.add_argument("file")
    imp.add_argument("--ap2", action="store_true", required=True,
                     help="the file is an AP2 v0.2 open payment mandate (SD-JWT)")
    imp.add_argument("--registry", metavar="ADDRESS",
                     help="the MandateRegistry, if the mandate names none (a402_registry)")
    imp.add_argument("--owner-key-file", metavar="F",
                     help="also sign the same limits as an a402 (EIP-712) mandate: the key "
                     "must be the AP2 issuer's")
    imp.add_argument("--out", metavar="FILE",
                     help="where the a402 mandate goes (with --owner-key-file; default: "
                     "stdout)")
    common(imp)

    listing = sub.add_parser("list", help="mandates a spend store has seen, with their spend")
    listing.add_argument("--spend-db", default=DEFAULT_SPEND_DB, metavar="URL",
                         help="the spend store (default: %(default)s)")
    common(listing)


def run_mandate(args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    action = {"create": _create, "show": _show, "verify": _verify, "revoke": _revoke,
              "confirm": _confirm, "list": _list, "export": _export,
              "import": _import}[args.mandate_command]
    # Both refusals come before anything is sent or written: said first, and for a
    # revocation (the owner's brake) that the mandate still stands.
    state = "nothing changed" + (", the mandate is NOT revoked"
                                 if args.mandate_command == "revoke" else "")
    prog = f"a402 mandate {args.mandate_command}"
    try:
        return action(args, out, err)
    except UsageError as e:
        print(f"{prog}: {state} (usage): {e}", file=err)
        return EXIT_USAGE
    except ChainNotFound as e:
        print(f"{prog}: {state} (chain_not_found): {e}", file=err)
        return EXIT_CHAIN
    except (RpcError, ChainUnavailable) as e:
        # The node refused a transaction (an owner without gas) or stopped answering: a
        # revocation sent before the node went silent may still land, so it is not called
        # undone, and the owner is told how to know.
        if args.mandate_command == "revoke":
            print(f"{prog}: the mandate is NOT known to be revoked (chain_error): {e}; "
                  "the revocation is a transaction from the owner's key, which needs gas; "
                  f"check with `a402 mandate verify {args.file}`", file=err)
        else:
            print(f"{prog}: nothing changed (chain_error): {e}", file=err)
        return EXIT_CHAIN


# ---------------------------------------------------------------- actions


def _create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.crypto.authorization import EcdsaSigner
    from a402.mandate.document import describe, sign_mandate

    manifest = manifest_or_none(args.manifest)
    owner = _key(args.owner_key_file)
    registry = args.registry or (manifest.contracts.get("MandateRegistry") if manifest else None)
    chain_id = args.chain_id or (manifest.chain_id if manifest else None)
    if not registry or not chain_id:
        raise UsageError("no MandateRegistry/chain: give --registry and --chain-id, or a "
                         "manifest that names them (--manifest)")
    networks = args.network or ([manifest.network] if manifest else [])
    assets = args.asset or ([manifest.token.address] if manifest else [])
    if not 0 <= args.decimals <= 36:
        raise UsageError("--decimals must be between 0 and 36")
    if (args.period is None) != (args.period_budget is None):
        raise UsageError("--period and --period-budget go together")
    now = int(time.time())
    d = args.decimals
    try:
        mandate = Mandate(
            owner=owner.address, agent=args.agent,
            max_per_payment=_atomic(args.max_per_payment, d, "--max-per-payment"),
            budget=_atomic(args.budget, d, "--budget"),
            period_budget=_atomic(args.period_budget, d, "--period-budget"),
            period=duration(args.period) if args.period else 0,
            payees=tuple(args.payee), origins=tuple(args.origin),
            url_patterns=tuple(args.url_pattern), skills=tuple(args.skill),
            networks=tuple(networks), assets=tuple(assets),
            schemes=tuple(args.scheme or ["exact"]),
            valid_after=now, valid_before=now + duration(args.valid_for),
            nonce=os.urandom(32), confirm_above=_atomic(args.confirm_above, d, "--confirm-above"),
        )
        signed = sign_mandate(mandate, Domain(chain_id, registry),
                              EcdsaSigner(bytes(owner.key)).sign_digest)
    except MandateError as e:
        raise UsageError(f"{e.reason}: {e.message}") from None
    text = signed.dumps()
    if args.out:
        Path(args.out).write_text(text + "\n")
        if args.json:
            print(text, file=out)
        else:
            _rows(describe(signed), out)
            print(f"signed mandate written to {args.out}; give it to the agent", file=out)
    else:  # the document on stdout (to pipe), the readable table on stderr
        print(text, file=out)
        if not args.json:
            _rows(describe(signed), err)
    return EXIT_OK


def _show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.mandate.document import describe

    signed = read_mandate(args.file)
    if args.json:
        print(json.dumps({**signed.to_json(), "signatureValid": True}, indent=2), file=out)
    else:
        _rows([*describe(signed), ("signature", "valid, by the owner")], out)
    return EXIT_OK


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.evm.address import address_key
    from a402.mandate.registry import RevocationCheck, RevocationUnknown

    signed = read_mandate(args.file)
    m = signed.mandate
    now = int(time.time())
    problems: list[str] = []
    if args.agent and address_key(args.agent) != address_key(m.agent):
        problems.append(f"mandate_wrong_agent: it is for {m.agent}")
    if now < m.valid_after:
        problems.append(f"mandate_not_yet_valid: from {m.valid_after}")
    if now >= m.valid_before:
        problems.append(f"mandate_expired: at {m.valid_before}")
    chain = mandate_chain(signed, args.rpc, args.manifest)
    if not chain.w3.eth.get_code(chain.w3.to_checksum_address(signed.domain.registry)):
        problems.append(f"mandate_revocation_unknown: no MandateRegistry at "
                        f"{signed.domain.registry}")
        revoked = None
    else:
        try:
            revoked = RevocationCheck.for_mandate(chain, signed).revoked(signed)
        except RevocationUnknown as e:
            revoked = None
            problems.append(f"mandate_revocation_unknown: {e}")
    if revoked:
        problems.append("mandate_revoked: the owner revoked it on-chain")
    usable = not problems
    if args.json:
        print(json.dumps({"hash": signed.hash_hex, "signatureValid": True, "revoked": revoked,
                          "usable": usable, "problems": problems}, indent=2), file=out)
    else:
        _rows([("hash", signed.hash_hex), ("signature", "valid, by the owner " + m.owner),
               ("revoked", {None: "unknown", True: "YES", False: "no"}[revoked]),
               ("usable now", "yes" if usable else "NO: " + "; ".join(problems))], out)
    return EXIT_OK if usable else EXIT_UNUSABLE


def _revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.chain.tx import TransactionFailed
    from a402.evm.address import address_key
    from a402.mandate.document import revocation_digest
    from a402.mandate.registry import MandateRegistry

    signed = read_mandate(args.file)
    owner = _key(args.owner_key_file)
    if address_key(owner.address) != address_key(signed.mandate.owner):
        raise UsageError(f"{args.owner_key_file} is {owner.address}, the mandate's owner is "
                         f"{signed.mandate.owner}: only the owner revokes")
    chain = mandate_chain(signed, args.rpc, args.manifest)
    registry = MandateRegistry(chain, signed.domain.registry)
    try:
        if args.relayer_key_file:
            from a402.crypto.authorization import EcdsaSigner

            relayer = _key(args.relayer_key_file)
            signature = EcdsaSigner(bytes(owner.key)).sign_digest(
                revocation_digest(signed.hash, signed.domain))
            receipt = registry.revoke_by_sig(relayer, owner.address, signed.hash, signature)
        else:
            receipt = registry.revoke(owner, signed.hash)
    except TransactionFailed as e:
        print(f"a402 mandate: the revocation failed on-chain ({e}); the mandate is NOT "
              "revoked", file=err)
        return EXIT_CHAIN
    block = registry.revoked_at(signed.mandate.owner, signed.hash)
    result = {"hash": signed.hash_hex, "revoked": True, "block": block,
              "transaction": receipt["transactionHash"].to_0x_hex()}
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        _rows([("hash", signed.hash_hex), ("revoked", f"yes, in block {block}"),
               ("transaction", str(result["transaction"]))], out)
        print("payers that check the registry refuse it from that block on", file=out)
    return EXIT_OK


def _one(values: tuple[str, ...], given: str | None, flag: str) -> str:
    if given:
        return given
    if len(values) != 1:
        raise UsageError(f"the mandate names {len(values)} choices for {flag}: give {flag}")
    return values[0]


def _confirm(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.crypto.authorization import EcdsaSigner
    from a402.evm.address import address_key, is_address, to_checksum
    from a402.mandate.document import Confirmation

    signed = read_mandate(args.file)
    owner = _key(args.owner_key_file)
    if address_key(owner.address) != address_key(signed.mandate.owner):
        raise UsageError(f"{args.owner_key_file} is {owner.address}, the mandate's owner is "
                         f"{signed.mandate.owner}: only the owner confirms")
    for flag, value in (("--payee", args.payee), ("--asset", args.asset)):
        if value is not None and not is_address(value):
            raise UsageError(f"{flag}: not an address: {value!r}")
    if not 0 <= args.decimals <= 36:
        raise UsageError("--decimals must be between 0 and 36")
    unsigned = Confirmation(
        mandate=signed.hash, payee=to_checksum(args.payee),
        network=_one(signed.mandate.networks, args.network, "--network"),
        asset=to_checksum(_one(signed.mandate.assets, args.asset, "--asset")),
        scheme=args.scheme, amount=_atomic(args.amount, args.decimals, "--amount"),
        resource=args.skill if args.skill is not None else args.url,
        nonce=os.urandom(32), valid_before=int(time.time()) + duration(args.valid_for))
    signature = EcdsaSigner(bytes(owner.key)).sign_digest(unsigned.digest(signed.domain))
    confirmation = Confirmation(**{**unsigned.__dict__, "signature": signature})
    text = json.dumps(confirmation.to_json(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json or not args.out:
        print(text, file=out)
    else:
        print(f"confirmation of {confirmation.amount} (atomic) to {confirmation.payee} for "
              f"{confirmation.resource} written to {args.out}; good once, until "
              f"{confirmation.valid_before}", file=out)
    return EXIT_OK


def _list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.client.mandates import spend_dbs_found
    from a402.mandate.spend import SpendStore

    entries = []
    urls = spend_dbs_found(args.spend_db)
    for url in urls or [args.spend_db]:
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
            raise UsageError(f"no spend store at {_shown(url)} (nothing was paid under a "
                             "mandate there)")
        store = SpendStore(url)
        try:
            entries += store.mandates()
        finally:
            store.close()
    now = int(time.time())
    rows = []
    for e in entries:
        m = e.signed.mandate
        state = ("expired" if now >= m.valid_before else
                 "not yet valid" if now < m.valid_after else "valid")
        rows.append({"hash": e.signed.hash_hex, "agent": m.agent, "owner": m.owner,
                     "spent": e.spent_total, "budget": m.budget, "payments": e.reservations,
                     "validBefore": m.valid_before, "state": state})
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
        return EXIT_OK
    print(f"{'mandate':<14} {'agent':<42} {'spent / budget (atomic)':>26} {'payments':>8}  "
          "state", file=out)
    for r in rows:
        spent = f"{r['spent']} / {r['budget']}"
        print(f"{str(r['hash'])[:12]}.. {r['agent']:<42} {spent:>26} {r['payments']:>8}  "
              f"{r['state']}", file=out)
    print(f"{len(rows)} mandate{'s' if len(rows) != 1 else ''} (revocation is not read "
          "here: `a402 mandate verify FILE`)", file=out)
    return EXIT_OK


def _export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.evm.address import address_key
    from a402.mandate.ap2 import export_open

    signed = read_mandate(args.file)
    owner = _key(args.owner_key_file)
    if address_key(owner.address) != address_key(signed.mandate.owner):
        raise UsageError(f"{args.owner_key_file} is {owner.address}, the mandate's owner is "
                         f"{signed.mandate.owner}: only the owner signs its AP2 form")
    try:
        token = export_open(signed.mandate, signed.domain, bytes(owner.key),
                            currency=args.currency, decimals=args.decimals)
    except MandateError as e:
        raise UsageError(f"{e.reason}: {e.message}") from None
    if args.out:
        Path(args.out).write_text(token + "\n")
    if args.json:
        print(json.dumps({"format": "ap2/mandate.payment.open.1", "sdJwt": token,
                          "hash": signed.hash_hex}, indent=2), file=out)
    elif args.out:
        print(f"AP2 open payment mandate (SD-JWT, same limits, hash {signed.hash_hex}) "
              f"written to {args.out}", file=out)
    else:
        print(token, file=out)
    return EXIT_OK


def _import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.crypto.authorization import EcdsaSigner
    from a402.evm.address import address_key
    from a402.mandate.document import describe, sign_mandate

    signed = read_mandate(args.file, registry=args.registry)
    rows = [*describe(signed), ("signature", "valid SD-JWT (ES256K) by the owner")]
    converted = None
    if args.owner_key_file:
        owner = _key(args.owner_key_file)
        if address_key(owner.address) != address_key(signed.mandate.owner):
            raise UsageError(f"{args.owner_key_file} is {owner.address}, the AP2 issuer is "
                             f"{signed.mandate.owner}: only the owner re-signs its limits")
        converted = sign_mandate(signed.mandate, signed.domain,
                                 EcdsaSigner(bytes(owner.key)).sign_digest)
        assert converted.hash == signed.hash  # one mandate, two encodings
        if args.out:
            Path(args.out).write_text(converted.dumps() + "\n")
    if args.json:
        print(json.dumps({**signed.to_json(), "signatureValid": True,
                          "a402": converted.to_json() if converted else None}, indent=2),
              file=out)
        return EXIT_OK
    if converted is not None and not args.out:
        print(converted.dumps(), file=out)
        _rows(rows, err)
        return EXIT_OK
    _rows(rows, out)
    if converted is not None:
        print(f"a402 mandate (same hash) written to {args.out}", file=out)
    else:
        print("the SD-JWT file itself pays: `a402 pay --mandate FILE`", file=out)
    return EXIT_OK


# ---------------------------------------------------------------- a402 audit

EXIT_AUDIT_FAILED: Final = 4


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spend-db", default=DEFAULT_SPEND_DB, metavar="URL",
                        help="the spend store whose evidence chain to check "
                             "(default: %(default)s)")
    parser.add_argument("--mandate", metavar="HASH", help="show only this mandate's records "
                        "(the whole chain is checked all the same)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def stored_mandates(engine: Any) -> dict[str, Any]:
    """hash → the verified document, or the MandateError it fails with (a mandate whose
    stored document was altered is named, not skipped)."""
    from sqlalchemy import select

    from a402.mandate.spend import load_document, mandates

    found: dict[str, Any] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(mandates.c.hash, mandates.c.document)):
            try:
                signed = load_document(row.document)
                if signed.hash_hex != row.hash:
                    raise MandateError("mandate_invalid", "the stored document is another "
                                       "mandate than its hash")
                found[row.hash] = signed
            except MandateError as e:
                found[row.hash] = e
    return found


def signed_reservations(engine: Any) -> list[tuple[str, str, str | None]]:
    """(id, mandate hash, payment_ref) of every reservation the spend store marks signed."""
    from sqlalchemy import select

    from a402.mandate.spend import SIGNED, reservations

    with engine.connect() as conn:
        return [(str(r.id), str(r.mandate), None if r.payment_ref is None
                 else str(r.payment_ref)) for r in conn.execute(
            select(reservations.c.id, reservations.c.mandate, reservations.c.payment_ref)
            .where(reservations.c.state == SIGNED).order_by(reservations.c.created_at))]


def run_audit(args: argparse.Namespace, *, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Print the evidence chain as a table and check every signature in it, offline
    (:mod:`a402.client.audit`). Exit 0 if every record holds, 4 naming the first that
    does not. The default ``--spend-db`` has one file per chain: each one found is
    audited (``--json``: an object of URL → rows)."""
    import io

    from a402.client.mandates import spend_dbs_found

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    urls = spend_dbs_found(args.spend_db)
    if len(urls) <= 1:
        return _audit_store(urls[0] if urls else args.spend_db, args, out, err)
    worst, combined = EXIT_OK, {}
    for url in urls:
        if args.json:
            buffer = io.StringIO()
            code = _audit_store(url, args, buffer, err)
            combined[url] = json.loads(buffer.getvalue() or "[]")
        else:
            print(f"spend store {url}", file=out)
            code = _audit_store(url, args, out, err)
        worst = max(worst, code)
    if args.json:
        print(json.dumps(combined, indent=2), file=out)
    return worst


def _shown(url: str) -> str:
    """A spend store URL as a user reads it (the per-chain default: any chain's folder)."""
    return url.replace("{chain_id}", "<chain id>") + (
        " for any chain" if "{chain_id}" in url else "")


def _audit_store(url: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from a402.client.audit import OUTCOME, SENDING, audit, audit_chain, outcomes_by_payment
    from a402.mandate.evidence import EvidenceLog
    from a402.mandate.spend import SpendStore

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        print(f"a402 audit: nothing to check: no spend store at {_shown(url)} (nothing was "
              "paid under a mandate there)", file=err)
        return EXIT_USAGE
    store = SpendStore(url)
    try:
        log = EvidenceLog(store.engine)
        rows_read = log.rows()
        lines = audit(rows_read, stored_mandates(store.engine))
        chain = audit_chain(lines, rows_read, log.head(), signed_reservations(store.engine))
    finally:
        store.close()
    shown = [x for x in lines if args.mandate is None
             or str(x.record.get("mandate", "")).lower() == args.mandate.lower()]
    # One row per payment: an outcome record (written after the payment's, see
    # a402.mandate.guard) is shown in its payment's row; a payment with none is
    # "unsettled" (sent, and no outcome recorded: its nonce says on-chain if it settled).
    outcomes = outcomes_by_payment(shown)
    rows: list[dict[str, Any]] = []
    for line in shown:
        r = line.record
        if r.get("kind") == OUTCOME and isinstance(r.get("of"), int) \
                and any(x.seq == r["of"] for x in shown):
            continue
        payment = r.get("payment") or {}
        outcome = outcomes.get(line.seq)
        result = r if outcome is None else outcome.record
        settlement = result.get("settlement") or {}
        status = result.get("status")
        if status == SENDING:
            status = "unsettled"
        problems = [f"{code}: {why}" for code, why in line.problems]
        if outcome is not None:
            problems += [f"{outcome.name} {code}: {why}" for code, why in outcome.problems]
        rows.append({
            "seq": line.seq, "mandate": r.get("mandate"), "amount": payment.get("amount"),
            "payee": payment.get("payee"),
            "settlement": settlement.get("transaction") if isinstance(settlement, dict)
            else None,
            "request": (r.get("request") or {}).get("hash"), "result": result.get("result"),
            "status": status, "outcomeRecord": None if outcome is None else outcome.seq,
            "ok": line.ok and (outcome is None or outcome.ok), "problems": problems,
        })
    if args.json:
        print(json.dumps(rows, indent=2), file=out)
    else:
        print(f"{'#':>4}  {'mandate':<14} {'amount':>10}  {'payee':<14} {'settlement':<14} "
              f"{'request':<14} {'result':<14} {'status':<10} check", file=out)
        for row in rows:
            def short(v: object) -> str:
                return f"{str(v)[:12]}.." if v else "-"
            check = "ok" if row["ok"] else "FAILED " + "; ".join(row["problems"])
            print(f"{row['seq']:>4}  {short(row['mandate']):<14} {row['amount'] or '-':>10}  "
                  f"{short(row['payee']):<14} {short(row['settlement']):<14} "
                  f"{short(row['request']):<14} {short(row['result']):<14} "
                  f"{row['status'] or '-'!s:<10} {check}", file=out)
    bad = [x for x in lines if not x.ok]
    if bad:
        first = bad[0]
        print(f"a402 audit: {first.name} fails: "
              + "; ".join(f"{c}: {w}" for c, w in first.problems)
              + (f" ({len(bad)} record(s) fail in all)" if len(bad) > 1 else ""), file=err)
    if chain:
        print("a402 audit: the chain fails: " + "; ".join(f"{c}: {w}" for c, w in chain),
              file=err)
    if bad or chain:
        return EXIT_AUDIT_FAILED
    print(f"a402 audit: {len(lines)} record(s), every signature and link verified "
          f"({len(rows)} payment(s))", file=err)
    return EXIT_OK
