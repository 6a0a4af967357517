"""``a402 agents serve``: one paid A2A agent in front of an HTTP endpoint or a Python callable.

    a402 agents serve --upstream http://127.0.0.1:8000/translate --name Translator \\
        --price 0.002 --port 9001 [--register --key-file .a402/provider.key]

The agent is :class:`~a402.agents.a2a_provider.PaidAgent`, the same one the demo's agents
and the tests pay: its card at ``/.well-known/agent-card.json``, JSON-RPC (A2A 1.0 and
0.3) at ``--public-url``'s path, ``--price`` per task in the manifest's token (token
units, refused if finer than its decimals, never rounded), paid to ``--pay-to`` (default:
``--key-file``'s address, else the manifest's provider account).

The work of a task is either ``--upstream URL`` (the task's text POSTed as
``text/plain``; the response body is the result) or ``--handler MODULE:FUNCTION`` (called
with the text, sync or async, returning a str; the current directory is importable, as
with uvicorn). Money safety is PaidAgent's: the work runs only after the facilitator
verified the payment, the result leaves only with a successful settlement, and work that
fails (an upstream answering ≥ 400 or unreachable, a handler that raises or returns no
str) settles nothing, so the payer is charged nothing.

``--register`` publishes the card the agent serves on-chain (the AgentFactory of the
manifest, as ``a402 agents register`` does; ``--list`` also lists it) after the port was
found free and before serving, so a client that discovers it on-chain finds a served card
equal to the chain's. Registration is a transaction from ``--key-file`` (gas only).

Only argument declaration happens at import: ``a402``'s parser imports this module for
every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from a402.agents.card import OnchainCard
    from a402.chain.deploy import Manifest

DEFAULT_FACILITATOR: Final = "http://127.0.0.1:4021"
DEFAULT_PORT: Final = 9001
UPSTREAM_FAILED: Final = "upstream_failed"


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """Declare ``a402 agents serve``'s flags (``--manifest``/``--rpc`` come from the parent)."""
    work = serve.add_argument_group("the work (one of)")
    what = work.add_mutually_exclusive_group(required=True)
    what.add_argument("--upstream", metavar="URL",
                      help="POST each task's text to this URL; its response body is the result")
    what.add_argument("--handler", metavar="MODULE:FUNCTION",
                      help="call this Python function with each task's text (sync or async, "
                           "returns str); the current directory is importable")
    work.add_argument("--upstream-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="how long to wait for the upstream (default: %(default)s)")
    card = serve.add_argument_group("card and price")
    card.add_argument("--name", required=True, help="the agent's name on its card")
    card.add_argument("--description", default="", help="what the agent does")
    card.add_argument("--skill", metavar="SPEC",
                      help="ID[:NAME[:DESCRIPTION[:TAG,TAG]]] (default: one skill 'task')")
    card.add_argument("--version", dest="card_version", default="1.0.0", metavar="VERSION")
    card.add_argument("--price", required=True, metavar="AMOUNT",
                      help="price per task in token units of the manifest's token")
    card.add_argument("--pay-to", metavar="ADDRESS",
                      help="payee (default: --key-file's address, else the manifest's provider)")
    card.add_argument("--facilitator", default=DEFAULT_FACILITATOR, metavar="URL",
                      help="facilitator that verifies and settles (default: %(default)s)")
    where = serve.add_argument_group("serving")
    where.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    where.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    where.add_argument("--public-url", metavar="URL",
                       help="the JSON-RPC URL clients use, on the card "
                            "(default: http://HOST:PORT/)")
    chain = serve.add_argument_group("on-chain registration")
    chain.add_argument("--register", action="store_true",
                       help="publish the served card in the manifest's AgentFactory first")
    chain.add_argument("--list", action="store_true",
                       help="with --register: also list it in the open AgentRegistry")
    chain.add_argument("--key-file", metavar="F",
                       help="owner and gas payer of the registration (needed by --register)")


class ServeUsage(ValueError):
    """A flag the agent cannot be served with (``a402 agents`` exits 2, nothing sent)."""


def run_serve(
    args: argparse.Namespace, manifest: Manifest, *, pay_to: str,
    register: Callable[[OnchainCard], dict[str, Any]] | None = None,
) -> int:
    """Build the agent, register it if asked (``register``: publishes the card, returns what
    to print), serve until stopped. Usage problems raise :class:`ServeUsage` before anything
    is sent or served; a busy port is refused before the registration is sent."""
    from urllib.parse import urlsplit

    from a402 import serving
    from a402.agents.a2a_provider import PaidAgent
    from a402.agents.directory import parse_skill
    from a402.failure import ensure_port_free
    from a402.provider.routes import RouteError, to_atomic

    try:
        price = to_atomic(args.price, manifest.token.decimals)
    except (RouteError, ValueError) as e:
        raise ServeUsage(f"--price: {e}") from None
    if price <= 0:
        raise ServeUsage("--price must be more than 0 (a free agent needs no a402)")
    url = args.public_url or f"http://{args.host}:{args.port}/"
    handler = (upstream_handler(args.upstream, args.upstream_timeout) if args.upstream
               else imported_handler(args.handler))
    skill = parse_skill(args.skill, args.description) if args.skill else None
    try:
        agent = PaidAgent(handler, name=args.name, description=args.description, url=url,
                          price=price, pay_to=pay_to, token=manifest.token,
                          network=manifest.network, facilitator=args.facilitator, skill=skill,
                          version=args.card_version)
    except ValueError as e:
        raise ServeUsage(str(e)) from None
    ensure_port_free(args.host, args.port)
    registered = register(agent.onchain_model()) if register is not None else {}
    origin = urlsplit(url)
    print(json.dumps({"a2a": url,
                      "card": f"{origin.scheme}://{origin.netloc}/.well-known/agent-card.json",
                      "price": args.price, "priceAtomic": str(price), "payTo": pay_to,
                      "network": manifest.network, "asset": manifest.token.address,
                      **registered}), file=sys.stderr)
    serving.run(agent.app(), host=args.host, port=args.port)
    return 0


def upstream_handler(url: str, timeout: float) -> Callable[[str], Awaitable[str]]:
    """POST the task's text to ``url``; the body is the result. A status ≥ 400 or no answer
    raises, so :class:`PaidAgent` settles nothing for that task."""
    import httpx

    async def forward(text: str) -> str:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, content=text.encode(),
                                       headers={"content-type": "text/plain; charset=utf-8"})
        if response.status_code >= 400:
            raise RuntimeError(f"{UPSTREAM_FAILED}: {url} answered {response.status_code}")
        return response.text

    return forward


def imported_handler(spec: str) -> Callable[[str], Awaitable[str]]:
    """``module:function`` imported (the current directory first on the path, as uvicorn
    does), wrapped so sync functions run in a worker thread and every result is a str."""
    import importlib
    import inspect
    import os

    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ServeUsage(f"--handler {spec!r}: give MODULE:FUNCTION")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ServeUsage(f"--handler {spec!r}: cannot import {module_name}: {e}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ServeUsage(f"--handler {spec!r}: {module_name} has no function {name!r}")

    async def call(text: str) -> str:
        import anyio

        if inspect.iscoroutinefunction(function):
            result = await function(text)
        else:
            result = await anyio.to_thread.run_sync(function, text)
            if inspect.isawaitable(result):
                result = await result
        if not isinstance(result, str):
            raise TypeError(f"{spec} returned {type(result).__name__}, not str")
        return result

    return call

