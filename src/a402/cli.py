"""The ``a402`` command: one entry point, one sub-command per role.

Sub-commands import their modules lazily so that ``a402 pay`` does not pay for
loading the facilitator's database layer, and a missing optional dependency
only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from a402 import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="a402", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"a402 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the end-to-end demo on an embedded chain")
    demo.add_argument("--requests", type=int, default=5, help="paid requests to make")
    demo.add_argument("--act", choices=("all", "exact", "channels", "agents"), default="all",
                      help="exact: paid HTTP requests; channels: the same API paid through "
                           "one A402 channel via a vault; agents: agents find, pay and rate "
                           "each other over A2A (default: all three)")
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
    devnet.add_argument("--manifest-out", default=".a402/devnet.json",
                        help="where to write the manifest (default: %(default)s)")
    devnet.set_defaults(run=_devnet)

    from a402.facilitator.command import add_facilitator_arguments, run_facilitator

    fac = commands.add_parser("facilitator", help="verify and settle x402 `exact` payments")
    add_facilitator_arguments(fac)
    fac.set_defaults(run=run_facilitator)

    gw = commands.add_parser("gateway", help="put an x402 paywall in front of any HTTP API")
    gw.add_argument("--upstream", required=True, help="base URL of the API to protect")
    gw.add_argument("--route", action="append", required=True, metavar="'METHOD /path/*=PRICE'",
                    help="a paid route and its price in token units; repeat for more")
    gw.add_argument("--facilitator", required=True, help="x402 facilitator URL")
    gw.add_argument("--manifest", help="devnet manifest: token, network and default pay-to")
    gw.add_argument("--pay-to", help="address that receives payments")
    gw.add_argument("--network", help="CAIP-2 network, e.g. eip155:8453")
    gw.add_argument("--asset", help="EIP-3009 token address")
    gw.add_argument("--asset-name", default="USD Coin", help="token's EIP-712 domain name")
    gw.add_argument("--asset-version", default="2", help="token's EIP-712 domain version")
    gw.add_argument("--decimals", type=int, default=6)
    gw.add_argument("--settle-before-serve", action="store_true",
                    help="settle on-chain before calling the upstream")
    gw.add_argument("--public-url", help="external base URL, for resource URLs behind a proxy")
    gw.add_argument("--ledger-db", metavar="URL", default="sqlite:///a402-provider-ledger.db",
                    help="SQLAlchemy URL of the replay ledger (which payments bought a "
                         "response); replicas, and gateways paid to the same --pay-to, must "
                         "share one PostgreSQL database (default: %(default)s)")
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--port", type=int, default=4402)
    gw.set_defaults(run=_gateway, a402_options=_add_gateway_a402_arguments(gw))

    from a402.client.pay import add_pay_arguments, run_pay

    pay = commands.add_parser("pay", help="fetch a paid URL, paying with x402 `exact`")
    add_pay_arguments(pay)
    pay.set_defaults(run=run_pay)

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

    vault = commands.add_parser("vault", help="run the Liquidity Vault (pays A402 for clients)")
    from a402.vault.command import add_vault_arguments, run_vault

    add_vault_arguments(vault)
    vault.set_defaults(run=run_vault)

    return parser


def _add_gateway_a402_arguments(gw: argparse.ArgumentParser) -> list[tuple[str, str, object]]:
    """``a402 gateway``'s channel-payment options; returns (flag, dest, default) of each
    option that means something only with ``--a402`` (see :mod:`a402.provider.command`)."""
    group = gw.add_argument_group(
        "A402 channel payments", "with --a402 the 402 also offers the `a402` scheme, paid by "
        "vaults inside Atomic Service Channels (simulated enclave: development only)")
    group.add_argument("--a402", action="store_true",
                       help="also accept A402 channel payments (needs --rpc, "
                            "--operator-key-file, --vault-measurement and "
                            "--allow-simulated-attestation)")
    options = [
        group.add_argument("--rpc", help="JSON-RPC URL of the chain the ASCManager is on"),
        group.add_argument("--operator-key-file", metavar="FILE",
                           help="file holding the provider's key (hex): the channels' "
                                "provider; it is paid, signs states, pays gas for "
                                "forceClose/closeASC"),
        group.add_argument("--manager", metavar="ADDRESS",
                           help="ASCManager address (default: the one --manifest names)"),
        group.add_argument("--channel-db", metavar="URL",
                           default="sqlite:///a402-provider-channels.db",
                           help="SQLAlchemy URL of the sealed channel records "
                                "(default: %(default)s)"),
        group.add_argument("--platform-file", metavar="FILE",
                           default=".a402/provider-platform.json",
                           help="the simulated enclave platform (created if missing; keep it; "
                                "default: %(default)s)"),
        group.add_argument("--identity-file", metavar="FILE",
                           default=".a402/provider-identity.bin",
                           help="the provider enclave's sealed identity; its key is the "
                                "channels' providerKey (created on first start, mode 0600; "
                                "keep it; default: %(default)s)"),
        group.add_argument("--measurement", metavar="HEX",
                           help="the provider enclave's code measurement, which vaults pin "
                                "(default: the measured a402 package)"),
        group.add_argument("--allow-simulated-attestation", action="store_true",
                           help="run the simulated enclave and accept simulated vault quotes "
                                "(INSECURE: development only)"),
        group.add_argument("--trust-root", action="append", metavar="HEX",
                           help="simulation root public key whose vault quotes are accepted "
                                "(default: this gateway's own platform root)"),
        group.add_argument("--nitro-root", metavar="PEM",
                           help="accept AWS Nitro vault enclaves chaining to this root (the "
                                "AWS root, checked by its fingerprint), and no simulated ones"),
        group.add_argument("--vault-measurement", action="append", metavar="HEX",
                           help="vault enclave code measurement allowed to open tunnels "
                                "(repeatable)"),
        group.add_argument("--ack-timeout", type=float, metavar="SECONDS",
                           help="Δ_ack: no ACK that long after REVEAL, and the provider claims "
                                "on-chain (default: A402Config's, 30)"),
        group.add_argument("--lock-timeout", type=float, metavar="SECONDS",
                           help="how long one EXEC holds a channel; keep it below the vaults' "
                                "Δ_lock (default: A402Config's, 20)"),
    ]
    return [(o.option_strings[0], o.dest, o.default) for o in options]


def main(argv: Sequence[str] | None = None) -> int:
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


def _gateway(args: argparse.Namespace) -> int:
    from a402.chain.deploy import Manifest, TokenInfo
    from a402.provider.gateway import run_gateway

    def fail(message: str) -> int:
        print(f"a402 gateway: {message}", file=sys.stderr)
        return 2

    contracts = None
    if args.manifest:
        manifest = Manifest.load(args.manifest)
        token, network = manifest.token, manifest.network
        pay_to = args.pay_to or manifest.account("provider").address
        contracts = manifest.contracts
    elif args.asset and args.network and args.pay_to:
        token = TokenInfo(args.asset, args.asset_name, "", args.asset_version, args.decimals)
        network, pay_to = args.network, args.pay_to
    else:
        return fail("give --manifest, or --asset, --network and --pay-to")
    channels = None
    if args.a402:
        from a402.provider.command import GatewayUsageError, a402_gateway

        try:
            channels = a402_gateway(args, token=token.address, network=network,
                                    manifest_contracts=contracts)
        except GatewayUsageError as e:
            return fail(str(e))
    else:
        stray = [flag for flag, dest, default in args.a402_options
                 if getattr(args, dest) != default]
        if stray:
            return fail(f"{', '.join(stray)}: only with --a402")
    url = f"http://{args.host}:{args.port}"
    started = False

    def announce() -> None:
        nonlocal started
        started = True
        announcement = {"gateway": url, "network": network, "asset": token.address,
                        "payTo": pay_to, **(channels.announcement if channels else {})}
        if args.public_url is None:
            announcement["warning"] = _HOST_NAMES_THE_RESOURCE
        print(json.dumps(announcement), file=sys.stderr, flush=True)

    try:
        run_gateway(
            upstream=args.upstream, routes=args.route, pay_to=pay_to, token=token,
            network=network, facilitator_url=args.facilitator, host=args.host, port=args.port,
            settle_before_serve=args.settle_before_serve, public_url=args.public_url,
            ledger_db=args.ledger_db,
            log_level="info" if args.verbose else "warning",
            a402=channels.config if channels else None, on_start=announce,
        )
    except ValueError as e:  # bad routes, a config the runtime refuses: before any port
        if started:
            raise
        return fail(str(e))
    return 0


_HOST_NAMES_THE_RESOURCE = (
    "no --public-url: each request's Host header names the resource, and the payer chooses "
    "it; another service paid to the same --pay-to must share this --ledger-db, or each "
    "must set --public-url, or one payment can be served by both")


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
