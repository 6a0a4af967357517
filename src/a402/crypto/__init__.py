"""Pure cryptography for A402: Schnorr adaptor signatures, payment messages, result sealing.

Nothing in this package performs I/O. The pieces of one paid request:

>>> from a402.crypto import EVM, generate_adaptor, sealing
>>> provider = EVM.generate_key()
>>> t, T = generate_adaptor()                       # provider enclave, per request
>>> m = bytes(32)                     # really: payment_message(..., answer_hash(...))
>>> presig = EVM.pre_sign(provider, m, T)           # REPLY carries (T, presig, EncRes)
>>> EVM.pre_verify(provider.public_key, m, T, presig)  # vault
True
>>> signature = EVM.adapt(presig, t)                # provider, to claim on-chain
>>> EVM.extract(presig, signature, T) == t          # vault, from the calldata
True

See :mod:`a402.crypto.schnorr` for the signature schemes and encodings,
:mod:`a402.crypto.message` for the payment message ``m``,
:mod:`a402.crypto.sealing` for ``seal``/``open`` of the result, and
:mod:`a402.crypto.authorization` for the vault's conditional signature ``σ_U``.
"""

from . import authorization, message, sealing
from .authorization import EcdsaSigner, sign_authorization
from .errors import CryptoError, ExtractionError, InvalidKeyError, SealError
from .message import (
    PaymentDomain,
    answer_hash,
    answer_hash_of,
    authorization_digest,
    payment_message,
    result_hash,
)
from .schnorr import (
    BIP340,
    EVM,
    Bip340Schnorr,
    EvmSchnorr,
    PreSignature,
    SchnorrScheme,
    SecretKey,
    adaptor_point,
    generate_adaptor,
    is_adaptor_secret,
    scheme,
)
from .sealing import EncRes, ResultContext, seal

__all__ = [
    "BIP340",
    "EVM",
    "Bip340Schnorr",
    "CryptoError",
    "EcdsaSigner",
    "EncRes",
    "EvmSchnorr",
    "ExtractionError",
    "InvalidKeyError",
    "PaymentDomain",
    "PreSignature",
    "ResultContext",
    "SchnorrScheme",
    "SealError",
    "SecretKey",
    "adaptor_point",
    "answer_hash",
    "answer_hash_of",
    "authorization",
    "authorization_digest",
    "generate_adaptor",
    "is_adaptor_secret",
    "message",
    "payment_message",
    "result_hash",
    "scheme",
    "seal",
    "sealing",
    "sign_authorization",
]
