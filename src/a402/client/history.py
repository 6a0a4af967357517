"""``a402 balance``, ``a402 payments`` and ``a402 receipt``: where a key's money is, what
was paid, and whether the chain agrees.

    a402 balance --key-file .a402/client.key [--vault 0xVAULT]   # wallet, pool, channels
    a402 payments                                  # this machine's `a402 pay` records
    a402 payments --facilitator URL --operator-token T --since 2026-12-04 --status confirmed
    a402 payments --gateway URL --operator-token T --payee 0x…
    a402 payments --vault URL --operator-token T --payer 0x…
    a402 receipt 0xTX [--payer 0x… --payee 0x… --amount 1500]    # check a tx's logs
    a402 receipt ID --facilitator URL --operator-token T         # a record, checked on-chain

Each prints a table, or one JSON object with ``--json``. The local records are what
``a402 pay`` appends to ``.a402/payments.jsonl`` (``$A402_HISTORY`` overrides the path):
one JSON line per signed payment with what the server said of it. A record is a claim by
a server, not proof: ``a402 receipt`` reads the transaction itself and checks that its
``Transfer`` and ``AuthorizationUsed`` logs name the recorded payer, payee and amount, on
the recorded token. It only reads; nothing here signs or sends.

Exit codes: 0 done (``receipt``: every check held); 1 the chain or a service failed or
did not answer, or (``receipt``) a check failed; 2 usage; 3 not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from a402.chain.locate import DEFAULT_MANIFEST, ChainFlags
from a402.settings import add_flags, from_args, setting

if TYPE_CHECKING:
    from a402.client.records import Payment

DEFAULT_HISTORY: Final = ".a402/payments.jsonl"
HISTORY_ENV: Final = "A402_HISTORY"
TOKEN_ENV: Final = "A402_OPERATOR_TOKEN"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3

#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC: Final = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
#: keccak256("AuthorizationUsed(address,bytes32)")
AUTHORIZATION_USED_TOPIC: Final = (
    "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5")


class HistoryError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


# ------------------------------------------------------------------- local records


def history_path() -> Path:
    return Path(os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY)


def record_payment(payment: Payment, *, method: str, url: str,
                   path: Path | None = None) -> None:
    """Append what became of one signed payment to the local records (mode 600). A
    failure to write is reported on stderr and never fails the payment itself."""
    upto = payment.offer.view.scheme == "upto"
    # upto: the amount is what the receipt says was charged (what the chain's Transfer
    # shows, which `a402 receipt` checks); the signed maximum is kept beside it.
    charged = payment.charged if upto else None
    record = {
        "source": "client", "id": payment.nonce, "time": time.time(),
        "payer": payment.payer, "payee": payment.pay_to,
        "amount": str(charged if charged is not None else payment.amount),
        "asset": payment.asset, "network": payment.network, "scheme": payment.offer.view.scheme,
        "status": payment.status, "transaction": payment.transaction, "nonce": payment.nonce,
        "validBefore": payment.valid_before, "method": method, "url": url,
        "reason": payment.reason,
    }
    if upto:
        record["maximum"] = str(payment.amount)
    _append(record, path)


def record_vault_call(summary: dict[str, Any], *, payer: str, vault: str, method: str,
                      url: str, path: Path | None = None) -> None:
    """Append a call paid through a vault (``a402 pay --vault``) to the local records:
    its idempotency key is its id, the provider its payee; the payment settles with its
    channel, so ``transaction`` is the channel's settlement once there is one."""
    payment = summary.get("payment") or {}
    _append({
        "source": "client", "id": summary.get("idempotencyKey"), "time": time.time(),
        "payer": payer, "payee": payment.get("provider"), "amount": payment.get("amount"),
        "asset": payment.get("asset"), "network": payment.get("network"), "scheme": "a402",
        "status": summary.get("outcome"), "transaction": payment.get("transaction"),
        "channelId": payment.get("channelId"), "requestId": payment.get("requestId"),
        "vault": vault, "method": method, "url": url, "reason": summary.get("reason"),
    }, path)


def _append(record: dict[str, Any], path: Path | None) -> None:
    target = path or history_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    except OSError as e:
        print(f"a402: the payment was not recorded in {target}: {e.strerror or e}",
              file=sys.stderr)


