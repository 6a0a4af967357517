"""The simulated enclave backend: the real interface, no hardware, no security.

No TEE hardware is available where a402 is built and tested, so this backend
runs "enclave" code in the ordinary process. It keeps the *shape* of a real
enclave exactly (keys generated inside, operations by purpose, channels by
handle, state leaving only sealed, quotes signed by an attestation root), so
the vault and provider code written against it runs unchanged on a hardware
backend. What it does **not** give:

* isolation: keys sit in process memory; anyone who can read the process, or
  the platform secret file, has them;
* attestation that means anything: quotes are signed by a
  :class:`SimulationRoot`, an **Ed25519** key held by the operator, who can
  therefore sign a quote for any measurement and any keys. A verifier trusts
  such quotes only when constructed with ``allow_simulated=True``, and says so
  loudly on stderr;
* rollback protection for sealed state (see :mod:`a402.tee.sealing`).

Ed25519 for the root because it is deterministic (no nonce to get wrong),
has a single encoding for keys and signatures, and is fast; nothing needs
the root to be compatible with anything else.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from a402.crypto import EVM
from a402.crypto import authorization as _ecdsa

from . import _cbor
from ._noise import x25519
from ._warn import warn_once
from .channel import Initiator, Responder, SecureChannel
from .enclave import DEFAULT_PURPOSES, PAYMENT_PRESIGNATURE, EnclaveKernel, Program
from .errors import AttestationError, ChannelError, EnclaveError, SealingError
from .quote import (
    MEASUREMENT_SIZES,
    SIMULATED,
    AttestationPolicy,
    AttestationVerifier,
    Quote,
    VerifiedEnclave,
)
from .sealing import derive_sealing_key

EVIDENCE_FORMAT = "a402/simulated-quote/v1"
_SIGNED_PREFIX = b"A402/simulated-quote/v1\x00"
_MAX_EVIDENCE_SIZE = 4096
_IDENTITY_LABEL = "a402.enclave/identity"
_IDENTITY_VERSION = 1

# The role of a handshake taken back from ``_pending``.
_Side = TypeVar("_Side", Initiator, Responder)

ENCLAVE_WARNING = (
    "WARNING: a402 is running a SIMULATED enclave. There is no hardware isolation:\n"
    "keys and channel state are in ordinary process memory, quotes are signed by a\n"
    "local simulation root, and sealed state is only as safe as the platform secret.\n"
    "Use it for development and tests only; never with real funds."
)
VERIFIER_WARNING = (
    "WARNING: a402 ACCEPTED A SIMULATED ATTESTATION QUOTE (allow_simulated=True).\n"
    "Simulated quotes prove nothing about the code a peer runs: whoever holds the\n"
    "simulation root can sign any quote. Never enable this with real funds."
)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SimulationRoot:
    """The operator's Ed25519 key that signs simulated quotes (stands in for a TEE vendor).

    Unlike enclave keys, this key belongs to the operator and may be exported
    (:meth:`private_bytes`) to a key file, so that verifiers on other machines
    can be configured with :attr:`public_key`.
    """

    __slots__ = ("_key", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = _raw_public(private_key.public_key())

    @classmethod
    def generate(cls) -> SimulationRoot:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SimulationRoot:
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 seed, for the operator's key file."""
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign_quote(self, quote: Quote) -> bytes:
        """Evidence: canonical CBOR ``{format, quote, root, signature}``."""
        body = quote.to_bytes()
        return _cbor.encode({
            "format": EVIDENCE_FORMAT,
            "quote": body,
            "root": self.public_key,
            "signature": self._key.sign(_SIGNED_PREFIX + body),
        })

    def __repr__(self) -> str:
        return f"SimulationRoot(public_key={self.public_key.hex()})"


