"""``a402 agents deploy|register|update|show|search|rate|serve``: the on-chain agent directory
by hand, and a paid agent served in front of any endpoint (``serve``).

Every action reads the chain and the contract addresses from a manifest
(``--manifest``, default ``.a402/devnet.json``, as ``a402 devnet`` writes it;
``a402 agents deploy`` adds the agent contracts to it) and refuses a chain
whose id differs from the manifest's, so a key is never used on the wrong
chain. Keys come from files (``--key-file``), never from the command line.

Results go to stdout as JSON (``search`` prints a table unless ``--json``),
problems to stderr as ``a402 agents: …``. Exit codes, stable for scripts:

    0  done
    1  the chain or the indexer refused or failed (revert, unreachable)
    2  usage or configuration error (bad arguments, key file, manifest, not the owner)
    3  not found (no such agent in this factory, no linked ERC-8004 identity)

Amounts on the command line are token units (``--price 0.002``), converted
exactly with the token's decimals (the manifest's token: 6). This module is
imported by ``a402``'s parser for every command, so the chain code is
imported only when an action runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from a402.chain.locate import DEFAULT_MANIFEST

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from a402.agents.card import OnchainCard
    from a402.agents.directory import AgentView
    from a402.agents.onchain import Agent, AgentSuite
    from a402.chain.deploy import Manifest
    from a402.chain.node import Chain

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3

DEFAULT_VERSION: Final = "1.0.0"


class UsageError(Exception):
    """Bad arguments or configuration: exit 2."""


class NotFound(Exception):
    """No such agent or identity: exit 3."""


# ---------------------------------------------------------------------------- parser


def add_agents_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``a402 agents``'s actions on ``parser`` (a sub-command parser)."""
    chain = argparse.ArgumentParser(add_help=False)
    chain.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="PATH",
                       help="manifest naming the chain and contracts (default: %(default)s)")
    chain.add_argument("--rpc", metavar="URL",
                       help="JSON-RPC URL of the chain (default: the manifest's rpcUrl)")
    actions = parser.add_subparsers(dest="agents_command", required=True, metavar="ACTION")

    deploy = actions.add_parser(
        "deploy", parents=[chain], help="deploy the agent contracts and add them to the manifest")
    deploy.add_argument("--key-file", metavar="F",
                        help="deployer key file (default: the manifest's deployer account)")
    deploy.add_argument("--curator", action="append", default=[], metavar="ADDRESS",
                        help="member of the curated registry (repeatable; default: the deployer)")
    deploy.add_argument("--threshold", type=int, default=1,
                        help="approvals the curated registry needs (default: %(default)s)")
    deploy.add_argument("--force", action="store_true",
                        help="deploy a new set even if the manifest names a live one")

    register = actions.add_parser(
        "register", parents=[chain], help="publish an agent's card on-chain (factory)")
    register.add_argument("--key-file", required=True, metavar="F",
                          help="key file of the account that sends (and by default owns) it")
    register.add_argument("--owner", metavar="ADDRESS",
                          help="owner of the new agent (default: the key's address)")
    register.add_argument("--activity-window", type=int, default=86_400, metavar="SECONDS",
                          help="how long the agent counts as active after each owner action "
                               "(default: %(default)s)")
    register.add_argument("--list", action="store_true",
                          help="also list it in the open AgentRegistry")
    register.add_argument("--erc8004", action="store_true",
                          help="also register an ERC-8004 identity linked to it")
    register.add_argument("--agent-uri", metavar="URI",
                          help="ERC-8004 agentURI (default: a data: URI holding a generated "
                               "registration file); implies --erc8004")
    _card_arguments(register)

    update = actions.add_parser(
        "update", parents=[chain], help="change an agent's card or liveness (owner only)")
    update.add_argument("agent", help="the agent's address")
    update.add_argument("--key-file", required=True, metavar="F", help="the owner's key file")
    update.add_argument("--free", action="store_true", help="stop charging (remove the terms)")
    update.add_argument("--heartbeat", action="store_true",
                        help="mark the agent active now (any owner change does too)")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True)
    state.add_argument("--disable", dest="enabled", action="store_const", const=False,
                       help="an agent that is disabled is never active")
    update.add_argument("--activity-window", type=int, metavar="SECONDS")
    update.add_argument("--list", action="store_true",
                        help="list it in the open AgentRegistry if it is not yet")
    _card_arguments(update)

    show = actions.add_parser(
        "show", parents=[chain], help="an agent's card, hash, terms, liveness and ratings")
    show.add_argument("agent", help="the agent's address")
    show.add_argument("--check-endpoint", action="store_true",
                      help="also fetch the card the agent serves and compare it with the chain")

    search = actions.add_parser(
        "search", parents=[chain], help="find agents by skill, text, price, network, liveness")
    search.add_argument("--skill", help="skill id or tag (exact, case-insensitive)")
    search.add_argument("--text", help="substring of the name, description or skills")
    search.add_argument("--max-price", metavar="AMOUNT",
                        help="most one task may cost, in token units (free agents always match)")
    search.add_argument("--decimals", type=int, metavar="N",
                        help="decimals --max-price is in (default: the manifest token's)")
    search.add_argument("--network", metavar="CAIP2", help="payable on this network")
    search.add_argument("--active", action="store_true", help="only agents active now")
    search.add_argument("--min-rating", type=float, metavar="SCORE",
                        help="least average contract rating, 0-100 (the indexer's "
                             "min_reputation when --indexer is given)")
    search.add_argument("--indexer", metavar="URL",
                        help="ask this indexer (GET URL/agents) instead of reading every agent "
                             "from the chain; its hits are re-checked on-chain")
    search.add_argument("--source", choices=("factory", "registry", "curated"),
                        default="factory",
                        help="every genuine agent (factory, the default), or only those "
                             "listed in the open or the curated registry")
    search.add_argument("--limit", type=int, metavar="N", help="stop after N hits")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")

    serve = actions.add_parser(
        "serve", parents=[chain],
        help="serve a paid A2A agent in front of an HTTP endpoint or a Python function")
    from a402.agents.serve_command import add_serve_arguments

    add_serve_arguments(serve)

    rate = actions.add_parser(
        "rate", parents=[chain], help="rate an agent: as a paying agent, and/or with ERC-8004")
    rate.add_argument("agent", help="the agent being rated")
    rate.add_argument("score", type=int, help="0 to 100")
    rate.add_argument("--key-file", required=True, metavar="F",
                      help="key file of the rating agent's owner (or of the ERC-8004 client)")
    rate.add_argument("--comment", default="", help="a few words on why")
    rate.add_argument("--rater", metavar="AGENT",
                      help="rate in the agent's contract as this agent (which must have paid "
                           "it through its till)")
    rate.add_argument("--erc8004", action="store_true",
                      help="leave ERC-8004 feedback for the agent's linked identity")
    rate.add_argument("--agent-id", type=int, metavar="ID",
                      help="ERC-8004 agentId to rate (default: the identity linked to the agent)")
    rate.add_argument("--payment-tx", metavar="HASH",
                      help="settlement of your payment to the agent, checked on-chain and "
                           "attached to the feedback as proofOfPayment")
    rate.add_argument("--skill", default="", help="the skill used (ERC-8004 tag2)")


