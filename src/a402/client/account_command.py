"""``a402 channels``, ``a402 payouts`` and ``a402 pool``: a key's channels, owed payouts and
pool balances, from the chain.

    a402 channels --key-file .a402/client.key            # table; --json for scripts
    a402 channels force-close 0xCHANNEL --key-file .a402/client.key
    a402 channels close 0xCHANNEL --vault-url http://127.0.0.1:7402 --key-file K  # cooperative
    a402 payouts --key-file .a402/provider.key           # what the ASCManager owes it
    a402 payouts withdraw --key-file .a402/provider.key --to 0xOTHER
    a402 payouts withdraw --key-file K --relay --order-out order.json   # no gas: sign only
    a402 payouts relay order.json --key-file RELAYER.key                # anyone with gas
    a402 pool --vault 0xVAULT --key-file .a402/client.key   # the key's pool balance there
    a402 pool withdraw --vault 0xVAULT --key-file K [--to 0xOTHER] [--amount 1.5]

They read the chain only (``--manifest``, default ``.a402/devnet.json``, or ``--rpc`` and
``--manager``), so they work when the vault is down or gone; ``close`` also asks the vault
that opened the channel to close it cooperatively (at once, no dispute window). The first
line of every answer says where the money stands ("nothing moved: …", "1.000000 USDC paid
to you …"); ``--json`` prints one JSON object instead. Problems go to stderr as ``a402 channels: …``
with no traceback. Exit codes, stable for scripts:

    0  done (or shown)
    1  the chain refused or failed (a revert, an unreachable node); nothing moved unless
       the message says a transaction was sent
    2  usage or configuration error (bad arguments, address, amount, key file, manifest)
    3  not found (no such channel on this manager)
    4  nothing to do now (nothing owed, dispute window still open, channel not open,
       order already used or expired); nothing moved
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from a402.chain.locate import ChainFlags
from a402.settings import add_flags, from_args, setting

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from a402.asc_manager import ASCManager
    from a402.client.channels import ChannelView
    from a402.client.token_units import TokenUnits

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_NOTHING_TO_DO: Final = 4


@dataclass(frozen=True, kw_only=True)
class Party:
    """Whose channels and payouts: a key (needed to move anything) or, to look only, an
    address."""

    key_file: str | None = setting(None, metavar="F",
                                   help="file holding the key (hex; mode 600)")
    address: str | None = setting(None, metavar="ADDRESS",
                                  help="look at this address instead (read-only)")
    json: bool = setting(False, help="print one JSON object instead of text")


@dataclass(frozen=True, kw_only=True)
class ChannelFlags:
    """Which blocks to search for the channels' ChannelOpened events."""

    from_block: int = setting(0, metavar="N",
                              help="first block to search (default: %(default)s; a public "
                                   "node may need the manager's deployment block)")


@dataclass(frozen=True, kw_only=True)
class CloseFlags:
    """The vault asked to close a channel cooperatively (``close`` only)."""

    vault_url: str | None = setting(None, metavar="URL",
                                    help="close: the URL of the vault that opened the channel "
                                         "(its address is read from the chain)")


@dataclass(frozen=True, kw_only=True)
class WithdrawFlags:
    """Where owed payouts go, and how (withdraw and relay only)."""

    to: str | None = setting(None, metavar="ADDRESS",
                             help="pay to this address (default: the key's own; name another "
                                  "when yours is blocklisted)")
    relay: bool = setting(False, help="send nothing: sign an order that anyone with gas can "
                                      "submit (automatic when the key has no gas)")
    amount: str | None = setting(None, metavar="AMOUNT",
                                 help="with an order: how much, in token units (default: all "
                                      "owed)")
    valid_for: int = setting(86_400, metavar="SECONDS",
                             help="how long an order stays good (default: %(default)s)")
    order_out: str | None = setting(None, metavar="FILE",
                                    help="also write the order to FILE (for `payouts relay`)")


