"""The A402 payment message ``m`` and the vault's authorization digest.

``m = H(domain ‖ cid ‖ rid ‖ δ ‖ h)`` with ``h = answer_hash(request, H(result))``
is encoded as an EIP-712 typed data hash, so that Python, ``A402Message.sol`` and
any EIP-712 library compute the same 32 bytes:

* domain: ``EIP712Domain(string name,string version,uint256 chainId,address
  verifyingContract)`` with ``name = "A402"``, ``version = "1"``, the chain id
  and the contract that settles the channel (the ASC manager). This is what
  makes ``m`` domain-separated, versioned and chain-bound; it equals the
  separator of OpenZeppelin's ``EIP712("A402", "1")`` deployed at that address.
* struct: ``A402Payment(bytes32 channelId,uint256 requestId,uint256 amount,
  bytes32 resultHash)``; ``requestId`` is the channel's request counter ``k``
  (the paper's ``rid = (cid, k)``), ``amount`` is δ in the token's base units,
  ``resultHash = h`` (:func:`answer_hash`), opaque to the contract.
* ``m = keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ keccak256(abi.encode(
  PAYMENT_TYPEHASH, channelId, requestId, amount, resultHash)))``.

Why ``h`` is not simply ``H(result)``: the request travels to the provider's enclave
through hosts that can rewrite frames (a vault host that encrypts the tunnel can put
another request, sold at the same price, in an EXEC). ``H(result)`` alone would let the
provider's pre-signature, and so the vault's σ_U, pay for whatever was executed. With
``h = keccak256(ANSWER_DOMAIN ‖ keccak256(request) ‖ H(result))`` the provider commits to
this result *as the answer to* the request it executed, and the vault rebuilds ``m`` from
the request its own enclave sent: a substituted request gives a pre-signature over another
``m``, which the vault refuses before signing anything. The REPLY still carries
``H(result)``, which the vault checks the opened result against.

The vault's conditional payment signature ``σ_U`` (paper Alg. 2, line 30) is
an ECDSA signature (see :mod:`a402.crypto.authorization`) over
``A402PaymentAuthorization(bytes32 payment,uint256 amount,bytes32 challenge)``
in the same domain: ``payment = m``, ``amount = δ`` and ``challenge`` = the
EVM challenge ``e`` of the provider's pre-signature. Binding ``e`` matters: a
provider holds its own key and could otherwise sign ``m`` afresh, settle
on-chain with that signature and never reveal ``t``. With ``e`` fixed, the only
signature the contract accepts is ``(e, ŝ + t)``, from which the vault extracts
``t``.

Encoding is done with plain byte concatenation (this runs on every request);
the tests check it against eth-abi, eth-account's EIP-712 encoder and the
contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from a402.evm.address import address_bytes
from a402.evm.keccak import keccak256

from ._secp import b32

DOMAIN_NAME = "A402"
DOMAIN_VERSION = "1"

DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
PAYMENT_TYPE = "A402Payment(bytes32 channelId,uint256 requestId,uint256 amount,bytes32 resultHash)"
AUTHORIZATION_TYPE = "A402PaymentAuthorization(bytes32 payment,uint256 amount,bytes32 challenge)"

DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE.encode())
PAYMENT_TYPEHASH = keccak256(PAYMENT_TYPE.encode())
AUTHORIZATION_TYPEHASH = keccak256(AUTHORIZATION_TYPE.encode())

#: Separates an answer hash from every other keccak-256 over 64 bytes.
ANSWER_DOMAIN = b"A402/answer/v1"

_UINT256_LIMIT = 1 << 256


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


def _uint256(value: int, what: str) -> bytes:
    if not 0 <= value < _UINT256_LIMIT:
        raise ValueError(f"{what} must fit in uint256")
    return b32(value)


@lru_cache(maxsize=256)
def _separator(chain_id: int, contract: bytes) -> bytes:
    return keccak256(
        DOMAIN_TYPEHASH
        + keccak256(DOMAIN_NAME.encode())
        + keccak256(DOMAIN_VERSION.encode())
        + _uint256(chain_id, "chain id")
        + bytes(12)
        + contract
    )


@dataclass(frozen=True, slots=True, init=False)
class PaymentDomain:
    """Where a payment message is valid: one chain, one settling contract."""

    chain_id: int
    #: The settling contract's address, as its 20 raw bytes.
    verifying_contract: bytes

    def __init__(self, chain_id: int, verifying_contract: str | bytes) -> None:
        """``verifying_contract`` may also be given as a ``0x`` hex string."""
        _uint256(chain_id, "chain id")
        object.__setattr__(self, "chain_id", chain_id)
        object.__setattr__(self, "verifying_contract", address_bytes(verifying_contract))

    @property
    def separator(self) -> bytes:
        """The EIP-712 domain separator (cached per chain and contract)."""
        return _separator(self.chain_id, self.verifying_contract)


def result_hash(result: bytes) -> bytes:
    """``H(result)``: keccak-256, so the contract could recompute it if ever needed."""
    return keccak256(result)


def answer_hash(request: bytes, result_digest: bytes) -> bytes:
    """The ``h`` that ``m`` commits to: this result as the answer to that request.

    ``keccak256(ANSWER_DOMAIN ‖ keccak256(request) ‖ result_digest)``, where
    ``result_digest = H(result)`` (:func:`result_hash`) and ``request`` is the EXEC's
    request bytes. Both sides compute it: the provider's enclave from the request it
    executed, the vault's from the request it sent; they agree only if the request arrived
    unchanged (see the module's docstring).
    """
    return answer_hash_of(keccak256(request), result_digest)


def answer_hash_of(request_digest: bytes, result_digest: bytes) -> bytes:
    """:func:`answer_hash` for whoever holds only ``keccak256(request)`` (a validator)."""
    return keccak256(
        ANSWER_DOMAIN
        + _bytes32(request_digest, "request digest")
        + _bytes32(result_digest, "result hash")
    )


def _typed(domain: PaymentDomain, struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + domain.separator + struct_hash)


def payment_message(
    domain: PaymentDomain,
    channel_id: bytes,
    request_id: int,
    amount: int,
    result_digest: bytes,
) -> bytes:
    """The 32-byte payment message ``m`` the provider pre-signs.

    ``result_digest`` is the ``h`` of ``m``: :func:`answer_hash` in the ASC exchange (the
    contract takes it as given, as ``resultHash``).
    """
    struct_hash = keccak256(
        PAYMENT_TYPEHASH
        + _bytes32(channel_id, "channel id")
        + _uint256(request_id, "request id")
        + _uint256(amount, "amount")
        + _bytes32(result_digest, "result hash")
    )
    return _typed(domain, struct_hash)


def authorization_digest(
    domain: PaymentDomain, payment: bytes, amount: int, challenge: bytes
) -> bytes:
    """The digest the vault signs as its conditional payment signature ``σ_U``."""
    struct_hash = keccak256(
        AUTHORIZATION_TYPEHASH
        + _bytes32(payment, "payment message")
        + _uint256(amount, "amount")
        + _bytes32(challenge, "challenge")
    )
    return _typed(domain, struct_hash)
