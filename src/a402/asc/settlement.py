"""What the ASC state machine asks of the chain a channel settles on (pure; no I/O).

:mod:`a402.asc.machine` runs one exchange — EXEC, REPLY, AUTH, REVEAL, (ACK), CLOSE,
CLOSE_ACK — whatever the chain. Everything in it that depends on the chain goes through a
:class:`Settlement`: the payment message ``m`` the provider pre-signs, the adaptor-signature
flavour and its wire form, the vault's conditional payment ``σ_U``, the state signatures,
and whether the provider waits for an ACK. The machine keeps the order of the messages,
the locks, the request ids, the balances and every replay rule; a settlement only answers
"what are the bytes, and do they verify".

:class:`EvmSettlement` is the EVM channel of ``ASCManager.sol``/``A402Vault.sol``, exactly
as before this module existed (same messages, same bytes): ``m`` is the EIP-712 payment
message ``m(cid, rid, δ', h)``, the pre-signature is the EVM Schnorr flavour that
``SchnorrVerifier.sol`` checks, ``σ_U`` is the vault's ECDSA signature over ``(m, δ', e)``
and states are EIP-712 signed. The Bitcoin channel's settlement is
:class:`a402.bitcoin.exchange.BitcoinSettlement` (this package never imports it).

Safety argument, whatever the settlement: the machine asks :meth:`Settlement.pre_verify`
before it lets the vault sign anything for a request, so the vault's ``σ_U`` only ever
exists for a ``m`` whose completion reveals ``t`` (the one secret that opens the sealed
result); :meth:`Settlement.refuse_payment` lets a chain refuse payments it cannot settle
(Bitcoin's dust and capacity) before any lock or signature, on both sides.
"""

from __future__ import annotations

from typing import Protocol

from a402.crypto import EVM, PaymentDomain, PreSignature, SecretKey, payment_message
from a402.crypto import authorization_digest as _authorization_digest
from a402.crypto.authorization import authorization_signer

from .errors import Reason
from .terms import BalanceState, ChannelTerms, DigestSigner, sign_state, state_signer


class PreSigner(Protocol):
    """The provider's attested adaptor-signature key, wherever it lives.

    A :class:`~a402.crypto.SecretKey` is wrapped as one (:meth:`Settlement.presigner`); the
    provider enclave's code (:mod:`a402.provider_enclave`) passes one over its kernel, so
    that the key never leaves the enclave and only the machine asks it to pre-sign.
    """

    @property
    def public_key(self) -> bytes:
        """The 32-byte x-only key registered as the channel's provider key."""
        ...

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature: ...


class KeyPreSigner:
    """A :class:`PreSigner` over an EVM-flavour key held in this process (tests, tools)."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: SecretKey) -> None:
        if key.flavour != "evm":
            raise ValueError("the provider's adaptor key must be an EVM-flavour key")
        self._key = key
        self.public_key = key.public_key

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature:
        return EVM.pre_sign(self._key, message, adaptor)


class Settlement(Protocol):
    """The chain-specific half of one channel, as the machine uses it (keys stay outside).

    ``vault`` and ``provider`` are the parties as :attr:`DigestSigner.address` names them
    (EVM: 20-byte addresses; Bitcoin: x-only keys); ``provider_key`` is the provider's
    adaptor-signature key. ``needs_ack``: whether the provider's new state is co-signed only
    once the vault's ACK arrives (EVM) or already when AUTH does (Bitcoin: the completed
    ``σ_U`` *is* the vault's signature on the new state's close, so no ACK is sent).
    """

    @property
    def channel_id(self) -> bytes: ...

    @property
    def vault(self) -> bytes: ...

    @property
    def provider(self) -> bytes: ...

    @property
    def provider_key(self) -> bytes: ...

    @property
    def needs_ack(self) -> bool: ...

    @property
    def binding(self) -> bytes:
        """A digest of everything this settlement signs over (keys, amounts, payout scripts,
        fees): a snapshot of a non-EVM channel stores it, and restoring that snapshot with a
        settlement of another binding is refused, so a host cannot swap the parameters the
        restored party signs closes with."""
        ...

    def opening_state(self) -> BalanceState:
        """Version 0: the whole deposit is the client's."""
        ...

    def refuse_payment(self, state: BalanceState, amount: int) -> tuple[Reason, str] | None:
        """Why paying ``amount`` on top of ``state`` cannot settle on this chain, or None.

        The machine has already checked ``0 < amount ≤ client balance`` (a charge of 0 is
        allowed on EVM); this is for what the chain adds (Bitcoin: dust and fees).
        """
        ...

    def payment_message(
        self, state: BalanceState, request_id: int, amount: int, result_hash: bytes
    ) -> bytes:
        """``m``, what the provider pre-signs for paying ``amount`` on top of ``state``."""
        ...

    def presigner(self, key: SecretKey) -> PreSigner:
        """A :class:`PreSigner` over a key held in this process."""
        ...

    def presignature_bytes(self, presignature: PreSignature) -> bytes:
        """The pre-signature's form in REPLY (and in snapshots)."""
        ...

    def parse_presignature(self, data: bytes) -> PreSignature:
        """:meth:`presignature_bytes` back; ``ValueError`` for anything else."""
        ...

    def pre_verify(self, message: bytes, adaptor: bytes, presignature: PreSignature) -> bool:
        """Whether the provider's ``σ̂`` completes, with the secret of ``adaptor``, to its
        signature on ``message``."""
        ...

    def authorize(
        self, signer: DigestSigner, message: bytes, amount: int, presignature: PreSignature,
        adaptor: bytes,
    ) -> bytes:
        """The vault's ``σ_U`` for a pre-verified REPLY (AUTH's bytes)."""
        ...

    def authorizes(
        self, message: bytes, amount: int, presignature: PreSignature, adaptor: bytes,
        authorization: bytes,
    ) -> bool:
        """Whether AUTH's bytes are the vault's ``σ_U`` for this request."""
        ...

    def completed_authorization(self, authorization: bytes, adaptor_secret: bytes) -> bytes:
        """Only when not :attr:`needs_ack`: the vault's state signature that ``σ_U``
        completed with ``t`` is."""
        ...

    def sign_state(self, signer: DigestSigner, state: BalanceState) -> bytes:
        """A party's signature on ``state`` (65 bytes, as the messages carry it)."""
        ...

    def signed_by(self, state: BalanceState, signature: bytes, party: bytes) -> bool:
        """Whether ``signature`` is ``party``'s on ``state``."""
        ...

    def complete(self, presignature: PreSignature, adaptor_secret: bytes) -> bytes:
        """The provider's pre-signature completed with ``t``: its on-chain claim signature."""
        ...

    def extract(
        self, presignature: PreSignature, authorization: bytes, adaptor: bytes, completed: bytes
    ) -> bytes:
        """``t`` from the signature the provider's close published (``ExtractionError`` if it
        does not complete this request's pre-signature)."""
        ...


