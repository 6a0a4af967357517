"""The enclave boundary: enclave interface, backends, attestation, secure channel, sealing.

No TEE hardware is available where a402 is built, so enclaves are an
interface (:class:`Enclave`) with backends:

* :mod:`~a402.tee.simulated`: keys and channel state behind the same narrow
  API a hardware enclave offers, quotes signed by an operator-held Ed25519
  :class:`SimulationRoot`. Honest about being insecure: a loud warning at
  start-up, and :class:`SimulatedVerifier` refuses its quotes unless
  constructed with ``allow_simulated=True``.
* :mod:`~a402.tee.nitro`: a real attestation *verifier* for AWS Nitro
  Enclaves documents (COSE_Sign1, ES384, certificate chain to the AWS root).

Every verifier produces the same :class:`VerifiedEnclave` and applies the same
:class:`AttestationPolicy`. Two attested enclaves talk over
:mod:`~a402.tee.channel` (Noise XX with the attested X25519 keys), and persist
state with :mod:`~a402.tee.sealing`.

A vault opening a channel to a provider (both simulated here)::

    >>> from a402.tee import AttestationPolicy, SimulatedPlatform, SimulatedVerifier
    >>> platform = SimulatedPlatform.generate()
    >>> vault = platform.launch(bytes(48))
    >>> provider = platform.launch(b"\\x01" * 48)
    >>> verifiers = [SimulatedVerifier(platform.root.public_key, allow_simulated=True)]
    >>> h1, m1 = vault.channel_initiate(AttestationPolicy({b"\\x01" * 48}), verifiers)
    >>> h2, m2 = provider.channel_respond(m1, AttestationPolicy({bytes(48)}), verifiers)
    >>> m3, provider_seen = vault.channel_finish(h1, m2)
    >>> vault_seen = provider.channel_accept(h2, m3)
    >>> provider.channel_decrypt(h2, vault.channel_encrypt(h1, b"EXEC"))
    b'EXEC'
"""

from . import channel, nitro, quote, sealing, simulated
from .channel import Initiator, Responder, SecureChannel
from .enclave import (
    CHANNEL_APPROVAL,
    CHANNEL_STATE,
    DEFAULT_PURPOSES,
    FORCE_CLOSE,
    PAYMENT_AUTHORIZATION,
    PAYMENT_PRESIGNATURE,
    PROVIDER_PURPOSES,
    RECEIPT,
    TOKEN_AUTHORIZATION,
    TUNNEL_BINDING,
    VAULT_ACCOUNTS,
    VAULT_PURPOSES,
    Enclave,
    EnclaveKernel,
)
from .errors import AttestationError, ChannelError, EnclaveError, SealingError, TeeError
from .measure import measure_package, measure_tree
from .nitro import NitroDocument, NitroVerifier, verify_document
from .quote import (
    AWS_NITRO,
    SIMULATED,
    AttestationPolicy,
    AttestationVerifier,
    Quote,
    VerifiedEnclave,
)
from .sealing import SealingKey, derive_sealing_key
from .simulated import SimulatedEnclave, SimulatedPlatform, SimulatedVerifier, SimulationRoot

__all__ = [
    "AWS_NITRO",
    "CHANNEL_APPROVAL",
    "CHANNEL_STATE",
    "DEFAULT_PURPOSES",
    "FORCE_CLOSE",
    "PAYMENT_AUTHORIZATION",
    "PAYMENT_PRESIGNATURE",
    "PROVIDER_PURPOSES",
    "RECEIPT",
    "SIMULATED",
    "TOKEN_AUTHORIZATION",
    "TUNNEL_BINDING",
    "VAULT_ACCOUNTS",
    "VAULT_PURPOSES",
    "AttestationError",
    "AttestationPolicy",
    "AttestationVerifier",
    "ChannelError",
    "Enclave",
    "EnclaveError",
    "EnclaveKernel",
    "Initiator",
    "NitroDocument",
    "NitroVerifier",
    "Quote",
    "Responder",
    "SealingError",
    "SealingKey",
    "SecureChannel",
    "SimulatedEnclave",
    "SimulatedPlatform",
    "SimulatedVerifier",
    "SimulationRoot",
    "TeeError",
    "VerifiedEnclave",
    "channel",
    "derive_sealing_key",
    "measure_package",
    "measure_tree",
    "nitro",
    "quote",
    "sealing",
    "simulated",
    "verify_document",
]
