"""Typed bindings for the agent contracts and the ERC-8004 registries (does I/O).

Thin on purpose: each method is one contract call, sent with
:func:`a402.chain.tx.transact`; card data goes through :mod:`a402.agents.card`,
so what is written and what is read back are the same Python values. A revert
raises :class:`~a402.chain.tx.TransactionFailed` whose reason names the
contract's custom error and its arguments (``NotAPayer(agent=0x…)``) followed
by the raw revert data.

Contracts (``contracts/``):

- ``Agent`` — one AgentCard as a contract (a clone per agent): card, till,
  liveness, ratings by agents that paid it.
- ``AgentCardRenderer`` — shared read-side code (decode, canonical JSON).
- ``AgentFactory`` — deploys agents as clones, lists them; the directory that
  tells genuine agents apart.
- ``AgentRegistry`` (open) and ``CuratedAgentRegistry`` (a consortium approves).
- ``IdentityRegistry`` / ``ReputationRegistry`` — ERC-8004, 2026-01 revision.
- ``ValidationRegistry`` — ERC-8004 validation requests and responses
  (binding in :mod:`a402.agents.validation`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import cache
from typing import Any, Final

from eth_abi import decode as abi_decode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt, Wei

from a402.agents.card import ZERO_ADDRESS, Capabilities, OnchainCard, Payment, encode_profile
from a402.chain.artifacts import load_artifact
from a402.chain.node import Chain
from a402.chain.tx import (
    TransactionFailed,
    contract_at,
    deploy_contract,
    revert_reason,
    transact,
)
from a402.exact.eip3009 import ExactEvmPayload

DEFAULT_ACTIVITY_WINDOW = 86_400
"""A new agent counts as active for a day after each owner action unless told otherwise."""

CONTRACTS = (
    "Agent", "AgentCardRenderer", "AgentFactory", "AgentRegistry", "CuratedAgentRegistry",
    "IdentityRegistry", "ReputationRegistry", "ValidationRegistry",
)


# ------------------------------------------------------------------------- reverts


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {
        bytes.fromhex("08c379a0"): ("Error", ["string"], ["reason"]),
        bytes.fromhex("4e487b71"): ("Panic", ["uint256"], ["code"]),
    }
    for name in (*CONTRACTS, "TestUSDC"):
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], types, [i["name"] for i in item["inputs"]])
    return table


#: What the agent contracts' custom errors mean, for the person who sent the call.
_MEANING: Final[dict[str, str]] = {
    "SelfDealing": "an agent cannot pay or rate itself, nor rate an agent of its own owner",
    "NotAPayer": "only an agent that has paid this agent (through its till) may rate it",
    "InvalidScore": "a score is a whole number from 0 to 100",
    "NoRating": "that agent has no rating of this one to withdraw",
    "NotActingFor": "this key neither owns nor operates that agent",
    "NotAnAgent": "that address is not an agent of this suite",
    "NotAgentOwner": "only the agent's owner may do this",
    "TokenNotAccepted": "the agent does not take payment in this token",
    "ZeroAmount": "the amount is zero",
    "ZeroAddress": "an address is the zero address",
    "InvalidActivityWindow": "the activity window is out of range",
    "RenounceDisabled": "an agent's ownership cannot be renounced",
    "ProfileTooLarge": "the agent's card is larger than the contract stores",
    "MissingField": "the agent's card lacks a required field",
    "InvalidPaymentTerms": "the card's price or payment terms are not valid",
    "InvalidUtf8": "the card holds text that is not UTF-8",
    "AlreadyListed": "the agent is already in this registry",
    "NotListed": "the agent is not in this registry",
    "NotMember": "this key is not a curator of the registry",
    "AlreadyMember": "that account is a curator already",
    "NoRequest": "that agent has not asked to be listed",
    "RequestPending": "that agent's request to be listed is pending already",
    "AlreadyApproved": "this curator has approved that agent already",
    "NotEnoughApprovals": "not enough curators have approved that agent yet",
    "NotAuthorized": "this key is neither the identity's owner nor an approved operator",
    "SelfFeedback": "ERC-8004 forbids rating one's own agent",
    "DeadlineExpired": "the signature's deadline has passed",
    "DeadlineTooFar": "the signature's deadline is too far ahead",
    "InvalidWalletSignature": "the wallet's signature does not match",
    "ValueOutOfRange": "the feedback value is out of range",
    "FeedbackNotFound": "there is no such feedback",
    "AlreadyRevoked": "that feedback is revoked already",
}


def explain_revert(reason: str) -> str:
    """``reason`` with any custom-error revert data in it decoded by name and what it means
    (``SelfDealing(): an agent cannot pay or rate itself, ... (revert data 0x74ca9bd8)``)."""
    decoded = _decode_revert(reason)
    name = decoded.split("(", 1)[0]
    meaning = _MEANING.get(name)
    if decoded == reason or meaning is None:
        return decoded
    call, _, data = decoded.rpartition(" ")
    return f"{call}: {meaning} (revert data {data})"


def _decode_revert(reason: str) -> str:
    """``reason`` with any custom-error revert data in it decoded by name (data kept after it)."""
    match = re.fullmatch(r"\s*0x([0-9a-fA-F]{8})([0-9a-fA-F]*)\s*", reason)
    if not match:
        return reason
    entry = _error_table().get(bytes.fromhex(match.group(1)))
    if entry is None:
        return reason
    name, types, names = entry
    try:
        values = abi_decode(types, bytes.fromhex(match.group(2)))
    except Exception:
        return f"{name}(?) {reason}"
    shown = ", ".join(
        f"{n}={_show(t, v)}" if n else _show(t, v)
        for n, t, v in zip(names, types, values, strict=True)
    )
    return f"{name}({shown}) {reason}"


def _show(abi_type: str, value: Any) -> str:
    if abi_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def send(chain: Chain, account: LocalAccount, call: ContractFunction, *, value: int = 0
         ) -> TxReceipt:
    """:func:`transact` with gas headroom, and custom errors decoded in the failure reason.

    Headroom, because an agent's owner calls write ``lastSeen = block.timestamp``: an
    estimate simulated in the same second as the previous write sees a no-op store,
    ~2,800 gas cheaper than the mined transaction, and an exact estimate then runs
    out of gas (in a nested call, as a revert). Gas used is unaffected.
    """
    try:
        estimate = call.estimate_gas({"from": account.address, "value": Wei(value)})
    except ContractLogicError as e:
        raise TransactionFailed(explain_revert(revert_reason(e))) from e
    try:
        return transact(chain, account, call, value=value, gas=estimate + estimate // 5 + 10_000)
    except TransactionFailed as e:
        raise TransactionFailed(explain_revert(e.reason), e.tx_hash) from e


def _events(contract: Contract, event: str, receipt: TxReceipt) -> list[Any]:
    """``event`` logs ``contract`` itself emitted (clones share one ABI: filter by address)."""
    decoded = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    return [e for e in decoded if e["address"] == contract.address]


def _addr(address: str) -> ChecksumAddress:
    return to_checksum_address(address)


# ---------------------------------------------------------------------------- suite


@dataclass(frozen=True)
class SuiteAddresses:
    renderer: str
    implementation: str
    factory: str
    registry: str
    curated_registry: str
    identity: str
    reputation: str
    #: ERC-8004 ValidationRegistry; "" in a manifest written before it was deployed.
    validation: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> SuiteAddresses:
        values = {k: _addr(data[k]) for k in cls.__dataclass_fields__ if k != "validation"}
        validation = data.get("validation")
        return cls(**values, validation=_addr(validation) if validation else "")


@dataclass(frozen=True)
class AgentSuite:
    """Every agent contract on one chain, deployed together."""

    chain: Chain
    addresses: SuiteAddresses

    @classmethod
    def deploy(
        cls, chain: Chain, deployer: LocalAccount, *, curators: Sequence[str] = (),
        threshold: int = 1, curator_owner: str | None = None,
    ) -> AgentSuite:
        """Deploy renderer, Agent implementation, factory, both registries, ERC-8004 pair.

        The curated registry is owned by ``curator_owner`` (default: the deployer)
        with ``curators`` as members (default: just the deployer).
        """
        renderer = deploy_contract(chain, deployer, "AgentCardRenderer")
        implementation = deploy_contract(chain, deployer, "Agent", renderer.address)
        factory = deploy_contract(chain, deployer, "AgentFactory", implementation.address)
        registry = deploy_contract(chain, deployer, "AgentRegistry", factory.address)
        curated = deploy_contract(
            chain, deployer, "CuratedAgentRegistry", factory.address,
            curator_owner or deployer.address, [_addr(c) for c in curators] or [deployer.address],
            threshold,
        )
        identity = deploy_contract(chain, deployer, "IdentityRegistry")
        reputation = deploy_contract(chain, deployer, "ReputationRegistry", identity.address)
        validation = deploy_contract(chain, deployer, "ValidationRegistry", identity.address)
        return cls(chain, SuiteAddresses(
            renderer=renderer.address, implementation=implementation.address,
            factory=factory.address, registry=registry.address, curated_registry=curated.address,
            identity=identity.address, reputation=reputation.address,
            validation=validation.address,
        ))

    @property
    def factory(self) -> AgentFactory:
        return AgentFactory(self.chain, self.addresses.factory)

    @property
    def registry(self) -> AgentRegistry:
        return AgentRegistry(self.chain, self.addresses.registry)

    @property
    def curated_registry(self) -> CuratedAgentRegistry:
        return CuratedAgentRegistry(self.chain, self.addresses.curated_registry)

    @property
    def identity(self) -> IdentityRegistry:
        return IdentityRegistry(self.chain, self.addresses.identity)

    @property
    def reputation(self) -> ReputationRegistry:
        return ReputationRegistry(self.chain, self.addresses.reputation)

    def agent(self, address: str) -> Agent:
        return Agent(self.chain, address)

    def render(self, card: OnchainCard) -> bytes:
        """The canonical JSON the chain would publish for ``card`` (validated on-chain)."""
        renderer = contract_at(self.chain, "AgentCardRenderer", self.addresses.renderer)
        return str(renderer.functions.renderCard(card.card_data_abi()).call()).encode("utf-8")


class _Bound:
    NAME = ""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = _addr(address)
        self.contract = contract_at(chain, self.NAME, self.address)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address})"

    def _send(self, account: LocalAccount, call: ContractFunction, *, value: int = 0
              ) -> TxReceipt:
        return send(self.chain, account, call, value=value)


class _Enumerable(_Bound):
    """``agentCount`` / ``agentAt`` / ``agentsPage``, shared by the factory and registries."""

    def count(self) -> int:
        return int(self.contract.functions.agentCount().call())

    def at(self, index: int) -> str:
        return _addr(self.contract.functions.agentAt(index).call())

    def page(self, offset: int, limit: int) -> list[str]:
        return [_addr(a) for a in self.contract.functions.agentsPage(offset, limit).call()]

    def all(self, page_size: int = 500) -> Iterator[str]:
        """Every listed agent, read page by page (a registry may reorder between pages)."""
        offset = 0
        while True:
            page = self.page(offset, page_size)
            yield from page
            if len(page) < page_size:
                return
            offset += page_size


# -------------------------------------------------------------------------- factory


class AgentFactory(_Enumerable):
    NAME = "AgentFactory"

    def create(
        self, sender: LocalAccount, card: OnchainCard, *, owner: str | None = None,
        activity_window: int = DEFAULT_ACTIVITY_WINDOW,
    ) -> Agent:
        """Deploy an agent for ``owner`` (default: the sender) publishing ``card``."""
        receipt = self._send(sender, self.contract.functions.createAgent(
            _addr(owner or sender.address), card.to_abi(), activity_window))
        (created,) = _events(self.contract, "AgentCreated", receipt)
        return Agent(self.chain, created["args"]["agent"])

    def is_agent(self, address: str) -> bool:
        return bool(self.contract.functions.isAgent(_addr(address)).call())

    @property
    def implementation(self) -> str:
        return _addr(self.contract.functions.implementation().call())


# ---------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class Rating:
    score: int
    updated_at: int


@dataclass(frozen=True)
class AgentInfo:
    """Everything a human wants to see about one agent (:meth:`Agent.info`)."""

    address: str
    owner: str
    card: OnchainCard
    card_hash: bytes
    revision: int
    active: bool
    enabled: bool
    last_seen: int
    activity_window: int
    ratings: int
    rating_sum: int

    @property
    def average_rating(self) -> float | None:
        return self.rating_sum / self.ratings if self.ratings else None


class Agent(_Bound):
    """One agent contract. Writers take the sending account first; owner-only ones say so."""

    NAME = "Agent"

    def info(self) -> AgentInfo:
        """Card, owner, liveness and ratings in one object ("show an agent")."""
        count, total = self.rating_summary()
        return AgentInfo(
            address=self.address, owner=self.owner(), card=self.card(),
            card_hash=self.card_hash(), revision=self.revision(), active=self.is_active(),
            enabled=self.enabled(), last_seen=self.last_seen(),
            activity_window=self.activity_window(), ratings=count, rating_sum=total,
        )

    # ---- card
    def card(self) -> OnchainCard:
        return OnchainCard.from_abi(self.contract.functions.card().call())

    def card_json(self) -> bytes:
        """``cardJSON()`` as the UTF-8 bytes the contract rendered."""
        return str(self.contract.functions.cardJSON().call()).encode("utf-8")

    def card_hash(self) -> bytes:
        return bytes(self.contract.functions.cardHash().call())

    def revision(self) -> int:
        return int(self.contract.functions.cardRevision().call())

    def name(self) -> str:
        return str(self.contract.functions.name().call())

    def payment(self) -> Payment | None:
        scheme, network, asset, amount, pay_to = self.contract.functions.paymentTerms().call()
        if int(pay_to, 16) == 0:
            return None
        return Payment(network=network, asset=asset, amount=int(amount), pay_to=pay_to,
                       scheme=scheme)

    def profile_data(self) -> str:
        """The data contract holding the current profile blob."""
        return _addr(self.contract.functions.profileData().call())

    def update_card(self, owner: LocalAccount, card: OnchainCard) -> TxReceipt:
        """Owner only: replace the whole card (one revision)."""
        return self._send(owner, self.contract.functions.updateCard(card.to_abi()))

    def set_profile(self, owner: LocalAccount, card: OnchainCard) -> TxReceipt:
        """Owner only: replace the card's text (name, description, interfaces, modes, skills)."""
        return self._send(owner, self.contract.functions.setProfile(encode_profile(card)))

    def set_version(self, owner: LocalAccount, version: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.setVersion(version))

    def set_capabilities(self, owner: LocalAccount, capabilities: Capabilities) -> TxReceipt:
        c = capabilities
        return self._send(owner, self.contract.functions.setCapabilities(
            (c.streaming, c.push_notifications, c.extended_agent_card)))

    def set_payment(self, owner: LocalAccount, payment: Payment | None) -> TxReceipt:
        """Owner only: new x402 terms (None: the agent charges nothing)."""
        terms = (payment.scheme, payment.network, payment.asset, payment.amount,
                 payment.pay_to) if payment else ("", "", ZERO_ADDRESS, 0, ZERO_ADDRESS)
        return self._send(owner, self.contract.functions.setPaymentTerms(terms))

    def set_profile_blob(self, owner: LocalAccount, blob: bytes) -> TxReceipt:
        """Owner only: ``setProfile`` with a blob made by ``card.encode_profile`` (or by hand)."""
        return self._send(owner, self.contract.functions.setProfile(blob))

    # ---- ownership and liveness
    def owner(self) -> str:
        return _addr(self.contract.functions.owner().call())

    def transfer_ownership(self, owner: LocalAccount, new_owner: str) -> TxReceipt:
        """Owner only; takes effect when ``new_owner`` calls :meth:`accept_ownership`."""
        return self._send(owner, self.contract.functions.transferOwnership(_addr(new_owner)))

    def accept_ownership(self, new_owner: LocalAccount) -> TxReceipt:
        return self._send(new_owner, self.contract.functions.acceptOwnership())

    def heartbeat(self, owner: LocalAccount) -> TxReceipt:
        return self._send(owner, self.contract.functions.heartbeat())

    def is_active(self) -> bool:
        return bool(self.contract.functions.isActive().call())

    def last_seen(self) -> int:
        return int(self.contract.functions.lastSeen().call())

    def activity_window(self) -> int:
        return int(self.contract.functions.activityWindow().call())

    def enabled(self) -> bool:
        return bool(self.contract.functions.enabled().call())

    def set_activity_window(self, owner: LocalAccount, seconds: int) -> TxReceipt:
        return self._send(owner, self.contract.functions.setActivityWindow(seconds))

    def set_enabled(self, owner: LocalAccount, enabled: bool) -> TxReceipt:
        return self._send(owner, self.contract.functions.setEnabled(enabled))

    # ---- till
    def accepts_token(self, token: str) -> bool:
        return bool(self.contract.functions.acceptsToken(_addr(token)).call())

    def set_token_accepted(self, owner: LocalAccount, token: str, accepted: bool) -> TxReceipt:
        return self._send(owner, self.contract.functions.setTokenAccepted(_addr(token), accepted))

    def pay(self, sender: LocalAccount, amount: int, *, payer_agent: str | None = None
            ) -> TxReceipt:
        """Pay native coin; ``payer_agent`` (an agent the sender owns or is) gets the credit."""
        return self._send(sender, self.contract.functions.pay(_addr(payer_agent or ZERO_ADDRESS)),
                          value=amount)

    def pay_token(
        self, sender: LocalAccount, token: str, amount: int, *, payer_agent: str | None = None,
        approve: bool = True,
    ) -> TxReceipt:
        """Pay an accepted ERC-20 (approving exactly ``amount`` first unless ``approve=False``)."""
        if approve:
            erc20 = contract_at(self.chain, "TestUSDC", token)
            self._send(sender, erc20.functions.approve(self.address, amount))
        return self._send(sender, self.contract.functions.payToken(
            _addr(payer_agent or ZERO_ADDRESS), _addr(token), amount))

    def pay_with_authorization(
        self, submitter: LocalAccount, token: str, payment: ExactEvmPayload, *,
        payer_agent: str | None = None,
    ) -> TxReceipt:
        """Settle an x402 ``exact`` payload whose ``to`` is this agent, recording the payer.

        ``submitter`` pays the gas (a facilitator, or the payer itself); the
        credit goes to ``payer_agent``, which the signer must be or own.
        """
        auth, sig = payment.authorization, payment.signature_bytes
        if len(sig) != 65:
            raise ValueError("payWithAuthorization takes a 65-byte ECDSA signature")
        return self._send(submitter, self.contract.functions.payWithAuthorization(
            _addr(payer_agent or ZERO_ADDRESS), _addr(token), _addr(auth.from_address),
            int(auth.value), int(auth.valid_after), int(auth.valid_before),
            bytes.fromhex(auth.nonce[2:]), sig[64], sig[:32], sig[32:64],
        ))

    def pay_agent(self, owner: LocalAccount, payee: str, amount: int, *, asset: str | None = None
                  ) -> TxReceipt:
        """Owner only: pay agent ``payee`` from this agent's balance, credited to this agent."""
        return self._send(owner, self.contract.functions.payAgent(
            _addr(payee), _addr(asset or ZERO_ADDRESS), amount))

    def withdraw(self, owner: LocalAccount, to: str, amount: int) -> TxReceipt:
        return self._send(owner, self.contract.functions.withdraw(_addr(to), amount))

    def withdraw_token(self, owner: LocalAccount, token: str, to: str, amount: int) -> TxReceipt:
        return self._send(owner, self.contract.functions.withdrawToken(_addr(token), _addr(to),
                                                                        amount))

    def payments_from(self, payer_agent: str) -> int:
        return int(self.contract.functions.paymentsFrom(_addr(payer_agent)).call())

    def paid_by(self, payer_agent: str, asset: str | None = None) -> int:
        """Cumulative amount credited to ``payer_agent`` in ``asset`` (None: native coin)."""
        return int(self.contract.functions.paidBy(
            _addr(payer_agent), _addr(asset or ZERO_ADDRESS)).call())

    # ---- ratings
    def rate(self, sender: LocalAccount, rater_agent: str, score: int, comment: str = ""
             ) -> TxReceipt:
        """Rate 0..100 as ``rater_agent`` (the sender is it or its owner; it must have paid)."""
        return self._send(sender, self.contract.functions.rate(_addr(rater_agent), score, comment))

    def withdraw_rating(self, sender: LocalAccount, rater_agent: str) -> TxReceipt:
        return self._send(sender, self.contract.functions.withdrawRating(_addr(rater_agent)))

    def rating_of(self, rater_agent: str) -> Rating | None:
        live, score, updated = self.contract.functions.ratingOf(_addr(rater_agent)).call()
        return Rating(int(score), int(updated)) if live else None

    def rating_summary(self) -> tuple[int, int]:
        """(number of live ratings, sum of their scores)."""
        return (int(self.contract.functions.ratingCount().call()),
                int(self.contract.functions.ratingSum().call()))


