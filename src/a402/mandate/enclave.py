"""The vault enclave's mandate check: the limits an owner signed, enforced where σ_U is signed.

A vault client (the *agent*: the key that signs its vault calls) may work under
an owner's mandate. Its signed ``POST /v1/invoke`` then carries the signed
mandate document (``mandate``, and ``mandateConfirmation`` for a payment above
the threshold), inside the body the client's signature covers. The vault
enclave keeps a :class:`MandateBook` in its sealed ledger and asks it, before
any request goes out on a channel (so before σ_U can exist):

* the owner's signature over the mandate (a :class:`SignedMandate` exists only
  with it), and that the mandate's ``agent`` is the key that signed the call;
* the payment as the enclave itself sees it — payee = the channel's provider,
  asset = the channel's token, network = the vault's chain, scheme ``a402``,
  amount = δ, URL = the call's — against every limit (:func:`decide`): the
  per-payment cap, payees, origins and URL patterns, validity, schemes,
  networks, assets, the total and per-period budget, and the owner's
  confirmation above ``confirm_above`` (each confirmation pays once);
* the budget across calls: :meth:`MandateBook.reserve` adds δ before the request
  leaves; the reservation is spent for good once σ_U is signed
  (:meth:`MandateBook.spent`), and given back only if the request ended without
  σ_U (:meth:`MandateBook.release`). So concurrent calls on many channels never
  overshoot, and a refusal has changed nothing.

Binding. The first mandate the book sees for an agent (in a call, or given by
:meth:`MandateBook.bind`) binds the agent to its owner for good: from then on every
call of that agent must carry a valid mandate of that owner (``mandate_required``
otherwise), so an agent talked into leaving its mandate out of a call pays
nothing. The owner widens or narrows the agent's room by signing new mandates,
and stops it by revoking them. An agent the book has never seen bound pays as
before: a mandate limits the agent only from the moment it reaches the vault
(the owner, or any relayer of the signed document, binds it at once).

Revocation, and what the enclave cannot know. The enclave has no chain of its
own: the host reads ``MandateRegistry.isRevoked`` and hands the enclave the
answer with the block's number and timestamp (:class:`RegistryRead`). The book
refuses to pay under a mandate without a read, with a read whose block is older
than one it already saw for that mandate, or whose block timestamp is more than
:data:`MAX_READ_AGE` seconds before the call's signature or after the enclave's
clock; a revoked answer is taken whatever its block and is final (so is
revocation on-chain), so one lying read cannot shadow a later honest
revocation. That bounds an honest host's lag to :data:`MAX_READ_AGE`, but a
host that lies about the registry (claims "not revoked" at a fresh block) while
it lies is not caught: without a light client the enclave
cannot tell, so withholding a revocation is the one limit a dishonest host can
take away. Every other limit is the owner's signature and the client's,
checked here, and no host can widen it. Like the rest of the sealed ledger, the
book has no rollback protection (see :mod:`a402.vault_enclave`): a host that
restarts the enclave on an older ledger can restore an older spend.

Who is paid. A call names a URL; which channel, so which provider, serves it is
the host's choice, and no provider's attestation names an origin. So a URL
limit (origins, URL patterns) binds the payee only together with the payees
list, and a mandate that limits URLs without naming payees is refused here
(``mandate_payees_required``) rather than enforced as if it bound the payee.

The book's clock is the enclave's ``wall`` (the time as signed calls vouch for
it), never earlier than the call's signature, so a host cannot move a mandate
back into its validity window; moving it forward only ends the mandate sooner.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from a402.evm.address import address_key
from a402.mandate.document import Confirmation, MandateError, SignedMandate, load_signed
from a402.mandate.policy import (
    MANDATE_REVOKED,
    MANDATE_WRONG_AGENT,
    MandateRefused,
    ProposedPayment,
    Spent,
    decide,
    period_index,
)

#: A registry read older than this (seconds of chain time before the call's
#: signature) does not do: the most an honest host's revocation lag can be.
MAX_READ_AGE: Final = 60
MANDATE_REQUIRED: Final = "mandate_required"
MANDATE_REVOCATION_UNKNOWN: Final = "mandate_revocation_unknown"
MANDATE_CONFIRMATION_USED: Final = "mandate_confirmation_used"
MANDATE_INVALID: Final = "mandate_invalid"
MANDATE_PAYEES_REQUIRED: Final = "mandate_payees_required"
_CACHE: Final = 256
_MAX_CONFIRMATIONS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RegistryRead:
    """What the host read from the mandate's ``MandateRegistry``: ``isRevoked(owner,
    mandate)`` at block ``block`` whose timestamp is ``timestamp``."""

    mandate: bytes
    block: int
    timestamp: int
    revoked: bool


@dataclass(slots=True)
class _Spend:
    total: int = 0
    period_index: int = 0
    period: int = 0


@dataclass(frozen=True, slots=True)
class _Reserved:
    mandate: str
    amount: int
    period_index: int
    signed: bool = False


class MandateBook:
    """Agents bound to owners, spend per mandate, reservations per call (module doc).

    Not thread-safe on its own: the enclave code calls it under its lock. ``changed``
    turns True with every change the sealed ledger must keep."""

    def __init__(self) -> None:
        self.bound: dict[str, str] = {}  # agent -> owner (address keys)
        self.spend: dict[str, _Spend] = {}  # mandate hash (0x hex) -> spend
        self.reserved: dict[str, _Reserved] = {}  # call key -> reservation
        self.reads: dict[str, tuple[int, int, bool]] = {}  # hash -> block, timestamp, revoked
        self.confirmations: set[str] = set()
        self.changed = False
        self._documents: OrderedDict[str, SignedMandate] = OrderedDict()

    # ---------------------------------------------------------------- inputs

    def load(self, document: Mapping[str, Any]) -> SignedMandate:
        """The signed mandate (owner's signature checked), cached by its exact text."""
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        signed = self._documents.get(text)
        if signed is None:
            try:
                signed = load_signed(document)
            except MandateError as e:
                raise MandateRefused(e.reason, e.message) from None
            self._documents[text] = signed
            while len(self._documents) > _CACHE:
                self._documents.popitem(last=False)
        else:
            self._documents.move_to_end(text)
        return signed

    def bind(self, signed: SignedMandate) -> None:
        """Bind the mandate's agent to its owner (idempotent). An agent bound to another
        owner stays bound to that one (``mandate_wrong_agent``)."""
        agent, owner = address_key(signed.mandate.agent), address_key(signed.mandate.owner)
        bound = self.bound.get(agent)
        if bound is None:
            self.bound[agent] = owner
            self.changed = True
        elif bound != owner:
            raise MandateRefused(MANDATE_WRONG_AGENT, f"this agent is bound to the mandates "
                                 f"of another owner ({bound})")

    def read(self, read: RegistryRead, *, now: int | None = None) -> None:
        """Take the host's registry read. A revoked read is taken whatever its block (a
        revocation is never undone on-chain, so no earlier or later block can make it
        wrong) and is final. A not-revoked read at an older block than one already taken is
        ignored (the newer stands), unless the one taken claims a time beyond the enclave's
        clock ``now`` (plus :data:`MAX_READ_AGE`): such a read is a lie or a broken node,
        and must not shadow the honest reads that follow it (review S9-V3)."""
        key = "0x" + read.mandate.hex()
        known = self.reads.get(key)
        if known is not None and known[2]:
            return
        if known is not None and not read.revoked and read.block < known[0] and not (
                now is not None and known[1] > now + MAX_READ_AGE):
            return
        self.reads[key] = (read.block, read.timestamp, read.revoked)
        if read.revoked:
            self.changed = True  # kept sealed: a revocation is final

    # ---------------------------------------------------------------- the check

    def check(
        self, *, agent: str, document: Mapping[str, Any] | None,
        confirmation: Mapping[str, Any] | None, payment: ProposedPayment, now: int,
        signed_at: int, key: str | None,
    ) -> str | None:
        """Allowed (the mandate's hash, None for an unbound agent without one), or
        :class:`MandateRefused`. With ``key`` (the call's), δ is reserved under it;
        without, the payment is only checked (amount 0: before a channel opens)."""
        client = address_key(agent)
        if document is None:
            if client in self.bound:
                raise MandateRefused(MANDATE_REQUIRED, "this agent pays only under its "
                                     "owner's mandate, and the call carries none")
            return None
        signed = self.load(document)
        if address_key(signed.mandate.agent) != client:
            raise MandateRefused(MANDATE_WRONG_AGENT, f"the mandate is for "
                                 f"{signed.mandate.agent}, the call is signed by {agent}")
        self.bind(signed)
        m = signed.mandate
        if (m.origins or m.url_patterns) and not m.payees:
            # In a vault the host picks which channel (so which provider) serves a URL, and
            # no provider attests an origin: a URL limit alone would not limit who is paid.
            # (The agent is bound all the same: it pays nothing until a mandate that names
            # its payees comes.)
            raise MandateRefused(MANDATE_PAYEES_REQUIRED, "through a vault a mandate that "
                                 "limits origins or URLs must also name its payees (the "
                                 "providers' addresses): the host chooses the channel, so a "
                                 "URL alone does not bind who is paid")
        mandate = signed.hash_hex
        read = self.reads.get(mandate)
        if read is not None and read[2]:
            raise MandateRefused(MANDATE_REVOKED, "the owner revoked this mandate on-chain")
        if read is None or read[1] < signed_at - MAX_READ_AGE:
            raise MandateRefused(MANDATE_REVOCATION_UNKNOWN, "the vault has no fresh read of "
                                 "the mandate's registry, so it is treated as revoked")
        if read[1] > max(now, signed_at) + MAX_READ_AGE:
            # A read's time is capped by the enclave's clock: one from the future would
            # otherwise stay "fresh" for as long as the host's lie reaches.
            raise MandateRefused(MANDATE_REVOCATION_UNKNOWN, "the vault's read of the "
                                 "mandate's registry claims a block from the future, so it "
                                 "is treated as revoked")
        owner_ok = None
        if confirmation is not None:
            try:
                owner_ok = Confirmation.from_json(confirmation)
            except (MandateError, KeyError, TypeError, ValueError) as e:
                raise MandateRefused(MANDATE_INVALID, f"mandateConfirmation: {e}") from None
        held = None if key is None else self.reserved.get(key)
        if key is not None and held is not None:
            if held.amount == payment.amount or held.signed:
                return mandate  # this call's reservation stands (a retry on the same channel)
            self.release(key)  # another amount (a fresh offer): decided again from scratch
        at = max(now, signed_at)
        index = period_index(signed.mandate, at)
        spend = self.spend.get(mandate, _Spend())
        index = max(index, spend.period_index)  # periods only move forward
        in_period = spend.period if spend.period_index == index else 0
        decision = decide(signed, payment, Spent(spend.total, in_period), now=at,
                          confirmation=owner_ok)
        if not decision:
            raise MandateRefused.of(decision)
        if key is None:
            return mandate
        nonce = None
        if owner_ok is not None and signed.mandate.confirm_above \
                and payment.amount > signed.mandate.confirm_above:
            nonce = "0x" + owner_ok.nonce.hex()
            if nonce in self.confirmations:
                raise MandateRefused(MANDATE_CONFIRMATION_USED,
                                     "the owner's confirmation was used once already")
            if len(self.confirmations) >= _MAX_CONFIRMATIONS:
                raise MandateRefused(MANDATE_CONFIRMATION_USED, "too many confirmations kept")
            self.confirmations.add(nonce)
        self.spend[mandate] = _Spend(spend.total + payment.amount, index,
                                     in_period + payment.amount)
        self.reserved[key] = _Reserved(mandate, payment.amount, index)
        self.changed = True
        return mandate

    def spent(self, key: str, amount: int | None = None) -> None:
        """σ_U was signed for the call ``key``: its reservation is spent for good.

        ``amount``: what σ_U pays (a metered charge, at most the δ reserved); the rest of
        the reservation goes back to the mandate's budget, since nothing can ever pay it."""
        held = self.reserved.get(key)
        if held is not None and not held.signed:
            paid = held.amount if amount is None else max(0, min(amount, held.amount))
            unused = held.amount - paid
            spend = self.spend.get(held.mandate)
            if unused and spend is not None:
                spend.total -= unused
                if spend.period_index == held.period_index:
                    spend.period -= unused
            self.reserved[key] = _Reserved(held.mandate, paid, held.period_index, True)
            self.changed = True

    def release(self, key: str) -> None:
        """The call ``key`` ended without σ_U: give its amount back (once). A signed
        reservation is only forgotten (its amount stays spent)."""
        held = self.reserved.pop(key, None)
        if held is None:
            return
        self.changed = True
        if held.signed:
            return
        spend = self.spend.get(held.mandate)
        if spend is not None:
            spend.total -= held.amount
            if spend.period_index == held.period_index:
                spend.period -= held.amount

    # ---------------------------------------------------------------- sealing

    def to_json(self) -> dict[str, Any]:
        return {
            "bound": dict(self.bound),
            "spend": {h: [str(s.total), s.period_index, str(s.period)]
                      for h, s in self.spend.items()},
            "reserved": {k: [r.mandate, str(r.amount), r.period_index, r.signed]
                         for k, r in self.reserved.items()},
            "revoked": sorted(h for h, r in self.reads.items() if r[2]),
            "confirmations": sorted(self.confirmations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> MandateBook:
        """A book from :meth:`to_json` (None: an empty one, a ledger from before mandates)."""
        book = cls()
        if not data:
            return book
        book.bound = {str(k): str(v) for k, v in data["bound"].items()}
        book.spend = {h: _Spend(int(s[0]), int(s[1]), int(s[2]))
                      for h, s in data["spend"].items()}
        book.reserved = {k: _Reserved(str(r[0]), int(r[1]), int(r[2]), bool(r[3]))
                         for k, r in data["reserved"].items()}
        book.reads = {h: (0, 0, True) for h in data["revoked"]}
        book.confirmations = set(data["confirmations"])
        return book
