"""``a402 indexer``: follow the agent contracts and ERC-8004 registries, serve the search API.

The lead wires it into ``a402.cli``::

    from a402.agents.indexer.command import add_indexer_arguments, run_indexer
    idx = commands.add_parser("indexer", help="index agents and serve the search API")
    add_indexer_arguments(idx)
    idx.set_defaults(run=run_indexer)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from a402.agents.indexer.sync import Contracts, Indexer
from a402.failure import CommandFailed
from a402.settings import chain_data_default, chain_data_url

log = logging.getLogger(__name__)


def add_indexer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument("--db", default=chain_data_default("indexer.db"),
                        help="SQLAlchemy URL of the index; {chain_id} is the chain's id "
                             "(default: %(default)s)")
    parser.add_argument("--schema", help="PostgreSQL schema to keep the tables in")
    parser.add_argument("--suite", help="JSON file with the AgentSuite addresses (factory, "
                        "registry, curated_registry, identity, reputation, validation)")
    parser.add_argument("--factory", action="append", default=[],
                        help="an AgentFactory whose agents to follow (repeatable)")
    parser.add_argument("--registry", action="append", default=[], metavar="ADDRESS[=LABEL]",
                        help="an agent registry to follow, optionally labelled (repeatable)")
    parser.add_argument("--identity", help="ERC-8004 IdentityRegistry")
    parser.add_argument("--reputation", help="ERC-8004 ReputationRegistry")
    parser.add_argument("--validation", help="ERC-8004 ValidationRegistry")
    parser.add_argument("--start-block", type=int, default=0,
                        help="first block to read: at or before the contracts' deployment")
    parser.add_argument("--confirmations", type=int, default=0,
                        help="blocks to stay behind the head (reorganisations deeper than "
                        "this are still undone, just later)")
    parser.add_argument("--batch-blocks", type=int, default=2_000,
                        help="initial block range per eth_getLogs (adapts)")
    parser.add_argument("--agent-filter", choices=("auto", "topics", "addresses"),
                        default="auto", help="how agent logs are selected (see docs)")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--reputation-interval", type=int, default=600,
                        help="chain seconds between reputation refreshes without new input")
    parser.add_argument("--reputation-pause", type=float, default=30.0,
                        help="wall seconds between reputation passes at most")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4030)
    parser.add_argument("--once", action="store_true",
                        help="catch up with the chain, print a report and exit")
    parser.add_argument("--no-api", action="store_true", help="index only, serve nothing")
    parser.add_argument("--console", action="store_true",
                        help="also serve the operator console at /console: the indexed "
                             "agents and their reputation, signed in with --operator-token")
    parser.add_argument("--operator-token", metavar="TOKEN",
                        help="the console's sign-in token (16+ characters; required with "
                             "--console)")


def contracts_from_args(args: argparse.Namespace) -> Contracts:
    base = Contracts.from_suite(_suite(args.suite)) if args.suite else Contracts(factories=())
    registries = dict(base.registries)
    for item in args.registry:
        address, _, label = item.partition("=")
        registries[address] = label or "registry"
    contracts = Contracts(
        factories=(*base.factories, *args.factory), registries=registries,
        identity=args.identity or base.identity, reputation=args.reputation or base.reputation,
        validation=args.validation or base.validation)
    if not contracts.factories:
        raise CommandFailed("usage", "give --suite or at least one --factory")
    return contracts


def _suite(path: str) -> dict[str, str]:
    """The AgentSuite addresses in ``path`` (a manifest after ``a402 agents deploy``, or the
    suite itself), or CommandFailed saying what is missing and how to get it."""
    try:
        suite = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CommandFailed("manifest_not_found", f"--suite {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise CommandFailed("manifest_invalid", f"--suite {path}: {e}") from None
    addresses = suite.get("agents", suite) if isinstance(suite, dict) else None
    missing = [k for k in ("factory", "registry", "curated_registry")
               if not isinstance(addresses, dict) or k not in addresses]
    if missing:
        raise CommandFailed(
            "agents_not_deployed",
            f"--suite {path} names no agent contracts ({', '.join(missing)} missing): run "
            f"`a402 agents deploy --manifest {path}` first")
    assert isinstance(addresses, dict)
    return addresses


def run_indexer(args: argparse.Namespace) -> int:
    import uvicorn

    from a402.agents.indexer.app import create_app
    from a402.agents.indexer.search import Search
    from a402.agents.indexer.store import IndexStore
    from a402.chain.node import connect
    from a402.failure import ensure_port_free, reach_chain

    contracts = contracts_from_args(args)
    if args.console and (not args.operator_token or len(args.operator_token) < 16):
        raise CommandFailed("usage", "--console needs --operator-token of 16+ characters "
                                     "(the console signs in with it)")
    if not (args.once or args.no_api):
        ensure_port_free(args.host, args.port)
    chain = connect(args.rpc)
    reach_chain(chain)
    db = chain_data_url(args.db, chain.chain_id, legacy="sqlite:///a402-indexer.db",
                        warn=lambda m: print(f"a402 indexer: {m}", file=sys.stderr))
    store = IndexStore(db, schema=args.schema)
    indexer = Indexer(
        store, args.rpc, contracts, start_block=args.start_block,
        confirmations=args.confirmations, batch_blocks=args.batch_blocks,
        agent_filter=args.agent_filter, reputation_interval=args.reputation_interval,
        reputation_pause=args.reputation_pause)
    if args.once:
        report = indexer.sync()
        print(json.dumps(report.__dict__))
        return 0
    stop = threading.Event()
    worker = threading.Thread(target=indexer.run, args=(stop, args.poll_interval),
                              name="a402-indexer", daemon=True)
    worker.start()
    try:
        if args.no_api:
            print(json.dumps({"indexing": args.rpc, "db": db}), file=sys.stderr)
            while worker.is_alive():
                worker.join(1.0)
        else:
            print(json.dumps({"indexer": f"http://{args.host}:{args.port}", "rpc": args.rpc}),
                  file=sys.stderr)
            search = Search(store)
            app: Any = create_app(search, stale_after=max(30.0, 10 * args.poll_interval))
            if args.console:
                from a402.agents.indexer.console_view import indexer_console

                app = indexer_console(app, search, args.operator_token)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        stop.set()
        worker.join(timeout=10)
    return 0


__all__ = ["add_indexer_arguments", "contracts_from_args", "run_indexer"]
