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
* The vault's approval to open, when it does not send ``createASC`` itself (a
  vault key that never sends transactions, an enclave's, has its host submit
  it): its ECDSA signature over ``hashTypedData(A402Open(bytes32 channelId,
  uint256 deadline))`` (:func:`open_approval_digest`,
  :func:`sign_open_approval`), good until ``deadline``, so an open that failed
  or was withheld cannot be replayed later against the vault's allowance.
* Force-close request: ``hashTypedData(A402ForceClose(bytes32 channelId,
  uint256 version, uint256 deadline))`` (:func:`force_close_digest`), which
  the vault signs to have anyone send ``initForceCloseFor`` until
  ``deadline``; a type of its own, so no state signature can start a force
  close.
* Both approvals that lapse travel to the contract as ``signature ‖
  deadline`` (:func:`expiring_approval`), in the ``bytes`` argument that
  carries the signature.
* Pool deposit: the EIP-3009 nonce of ``depositToPoolWithAuthorization`` is
  ``hashTypedData(A402PoolDeposit(address vault, address client, uint256
  amount, bytes32 salt))`` (:func:`pool_deposit_nonce`), so the payer's one
  signature fixes the vault, the beneficiary and the amount, once.
* Pool withdrawal order: ``hashTypedData(A402PoolWithdrawal(address vault,
  address owner, address to, uint256 amount, uint256 nonce, uint256
  deadline))`` (:func:`pool_withdrawal_digest`), signed by the pool client for
  anyone to relay with ``withdrawFromPoolWithSignature``.

Encoding is plain concatenation of 32-byte words; the tests check it against the
contract's own ``channelId`` and ``stateDigest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from a402.crypto import PaymentDomain
from a402.crypto.vault_messages import VaultChannelTerms, vault_channel_id
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
OPEN_TYPE = "A402Open(bytes32 channelId,uint256 deadline)"
POOL_OPEN_TYPE = "A402PoolOpen(bytes32 channelId,uint256 deadline)"
FORCE_CLOSE_TYPE = "A402ForceClose(bytes32 channelId,uint256 version,uint256 deadline)"
POOL_DEPOSIT_TYPE = "A402PoolDeposit(address vault,address client,uint256 amount,bytes32 salt)"
POOL_WITHDRAWAL_TYPE = (
    "A402PoolWithdrawal(address vault,address owner,address to,uint256 amount,uint256 nonce,"
    "uint256 deadline)"
)
POOL_DEPOSIT_TYPEHASH = keccak(POOL_DEPOSIT_TYPE.encode())
POOL_WITHDRAWAL_TYPEHASH = keccak(POOL_WITHDRAWAL_TYPE.encode())
CHANNEL_TYPEHASH = keccak(CHANNEL_TYPE.encode())
STATE_TYPEHASH = keccak(STATE_TYPE.encode())
OPEN_TYPEHASH = keccak(OPEN_TYPE.encode())
POOL_OPEN_TYPEHASH = keccak(POOL_OPEN_TYPE.encode())
FORCE_CLOSE_TYPEHASH = keccak(FORCE_CLOSE_TYPE.encode())

