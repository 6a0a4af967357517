"""``a402 vault deposit|balance|statement|withdraw|settle-now|status``: a participant's and
the operator's commands for a vault in vault mode (``a402 vault --mode vault``).

    a402 vault deposit --rpc URL --vault-address V --key-file K --amount 5000000
                                          # on-chain, into the A402Vault of the vault V
    a402 vault deposit --pull --rpc URL --vault-address V --key-file K --amount 5000000
                                          # pulled by the next settlement: no deposit tx
    a402 vault deposit --transfer --rpc URL --vault-address V --key-file K --amount 5000000
                                          # a plain token transfer: the least gas
    a402 vault balance --key-file K                                # signed GET to the vault
    a402 vault statement --key-file K --out statement.json         # what the escape hatch takes
    a402 vault withdraw --key-file K --amount 2000000              # queued for the next batch
    a402 vault settle-now --key-file OPERATOR.key                  # operator: settle the queue now
    a402 vault status --key-file OPERATOR.key                      # operator: the whole vault
    a402 vault exit --key-file K --rpc URL --statement statement.json   # no vault needed
                    [--prove-transfer TX ...]     # your plain transfers, paid back if uncounted

Amounts are in the token's atomic units. Each prints a table (``--json``: one JSON object).
The first line says where the money stands. Calls to the vault are signed by the key
(:mod:`a402.wire.vault_api`); ``deposit`` and ``exit`` talk to the chain only (``exit`` is
the escape hatch with a statement file: run it again after the dispute window);
``deposit --pull`` asks the vault for a pull, checks the statement counting it, saves it with
``--out``, then signs the token's EIP-3009 authorization for it (no transaction);
``deposit --transfer`` sends the token to the A402Vault with a plain ``transfer`` (no
approval), which the vault reads from the chain and credits to the key's account. Exit
codes: 0 done, 1 the vault or the chain refused or failed, 2 usage, 3 nothing signed yet
(no statement), 4 nothing to do now (dispute window open, already left).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from a402.settings import add_flags, from_args, setting

ACTIONS = ("deposit", "balance", "statement", "withdraw", "settle-now", "status", "exit")


@dataclass(frozen=True, kw_only=True)
class ParticipantFlags:
    """Which vault, whose key, how to print."""

    vault: str = setting("http://127.0.0.1:4030", metavar="URL",
                         help="the vault's API (default: %(default)s)")
    key_file: str = setting(metavar="F", help="file holding the key (hex): the participant's, "
                                              "or the operator's for settle-now and status")
    json: bool = setting(False, help="print one JSON object instead of tables")
    amount: int | None = setting(None, metavar="ATOMIC",
                                 help="deposit, withdraw: how much, in atomic units")
    idempotency_key: str | None = setting(
        None, metavar="KEY", help="withdraw: reuse the key a withdrawal printed or whose "
                                  "answer was lost (the vault queues it once); default: new")
    rpc: str | None = setting(None, metavar="URL",
                              help="deposit: the chain's JSON-RPC URL")
    beneficiary: str | None = setting(None, metavar="ADDRESS",
                                      help="deposit: credit this participant (default: the key)")
    pull: bool = setting(False, help="deposit: no transaction and no gas; the vault's next "
                                     "settlement pulls the amount from the key's wallet (the "
                                     "key signs an EIP-3009 authorization)")
    transfer: bool = setting(False, help="deposit: a plain token transfer to the A402Vault "
                                         "(no approval; the least gas), credited to the key's "
                                         "account once the vault's next settlement anchors it")
    out: str | None = setting(None, metavar="FILE",
                              help="statement, deposit --pull: also write the statement to "
                                   "FILE (keep it: it is your exit)")
    statement: str | None = setting(None, metavar="FILE",
                                    help="exit: the statement file `statement --out` wrote")
    prove_transfer: tuple[str, ...] = setting(
        (), metavar="TX", help="exit: a transaction of a plain transfer of yours to the "
                               "A402Vault, proven on-chain first so that the exit pays it back "
                               "if your statement does not count it (repeat for each; prove "
                               "them all, the counted ones too)")
    gas_key_file: str | None = setting(None, metavar="F",
                                       help="exit: the account that sends and pays the gas "
                                            "(default: --key-file); the participant's key "
                                            "signs its exit order")
    a402_vault: str | None = setting(None, metavar="ADDRESS",
                                     help="exit: the A402Vault (default: the statement "
                                          "file's, else the vault's GET /v1/info)")
    vault_address: str | None = setting(
        None, metavar="ADDRESS",
        help="deposit, statement: the vault's published address (its enclave's key, checked "
             "against its attestation out of band); deposit: the vault's GET /v1/info and its "
             "A402Vault must name it, and the A402Vault must be one this release created, "
             "before anything is signed or sent (read through --rpc: use a node you trust); "
             "statement: the statement must be signed by it")
    trust_vault_info: bool = setting(False, help="deposit: take the A402Vault and the key the "
                                                 "vault's GET /v1/info names unchecked")


class CommandError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def build_parser() -> argparse.ArgumentParser:
    from a402.failure import MoneyFirstParser

    parser = MoneyFirstParser(
        prog="a402 vault ACTION",
        description="a participant's and the operator's commands for a vault in vault mode")
    parser.state = "nothing was moved"  # refused at its command line: it ran nothing
    parser.add_argument("action", choices=ACTIONS)
    add_flags(parser, ParticipantFlags, "participant")
    return parser


def main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    flags = from_args(ParticipantFlags, args)
    try:
        return _ACTIONS[args.action](flags, out, err)
    except CommandError as e:
        if flags.json:
            print(json.dumps({"ok": False, "reason": e.reason, "message": e.message}), file=out)
        print(f"a402 vault {args.action}: {e.message}", file=err)
        return e.code


# ------------------------------------------------------------------------ plumbing


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _Vault:
    """Signed calls to the vault with one key."""

    def __init__(self, flags: ParticipantFlags, *, timeout: float = 120.0) -> None:
        from a402.keys import load_key_file

        try:
            self.key = load_key_file(flags.key_file)
        except (OSError, ValueError) as e:
            raise CommandError(2, "usage", f"nothing moved: {e}") from None
        self.http = httpx.Client(base_url=flags.vault.rstrip("/"), timeout=timeout,
                                 trust_env=False)
        self.info = self._send("GET", "/v1/info", signed=False)
        if self.info.get("mode") != "vault":
            raise CommandError(2, "not_vault_mode",
                               f"nothing moved: {flags.vault} is not a vault in vault mode")

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              signed: bool = True) -> Any:
        from a402.wire import vault_api as api

        raw = b"" if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if raw else {}
        if signed:
            account = api.vault_account(self.info["network"], self.info["vault"])
            headers.update(api.sign_request(self.key, account, method, path, raw,
                                            life=self.info["life"]))
        try:
            response = self.http.request(method, path, content=raw, headers=headers)
        except httpx.HTTPError as e:
            raise CommandError(1, "vault_unreachable",
                               f"nothing moved: the vault did not answer ({e})") from None
        try:
            data = response.json()
        except ValueError:
            data = {"error": "bad_answer", "message": response.text[:200]}
        if response.status_code >= 400:
            code = 3 if response.status_code == 404 else 1
            raise CommandError(code, str(data.get("error")),
                               f"nothing moved: the vault refused ({response.status_code} "
                               f"{data.get('error')}: {data.get('message', '')})")
        return data

    def get(self, path: str) -> Any:
        return self._send("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", path, body or {})


def _say(flags: ParticipantFlags, out: TextIO, text: str, data: Any) -> int:
    print(json.dumps(data, indent=2) if flags.json else text, file=out)
    return 0


class Progress:
    """A line on ``err`` that counts seconds while a slow call runs, shown only once it has
    taken more than ``after`` seconds (a fast settlement prints nothing)."""

    def __init__(self, err: TextIO, what: str, *, after: float = 1.0) -> None:
        self.err, self.what, self.after = err, what, after
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.shown = False

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._done.set()
        self._thread.join()
        if self.shown:
            print(f"\r{self.what}: done in {time.monotonic() - self._start:.1f}s", file=self.err)

    def _run(self) -> None:
        if self._done.wait(self.after):
            return
        spinner = "|/-\\"
        n = 0
        while not self._done.wait(0.25):
            self.shown = True
            print(f"\r{self.what} {spinner[n % 4]} {time.monotonic() - self._start:.1f}s",
                  end="", file=self.err, flush=True)
            n += 1


# ------------------------------------------------------------------------ actions


def _deposit(flags: ParticipantFlags, out: TextIO, err: TextIO) -> int:
    from a402.chain.node import connect
    from a402.chain.tx import TransactionFailed, contract_at, transact
    from a402.evm.address import to_checksum
    from a402.vault_contract import A402Vault

    if not flags.amount or flags.amount <= 0:
        raise CommandError(2, "usage", "nothing moved: deposit needs --amount (atomic units)")
    if not flags.rpc:
        raise CommandError(2, "usage", "nothing moved: deposit needs --rpc (it is on-chain)")
    vault = _Vault(flags)
    key = vault.key
    try:
        participant = to_checksum(flags.beneficiary or key.address)
    except ValueError as e:
        raise CommandError(2, "usage", f"nothing moved: --beneficiary: {e}") from None
    if flags.pull and flags.transfer:
        raise CommandError(2, "usage", "nothing moved: --pull or --transfer, not both")
    if (flags.pull or flags.transfer) and participant != to_checksum(key.address):
        raise CommandError(2, "usage", "nothing moved: a pull or a transfer credits the key's "
                           "own account (no --beneficiary)")
    if not (flags.vault_address or flags.trust_vault_info):
        raise CommandError(2, "usage", "nothing moved: give --vault-address (the vault's "
                           "published address) so that the A402Vault its info names can be "
                           "checked before anything is signed, or --trust-vault-info to take "
                           "it unchecked")
    from web3.exceptions import Web3Exception

    chain = connect(flags.rpc, [key.key])
    named = vault.info.get("a402Vault")
    try:
        contract = A402Vault(chain, str(named))
        if flags.vault_address:
            _check_vault(flags.vault_address, vault.info, contract)
    except (Web3Exception, ValueError) as e:  # not a contract with A402Vault's getters
        raise CommandError(1, "unexpected_vault", f"nothing moved: the vault names {named} "
                           f"as its A402Vault, which does not answer as one ({e}); nothing "
                           "was signed") from None
    token = contract_at(chain, "TestUSDC", contract.token)
    if flags.pull:
        return _pull(flags, vault, contract, out)
    try:
        with Progress(err, "depositing"):
            if flags.transfer:
                receipt = transact(chain, key, token.functions.transfer(contract.address,
                                                                        flags.amount))
            else:
                transact(chain, key, token.functions.approve(contract.address, flags.amount))
                receipt = contract.deposit(key, participant, flags.amount)
    except TransactionFailed as e:
        raise CommandError(1, "reverted", f"nothing moved: the deposit reverted ({e})") from None
    tx = _hex(receipt["transactionHash"])
    data = {"ok": True, "moved": True, "participant": participant, "amount": str(flags.amount),
            "a402Vault": contract.address, "transaction": tx,
            "route": "transfer" if flags.transfer else "deposit"}
    when = ("read by the vault from the chain and unconfirmed until its next settlement "
            "anchors it, then free; if the vault goes dark first, an exit with a statement "
            "of this vault pays it back with a receipt proof (A402Vault.proveTransfer; keep "
            "one: `a402 vault statement --out FILE`, which a first deposit gets once the "
            "vault has read it)" if flags.transfer
            else "unconfirmed until the vault's next settlement, then free")
    return _say(flags, out, f"{flags.amount} deposited into A402Vault {contract.address} for "
                f"{participant}: {when}\n"
                + table(("participant", "amount", "transaction"),
                        [(participant, flags.amount, tx)]), data)


#: The latest deadline ``deposit --pull`` signs an authorization for (review s16: a host
#: must not have authorizations that hold for ever; the vault asks for a day). Checked
#: against this machine's clock or the chain's, whichever is ahead (the host's enclave
#: reads the clock its host gives it: the participant's own check is the one that holds).
MAX_PULL_LIFETIME = 7 * 86_400


def _utc(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _check_vault(expected: str, info: dict[str, Any], contract: Any) -> None:
    """The vault's ``GET /v1/info`` is its host's word, unsigned (review s16-3): a host could
    name an A402Vault of its own whose key is a plain key it holds, then sign a statement
    for a pull with it and take the money pulled. So before a deposit signs or sends
    anything: the info names the vault the participant expects, the A402Vault it names
    pays only on that key's signatures, and that A402Vault was created by this release's
    constructor (its address is the CREATE2 address of that creation with the salt the
    info publishes: :meth:`~a402.vault_contract.A402Vault.created_with`) — neither a
    look-alike with other rules nor this code over storage a constructor of the host's
    preset (review s16-rev2-1). The chain is read through ``--rpc``: the node must be one
    the participant trusts."""
    want = expected.lower()
    named = str(info.get("vault", "")).lower()
    if named != want:
        raise CommandError(1, "unexpected_vault", f"nothing moved: the vault names its key "
                           f"{named}, not the expected {expected}; nothing was signed")
    if contract.vault_signer.lower() != want:
        raise CommandError(1, "unexpected_vault", "nothing moved: the A402Vault at "
                           f"{contract.address} pays on {contract.vault_signer}'s signatures, "
                           f"not the vault's {expected}; nothing was signed")
    try:
        salt = bytes.fromhex(str(info.get("a402VaultSalt", "")).removeprefix("0x"))
    except ValueError:
        salt = b""
    if not contract.created_with(salt):
        raise CommandError(1, "unexpected_vault", "nothing moved: the contract at "
                           f"{contract.address} is not an A402Vault this release created with "
                           "the salt the vault publishes (or it publishes none); nothing was "
                           "signed")


def _pull(flags: ParticipantFlags, vault: _Vault, contract: Any, out: TextIO) -> int:
    """``deposit --pull``: ask for the pull, check the statement counting it (signed by the
    vault's enclave key for this participant, this pull and amount, in the vault's ledger
    life) and keep it, and only then sign the token's EIP-3009 authorization for it (no
    transaction: the key needs no gas): no pull can take the money without a statement that
    counts it in the participant's hands."""
    from a402.crypto.authorization import recover_signer
    from a402.crypto.vault_messages import statement_digest
    from a402.vault.mode import statement_from_json

    key, amount = vault.key, int(flags.amount or 0)
    asked = vault.post("/v1/vault/pull", {"amount": str(amount)})
    try:
        pull, deadline = int(asked["pull"]), int(asked["deadline"])
        clock = max(time.time(), int(contract.chain.w3.eth.get_block("latest")["timestamp"]))
        if not clock < deadline <= clock + MAX_PULL_LIFETIME:
            raise CommandError(1, "bad_deadline", "nothing moved: the vault asks for an "
                               f"authorization until {_utc(deadline)}, not within "
                               f"{MAX_PULL_LIFETIME // 86_400} days from now; nothing was "
                               "signed")
        signed = statement_from_json(asked["statement"])
    except (KeyError, TypeError, ValueError) as e:
        raise CommandError(1, "bad_answer", f"nothing moved: the vault's answer to the pull "
                           f"is malformed ({e!r}); nothing was signed") from None
    st = signed.statement
    ledger = bytes.fromhex(str(vault.info["ledger"]).removeprefix("0x"))
    pinned = contract.ledger()
    if pinned != bytes(16) and pinned != ledger:  # a second instance of the vault's enclave
        raise CommandError(1, "wrong_ledger", "nothing moved: the vault serves ledger "
                           f"{ledger.hex()}, the A402Vault pinned {pinned.hex()}; nothing "
                           "was signed")
    signer = recover_signer(statement_digest(contract.domain, st, ledger), signed.signature)
    if (st.participant.lower(), st.pull, st.pulling) != (key.address.lower(), pull, amount) or (
            signer is None or "0x" + signer.hex() != str(vault.info["vault"]).lower()):
        raise CommandError(1, "bad_statement", "nothing moved: the vault's statement for the "
                           "pull is not the enclave's for this account and amount; nothing "
                           "was signed")
    saved = {**asked["statement"], "a402Vault": vault.info["a402Vault"]}
    if flags.out:
        try:
            with open(flags.out, "w") as f:
                json.dump(saved, f, indent=2)
        except OSError as e:
            raise CommandError(2, "usage", f"nothing moved: cannot write {flags.out} ({e}); "
                               "nothing was signed") from None
    intent = contract.sign_pull(key, key.address, amount, pull, deadline, ledger)
    queued = vault.post(f"/v1/vault/pull/{pull}", {"signature": "0x" + intent.hex()})
    data = {**queued, "moved": False, "statement": saved}
    return _say(flags, out, f"nothing moved yet: {amount} will be pulled from "
                f"{key.address} by the vault's next settlement (pull {pull}, before "
                f"{_utc(deadline)}), and is free to spend once the settlement after it confirms "
                "it; the statement counting it is "
                + (f"in {flags.out}" if flags.out else "in `a402 vault statement --out F`")
                + "\n" + table(("participant", "pull", "amount", "deadline"),
                               [(key.address, pull, amount, deadline)]), data)


