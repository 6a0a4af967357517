"""``POST /v1/invoke``: the vault's paying proxy, one :class:`~a402.vault.call.PaidCall` per call.

:class:`Invoker` turns an authenticated call into a :class:`~a402.vault.call.PaidCall`
and runs it (the call's steps, and why their order is safe, are in
:mod:`a402.vault.call`); it makes sure one process runs a given call once at a
time — a retry that arrives while the call runs here waits for, and returns, its
answer — and answers for the calls it recorded (:class:`~a402.vault.answers.Answers`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api

from .answers import Answers
from .call import CallContext, PaidCall
from .channels import Channels, VaultError
from .offers import OfferCache
from .targets import TargetCheck, TargetRefused, TargetUnresolved


class Invoker:
    """Runs ``/v1/invoke`` calls for one vault."""

    def __init__(
        self, channels: Channels, *, http: httpx.AsyncClient, offers: OfferCache,
        queue_timeout: float, retry_wait: float, allow_private_targets: bool = False,
        nonce_keep: float = 2 * api.DEFAULT_AUTH_WINDOW,
    ) -> None:
        self.channels = channels
        self.store = channels.store
        self.targets = TargetCheck(allow_private=allow_private_targets)
        self.answers = Answers(channels.store, channels.enclave, token=channels.manager.token,
                               network=channels.network)
        self.context = CallContext(
            channels=channels, answers=self.answers, offers=offers, http=http,
            check_target=self._check_target, queue_timeout=queue_timeout,
            retry_wait=retry_wait, nonce_keep=nonce_keep)
        #: Calls being handled by this process (a retry of one waits for its answer).
        self._running: dict[str, asyncio.Event] = {}
        # What the worker and the API read and record through the invoker.
        self.answer_of = self.answers.answer_of
        self.record = self.answers.record
        self.record_paid = self.answers.record_paid
        self.record_aborted = self.answers.record_aborted

    def is_running(self, key: str) -> bool:
        """Whether this process is executing the call with this key now."""
        return key in self.context.executing

    async def invoke(self, client: str, call: api.InvokeRequest, *, nonce: str | None = None,
                     signed: SignedCall | None = None) -> tuple[int, dict[str, Any]]:
        """Run one call; ``nonce`` (the call's signature nonce) is recorded with its claim,
        and :class:`~a402.wire.vault_api.AuthError` raised if it was used before. ``signed``
        is the call as the client signed it: without it the enclave pays nothing."""
        await self._check_target(call.url)  # refused before anything is recorded
        paid_call = PaidCall(self.context, client, call, nonce=nonce, signed=signed)
        key = paid_call.key
        while key in self._running:  # the same call is running here: its answer is ours
            await self._running[key].wait()
        # Taken before the first await, so no other task of this process can run this key
        # (and the store's lock keeps other processes out of this vault's database).
        event = self._running[key] = asyncio.Event()
        try:
            return await paid_call.run()
        finally:
            event.set()
            self._running.pop(key, None)

    async def _check_target(self, url: str) -> None:
        try:
            await self.targets(url)
        except TargetRefused as e:
            raise VaultError(403, api.TARGET_NOT_ALLOWED, str(e)) from None
        except TargetUnresolved as e:
            raise VaultError(503, api.PROVIDER_UNAVAILABLE, str(e), retryable=True) from None
