"""The ``a402`` command: one entry point, one sub-command per role.

Sub-commands import their modules lazily so that ``a402 pay`` does not pay for
loading the facilitator's database layer, and a missing optional dependency
only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from a402 import __version__
from a402.chain.locate import DEFAULT_MANIFEST


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="a402", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"a402 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the end-to-end demo on an embedded chain")
    demo.add_argument("--requests", type=int, default=5, help="paid requests to make")
    demo.add_argument("--act", choices=("all", "exact", "channels", "agents", "mandates"),
                      default="all",
                      help="exact: paid HTTP requests; channels: the same API paid through "
                           "one A402 channel via a vault; agents: agents find, pay and rate "
                           "each other over A2A; mandates: an owner's mandate bounds the "
                           "agent (default: all four)")
    demo.add_argument("--channel-requests", type=int, default=100,
                      help="paid requests through the channel (act channels)")
    demo.set_defaults(run=_demo)

    devnet = commands.add_parser("devnet", help="run anvil with the contracts deployed")
    devnet.add_argument("--port", type=int, default=8545)
    devnet.add_argument("--block-time", type=float, default=None,
                        help="seconds between blocks (default: mine on every transaction)")
    devnet.add_argument("--chain-id", type=int, default=31337,
                        help="the chain id anvil reports (default: %(default)s); a public "
                             "chain's id (84532 = base-sepolia) lets v1 clients, which only "
                             "know v1 network names, be tried locally, with a loud warning")
    devnet.add_argument("--manifest-out", default=DEFAULT_MANIFEST,
                        help="where to write the manifest (default: %(default)s)")
    devnet.set_defaults(run=_devnet)

    from a402.facilitator.command import add_facilitator_arguments, run_facilitator

    fac = commands.add_parser("facilitator", help="verify and settle x402 `exact` payments")
    add_facilitator_arguments(fac)
    fac.set_defaults(run=run_facilitator)

    from a402.provider.command import add_gateway_arguments, run_gateway_command

    gw = commands.add_parser("gateway", help="put an x402 paywall in front of any HTTP API")
    add_gateway_arguments(gw)
    gw.set_defaults(run=run_gateway_command)

    from a402.client.pay import add_pay_arguments, run_pay

    pay = commands.add_parser("pay", help="fetch a paid URL, paying with x402 `exact`")
    add_pay_arguments(pay)
    pay.set_defaults(run=run_pay)

    from a402.client.mandate_command import add_mandate_arguments, run_mandate

    mandate = commands.add_parser(
        "mandate", help="what an owner lets an agent spend: create (sign), show, verify, "
                        "revoke on-chain, list spending")
    add_mandate_arguments(mandate)
    mandate.set_defaults(run=run_mandate)

    from a402.client.mandate_command import add_audit_arguments, run_audit

    audit = commands.add_parser(
        "audit", help="print the evidence chain of mandated payments and verify every "
                      "signature in it, offline")
    add_audit_arguments(audit)
    audit.set_defaults(run=run_audit)

    from a402.agents.cli import add_agents_arguments, run_agents

    agents = commands.add_parser("agents", help="register, update, show, search and rate "
                                                "agents on-chain")
    add_agents_arguments(agents)
    agents.set_defaults(run=run_agents)

    from a402.agents.indexer.command import add_indexer_arguments, run_indexer

    indexer = commands.add_parser("indexer", help="index agents, payments and ERC-8004 events "
                                                  "and serve a search API")
    add_indexer_arguments(indexer)
    indexer.set_defaults(run=run_indexer)

    from a402.client.account_command import (
        add_channels_arguments,
        add_payouts_arguments,
        add_pool_arguments,
        run_channels,
        run_payouts,
        run_pool,
    )

    channels = commands.add_parser(
        "channels", help="a key's A402 channels from the chain; force-close one as its "
                         "client without the vault")
    add_channels_arguments(channels)
    channels.set_defaults(run=run_channels)

    payouts = commands.add_parser(
        "payouts", help="payouts the token refused, owed to a key by the ASCManager: show, "
                        "withdraw (to any address), relay a signed order")
    add_payouts_arguments(payouts)
    payouts.set_defaults(run=run_payouts)

    pool = commands.add_parser(
        "pool", help="a key's pool balance with a vault, from the chain; take it out without "
                     "the vault")
    add_pool_arguments(pool)
    pool.set_defaults(run=run_pool)

    from a402.client.history import add_balance_arguments, run_balance

    balance = commands.add_parser("balance", help="a key's money: wallet, pools, channels")
    add_balance_arguments(balance)
    balance.set_defaults(run=run_balance)

    from a402.client.history import add_payments_arguments, run_payments

    payments = commands.add_parser("payments", help="list payments: this machine's, or a "
                                   "facilitator's, gateway's or vault's (operator token)")
    add_payments_arguments(payments)
    payments.set_defaults(run=run_payments)

    from a402.client.history import add_receipt_arguments, run_receipt

    receipt = commands.add_parser("receipt", help="one payment end to end, checked on-chain")
    add_receipt_arguments(receipt)
    receipt.set_defaults(run=run_receipt)

    vault = commands.add_parser(
        "vault", help="run the Liquidity Vault (pays A402 for clients); vault mode: "
                      "`a402 vault deposit|balance|statement|withdraw|settle-now|status`",
        epilog="Vault mode (--mode vault) participants and operator: a402 vault ACTION "
               "--help, ACTION one of deposit, balance, statement, withdraw, settle-now, "
               "status.")
    from a402.vault.command import add_vault_arguments, run_vault

    add_vault_arguments(vault)
    vault.set_defaults(run=run_vault)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] == "vault":
        from a402.vault.mode_command import ACTIONS
        from a402.vault.mode_command import main as vault_action

        if argv[1] in ACTIONS:  # a participant's or the operator's vault-mode command
            return vault_action(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


def _demo(args: argparse.Namespace) -> int:
    from a402.demos.exact import run_demo

    return run_demo(requests=args.requests, act=args.act,
                    channel_requests=args.channel_requests)


def _devnet(args: argparse.Namespace) -> int:
    from a402.chain.deploy import deploy_dev_stack
    from a402.chain.node import MAX_CHAIN_ID, public_chain_id_warning, start_anvil

    if not 1 <= args.chain_id <= MAX_CHAIN_ID:
        print(f"a402 devnet: --chain-id must be in 1..{MAX_CHAIN_ID}", file=sys.stderr)
        return 2
    warning = public_chain_id_warning(args.chain_id)
    if warning:
        _shout(warning)
    with start_anvil(port=args.port, block_time=args.block_time,
                     chain_id=args.chain_id) as chain:
        manifest = deploy_dev_stack(chain, asc_manager=True)
        out = Path(args.manifest_out)
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
