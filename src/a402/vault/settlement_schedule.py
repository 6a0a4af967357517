"""When vault mode settles, and whom: the settlement scheduler (pure, sans-IO).

A settlement's calldata shows payees and amounts. What keeps an observer from matching
a payout to the requests behind it is that a payout is an *aggregate* of a participant's
balance (many requests, many counterparties), paid *together with others*, at a time that
says little about when the participant asked. This scheduler decides the batches:

* **window** — a payout request is paid no sooner than ``window`` seconds after it was
  made (every one of them, the last to join a batch too: a batch takes only requests
  that have waited their window);
* **jitter** — a batch is due when ``min_participants`` requests have waited their
  window, plus a random delay in ``[0, jitter]`` drawn per batch from the ``rng`` passed
  in (so the delay itself is no clock an observer can subtract);
* **minimum participants** — a batch pays at least ``min_participants`` distinct
  participants, or waits: a lone request is never paid alone (its participant can always
  leave on its own with ``initForceSettle``, which is the public exit anyway);
* **maximum per transaction** — at most ``max_per_tx`` payees per settlement; the oldest
  requests go first, the rest wait for the next batch (already past their window, they
  need only a new jitter); a remainder too small for a batch of its own is avoided by
  holding back a few from the full one when that leaves both at the minimum.

No I/O and no clock: every call takes ``now`` (seconds, any monotonic scale), and
:meth:`SettlementScheduler.next_wakeup` says when calling :meth:`~SettlementScheduler.due`
again can change anything. The host turns a :class:`Batch` into a settlement the enclave
signs (:meth:`~a402.vault_accounts.VaultAccountsCode.settle`, which checks each amount
against the participant's free balance) and calls :meth:`~SettlementScheduler.done`, or
:meth:`~SettlementScheduler.failed` to put the batch back with its requests' original
times. Requests of one participant merge (their amounts add up; the oldest time counts):
a participant is paid once per batch, as the contract's lanes expect.

Ideas from the A402 reference code's parameters (batch window, jitter, minimum providers,
maximum settlements per transaction); the code is this project's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The scheduler's knobs (seconds and counts); see the module docstring."""

    window: float = 120.0
    jitter: float = 30.0
    min_participants: int = 2
    max_per_tx: int = 100

    def __post_init__(self) -> None:
        if self.window < 0 or self.jitter < 0:
            raise ValueError("window and jitter are not negative")
        if self.min_participants < 1:
            raise ValueError("a batch pays at least one participant")
        if self.max_per_tx < self.min_participants:
            raise ValueError("max_per_tx must allow min_participants")


@dataclass(frozen=True, slots=True)
class Payout:
    """One participant's payout request in a batch: ``amount`` and when it was first asked."""

    participant: str
    amount: int
    asked: float


@dataclass(frozen=True, slots=True)
class Batch:
    """Payouts to settle together (distinct participants, oldest request first)."""

    payouts: tuple[Payout, ...]
    due: float

    def pairs(self) -> list[tuple[str, int]]:
        """``(participant, amount)`` as :meth:`~a402.vault_accounts.VaultAccountsCode.settle`
        takes them."""
        return [(p.participant, p.amount) for p in self.payouts]