def _balance(flags: ParticipantFlags, out: TextIO, _: TextIO) -> int:
    b = _Vault(flags).get("/v1/vault/balance")
    return _say(flags, out, f"{b['free']} free in the vault for {b['participant']} "
                "(yours to spend or pay out)\n" + table(
                    ("free", "locked", "unconfirmed", "pulling", "payout queued",
                     "owed on-chain"),
                    [(b["free"], b["locked"], b["unconfirmed"], b["pulling"],
                      b["payoutRequested"], b["owedOnChain"])]), b)


def _checked_statement(raw: Any, info: dict[str, Any], participant: str,
                       expected: str | None) -> dict[str, Any]:
    """The statement the vault answered, with its A402Vault, once it is checked to be this
    participant's and signed by the key the vault names (with ``--vault-address``: the key
    expected) for that A402Vault and ledger life: what ``exit`` would present (a statement
    that is not is never saved as one's exit)."""
    from a402.crypto import PaymentDomain
    from a402.crypto.authorization import recover_signer
    from a402.crypto.vault_messages import statement_digest
    from a402.vault.mode import statement_from_json

    key = str(info.get("vault", "")).lower()
    if expected is not None and key != expected.lower():
        raise CommandError(1, "unexpected_vault", f"nothing saved: the vault names its key "
                           f"{key}, not the expected {expected}")
    try:
        signed = statement_from_json(raw)
        domain = PaymentDomain(int(info["chainId"]), str(info["a402Vault"]))
        ledger = bytes.fromhex(str(info["ledger"]).removeprefix("0x"))
        signer = recover_signer(statement_digest(domain, signed.statement, ledger),
                                signed.signature)
    except (KeyError, TypeError, ValueError) as e:
        raise CommandError(1, "bad_statement", f"nothing saved: the vault's statement is "
                           f"malformed ({e!r})") from None
    if (signed.statement.participant.lower() != participant.lower()
            or signer is None or "0x" + signer.hex() != key):
        raise CommandError(1, "bad_statement", "nothing saved: the vault's statement is not "
                           f"signed by its key {key} for {participant}")
    return {**raw, "a402Vault": info["a402Vault"]}


