"""The enclave boundary: what code outside an enclave may ask of it.

A402's safety rests on two enclaves (paper §2.2): the provider's, which signs
adaptor pre-signatures only for results it computed, and the vault's, which
holds balances and signs conditional payments. The host around either is
untrusted. This interface is the whole boundary, and it is deliberately
narrow:

* public facts: backend ``kind``, code ``measurement``, the two public keys;
* ``quote``: attestation evidence binding those, with a verifier's nonce;
* ``start``: load the enclave's own code (the provider's side of every
  channel, :mod:`a402.provider_enclave`; the vault's channels, balances and
  withdrawals, :mod:`a402.vault_enclave`), which alone receives the
  in-enclave capabilities (:class:`EnclaveKernel`): the attested key's
  adaptor pre-signature (provider) or ECDSA signature (vault), by purpose,
  the tunnels' traffic keys, and a sealing key of its own. The host gets
  back only the code's interface. There is deliberately no host call that
  signs anything: a provider host able to pre-sign ``m`` under a ``T`` it
  picked could send a REPLY whose sealed result does not open under ``t``
  and be paid on-chain for nothing (issue 12, finding 1); a vault host able
  to sign a digest could sign σ_U, a state or a token transfer the protocol
  would not, and take the pooled deposits (finding 2). Once code is started
  the host's own ``channel_encrypt``/``channel_decrypt`` are refused, so
  every frame on a tunnel comes from the enclave's code — unless the code
  is started with ``host_tunnels=True`` (the vault: see
  :mod:`a402.vault_enclave` for why its tunnel plaintext moves no money);
* the secure channel to a peer enclave, by opaque handle: handshake messages
  and ciphertext in and out, traffic keys inside;
* sealing: ``export_sealed`` for the enclave's own identity, ``seal`` /
  ``unseal`` for state owned by code running inside the boundary.

No method returns a private key, a traffic key, or the enclave's own unsealed
state. Backends: :mod:`a402.tee.simulated` (no hardware; insecure by design
and loud about it). A hardware backend (Nitro, SEV-SNP) implements the same
protocol over its transport (vsock) and is verified by :mod:`a402.tee.nitro`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar, runtime_checkable

from .quote import AttestationPolicy, AttestationVerifier, VerifiedEnclave

#: Purposes the a402 protocol signs for. Backends may allow a subset.
PAYMENT_AUTHORIZATION = "a402/payment-authorization"  # σ_U, the vault's conditional payment
CHANNEL_STATE = "a402/channel-state"  # balance states for closing and disputes
RECEIPT = "a402/receipt"  # the vault's ACK to the provider
PAYMENT_PRESIGNATURE = "a402/payment-presignature"  # the provider's σ̂ on m under T
CHANNEL_APPROVAL = "a402/channel-approval"  # the vault's approval of createASC (over the id)
FORCE_CLOSE = "a402/force-close"  # the vault's order to force-close a channel
TUNNEL_BINDING = "a402/tunnel-binding"  # OPEN: this tunnel speaks for the channel
TOKEN_AUTHORIZATION = "a402/token-authorization"  # EIP-3009 withdrawals, EIP-2612 permit
#: Vault mode (A402Vault): settlements, balance statements and pending-payment records.
VAULT_ACCOUNTS = "a402/vault-accounts"
#: The vault's purposes (ECDSA over its attested key, only from its code:
#: :meth:`EnclaveKernel.sign`).
VAULT_PURPOSES = frozenset({PAYMENT_AUTHORIZATION, CHANNEL_STATE, RECEIPT, CHANNEL_APPROVAL,
                            FORCE_CLOSE, TUNNEL_BINDING, TOKEN_AUTHORIZATION, VAULT_ACCOUNTS})
DEFAULT_PURPOSES = VAULT_PURPOSES
#: The provider's only purpose: its attested key makes Schnorr pre-signatures and
#: nothing else, so one key never signs under two schemes. Only the enclave's own
#: code (:meth:`EnclaveKernel.pre_sign`) can use it; the host cannot.
PROVIDER_PURPOSES = frozenset({PAYMENT_PRESIGNATURE})

#: What an enclave's code hands back to its host from :meth:`Enclave.start`.
Program = TypeVar("Program")


class EnclaveKernel(Protocol):
    """What code running *inside* an enclave may use; never handed to the host.

    The enclave's code (:mod:`a402.provider_enclave` for a provider,
    :mod:`a402.vault_enclave` for a vault) receives this from
    :meth:`Enclave.start` and keeps it. Every operation that could make a
    payment final or move money without the protocol — pre-signing, signing
    with the attested key, and (for the provider) reading or writing the
    tunnel — is here and only here.
    """

    @property
    def signing_public_key(self) -> bytes: ...

    def pre_sign(self, message: bytes, adaptor_point: bytes) -> bytes:
        """EVM-flavour Schnorr adaptor pre-signature ``e ‖ ŝ`` (64 bytes) on a 32-byte
        payment message under the 33-byte adaptor point ``T``, with the attested key
        (its x-coordinate is the channel's ``providerKey``). Gated by
        :data:`PAYMENT_PRESIGNATURE`."""
        ...

    def sign(self, purpose: str, digest: bytes) -> bytes:
        """ECDSA over a 32-byte digest as Ethereum does (65 bytes ``r ‖ s ‖ v``) with the
        attested key, whose Ethereum address is the vault's. Gated by purpose (one of
        :data:`VAULT_PURPOSES`); the code builds every digest it signs itself."""
        ...

    def channel_binding(self, handle: str) -> bytes: ...

    def channel_peer(self, handle: str) -> VerifiedEnclave:
        """The peer of an open tunnel, as the enclave verified it during the handshake
        (its attestation evidence, checked inside the enclave against the policy): the
        code trusts this, never a peer key the host reports."""
        ...

    def channel_encrypt(self, handle: str, plaintext: bytes, *, ad: bytes = b"") -> bytes: ...

    def channel_decrypt(self, handle: str, frame: bytes, *, ad: bytes = b"") -> bytes: ...

    def seal(self, label: str, state: bytes) -> bytes:
        """Seal the code's own state, under a key the host's ``unseal`` cannot use."""
        ...

    def unseal(self, label: str, blob: bytes) -> bytes: ...


@runtime_checkable
class Enclave(Protocol):
    """One running enclave, seen from its host."""

    @property
    def kind(self) -> str: ...

    @property
    def measurement(self) -> bytes: ...

    @property
    def signing_public_key(self) -> bytes:
        """33-byte compressed secp256k1 key (even ``y``; usable for EVM Schnorr)."""
        ...

    @property
    def kx_public_key(self) -> bytes:
        """32-byte X25519 key that authenticates the secure channel."""
        ...

    def quote(self, nonce: bytes, user_data: bytes = b"") -> bytes:
        """Attestation evidence for this enclave, committing to ``nonce`` and ``user_data``."""
        ...

    def start(
        self, program: Callable[[EnclaveKernel], Program], *, host_tunnels: bool = False
    ) -> Program:
        """Run the enclave's code: ``program`` gets the :class:`EnclaveKernel`, the host
        gets what it returns. Starting again restarts the code (the previous kernel
        stops working); the code's state comes back only from its sealed blobs.
        ``host_tunnels``: the host keeps encrypting and decrypting tunnel frames itself
        (for code whose tunnel plaintext moves no money: the vault's)."""
        ...

    def channel_initiate(
        self, policy: AttestationPolicy, verifiers: Iterable[AttestationVerifier], *,
        prologue: bytes = b"",
    ) -> tuple[str, bytes]:
        """Open a channel: ``(handle, first message)``."""
        ...

    def channel_respond(
        self, message: bytes, policy: AttestationPolicy,
        verifiers: Iterable[AttestationVerifier], *, prologue: bytes = b"",
    ) -> tuple[str, bytes]:
        """Answer a first message: ``(handle, second message)``."""
        ...

    def channel_finish(self, handle: str, message: bytes) -> tuple[bytes, VerifiedEnclave]:
        """Initiator: verify the responder; ``(third message, peer)``."""
        ...

    def channel_accept(self, handle: str, message: bytes) -> VerifiedEnclave:
        """Responder: verify the initiator from the third message; the peer."""
        ...

    def channel_peer(self, handle: str) -> VerifiedEnclave: ...

    def channel_binding(self, handle: str) -> bytes:
        """The secure channel's handshake hash, which both ends know and ASC messages may bind."""
        ...

    def channel_encrypt(self, handle: str, plaintext: bytes, *, ad: bytes = b"") -> bytes:
        """For a host that relays its side's frames itself (the vault); refused once
        :meth:`start` ran code that owns the tunnels (``host_tunnels=False``)."""
        ...

    def channel_decrypt(self, handle: str, frame: bytes, *, ad: bytes = b"") -> bytes:
        """As :meth:`channel_encrypt`: refused once :meth:`start` ran."""
        ...

    def channel_close(self, handle: str) -> None: ...

    def seal(self, label: str, state: bytes) -> bytes: ...

    def unseal(self, label: str, blob: bytes) -> bytes: ...

    def export_sealed(self) -> bytes:
        """The enclave's identity (its keys), sealed to its measurement and platform."""
        ...
