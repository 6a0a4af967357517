"""Exceptions raised by :mod:`a402.crypto`.

Verification functions return ``False`` for a bad signature (a normal outcome
that callers branch on); exceptions are for misuse and for operations that
cannot produce a meaningful answer (extraction from an unrelated signature,
decryption under the wrong key).
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class for every error raised by :mod:`a402.crypto`."""


class InvalidKeyError(CryptoError):
    """A secret or public key is malformed or unusable for the chosen flavour."""


class ExtractionError(CryptoError):
    """A signature is not the completion of the given pre-signature under ``T``."""


class SealError(CryptoError):
    """A sealed result failed to open: wrong key, wrong context, or tampering."""