class FactoryCardSource:
    """The chain as the A2A client's card authority (``a2a_card.CardSource``).

    ``onchain_card(agent)`` is the card agent contract ``agent`` publishes, as the
    A2A AgentCard JSON object ``cardJSON()`` renders — only for agents of this
    factory, whose code (and so whose card) can be trusted.
    """

    def __init__(self, chain: Chain, factory: str) -> None:
        self.chain = chain
        self.factory = AgentFactory(chain, factory)

    def onchain_card(self, agent: str) -> Mapping[str, Any]:
        from a402.agents.a2a_card import UnknownAgent  # the A2A side is optional here

        if not self.factory.is_agent(agent):
            raise UnknownAgent(f"{agent} is not an agent of factory {self.factory.address}")
        card: Mapping[str, Any] = json.loads(Agent(self.chain, agent).card_json())
        return card


# ----------------------------------------------------------------------- registries


class AgentRegistry(_Enumerable):
    """Open enrolment: an agent's owner lists it and may take it off."""

    NAME = "AgentRegistry"

    def enroll(self, owner: LocalAccount, agent: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.enroll(_addr(agent)))

    def unlist(self, owner: LocalAccount, agent: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.unlist(_addr(agent)))

    def is_listed(self, agent: str) -> bool:
        return bool(self.contract.functions.isListed(_addr(agent)).call())