@dataclass
class SettlementScheduler:
    """Batches payout requests by :class:`SchedulePolicy`; ``rng`` draws the jitter."""

    policy: SchedulePolicy
    rng: random.Random
    _waiting: dict[str, Payout] = field(default_factory=dict)
    _in_flight: dict[str, Payout] = field(default_factory=dict)
    _jitter: float | None = None  # drawn for the batch forming now

    # ------------------------------------------------------------------ input

    def request(self, participant: str, amount: int, *, now: float) -> None:
        """``participant`` wants ``amount`` paid out (added to what it asked already)."""
        if amount <= 0:
            raise ValueError("a payout is positive")
        key = participant.lower()
        held = self._waiting.get(key)
        if held is None:
            self._waiting[key] = Payout(participant, amount, now)
        else:
            self._waiting[key] = Payout(held.participant, held.amount + amount, held.asked)

    def done(self, batch: Batch) -> None:
        """The batch's settlement was signed (and is the host's to land)."""
        for payout in batch.payouts:
            self._in_flight.pop(payout.participant.lower(), None)

    def failed(self, batch: Batch) -> None:
        """The batch could not be settled: its requests wait again, as first asked."""
        for payout in batch.payouts:
            key = payout.participant.lower()
            self._in_flight.pop(key, None)
            held = self._waiting.get(key)
            if held is None:
                self._waiting[key] = payout
            else:  # asked again meanwhile: merge, keeping the older time
                self._waiting[key] = Payout(payout.participant, payout.amount + held.amount,
                                            min(payout.asked, held.asked))

    # ------------------------------------------------------------------ output

    def due(self, *, now: float) -> Batch | None:
        """The next batch if one is due at ``now``, taken out of the queue (in flight until
        :meth:`done` or :meth:`failed`); otherwise None."""
        due = self.next_wakeup()
        if due is None or now < due:
            return None
        window = self.policy.window
        ready = [p for p in self._ready() if p.asked + window <= now]
        chosen = ready[: self.policy.max_per_tx]
        left = len(ready) - len(chosen)
        if 0 < left < self.policy.min_participants:
            # Leave no remainder too small to form a batch of its own: hold back as many as
            # it needs, if this batch keeps its minimum.
            short = self.policy.min_participants - left
            if len(chosen) - short >= self.policy.min_participants:
                chosen = chosen[: len(chosen) - short]
        for payout in chosen:
            key = payout.participant.lower()
            del self._waiting[key]
            self._in_flight[key] = payout
        self._jitter = None  # the next batch draws its own
        return Batch(tuple(chosen), due)

    def next_wakeup(self) -> float | None:
        """When :meth:`due` will next return a batch, unless requests come or go first
        (None: not before enough requests wait)."""
        ready = self._ready()
        if len(ready) < self.policy.min_participants:
            return None
        if self._jitter is None:
            self._jitter = self.rng.uniform(0.0, self.policy.jitter)
        eligible = sorted(p.asked + self.policy.window for p in ready)
        return eligible[self.policy.min_participants - 1] + self._jitter

    @property
    def waiting(self) -> int:
        """How many participants wait for a payout."""
        return len(self._waiting)

    def queued(self, participant: str) -> int:
        """What ``participant`` asked to be paid and was not settled yet (waiting or in a
        batch being signed)."""
        key = participant.lower()
        return sum(p.amount for q in (self._waiting, self._in_flight)
                   for k, p in q.items() if k == key)

    def in_flight(self) -> list[Payout]:
        """The requests taken into a batch whose settlement is not signed yet (to store with
        the waiting ones: a crash before the signature is stored must not lose them)."""
        return sorted(self._in_flight.values(), key=lambda p: (p.asked, p.participant.lower()))

    def pending(self) -> list[Payout]:
        """The waiting requests, oldest first (to show, and to store)."""
        return sorted(self._waiting.values(), key=lambda p: (p.asked, p.participant.lower()))

    def take_all(self, *, now: float) -> list[Batch]:
        """Every waiting request at once, in batches of at most ``max_per_tx``, ignoring the
        window, the jitter and the minimum (the operator's settle-now: fewer payees per
        batch, weaker privacy). The batches are in flight until :meth:`done` or
        :meth:`failed`, like :meth:`due`'s."""
        ready = self._ready()
        limit = self.policy.max_per_tx
        batches = [Batch(tuple(ready[i:i + limit]), now) for i in range(0, len(ready), limit)]
        for payout in ready:
            key = payout.participant.lower()
            del self._waiting[key]
            self._in_flight[key] = payout
        self._jitter = None
        return batches

    # ------------------------------------------------------------------ inside

    def _ready(self) -> list[Payout]:
        """The waiting requests a new batch may take: not in flight, oldest first."""
        return sorted((p for k, p in self._waiting.items() if k not in self._in_flight),
                      key=lambda p: (p.asked, p.participant.lower()))


__all__ = ["Batch", "Payout", "SchedulePolicy", "SettlementScheduler"]
