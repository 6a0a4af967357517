"""The vault enclave's ledger in the store: one row, written by compare-and-set on its version.

The enclave's code keeps the channels it approved (owner, funding, deposit, the
latest deadline of its approvals to open them, whether they were written off or
settled), each client's newest call time, its clock and its life
(:mod:`a402.vault_enclave`; pool balances are on-chain) and seals them with a
version number that grows with every change (by one between two exports). The
host stores that sealed ledger in one row, next to the version, and writes
it only if the stored version is still the one its enclave last loaded or
wrote (:meth:`VaultStore.put_ledger`). Every change goes through
:meth:`Ledger.change`, which

1. loads a newer stored ledger into the enclave first (another replica changed it),
2. runs the change in the enclave,
3. stores the new ledger by compare-and-set; if another replica stored one meanwhile,
   loads that one (the enclave's unstored change is dropped with it) and runs the
   change again, a few times, then gives up with :class:`LedgerBusy` (retryable).

So ledger changes of replicas sharing one database serialize on the ledger row: no
replica's write drops another's approval or write-off. What a change approves or
signs leaves the vault only after its ledger is stored. The enclave refuses a
ledger older than the one it holds, so the host cannot move a running enclave back.

What the row does not hold is the once-rule's record of paid calls: it lives in each
running instance's memory and in the sealed records of the channels that paid, and
paying a call changes no ledger (no write per paid call). So two *live* instances of
one enclave identity — sharing this row or not — can each sign σ_U for one signed
call: the limit is one live instance per enclave identity. The fail-over lease
(:mod:`a402.vault.lease`) keeps to it for an honest operator; a hostile host can break
it, as it can roll back sealed state (the documented limit, :mod:`a402.tee.sealing`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from a402.vault_enclave import VaultEnclave

from .store import VaultStore

T = TypeVar("T")

log = logging.getLogger("a402.vault.ledger")

#: How many times a change runs again after losing the race for the ledger row.
ATTEMPTS = 8


class LedgerBusy(Exception):
    """Other replicas kept changing the ledger: nothing changed here; try again."""


class LedgerMissing(RuntimeError):
    """The store has a vault's history but not its enclave's ledger: refusing to start."""


class Ledger:
    """The enclave's ledger and the row that stores it (thread-safe; blocking calls)."""

    def __init__(self, vault: VaultEnclave, store: VaultStore) -> None:
        self.vault = vault
        self.store = store
        #: The stored version this process's enclave holds (None: no row yet).
        self.version: int | None = None
        self._lock = threading.Lock()

    @staticmethod
    def first_boot(store: VaultStore) -> bool:
        """Whether this is the vault's first start (no ledger was ever stored).

        A store with channels but no ledger lost it: the enclave would forget which
        channels it approved and wrote off, and the calls they paid, so that is
        :class:`LedgerMissing`, never a first boot.
        """
        if store.ledger() is not None:
            return False
        if store.has_history():
            raise LedgerMissing(
                f"{store.url} holds channels but not the vault enclave's "
                "ledger (table a402_vault_ledger): refusing to start with an empty ledger. "
                "Restore the database (with its ledger row) from a backup.")
        return True

    def store_first(self) -> None:
        """At a first boot, store the new (empty) ledger at once, with the life the
        enclave drew: a restart before the first change then restores this life instead
        of drawing another, so what this life issued (the salts of proposed wallet
        channels) stays its own. If another replica's first boot stored its ledger first,
        that one is loaded (its life) instead."""
        with self._lock:
            if self.version is not None or self.store.ledger() is not None:
                self._catch_up(force=True)
                return
            blob, version = self.vault.export_ledger(), self.vault.ledger_version
            if self.store.put_ledger(blob, version, expected=None):
                self.version = version
            else:
                self._catch_up(force=True)

    def load(self) -> None:
        """Hand the stored ledger (if any) to the enclave: at start-up. A ledger the
        enclave changed in loading it (a legacy one, given its life then) is stored
        at once, before the enclave issues anything under that life."""
        with self._lock:
            self._catch_up(force=True)
        if self.vault.ledger_unsaved:
            self.change(lambda: None)

    def refresh(self) -> None:
        """Load the stored ledger if another replica stored a newer one (before trusting
        what this enclave does not know: a process that takes over from another)."""
        with self._lock:
            self._catch_up()

    def _catch_up(self, *, force: bool = False) -> None:
        if not force and self.store.ledger_version() == self.version:
            return
        stored = self.store.ledger()
        if stored is None:
            return
        version, blob = stored
        self.vault.restore_ledger(blob)
        self.version = None if self.store.ledger_version() is None else version

    def change(self, op: Callable[[], T]) -> T:
        """Run ``op`` (a call into the enclave that may change its ledger) and store the
        ledger if it changed; see the module docstring. Blocking."""
        with self._lock:
            for _ in range(ATTEMPTS):
                self._catch_up()
                result = op()
                if not self.vault.ledger_unsaved:
                    return result
                blob, version = self.vault.export_ledger(), self.vault.ledger_version
                if self.store.put_ledger(blob, version, expected=self.version):
                    self.version = version
                    return result
                log.info("the ledger changed in another replica: loading it, and again")
                self._catch_up(force=True)
            raise LedgerBusy("the vault's ledger kept changing in other replicas")

    async def achange(self, op: Callable[[], T]) -> T:
        return await asyncio.to_thread(self.change, op)
