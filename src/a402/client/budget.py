"""A total spending limit per asset that concurrent requests can never overrun.

Why reserve *before* signing: a signed EIP-3009 authorization is a bearer
instrument. Whoever holds it (the server, anyone it forwards it to, anyone who
sniffed it) can submit it on-chain at any moment until its ``validBefore``,
whether or not the HTTP exchange that carried it succeeded. So the moment a
signature exists the money must be considered gone; the only safe order is
reserve → sign → send, with the reservation taken under a lock so that two
threads checking "is there room?" at once cannot both say yes.

Why a reservation is *not* refunded when the server answers badly (a 402
after paying, a 500, a timeout, a missing receipt): none of those prove the
authorization was not settled. The server may settle late, a facilitator may
have broadcast before failing, or the response may simply have been lost.
Only proof can refund — the chain saying the nonce is unused after
``validBefore`` has passed — and that proof is the caller's to bring
(``release``). The paying client itself releases only a reservation whose
signature was never produced.

Assets are keyed by their address, case-insensitively. The same address on two
chains shares one limit, which can only make the budget stricter.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from a402.client.errors import BudgetExceeded
from a402.evm.address import address_key


def asset_key(asset: str) -> str:
    """Addresses compare case-insensitively (the checksum case is presentation)."""
    return address_key(asset) if asset.startswith("0x") else asset


def _check_amount(amount: int, what: str) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{what} must be a non-negative int of atomic units, got {amount!r}")
    return amount


@dataclass(frozen=True)
class Reservation:
    """Proof that ``amount`` of ``asset`` was set aside; needed to ``release`` it."""

    id: int
    asset: str
    amount: int


class Budget:
    """Per-asset totals in atomic units; thread-safe and never exceeded.

    ``Budget({"0xToken": 1_000_000})`` allows 1.000000 of a 6-decimal token and
    nothing of any other asset. ``Budget(1_000_000)`` gives every asset its own
    limit of 1_000_000 units — only sensible together with an asset allow-list,
    since units of different tokens are worth different amounts.
    """

    def __init__(self, limits: Mapping[str, int] | int) -> None:
        self._default: int | None
        if isinstance(limits, Mapping):
            self._default = None
            self._limits = {
                asset_key(a): _check_amount(v, f"limit for {a}") for a, v in limits.items()
            }
        else:
            self._default = _check_amount(limits, "limit")
            self._limits = {}
        self._spent: dict[str, int] = {}
        self._live: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def limit(self, asset: str) -> int:
        """The total allowed for ``asset`` (0 for an asset the budget does not name)."""
        key = asset_key(asset)
        return self._limits.get(key, self._default if self._default is not None else 0)

    def spent(self, asset: str) -> int:
        """Reserved and not released: signed money counts as spent until proven otherwise."""
        with self._lock:
            return self._spent.get(asset_key(asset), 0)

    def remaining(self, asset: str) -> int:
        with self._lock:
            return self.limit(asset) - self._spent.get(asset_key(asset), 0)

    def reserve(self, asset: str, amount: int) -> Reservation:
        """Set ``amount`` aside or raise ``BudgetExceeded``; atomic across threads."""
        _check_amount(amount, "amount")
        key = asset_key(asset)
        limit = self.limit(key)
        with self._lock:
            spent = self._spent.get(key, 0)
            if spent + amount > limit:
                raise BudgetExceeded(asset, amount, limit - spent)
            self._spent[key] = spent + amount
            reservation = Reservation(next(self._ids), key, amount)
            self._live[reservation.id] = reservation
            return reservation

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back, once you *know* its money cannot move.

        That is: nothing was ever signed for it, or its authorization expired
        and the chain shows its nonce unused. Releasing twice is a no-op, so a
        retried cleanup cannot inflate the budget.
        """
        with self._lock:
            if self._live.pop(reservation.id, None) is None:
                return
            self._spent[reservation.asset] -= reservation.amount

    def __repr__(self) -> str:
        with self._lock:
            spent = dict(self._spent)
        return f"Budget(limits={self._limits or self._default!r}, spent={spent!r})"
