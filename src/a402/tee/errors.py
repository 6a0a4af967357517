"""Exceptions raised by :mod:`a402.tee`.

Every error carries a short machine-readable ``reason`` (``"bad_signature"``,
``"stale"``, ``"replay"``, …) so that callers can branch, count and log
failures without parsing messages, plus a human ``detail``. Attestation,
channel and sealing failures are exceptions rather than ``False`` returns
because each of them means "do not trust this peer or this blob", and an
exception cannot be ignored by accident.
"""

from __future__ import annotations


class TeeError(ValueError):
    """Base class for every error raised by :mod:`a402.tee`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class AttestationError(TeeError):
    """Evidence did not prove that the expected code runs in a genuine enclave.

    Reasons: ``bad_cose``, ``bad_document``, ``bad_certificate``, ``bad_chain``,
    ``expired_certificate``, ``certificate_not_yet_valid``, ``bad_signature``,
    ``debug_enclave``, ``bad_key_binding``, ``bad_quote``, ``untrusted_root``,
    ``simulated_not_allowed``, ``measurement_mismatch``, ``pcr_mismatch``,
    ``stale``, ``future_timestamp``, ``nonce_mismatch``.
    """


class ChannelError(TeeError):
    """The secure channel between two enclaves failed or was misused.

    Reasons: ``malformed``, ``decrypt_failed``, ``replay``, ``key_not_attested``,
    ``unsupported_kind``, ``out_of_order_call``, ``exhausted``, ``unknown_channel``.
    """


class SealingError(TeeError):
    """A sealed blob did not open: wrong enclave, wrong label, tampering, or format.

    Reasons: ``malformed``, ``unsupported_version``, ``open_failed``, ``bad_label``.
    """


class EnclaveError(TeeError):
    """An enclave refused an operation (``purpose_not_allowed``, ``bad_input``, …)."""