def _card_arguments(parser: argparse.ArgumentParser) -> None:
    card = parser.add_argument_group("card (flags override --card)")
    card.add_argument("--card", metavar="FILE|URL",
                      help="an A2A AgentCard JSON file, or the URL serving it")
    card.add_argument("--name")
    card.add_argument("--description")
    card.add_argument("--url", help="the agent's JSON-RPC endpoint (A2A 1.0 and 0.3)")
    card.add_argument("--skill", action="append", metavar="SPEC",
                      help="ID[:NAME[:DESCRIPTION[:TAG,TAG]]] or a skill JSON object; "
                           "repeatable; replaces the skills")
    card.add_argument("--version", dest="card_version", metavar="VERSION",
                      help=f"the agent's version (default {DEFAULT_VERSION})")
    card.add_argument("--price", metavar="AMOUNT", help="price per task in token units")
    card.add_argument("--asset", metavar="ADDRESS", help="token (default: the manifest's)")
    card.add_argument("--decimals", type=int, metavar="N",
                      help="decimals of --asset (default: the manifest token's)")
    card.add_argument("--network", metavar="CAIP2", help="default: the manifest's")
    card.add_argument("--pay-to", metavar="ADDRESS", help="payee (default: the owner)")
    card.add_argument("--payment-description", metavar="TEXT",
                      help="the x402 extension's description")


