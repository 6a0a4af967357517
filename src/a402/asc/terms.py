"""Channel terms, channel ids and balance states, as ``ASCManager.sol`` hashes them (pure).

Everything here is EIP-712 typed data in the domain ``("A402", "1", chainId,
ASCManager address)`` — the same :class:`~a402.crypto.PaymentDomain` as the
payment message ``m`` and the vault's ``σ_U``; the type hashes keep the kinds
apart, and the domain binds every id and signature to one chain, one manager
and (through the manager's immutable token) one asset.

* Channel id: ``cid = hashTypedData(A402Channel(address client, address vault,
  address provider, bytes32 providerKey, uint256 deposit, bytes32 salt))``. The
  contract stores no terms; callers pass them back and the contract recomputes
  the id. The client's consent to open a channel is an ordinary EIP-712
  signature over ``cid`` (:func:`sign_channel_open`).
* State digest: ``hashTypedData(A402ChannelState(bytes32 channelId, uint256
  version, uint256 clientBalance, uint256 providerBalance, bool isFinal))``,
  which vault and provider sign with ECDSA (:func:`sign_state`).
* The vault's approval to open is its ECDSA signature over ``cid`` too, so a
  vault key that never sends transactions (an enclave's) can have its host
  submit ``createASC`` (:func:`sign_channel_open` serves both parties).
* Force-close request: ``hashTypedData(A402ForceClose(bytes32 channelId,
  uint256 version))`` (:func:`force_close_digest`), which the vault signs to
  have anyone send ``initForceCloseFor``; a type of its own, so no state
  signature can start a force close.

Encoding is plain concatenation of 32-byte words; the tests check it against the
contract's own ``channelId`` and ``stateDigest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from a402.crypto import PaymentDomain
from a402.evm.address import address_bytes
from a402.evm.ecdsa import OPENZEPPELIN, recover_address
from a402.evm.keccak import keccak256 as keccak

CHANNEL_TYPE = (
    "A402Channel(address client,address vault,address provider,bytes32 providerKey,"
    "uint256 deposit,bytes32 salt)"
)
STATE_TYPE = (
    "A402ChannelState(bytes32 channelId,uint256 version,uint256 clientBalance,"
    "uint256 providerBalance,bool isFinal)"
)
FORCE_CLOSE_TYPE = "A402ForceClose(bytes32 channelId,uint256 version)"
CHANNEL_TYPEHASH = keccak(CHANNEL_TYPE.encode())
STATE_TYPEHASH = keccak(STATE_TYPE.encode())
FORCE_CLOSE_TYPEHASH = keccak(FORCE_CLOSE_TYPE.encode())

#: The contract escrows at most this much per channel (balances are packed in 128 bits).
MAX_DEPOSIT = (1 << 128) - 1
#: State versions and request ids are 64-bit (the contract packs the version in 64 bits).
MAX_VERSION = (1 << 64) - 1
#: ``(N - 1) / 2``: the largest x-coordinate an EVM-flavour Schnorr key may have.
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


class DigestSigner(Protocol):
    """An Ethereum ECDSA key that signs 32-byte digests (``r ‖ s ‖ v``, 65 bytes).

    :class:`~a402.crypto.EcdsaSigner` is one (tests, tools, the provider's
    operator key); the vault's is a wrapper around its enclave kernel's
    ``sign``, used only by the enclave's own code (:mod:`a402.vault_enclave`),
    which is how the vault keeps its key out of the host's reach.
    """

    @property
    def address(self) -> bytes:
        """The 20-byte address the signatures recover to."""
        ...

    def sign_digest(self, digest: bytes) -> bytes: ...


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: bytes) -> bytes:
    return bytes(12) + address


def _typed(domain: PaymentDomain, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + struct_hash)


@dataclass(frozen=True, slots=True, init=False)
class ChannelTerms:
    """What a channel is: who pays, who acts for the payer, who is paid, how much, which key.

    ``provider_key`` is the x-only EVM-flavour Schnorr key of the provider's
    attested enclave (``SecretKey.public_key``). ``salt`` makes the id unique;
    the contract never lets an id be used twice.
    """

    client: bytes
    vault: bytes
    provider: bytes
    provider_key: bytes
    deposit: int
    salt: bytes

    def __init__(
        self, client: str | bytes, vault: str | bytes, provider: str | bytes,
        provider_key: bytes, deposit: int, salt: bytes,
    ) -> None:
        """The three addresses may also be given as ``0x`` hex strings."""
        object.__setattr__(self, "client", address_bytes(client))
        object.__setattr__(self, "vault", address_bytes(vault))
        object.__setattr__(self, "provider", address_bytes(provider))
        object.__setattr__(self, "provider_key", provider_key)
        object.__setattr__(self, "deposit", deposit)
        object.__setattr__(self, "salt", salt)
        if len(self.provider_key) != 32 or not 0 < int.from_bytes(self.provider_key) <= _HALF_N:
            raise ValueError("provider_key must be a usable 32-byte EVM Schnorr key")
        if len(self.salt) != 32:
            raise ValueError("salt must be 32 bytes")
        if not 0 < self.deposit <= MAX_DEPOSIT:
            raise ValueError("deposit must be positive and below 2^128")
        if self.provider in (self.client, self.vault):
            raise ValueError("the provider must be neither the client nor the vault")

    def struct_hash(self) -> bytes:
        return keccak(
            CHANNEL_TYPEHASH
            + _address_word(self.client)
            + _address_word(self.vault)
            + _address_word(self.provider)
            + self.provider_key
            + _word(self.deposit)
            + self.salt
        )

    def channel_id(self, domain: PaymentDomain) -> bytes:
        """The 32-byte channel id in this manager's domain."""
        return _typed(domain, self.struct_hash())

    def opening_state(self) -> BalanceState:
        """Version 0: the whole deposit is the client's. Needs no signatures on-chain."""
        return BalanceState(0, self.deposit, 0)