class CuratedAgentRegistry(AgentRegistry):
    """Enrolment approved by ``threshold`` consortium members (see the contract notes)."""

    NAME = "CuratedAgentRegistry"

    def enroll(self, owner: LocalAccount, agent: str) -> TxReceipt:
        raise TypeError("a curated registry lists agents on approval: use request_enrolment")

    def request_enrolment(self, owner: LocalAccount, agent: str) -> int:
        receipt = self._send(owner, self.contract.functions.requestEnrolment(_addr(agent)))
        (event,) = _events(self.contract, "EnrolmentRequested", receipt)
        return int(event["args"]["requestId"])

    def approve(self, member: LocalAccount, agent: str) -> TxReceipt:
        return self._send(member, self.contract.functions.approve(_addr(agent)))

    def finalize(self, sender: LocalAccount, agent: str) -> TxReceipt:
        return self._send(sender, self.contract.functions.finalize(_addr(agent)))

    def cancel_enrolment(self, sender: LocalAccount, agent: str) -> TxReceipt:
        return self._send(sender, self.contract.functions.cancelEnrolment(_addr(agent)))

    def remove(self, owner: LocalAccount, agent: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.remove(_addr(agent)))

    def add_member(self, owner: LocalAccount, member: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.addMember(_addr(member)))

    def remove_member(self, owner: LocalAccount, member: str) -> TxReceipt:
        return self._send(owner, self.contract.functions.removeMember(_addr(member)))

    def set_threshold(self, owner: LocalAccount, threshold: int) -> TxReceipt:
        return self._send(owner, self.contract.functions.setThreshold(threshold))

    def threshold(self) -> int:
        return int(self.contract.functions.threshold().call())

    def is_member(self, account: str) -> bool:
        return bool(self.contract.functions.isMember(_addr(account)).call())

    def pending(self, agent: str) -> tuple[int, int]:
        """(request id, approvals this membership epoch); id 0 means no pending request."""
        request_id, approvals = self.contract.functions.request(_addr(agent)).call()
        return int(request_id), int(approvals)


