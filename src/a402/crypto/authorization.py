"""The vault's conditional payment signature ``σ_U`` (ECDSA over secp256k1).

Why ECDSA rather than EVM-flavour Schnorr: the vault signs as an ordinary
Ethereum account. Its identity on-chain is then an address, the ASC manager
checks ``σ_U`` with OpenZeppelin's ``ECDSA.recover`` (one ``ecrecover``, no key
constraint), and the key can live in any wallet, HSM or KMS that signs
Ethereum digests. Nothing about ``σ_U`` needs Schnorr: it is never adapted.

Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v ∈ {27, 28}`` and low ``s``
(libsecp256k1 always produces low ``s``, which OpenZeppelin requires), with
RFC 6979 deterministic nonces.
"""

from __future__ import annotations

from coincurve import PrivateKey

from a402.evm.ecdsa import OPENZEPPELIN, public_key_address, recover_address

from ._secp import N, int_from
from .errors import InvalidKeyError
from .message import PaymentDomain, authorization_digest


def _private_key(secret: bytes) -> PrivateKey:
    if len(secret) != 32 or not 0 < int_from(secret) < N:
        raise InvalidKeyError("an ECDSA secret key is a 32-byte scalar in [1, N)")
    return PrivateKey(secret)


class EcdsaSigner:
    """An Ethereum ECDSA key, loaded once.

    Loading a key derives its public key (about 50 µs); a vault that signs
    ``σ_U`` on every request keeps one of these instead of passing raw bytes.
    ``repr`` shows only the address.
    """

    __slots__ = ("_key", "address")

    def __init__(self, secret: bytes) -> None:
        self._key = _private_key(secret)
        #: The 20-byte Ethereum address of the key.
        self.address: bytes = public_key_address(self._key.public_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """ECDSA-sign a 32-byte digest as Ethereum does: ``r ‖ s ‖ v`` (65 bytes)."""
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        signature = self._key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes([27 + signature[64]])

    def __repr__(self) -> str:
        return f"EcdsaSigner(address=0x{self.address.hex()})"


def _signer(key: bytes | EcdsaSigner) -> EcdsaSigner:
    return key if isinstance(key, EcdsaSigner) else EcdsaSigner(key)


def address_of(key: bytes | EcdsaSigner) -> bytes:
    """The 20-byte Ethereum address of an ECDSA key."""
    return _signer(key).address


def sign_digest(key: bytes | EcdsaSigner, digest: bytes) -> bytes:
    """ECDSA-sign a 32-byte digest as Ethereum does: ``r ‖ s ‖ v`` (65 bytes)."""
    return _signer(key).sign_digest(digest)


def recover_signer(digest: bytes, signature: bytes) -> bytes | None:
    """The 20-byte address that signed ``digest``, or ``None`` if the signature is malformed.

    Rejects high ``s`` and ``v`` outside ``{27, 28}``, exactly as
    OpenZeppelin's ``ECDSA.recover`` does, so Python and the contract agree
    (:data:`a402.evm.ecdsa.OPENZEPPELIN`).
    """
    return recover_address(digest, signature, policy=OPENZEPPELIN)


def sign_authorization(
    vault_key: bytes | EcdsaSigner,
    domain: PaymentDomain,
    payment: bytes,
    amount: int,
    challenge: bytes,
) -> bytes:
    """``σ_U``: the vault approves paying ``amount`` for payment message ``payment``,
    conditional on the provider completing the pre-signature whose EVM challenge
    is ``challenge`` (see :mod:`a402.crypto.message` for why ``e`` is bound)."""
    return _signer(vault_key).sign_digest(authorization_digest(domain, payment, amount, challenge))


def authorization_signer(
    domain: PaymentDomain, payment: bytes, amount: int, challenge: bytes, signature: bytes
) -> bytes | None:
    """The address that produced ``signature`` as ``σ_U`` over these terms, if any."""
    return recover_signer(authorization_digest(domain, payment, amount, challenge), signature)
