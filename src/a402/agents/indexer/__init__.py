"""The agent indexer: follows factories, registries and ERC-8004 into a SQL store, survives
restarts and reorganisations, computes reputation, and serves a search API.

- :mod:`.abi` — followed events and their fast decoders;
- :mod:`.state` — the folds that turn an entity's events into its state;
- :mod:`.store` — the SQLAlchemy schema, atomic batches, rollback;
- :mod:`.sync` — the JSON-RPC follower (ranges, reorg detection);
- :mod:`.search`, :mod:`.app` — queries and the HTTP API;
- :mod:`.command` — ``a402 indexer``;
- :mod:`a402.agents.reputation` — the score (pure).
"""

from a402.agents.indexer.search import Query, Search
from a402.agents.indexer.store import Cursor, IndexStore
from a402.agents.indexer.sync import Contracts, Indexer, JsonRpc, SyncReport

__all__ = ["Contracts", "Cursor", "IndexStore", "Indexer", "JsonRpc", "Query", "Search",
           "SyncReport"]
