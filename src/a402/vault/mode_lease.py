"""Vault mode on PostgreSQL: replicas under the standard vault's lease, one active.

Several ``a402 vault --mode vault`` processes may share one PostgreSQL ``--db`` (same key
file, same platform file, same A402Vault). Which one serves is decided by the lease of
:mod:`a402.vault.lease` (table ``a402_vault_lease``), exactly as in standard mode:

* **Standby.** A process that does not hold the lease has *no* vault-mode service: it has
  not restored the sealed ledger, so it cannot answer from a stale copy. It answers every
  ``/v1`` call ``503 vault_standby`` (naming the active replica's URL when the lease row
  has one) and polls for the lease.
* **Take-over.** Once it holds the lease it fences every write of the store first
  (:meth:`~a402.vault.lease.Lease.fence_store`), starts renewing, and only then builds the
  service: the sealed ledger, the sealed payout queue and the landed record are read from
  PostgreSQL *after* its take-over committed, so they include every write of the old
  active (whose later writes all fail the fence). Then its worker resumes: deposits, the
  settlement scheduler (the restored payout queue), landing signed settlements, the
  watchtower.
* **Answering.** A ``/v1`` answer leaves only while :meth:`~a402.vault.lease.Lease.serving`
  holds when the response starts; otherwise it is replaced by ``503 answer_dropped``
  (the call ran here and may have been paid: asked again with the same idempotency key,
  the vault's record answers it).

Safety argument: vault mode stores the sealed ledger before anything computed under it
leaves (:meth:`~a402.vault.mode.VaultModeService.change`), and every store write checks the
lease token inside its transaction. An old active that lost the lease (killed, paused,
partitioned) can therefore neither store a ledger nor answer: anything it computed after
the take-over is not durable, was never sent, and the new active continues from the last
durable ledger — the same one a restart on SQLite would restore. A signed settlement the
old active landed or not is idempotent on-chain (one epoch lands once). The replaced
process exits 75 when it notices (``on_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .lease import Lease
from .mode import VaultModeService, VaultModeWorker
from .mode_app import create_mode_app
from .mode_invoke import ModeInvoker

log = logging.getLogger("a402.vault.mode")


class LeasedModeApp:
    """The vault-mode API behind the lease: standby until the lease is taken, then the
    service is built from the store and served (see the module docstring)."""

    def __init__(self, lease: Lease, build: Callable[[], VaultModeService], *,
                 invoker: Callable[[VaultModeService], ModeInvoker | None] | None = None,
                 on_active: Callable[[VaultModeService], None] | None = None,
                 poll: float = 0.25) -> None:
        self.lease = lease
        self.build = build
        self.make_invoker = invoker
        self.on_active = on_active
        self.poll = poll
        self.service: VaultModeService | None = None
        self.runner: VaultModeWorker | None = None
        self._inner: ASGIApp | None = None
        self._invoker: ModeInvoker | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        #: Why taking over failed (the process then answers 503 and reports it here).
        self.failed: str | None = None

    # ---------------------------------------------------------------- role

    def serving(self) -> bool:
        return self._inner is not None and self.lease.serving()

    async def _take_over(self) -> None:
        if not await asyncio.to_thread(self.lease.acquire, self.poll, self._stop):
            return
        self.lease.fence_store()  # before anything is read or written as the active one
        self.lease.keep()
        try:
            service = await asyncio.to_thread(self.build)
        except Exception as e:  # nothing served: a standby that cannot serve says why
            self.failed = f"{type(e).__name__}: {e}"
            log.exception("vault mode: taking over failed")
            self.lease.release()
            return
        self._invoker = None if self.make_invoker is None else self.make_invoker(service)
        self.runner = VaultModeWorker(service)
        await self.runner.start()
        self.service = service
        self._inner = create_mode_app(service, worker=False, invoker=self._invoker)
        if self._invoker is not None:  # the ACKs the replica before it may have owed
            await self._invoker.start()
        log.warning("vault mode: %s is the active replica (token %s)", self.lease.holder,
                    self.lease.token)
        if self.on_active is not None:
            self.on_active(service)

    async def _shutdown(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.runner is not None:
            await self.runner.stop()
        if self._invoker is not None:
            await self._invoker.aclose()
        await asyncio.to_thread(self.lease.release)

    # ---------------------------------------------------------------- answers

    def _standby(self, dropped: bool = False) -> JSONResponse:
        """``503 vault_standby``, or for a call that ran here ``503 answer_dropped`` (it
        may have been paid: :func:`~a402.vault.lease.not_serving_answer`)."""
        return JSONResponse(self.lease.not_serving_answer(dropped=dropped), status_code=503,
                            headers={"Retry-After": "1"})

    def _health(self) -> JSONResponse:
        service, runner = self.service, self.runner
        if not self.serving() or service is None or runner is None:
            return JSONResponse({"ok": False, "role": "standby", "failed": self.failed,
                                 "lease": self.lease.current().to_json()}, status_code=503)
        ok = service.broken is None
        return JSONResponse({"ok": ok, "role": "active", "lastTick": runner.last_tick,
                             "broken": service.broken, "lease": self.lease.current().to_json()},
                            status_code=200 if ok else 503)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/healthz":
            await (await run_in_threadpool(self._health))(scope, receive, send)
            return
        inner = self._inner
        if inner is None or not self.serving():
            await (await run_in_threadpool(self._standby))(scope, receive, send)
            return
        replaced = False

        async def guarded(message: Any) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and not self.serving():
                replaced = True
                log.warning("an answer to %s was dropped: the lease lapsed", path)
                await (await run_in_threadpool(self._standby, True))(scope, receive, send)
            elif not replaced:
                await send(message)

        await inner(scope, receive, guarded)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.create_task(self._take_over())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def startup_line(service: VaultModeService, url: str, holder: str) -> str:
    """The line an active replica prints once it serves (what a standby could not know)."""
    return json.dumps({"vault": url, "mode": "vault", "role": "active", "replica": holder,
                       "address": service.address, "a402Vault": service.contract.address,
                       "gasAccount": service.config.account.address,
                       "network": service.chain.network})


__all__ = ["LeasedModeApp", "startup_line"]
