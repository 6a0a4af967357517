"""What the vault's operator console shows beside its calls: balances, channels and
their states, the settlement transactions, and the conservation totals.

Read-only: every value comes from the store's read methods, and nothing sealed (channel
snapshots, results, secrets) is shown. Amounts are in the token's atomic units.
"""

from __future__ import annotations

import asyncio
import time

from a402.console import Table
from a402.vault.store import TX_CONFIRMED, TX_FAILED, TX_SUBMITTED, VaultStore

#: Rows per table: the console is an overview, the operator API and CLI list everything.
ROWS = 200


def _when(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def read_tables(store: VaultStore) -> list[Table]:
    totals = store.totals()
    summary = Table(
        "Conservation (atomic units)",
        ("deposits", "balances", "in channels", "paid to providers", "withdrawn", "conserved"),
        [(totals.deposits, totals.balances, totals.in_channels, totals.paid,
          totals.withdrawn, "yes" if totals.conserved else "NO: check the ledger")])
    balances = Table(
        "Balances", ("account", "balance (atomic units)", "updated (UTC)"),
        [(address, balance, _when(updated)) for address, balance, updated
         in store.accounts(ROWS)])
    channels = sorted(store.channels(), key=lambda c: c.updated_at, reverse=True)[:ROWS]
    channel_table = Table(
        "Channels", ("channel", "client", "provider", "phase", "status", "version", "free",
                     "locked", "provider balance", "settlement tx", "updated (UTC)"),
        [(c.cid, c.client, c.provider, c.phase, c.status, c.version, c.free, c.locked,
          c.provider_balance, c.settle_tx, _when(c.updated_at)) for c in channels])
    txs = sorted(store.txs(states=(TX_SUBMITTED, TX_CONFIRMED, TX_FAILED)),
                 key=lambda t: t.updated_at, reverse=True)[:ROWS]
    tx_table = Table(
        "Settlement and chain transactions", ("transaction", "kind", "state", "for",
                                               "updated (UTC)"),
        [(t.tx_hash, t.kind, t.state, t.ref, _when(t.updated_at)) for t in txs])
    return [summary, balances, channel_table, tx_table]


async def tables(store: VaultStore) -> list[Table]:
    """:func:`read_tables` off the event loop (the store's reads block)."""
    return await asyncio.to_thread(read_tables, store)