# ------------------------------------------------------------------ ERC-8004 identity


AGENT_WALLET_TYPES = {
    "AgentWalletSet": [
        {"name": "agentId", "type": "uint256"},
        {"name": "newWallet", "type": "address"},
        {"name": "owner", "type": "address"},
        {"name": "deadline", "type": "uint256"},
    ]
}


class IdentityRegistry(_Bound):
    """ERC-8004 identity: agents are ERC-721 tokens with an ``agentURI`` and a verified wallet."""

    NAME = "IdentityRegistry"
    MAX_DEADLINE_DELAY = 300

    @property
    def agent_registry(self) -> str:
        """``eip155:{chainId}:{address}``: the registry part of a global agent id."""
        return f"{self.chain.network}:{self.address}"

    def register(
        self, owner: LocalAccount, agent_uri: str | None = None,
        metadata: Mapping[str, bytes] | None = None,
    ) -> int:
        """Mint an agent for the sender; returns its ``agentId``."""
        fn = self.contract.functions
        if metadata:
            call = fn.register(agent_uri or "", [(k, bytes(v)) for k, v in metadata.items()])
        elif agent_uri is not None:
            call = fn.register(agent_uri)
        else:
            call = fn.register()
        receipt = self._send(owner, call)
        (event,) = _events(self.contract, "Registered", receipt)
        return int(event["args"]["agentId"])

    def owner_of(self, agent_id: int) -> str:
        return _addr(self.contract.functions.ownerOf(agent_id).call())

    def agent_uri(self, agent_id: int) -> str:
        return str(self.contract.functions.tokenURI(agent_id).call())

    def set_agent_uri(self, sender: LocalAccount, agent_id: int, uri: str) -> TxReceipt:
        return self._send(sender, self.contract.functions.setAgentURI(agent_id, uri))

    def get_metadata(self, agent_id: int, key: str) -> bytes:
        return bytes(self.contract.functions.getMetadata(agent_id, key).call())

    def set_metadata(self, sender: LocalAccount, agent_id: int, key: str, value: bytes
                     ) -> TxReceipt:
        return self._send(sender, self.contract.functions.setMetadata(agent_id, key, value))

    def agent_wallet(self, agent_id: int) -> str | None:
        wallet = self.contract.functions.getAgentWallet(agent_id).call()
        return None if int(wallet, 16) == 0 else _addr(wallet)

    def wallet_typed_data(self, agent_id: int, new_wallet: str, owner: str, deadline: int
                          ) -> dict[str, Any]:
        """The EIP-712 message a new wallet signs to become ``agent_id``'s wallet."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                **AGENT_WALLET_TYPES,
            },
            "primaryType": "AgentWalletSet",
            "domain": {"name": "ERC8004IdentityRegistry", "version": "1",
                       "chainId": self.chain.chain_id, "verifyingContract": self.address},
            "message": {"agentId": agent_id, "newWallet": _addr(new_wallet),
                        "owner": _addr(owner), "deadline": deadline},
        }

    def sign_wallet(self, wallet: LocalAccount, agent_id: int, owner: str, deadline: int
                    ) -> bytes:
        typed = encode_typed_data(full_message=self.wallet_typed_data(
            agent_id, wallet.address, owner, deadline))
        return bytes(wallet.sign_message(typed).signature)

    def set_agent_wallet(
        self, sender: LocalAccount, agent_id: int, wallet: str, deadline: int, signature: bytes
    ) -> TxReceipt:
        return self._send(sender, self.contract.functions.setAgentWallet(
            agent_id, _addr(wallet), deadline, signature))

    def verify_wallet(self, sender: LocalAccount, agent_id: int, wallet: LocalAccount, *,
                      deadline: int | None = None) -> TxReceipt:
        """Sign with ``wallet`` and set it, in one step (deadline: chain time + 4 minutes)."""
        if deadline is None:
            deadline = chain_time(self.chain) + 240
        signature = self.sign_wallet(wallet, agent_id, self.owner_of(agent_id), deadline)
        return self.set_agent_wallet(sender, agent_id, wallet.address, deadline, signature)

    def unset_agent_wallet(self, sender: LocalAccount, agent_id: int) -> TxReceipt:
        return self._send(sender, self.contract.functions.unsetAgentWallet(agent_id))

    def is_authorized_or_owner(self, spender: str, agent_id: int) -> bool:
        return bool(self.contract.functions.isAuthorizedOrOwner(_addr(spender), agent_id).call())

    def transfer(self, sender: LocalAccount, to: str, agent_id: int) -> TxReceipt:
        return self._send(sender, self.contract.functions.transferFrom(
            sender.address, _addr(to), agent_id))


# ---------------------------------------------------------------- ERC-8004 reputation


def fixed_point(value: int | Decimal | str, decimals: int | None = None) -> tuple[int, int]:
    """(value, valueDecimals) for feedback: ``Decimal("4.5")`` → (45, 1); ints pass through."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, decimals or 0
    d = Decimal(value)
    if decimals is None:
        exponent = d.normalize().as_tuple().exponent
        decimals = max(0, -exponent) if isinstance(exponent, int) else 0
    if not 0 <= decimals <= 18:
        raise ValueError("feedback takes at most 18 decimals")
    scaled = d.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {decimals} decimals")
    return int(scaled), decimals