def _statement(flags: ParticipantFlags, out: TextIO, _: TextIO) -> int:
    vault = _Vault(flags)
    s = _checked_statement(vault.get("/v1/vault/statement"), vault.info, vault.key.address,
                           flags.vault_address)
    if flags.out:
        try:
            with open(flags.out, "w") as f:
                json.dump(s, f, indent=2)
        except OSError as e:
            raise CommandError(2, "usage", f"cannot write {flags.out}: {e}") from None
    return _say(flags, out, f"your latest statement: {s['balance']} free + {s['locked']} locked,"
                f" signed by the vault's key {vault.info['vault']} (force-settle with it if the "
                "vault goes dark)\n"
                + table(("participant", "index", "balance", "locked", "epoch", "nonce"),
                        [(s["participant"], s["index"], s["balance"], s["locked"], s["epoch"],
                          s["nonce"])]), s)


def _withdraw(flags: ParticipantFlags, out: TextIO, _: TextIO) -> int:
    if not flags.amount or flags.amount <= 0:
        raise CommandError(2, "usage", "nothing moved: withdraw needs --amount (atomic units)")
    import uuid

    key = flags.idempotency_key or uuid.uuid4().hex
    vault = _Vault(flags)
    try:
        w = vault.post("/v1/vault/withdraw", {"amount": str(flags.amount), "idempotencyKey": key})
    except CommandError as e:
        if e.reason != "vault_unreachable":
            raise
        try:  # the answer may have been lost after the vault queued it: the same key again
            w = vault.post("/v1/vault/withdraw",
                           {"amount": str(flags.amount), "idempotencyKey": key})
        except CommandError as again:
            if again.reason != "vault_unreachable":
                raise
            raise CommandError(1, "vault_unreachable", (
                "the withdrawal may or may not be queued: the vault did not answer; run "
                f"again with --idempotency-key {key} (it is queued at most once)")) from None
    return _say(flags, out, f"nothing moved yet: {w['queued']} queued for payout to "
                f"{w['participant']} in the next settlement batch (idempotency key "
                f"{w.get('idempotencyKey', key)}: a retry with it queues nothing more)\n"
                + table(("participant", "queued"), [(w["participant"], w["queued"])]), w)


