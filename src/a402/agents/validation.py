"""ERC-8004 validation of delivered A402 results: the registry binding and a receipt validator.

The ``ValidationRegistry`` contract (``contracts/ValidationRegistry.sol``, deployed
with the other agent contracts by :meth:`a402.agents.onchain.AgentSuite.deploy`;
:func:`suite_validation` binds it)
records two things: an agent owner's *request* that a named validator check one
piece of work, and that validator's *response* (a 0..100 score, a hash of its
evidence, a tag).

For A402 the piece of work is one paid request inside a channel, and the
evidence is the vault's receipt for it (the ASC ``ACK``: the vault's signature
on the balance state that paid request ``rid``):

1. the provider (the agent's owner) commits to what it delivered,
   :class:`DeliveredResult` ``(channel id, rid, amount, h = H(result),
   keccak256(request))``, whose :meth:`~DeliveredResult.request_hash` it sends as
   ``validationRequest`` to a validator of its choice — its own attested enclave, or
   anyone — for its agent: the registry files it under :func:`request_key` ``(agentId, hash)``;
2. the validator, holding the receipt (and the request's AUTH and REPLY, which
   bind the amount and the result hash: the ACK states neither), calls
   :func:`answer_with_receipt`: it checks them (see :func:`check_receipt`) and answers
   ``validationResponse(requestKey, 100, "", keccak256(receipt bytes), "a402-receipt")``.

A reader then has, on-chain and for good: who vouched, for which delivery
(the request hash commits to the result's hash and the amount), and the hash
of the exact receipt bytes, which anyone holding the receipt can match
(:func:`receipt_hash`) in a dispute.

Safety: the validator answers only after the receipt verifies against the
channel's vault key and names the very channel and request of the delivery;
a receipt that does not is refused with :class:`ValidationRefused` and nothing
is sent. The contract accepts a request hash once and an answer only from the
validator the request names, so an answer cannot be moved to other work; and
the request is filed per agent, so nobody can file it first for another agent
and leave the provider's own request reverting. A
score says nothing about the result's *content*: it says the vault signed the
state that paid for the delivery committed to by ``h``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from a402.agents.onchain import AgentSuite, _Bound, _events
from a402.asc import Ack, Auth, Reply, encode, state_signer
from a402.crypto import EVM, CryptoError, PaymentDomain, answer_hash_of, payment_message
from a402.crypto.authorization import authorization_signer
from a402.evm.address import address_bytes
from a402.evm.keccak import keccak256

RECEIPT_TAG: Final = "a402-receipt"
"""The tag a receipt validator answers with (ERC-8004 tags are free text)."""
REQUEST_DOMAIN: Final = b"a402.validation.delivered-result.v1"

ZERO32: Final = bytes(32)


class ValidationRefused(ValueError):
    """The validator will not vouch: ``reason`` is a stable code, nothing was sent."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class DeliveredResult:
    """One delivered A402 result, as the provider commits to it.

    ``result_hash`` is ``H(result)`` (the REPLY's ``h``) and ``request_digest`` is
    ``keccak256(request)`` of the EXEC's request: the payment message ``m`` commits to
    their :func:`~a402.crypto.answer_hash_of` (:attr:`answer`), so the vault's σ_U pays
    that result as the answer to that request and nothing else.
    """

    channel_id: bytes
    request_id: int
    amount: int
    result_hash: bytes
    request_digest: bytes

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32 or len(self.result_hash) != 32 \
                or len(self.request_digest) != 32:
            raise ValueError("channel id, result hash and request digest are 32 bytes")
        if not (0 <= self.request_id < 1 << 64 and 0 <= self.amount < 1 << 128):
            raise ValueError("request id is a uint64 and amount a uint128")

    @property
    def answer(self) -> bytes:
        """The ``h`` of the payment message ``m``: this result as the answer to the request."""
        return answer_hash_of(self.request_digest, self.result_hash)

    def request_hash(self) -> bytes:
        """``keccak256(domain ‖ cid ‖ rid (8 bytes) ‖ amount (16 bytes) ‖ h)``: what is asked."""
        return keccak256(REQUEST_DOMAIN + self.channel_id + self.request_id.to_bytes(8, "big")
                         + self.amount.to_bytes(16, "big") + self.result_hash)


