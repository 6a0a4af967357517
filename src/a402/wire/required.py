"""Reading the PaymentRequired of a 402: its ``PAYMENT-REQUIRED`` header, else its body.

Sans-IO: the caller hands in the header's value and the body's bytes, so both
the paying client (:func:`a402.client.payment_required_of`) and the vault
(:mod:`a402.vault.offers`) read a 402 the same way without either importing
the other.
"""

from __future__ import annotations

from a402.wire.errors import MALFORMED_PAYMENT_REQUIRED, WireError
from a402.wire.headers import decode_payment_required
from a402.wire.jsonstrict import loads_object
from a402.wire.x402 import AnyPaymentRequired, parse_payment_required


def read_payment_required(header: str | None, body: bytes) -> AnyPaymentRequired:
    """The PaymentRequired of a 402: the ``PAYMENT-REQUIRED`` header, else a JSON body.

    The body form is x402 v1; a v2 body is accepted too (some servers send
    both). Anything else raises ``WireError(malformed_payment_required)``, whose
    message says why.
    """
    try:
        if header:
            return decode_payment_required(header)
        if not body:
            raise WireError(MALFORMED_PAYMENT_REQUIRED, "402 with neither header nor body")
        return parse_payment_required(loads_object(body))
    except WireError as e:
        raise WireError(MALFORMED_PAYMENT_REQUIRED, f"not an x402 402: {e}") from e