@dataclass(frozen=True, kw_only=True)
class PoolFlags:
    """Which vault's pool, and where a withdrawal from it goes."""

    vault: str | None = setting(None, metavar="ADDRESS",
                                help="the vault's address (its `GET /v1/info` `vault`)")
    to: str | None = setting(None, metavar="ADDRESS",
                             help="withdraw: pay to this address (default: the key's own)")
    amount: str | None = setting(None, metavar="AMOUNT",
                                 help="withdraw: how much, in token units (default: all)")


class CommandError(Exception):
    """An expected failure: exit ``code`` with ``message`` (money state first)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


# ------------------------------------------------------------------------- parsers


def add_channels_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "close", "force-close"),
                        default="list",
                        help="list (default): the key's channels, as client or provider; "
                             "close CHANNEL_ID: as its client, have the vault close it now "
                             "(the rest back to where the deposit came from); force-close "
                             "CHANNEL_ID: as the client of a wallet-funded channel, take the "
                             "deposit back without the vault (run it again after the dispute "
                             "window to pay out)")
    parser.add_argument("channel", nargs="?", metavar="CHANNEL_ID",
                        help="the channel to close or force-close (0x and 64 hex digits)")
    add_flags(parser, Party, "account")
    add_flags(parser, ChainFlags, "chain")
    add_flags(parser, ChannelFlags, "search")
    add_flags(parser, CloseFlags, "close")


def add_payouts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "withdraw", "relay"),
                        default="show",
                        help="show (default): what the ASCManager owes the key (payouts its "
                             "token refused); withdraw: take it, to the key's address or "
                             "--to; relay ORDER: submit someone's signed withdrawal order "
                             "(the key pays only the gas)")
    parser.add_argument("order", nargs="?", metavar="ORDER",
                        help="with relay: the order's file (- for stdin)")
    add_flags(parser, Party, "account")
    add_flags(parser, ChainFlags, "chain")
    add_flags(parser, WithdrawFlags, "withdrawal")


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "withdraw"), default="show",
                        help="show (default): the key's pool balance with --vault, as the "
                             "ASCManager holds it; withdraw: take it out with "
                             "withdrawFromPool, sent by the key (no vault needed)")
    add_flags(parser, Party, "account")
    add_flags(parser, ChainFlags, "chain")
    add_flags(parser, PoolFlags, "pool")


# ------------------------------------------------------------------------ commands


def run_pool(args: argparse.Namespace, *, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    return _run("a402 pool", args, _pool, out, err)


def run_channels(args: argparse.Namespace, *, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    return _run("a402 channels", args, _channels, out, err)


def run_payouts(args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    return _run("a402 payouts", args, _payouts, out, err)


@dataclass
class _Context:
    args: argparse.Namespace
    out: TextIO
    manager: ASCManager
    token: TokenUnits
    key: LocalAccount | None
    address: str

    def say(self, lines: list[str], data: dict[str, Any]) -> None:
        if self.args.json:
            print(json.dumps(data, indent=2), file=self.out)
        else:
            print("\n".join(lines), file=self.out)

    def need_key(self, what: str) -> LocalAccount:
        if self.key is None:
            raise CommandError(EXIT_USAGE, "key_required",
                               f"nothing moved: {what} needs --key-file")
        return self.key

    @property
    def where(self) -> dict[str, Any]:
        return {"network": self.manager.chain.network, "ascManager": self.manager.address,
                "token": self.token.to_json()}


def _run(prog: str, args: argparse.Namespace,
         action: Callable[[_Context], int], out: TextIO | None, err: TextIO | None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        context = _context(args, out)
        return action(context)
    except CommandError as e:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "reason": e.reason, "message": e.message}), file=out)
        print(f"{prog}: {e.message}", file=err)
        return e.code


def _context(args: argparse.Namespace, out: TextIO) -> _Context:
    from a402.asc_manager import ASCManager
    from a402.chain.locate import ChainNotFound, ChainUnreachable, open_manager_site
    from a402.chain.rpc import ChainUnavailable, RpcError
    from a402.client.payouts import checked_address
    from a402.client.token_units import TokenUnits
    from a402.keys import load_key_file

    party = from_args(Party, args)
    if party.key_file and party.address:
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: give --key-file or "
                                                "--address, not both")
    if not party.key_file and not party.address:
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: whose? give --key-file F "
                                                "(or --address ADDRESS to look only)")
    try:
        key = load_key_file(party.key_file) if party.key_file else None
        address = key.address if key else checked_address(str(party.address), "--address")
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {e}") from None
    try:
        site = open_manager_site(from_args(ChainFlags, args), (key,) if key else ())
        manager = ASCManager(site.chain, site.manager)
        token = TokenUnits.read(site.chain, manager.token)
    except ChainUnreachable as e:
        raise CommandError(EXIT_FAILED, "chain_unavailable", f"nothing moved: {e}") from None
    except ChainNotFound as e:
        raise CommandError(EXIT_USAGE, "no_deployment", f"nothing moved: {e}") from None
    except (ChainUnavailable, RpcError) as e:
        raise CommandError(EXIT_FAILED, "chain_unavailable",
                           f"nothing moved: the chain did not answer ({e})") from None
    return _Context(args, out, manager, token, key, address)


def _chain_step(context: _Context, step: Callable[[], Any], *, sends: bool) -> Any:
    """Run ``step`` (which may send a transaction), turning the chain's failures into
    :class:`CommandError` whose first words say whether anything may have moved."""
    from web3.exceptions import TimeExhausted

    from a402.chain.rpc import ChainUnavailable, RpcError
    from a402.chain.tx import TransactionFailed

    try:
        return step()
    except TransactionFailed as e:
        why = context.manager.explain(e.reason)
        if e.tx_hash:
            raise CommandError(EXIT_FAILED, "reverted", f"nothing moved: transaction "
                                                        f"{e.tx_hash} reverted ({why})") from None
        raise CommandError(EXIT_FAILED, "refused", f"nothing moved: the chain refused the "
                                                   f"call: {why}") from None
    except RpcError as e:  # an answer: the node refused (no gas, a bad nonce, …)
        text = str(e)
        if "insufficient funds" in text.lower() and context.key is not None:
            text = f"{context.key.address} has no ETH to pay the gas"
        raise CommandError(EXIT_FAILED, "refused", f"nothing moved: the node refused the "
                                                   f"transaction: {text}") from None
    except (ChainUnavailable, TimeExhausted, TimeoutError) as e:
        if sends:
            raise CommandError(EXIT_FAILED, "unconfirmed",
                               f"unknown: a transaction may have been sent but was not "
                               f"confirmed ({e}); check again before retrying") from None
        raise CommandError(EXIT_FAILED, "chain_unavailable",
                           f"nothing moved: the chain did not answer ({e})") from None


# ------------------------------------------------------------------------ channels


def _channels(context: _Context) -> int:
    args = context.args
    if args.action == "force-close":
        if not args.channel:
            raise CommandError(EXIT_USAGE, "usage", "nothing moved: force-close needs a "
                                                    "CHANNEL_ID (see `a402 channels`)")
        return _force_close(context, args.channel)
    if args.action == "close":
        if not args.channel or not args.vault_url:
            raise CommandError(EXIT_USAGE, "usage", "nothing moved: close needs a CHANNEL_ID "
                                                    "(see `a402 channels`) and --vault-url")
        return _close(context, args.channel, args.vault_url)
    if args.channel:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: unexpected {args.channel!r}"
                                                " (did you mean `close` or `force-close`?)")
    return _list(context)


def _list(context: _Context) -> int:
    from a402.asc_manager import OnChainStatus
    from a402.client.channels import list_channels
    from a402.client.payouts import owed

    def read() -> tuple[list[ChannelView], int]:
        return (list_channels(context.manager, context.address,
                              from_block=context.args.from_block),
                owed(context.manager, context.address))

    channels, due = _chain_step(context, read, sends=False)
    token = context.token
    live = [c for c in channels if c.status in (OnChainStatus.OPEN, OnChainStatus.CLOSING)]
    escrowed = sum(c.terms.deposit for c in live)
    head = (f"{token.show(escrowed)} escrowed in {len(live)} open or closing channel"
            f"{'' if len(live) == 1 else 's'} of {context.address}"
            if live else f"nothing escrowed: no open channel of {context.address}")
    head += (f"; {token.show(due)} owed to it, withdrawable (a402 payouts withdraw)" if due
             else "; nothing owed to it")
    lines = [head, f"on ASCManager {context.manager.address} ({context.manager.chain.network})"]
    if channels:
        now = _now(context)
        lines.append("")
        lines.append(f"{'CHANNEL':<66}  {'ROLE':<8} {'FUNDING':<7} {'STATUS':<8} "
                     f"{'DEPOSIT':>18}  DETAIL")
        for c in channels:
            lines.append(f"{c.id_hex:<66}  {c.role:<8} {c.funding:<7} "
                         f"{c.status.name.lower():<8} {token.show(c.terms.deposit):>18}  "
                         f"{_detail(c, token, now)}")
    context.say(lines, {
        **context.where, "address": context.address, "escrowed": token.plain(escrowed),
        "owed": token.plain(due), "owedAtomic": str(due),
        "channels": [c.to_json(token.plain) for c in channels]})
    return EXIT_OK


def _detail(c: ChannelView, token: TokenUnits, now: int) -> str:
    from a402.asc_manager import OnChainStatus

    if c.status == OnChainStatus.CLOSING:
        provider = c.onchain.provider_balance
        return (f"force-closing at version {c.onchain.version}: "
                f"{token.show(c.terms.deposit - provider)} to {_client_side(c)}, "
                f"{token.show(provider)} to the provider; the dispute window "
                + (f"ends in {c.onchain.deadline - now} s" if now < c.onchain.deadline
                   else "has passed: pay out with `a402 channels force-close`"))
    if c.payouts is not None:
        paid = (f"paid {token.show(c.payouts[0])} to {_client_side(c)}, "
                f"{token.show(c.payouts[1])} to the provider")
        if c.credited:
            paid += " (credited, the token refused: " + ", ".join(
                sorted(who for who in c.credited)) + ")"
        return paid
    if c.status == OnChainStatus.OPEN:
        return f"client {c.client}" if c.role == "provider" else f"provider {c.provider}"
    return ""


def _client_side(c: ChannelView) -> str:
    """Where a channel's client share goes: a pool channel's back into the client's pool
    balance with its vault (no token moves to the client's address), a wallet channel's
    to the client's address."""
    if c.pool_funded:
        return f"the client's pool balance with vault {c.vault}"
    return "the client"


def _close(context: _Context, channel_text: str, vault_url: str) -> int:
    """Ask the channel's vault to close it cooperatively: the vault's key signs the close
    (the client's balance goes back where the deposit came from at once). The vault named
    by the chain is the one the client expects: a URL serving another key is refused
    before anything is asked."""
    from a402.asc_manager import OnChainStatus
    from a402.client.channels import ChannelError, find_channel, parse_channel_id
    from a402.client.vault import ExpectedVault, VaultCallError, VaultClient
    from a402.evm.address import same_address

    key = context.need_key("close")
    token = context.token
    try:
        channel_id = parse_channel_id(channel_text)
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {e}") from None
    try:
        channel = _chain_step(context, lambda: find_channel(
            context.manager, channel_id, key.address, from_block=context.args.from_block),
            sends=False)
    except ChannelError as e:
        raise CommandError(EXIT_NOT_FOUND, e.reason, f"nothing moved: {e.message}") from None
    if not same_address(key.address, channel.client):
        raise CommandError(EXIT_USAGE, "not_client", f"nothing moved: {key.address} is not "
                                                     f"the client of {channel.id_hex}")
    if channel.status != OnChainStatus.OPEN:
        raise CommandError(EXIT_NOTHING_TO_DO, "not_open", f"nothing moved: {channel.id_hex} "
                                                           "is not open (see `a402 channels`)")
    expect = ExpectedVault(channel.vault, context.manager.address, token.address)
    try:
        with VaultClient(vault_url, key, expect=expect, timeout=120) as vault:
            answer = vault.close_channel(channel.id_hex)
    except VaultCallError as e:
        raise CommandError(EXIT_FAILED, e.reason, (
            f"nothing moved: the vault refused to close {channel.id_hex} ({e.reason}: "
            f"{e.message}); `a402 channels force-close` works without it")) from None
    except Exception as e:
        raise CommandError(EXIT_FAILED, "vault_unavailable", (
            f"unknown: the vault at {vault_url} did not answer ({type(e).__name__}: {e}); "
            f"run `a402 channels` to see whether {channel.id_hex} closed")) from None
    settled = answer.get("phase") == "settled"
    back = int(answer.get("clientPayout") or answer.get("free") or 0)
    where = (f"your pool balance with vault {channel.vault}" if channel.funding == "pool"
             else f"you ({key.address})")
    first = (f"{token.show(back)} back to {where}: {channel.id_hex} closed by the vault"
             f" (tx {answer.get('settlement')})" if settled else
             f"not paid out yet: the vault is closing {channel.id_hex} (phase "
             f"{answer.get('phase')}); {token.show(back)} comes back to {where} when it "
             "lands: run `a402 channels` to follow it")
    context.say([first], {**context.where, "ok": True, "moved": settled, "step": (
        "closed" if settled else "closing"), "channelId": channel.id_hex, "vault": answer})
    return 0


def _force_close(context: _Context, channel_text: str) -> int:
    from a402.asc_manager import OnChainStatus
    from a402.client.channels import (
        ChannelError,
        find_channel,
        finish_force_close,
        parse_channel_id,
        start_force_close,
    )
    from a402.evm.address import same_address

    key = context.need_key("force-close")
    token = context.token
    try:
        channel_id = parse_channel_id(channel_text)
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {e}") from None
    try:
        channel = _chain_step(context, lambda: find_channel(
            context.manager, channel_id, key.address, from_block=context.args.from_block),
            sends=False)
    except ChannelError as e:
        raise CommandError(EXIT_NOT_FOUND, e.reason, f"nothing moved: {e.message}") from None
    now = _now(context)
    if channel.status == OnChainStatus.OPEN:
        if same_address(key.address, channel.provider):
            raise CommandError(EXIT_USAGE, "not_client", (
                f"nothing moved: {key.address} is the provider of {channel.id_hex}; a "
                "provider force-closes with its pending payment, which its gateway "
                "(`a402 gateway --a402`) does itself"))
        if not same_address(key.address, channel.client):
            raise CommandError(EXIT_USAGE, "not_client", (
                f"nothing moved: {key.address} is not the client of {channel.id_hex} (its "
                f"client is {channel.client}"
                + (", its vault: the vault closes it" if channel.client == channel.vault
                   else "") + ")"))
        started = _chain_step(context, lambda: start_force_close(context.manager, key, channel),
                              sends=True)
        deadline, now = started.deadline, _now(context)
        context.say([
            f"nothing paid out yet: force-close of {channel.id_hex} started; if no newer "
            f"state is presented, {token.show(started.client_balance)} comes back to "
            + (f"your pool balance with vault {channel.vault} (not to {key.address}: take it "
               f"out with `a402 pool withdraw --vault {channel.vault}`)" if channel.pool_funded
               else f"you ({key.address})")
            + f" and {token.show(started.provider_balance)} goes to the provider",
            f"the dispute window ends at {_when(deadline)} (chain time, {_window(deadline, now)})."
            " Until then the provider may still claim what it earned: a newer state you and "
            "it co-signed through the vault (challenge), or its pending payment (its own "
            "force-close, paid at once); the vault's watchtower may also present a newer "
            "state.",
            f"After it, run `a402 channels force-close {channel.id_hex}` again to pay out "
            f"(tx {_tx(started.receipt)}).",
        ], {**context.where, "ok": True, "moved": False, "step": "initiated",
            "channelId": channel.id_hex, "version": started.version,
            "clientBalance": token.plain(started.client_balance),
            "providerBalance": token.plain(started.provider_balance),
            "disputeWindowEnds": deadline, "transaction": _tx(started.receipt)})
        return EXIT_OK
    if channel.status == OnChainStatus.CLOSING:
        if now < channel.onchain.deadline:
            provider = channel.onchain.provider_balance
            raise CommandError(EXIT_NOTHING_TO_DO, "window_open", (
                f"nothing moved: the dispute window of {channel.id_hex} ends at "
                f"{_when(channel.onchain.deadline)} (chain time, "
                f"{_window(channel.onchain.deadline, now)}); recorded state version "
                f"{channel.onchain.version}: {token.show(channel.terms.deposit - provider)} "
                f"to the client, {token.show(provider)} to the provider"))
        done = _chain_step(context, lambda: finish_force_close(
            context.manager, key, channel, now=now), sends=True)
        lines = []
        data_paid: dict[str, Any] = {}
        for who, role, amount in ((channel.client, "client", done.client_payout),
                                  (channel.provider, "provider", done.provider_payout)):
            you = " (you)" if same_address(who, key.address) else ""
            if role == "client" and channel.pool_funded:
                lines.append(f"{token.show(amount)} credited to the client's pool balance "
                             f"with vault {channel.vault}{you} (no token moved to {who}: "
                             f"`a402 pool withdraw --vault {channel.vault}` takes it out)")
            elif who in done.credited:
                lines.append(f"{token.show(amount)} credited to the {role} {who}{you}, "
                             "withdrawable: the token refused the transfer "
                             "(a402 payouts withdraw --to ADDRESS)")
            else:
                lines.append(f"{token.show(amount)} paid to the {role} {who}{you}")
            data_paid[role] = {"address": who, "amount": token.plain(amount),
                               "credited": who in done.credited}
            if role == "client" and channel.pool_funded:
                data_paid[role]["pooledWith"] = channel.vault
        lines[0] += f": {channel.id_hex} closed at version {done.version}"
        lines.append(f"(tx {_tx(done.receipt)})")
        context.say(lines, {**context.where, "ok": True, "moved": True, "step": "finalized",
                            "channelId": channel.id_hex, "version": done.version,
                            "payouts": data_paid, "transaction": _tx(done.receipt)})
        return EXIT_OK
    if channel.status == OnChainStatus.CLOSED and channel.payouts is not None:
        raise CommandError(EXIT_NOTHING_TO_DO, "closed", (
            f"nothing moved: {channel.id_hex} is already closed ({channel.closed_by}): "
            f"{token.show(channel.payouts[0])} to {_client_side(channel)}, "
            f"{token.show(channel.payouts[1])} to the provider"))
    raise CommandError(EXIT_NOTHING_TO_DO, "closed",
                       f"nothing moved: {channel.id_hex} is {channel.status.name.lower()}")


# ------------------------------------------------------------------------- payouts


def _payouts(context: _Context) -> int:
    args = context.args
    if args.action != "relay" and args.order:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: unexpected {args.order!r}")
    if args.action != "withdraw":
        stray = [flag for flag, given in (("--to", args.to), ("--relay", args.relay),
                                          ("--amount", args.amount),
                                          ("--order-out", args.order_out)) if given]
        if stray:
            raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {', '.join(stray)} "
                                                    "goes with `a402 payouts withdraw`")
    if args.action == "show":
        return _show_owed(context)
    if args.action == "withdraw":
        return _withdraw(context)
    return _relay(context)