# ------------------------------------------------------------------------------- run


def run_agents(args: argparse.Namespace) -> int:
    """Run one ``a402 agents`` action; the exit code says how it went (module docstring)."""
    from a402.agents.card import InvalidCard
    from a402.agents.directory import IndexerError, NoAgentSuite, NoPayment
    from a402.chain.tx import TransactionFailed
    from a402.keys import KeyFileError

    action = _ACTIONS[args.agents_command]
    try:
        return action(args)
    except (UsageError, KeyFileError, InvalidCard, NoAgentSuite, NoPayment, PermissionError) as e:
        return _fail(EXIT_USAGE, str(e))
    except NotFound as e:
        return _fail(EXIT_NOT_FOUND, str(e))
    except TransactionFailed as e:
        if e.tx_hash:
            return _fail(EXIT_FAILED, f"nothing changed but the gas paid: the chain refused it "
                                      f"(transaction {e.tx_hash} reverted): {e.reason}")
        return _fail(EXIT_FAILED, f"nothing was sent, nothing was paid: the chain refused it "
                                  f"(the call was simulated first): {e.reason}")
    except IndexerError as e:
        return _fail(EXIT_FAILED, str(e))


def _fail(code: int, message: str) -> int:
    print(f"a402 agents: {message}", file=sys.stderr)
    return code


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# ---- deploy


def _deploy(args: argparse.Namespace) -> int:
    from eth_account import Account

    from a402.agents.directory import SUITE_CONTRACTS, suite_addresses, with_suite
    from a402.agents.onchain import AgentSuite

    manifest = _manifest(args.manifest)
    if args.key_file:
        deployer = _key(args.key_file)
    else:
        try:
            deployer = Account.from_key(manifest.account("deployer").private_key)
        except KeyError as e:
            raise UsageError("the manifest has no deployer account; give --key-file") from e
    chain = _chain(args, manifest, deployer)
    if not args.force and set(SUITE_CONTRACTS.values()) <= set(manifest.contracts):
        factory = suite_addresses(manifest).factory
        if chain.w3.eth.get_code(factory):  # type: ignore[arg-type]
            raise UsageError(f"{args.manifest} already names live agent contracts "
                             f"(AgentFactory {factory}); --force deploys another set")
    if args.threshold < 1:
        raise UsageError("--threshold must be at least 1")
    suite = AgentSuite.deploy(chain, deployer, curators=args.curator, threshold=args.threshold)
    # The addresses go under the manifest's ``contracts`` (by contract name, like TestUSDC)
    # and, as ``SuiteAddresses``, under ``agents``: the form ``a402 indexer --suite`` reads,
    # so the same file configures both.
    data = json.loads(with_suite(manifest, suite.addresses).to_json())
    data["agents"] = suite.addresses.to_dict()
    Path(args.manifest).write_text(json.dumps(data, indent=2) + "\n")  # keeps the file's mode
    _print(suite.addresses.to_dict())
    return EXIT_OK


# ---- register / update


def _register(args: argparse.Namespace) -> int:
    from a402.agents.directory import register_identity

    manifest = _manifest(args.manifest)
    sender = _key(args.key_file)
    owner = _address(args.owner) if args.owner else sender.address
    if owner != sender.address and (args.list or args.erc8004 or args.agent_uri):
        raise UsageError("--list and --erc8004 are sent by the agent's owner: "
                         "leave out --owner, or run them later with the owner's key")
    base = _read_card(args.card) if args.card else None
    card = _card_from(base, args, manifest, owner)
    chain = _chain(args, manifest, sender)
    suite = _suite(chain, manifest)
    agent = suite.factory.create(sender, card, owner=owner, activity_window=args.activity_window)
    result: dict[str, Any] = {"agent": agent.address, "owner": owner}
    if args.list:
        suite.registry.enroll(sender, agent.address)
    result["listed"] = bool(args.list)
    identity = None
    if args.erc8004 or args.agent_uri:
        identity = register_identity(suite, sender, agent, agent_uri=args.agent_uri)
    result["erc8004"] = identity.to_json() if identity else None
    result.update(_card_state(agent))
    _print(result)
    return EXIT_OK