def request_key(agent_id: int, request_hash: bytes) -> bytes:
    """The key the ValidationRegistry files a request under: ``keccak256(abi.encode(agentId,
    requestHash))``. Namespaced by the agent, so another agent's owner who files the same
    work first (front-running) files it for its own agent only and takes nothing from this
    one; events, agent and validator lists name requests by this key."""
    if len(request_hash) != 32 or not 0 <= agent_id < 1 << 256:
        raise ValueError("a request hash is 32 bytes and an agent id a uint256")
    return keccak256(agent_id.to_bytes(32, "big") + request_hash)


def receipt_hash(ack: Ack | bytes) -> bytes:
    """The hash a validator publishes: keccak256 of the receipt's canonical wire bytes."""
    return keccak256(ack if isinstance(ack, bytes) else encode(ack))


def check_receipt(ack: Ack, delivered: DeliveredResult, *, vault: str,
                  domain: PaymentDomain, auth: Auth, reply: Reply) -> None:
    """Raise :class:`ValidationRefused` unless ``ack`` is the vault's receipt for ``delivered``.

    The receipt must name the delivery's channel and request, its state must
    account for that request (``version > rid``), and its signature must recover
    to ``vault`` over the channel state's EIP-712 digest in ``domain``.

    The ACK states neither the amount nor the result's hash, so the claim's
    ``amount``, ``result_hash`` and ``request_digest`` are bound by the vault's own ``σ_U``
    (``auth``, the AUTH of that request): the vault signed ``authorization_digest(m, δ, e)``
    where ``m = payment_message(cid, rid, δ, answer_hash(request, h))`` and ``e`` is the
    challenge of the provider's pre-signature (``reply``, the REPLY of that request).
    Recomputed here from the *claimed* δ, h and request digest, it recovers to the vault
    only if the vault paid that amount for that result to that request; a provider cannot
    make it vouch for more, or for another result or request
    (``receipt_wrong_amount_or_result``).
    """
    if ack.channel_id != delivered.channel_id:
        raise ValidationRefused("receipt_wrong_channel", "the receipt is for another channel")
    if ack.request_id != delivered.request_id:
        raise ValidationRefused("receipt_wrong_request",
                                f"the receipt is for request {ack.request_id}, "
                                f"not {delivered.request_id}")
    if ack.state.version <= delivered.request_id:
        raise ValidationRefused("receipt_not_paid",
                                "the receipt's state does not account for the request")
    signer = state_signer(domain, ack.channel_id, ack.state, ack.signature)
    if signer is None or signer != address_bytes(vault):
        raise ValidationRefused("receipt_bad_signature",
                                "the receipt is not signed by the channel's vault")
    if (auth.channel_id, auth.request_id) != (delivered.channel_id, delivered.request_id) \
            or (reply.channel_id, reply.request_id) != (delivered.channel_id,
                                                         delivered.request_id):
        raise ValidationRefused("receipt_wrong_request", "the vault's AUTH or the provider's "
                                "REPLY is for another request than the delivery")
    if reply.result_hash != delivered.result_hash:
        raise ValidationRefused("receipt_wrong_amount_or_result",
                                "the REPLY commits to another result than the delivery claims")
    try:
        challenge = EVM.presignature_from_bytes(reply.presignature).r
        m = payment_message(domain, delivered.channel_id, delivered.request_id,
                            delivered.amount, delivered.answer)
        paid_by = authorization_signer(domain, m, delivered.amount, challenge,
                                       auth.authorization)
    except (ValueError, CryptoError):
        paid_by = None
    if paid_by is None or paid_by != address_bytes(vault):
        raise ValidationRefused("receipt_wrong_amount_or_result",
                                "the vault's σ_U does not pay the claimed amount for the "
                                "claimed result hash and request")


@dataclass(frozen=True)
class ValidationStatus:
    validator: str
    agent_id: int
    response: int
    response_hash: bytes
    tag: str
    last_update: int

    @property
    def answered(self) -> bool:
        return self.last_update != 0