@dataclass(frozen=True, slots=True)
class BalanceState:
    """A channel state as vault and provider co-sign it (the contract's ``State``).

    ``version`` accounts for every payment with request id below it; ``is_final``
    marks the state signed to close cooperatively, which no intermediate state is.
    """

    version: int
    client_balance: int
    provider_balance: int
    is_final: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.version <= MAX_VERSION:
            raise ValueError("version must fit in 64 bits")
        if not (
            0 <= self.client_balance <= MAX_DEPOSIT and 0 <= self.provider_balance <= MAX_DEPOSIT
        ):
            raise ValueError("balances must fit in 128 bits")

    @property
    def total(self) -> int:
        return self.client_balance + self.provider_balance

    def digest(self, domain: PaymentDomain, channel_id: bytes) -> bytes:
        """The EIP-712 digest vault and provider sign."""
        if len(channel_id) != 32:
            raise ValueError("channel id must be 32 bytes")
        return _typed(
            domain,
            keccak(
                STATE_TYPEHASH
                + channel_id
                + _word(self.version)
                + _word(self.client_balance)
                + _word(self.provider_balance)
                + _word(int(self.is_final))
            ),
        )

    def pay(self, amount: int, version: int) -> BalanceState:
        """The state after paying ``amount`` to the provider, at ``version``."""
        if not 0 <= amount <= self.client_balance:
            raise ValueError("amount exceeds the client's balance")
        return BalanceState(version, self.client_balance - amount, self.provider_balance + amount)

    def as_tuple(self) -> tuple[int, int, int, bool]:
        """The contract's ``State`` tuple."""
        return (self.version, self.client_balance, self.provider_balance, self.is_final)


def force_close_digest(domain: PaymentDomain, channel_id: bytes, version: int) -> bytes:
    """The EIP-712 digest of the vault's request to force-close ``channel_id`` at ``version``.

    ``initForceCloseFor`` takes the vault's ECDSA signature over it (with the
    state of that version, which the vault signed as well): a typed message of
    its own, so a state signature the provider holds can never start a force
    close, and one per channel, since a channel force-closes once.
    """
    if len(channel_id) != 32:
        raise ValueError("channel id must be 32 bytes")
    if not 0 <= version <= MAX_VERSION:
        raise ValueError("version must fit in 64 bits")
    return _typed(domain, keccak(FORCE_CLOSE_TYPEHASH + channel_id + _word(version)))


def sign_state(
    signer: DigestSigner, domain: PaymentDomain, channel_id: bytes, state: BalanceState
) -> bytes:
    """A party's 65-byte ECDSA approval of ``state``."""
    return signer.sign_digest(state.digest(domain, channel_id))


def state_signer(
    domain: PaymentDomain, channel_id: bytes, state: BalanceState, signature: bytes
) -> bytes | None:
    """The 20-byte address that signed ``state`` (as OpenZeppelin's ECDSA recovers it), or None."""
    return recover_address(state.digest(domain, channel_id), signature, policy=OPENZEPPELIN)


def sign_channel_open(signer: DigestSigner, domain: PaymentDomain, terms: ChannelTerms) -> bytes:
    """A party's approval of ``createASC``: an EIP-712 signature over the channel id.

    The client's consent (``clientSignature``) and the vault's approval
    (``vaultSignature``) are both this signature, by their own key.
    """
    return signer.sign_digest(terms.channel_id(domain))