def _show_owed(context: _Context) -> int:
    from a402.client.payouts import owed

    due = _chain_step(context, lambda: owed(context.manager, context.address), sends=False)
    token = context.token
    if due:
        lines = [f"{token.show(due)} owed to {context.address}, withdrawable: payouts the "
                 "token refused to transfer",
                 "take it with `a402 payouts withdraw` (add --to ADDRESS if this address "
                 "cannot receive the token)"]
    else:
        lines = [f"nothing owed to {context.address}: every payout to it was transferred"]
    lines.append(f"on ASCManager {context.manager.address} ({context.manager.chain.network})")
    context.say(lines, {**context.where, "address": context.address,
                        "owed": token.plain(due), "owedAtomic": str(due)})
    return EXIT_OK


def _withdraw(context: _Context) -> int:
    from a402.client.payouts import (
        PayoutError,
        checked_address,
        has_gas_for_withdraw,
        owed,
        sign_order,
        withdraw_owed,
    )

    key = context.need_key("withdraw")
    flags = from_args(WithdrawFlags, context.args)
    token = context.token
    try:
        to = checked_address(flags.to, "--to") if flags.to else key.address
        amount = token.atomic(flags.amount) if flags.amount is not None else None
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {e}") from None
    if amount is not None and not flags.relay:
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: --amount goes with --relay "
                                                "(a direct withdrawal takes all that is owed)")
    if flags.valid_for <= 0:
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: --valid-for must be positive")
    due = _chain_step(context, lambda: owed(context.manager, key.address), sends=False)
    if not due:
        raise CommandError(EXIT_NOTHING_TO_DO, "nothing_owed",
                           f"nothing moved: nothing is owed to {key.address}")
    relay = flags.relay or not _chain_step(
        context, lambda: has_gas_for_withdraw(context.manager, key.address, to), sends=False)
    try:
        if relay:
            order = _chain_step(context, lambda: sign_order(
                context.manager, key, to, amount=amount, valid_for=flags.valid_for),
                sends=False)
        else:
            paid, receipt = _chain_step(context, lambda: withdraw_owed(
                context.manager, key, to), sends=True)
    except PayoutError as e:
        code = EXIT_NOTHING_TO_DO if e.reason == "nothing_owed" else EXIT_USAGE
        raise CommandError(code, e.reason, f"nothing moved: {e.message}") from None
    if relay:
        why = "" if flags.relay else f" ({key.address} has no ETH for gas)"
        if flags.order_out:
            _write_order(flags.order_out, order.to_json())
        context.say([
            f"nothing moved yet: signed an order paying {token.show(order.amount)} of the "
            f"{token.show(due)} owed to you to {order.to}{why}",
            f"anyone with gas can submit it until {_when(order.deadline)} (chain time), once: "
            f"a402 payouts relay {flags.order_out or 'ORDER.json'} --key-file THEIR_KEY",
            json.dumps(order.to_json()),
        ], {**context.where, "ok": True, "moved": False, "owed": token.plain(due),
            "order": order.to_json()})
        return EXIT_OK
    left = _chain_step(context, lambda: owed(context.manager, key.address), sends=False)
    context.say([
        f"{token.show(paid)} withdrawn to {to} from what the ASCManager owed {key.address}; "
        f"{token.show(left)} owed now",
        f"(tx {_tx(receipt)})",
    ], {**context.where, "ok": True, "moved": True, "amount": token.plain(paid), "to": to,
        "owedNow": token.plain(left), "transaction": _tx(receipt)})
    return EXIT_OK