def _settle_now(flags: ParticipantFlags, out: TextIO, err: TextIO) -> int:
    vault = _Vault(flags)
    with Progress(err, "settling"):
        r = vault.post("/v1/vault/settle-now")
    rows = [(x["epoch"], x["payees"], x["tx"]) for x in r["landed"]]
    head = (f"{len(rows)} settlement(s) landed, paying {sum(x[1] for x in rows)} payee(s)"
            if rows else "no settlement sent: no payout was queued and no deposit or payment "
                         "was due (the worker may just have settled them: see `status`)")
    return _say(flags, out, head + ("\n" + table(("epoch", "payees", "transaction"), rows)
                                    if rows else ""), r)


def _status(flags: ParticipantFlags, out: TextIO, _: TextIO) -> int:
    s = _Vault(flags).get("/v1/vault/status")
    t = s["totals"]
    last = s["lastSettlement"]
    parts = [
        f"vault {s['vault']} on A402Vault {s['a402Vault']}: {s['onChain']} held on-chain; "
        f"accounts hold {t['free']} free, {t['locked']} locked, {t['pending']} pending, "
        f"{t['unconfirmed']} unconfirmed",
        table(("epoch signed", "epoch landed", "lease holder", "last settlement tx"),
              [(s["epoch"], s["landedEpoch"], s.get("leaseHolder") or "-",
                "-" if last is None else last["tx"])]),
        "", "accounts",
        table(("participant", "free", "locked", "unconfirmed"),
              [(a["participant"], a["free"], a["locked"], a["unconfirmed"])
               for a in s["accounts"]]) if s["accounts"] else "(none)",
        "", "open channels",
        table(("channel", "client", "provider", "status", "balance"),
              [(c["channelId"][:18] + "…", c["client"], c["provider"], c["status"],
                c["balance"]) for c in s["channels"]]) if s["channels"] else "(none)",
        "", "pending settlements: signed, not landed yet",
        table(("epoch", "payees", "not before (chain time)"),
              [(u["epoch"], u["payees"], u["notBefore"]) for u in s["unlanded"]])
        if s["unlanded"] else "(none)",
        "", "payouts queued for the next batch",
        table(("participant", "amount"),
              [(p["participant"], p["amount"]) for p in s["pendingPayouts"]])
        if s["pendingPayouts"] else "(none)",
    ]
    if s.get("droppedPayouts"):
        parts += ["", "payout requests dropped unpaid (nothing moved for them)",
                  table(("participant", "amount", "why"),
                        [(d["participant"], d["amount"], d["reason"])
                         for d in s["droppedPayouts"]])]
    return _say(flags, out, "\n".join(parts), s)


