"""Mandates: what an owner lets an agent spend, signed by the owner, checked before paying.

The pure parts load with the package: :mod:`a402.mandate.document` (the EIP-712
document, its signing and its fail-closed decoding) and :mod:`a402.mandate.policy`
(:func:`decide`: allowed, or a machine-readable ``mandate_*`` reason). The parts
with I/O load lazily, on first use of their names: :mod:`a402.mandate.registry`
(revocation on-chain, ``MandateRegistry``, with a per-block cache),
:mod:`a402.mandate.spend` (the durable spend store, SQLite or PostgreSQL) and
:mod:`a402.mandate.guard` (the three together, for a payer).
"""

from typing import TYPE_CHECKING

from a402.lazy import lazy_attributes
from a402.mandate.document import (
    Confirmation,
    Domain,
    Mandate,
    MandateError,
    SignedMandate,
    load_signed,
    revocation_digest,
    sign_mandate,
    typed_data,
)
from a402.mandate.policy import Decision, MandateRefused, ProposedPayment, Spent, decide

if TYPE_CHECKING:
    from a402.mandate.guard import MandateGuard
    from a402.mandate.registry import MandateRegistry, RevocationCheck, RevocationUnknown
    from a402.mandate.spend import ReleaseRefused, SpendStore

__all__ = [
    "Confirmation",
    "Decision",
    "Domain",
    "Mandate",
    "MandateError",
    "MandateGuard",
    "MandateRefused",
    "MandateRegistry",
    "ProposedPayment",
    "ReleaseRefused",
    "RevocationCheck",
    "RevocationUnknown",
    "SignedMandate",
    "SpendStore",
    "Spent",
    "decide",
    "load_signed",
    "revocation_digest",
    "sign_mandate",
    "typed_data",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "MandateGuard": "a402.mandate.guard",
    "MandateRegistry": "a402.mandate.registry",
    "RevocationCheck": "a402.mandate.registry",
    "RevocationUnknown": "a402.mandate.registry",
    "ReleaseRefused": "a402.mandate.spend",
    "SpendStore": "a402.mandate.spend",
})
