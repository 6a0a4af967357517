"""CPU of the stores' writes on a paid request's path (SQLite), by thread.

Replays what a paid request writes in the bench (``bench/asc.py``): in the vault, the
checkpoint that claims the call (its nonce and row), locks the channel and records the
previous call's answer, then the AUTHORIZED checkpoint with its consumed-log entry; in the
provider, its channel's sealed blob, twice. Row sizes are the ones a real run writes.
``--channels`` channels write at once, one request in flight each, so the writer thread
batches them as it does under the benchmark's load.

Prints CPU per paid request (µs) of the store's writer thread (user / system) and of the
whole process, median over ``--rounds``. Run it against another tree's ``src`` (its
``PYTHONPATH``) to compare, alternating::

    for t in /base /new /base /new; do PYTHONPATH=$t/src python bench/store_writes.py; done
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from a402.provider.a402_store import SqlChannelStore
from a402.vault import store as vault_store
from a402.vault.store import VaultStore


def _thread_cpu(name: str) -> tuple[float, float, float]:
    """(user, system, on-CPU) seconds of this process's thread ``name`` so far."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    task = Path(f"/proc/self/task/{thread.native_id}")
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    on_cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
    return int(fields[11]) / tick, int(fields[12]) / tick, on_cpu


def _client() -> str:
    return "0x" + secrets.token_hex(20)


def _blob(size: int) -> bytes:
    return secrets.token_bytes(size)


async def _vault_requests(store: VaultStore, cid: str, client: str, start: int, count: int
                          ) -> None:
    previous: str | None = None
    for n in range(start, start + count):
        key = f"{client}:call-{n}"
        claim = vault_store.Claim(key=key, client=client, fingerprint="f" * 64,
                                  url="http://127.0.0.1:1/data", method="GET",
                                  nonce=secrets.token_hex(16), nonce_keep=600.0)
        others = [] if previous is None else [(previous, {
            "state": vault_store.DONE, "secret": _blob(604), "outcome": "paid", "reason": None,
            "retryable": False, "answer": _blob(1030), "amount": "1000"})]
        await store.save_checkpoint(
            cid, {"snapshot": _blob(2343), "status": "locked", "checkpoint": "locked",
                  "version": n, "free": "90000", "locked": "1000", "provider_balance": "9000",
                  "request_key": key, "pending_since": None},
            key, {"state": vault_store.LOCKED, "channel_id": cid, "amount": "1000",
                  "request_id": n}, claim=claim, others=others)
        await store.save_checkpoint(
            cid, {"snapshot": _blob(3214), "status": "pending", "checkpoint": "authorized",
                  "version": n, "free": "90000", "locked": "1000", "provider_balance": "9000",
                  "pending_since": time.time()},
            key, {"state": vault_store.AUTHORIZED, "sealed_result": _blob(227)},
            log=[(n, int(time.time()), _blob(154))])
        previous = key


async def _provider_requests(store: SqlChannelStore, channel_id: bytes, count: int) -> None:
    for _ in range(count):
        await store.save(channel_id, _blob(2876), active=True)
        await store.save(channel_id, _blob(3038), active=True)


def vault(directory: str, channels: int, per_round: int, rounds: int) -> list[tuple[float, ...]]:
    store = VaultStore(f"sqlite:///{directory}/vault.db")
    try:
        cids = []
        for _ in range(channels):
            client, cid = _client(), "0x" + secrets.token_hex(32)
            store.credit_deposit(f"t:{client}", client, 10**9, "transfer", None)
            store.claim_channel(debit=True, cid=cid, client=client, provider=_client(),
                                endpoint="http://p", funding="pool", deposit="100000",
                                lock_timeout=30.0, terms={}, status="open", version=0,
                                free="100000", proposal=None)
            store.open_channel(cid)
            cids.append((cid, client))

        async def one_round(r: int) -> None:
            await asyncio.gather(*(_vault_requests(store, cid, client, r * per_round,
                                                   per_round) for cid, client in cids))

        return _rounds("vault-store", one_round, rounds, channels * per_round)
    finally:
        store.close()


def _rounds(thread: str, one_round: Callable[[int], Coroutine[Any, Any, None]], rounds: int,
            requests: int) -> list[tuple[float, ...]]:
    """Run ``rounds`` + 1 rounds of ``requests`` paid requests' writes (the first warms up):
    per round, the writer ``thread``'s CPU (user, system, on-CPU) and the process's, in µs
    per request."""
    out = []
    for r in range(rounds + 1):
        before, cpu = _thread_cpu(thread), time.process_time()
        asyncio.run(one_round(r))
        after, cpu = _thread_cpu(thread), time.process_time() - cpu
        if r:
            out.append((*((a - b) / requests * 1e6 for a, b in zip(after, before, strict=True)),
                        cpu / requests * 1e6))
    return out


def provider(directory: str, channels: int, per_round: int, rounds: int
             ) -> list[tuple[float, ...]]:
    store = SqlChannelStore(f"sqlite:///{directory}/provider.db")
    try:
        ids = [secrets.token_bytes(32) for _ in range(channels)]

        async def one_round(_: int) -> None:
            await asyncio.gather(*(_provider_requests(store, i, per_round) for i in ids))

        return _rounds("provider-channels", one_round, rounds, channels * per_round)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", default="1,25")
    parser.add_argument("--per-round", type=int, default=0,
                        help="requests per channel per round (default: 2000 / channels)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None,
                        help="where the databases go (default: the temporary directory; "
                             "/dev/shm leaves out the disk, to compare the CPU above it)")
    args = parser.parse_args()
    print("µs per paid request: writer user, writer sys, writer on-CPU, process CPU"
          " (median of rounds)")
    for channels in (int(c) for c in args.channels.split(",")):
        per_round = args.per_round or max(1, 2000 // channels)
        for name, role in (("vault", vault), ("provider", provider)):
            with tempfile.TemporaryDirectory(dir=args.dir) as directory:
                rows = role(directory, channels, per_round, args.rounds)
            medians = [statistics.median(column) for column in zip(*rows, strict=True)]
            print(f"{name:9} {channels:3} channels: " + "  ".join(f"{m:7.1f}" for m in medians),
                  flush=True)


if __name__ == "__main__":
    main()