class SimulatedVerifier:
    """Verifies simulated quotes, and by default refuses them all.

    ``allow_simulated=False`` (the default) makes every quote fail with
    ``simulated_not_allowed`` before it is even parsed, so a production
    verifier configured with several backends cannot be talked into trusting
    the simulation. With ``allow_simulated=True`` quotes signed by
    ``root_public_key`` are accepted, and a warning is printed to stderr (once
    per process).
    """

    kind = SIMULATED

    def __init__(self, root_public_key: bytes, *, allow_simulated: bool = False) -> None:
        if len(root_public_key) != 32:
            raise ValueError("the simulation root key is a 32-byte Ed25519 public key")
        self._root = Ed25519PublicKey.from_public_bytes(root_public_key)
        self._root_bytes = bytes(root_public_key)
        self.allow_simulated = allow_simulated

    def verify(
        self, evidence: bytes, policy: AttestationPolicy, *, now: float | None = None
    ) -> VerifiedEnclave:
        if not self.allow_simulated:
            raise AttestationError(
                "simulated_not_allowed",
                "simulated quotes are refused unless the verifier has allow_simulated=True",
            )
        try:
            envelope = _cbor.decode_canonical(evidence, max_size=_MAX_EVIDENCE_SIZE)
        except ValueError as e:
            raise AttestationError("bad_quote", str(e)) from None
        if (not isinstance(envelope, dict)
                or set(envelope) != {"format", "quote", "root", "signature"}
                or envelope["format"] != EVIDENCE_FORMAT
                or not all(isinstance(envelope[k], bytes) for k in ("quote", "root", "signature"))):
            raise AttestationError("bad_quote", "not a simulated quote envelope")
        if envelope["root"] != self._root_bytes:
            raise AttestationError("untrusted_root", "quote signed by another simulation root")
        try:
            self._root.verify(envelope["signature"], _SIGNED_PREFIX + envelope["quote"])
        except InvalidSignature:
            raise AttestationError(
                "bad_signature", "the root's signature does not verify"
            ) from None
        try:
            quote = Quote.from_bytes(envelope["quote"])
        except (ValueError, TypeError) as e:
            raise AttestationError("bad_quote", str(e)) from None
        if quote.kind != SIMULATED:
            raise AttestationError("bad_quote", f"quote kind {quote.kind!r}")
        enclave = VerifiedEnclave(
            kind=SIMULATED,
            measurement=quote.measurement,
            signing_key=quote.signing_key,
            kx_key=quote.kx_key,
            timestamp_ms=quote.timestamp_ms,
            nonce=quote.nonce,
            user_data=quote.user_data,
            pcrs={0: quote.measurement},
        )
        policy.check(enclave, time.time() if now is None else now)
        warn_once("simulated-verifier", VERIFIER_WARNING)
        return enclave


@dataclass
class SimulatedPlatform:
    """A simulated machine: its attestation root and its sealing secret.

    ``seal_secret`` stands in for the secret a CPU fuses in; enclaves derive
    their sealing keys from it and their measurement. Keep it (and the root)
    in files only the operator can read; whoever has it can open every blob.
    """

    root: SimulationRoot
    seal_secret: bytes = field(repr=False)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if len(self.seal_secret) < 32:
            raise ValueError("the platform seal secret must be at least 32 bytes")

    @classmethod
    def generate(cls, *, clock: Callable[[], float] = time.time) -> SimulatedPlatform:
        return cls(SimulationRoot.generate(), secrets.token_bytes(32), clock)

    def launch(
        self, measurement: bytes, *, allowed_purposes: Iterable[str] = DEFAULT_PURPOSES
    ) -> SimulatedEnclave:
        """Start a fresh enclave with new keys."""
        signing = EVM.generate_key()
        kx = X25519PrivateKey.generate()
        return SimulatedEnclave(self, measurement, signing.to_bytes(), kx, allowed_purposes)

    def restore(
        self, measurement: bytes, sealed_identity: bytes, *,
        allowed_purposes: Iterable[str] = DEFAULT_PURPOSES,
    ) -> SimulatedEnclave:
        """Restart an enclave from :meth:`SimulatedEnclave.export_sealed` output.

        Fails with :class:`SealingError` unless the blob was sealed by an
        enclave with the same measurement on this platform.
        """
        key = derive_sealing_key(self.seal_secret, measurement, "identity")
        plaintext = key.unseal(_IDENTITY_LABEL, sealed_identity)
        try:
            state = _cbor.decode_canonical(plaintext, max_size=256)
        except ValueError:
            state = None
        if (not isinstance(state, dict) or set(state) != {"version", "signing", "kx"}
                or state["version"] != _IDENTITY_VERSION
                or not isinstance(state["signing"], bytes) or not isinstance(state["kx"], bytes)):
            raise SealingError("malformed", "not a sealed enclave identity")
        kx = X25519PrivateKey.from_private_bytes(state["kx"])
        return SimulatedEnclave(self, measurement, state["signing"], kx, allowed_purposes)