def _exit(flags: ParticipantFlags, out: TextIO, err: TextIO) -> int:
    """The escape hatch, vault or no vault: ``initForceSettle`` with the statement file;
    run again after the dispute window: ``finalForceSettle`` pays the statement out."""
    from a402.chain.node import connect
    from a402.chain.tx import TransactionFailed
    from a402.keys import load_key_file
    from a402.vault.mode import statement_from_json
    from a402.vault_contract import A402Vault, AccountStatus

    if not flags.rpc or not flags.statement:
        raise CommandError(2, "usage", "nothing moved: exit needs --rpc and --statement FILE")
    try:
        key = load_key_file(flags.key_file)
        with open(flags.statement) as f:
            kept = json.load(f)
        signed = statement_from_json(kept)
        st, signature = signed.statement, signed.signature
        gas = load_key_file(flags.gas_key_file) if flags.gas_key_file else key
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CommandError(2, "usage", f"nothing moved: {e}") from None
    from a402.evm.address import address_key

    mine = address_key(key.address) == address_key(st.participant)
    address = flags.a402_vault or kept.get("a402Vault")
    if address is None:
        address = _Vault(flags).info["a402Vault"]
    chain = connect(flags.rpc, [gas.key])
    contract = A402Vault(chain, str(address))
    proven, paid_now = _prove_transfers(flags, chain, contract, gas, st.participant, err)
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    status = contract.status(st.participant)
    try:
        if status is AccountStatus.ACTIVE:
            if not mine:
                raise CommandError(2, "usage", f"nothing moved: the statement is "
                                   f"{st.participant}'s, the key is {key.address}'s; only the "
                                   "participant starts its exit (--gas-key-file pays its gas)")
            order = b"" if gas is key else contract.exit_order(key, st)
            with Progress(err, "force-settling"):
                receipt = contract.init_force_settle(gas, st, signature, order)
            deadline = contract.force_settle(st.participant).deadline
            data = {"ok": True, "moved": False, "step": "initiated", "deadline": deadline,
                    "balance": str(st.balance + st.locked), "transfersProven": str(proven),
                    "transaction": _hex(receipt["transactionHash"])}
            return _say(flags, out, f"nothing moved yet: force-settle started for "
                        f"{st.participant} with {st.balance + st.locked} (statement nonce "
                        f"{st.nonce}); run `a402 vault exit` again after {deadline} (chain "
                        f"time; now {now}); a newer statement may replace it until then", data)
        if status is AccountStatus.SETTLING:
            recorded = contract.force_settle(st.participant)
            if now < recorded.deadline:
                raise CommandError(4, "window_open", f"nothing moved: the dispute window "
                                   f"closes at {recorded.deadline} (chain time now {now})")
            before = contract.owed(st.participant)
            with Progress(err, "paying out"):
                receipt = contract.final_force_settle(gas, st.participant)
            paid = sum(int(e["payout"]) for e in contract.events("ForceSettleFinalized",
                                                                    receipt))
            data = {"ok": True, "moved": True, "step": "finalized", "paid": str(paid),
                    "transfersProven": str(proven),
                    "owedOnChain": str(contract.owed(st.participant) - before),
                    "transaction": _hex(receipt["transactionHash"])}
            return _say(flags, out, f"{paid} paid out to {st.participant} by A402Vault "
                        f"{contract.address}\n" + table(
                            ("participant", "paid", "transaction"),
                            [(st.participant, paid, data["transaction"])]), data)
    except TransactionFailed as e:
        raise CommandError(1, "reverted", f"nothing moved: the contract refused ({e})") from None
    if paid_now:  # its exit was final: what the proofs added is paid at once
        data = {"ok": True, "moved": True, "step": "transfers", "paid": str(paid_now),
                "transfersProven": str(proven)}
        return _say(flags, out, f"{paid_now} paid out to {st.participant} by A402Vault "
                    f"{contract.address}: plain transfers its final exit did not count", data)
    raise CommandError(4, "already_settled", f"nothing moved: {st.participant} has already "
                                             "left this vault")


