"""Mandates: what an owner lets an agent spend, signed by the owner, checked before paying.

The pure parts load with the package: :mod:`a402.mandate.document` (the EIP-712
document, its signing and its fail-closed decoding) and :mod:`a402.mandate.policy`
(:func:`decide`: allowed, or a machine-readable ``mandate_*`` reason). The parts
with I/O are imported by name: :mod:`a402.mandate.registry` (revocation on-chain,
``MandateRegistry``, with a per-block cache) and :mod:`a402.mandate.spend` (the
durable spend store, SQLite or PostgreSQL).
"""

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

__all__ = [
    "Confirmation",
    "Decision",
    "Domain",
    "Mandate",
    "MandateError",
    "MandateRefused",
    "ProposedPayment",
    "SignedMandate",
    "Spent",
    "decide",
    "load_signed",
    "revocation_digest",
    "sign_mandate",
    "typed_data",
]
