"""The indexer's operator console: the agents it indexed and their reputation.

The indexer has no payments of its own to list; what it has is every agent it follows,
its card (skills, price), whether it is active, and the reputation it computed from
on-chain payments and ERC-8004 feedback. The console shows those, read through the same
:class:`~a402.agents.indexer.search.Search` the public API answers from (so it shows
nothing the API does not), behind the operator token (:mod:`a402.console.app`: read-only,
the token typed into a form, a session cookie, a strict content policy).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp

from a402.agents.indexer.search import MAX_LIMIT, Query, Search
from a402.console import Console, ConsoleData, Table
from a402.console.app import token_check

#: Agents shown, best reputation first (the search API pages through all of them).
SHOWN = MAX_LIMIT


def _price(price: Any) -> str | None:
    if not isinstance(price, dict):
        return None
    return f"{price.get('amount')} of {price.get('asset')} ({price.get('network')})"


def agents_table(search: Search) -> Table:
    """The :data:`SHOWN` best-reputed agents, as the search API ranks them."""
    page = search.search(Query(limit=SHOWN))
    rows = [(a["name"], a["address"], ", ".join(str(s) for s in a["skills"]),
             _price(a["price"]), "yes" if a["active"] else "no", a["reputation"],
             a["last_seen"]) for a in page["agents"]]
    block = page["as_of"]["block"]
    return Table("Agents and their reputation", ("name", "agent", "skills", "price",
                                                  "active", "reputation", "last seen (unix)"),
                 rows, note=f"as of block {block}, best reputation first"
                 + (f"; the first {SHOWN} shown" if page["next_cursor"] else ""))


def indexer_console(app: ASGIApp, search: Search, operator_token: str) -> Console:
    """``app`` (the indexer's API) with the console at ``/console``; ValueError for a
    token shorter than 16 characters."""

    async def read() -> ConsoleData:
        table = await asyncio.to_thread(agents_table, search)
        return ConsoleData(payments=(), tables=(table,), show_payments=False)

    return Console(app, service="indexer", check_token=token_check(operator_token),
                   read=read)