class _ChannelIdentity:
    """The enclave's side of a handshake; never handed outside the enclave."""

    __slots__ = ("_enclave", "_kx")

    def __init__(self, enclave: SimulatedEnclave, kx: X25519PrivateKey) -> None:
        self._enclave = enclave
        self._kx = kx

    @property
    def kx_public_key(self) -> bytes:
        return self._enclave.kx_public_key

    def dh(self, peer_public_key: bytes) -> bytes:
        return x25519(self._kx, peer_public_key)

    def attest(self, nonce: bytes) -> tuple[str, bytes]:
        return SIMULATED, self._enclave.quote(nonce)


class SimulatedEnclave:
    """An enclave in the simulation. Create with :meth:`SimulatedPlatform.launch`.

    Implements :class:`a402.tee.enclave.Enclave`. Keys are generated here and
    never returned; the signing key is normalised for EVM-flavour Schnorr
    (even ``y``, ``x ≤ (N−1)/2``) so that the provider's adaptor
    pre-signatures can use it, and it also signs ECDSA (the vault's role) —
    both only through the code :meth:`start` runs; the host can sign nothing.
    Using one key for two schemes is acceptable only because each role uses
    it for one of them (provider: Schnorr; vault: ECDSA); the ASC work should
    keep it that way or add a second attested key.
    """

    kind = SIMULATED

    def __init__(
        self,
        platform: SimulatedPlatform,
        measurement: bytes,
        signing_secret: bytes,
        kx: X25519PrivateKey,
        allowed_purposes: Iterable[str],
    ) -> None:
        if len(measurement) not in MEASUREMENT_SIZES:
            raise ValueError("a measurement is a 32-, 48- or 64-byte digest")
        warn_once("simulated-enclave", ENCLAVE_WARNING)
        self._platform = platform
        self._measurement = bytes(measurement)
        self._signing = EVM.secret_key(signing_secret)
        self._signing_public = b"\x02" + self._signing.public_key
        # The same key loaded once for ECDSA (loading derives the public key: about half
        # of what a signature costs), as an enclave keeps its key in memory.
        self._ecdsa = _ecdsa.EcdsaSigner(self._signing.to_bytes())
        self._kx = kx
        self._kx_public = kx.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._purposes = frozenset(allowed_purposes)
        self._identity_key = derive_sealing_key(platform.seal_secret, self._measurement, "identity")
        self._state_key = derive_sealing_key(platform.seal_secret, self._measurement, "state")
        self._code_key = derive_sealing_key(platform.seal_secret, self._measurement, "code")
        self._kernel: _Kernel | None = None
        self._host_tunnels = False
        self._identity = _ChannelIdentity(self, kx)
        self._pending: dict[str, Initiator | Responder] = {}
        self._channels: dict[str, SecureChannel] = {}
        self._lock = threading.Lock()

    # -- public facts ---------------------------------------------------------

    @property
    def measurement(self) -> bytes:
        return self._measurement

    @property
    def signing_public_key(self) -> bytes:
        return self._signing_public

    @property
    def kx_public_key(self) -> bytes:
        return self._kx_public

    def quote(self, nonce: bytes, user_data: bytes = b"") -> bytes:
        quote = Quote(
            kind=SIMULATED,
            measurement=self._measurement,
            signing_key=self._signing_public,
            kx_key=self._kx_public,
            nonce=bytes(nonce),
            timestamp_ms=int(self._platform.clock() * 1000),
            user_data=bytes(user_data),
        )
        return self._platform.root.sign_quote(quote)

    # -- operations by purpose ---------------------------------------------------

    def _sign(self, purpose: str, digest: bytes) -> bytes:  # for the kernel
        """ECDSA-sign a 32-byte digest for an allowed ``purpose`` (for the kernel only).

        The purpose is a policy gate, not part of what is signed: digests such
        as ``σ_U`` must verify on-chain exactly as specified, so their domain
        separation lives in the digest (EIP-712 / tagged hashes). The code that
        asks (:mod:`a402.vault_enclave`) builds each digest from the state it checks.
        """
        if purpose not in self._purposes:
            raise EnclaveError("purpose_not_allowed", f"this enclave does not sign {purpose!r}")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise EnclaveError("bad_input", "digest must be 32 bytes")
        return self._ecdsa.sign_digest(digest)

    def _pre_sign(self, message: bytes, adaptor_point: bytes) -> bytes:
        if PAYMENT_PRESIGNATURE not in self._purposes:
            raise EnclaveError(
                "purpose_not_allowed", f"this enclave does not sign {PAYMENT_PRESIGNATURE!r}"
            )
        if not isinstance(message, bytes) or len(message) != 32:
            raise EnclaveError("bad_input", "the payment message must be 32 bytes")
        try:
            return EVM.pre_sign(self._signing, message, bytes(adaptor_point)).to_bytes()
        except (ValueError, TypeError) as e:
            raise EnclaveError("bad_input", f"adaptor point: {e}") from None

    # -- the enclave's code -------------------------------------------------------

    def start(
        self, program: Callable[[EnclaveKernel], Program], *, host_tunnels: bool = False
    ) -> Program:
        """Run the enclave's code with its :class:`_Kernel`; the host gets what it returns.

        In a hardware backend the code is the measured image and nothing else
        ever holds the kernel. The simulation cannot tell which code the host
        passes (the host *is* the process): here ``program`` stands for the
        measurement, and the point is the interface — the provider runtime
        never sees a call that pre-signs or touches a tunnel's plaintext.
        Starting again restarts the code: the previous kernel stops working.
        From the first start on, the host's ``channel_encrypt``/``channel_decrypt``
        are refused, unless the code was started with ``host_tunnels=True``.
        """
        with self._lock:
            if self._kernel is not None:
                self._kernel.revoke()
            kernel = _Kernel(self)
            self._kernel = kernel
            self._host_tunnels = host_tunnels
        return program(kernel)

    def _check_host_traffic(self) -> None:
        if self._kernel is not None and not self._host_tunnels:
            raise EnclaveError(
                "owned_by_enclave_code",
                "this enclave's code owns its tunnels; the host relays ciphertext only",
            )

    # -- secure channels -----------------------------------------------------------

    def _new_handle(self) -> str:
        return secrets.token_hex(16)

    def channel_initiate(
        self, policy: AttestationPolicy, verifiers: Iterable[AttestationVerifier], *,
        prologue: bytes = b"",
    ) -> tuple[str, bytes]:
        side = Initiator(self._identity, verifiers, policy, prologue=prologue,
                         clock=self._platform.clock)
        first = side.start()
        handle = self._new_handle()
        with self._lock:
            self._pending[handle] = side
        return handle, first

    def channel_respond(
        self, message: bytes, policy: AttestationPolicy,
        verifiers: Iterable[AttestationVerifier], *, prologue: bytes = b"",
    ) -> tuple[str, bytes]:
        side = Responder(self._identity, verifiers, policy, prologue=prologue,
                         clock=self._platform.clock)
        second = side.respond(message)
        handle = self._new_handle()
        with self._lock:
            self._pending[handle] = side
        return handle, second

    def _take_pending(self, handle: str, kind: type[_Side]) -> _Side:
        with self._lock:
            side = self._pending.pop(handle, None)
        if not isinstance(side, kind):
            raise ChannelError("unknown_channel", "no handshake of that role under this handle")
        return side

    def channel_finish(self, handle: str, message: bytes) -> tuple[bytes, VerifiedEnclave]:
        side = self._take_pending(handle, Initiator)
        third, channel = side.finish(message)
        with self._lock:
            self._channels[handle] = channel
        return third, channel.peer

    def channel_accept(self, handle: str, message: bytes) -> VerifiedEnclave:
        side = self._take_pending(handle, Responder)
        channel = side.finish(message)
        with self._lock:
            self._channels[handle] = channel
        return channel.peer

    def _channel(self, handle: str) -> SecureChannel:
        channel = self._channels.get(handle)
        if channel is None:
            raise ChannelError("unknown_channel", "no open channel under this handle")
        return channel

    def channel_peer(self, handle: str) -> VerifiedEnclave:
        return self._channel(handle).peer

    def channel_binding(self, handle: str) -> bytes:
        """The secure channel's transcript hash, for ASC messages to commit to."""
        return self._channel(handle).binding

    def channel_encrypt(self, handle: str, plaintext: bytes, *, ad: bytes = b"") -> bytes:
        self._check_host_traffic()
        return self._encrypt(handle, plaintext, ad)

    def channel_decrypt(self, handle: str, frame: bytes, *, ad: bytes = b"") -> bytes:
        self._check_host_traffic()
        return self._decrypt(handle, frame, ad)

    def _encrypt(self, handle: str, plaintext: bytes, ad: bytes) -> bytes:
        with self._lock:
            return self._channel(handle).encrypt(plaintext, ad=ad)

    def _decrypt(self, handle: str, frame: bytes, ad: bytes) -> bytes:
        with self._lock:
            return self._channel(handle).decrypt(frame, ad=ad)

    def channel_close(self, handle: str) -> None:
        with self._lock:
            self._channels.pop(handle, None)
            self._pending.pop(handle, None)

    # -- sealing -----------------------------------------------------------------

    def seal(self, label: str, state: bytes) -> bytes:
        """Seal state owned by code inside the enclave (the ASC state machine).

        Uses a key separate from the identity key, so no label can make
        :meth:`unseal` open the enclave's own keys.
        """
        return self._state_key.seal(label, state)

    def unseal(self, label: str, blob: bytes) -> bytes:
        """Open a blob from :meth:`seal` (same measurement, platform and label).

        Returns the caller's own state to the caller; in a hardware backend
        this is an in-enclave call for in-enclave code, never a host API.
        """
        return self._state_key.unseal(label, blob)

    def export_sealed(self) -> bytes:
        """This enclave's keys, sealed; :meth:`SimulatedPlatform.restore` reopens them."""
        state = _cbor.encode({
            "version": _IDENTITY_VERSION,
            "signing": self._signing.to_bytes(),
            "kx": self._kx.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            ),
        })
        return self._identity_key.seal(_IDENTITY_LABEL, state)

    def __repr__(self) -> str:
        return (f"SimulatedEnclave(measurement={self._measurement.hex()[:16]}…, "
                f"signing_public_key={self._signing_public.hex()})")