def read_history(path: Path) -> list[dict[str, Any]]:
    """The local records, newest first (a torn last line, from a crash mid-write, is
    skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HistoryError(EXIT_USAGE, "usage", f"cannot read {path}: {e.strerror or e}"
                           ) from None
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out[::-1]


# ------------------------------------------------------------------------ parsers


@dataclass(frozen=True, kw_only=True)
class Source:
    """Whose records: this machine's (default), or a service's operator API."""

    facilitator: str | None = setting(None, metavar="URL",
                                      help="a facilitator's journal (its /operator/payments)")
    gateway: str | None = setting(None, metavar="URL",
                                  help="a gateway's paid requests (its /operator/payments)")
    vault: str | None = setting(None, metavar="URL", help="a vault's calls (its "
                                "/operator/payments)")
    operator_token: str | None = setting(
        None, metavar="TOKEN", help=f"the service's operator token (default: ${TOKEN_ENV})")
    history: str | None = setting(None, metavar="FILE", help=f"the local records (default: "
                                  f"${HISTORY_ENV} or {DEFAULT_HISTORY})")
    timeout: float = setting(10.0, help="seconds to wait for a service (default: %(default)s)")
    json: bool = setting(False, help="print one JSON object instead of a table")


@dataclass(frozen=True, kw_only=True)
class Filters:
    """Which payments."""

    since: str | None = setting(None, metavar="WHEN", help="from this time on (unix seconds, "
                                "or ISO 8601 such as 2026-12-04T10:00, UTC if no zone)")
    until: str | None = setting(None, metavar="WHEN", help="before this time")
    payer: str | None = setting(None, metavar="ADDRESS", help="paid by this address")
    payee: str | None = setting(None, metavar="ADDRESS", help="paid to this address")
    status: str | None = setting(None, help="with this status (client: settled, unconfirmed, "
                                 "rejected, unknown; facilitator: confirmed, submitted, "
                                 "failed; gateway: settled, pending, failed, rejected; vault: "
                                 "paid, failed, …)")
    limit: int = setting(50, help="at most this many, newest first (default: %(default)s)")


@dataclass(frozen=True, kw_only=True)
class Expect:
    """What ``receipt TX`` checks when no record names it (any subset)."""

    payer: str | None = setting(None, metavar="ADDRESS", help="the payer the logs must name")
    payee: str | None = setting(None, metavar="ADDRESS", help="the payee the logs must name")
    amount: str | None = setting(None, metavar="UNITS",
                                 help="the amount the Transfer must carry (atomic units)")


@dataclass(frozen=True, kw_only=True)
class Units:
    """How amounts are shown: in the manifest token's units, else in atomic units."""

    manifest: str = setting(DEFAULT_MANIFEST, metavar="PATH",
                            help="show amounts of this manifest's token in its units (default: "
                                 "%(default)s, if it exists); others stay atomic")


def add_payments_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, Source, "source")
    add_flags(parser, Filters, "filters")
    add_flags(parser, Units, "units")


def add_receipt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", metavar="TX|ID",
                        help="a transaction hash, or a payment's id in the records (a "
                             "local record's nonce, a journal key, a gateway request id, a "
                             "vault idempotency key)")
    add_flags(parser, Source, "source")
    add_flags(parser, Expect, "expect")
    add_flags(parser, ChainFlags, "chain")


def add_balance_arguments(parser: argparse.ArgumentParser) -> None:
    from a402.client.account_command import ChannelFlags, Party

    add_flags(parser, Party, "account")
    parser.add_argument("--vault", action="append", default=[], metavar="ADDRESS",
                        help="also show the pool balance with this vault (repeatable)")
    add_flags(parser, ChainFlags, "chain")
    add_flags(parser, ChannelFlags, "search")


# ------------------------------------------------------------------------ payments


def run_payments(args: argparse.Namespace, *, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    return _guarded("a402 payments", args, _payments, out, err)


def run_receipt(args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    return _guarded("a402 receipt", args, _receipt, out, err)


def _guarded(prog: str, args: argparse.Namespace, action: Any, out: TextIO | None,
             err: TextIO | None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        return int(action(args, out))
    except HistoryError as e:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "reason": e.reason, "message": e.message}), file=out)
        # These commands only read: whatever failed, no money moved; said first.
        message = e.message if e.message.startswith("nothing") \
            else f"nothing moved ({e.reason}): {e.message}"
        print(f"{prog}: {message}", file=err)
        return e.code