def _prove_transfers(flags: ParticipantFlags, chain: Any, contract: Any, gas: Any,
                     participant: str, err: TextIO) -> tuple[int, int]:
    """``exit --prove-transfer TX``: record each plain transfer of the participant's to the
    vault (``proveTransfer``: its sender's exit then pays it back if no statement counts it;
    one already recorded is skipped). Returns the amount newly recorded and what the proofs
    paid the participant at once (its exit already final), from their receipts."""
    from a402.chain.receipts import receipt_proof
    from a402.chain.tx import TransactionFailed
    from a402.evm.receipts import TRANSFER_TOPIC

    recorded = paid = 0
    to_word = bytes(12) + bytes.fromhex(contract.address[2:])
    for tx in flags.prove_transfer:
        try:
            mined = chain.w3.eth.get_transaction_receipt(tx)
        except Exception as e:
            raise CommandError(1, "unknown_transfer", f"nothing moved: transaction {tx}: "
                               f"{e}") from None
        logs = [log for log in mined["logs"]
                if log["address"].lower() == contract.token.lower()
                and [bytes(t) for t in log["topics"][:1]] == [TRANSFER_TOPIC]
                and len(log["topics"]) == 3 and bytes(log["topics"][2]) == to_word]
        if not logs or str(mined["from"]).lower() != participant.lower():
            raise CommandError(2, "usage", f"nothing moved: {tx} is no transfer of "
                               f"{participant}'s to the A402Vault {contract.address}")
        index = [log["logIndex"] for log in mined["logs"]].index(logs[0]["logIndex"])
        if int(chain.w3.eth.block_number) == int(mined["blockNumber"]):
            raise CommandError(4, "too_early", f"nothing moved: {tx} is in the newest block, "
                               "whose hash the chain gives from the next one: run again then")
        try:
            with Progress(err, "proving the transfer"):
                receipt = contract.prove_transfer(gas, receipt_proof(chain, tx, index))
        except TransactionFailed as e:
            if "af016526" in str(e):  # TransferAlreadyProven: recorded before
                continue
            raise CommandError(1, "reverted", f"nothing moved: the contract refused the "
                               f"proof of {tx} ({e})") from None
        recorded += sum(int(ev["amount"]) for ev in contract.events("TransferProven",
                                                                    receipt))
        paid += sum(int(ev["amount"]) for ev in contract.events("PayoutCredited", receipt)
                    if ev["account"].lower() == participant.lower())
        paid += sum(int.from_bytes(bytes(log["data"]), "big") for log in receipt["logs"]
                    if log["address"].lower() == contract.token.lower()
                    and len(log["topics"]) == 3 and bytes(log["topics"][0]) == TRANSFER_TOPIC
                    and bytes(log["topics"][1])[12:].hex() == contract.address[2:].lower()
                    and bytes(log["topics"][2])[12:].hex() == participant[2:].lower())
    return recorded, paid


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex().removeprefix("0x")
    text = str(value)
    return text if text.startswith("0x") else "0x" + text


_ACTIONS = {"deposit": _deposit, "balance": _balance, "statement": _statement,
            "withdraw": _withdraw, "settle-now": _settle_now, "status": _status,
            "exit": _exit}

__all__ = ["ACTIONS", "main", "table"]