class _Kernel:
    """A :class:`~a402.tee.enclave.EnclaveKernel`: what the code :meth:`SimulatedEnclave.start`
    ran may use. Revoked when the code is restarted."""

    __slots__ = ("_enclave", "_live")

    def __init__(self, enclave: SimulatedEnclave) -> None:
        self._enclave = enclave
        self._live = True

    def revoke(self) -> None:
        self._live = False

    def _check(self) -> SimulatedEnclave:
        if not self._live:
            raise EnclaveError("restarted", "the enclave's code was restarted")
        return self._enclave

    @property
    def signing_public_key(self) -> bytes:
        return self._enclave.signing_public_key

    def pre_sign(self, message: bytes, adaptor_point: bytes) -> bytes:
        return self._check()._pre_sign(message, adaptor_point)

    def sign(self, purpose: str, digest: bytes) -> bytes:
        return self._check()._sign(purpose, digest)

    def channel_binding(self, handle: str) -> bytes:
        return self._check().channel_binding(handle)

    def channel_peer(self, handle: str) -> VerifiedEnclave:
        return self._check().channel_peer(handle)

    def channel_encrypt(self, handle: str, plaintext: bytes, *, ad: bytes = b"") -> bytes:
        return self._check()._encrypt(handle, plaintext, ad)

    def channel_decrypt(self, handle: str, frame: bytes, *, ad: bytes = b"") -> bytes:
        return self._check()._decrypt(handle, frame, ad)

    def seal(self, label: str, state: bytes) -> bytes:
        return self._check()._code_key.seal(label, state)

    def unseal(self, label: str, blob: bytes) -> bytes:
        return self._check()._code_key.unseal(label, blob)
