"""secp256k1 Schnorr signatures and Schnorr adaptor signatures, in two flavours.

The A402 exchange rests on one primitive. A provider pre-signs the payment
message ``m`` under an adaptor point ``T = t·G``:

* ``pre_sign(sk, m, T) → σ̂``: the pre-signature. It is not a valid signature.
* ``pre_verify(pk, m, T, σ̂)``: anyone can check that ``σ̂`` will turn into a
  valid signature on ``m`` once ``t`` is added.
* ``adapt(σ̂, t) → σ``: completes it. Only someone who knows ``t`` can.
* ``extract(σ̂, σ, T) → t``: anyone who holds ``σ̂`` and sees ``σ`` (on-chain,
  for instance) learns ``t``. Being paid and revealing ``t`` are the same act.
* ``verify(pk, m, σ)``: ordinary signature verification.

Both flavours use nonce ``R = R̂ + T`` with ``R̂ = k·G``, and ``ŝ = k + e·x``
(BIP-340 negates ``k`` when ``R`` has odd ``y``), so ``s = ŝ ± t``.

**EVM flavour** (:data:`EVM`). The challenge is
``e = keccak256(address(R) ‖ 0x1b ‖ px ‖ m)`` and a signature is ``e ‖ s``
(64 bytes). A contract verifies it with one ``ecrecover``:
``ecrecover(−s·px, 27, px, −e·px)`` returns ``address(s·G − e·P)``; the
signature is valid iff hashing that address reproduces ``e``. This is the
technique of noot/schnorr-verify. It requires the key ``P`` to have even ``y``
(the ``0x1b`` = 27 recovery id) and ``0 < px ≤ (N−1)/2`` (``ecrecover`` needs
``px < N``; half the order is the technique's conventional margin). Keys are
normalised like BIP-340 ones (the secret is negated when ``y`` is odd) and
:meth:`EvmSchnorr.generate_key` retries until ``px`` is in range, so it always
returns a usable key. Messages are 32 bytes (``bytes32`` on-chain).

**BIP-340 flavour** (:data:`BIP340`). Tagged SHA-256 hashes, x-only keys,
64-byte signatures ``x(R) ‖ s``; :meth:`Bip340Schnorr.sign` is exactly BIP-340
signing, so it reproduces the official test vectors. Messages may have any
length, as in the current BIP.

**Pre-signature encoding** (:class:`PreSignature`): EVM ``e ‖ ŝ`` (64 bytes; a
verifier recovers ``R̂ = ŝ·G − e·P`` and checks ``e`` against ``R̂ + T``);
BIP-340 ``R ‖ ŝ`` with ``R`` the 33-byte compressed adapted nonce (its prefix
says whether ``t`` is added or subtracted).

**Nonces** are derived as BIP-340 derives them, from the secret key, the
public key, the adaptor point and the message, masked with 32 bytes of fresh
randomness (tags differ per flavour and per plain/adaptor use). The same key
therefore never uses one nonce for two different messages, nor for two
pre-signatures on one message under different adaptor points (which would
leak the key), even if the randomness source failed.

Side channels: point multiplications run inside libsecp256k1 and are
constant-time. Scalar arithmetic modulo ``N`` (``ŝ = k + e·x``, ``t = s − ŝ``)
uses Python integers, which are not constant-time; the enclave threat model
(paper §2.7) puts side channels out of scope, and no secret ever drives a
branch. Secret byte strings are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from coincurve import PublicKey

from a402.evm.ecdsa import public_key_address
from a402.evm.keccak import keccak256

from ._secp import (
    HALF_N,
    N,
    add,
    b32,
    base_mul,
    ct_equal,
    has_even_y,
    int_from,
    lift_x,
    negate,
    parse_point,
    random_scalar,
    sg_minus_ep,
    tagged_hash,
)
from .errors import ExtractionError, InvalidKeyError

Flavour = Literal["evm", "bip340"]

#: The recovery id of an even-y EVM key, hashed into every EVM challenge.
EVM_KEY_PARITY = 27


class SecretKey:
    """A signing key, normalised so that its public key has even ``y``.

    Holds the public key too, because every signature needs it and deriving it
    costs a scalar multiplication. ``repr`` never shows the secret.
    """

    __slots__ = ("_d", "flavour", "public_key")

    def __init__(self, d: int, public_key: bytes, flavour: Flavour) -> None:
        self._d = d
        self.public_key = public_key
        self.flavour = flavour

    def to_bytes(self) -> bytes:
        """The 32-byte normalised secret (its public key has even ``y``)."""
        return b32(self._d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return self.flavour == other.flavour and ct_equal(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash((self.flavour, self.public_key))

    def __repr__(self) -> str:
        return f"SecretKey(flavour={self.flavour!r}, public_key={self.public_key.hex()})"


@dataclass(frozen=True, slots=True)
class PreSignature:
    """An adaptor pre-signature ``σ̂``.

    ``r`` is the EVM challenge ``e`` (32 bytes) or the BIP-340 adapted nonce
    point ``R`` (33 bytes, compressed); ``s`` is ``ŝ``.
    """

    flavour: Flavour
    r: bytes
    s: int

    def to_bytes(self) -> bytes:
        """``r ‖ ŝ``: 64 bytes (EVM) or 65 bytes (BIP-340)."""
        return self.r + b32(self.s)


def generate_adaptor() -> tuple[bytes, bytes]:
    """Draw a fresh adaptor secret: ``(t, T)`` with ``T = t·G`` compressed (33 bytes)."""
    t = random_scalar()
    return b32(t), base_mul(t).format()


def adaptor_point(t: bytes) -> bytes:
    """``T = t·G`` (33 bytes, compressed) for a 32-byte secret ``t``."""
    return base_mul(_scalar(t, "adaptor secret")).format()


def is_adaptor_secret(t: bytes, adaptor: bytes) -> bool:
    """Whether ``t`` is the discrete logarithm of ``adaptor`` (``t·G == T``).

    This is the vault's check on a revealed ``t`` before it credits the
    provider.
    """
    try:
        point = adaptor_point(t)
    except InvalidKeyError:
        return False
    return ct_equal(point, adaptor)


def _scalar(value: bytes, what: str) -> int:
    if len(value) != 32:
        raise InvalidKeyError(f"{what} must be 32 bytes")
    k = int_from(value)
    if not 0 < k < N:
        raise InvalidKeyError(f"{what} is out of range")
    return k


def _adaptor(adaptor: bytes) -> PublicKey:
    point = parse_point(adaptor)
    if point is None:
        raise InvalidKeyError("adaptor point must be a 33-byte compressed secp256k1 point")
    return point


class SchnorrScheme(ABC):
    """One Schnorr flavour: signing, verification and the adaptor operations."""

    flavour: ClassVar[Flavour]
    _aux_tag: ClassVar[str]
    _nonce_tag: ClassVar[str]
    _adaptor_nonce_tag: ClassVar[str]

    # -- keys ---------------------------------------------------------------

    def secret_key(self, secret: bytes | SecretKey) -> SecretKey:
        """Load a 32-byte secret, negating it if its public key has odd ``y``."""
        if isinstance(secret, SecretKey):
            if secret.flavour != self.flavour:
                raise InvalidKeyError(f"key is for {secret.flavour}, not {self.flavour}")
            return secret
        d = _scalar(secret, "secret key")
        point = base_mul(d)
        if not has_even_y(point):
            d = N - d
        public_key = point.format()[1:]
        self._check_public_key(public_key)
        return SecretKey(d, public_key, self.flavour)

    def generate_key(self) -> SecretKey:
        """A fresh random key that this flavour can use."""
        while True:
            try:
                return self.secret_key(b32(random_scalar()))
            except InvalidKeyError:
                continue

    def public_key(self, secret: bytes | SecretKey) -> bytes:
        """The 32-byte x-only public key."""
        return self.secret_key(secret).public_key

    def _check_public_key(self, public_key: bytes) -> None:  # noqa: B027 - optional hook
        """Raise :class:`InvalidKeyError` if this flavour cannot use the key."""

    # -- nonces -------------------------------------------------------------

    def _nonce(
        self, key: SecretKey, message: bytes, adaptor: bytes | None, aux_rand: bytes | None
    ) -> int:
        """BIP-340-style nonce: ``H(d ⊕ H_aux(rand) ‖ P ‖ [T] ‖ m)``.

        Deterministic in key, adaptor and message (so a broken random source
        cannot make one nonce sign two messages), hedged with fresh randomness
        (so fault or side-channel attacks on a fixed nonce do not apply).
        """
        if aux_rand is None:
            aux_rand = secrets.token_bytes(32)
        elif len(aux_rand) != 32:
            raise ValueError("aux_rand must be 32 bytes")
        mask = tagged_hash(self._aux_tag, aux_rand)
        masked = bytes(a ^ b for a, b in zip(key.to_bytes(), mask, strict=True))
        if adaptor is None:
            data = masked + key.public_key + message
            tag = self._nonce_tag
        else:
            data = masked + key.public_key + adaptor + message
            tag = self._adaptor_nonce_tag
        k = int_from(tagged_hash(tag, data)) % N
        if k == 0:  # probability 2^-256; BIP-340 also fails here
            raise ValueError("nonce derivation produced zero")
        return k

    # -- the five operations --------------------------------------------------

    def sign(
        self, secret: bytes | SecretKey, message: bytes, *, aux_rand: bytes | None = None
    ) -> bytes:
        """An ordinary 64-byte Schnorr signature."""
        key = self.secret_key(secret)
        self._check_message(message)
        k = self._nonce(key, message, None, aux_rand)
        return self._sign_with_nonce(key, message, k)

    def pre_sign(
        self,
        secret: bytes | SecretKey,
        message: bytes,
        adaptor: bytes,
        *,
        aux_rand: bytes | None = None,
    ) -> PreSignature:
        """Pre-sign ``message`` under adaptor point ``T`` (33 bytes, compressed)."""
        key = self.secret_key(secret)
        self._check_message(message)
        point = _adaptor(adaptor)
        k = self._nonce(key, message, adaptor, aux_rand)
        return self._pre_sign_with_nonce(key, message, k, point)

    @abstractmethod
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is a valid signature on ``message`` by ``public_key``."""

    @abstractmethod
    def pre_verify(
        self, public_key: bytes, message: bytes, adaptor: bytes, presig: PreSignature
    ) -> bool:
        """Whether ``presig`` completes, with the secret of ``adaptor``, to a valid
        signature on ``message`` by ``public_key``."""

    @abstractmethod
    def adapt(self, presig: PreSignature, t: bytes) -> bytes:
        """Complete ``presig`` with the adaptor secret ``t``: the 64-byte signature."""

    @abstractmethod
    def extract(self, presig: PreSignature, signature: bytes, adaptor: bytes) -> bytes:
        """Recover ``t`` from a pre-signature and its completion.

        Raises :class:`ExtractionError` unless ``signature`` completes
        ``presig`` with the secret of ``adaptor``; on success ``t·G == T``.
        """

    @abstractmethod
    def presignature_from_bytes(self, data: bytes) -> PreSignature:
        """Parse :meth:`PreSignature.to_bytes` output of this flavour."""

    # -- flavour hooks ------------------------------------------------------

    @abstractmethod
    def _check_message(self, message: bytes) -> None: ...

    @abstractmethod
    def _sign_with_nonce(self, key: SecretKey, message: bytes, k: int) -> bytes: ...

    @abstractmethod
    def _pre_sign_with_nonce(
        self, key: SecretKey, message: bytes, k: int, adaptor: PublicKey
    ) -> PreSignature: ...

    def _own(self, presig: PreSignature) -> PreSignature:
        if presig.flavour != self.flavour:
            raise ValueError(f"pre-signature is {presig.flavour}, not {self.flavour}")
        return presig