def _relay(context: _Context) -> int:
    from a402.client.payouts import PayoutError, WithdrawalOrder, relay_order

    key = context.need_key("relay")
    if not context.args.order:
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: relay needs the ORDER file "
                                                "(- for stdin)")
    try:
        text = (sys.stdin.read() if context.args.order == "-"
                else Path(context.args.order).read_text())
        order = WithdrawalOrder.loads(text)
    except OSError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: cannot read "
                                                f"{context.args.order}: {e.strerror or e}"
                           ) from None
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {context.args.order}: {e}"
                           ) from None
    token = context.token
    try:
        receipt = _chain_step(context, lambda: relay_order(context.manager, key, order),
                              sends=True)
    except PayoutError as e:
        code = EXIT_USAGE if e.reason == "wrong_manager" else EXIT_NOTHING_TO_DO
        raise CommandError(code, e.reason, f"nothing moved: {e.message}") from None
    context.say([
        f"{token.show(order.amount)} paid to {order.to} from what the ASCManager owed "
        f"{order.owner}; the order is used up (you paid the gas)",
        f"(tx {_tx(receipt)})",
    ], {**context.where, "ok": True, "moved": True, "amount": token.plain(order.amount),
        "to": order.to, "owner": order.owner, "transaction": _tx(receipt)})
    return EXIT_OK


