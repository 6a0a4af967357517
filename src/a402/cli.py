"""The ``a402`` command: one entry point, one sub-command per role.

Only the chosen sub-command's module is imported: the parser lists every command
from the table :data:`COMMANDS` (name, help, and where its arguments and runner
live), and loads the arguments of the one on the command line alone, so that
``a402 --help`` and ``a402 pay`` do not pay for web3, the indexer or a database
layer, and a missing optional dependency only breaks the command that needs it.

To add a command, add one :class:`Command` line to :data:`COMMANDS`; its module
defines ``add_<x>_arguments(parser)`` and ``run_<x>(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from a402 import __version__
from a402.settings import ConfigError, configure

_GLOBAL_FLAGS = frozenset({"-h", "--help", "--version", "-v", "--verbose"})


@dataclass(frozen=True, slots=True)
class Command:
    """One sub-command: its name, its one-line help, the module that declares its
    arguments (``add``) and runs it (``run``), both named as attributes of ``module``."""

    name: str
    help: str
    module: str
    add: str
    run: str


COMMANDS: tuple[Command, ...] = (
    Command("demo", "run the end-to-end demo on an embedded chain",
            "a402.cli", "add_demo_arguments", "run_demo"),
    Command("devnet", "run anvil with the contracts deployed",
            "a402.cli", "add_devnet_arguments", "run_devnet"),
    Command("facilitator", "verify and settle x402 `exact` payments",
            "a402.facilitator.command", "add_facilitator_arguments", "run_facilitator"),
    Command("gateway", "put an x402 paywall in front of any HTTP API",
            "a402.provider.command", "add_gateway_arguments", "run_gateway_command"),
    Command("mcp", "paid MCP tools: `a402 mcp serve` puts an x402 paywall in front of an "
                   "MCP server", "a402.mcp.command", "add_mcp_arguments", "run_mcp"),
    Command("pay", "fetch a paid URL, paying with x402 `exact`",
            "a402.client.pay", "add_pay_arguments", "run_pay"),
    Command("permit2", "show or set the wallet's allowance to Permit2 (x402 `upto` payments)",
            "a402.client.permit2_command", "add_permit2_arguments", "run_permit2"),
    Command("mandate", "what an owner lets an agent spend: create (sign), show, verify, "
                       "revoke on-chain, list spending",
            "a402.client.mandate_command", "add_mandate_arguments", "run_mandate"),
    Command("audit", "print the evidence chain of mandated payments and verify every "
                     "signature in it, offline",
            "a402.client.mandate_command", "add_audit_arguments", "run_audit"),
    Command("agents", "register, update, show, search and rate agents on-chain",
            "a402.agents.cli", "add_agents_arguments", "run_agents"),
    Command("indexer", "index agents, payments and ERC-8004 events and serve a search API",
            "a402.agents.indexer.command", "add_indexer_arguments", "run_indexer"),
    Command("channels", "a key's A402 channels from the chain; force-close one as its "
                        "client without the vault",
            "a402.client.account_command", "add_channels_arguments", "run_channels"),
    Command("payouts", "payouts the token refused, owed to a key by the ASCManager: show, "
                       "withdraw (to any address), relay a signed order",
            "a402.client.account_command", "add_payouts_arguments", "run_payouts"),
    Command("pool", "a key's pool balance with a vault, from the chain; take it out without "
                    "the vault",
            "a402.client.account_command", "add_pool_arguments", "run_pool"),
    Command("balance", "a key's money: wallet, pools, channels",
            "a402.client.history", "add_balance_arguments", "run_balance"),
    Command("payments", "list payments: this machine's, or a facilitator's, gateway's or "
                        "vault's (operator token)",
            "a402.client.history", "add_payments_arguments", "run_payments"),
    Command("receipt", "one payment end to end, checked on-chain",
            "a402.client.history", "add_receipt_arguments", "run_receipt"),
    Command("vault", "run the Liquidity Vault (pays A402 for clients); vault mode: "
                     "`a402 vault deposit|balance|statement|withdraw|settle-now|status|exit "
                     "--help`",
            "a402.vault.command", "add_vault_arguments", "run_vault"),
    Command("config", "show every command's settings and where each comes from (flags > "
                      "A402_* environment > config file > defaults)",
            "a402.cli", "add_config_arguments", "run_config"),
)


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line ``argv`` (the first word that is not a
    global flag), or None (``a402 --help``, or no command)."""
    for word in argv:
        if word not in _GLOBAL_FLAGS:
            return None if word.startswith("-") else word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``a402`` parser. Given the command line ``argv``, only the arguments of the
    command it names are declared (the others are listed, with their help); without it,
    every command's are (for tests and documentation). Each declared flag takes its
    default from the ``A402_*`` environment or the config file if they set it
    (:func:`a402.settings.configure`; ConfigError if they set it wrong)."""
    from a402.failure import MoneyFirstParser

    parser = MoneyFirstParser(prog="a402", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"a402 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    # Usage errors say the money state first (every command's, through parser_class).
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=MoneyFirstParser)
    wanted = None if argv is None else chosen_command(argv)
    parser.command = wanted if wanted in {c.name for c in COMMANDS} else None
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help)
        if argv is None or command.name == wanted:
            module = importlib.import_module(command.module)
            getattr(module, command.add)(sub)
            sub.set_defaults(run=getattr(module, command.run))
            if command.name != "config":
                configure(sub, command.name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) > 1 and words[0] == "vault":
        from a402.vault.mode_command import ACTIONS
        from a402.vault.mode_command import main as vault_action

        if words[1] in ACTIONS:  # a participant's or the operator's vault-mode command
            return vault_action(words[1:])
    try:
        parser = build_parser(words)
    except ConfigError as e:
        print(f"a402: nothing was run (config_invalid): {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(words)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `a402 ... | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 141
    except Exception as error:  # an expected failure is one line; anything else a traceback
        from a402.failure import EXIT_FAILED, expected_failure

        failure = expected_failure(error)
        if failure is None:
            raise
        print(failure.line(args.command), file=sys.stderr)
        return EXIT_FAILED


def add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--requests", type=int, default=5, help="paid requests to make")
    demo.add_argument("--act",
                      choices=("all", "exact", "channels", "agents", "mandates", "bitcoin"),
                      default="all",
                      help="exact: paid HTTP requests; channels: the same API paid through "
                           "one A402 channel via a vault; agents: agents find, pay and rate "
                           "each other over A2A; mandates: an owner's mandate bounds the "
                           "agent; bitcoin: a Taproot channel's transactions, validated "
                           "without a node (default: the first four)")
    demo.add_argument("--channel-requests", type=int, default=100,
                      help="paid requests through the channel (acts channels, bitcoin)")


def add_devnet_arguments(devnet: argparse.ArgumentParser) -> None:
    from a402.chain.locate import DEFAULT_MANIFEST

    devnet.add_argument("--port", type=int, default=8545)
    devnet.add_argument("--block-time", type=float, default=None,
                        help="seconds between blocks (default: mine on every transaction)")
    devnet.add_argument("--chain-id", type=int, default=31337,
                        help="the chain id anvil reports (default: %(default)s); a public "
                             "chain's id (84532 = base-sepolia) lets v1 clients, which only "
                             "know v1 network names, be tried locally, with a loud warning")
    devnet.add_argument("--manifest-out", default=DEFAULT_MANIFEST,
                        help="where to write the manifest (default: %(default)s)")


def add_config_arguments(config: argparse.ArgumentParser) -> None:
    config.add_argument("action", choices=("show",), help="show: the settings in effect")
    config.add_argument("name", nargs="?", metavar="COMMAND",
                        help="one command: all its flags (default: every command, only the "
                             "settings the environment or the file set)")
    config.add_argument("--json", action="store_true", help="JSON instead of a table")


def run_config(args: argparse.Namespace) -> int:
    """``a402 config show [COMMAND]``: each flag's value when not given on the command line,
    and where it comes from (``env A402_...``, ``file PATH`` or ``default``). Passwords in
    URLs are masked; key files are paths, never keys."""
    import json

    from a402.failure import CommandFailed
    from a402.settings import load_config

    names = [c.name for c in COMMANDS if c.name != "config"]
    if args.name is not None and args.name not in names:
        raise CommandFailed("usage", f"no command {args.name!r}; one of {', '.join(names)}",
                            nothing_paid=True)
    rows = []
    for command in COMMANDS:
        if command.name == "config" or args.name not in (None, command.name):
            continue
        sub = argparse.ArgumentParser(prog=f"a402 {command.name}")
        getattr(importlib.import_module(command.module), command.add)(sub)
        for source in configure(sub, command.name):
            if args.name is None and source.origin == "default":
                continue
            rows.append({"command": source.section.replace(".", " "), "flag": source.flag,
                         "value": _masked(source.value), "from": source.origin})
    path = load_config().path
    if args.json:
        print(json.dumps({"configFile": str(path) if path else None, "settings": rows},
                         indent=2))
        return 0
    print(f"config file: {path or 'none (a402.toml or .a402/config.toml, or $A402_CONFIG)'}")
    if not rows:
        print("no setting comes from the environment or a config file")
        return 0
    widths = [max(len(str(r[k])) for r in rows) for k in ("command", "flag", "value")]
    for r in rows:
        print(f"{r['command']:<{widths[0]}}  {r['flag']:<{widths[1]}}  "
              f"{r['value']!s:<{widths[2]}}  {r['from']}")
    return 0


def _masked(value: object) -> object:
    """``value`` with the password of any URL in it replaced by ``***``."""
    import re

    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"(://[^:/@\s]+):[^@/\s]+@", r"\1:***@", value)
    return value


def run_demo(args: argparse.Namespace) -> int:
    from a402.demos.exact import run_demo as demo

    return demo(requests=args.requests, act=args.act,
                    channel_requests=args.channel_requests)


def run_devnet(args: argparse.Namespace) -> int:
    from a402.chain.deploy import deploy_dev_stack
    from a402.chain.node import MAX_CHAIN_ID, public_chain_id_warning, start_anvil
    from a402.failure import ensure_port_free

    if not 1 <= args.chain_id <= MAX_CHAIN_ID:
        print(f"a402 devnet: --chain-id must be in 1..{MAX_CHAIN_ID}", file=sys.stderr)
        return 2
    out = Path(args.manifest_out)
    _refuse_a_live_manifest(out)
    ensure_port_free("127.0.0.1", args.port)  # else anvil fails and we would deploy to
    #                                           whatever chain already answers there
    warning = public_chain_id_warning(args.chain_id)
    if warning:
        _shout(warning)
    with start_anvil(port=args.port, block_time=args.block_time,
                     chain_id=args.chain_id) as chain:
        manifest = deploy_dev_stack(chain, asc_manager=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_secret(out, manifest.to_json())  # it holds (public, development) keys
        keys = {role: manifest.account(role) for role in ("facilitator", "provider", "client")}
        keys["vault"] = manifest.account("client", 1)  # its own gas key: nonces never collide
        for name, account in keys.items():
            _write_secret(out.with_name(f"{name}.key"), account.private_key)
        print(manifest.to_json())
        print(f"\nanvil on {chain.rpc_url} ({manifest.network}); manifest and the "
              f"facilitator/provider/client/vault key files written to {out.parent}/. "
              "Ctrl-C stops it.", file=sys.stderr)
        if warning:
            _shout(warning)  # again, below the manifest, where it is read
        _wait_for_signal()
    return 0


def _refuse_a_live_manifest(path: Path) -> None:
    """Refuse to write over a manifest whose chain still answers: services started from it
    (and their key files next to it) are running against that chain."""
    import json
    from urllib.parse import urlsplit

    from a402.failure import CommandFailed, port_answers

    try:
        rpc = json.loads(path.read_text()).get("rpcUrl")
    except (OSError, ValueError, AttributeError):
        return  # no manifest, or not one: nothing running can be using it
    if not isinstance(rpc, str):
        return
    where = urlsplit(rpc)
    if where.hostname and where.port and port_answers(where.hostname, where.port):
        raise CommandFailed(
            "manifest_in_use", f"{path} belongs to the devnet still running at {rpc}, which "
                               "services may be using; stop that devnet first, or write this "
                               "one elsewhere with --manifest-out DIR/devnet.json")


def _shout(warning: str) -> None:
    """A warning framed so it is not lost in a terminal's scroll."""
    bar = "!" * 78
    print(f"\n{bar}\n{warning}\n{bar}\n", file=sys.stderr)


def _write_secret(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text + "\n")


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
