"""``a402 mcp serve``: put an x402 paywall in front of an existing MCP server.

    a402 mcp serve --upstream http://127.0.0.1:8000/mcp --tool 'forecast=0.001' \\
        --manifest .a402/devnet.json --facilitator http://127.0.0.1:4021
    a402 mcp serve --upstream-command 'python weather_server.py' --tool 'forecast=0.001' \\
        --manifest .a402/devnet.json --facilitator http://127.0.0.1:4021 --stdio

As ``a402 gateway`` does for HTTP: the protected server is not changed. Each ``--tool``
prices one tool in token units (``NAME=PRICE``, or ``NAME=exact:PRICE``; or, billed by
use, ``NAME=upto:MAX`` or ``NAME=upto:MAX/UNIT``: the upstream reports the units a call
used in its result's ``_meta["a402/usage"]``, :mod:`a402.mcp.usage`); the other tools
are free; ``NAME=a402:PRICE`` (with ``--a402`` and its flags, as for ``a402 gateway``)
sells a tool inside Atomic Service Channels, at ``POST /mcp/a402/NAME``, paid by vaults
(:mod:`a402.mcp.channels`). The proxy serves streamable HTTP at ``http://HOST:PORT/mcp`` (or, with
``--stdio``, MCP over this process's stdin/stdout). Its replay ledger (``--ledger-db``)
must be shared (one PostgreSQL URL) by every process paid to the same ``--pay-to`` that
could receive the same payment, as the gateway's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass

from a402.failure import MoneyFirstParser
from a402.provider.command import A402Options, AttestationOptions, TokenOptions
from a402.provider.settings import ChannelTimeouts
from a402.settings import add_flags, chain_data_default, chain_data_url, from_args, setting


@dataclass(frozen=True, kw_only=True)
class McpUpstreamOptions:
    """The MCP server to protect, what its tools cost, and who settles."""

    upstream: str | None = setting(None, help="streamable HTTP URL of the MCP server to "
                                              "protect (e.g. http://127.0.0.1:8000/mcp)")
    upstream_command: str | None = setting(
        None, metavar="COMMAND",
        help="or: the command that starts it speaking MCP on stdio (split like a shell; "
             "it runs with this process's environment)")
    tool: tuple[str, ...] = setting(
        (), metavar="'NAME=PRICE'",
        help="a paid tool and its price in token units (or 'NAME=upto:MAX/UNIT', billed "
             "by the units its result reports in _meta['a402/usage']); repeat for more")
    facilitator: str = setting(help="x402 facilitator URL")


@dataclass(frozen=True, kw_only=True)
class McpServeOptions:
    """Where the paywall keeps its replay ledger and serves."""

    ledger_db: str = setting(
        chain_data_default("mcp-ledger.db"), metavar="URL",
        help="SQLAlchemy URL of the replay ledger (which payments bought a tool call); "
             "processes paid to the same --pay-to must share one PostgreSQL database; "
             "{chain_id} is the id of the chain it charges on (default: %(default)s)")
    host: str = setting("127.0.0.1", help="address to serve on (default: %(default)s)")
    port: int = setting(4403, help="port to serve on (default: %(default)s)")
    stdio: bool = setting(False, help="serve MCP on stdin/stdout instead of HTTP")
    resource_prefix: str = setting(
        "mcp://tool/", help="a tool's resource URL is this plus its name (default: "
                            "%(default)s)")
    max_timeout_seconds: int = setting(
        60, help="how long a payment may take, as offered (default: %(default)s)")


#: The money state of every failure before the paywall serves: it has taken no payment.
NOT_STARTED = "not started, nothing was paid"


#: ``a402 mcp serve``'s flags, one group each.
FLAG_GROUPS: tuple[tuple[str, type], ...] = (
    ("upstream", McpUpstreamOptions), ("token", TokenOptions), ("serving", McpServeOptions),
    ("A402 channel payments (tools priced 'a402')", A402Options),
    ("A402 attestation", AttestationOptions), ("A402 timeouts", ChannelTimeouts),
)


def add_mcp_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="mcp_command", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve", help="a paywall in front of an existing MCP server (HTTP or stdio)",
        description=__doc__.splitlines()[0] if __doc__ else None)
    for title, group in FLAG_GROUPS:
        add_flags(serve, group, title)
    if isinstance(serve, MoneyFirstParser):  # a paywall refused at its command line
        serve.state = NOT_STARTED


def run_mcp(args: argparse.Namespace) -> int:
    if args.mcp_command == "serve":
        return run_mcp_serve(args)
    raise AssertionError(args.mcp_command)  # pragma: no cover - argparse refuses others


def run_mcp_serve(args: argparse.Namespace) -> int:
    """Serve; or fail before serving with one line that says the money state first
    (``a402 mcp serve: not started, nothing was paid (REASON): ...``, exit 2): every such
    failure happens before the paywall answers a call, so no payment was taken. A
    failure once it serves is the CLI's (``a402 mcp: failed (...)``: no claim either way)."""
    from a402.chain.deploy import TokenInfo
    from a402.failure import CommandFailed, ensure_port_free, load_manifest
    from a402.mcp.paywall import ToolPaywall
    from a402.mcp.prices import PriceError, parse_tool_spec
    from a402.mcp.proxy import MCP_PATH, Upstream
    from a402.wire.errors import WireError
    from a402.wire.networks import evm_chain_id

    def fail(message: str, reason: str = "usage") -> int:
        print(f"a402 mcp serve: {NOT_STARTED} ({reason}): {message}", file=sys.stderr)
        return 2

    upstream_options = from_args(McpUpstreamOptions, args)
    charge = from_args(TokenOptions, args)
    serve = from_args(McpServeOptions, args)
    if (upstream_options.upstream is None) == (upstream_options.upstream_command is None):
        return fail("give exactly one of --upstream URL and --upstream-command COMMAND")
    if upstream_options.upstream is not None:
        upstream = Upstream.http(upstream_options.upstream)
    else:
        try:
            # As a shell would start it: with this process's environment (the SDK's
            # default passes only a few variables such as PATH and HOME).
            upstream = Upstream.command(shlex.split(upstream_options.upstream_command or ""),
                                        env=dict(os.environ))
        except ValueError as e:
            return fail(f"--upstream-command: {e}")
    if not upstream_options.tool:
        return fail("price at least one tool: --tool 'NAME=PRICE'", "no_tools")
    if charge.manifest:
        try:
            manifest = load_manifest(charge.manifest)
        except CommandFailed as e:
            return fail(e.message, e.reason)
        conflicts = [f"--{flag} {given} (the manifest's is {own})" for flag, given, own in (
            ("network", charge.network, manifest.network),
            ("asset", charge.asset, manifest.token.address),
        ) if given is not None and given.lower() != own.lower()]
        if conflicts:
            return fail(f"{charge.manifest} names the chain and token, which "
                        f"{'; '.join(conflicts)} contradict: drop them or --manifest",
                        "conflicting_options")
        token, network = manifest.token, manifest.network
        pay_to = charge.pay_to or manifest.account("provider").address
        contracts: dict[str, str] | None = manifest.contracts
    elif charge.asset and charge.network and charge.pay_to:
        token = TokenInfo(charge.asset, charge.asset_name, "", charge.asset_version,
                          charge.decimals)
        network, pay_to = charge.network, charge.pay_to
        contracts = None
    else:
        return fail("give --manifest, or --asset, --network and --pay-to")
    try:
        prices = [parse_tool_spec(spec, token.decimals) for spec in upstream_options.tool]
    except PriceError as e:
        return fail(str(e), "bad_price")
    channel_priced = [p.tool for p in prices if p.scheme == "a402"]
    channels = None
    if args.a402:
        from a402.provider.command import GatewayUsageError, a402_gateway

        if not channel_priced:
            return fail("--a402 sells the tools priced 'a402' (--tool 'NAME=a402:PRICE'): "
                        "price one")
        if serve.stdio:
            return fail("tools priced 'a402' are sold at HTTP endpoints: drop --stdio")
        try:
            channels = a402_gateway(args, token=token.address, network=network,
                                    manifest_contracts=contracts)
        except GatewayUsageError as e:
            return fail(str(e))
    elif channel_priced:
        return fail(f"tool {channel_priced[0]!r} is priced 'a402': sold only in A402 channels, "
                    "which need --a402 (and its flags, as for a402 gateway)")
    else:
        from a402.provider.command import a402_only_flags_given

        stray = a402_only_flags_given(args)
        if stray:
            return fail(f"{', '.join(stray)}: only with --a402")
    try:
        chain_id = evm_chain_id(network)
    except WireError as e:
        return fail(f"--network {network}: {e.message or e.reason}")
    ledger_db = chain_data_url(serve.ledger_db, chain_id)
    try:
        paywall = ToolPaywall(prices, pay_to=pay_to, token=token, network=network,
                              facilitator=upstream_options.facilitator, ledger=ledger_db,
                              resource_prefix=serve.resource_prefix,
                              max_timeout_seconds=serve.max_timeout_seconds)
    except ValueError as e:
        return fail(str(e))
    announcement = {"upstream": str(upstream), "network": network, "asset": token.address,
                    "payTo": pay_to, "tools": {p.tool: str(p.amount) for p in prices},
                    **(channels.announcement if channels is not None else {})}
    if any(p.scheme != "exact" for p in prices):  # upto: the maximum and the unit price
        announcement["schemes"] = {p.tool: p.scheme if p.scheme != "upto"
                                   else f"upto, {p.unit} per unit" for p in prices}
    if serve.stdio:
        from functools import partial

        import anyio

        from a402.mcp.proxy import UpstreamFailed, serve_stdio

        def announce_stdio() -> None:  # once the upstream answered, as over HTTP
            print(json.dumps({**announcement, "mcp": "stdio"}), file=sys.stderr, flush=True)

        try:
            anyio.run(partial(serve_stdio, upstream, paywall, on_ready=announce_stdio))
        except UpstreamFailed as e:  # before it answered a call: nothing was paid
            return fail(str(e), e.reason)
        return 0
    from a402.mcp.proxy import UpstreamFailed, proxy_app
    from a402.serving import run as serve_app

    try:
        ensure_port_free(serve.host, serve.port)
    except CommandFailed as e:
        return fail(e.message, e.reason)
    url = f"http://{serve.host}:{serve.port}{MCP_PATH}"

    def announce() -> None:  # once the upstream answered: a failed start never announces
        print(json.dumps({**announcement, "mcp": url}), file=sys.stderr, flush=True)

    failures: list[UpstreamFailed] = []

    def upstream_failed(failure: UpstreamFailed) -> None:
        # Before the server listened: said here in one line, and the server's own account
        # of the failed startup (the traceback, "Application startup failed") silenced;
        # the cause is at debug level (a402.mcp.proxy).
        failures.append(failure)

    def unless_failed(_record: logging.LogRecord) -> bool:
        return not failures

    server_log = logging.getLogger("uvicorn.error")
    server_log.addFilter(unless_failed)
    try:
        serve_app(proxy_app(upstream, paywall, on_ready=announce, on_failure=upstream_failed,
                            a402=channels.config if channels is not None else None),
                  host=serve.host,
                  port=serve.port, log_level="info" if args.verbose else "warning")
    except SystemExit:
        if failures:  # uvicorn's exit after a failed startup: this failure, said once
            return fail(str(failures[0]), failures[0].reason)
        raise
    finally:
        server_log.removeFilter(unless_failed)
    if failures:  # pragma: no cover - uvicorn exits after a failed startup
        return fail(str(failures[0]), failures[0].reason)
    return 0