class EvmSchnorr(SchnorrScheme):
    """Schnorr with a keccak challenge that a contract verifies with one ``ecrecover``."""

    flavour: ClassVar[Flavour] = "evm"
    _aux_tag = "A402/evm-schnorr/aux"
    _nonce_tag = "A402/evm-schnorr/nonce"
    _adaptor_nonce_tag = "A402/evm-schnorr/adaptor-nonce"

    @staticmethod
    def challenge(nonce_point: PublicKey, public_key: bytes, message: bytes) -> bytes:
        """``keccak256(address(R) ‖ uint8(27) ‖ px ‖ m)``, the raw 32-byte challenge."""
        return keccak256(
            public_key_address(nonce_point) + bytes([EVM_KEY_PARITY]) + public_key + message
        )

    def _check_public_key(self, public_key: bytes) -> None:
        if not 0 < int_from(public_key) <= HALF_N:
            raise InvalidKeyError(
                "EVM Schnorr keys need an x-coordinate at most (N-1)/2; "
                "use generate_key() to draw a usable one"
            )

    def _check_message(self, message: bytes) -> None:
        if len(message) != 32:
            raise ValueError("EVM Schnorr messages are 32 bytes (a bytes32 digest)")

    def _key_point(self, public_key: bytes) -> tuple[int, PublicKey] | None:
        """Parse an x-only key under exactly the contract's rules."""
        if len(public_key) != 32:
            return None
        px = int_from(public_key)
        if not 0 < px <= HALF_N:
            return None
        point = lift_x(public_key)
        return None if point is None else (px, point)

    def _sign_with_nonce(self, key: SecretKey, message: bytes, k: int) -> bytes:
        nonce_point = base_mul(k)
        e_raw = self.challenge(nonce_point, key.public_key, message)
        s = (k + int_from(e_raw) * key._d) % N
        return e_raw + b32(s)

    def _pre_sign_with_nonce(
        self, key: SecretKey, message: bytes, k: int, adaptor: PublicKey
    ) -> PreSignature:
        nonce_point = add(base_mul(k), adaptor)
        if nonce_point is None:  # k·G = −T: only if k were chosen adversarially
            raise ValueError("adapted nonce is the point at infinity")
        e_raw = self.challenge(nonce_point, key.public_key, message)
        s_hat = (k + int_from(e_raw) * key._d) % N
        return PreSignature("evm", e_raw, s_hat)

    def _recover_nonce(self, public_key: bytes, e_raw: bytes, s: int) -> PublicKey | None:
        """``s·G − e·P`` under the contract's acceptance rules, or ``None``."""
        parsed = self._key_point(public_key)
        if parsed is None:
            return None
        e = int_from(e_raw) % N
        if not 0 < s < N or e == 0:
            return None
        px, point = parsed
        return sg_minus_ep(s, e, px, point)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Mirror of ``Schnorr.verify`` in ``SchnorrVerifier.sol``: same inputs accepted."""
        if len(signature) != 64 or len(message) != 32:
            return False
        e_raw, s = signature[:32], int_from(signature[32:])
        nonce_point = self._recover_nonce(public_key, e_raw, s)
        if nonce_point is None:
            return False
        return ct_equal(self.challenge(nonce_point, public_key, message), e_raw)

    def pre_verify(
        self, public_key: bytes, message: bytes, adaptor: bytes, presig: PreSignature
    ) -> bool:
        if presig.flavour != "evm" or len(presig.r) != 32 or len(message) != 32:
            return False
        adaptor_pt = parse_point(adaptor)
        if adaptor_pt is None:
            return False
        r_hat = self._recover_nonce(public_key, presig.r, presig.s)
        if r_hat is None:
            return False
        nonce_point = add(r_hat, adaptor_pt)
        if nonce_point is None:
            return False
        return ct_equal(self.challenge(nonce_point, public_key, message), presig.r)

    def adapt(self, presig: PreSignature, t: bytes) -> bytes:
        presig = self._own(presig)
        return presig.r + b32((presig.s + _scalar(t, "adaptor secret")) % N)

    def extract(self, presig: PreSignature, signature: bytes, adaptor: bytes) -> bytes:
        presig = self._own(presig)
        if len(signature) != 64 or not ct_equal(signature[:32], presig.r):
            raise ExtractionError("signature does not complete this pre-signature")
        t = (int_from(signature[32:]) - presig.s) % N
        if t == 0 or not ct_equal(base_mul(t).format(), adaptor):
            raise ExtractionError("signature does not complete this pre-signature under T")
        return b32(t)

    def presignature_from_bytes(self, data: bytes) -> PreSignature:
        if len(data) != 64:
            raise ValueError("an EVM pre-signature is 64 bytes: e ‖ ŝ")
        s = int_from(data[32:])
        if s >= N:
            raise ValueError("ŝ is out of range")
        return PreSignature("evm", bytes(data[:32]), s)


class Bip340Schnorr(SchnorrScheme):
    """BIP-340 Schnorr (x-only keys, tagged hashes) and its adaptor variant."""

    flavour: ClassVar[Flavour] = "bip340"
    _aux_tag = "BIP0340/aux"
    _nonce_tag = "BIP0340/nonce"
    _adaptor_nonce_tag = "A402/bip340/adaptor-nonce"

    @staticmethod
    def challenge(nonce_x: bytes, public_key: bytes, message: bytes) -> int:
        """``int(hash_BIP0340/challenge(x(R) ‖ px ‖ m)) mod N``."""
        return int_from(tagged_hash("BIP0340/challenge", nonce_x + public_key + message)) % N

    def _check_message(self, message: bytes) -> None:
        if not isinstance(message, bytes | bytearray):
            raise TypeError("message must be bytes")

    def _sign_with_nonce(self, key: SecretKey, message: bytes, k: int) -> bytes:
        nonce = base_mul(k).format()
        if nonce[0] != 0x02:
            k = N - k
        e = self.challenge(nonce[1:], key.public_key, message)
        return nonce[1:] + b32((k + e * key._d) % N)

    def _pre_sign_with_nonce(
        self, key: SecretKey, message: bytes, k: int, adaptor: PublicKey
    ) -> PreSignature:
        nonce_point = add(base_mul(k), adaptor)
        if nonce_point is None:
            raise ValueError("adapted nonce is the point at infinity")
        nonce = nonce_point.format()
        # The final signature uses the even-y one of ±R; when R is odd the
        # completed nonce is −(k + t), so k is negated here and t in adapt().
        if nonce[0] != 0x02:
            k = N - k
        e = self.challenge(nonce[1:], key.public_key, message)
        return PreSignature("bip340", nonce, (k + e * key._d) % N)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """BIP-340 verification: ``R = s·G − e·P`` must be even-y with ``x(R) = r``."""
        if len(signature) != 64:
            return False
        point = lift_x(public_key)
        if point is None:
            return False
        px = int_from(public_key)
        # r ≥ p cannot equal a point's x, so the final comparison rejects it.
        s = int_from(signature[32:])
        if s >= N:
            return False
        e = self.challenge(signature[:32], public_key, message)
        nonce_point = sg_minus_ep(s, e, px, point)
        if nonce_point is None:
            return False
        return ct_equal(nonce_point.format(), b"\x02" + signature[:32])

    def pre_verify(
        self, public_key: bytes, message: bytes, adaptor: bytes, presig: PreSignature
    ) -> bool:
        if presig.flavour != "bip340" or not 0 <= presig.s < N:
            return False
        point = lift_x(public_key)
        nonce_point = parse_point(presig.r)
        adaptor_pt = parse_point(adaptor)
        if point is None or nonce_point is None or adaptor_pt is None:
            return False
        e = self.challenge(presig.r[1:], public_key, message)
        lhs = sg_minus_ep(presig.s, e, int_from(public_key), point)  # ±R̂ if honest
        if has_even_y(nonce_point):
            rhs = add(nonce_point, negate(adaptor_pt))  # R − T = R̂
        else:
            rhs = add(adaptor_pt, negate(nonce_point))  # T − R = −R̂
        if lhs is None or rhs is None:
            return False
        return ct_equal(lhs.format(), rhs.format())

    def adapt(self, presig: PreSignature, t: bytes) -> bytes:
        presig = self._own(presig)
        t_int = _scalar(t, "adaptor secret")
        s = presig.s + t_int if presig.r[0] == 0x02 else presig.s - t_int
        return presig.r[1:] + b32(s % N)

    def extract(self, presig: PreSignature, signature: bytes, adaptor: bytes) -> bytes:
        presig = self._own(presig)
        if len(signature) != 64 or not ct_equal(signature[:32], presig.r[1:]):
            raise ExtractionError("signature does not complete this pre-signature")
        diff = int_from(signature[32:]) - presig.s
        t = (diff if presig.r[0] == 0x02 else -diff) % N
        if t == 0 or not ct_equal(base_mul(t).format(), adaptor):
            raise ExtractionError("signature does not complete this pre-signature under T")
        return b32(t)

    def presignature_from_bytes(self, data: bytes) -> PreSignature:
        if len(data) != 65 or parse_point(bytes(data[:33])) is None:
            raise ValueError("a BIP-340 pre-signature is 65 bytes: R (compressed) ‖ ŝ")
        s = int_from(data[33:])
        if s >= N:
            raise ValueError("ŝ is out of range")
        return PreSignature("bip340", bytes(data[:33]), s)


#: The EVM flavour (keccak challenge, verified on-chain by ``SchnorrVerifier.sol``).
EVM = EvmSchnorr()
#: The BIP-340 flavour (Bitcoin).
BIP340 = Bip340Schnorr()

_SCHEMES: dict[str, SchnorrScheme] = {"evm": EVM, "bip340": BIP340}


def scheme(flavour: Flavour) -> SchnorrScheme:
    """The scheme object for a flavour name (``"evm"`` or ``"bip340"``)."""
    try:
        return _SCHEMES[flavour]
    except KeyError:
        raise ValueError(f"unknown Schnorr flavour {flavour!r}") from None