@dataclass(frozen=True)
class Feedback:
    client: str
    index: int
    value: int
    value_decimals: int
    tag1: str
    tag2: str
    revoked: bool

    @property
    def decimal(self) -> Decimal:
        return Decimal(self.value).scaleb(-self.value_decimals)


@dataclass(frozen=True)
class Summary:
    count: int
    value: int
    value_decimals: int

    @property
    def decimal(self) -> Decimal:
        return Decimal(self.value).scaleb(-self.value_decimals)


class ReputationRegistry(_Bound):
    """ERC-8004 reputation: feedback, revocation, responses and summaries."""

    NAME = "ReputationRegistry"

    def give_feedback(
        self, client: LocalAccount, agent_id: int, value: int | Decimal | str, *,
        decimals: int | None = None, tag1: str = "", tag2: str = "", endpoint: str = "",
        feedback_uri: str = "", feedback_hash: bytes = bytes(32),
    ) -> int:
        """Leave feedback; returns its 1-based index for (agent, client)."""
        raw, dec = fixed_point(value, decimals)
        receipt = self._send(client, self.contract.functions.giveFeedback(
            agent_id, raw, dec, tag1, tag2, endpoint, feedback_uri, feedback_hash))
        (event,) = _events(self.contract, "NewFeedback", receipt)
        return int(event["args"]["feedbackIndex"])

    def revoke_feedback(self, client: LocalAccount, agent_id: int, index: int) -> TxReceipt:
        return self._send(client, self.contract.functions.revokeFeedback(agent_id, index))

    def append_response(
        self, responder: LocalAccount, agent_id: int, client: str, index: int,
        response_uri: str, response_hash: bytes = bytes(32),
    ) -> TxReceipt:
        return self._send(responder, self.contract.functions.appendResponse(
            agent_id, _addr(client), index, response_uri, response_hash))

    def read_feedback(self, agent_id: int, client: str, index: int) -> Feedback:
        value, dec, tag1, tag2, revoked = self.contract.functions.readFeedback(
            agent_id, _addr(client), index).call()
        return Feedback(_addr(client), index, int(value), int(dec), tag1, tag2, bool(revoked))

    def read_all(
        self, agent_id: int, clients: Sequence[str] = (), *, tag1: str = "", tag2: str = "",
        include_revoked: bool = False,
    ) -> list[Feedback]:
        cols = self.contract.functions.readAllFeedback(
            agent_id, [_addr(c) for c in clients], tag1, tag2, include_revoked).call()
        return [Feedback(_addr(c), int(i), int(v), int(d), t1, t2, bool(r))
                for c, i, v, d, t1, t2, r in zip(*cols, strict=True)]

    def summary(self, agent_id: int, clients: Sequence[str], *, tag1: str = "", tag2: str = ""
                ) -> Summary:
        """Average of the named clients' live feedback (clients are required: Sybils)."""
        count, value, dec = self.contract.functions.getSummary(
            agent_id, [_addr(c) for c in clients], tag1, tag2).call()
        return Summary(int(count), int(value), int(dec))

    def clients(self, agent_id: int) -> list[str]:
        return [_addr(c) for c in self.contract.functions.getClients(agent_id).call()]

    def last_index(self, agent_id: int, client: str) -> int:
        return int(self.contract.functions.getLastIndex(agent_id, _addr(client)).call())

    def response_count(
        self, agent_id: int, client: str | None = None, index: int = 0,
        responders: Sequence[str] = (),
    ) -> int:
        return int(self.contract.functions.getResponseCount(
            agent_id, _addr(client or ZERO_ADDRESS), index, [_addr(r) for r in responders]
        ).call())


def chain_time(chain: Chain) -> int:
    """The latest block's timestamp: deadlines are checked against it, not our clock."""
    return int(chain.w3.eth.get_block("latest")["timestamp"])


__all__ = [
    "AGENT_WALLET_TYPES", "CONTRACTS", "DEFAULT_ACTIVITY_WINDOW", "Agent", "AgentFactory",
    "AgentInfo", "AgentRegistry", "AgentSuite", "CuratedAgentRegistry", "FactoryCardSource",
    "Feedback", "IdentityRegistry", "Rating", "ReputationRegistry", "SuiteAddresses", "Summary",
    "chain_time", "explain_revert", "fixed_point", "send",
]