#: The contract escrows at most this much per channel (balances are packed in 128 bits).
MAX_DEPOSIT = (1 << 128) - 1
#: State versions and request ids are 64-bit (the contract packs the version in 64 bits).
MAX_VERSION = (1 << 64) - 1
#: A deadline is a uint256 of seconds (``block.timestamp <= deadline``).
MAX_DEADLINE = (1 << 256) - 1
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

    ``vault_mode``: a Liquidity Vault channel (``A402Vault.sol``), opened inside the
    vault's enclave against the client's pooled account with no transaction; its id is
    ``A402VaultChannel(client, provider, providerKey, capacity = deposit, salt)`` in the
    vault contract's domain (:func:`~a402.crypto.vault_messages.vault_channel_id`), the
    id ``claimPayment`` recomputes. The exchange (EXEC, REPLY, AUTH, REVEAL, ACK) is the
    same machine and the same messages either way: one code path, two funding modes.
    """

    client: bytes
    vault: bytes
    provider: bytes
    provider_key: bytes
    deposit: int
    salt: bytes
    vault_mode: bool

    def __init__(
        self, client: str | bytes, vault: str | bytes, provider: str | bytes,
        provider_key: bytes, deposit: int, salt: bytes, *, vault_mode: bool = False,
    ) -> None:
        """The three addresses may also be given as ``0x`` hex strings."""
        object.__setattr__(self, "client", address_bytes(client))
        object.__setattr__(self, "vault", address_bytes(vault))
        object.__setattr__(self, "provider", address_bytes(provider))
        object.__setattr__(self, "provider_key", provider_key)
        object.__setattr__(self, "deposit", deposit)
        object.__setattr__(self, "salt", salt)
        object.__setattr__(self, "vault_mode", bool(vault_mode))
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
        """The 32-byte channel id in this manager's domain (the vault contract's, for a
        vault-mode channel)."""
        if self.vault_mode:
            return vault_channel_id(domain, VaultChannelTerms(
                "0x" + self.client.hex(), "0x" + self.provider.hex(), self.provider_key,
                self.deposit, self.salt))
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


def _check_id_and_deadline(channel_id: bytes, deadline: int) -> None:
    if len(channel_id) != 32:
        raise ValueError("channel id must be 32 bytes")
    if not 0 <= deadline <= MAX_DEADLINE:
        raise ValueError("deadline must be a uint256")


def open_approval_digest(domain: PaymentDomain, channel_id: bytes, deadline: int) -> bytes:
    """The EIP-712 digest of the vault's approval to open ``channel_id`` until ``deadline``.

    ``createASC``/``createASCBatch``/``createASCWithAuthorization`` take the vault's
    ECDSA signature over it when the vault does not send the transaction. Ids are
    single-use, so an approval opens one channel once; the deadline (inclusive:
    ``block.timestamp <= deadline``) ends it for good if that open failed or was
    withheld, so nobody can replay it later, from a failed transaction's calldata
    or the mempool, against an allowance the vault meant for newer channels. Once
    a block stamped after the deadline shows the id unopened, it never opens.
    """
    _check_id_and_deadline(channel_id, deadline)
    return _typed(domain, keccak(OPEN_TYPEHASH + channel_id + _word(deadline)))


def pool_open_approval_digest(domain: PaymentDomain, channel_id: bytes, deadline: int) -> bytes:
    """The EIP-712 digest of the vault's approval to open ``channel_id`` FROM THE CLIENT'S
    POOL BALANCE until ``deadline``: what ``createASCFromPool(Batch)`` take, and only they.

    A type of its own (``A402PoolOpen``): a pool open needs no consent of the client
    on-chain (she gave it to the vault by pooling), so the vault's enclave signs one only
    for a call the client signed; an :func:`open_approval_digest` approval, which the
    enclave signs for wallet opens the client consents to on-chain herself, must not open
    from the pool (the host, or anyone seeing it in the mempool, would move her pool).
    Lapses exactly as :func:`open_approval_digest`.
    """
    _check_id_and_deadline(channel_id, deadline)
    return _typed(domain, keccak(POOL_OPEN_TYPEHASH + channel_id + _word(deadline)))


def force_close_digest(
    domain: PaymentDomain, channel_id: bytes, version: int, deadline: int
) -> bytes:
    """The EIP-712 digest of the vault's request to force-close ``channel_id`` at ``version``.

    ``initForceCloseFor`` takes the vault's ECDSA signature over it (with the
    state of that version, which the vault signed as well) until ``deadline``
    (inclusive): a typed message of its own, so a state signature the provider
    holds can never start a force close; one per channel, since a channel
    force-closes once; and a request that failed or was withheld lapses instead
    of ending, later, a channel the vault went on using.
    """
    _check_id_and_deadline(channel_id, deadline)
    if not 0 <= version <= MAX_VERSION:
        raise ValueError("version must fit in 64 bits")
    return _typed(
        domain, keccak(FORCE_CLOSE_TYPEHASH + channel_id + _word(version) + _word(deadline))
    )


def expiring_approval(signature: bytes, deadline: int) -> bytes:
    """The contract's form of an approval that lapses: ``signature ‖ deadline`` (97 bytes).

    What ``createASC``'s ``vaultApproval`` and ``initForceCloseFor``'s
    ``forceCloseRequest`` carry: the 65-byte ECDSA signature (``r ‖ s ‖ v``) over
    :func:`open_approval_digest`, :func:`pool_open_approval_digest` or
    :func:`force_close_digest`, then the deadline
    it names as one 32-byte big-endian word.
    """
    if len(signature) != 65:
        raise ValueError("an ECDSA signature is 65 bytes (r ‖ s ‖ v)")
    if not 0 <= deadline <= MAX_DEADLINE:
        raise ValueError("deadline must be a uint256")
    return signature + _word(deadline)


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
    """The client's consent to ``createASC`` (``clientSignature``): an EIP-712 signature over
    the channel id. It opens nothing without the vault's approval
    (:func:`sign_open_approval`), whose deadline therefore bounds it too.
    """
    return signer.sign_digest(terms.channel_id(domain))


def sign_open_approval(
    signer: DigestSigner, domain: PaymentDomain, terms: ChannelTerms, deadline: int
) -> bytes:
    """The vault's 65-byte approval to open ``terms`` until ``deadline``
    (:func:`open_approval_digest`), for a ``createASC`` it does not send itself."""
    return signer.sign_digest(open_approval_digest(domain, terms.channel_id(domain), deadline))


def sign_pool_open_approval(
    signer: DigestSigner, domain: PaymentDomain, terms: ChannelTerms, deadline: int
) -> bytes:
    """The vault's 65-byte approval to open ``terms`` from the client's pool balance until
    ``deadline`` (:func:`pool_open_approval_digest`), for a ``createASCFromPool`` it does
    not send itself."""
    return signer.sign_digest(
        pool_open_approval_digest(domain, terms.channel_id(domain), deadline))


def pool_deposit_nonce(
    domain: PaymentDomain, vault: str | bytes, client: str | bytes, amount: int, salt: bytes
) -> bytes:
    """The EIP-3009 nonce of a pool deposit crediting ``client`` with ``vault`` by ``amount``
    (the contract's ``poolDepositNonce``): the payer signs ``receiveWithAuthorization`` to
    the manager with it, so its one signature fixes the vault, the beneficiary and the
    amount, and the token accepts it once."""
    if len(salt) != 32:
        raise ValueError("salt must be 32 bytes")
    if not 0 < amount < 1 << 256:
        raise ValueError("amount must be a positive uint256")
    return _typed(domain, keccak(
        POOL_DEPOSIT_TYPEHASH + _address_word(address_bytes(vault))
        + _address_word(address_bytes(client)) + _word(amount) + salt))


def pool_withdrawal_digest(
    domain: PaymentDomain, vault: str | bytes, owner: str | bytes, to: str | bytes,
    amount: int, nonce: int, deadline: int,
) -> bytes:
    """The EIP-712 digest the pool client signs to have anyone take ``amount`` of its pool
    balance with ``vault`` out to ``to`` (``withdrawFromPoolWithSignature``). ``nonce`` is the
    owner's next (``poolWithdrawalNonces``): an order is good once, and of two orders with one
    nonce at most one goes through (so an order refused for its ``to`` is replaced by
    signing another ``to`` with the same nonce)."""
    for value in (amount, nonce, deadline):
        if not 0 <= value < 1 << 256:
            raise ValueError("amount, nonce and deadline are uint256")
    return _typed(domain, keccak(
        POOL_WITHDRAWAL_TYPEHASH + _address_word(address_bytes(vault))
        + _address_word(address_bytes(owner)) + _address_word(address_bytes(to))
        + _word(amount) + _word(nonce) + _word(deadline)))