class EvmSettlement:
    """The EVM channel (``ASCManager.sol``, ``A402Vault.sol``): the machine's original rules."""

    __slots__ = ("channel_id", "domain", "terms")

    needs_ack = True

    def __init__(self, terms: ChannelTerms, domain: PaymentDomain) -> None:
        self.terms = terms
        self.domain = domain
        self.channel_id = terms.channel_id(domain)

    @property
    def vault(self) -> bytes:
        return self.terms.vault

    @property
    def provider(self) -> bytes:
        return self.terms.provider

    @property
    def provider_key(self) -> bytes:
        return self.terms.provider_key

    @property
    def binding(self) -> bytes:
        return self.channel_id  # EIP-712: commits to the terms and the domain

    def opening_state(self) -> BalanceState:
        return self.terms.opening_state()

    def refuse_payment(self, state: BalanceState, amount: int) -> tuple[Reason, str] | None:
        return None  # the contract pays any amount the state holds

    def payment_message(
        self, state: BalanceState, request_id: int, amount: int, result_hash: bytes
    ) -> bytes:
        return payment_message(self.domain, self.channel_id, request_id, amount, result_hash)

    def presigner(self, key: SecretKey) -> PreSigner:
        if key.flavour != "evm":
            raise ValueError("the Schnorr key does not match the channel's provider key")
        return KeyPreSigner(key)

    def presignature_bytes(self, presignature: PreSignature) -> bytes:
        return presignature.to_bytes()

    def parse_presignature(self, data: bytes) -> PreSignature:
        return EVM.presignature_from_bytes(data)

    def pre_verify(self, message: bytes, adaptor: bytes, presignature: PreSignature) -> bool:
        return EVM.pre_verify(self.terms.provider_key, message, adaptor, presignature)

    def authorize(
        self, signer: DigestSigner, message: bytes, amount: int, presignature: PreSignature,
        adaptor: bytes,
    ) -> bytes:
        return signer.sign_digest(
            _authorization_digest(self.domain, message, amount, presignature.r)
        )

    def authorizes(
        self, message: bytes, amount: int, presignature: PreSignature, adaptor: bytes,
        authorization: bytes,
    ) -> bool:
        signer = authorization_signer(
            self.domain, message, amount, presignature.r, authorization
        )
        return signer == self.terms.vault

    def completed_authorization(self, authorization: bytes, adaptor_secret: bytes) -> bytes:
        raise NotImplementedError("an EVM channel's state is co-signed by the ACK")

    def sign_state(self, signer: DigestSigner, state: BalanceState) -> bytes:
        return sign_state(signer, self.domain, self.channel_id, state)

    def signed_by(self, state: BalanceState, signature: bytes, party: bytes) -> bool:
        return state_signer(self.domain, self.channel_id, state, signature) == party

    def complete(self, presignature: PreSignature, adaptor_secret: bytes) -> bytes:
        return EVM.adapt(presignature, adaptor_secret)

    def extract(
        self, presignature: PreSignature, authorization: bytes, adaptor: bytes, completed: bytes
    ) -> bytes:
        return EVM.extract(presignature, completed, adaptor)