# ---------------------------------------------------------------------------- pool


def _pool(context: _Context) -> int:
    """The key's pool balance with a vault, on-chain; ``withdraw``: the exit that needs
    nothing of the vault (``withdrawFromPool``, sent by the key itself)."""
    from a402.client.payouts import checked_address

    flags = from_args(PoolFlags, context.args)
    token, manager = context.token, context.manager
    try:
        if not flags.vault:
            raise ValueError("which vault? give --vault ADDRESS")
        vault = checked_address(flags.vault, "--vault")
        to = checked_address(flags.to, "--to") if flags.to else None
        amount = token.atomic(flags.amount) if flags.amount is not None else None
    except ValueError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: {e}") from None
    if context.args.action == "show" and (to or amount is not None):
        raise CommandError(EXIT_USAGE, "usage", "nothing moved: --to and --amount go with "
                                                "`a402 pool withdraw`")
    balance = _chain_step(context, lambda: manager.pooled(vault, context.address), sends=False)
    if context.args.action == "show":
        context.say([f"{token.show(balance)} pooled by {context.address} with vault {vault}: "
                     "yours to take out any time (a402 pool withdraw), with or without the "
                     "vault",
                     f"on ASCManager {manager.address} ({manager.chain.network})"],
                    {**context.where, "address": context.address, "vault": vault,
                     "pooled": token.plain(balance), "pooledAtomic": str(balance)})
        return EXIT_OK
    key = context.need_key("withdraw")
    amount = balance if amount is None else amount
    if amount <= 0 or amount > balance:
        raise CommandError(EXIT_NOTHING_TO_DO, "insufficient_pool",
                           f"nothing moved: {token.show(balance)} pooled with {vault}, "
                           f"cannot take {token.show(amount)}")
    receipt = _chain_step(context, lambda: manager.withdraw_from_pool(
        key, vault, to or key.address, amount), sends=True)
    left = _chain_step(context, lambda: manager.pooled(vault, key.address), sends=False)
    context.say([f"{token.show(amount)} withdrawn from the pool to {to or key.address}; "
                 f"{token.show(left)} still pooled with {vault}", f"(tx {_tx(receipt)})"],
                {**context.where, "ok": True, "moved": True, "amount": token.plain(amount),
                 "to": to or key.address, "pooledNow": token.plain(left),
                 "transaction": _tx(receipt)})
    return EXIT_OK


# ------------------------------------------------------------------------- helpers


def _write_order(path: str, order: dict[str, Any]) -> None:
    try:
        Path(path).write_text(json.dumps(order, indent=2) + "\n")
    except OSError as e:
        raise CommandError(EXIT_USAGE, "usage", f"nothing moved: cannot write {path}: "
                                                f"{e.strerror or e}") from None


def _now(context: _Context) -> int:
    from a402.client.payouts import chain_time

    return int(_chain_step(context, lambda: chain_time(context.manager), sends=False))


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _window(deadline: int, now: int) -> str:
    left = deadline - now
    return f"in {left} s" if left > 0 else f"passed {-left} s ago"


def _tx(receipt: Any) -> str:
    from hexbytes import HexBytes

    return HexBytes(receipt["transactionHash"]).to_0x_hex()