def _update(args: argparse.Namespace) -> int:
    from a402.agents.directory import refresh_identity

    manifest = _manifest(args.manifest)
    sender = _key(args.key_file)
    chain = _chain(args, manifest, sender)
    suite = _suite(chain, manifest)
    agent = _agent(suite, args.agent)
    owner = agent.owner()
    if owner != sender.address:
        raise UsageError(f"only the owner {owner} may update {agent.address} "
                         f"(the key file is {sender.address})")
    base = _read_card(args.card) if args.card else agent.card()
    card = _card_from(base, args, manifest, owner)
    changed = []
    if card != agent.card():
        agent.update_card(sender, card)
        changed.append("card")
        if refresh_identity(suite, sender, agent) is not None:
            changed.append("erc8004 agentURI")
    if args.enabled is not None and args.enabled != agent.enabled():
        agent.set_enabled(sender, args.enabled)
        changed.append("enabled" if args.enabled else "disabled")
    if args.activity_window is not None and args.activity_window != agent.activity_window():
        agent.set_activity_window(sender, args.activity_window)
        changed.append("activity window")
    if args.list and not suite.registry.is_listed(agent.address):
        suite.registry.enroll(sender, agent.address)
        changed.append("listed")
    if args.heartbeat and not changed:
        agent.heartbeat(sender)
        changed.append("heartbeat")
    _print({"agent": agent.address, "changed": changed, "active": agent.is_active(),
            **_card_state(agent)})
    return EXIT_OK


def _card_from(
    base: OnchainCard | None, args: argparse.Namespace, manifest: Manifest, owner: str
) -> OnchainCard:
    """``base`` (None: nothing yet) with the command line's card flags applied."""
    from a402.agents.card import Capabilities, OnchainCard, Payment
    from a402.agents.directory import PAYMENT_DESCRIPTION, a2a_interfaces, parse_skill
    from a402.evm.address import address_key
    from a402.provider.routes import RouteError, to_atomic

    name = args.name if args.name is not None else (base.name if base else None)
    if not name:
        raise UsageError("an agent needs a --name (or a --card)")
    description = (args.description if args.description is not None
                   else base.description if base else "")
    if args.url:
        interfaces = a2a_interfaces(args.url)
    elif base is not None:
        interfaces = base.interfaces
    else:
        raise UsageError("an agent needs a --url (or a --card)")
    if args.skill:
        skills = tuple(parse_skill(s, description) for s in args.skill)
    elif base is not None:
        skills = base.skills
    else:
        raise UsageError("an agent needs at least one --skill (or a --card)")

    old = base.payment if base else None
    payment = old
    if getattr(args, "free", False):
        if args.price or args.asset or args.network or args.pay_to:
            raise UsageError("--free takes no --price, --asset, --network or --pay-to")
        payment = None
    elif args.price or args.asset or args.network or args.pay_to:
        asset = _address(args.asset) if args.asset else (old.asset if old else
                                                         manifest.token.address)
        if args.price:
            decimals = args.decimals
            if decimals is None:
                if address_key(asset) != address_key(manifest.token.address):
                    raise UsageError(f"give --decimals for {asset} (not the manifest's token)")
                decimals = manifest.token.decimals
            try:
                amount = to_atomic(args.price, decimals)
            except (RouteError, ValueError) as e:
                raise UsageError(f"--price: {e}") from None
        elif old is not None:
            amount = old.amount
        else:
            raise UsageError("a paid agent needs a --price")
        payment = Payment(
            network=args.network or (old.network if old else manifest.network),
            asset=asset, amount=amount,
            pay_to=_address(args.pay_to) if args.pay_to else (old.pay_to if old else owner),
        )
    if payment is None:
        pay_description = ""
    elif args.payment_description is not None:
        pay_description = args.payment_description
    elif old is not None and base is not None:
        pay_description = base.payment_description
    else:
        pay_description = PAYMENT_DESCRIPTION
    return OnchainCard(
        name=name, description=description, interfaces=interfaces,
        version=args.card_version or (base.version if base else DEFAULT_VERSION),
        default_input_modes=base.default_input_modes if base else ("text/plain",),
        default_output_modes=base.default_output_modes if base else ("text/plain",),
        skills=skills, capabilities=base.capabilities if base else Capabilities(),
        payment=payment, payment_description=pay_description,
    )