def _when(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(EXIT_USAGE, "usage", f"{flag}: not unix seconds or ISO 8601: "
                                                f"{text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _filter(args: argparse.Namespace) -> Any:
    from a402.observe import MAX_LIMIT, PaymentFilter

    flags = from_args(Filters, args)
    if not 1 <= flags.limit <= MAX_LIMIT:
        raise HistoryError(EXIT_USAGE, "usage", f"--limit must be in 1..{MAX_LIMIT}")
    return PaymentFilter(_when(flags.since, "--since"), _when(flags.until, "--until"),
                         flags.payer.lower() if flags.payer else None,
                         flags.payee.lower() if flags.payee else None, flags.status,
                         flags.limit)


def _service(source: Source) -> tuple[str, str] | None:
    named = [(kind, url) for kind, url in (("facilitator", source.facilitator),
                                           ("gateway", source.gateway),
                                           ("vault", source.vault)) if url]
    if len(named) > 1:
        raise HistoryError(EXIT_USAGE, "usage", "give one of --facilitator, --gateway, --vault")
    return named[0] if named else None


def _operator_get(source: Source, base: str, path: str,
                  params: dict[str, str] | None = None) -> dict[str, Any] | None:
    """GET an operator endpoint; None for a 404 ``not_found`` (no such record)."""
    import httpx

    token = source.operator_token or os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = base.rstrip("/") + path
    try:
        response = httpx.get(url, params=params, headers=headers, timeout=source.timeout)
    except httpx.InvalidURL as e:
        raise HistoryError(EXIT_USAGE, "usage", f"invalid URL {base!r}: {e}") from None
    except httpx.HTTPError as e:
        raise HistoryError(EXIT_FAILED, "service_unavailable",
                           f"could not reach {base} ({type(e).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    reason = body.get("error") if isinstance(body, dict) else None
    if response.status_code == 404 and reason == "not_found":
        return None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else None
        hint = " (give --operator-token)" if reason == "operator_token_required" else ""
        raise HistoryError(EXIT_USAGE if response.status_code in (400, 401, 404) else
                           EXIT_FAILED, str(reason or "service_error"),
                           f"{url}: HTTP {response.status_code} {reason or ''}: "
                           f"{message or response.text[:200]}{hint}")
    return body


def _payments(args: argparse.Namespace, out: TextIO) -> int:
    source = from_args(Source, args)
    wanted = _filter(args)
    service = _service(source)
    if service is None:
        path = Path(source.history) if source.history else history_path()
        records = [r for r in read_history(path) if wanted.admits(r)][:wanted.limit]
        where = str(path)
    else:
        body = _operator_get(source, service[1], "/operator/payments", wanted.to_query())
        assert body is not None
        records = list(body.get("payments") or [])
        where = f"{service[0]} {service[1]}"
    if source.json:
        print(json.dumps({"source": where, "payments": records}, indent=2), file=out)
        return EXIT_OK
    token = _manifest_token(from_args(Units, args).manifest)
    print(f"{len(records)} payment{'' if len(records) == 1 else 's'} from {where}, newest "
          "first", file=out)
    if records:
        print(payments_table(records, token), file=out)
    return EXIT_OK


def _manifest_token(path: str) -> tuple[str, str, int] | None:
    """(address, symbol, decimals) of the manifest's token, or None if there is none."""
    from a402.chain.locate import ChainNotFound, load_manifest

    if not Path(path).exists():
        return None
    try:
        token = load_manifest(path).token
    except ChainNotFound:
        return None
    return token.address.lower(), token.symbol, token.decimals


def _amount(record: dict[str, Any], token: tuple[str, str, int] | None) -> str:
    """An amount as a person reads it: in the token's units if it is the manifest's
    token (every decimal, never rounded), else in atomic units, said so."""
    from decimal import Decimal

    amount = record.get("amount")
    if amount is None:
        return "unknown"
    asset = str(record.get("asset") or "").lower()
    if token is not None and asset == token[0]:
        return f"{Decimal(int(amount)).scaleb(-token[2]):.{token[2]}f} {token[1]}"
    return f"{amount} units"


def payments_table(records: list[dict[str, Any]],
                   token: tuple[str, str, int] | None = None) -> str:
    rows = [("TIME (UTC)", "STATUS", "AMOUNT", "PAYER", "PAYEE", "TRANSACTION", "ID")]
    for r in records:
        when = ("unknown" if not r.get("time") else datetime.fromtimestamp(
            float(r["time"]), UTC).strftime("%Y-%m-%d %H:%M:%S"))
        rows.append((when, str(r.get("status") or ""), _amount(r, token),
                     str(r.get("payer") or "-"), str(r.get("payee") or "-"),
                     str(r.get("transaction") or "-"), str(r.get("id") or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i != 2 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)).rstrip() for row in rows)


# ------------------------------------------------------------------------- receipt


def _is_tx_hash(text: str) -> bool:
    return (len(text) == 66 and text[:2] in ("0x", "0X")
            and all(c in "0123456789abcdefABCDEF" for c in text[2:]))


def _find_record(source: Source, what: str) -> dict[str, Any] | None:
    service = _service(source)
    if service is not None:
        body = _operator_get(source, service[1], f"/operator/payments/{what}")
        return None if body is None else dict(body["payment"])
    path = Path(source.history) if source.history else history_path()
    wanted = what.lower()
    return next((r for r in read_history(path)
                 if wanted in (str(r.get("id", "")).lower(),
                               str(r.get("transaction") or "").lower())), None)


def _receipt(args: argparse.Namespace, out: TextIO) -> int:
    source = from_args(Source, args)
    expect = from_args(Expect, args)
    record = _find_record(source, args.what)
    if record is None and not _is_tx_hash(args.what):
        raise HistoryError(EXIT_NOT_FOUND, "not_found",
                           f"no payment {args.what!r} in the records asked")
    tx = (record or {}).get("transaction") or (args.what if _is_tx_hash(args.what) else None)
    payer = expect.payer or (record or {}).get("payer")
    payee = expect.payee or (record or {}).get("payee")
    amount = expect.amount or (record or {}).get("amount")
    asset = (record or {}).get("asset")
    nonce = _nonce_of(record)
    channel = (record or {}).get("scheme") == "a402"
    if tx is None:
        status = (record or {}).get("status")
        if channel:
            raise HistoryError(EXIT_NOT_FOUND, "no_transaction",
                               f"payment {args.what} (status {status}) was made inside "
                               f"channel {record.get('channelId') if record else None}: it "
                               "settles with the channel, which has no transaction yet; "
                               "nothing to check on-chain")
        raise HistoryError(EXIT_NOT_FOUND, "no_transaction",
                           f"payment {args.what} has no transaction (status {status}): "
                           "nothing to check on-chain")
    onchain = _read_tx(args, tx)
    if channel:  # one settlement for many payments: no Transfer of this one to match
        checks = check_transfer(onchain, payer=None, payee=None, amount=None, asset=None,
                                nonce=None)[:1]
    else:
        checks = check_transfer(onchain, payer=payer, payee=payee, amount=amount,
                                asset=asset, nonce=nonce)
    ok = all(c["ok"] for c in checks)
    data = {"ok": ok, "transaction": tx, "record": record, "onChain": onchain,
            "checks": checks}
    note = ("a channel payment: this transaction settles the whole channel at once, so "
            "only its success is checked, not a Transfer of this payment" if channel else None)
    if note:
        data["note"] = note
    if source.json:
        print(json.dumps(data, indent=2, default=str), file=out)
    else:
        head = ("the chain confirms this payment" if ok
                else "the chain does NOT confirm this payment as recorded")
        print(f"{head}: transaction {tx} (block {onchain['block']}, "
              f"{'succeeded' if onchain['status'] == 1 else 'REVERTED'})", file=out)
        if note:
            print(f"note: {note}", file=out)
        if record:
            print(f"record: {record.get('source')} {record.get('id')} status "
                  f"{record.get('status')} amount {record.get('amount')} "
                  f"{record.get('payer')} -> {record.get('payee')}", file=out)
        for t in onchain["transfers"]:
            print(f"  Transfer {t['amount']} {t['from']} -> {t['to']} (token {t['token']})",
                  file=out)
        for a in onchain["authorizations"]:
            print(f"  AuthorizationUsed {a['authorizer']} nonce {a['nonce']}", file=out)
        for c in checks:
            print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}", file=out)
    return EXIT_OK if ok else EXIT_FAILED


def _nonce_of(record: dict[str, Any] | None) -> str | None:
    """The EIP-3009 nonce a record carries (a client's or a gateway's), to check against
    the token's AuthorizationUsed. An ``upto`` payment's is a Permit2 nonce (the
    ``permit2:`` key), which emits no such event: not checked (its Transfer is)."""
    nonce = None if record is None else record.get("nonce")
    if not isinstance(nonce, str) or nonce.startswith("permit2:") \
            or (record or {}).get("scheme") == "upto":
        return None
    return nonce


def _read_tx(args: argparse.Namespace, tx: str) -> dict[str, Any]:
    from web3.exceptions import TransactionNotFound

    from a402.chain.locate import ChainNotFound, ChainUnreachable, connect_checked, load_manifest
    from a402.chain.rpc import ChainUnavailable, RpcError, node_errors

    flags = from_args(ChainFlags, args)
    try:
        manifest = None if flags.rpc else load_manifest(flags.manifest)
        url = flags.rpc or (manifest.rpc_url if manifest else None)
        if not url:
            raise ChainNotFound(f"{flags.manifest} names no rpcUrl; give --rpc")
        chain = connect_checked(url, manifest)
        with node_errors("eth_getTransactionReceipt"):
            receipt = chain.w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
    except ChainUnreachable as e:
        raise HistoryError(EXIT_FAILED, "chain_unavailable", str(e)) from None
    except ChainNotFound as e:
        raise HistoryError(EXIT_USAGE, "no_deployment", str(e)) from None
    except (ChainUnavailable, RpcError) as e:
        raise HistoryError(EXIT_FAILED, "chain_unavailable",
                           f"the chain did not answer ({e})") from None
    except TransactionNotFound:
        raise HistoryError(EXIT_NOT_FOUND, "tx_not_found",
                           f"no mined transaction {tx} on {url}: not (yet) on this "
                           "chain") from None
    return decode_logs(receipt)


def decode_logs(receipt: Any) -> dict[str, Any]:
    """The Transfer and AuthorizationUsed logs of a receipt, decoded by hand (any
    ERC-20 / EIP-3009 token emits these two events with these topics)."""
    from eth_utils import to_checksum_address

    def hexed(value: Any) -> str:
        return value.hex() if isinstance(value, bytes | bytearray) else str(value)

    def topic(value: Any) -> str:
        text = hexed(value).lower()
        return text if text.startswith("0x") else "0x" + text

    transfers, authorizations = [], []
    for log in receipt["logs"]:
        topics = [topic(t) for t in log["topics"]]
        if not topics:
            continue
        token = to_checksum_address(log["address"])
        if topics[0] == TRANSFER_TOPIC and len(topics) == 3:
            data = topic(log["data"])
            transfers.append({"token": token,
                              "from": to_checksum_address("0x" + topics[1][-40:]),
                              "to": to_checksum_address("0x" + topics[2][-40:]),
                              "amount": str(int(data, 16) if data != "0x" else 0)})
        elif topics[0] == AUTHORIZATION_USED_TOPIC and len(topics) == 3:
            authorizations.append({"token": token,
                                   "authorizer": to_checksum_address("0x" + topics[1][-40:]),
                                   "nonce": topics[2]})
    return {"transaction": topic(receipt["transactionHash"]),
            "block": int(receipt["blockNumber"]), "status": int(receipt["status"]),
            "transfers": transfers, "authorizations": authorizations}


def check_transfer(onchain: dict[str, Any], *, payer: str | None, payee: str | None,
                   amount: str | int | None, asset: str | None, nonce: str | None
                   ) -> list[dict[str, Any]]:
    """Does one Transfer in the logs carry exactly the recorded payer, payee, amount and
    token, and (given a nonce) did the payer's authorization get used? Each check says
    what it compared; an unknown field is not checked (and says so)."""
    checks = [{"check": "transaction succeeded", "ok": onchain["status"] == 1,
               "detail": f"status {onchain['status']}"}]

    def same(a: Any, b: Any) -> bool:
        return a is None or str(a).lower() == str(b).lower()

    match = [t for t in onchain["transfers"]
             if same(payer, t["from"]) and same(payee, t["to"]) and same(asset, t["token"])
             and (amount is None or int(amount) == int(t["amount"]))]
    described = ", ".join(f"{k} {v}" for k, v in (("from", payer), ("to", payee),
                                                  ("amount", amount), ("token", asset))
                          if v is not None) or "anything (nothing to compare)"
    checks.append({"check": "a Transfer matches the record", "ok": bool(match),
                   "detail": f"looked for {described}; found {len(onchain['transfers'])} "
                             f"Transfer log(s), {len(match)} matching"})
    if nonce is not None:
        used = [a for a in onchain["authorizations"]
                if same(payer, a["authorizer"]) and str(a["nonce"]).lower() == nonce.lower()]
        checks.append({"check": "the payer's authorization was used", "ok": bool(used),
                       "detail": f"AuthorizationUsed({payer}, {nonce})"})
    return checks


# ------------------------------------------------------------------------- balance


def run_balance(args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    from a402.client.account_command import _run

    return _run("a402 balance", args, _balance, out, err)


def _balance(context: Any) -> int:
    """The key's wallet (token and ETH), its pool balances with the vaults named, its
    channels' escrow and what the ASCManager owes it: all from the chain. A live channel
    as client counts at its on-chain deposit, which is only an upper bound of the client's
    share: what it paid inside the channel is off-chain (the vault and the provider know
    it, the chain does not) and moves at the close. The text says so whenever such a
    channel is counted (``channelsCountedAtDeposit`` in JSON); the amounts keep their
    meaning (on-chain figures)."""
    from a402.asc_manager import OnChainStatus
    from a402.chain.deploy import token_balance
    from a402.client.account_command import EXIT_USAGE as USAGE
    from a402.client.account_command import CommandError, _chain_step
    from a402.client.channels import list_channels
    from a402.client.payouts import checked_address, owed

    token, manager, address = context.token, context.manager, context.address
    try:
        vaults = [checked_address(v, "--vault") for v in context.args.vault]
    except ValueError as e:
        raise CommandError(USAGE, "usage", f"nothing moved: {e}") from None

    def read() -> tuple[int, int, list[tuple[str, int]], list[Any], int]:
        chain = manager.chain
        return (token_balance(chain, token.address, address),
                int(chain.w3.eth.get_balance(address)),
                [(v, manager.pooled(v, address)) for v in vaults],
                list_channels(manager, address, from_block=context.args.from_block),
                owed(manager, address))

    wallet, eth, pools, channels, due = _chain_step(context, read, sends=False)
    live = [c for c in channels if c.status in (OnChainStatus.OPEN, OnChainStatus.CLOSING)]
    escrowed = sum(c.terms.deposit for c in live if c.role == "client")
    pooled = sum(amount for _, amount in pools)
    total = wallet + pooled + escrowed + due
    lines = [f"{token.show(total)} in all for {address}: {token.show(wallet)} in the "
             f"wallet, {token.show(pooled)} pooled, {token.show(escrowed)} escrowed in "
             f"channels as client, {token.show(due)} owed by the ASCManager"]
    as_client = sum(1 for c in live if c.role == "client")
    if as_client:  # the chain knows the deposit, not what was paid inside the channel
        lines.append(f"(the {as_client} live channel{'s' if as_client > 1 else ''} as "
                     "client counted at the on-chain deposit: what was already paid inside "
                     f"{'them' if as_client > 1 else 'it'}, off-chain, is the provider's "
                     "and leaves only at the close, so less of it may be yours)")
    lines += [f"on {manager.chain.network}, ASCManager {manager.address}", "",
              f"{'WHERE':<52} {'AMOUNT':>22}",
              f"{'wallet ' + token.symbol:<52} {token.show(wallet):>22}",
              f"{'wallet ETH (gas)':<52} {_eth(eth):>22}"]
    lines += [f"{'pool with vault ' + v:<52} {token.show(a):>22}" for v, a in pools]
    lines += [f"{'channel ' + c.id_hex[:18] + '… ' + c.role + ' ' + c.status.name.lower():<52}"
              f" {token.show(c.terms.deposit):>22}" for c in live]
    lines.append(f"{'owed payouts (a402 payouts withdraw)':<52} {token.show(due):>22}")
    context.say(lines, {
        **context.where, "address": address, "wallet": token.plain(wallet),
        "walletAtomic": str(wallet), "eth": _eth(eth, unit=False), "ethWei": str(eth),
        "pools": [{"vault": v, "pooled": token.plain(a), "pooledAtomic": str(a)}
                  for v, a in pools],
        "escrowed": token.plain(escrowed), "escrowedAtomic": str(escrowed),
        "owed": token.plain(due), "owedAtomic": str(due), "total": token.plain(total),
        "channelsCountedAtDeposit": bool(as_client),
        "channels": [c.to_json(token.plain) for c in channels]})
    return EXIT_OK


def _eth(wei: int, *, unit: bool = True) -> str:
    from decimal import Decimal

    text = f"{Decimal(wei).scaleb(-18):.18f}"
    return f"{text} ETH" if unit else text