class ValidationRegistry(_Bound):
    """ERC-8004 validation: requests by an agent's owner, answers by the named validator."""

    NAME = "ValidationRegistry"

    def request(self, owner: LocalAccount, validator: str, agent_id: int, request_hash: bytes,
                request_uri: str = "") -> TxReceipt:
        return self._send(owner, self.contract.functions.validationRequest(
            to_checksum_address(validator), agent_id, request_uri, request_hash))

    def respond(self, validator: LocalAccount, request_hash: bytes, response: int, *,
                agent_id: int, response_hash: bytes = ZERO32, response_uri: str = "",
                tag: str = "") -> TxReceipt:
        """Answer the request for ``agent_id`` of the work ``request_hash`` (its key,
        :func:`request_key`, is what the contract answers)."""
        receipt = self._send(validator, self.contract.functions.validationResponse(
            request_key(agent_id, request_hash), response, response_uri, response_hash, tag))
        (_event,) = _events(self.contract, "ValidationResponse", receipt)
        return receipt

    def status(self, request_hash: bytes, agent_id: int) -> ValidationStatus:
        """The request for ``agent_id`` of the work ``request_hash``."""
        validator, agent_id, response, response_hash, tag, last = (
            self.contract.functions.getValidationStatus(
                request_key(agent_id, request_hash)).call())
        return ValidationStatus(to_checksum_address(validator), int(agent_id), int(response),
                                bytes(response_hash), str(tag), int(last))

    def summary(self, agent_id: int, validators: Sequence[str] = (), tag: str = ""
                ) -> tuple[int, int]:
        """(count, average response) of answered requests; name the validators you trust."""
        count, average = self.contract.functions.getSummary(
            agent_id, [to_checksum_address(v) for v in validators], tag).call()
        return int(count), int(average)

    def agent_validations(self, agent_id: int) -> list[bytes]:
        return [bytes(h) for h in self.contract.functions.getAgentValidations(agent_id).call()]

    def validator_requests(self, validator: str) -> list[bytes]:
        return [bytes(h) for h in self.contract.functions.getValidatorRequests(
            to_checksum_address(validator)).call()]


def suite_validation(suite: AgentSuite) -> ValidationRegistry:
    """The ValidationRegistry deployed with ``suite`` (LookupError: an older suite has none)."""
    if not suite.addresses.validation:
        raise LookupError("this agent suite was deployed without a ValidationRegistry")
    return ValidationRegistry(suite.chain, suite.addresses.validation)


def answer_with_receipt(
    registry: ValidationRegistry, validator: LocalAccount, delivered: DeliveredResult,
    ack: Ack, *, agent_id: int, vault: str, domain: PaymentDomain, auth: Auth, reply: Reply,
    response_uri: str = "",
) -> bytes:
    """Vouch for ``delivered`` with its receipt; returns the receipt hash published.

    Refuses (:class:`ValidationRefused`, nothing sent) a request that was never
    made or names another validator, and a receipt :func:`check_receipt` refuses.
    """
    request_hash = delivered.request_hash()
    try:
        status = registry.status(request_hash, agent_id)
    except ContractLogicError as e:  # the view's only revert: UnknownRequest
        raise ValidationRefused("validation_unknown_request",
                                "no validation request for this delivery") from e
    if address_bytes(status.validator) != address_bytes(validator.address):
        raise ValidationRefused("validation_not_requested_of_us",
                                f"the request names validator {status.validator}")
    check_receipt(ack, delivered, vault=vault, domain=domain, auth=auth, reply=reply)
    digest = receipt_hash(ack)
    registry.respond(validator, request_hash, 100, agent_id=agent_id, response_hash=digest,
                     response_uri=response_uri, tag=RECEIPT_TAG)
    return digest


__all__ = [
    "RECEIPT_TAG", "DeliveredResult", "ValidationRefused", "ValidationRegistry",
    "ValidationStatus", "answer_with_receipt", "check_receipt", "receipt_hash",
    "request_key", "suite_validation",
]