def _read_card(source: str) -> OnchainCard:
    """An A2A card from a file or URL, in the chain's model (refused if the chain cannot hold
    it exactly: a hash match must never hide a difference)."""
    from a402.agents.card import OnchainCard

    if source.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(source, timeout=10, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise UsageError(f"cannot read a card from {source}: {e}") from None
    else:
        try:
            data = json.loads(Path(source).read_text())
        except OSError as e:
            raise UsageError(f"cannot read {source}: {e.strerror or e}") from None
        except ValueError as e:
            raise UsageError(f"{source} is not JSON: {e}") from None
    return OnchainCard.from_a2a(data)


def _card_state(agent: Agent) -> dict[str, Any]:
    return {"revision": agent.revision(), "cardHash": "0x" + agent.card_hash().hex(),
            "card": json.loads(agent.card_json())}


# ---- show


def _show(args: argparse.Namespace) -> int:
    from a402.agents.directory import find_identity, payment_json

    manifest = _manifest(args.manifest)
    chain = _chain(args, manifest)
    suite = _suite(chain, manifest)
    agent = _agent(suite, args.agent)
    info = agent.info()
    result: dict[str, Any] = {
        "agent": info.address, "factory": suite.factory.address, "owner": info.owner,
        "active": info.active, "enabled": info.enabled, "lastSeen": info.last_seen,
        "activityWindow": info.activity_window, "revision": info.revision,
        "cardHash": "0x" + info.card_hash.hex(),
        "terms": payment_json(info.card.payment),
        "price": _price(info.card, manifest),
        "listed": {"AgentRegistry": suite.registry.is_listed(info.address),
                   "CuratedAgentRegistry": suite.curated_registry.is_listed(info.address)},
        "ratings": {"count": info.ratings, "average": info.average_rating},
    }
    identity = find_identity(suite, agent)
    if identity is None:
        result["erc8004"] = None
    else:
        clients = suite.reputation.clients(identity.agent_id)
        summary = suite.reputation.summary(identity.agent_id, clients) if clients else None
        result["erc8004"] = {
            **identity.to_json(),
            "feedback": {"clients": clients, "count": summary.count if summary else 0,
                         "average": str(summary.decimal) if summary else None},
        }
    if args.check_endpoint:
        result["endpoint"] = _check_endpoint(suite, agent)
    result["card"] = json.loads(agent.card_json())
    _print(result)
    return EXIT_OK


def _check_endpoint(suite: AgentSuite, agent: Agent) -> dict[str, Any]:
    """What the A2A client's ``discover`` concludes about the served card."""
    import anyio

    from a402.agents.a2a_card import CardError, CardMismatch
    from a402.agents.a2a_client import discover
    from a402.agents.onchain import FactoryCardSource

    source = FactoryCardSource(suite.chain, suite.factory.address)
    try:
        found = anyio.run(discover, agent.address, source)
    except CardMismatch as e:
        return {"matches": False, "differences": list(e.differences)}
    except CardError as e:
        return {"matches": False, "error": str(e)}
    return {"matches": True, "url": found.card_url}


def _price(card: OnchainCard, manifest: Manifest) -> str | None:
    """``0.002 USDC`` when the asset is the manifest's token, else atomic units @ asset."""
    from a402.evm.address import address_key

    pay = card.payment
    if pay is None:
        return None
    token = manifest.token
    if address_key(pay.asset) == address_key(token.address):
        from decimal import Decimal

        units = Decimal(pay.amount).scaleb(-token.decimals)
        return f"{units.normalize():f} {token.symbol}"
    return f"{pay.amount} @ {pay.asset}"


# ---- search


def _search(args: argparse.Namespace) -> int:
    from a402.agents.directory import Query, indexer_addresses, search_chain, verify_hits
    from a402.client.limits import to_atomic_exact

    manifest = _manifest(args.manifest)
    max_price = None
    if args.max_price is not None:
        decimals = args.decimals if args.decimals is not None else manifest.token.decimals
        try:
            max_price = to_atomic_exact(args.max_price, decimals)
        except ValueError as e:
            raise UsageError(f"--max-price: {e}") from None
    if args.min_rating is not None and not 0 <= args.min_rating <= 100:
        raise UsageError("--min-rating is 0..100")
    query = Query(skill=args.skill, text=args.text, max_price=max_price, network=args.network,
                  active=args.active, min_rating=args.min_rating)
    chain = _chain(args, manifest)
    suite = _suite(chain, manifest)
    if args.indexer:
        registry = {"factory": None, "registry": "open", "curated": "curated"}[args.source]
        found = indexer_addresses(args.indexer, query, want=args.limit, registry=registry)
        hits, dropped = verify_hits(suite, found, query)
        for address, why in dropped:
            print(f"a402 agents: dropped indexer hit {address}: {why}", file=sys.stderr)
        if args.limit is not None:
            hits = hits[:args.limit]
    else:
        hits = search_chain(suite, query, source=args.source, limit=args.limit)
    if args.json:
        _print([{**h.to_json(), "price": _price(h.card, manifest)} for h in hits])
    else:
        _table(hits, manifest)
    return EXIT_OK


def _table(hits: list[AgentView], manifest: Manifest) -> None:
    print(f"{'agent':<43} {'name':<20} {'skills':<24} {'price':<16} {'active':<6} "
          f"{'rating':>6}  found in")
    for h in hits:
        skills = ",".join(s.id for s in h.card.skills)
        rating = f"{h.average_rating:.0f}" if h.average_rating is not None else "-"
        print(f"{h.address:<43} {h.card.name[:20]:<20} {skills[:24]:<24} "
              f"{_price(h.card, manifest) or 'free':<16} {'yes' if h.active else 'no':<6} "
              f"{rating:>6}  {h.found_in}")
    print(f"{len(hits)} agent{'s' if len(hits) != 1 else ''}")


# ---- rate


def _rate(args: argparse.Namespace) -> int:
    from a402.agents.directory import find_identity, give_feedback, payment_proof

    if not 0 <= args.score <= 100:
        raise UsageError("a score is 0..100")
    if not args.rater and not args.erc8004:
        raise UsageError("say how to rate: --rater AGENT (contract rating) and/or --erc8004")
    if args.payment_tx and not args.erc8004:
        raise UsageError("--payment-tx goes with --erc8004")
    manifest = _manifest(args.manifest)
    sender = _key(args.key_file)
    chain = _chain(args, manifest, sender)
    suite = _suite(chain, manifest)
    agent = _agent(suite, args.agent)
    result: dict[str, Any] = {"agent": agent.address, "from": sender.address}
    if args.rater:
        rater = _address(args.rater)
        agent.rate(sender, rater, args.score, args.comment)
        count, total = agent.rating_summary()
        result["contract"] = {"rater": rater, "score": args.score,
                              "ratings": {"count": count, "average": total / count}}
    if args.erc8004:
        identity = find_identity(suite, agent)
        if args.agent_id is not None and (identity is None or identity.agent_id != args.agent_id):
            from a402.agents.directory import Identity

            registry = suite.identity
            try:
                uri = registry.agent_uri(args.agent_id)
            except Exception as e:
                raise NotFound(f"no ERC-8004 agent {args.agent_id}") from e
            identity = Identity(args.agent_id, registry.agent_registry, uri,
                                registry.agent_wallet(args.agent_id))
        if identity is None:
            raise NotFound(f"no ERC-8004 identity is linked to {agent.address}; give --agent-id")
        card = agent.card()
        proof = None
        if args.payment_tx:
            if card.payment is None:
                raise UsageError(f"{agent.address} charges nothing: no payment to prove")
            proof = payment_proof(chain, args.payment_tx, payer=sender.address,
                                  payment=card.payment)
        given = give_feedback(suite, sender, identity, card, args.score, comment=args.comment,
                              proof=proof, skill=args.skill)
        summary = suite.reputation.summary(identity.agent_id, [sender.address])
        result["erc8004"] = {**given.to_json(),
                             "proofOfPayment": proof.to_json() if proof else None,
                             "yourSummary": {"count": summary.count,
                                             "average": str(summary.decimal)}}
    _print(result)
    return EXIT_OK


# ---- serve


def _serve(args: argparse.Namespace) -> int:
    """``a402 agents serve`` (:mod:`a402.agents.serve_command`): the chain side is here,
    with the other actions' manifest, key and chain checks."""
    from a402.agents.serve_command import ServeUsage, run_serve

    manifest = _manifest(args.manifest)
    if args.list and not args.register:
        raise UsageError("--list needs --register")
    if args.register and not args.key_file:
        raise UsageError("--register needs --key-file (the agent's owner, who pays the gas)")
    owner = _key(args.key_file) if args.key_file else None
    if args.pay_to:
        pay_to = _address(args.pay_to)
    elif owner is not None:
        pay_to = owner.address
    else:
        try:
            pay_to = manifest.account("provider").address
        except KeyError:
            raise UsageError("give --pay-to (the manifest has no provider account)") from None

    def register(card: OnchainCard) -> dict[str, Any]:
        assert owner is not None
        suite = _suite(_chain(args, manifest, owner), manifest)
        agent = suite.factory.create(owner, card, owner=owner.address)
        if args.list:
            suite.registry.enroll(owner, agent.address)
        return {"agent": agent.address, "owner": owner.address, "listed": bool(args.list)}

    try:
        return run_serve(args, manifest, pay_to=pay_to,
                         register=register if args.register else None)
    except ServeUsage as e:
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------------------- helpers


def _manifest(path: str) -> Manifest:
    from a402.chain.locate import ChainNotFound, load_manifest

    try:
        return load_manifest(path)
    except ChainNotFound as e:
        raise UsageError(str(e)) from None


def _key(path: str) -> LocalAccount:
    from a402.keys import load_key_file

    return load_key_file(path)


def _chain(args: argparse.Namespace, manifest: Manifest, key: LocalAccount | None = None
           ) -> Chain:
    """The manifest's chain, refusing one whose id differs (a key must not sign elsewhere)."""
    from a402.chain.locate import ChainNotFound, connect_checked

    url = args.rpc or manifest.rpc_url
    if not url:
        raise UsageError("the manifest names no rpcUrl; give --rpc")
    try:
        return connect_checked(url, manifest, (key,) if key is not None else ())
    except ChainNotFound as e:
        raise UsageError(str(e)) from None


def _suite(chain: Chain, manifest: Manifest) -> AgentSuite:
    from a402.agents.directory import open_suite

    suite = open_suite(chain, manifest)
    if not chain.w3.eth.get_code(suite.addresses.factory):  # type: ignore[arg-type]
        raise UsageError(f"no AgentFactory at {suite.addresses.factory} on this chain "
                         "(a restarted devnet? run `a402 agents deploy --force`)")
    return suite


def _agent(suite: AgentSuite, address: str) -> Agent:
    """An agent of this factory only: any other contract may say anything about itself."""
    checked = _address(address)
    if not suite.factory.is_agent(checked):
        raise NotFound(f"{checked} is not an agent of factory {suite.factory.address}")
    return suite.agent(checked)


def _address(text: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(text):
        raise UsageError(f"not an address: {text!r}")
    return str(to_checksum_address(text))


_ACTIONS = {
    "deploy": _deploy, "register": _register, "update": _update, "show": _show,
    "search": _search, "rate": _rate, "serve": _serve,
}
