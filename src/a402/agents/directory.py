"""Registering, finding and rating agents on-chain: what ``a402 agents`` and the demo share.

The chain is the directory. An agent is genuine when the ``AgentFactory``
says so; it is *listed* when its owner enrolled it in a registry; its ERC-8004
identity is *linked* to it when the identity carries the agent's address under
:data:`LINK_KEY` **and** both have the same owner (anyone can mint an identity
naming any agent, so a link without the owner check would let a stranger
attach reputation, or a bad name, to someone else's agent).

Search runs against an indexer when one is given, or against the chain
itself by reading the factory's (or a registry's) pages. An indexer only
*finds*: every hit is re-read from the chain and the filters are re-applied
to the on-chain card, so an indexer that lies about a price, a network or a
skill loses the hit instead of misleading the caller.

Two kinds of rating exist, and they answer different questions:

- ``Agent.rate`` (contract ratings, 0–100): only an agent that paid this one
  *through its till* (``pay``/``payToken``/``payWithAuthorization`` naming the
  payer agent) may rate it, once, replaceably. Sybil-resistant, so the
  on-chain search's ``min_rating`` filter uses it.
- ERC-8004 feedback (``ReputationRegistry.giveFeedback``): anyone but the
  owner may leave it; readers choose whose feedback counts. An x402 payment
  settled by a facilitator moves the token straight to ``payTo`` and is not
  attributed to a payer agent, so after a paid A2A task this is the rating
  that can be left; :func:`give_feedback` attaches the settlement as
  ``proofOfPayment`` after checking it on-chain (:func:`payment_proof`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from a402.agents.card import Interface, InvalidCard, OnchainCard, Payment, Skill
from a402.agents.onchain import (
    Agent,
    AgentSuite,
    SuiteAddresses,
    chain_time,
)
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.evm.address import address_key
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object

SUITE_CONTRACTS: Final = {
    "renderer": "AgentCardRenderer",
    "implementation": "Agent",
    "factory": "AgentFactory",
    "registry": "AgentRegistry",
    "curated_registry": "CuratedAgentRegistry",
    "identity": "IdentityRegistry",
    "reputation": "ReputationRegistry",
    "validation": "ValidationRegistry",
}
"""Where each suite address lives in a manifest's ``contracts`` (named like ``TestUSDC``);
a manifest written before the ValidationRegistry existed may lack that one."""
OPTIONAL_SUITE_CONTRACTS: Final = frozenset({"ValidationRegistry"})

PAYMENT_DESCRIPTION: Final = "Payment per task with x402 (exact, EIP-3009) in task metadata."
"""What ``PaidAgent`` says about its x402 extension; a card registered from flags uses the
same words so that the card a ``PaidAgent`` serves and the chain's card match byte for byte."""

REGISTRATION_TYPE: Final = "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
LINK_KEY: Final = "agentContract"
"""ERC-8004 metadata key whose value (20 packed bytes, as ``agentWallet`` is stored) is the
Agent contract an identity stands for; the indexer reads the same key, with the same owner rule."""
RATING_TAG: Final = "starred"
"""ERC-8004's suggested ``tag1`` for a 0–100 quality score."""

Source = Literal["factory", "registry", "curated"]


class NoAgentSuite(LookupError):
    """The manifest names no agent contracts (run ``a402 agents deploy`` first)."""


# --------------------------------------------------------------------------- manifest


def suite_addresses(manifest: Manifest) -> SuiteAddresses:
    missing = [name for name in SUITE_CONTRACTS.values()
               if name not in manifest.contracts and name not in OPTIONAL_SUITE_CONTRACTS]
    if missing:
        raise NoAgentSuite(f"the manifest has no {', '.join(missing)}: "
                           "deploy the agent contracts with `a402 agents deploy`")
    return SuiteAddresses.from_dict(
        {field: manifest.contracts[name] for field, name in SUITE_CONTRACTS.items()
         if name in manifest.contracts})


def with_suite(manifest: Manifest, addresses: SuiteAddresses) -> Manifest:
    """``manifest`` with the suite's addresses added to its ``contracts`` (others kept)."""
    contracts = dict(manifest.contracts)
    for field, name in SUITE_CONTRACTS.items():
        if getattr(addresses, field):
            contracts[name] = getattr(addresses, field)
    return dataclasses.replace(manifest, contracts=contracts)


def open_suite(chain: Chain, manifest: Manifest) -> AgentSuite:
    return AgentSuite(chain, suite_addresses(manifest))


# ------------------------------------------------------------------------------ cards


def a2a_interfaces(url: str) -> tuple[Interface, ...]:
    """JSON-RPC at ``url`` in A2A 1.0 and 0.3, the two interfaces a ``PaidAgent`` serves."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidCard(f"url must be an absolute http(s) URL, got {url!r}")
    return (Interface(url, "JSONRPC", "1.0"), Interface(url, "JSONRPC", "0.3"))


def parse_skill(spec: str, default_description: str = "") -> Skill:
    """A skill from ``ID[:NAME[:DESCRIPTION[:TAG,TAG…]]]`` or an A2A skill JSON object.

    The short form is for the command line; name defaults to the id, the
    description to the agent's, the tags to the id (A2A 1.0 wants one tag).
    With four or more fields the last is the tags and the middle ones, joined
    back with ``:``, the description.
    """
    text = spec.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidCard(f"skill JSON is malformed: {e}") from None
        card = OnchainCard.from_a2a({
            "name": "x", "version": "x", "skills": [data],
            "supportedInterfaces": [{"url": "x", "protocolBinding": "x", "protocolVersion": "x"}],
        })
        return card.skills[0]
    fields = text.split(":")
    if not fields[0]:
        raise InvalidCard(f"a skill needs an id: {spec!r}")
    skill_id = fields[0]
    name = fields[1] if len(fields) > 1 and fields[1] else skill_id
    if len(fields) >= 4:
        description = ":".join(fields[2:-1])
        tags = tuple(t.strip() for t in fields[-1].split(",") if t.strip())
    else:
        description = fields[2] if len(fields) == 3 else ""
        tags = ()
    return Skill(skill_id, name, description or default_description, tags or (skill_id,))


# ----------------------------------------------------------------------- ERC-8004 link


@dataclass(frozen=True)
class Identity:
    """An agent's ERC-8004 identity."""

    agent_id: int
    agent_registry: str
    agent_uri: str
    wallet: str | None

    def to_json(self) -> dict[str, Any]:
        return {"agentId": self.agent_id, "agentRegistry": self.agent_registry,
                "agentURI": self.agent_uri, "agentWallet": self.wallet}


def card_url(card: OnchainCard) -> str:
    """Where the agent serves its card: ``/.well-known/agent-card.json`` at its origin."""
    parts = urlsplit(card.interfaces[0].url)
    return f"{parts.scheme}://{parts.netloc}/.well-known/agent-card.json"


def registration_file(
    card: OnchainCard, *, agent_id: int, agent_registry: str, active: bool = True
) -> dict[str, Any]:
    """The ERC-8004 registration file for an agent publishing ``card`` (spec §4.2 shape)."""
    versions = sorted({i.protocol_version for i in card.interfaces}, reverse=True)
    return {
        "type": REGISTRATION_TYPE,
        "name": card.name,
        "description": card.description,
        "services": [{"name": "A2A", "endpoint": card_url(card), "version": versions[0]}],
        "x402Support": card.payment is not None,
        "active": active,
        "registrations": [{"agentId": agent_id, "agentRegistry": agent_registry}],
        "supportedTrust": ["reputation"],
    }


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes a data URI carries and a hash commits to."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def data_uri(document: Mapping[str, Any]) -> str:
    """``data:application/json;base64,…`` of :func:`document_bytes`: an agentURI needing no host."""
    return "data:application/json;base64," + base64.b64encode(document_bytes(document)).decode()


def read_data_uri(uri: str) -> dict[str, Any] | None:
    """The JSON object in a ``data:application/json;base64`` URI; None for any other URI."""
    prefix = "data:application/json;base64,"
    if not uri.startswith(prefix):
        return None
    try:  # anyone registering writes this: decoded within bounds
        return loads_object(base64.b64decode(uri[len(prefix):], validate=True))
    except (ValueError, WireError):
        return None


def register_identity(
    suite: AgentSuite, owner: LocalAccount, agent: Agent, *, agent_uri: str | None = None
) -> Identity:
    """Mint an ERC-8004 identity for ``agent`` (owned by ``owner``) and link it.

    Two transactions when no ``agent_uri`` is given: the registration file
    names the new ``agentId``, which exists only after the mint.
    """
    if agent.owner() != owner.address:
        raise PermissionError(f"{owner.address} does not own {agent.address}")
    identity = suite.identity
    agent_id = identity.register(owner, agent_uri or "",
                                 {LINK_KEY: bytes.fromhex(agent.address[2:])})
    if agent_uri is None:
        agent_uri = data_uri(registration_file(
            agent.card(), agent_id=agent_id, agent_registry=identity.agent_registry))
        identity.set_agent_uri(owner, agent_id, agent_uri)
    return Identity(agent_id, identity.agent_registry, agent_uri, identity.agent_wallet(agent_id))


def link_candidates(suite: AgentSuite) -> dict[str, list[int]]:
    """Every agent address some identity ever claimed under :data:`LINK_KEY` → those ids,
    newest first, from the ``MetadataSet`` logs (one query for the whole registry).

    Claims only: :func:`linked_identity` checks one against current state.
    """
    identity = suite.identity
    event = identity.contract.events.MetadataSet
    topic = "0x" + keccak(text="MetadataSet(uint256,string,string,bytes)").hex()
    key_topic = "0x" + keccak(text=LINK_KEY).hex()
    logs = suite.chain.w3.eth.get_logs({
        "address": identity.address, "fromBlock": 0, "toBlock": "latest",
        "topics": [topic, None, key_topic],
    })
    claims: dict[str, set[int]] = {}
    for log in logs:
        args = event().process_log(log)["args"]
        value = bytes(args["metadataValue"])
        if len(value) == 20:
            claims.setdefault(to_checksum_address(value), set()).add(int(args["agentId"]))
    return {agent: sorted(ids, reverse=True) for agent, ids in claims.items()}


def linked_identity(suite: AgentSuite, agent: Agent, agent_id: int) -> Identity | None:
    """``agent_id`` as ``agent``'s identity, if it links to it now and has the same owner."""
    identity = suite.identity
    try:
        linked = identity.get_metadata(agent_id, LINK_KEY) == bytes.fromhex(agent.address[2:])
        same_owner = linked and identity.owner_of(agent_id) == agent.owner()
    except Exception:  # burned or otherwise unreadable: not a link
        return None
    if not same_owner:
        return None
    return Identity(agent_id, identity.agent_registry, identity.agent_uri(agent_id),
                    identity.agent_wallet(agent_id))


def find_identity(
    suite: AgentSuite, agent: Agent, candidates: Mapping[str, Sequence[int]] | None = None
) -> Identity | None:
    """The newest ERC-8004 identity linked to ``agent`` whose owner is the agent's owner.

    ``candidates`` (from :func:`link_candidates`) saves the log query when
    looking up several agents.
    """
    claims = link_candidates(suite) if candidates is None else candidates
    for agent_id in claims.get(agent.address, ()):
        found = linked_identity(suite, agent, agent_id)
        if found is not None:
            return found
    return None


def refresh_identity(suite: AgentSuite, owner: LocalAccount, agent: Agent) -> Identity | None:
    """After a card change: rewrite a generated registration file that no longer matches.

    Only a ``data:`` URI of our own making is rewritten; a hosted file (https,
    ipfs) is the owner's to update. Returns the identity if it was rewritten.
    """
    found = find_identity(suite, agent)
    if found is None:
        return None
    current = read_data_uri(found.agent_uri)
    if current is None or current.get("type") != REGISTRATION_TYPE:
        return None
    fresh = registration_file(agent.card(), agent_id=found.agent_id,
                              agent_registry=found.agent_registry,
                              active=bool(current.get("active", True)))
    if fresh == current:
        return None
    uri = data_uri(fresh)
    suite.identity.set_agent_uri(owner, found.agent_id, uri)
    return dataclasses.replace(found, agent_uri=uri)


# ------------------------------------------------------------------------------ search


@dataclass(frozen=True)
class Query:
    """What a caller looks for; ``None``/``False`` means "any".

    ``max_price`` is in atomic units of the card's asset (free agents always
    pass); ``network`` is a CAIP-2 id (free agents pass: they need no network);
    ``min_rating`` is the contract rating average, 0–100 (unrated agents fail
    any positive minimum).
    """

    skill: str | None = None
    text: str | None = None
    max_price: int | None = None
    network: str | None = None
    active: bool = False
    min_rating: float | None = None

    def indexer_params(self) -> dict[str, str]:
        """The indexer's ``GET /agents`` query parameters for this query."""
        params: dict[str, str] = {}
        if self.skill:
            params["skill"] = self.skill
        if self.text:
            params["q"] = self.text
        if self.max_price is not None:
            params["max_price"] = str(self.max_price)
        if self.network:
            params["network"] = self.network
        if self.min_rating is not None:
            params["min_reputation"] = f"{self.min_rating:g}"
        if self.active:
            params["active"] = "true"
        return params


@dataclass(frozen=True)
class AgentView:
    """What search needs to know of one agent, read from the chain."""

    address: str
    card: OnchainCard
    card_hash: bytes
    active: bool
    ratings: int
    rating_sum: int
    found_in: str = ""
    """How it was found: ``"AgentRegistry#3"`` (listing position), ``"indexer #1"``…"""

    @property
    def average_rating(self) -> float | None:
        return self.rating_sum / self.ratings if self.ratings else None

    def mismatch(self, query: Query) -> str | None:
        """Why this agent fails ``query`` (None if it passes)."""
        card, pay = self.card, self.card.payment
        if query.skill and not any(_skill_matches(s, query.skill) for s in card.skills):
            return f"no skill {query.skill!r}"
        if query.text and query.text.casefold() not in _searchable(card):
            return f"no text {query.text!r}"
        if query.max_price is not None and pay is not None and pay.amount > query.max_price:
            return f"price {pay.amount} above {query.max_price}"
        if query.network and pay is not None and pay.network != query.network:
            return f"network {pay.network}"
        if query.active and not self.active:
            return "inactive"
        if query.min_rating is not None and query.min_rating > 0 and (
            self.average_rating is None or self.average_rating < query.min_rating
        ):
            return f"rating {self.average_rating} below {query.min_rating:g}"
        return None

    def to_json(self) -> dict[str, Any]:
        pay = self.card.payment
        return {
            "agent": self.address, "name": self.card.name, "description": self.card.description,
            "skills": [s.id for s in self.card.skills],
            "terms": payment_json(pay),
            "active": self.active, "cardHash": "0x" + self.card_hash.hex(),
            "ratings": {"count": self.ratings, "average": self.average_rating},
            "foundIn": self.found_in,
        }


def payment_json(pay: Payment | None) -> dict[str, Any] | None:
    if pay is None:
        return None
    return {"scheme": pay.scheme, "network": pay.network, "asset": pay.asset,
            "amount": str(pay.amount), "payTo": pay.pay_to}


def _skill_matches(skill: Skill, wanted: str) -> bool:
    w = wanted.casefold()
    return skill.id.casefold() == w or any(t.casefold() == w for t in skill.tags)


def _searchable(card: OnchainCard) -> str:
    parts = [card.name, card.description]
    for s in card.skills:
        parts += [s.id, s.name, s.description, *s.tags]
    return "\n".join(parts).casefold()


def view_of(agent: Agent, found_in: str = "") -> AgentView:
    """Read one agent for search. The hash is computed here from the card the chain
    returned: ``card.py`` renders the very bytes ``cardJSON()`` does (tested against the
    contract), and the on-chain render costs far more than everything else read here."""
    count, total = agent.rating_summary()
    card = agent.card()
    return AgentView(agent.address, card, card.card_hash(), agent.is_active(), count, total,
                     found_in)


def listing(suite: AgentSuite, source: Source) -> tuple[str, Iterable[str]]:
    """(contract name, its agents page by page) for a search source."""
    if source == "factory":
        return "AgentFactory", suite.factory.all()
    if source == "registry":
        return "AgentRegistry", suite.registry.all()
    if source == "curated":
        return "CuratedAgentRegistry", suite.curated_registry.all()
    raise ValueError(f"unknown source {source!r}")


def search_chain(
    suite: AgentSuite, query: Query, *, source: Source = "factory", limit: int | None = None
) -> list[AgentView]:
    """Agents matching ``query`` in listing order, read straight from the chain (no indexer).

    Every listed agent is read (a handful of calls each): fine for a devnet or
    a small directory; a large one wants the indexer.
    """
    name, agents = listing(suite, source)
    hits = []
    for position, address in enumerate(agents):
        found = view_of(suite.agent(address), f"{name}#{position}")
        if found.mismatch(query) is None:
            hits.append(found)
            if limit is not None and len(hits) >= limit:
                break
    return hits


class IndexerError(Exception):
    """The indexer could not be reached or answered something unusable."""


INDEXER_PAGE: Final = 100
"""``limit`` per ``GET /agents`` page (the a402 indexer's maximum)."""
INDEXER_MAX_PAGES: Final = 50


def indexer_addresses(
    url: str, query: Query, *, want: int | None = None, registry: str | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """The agents an indexer's ``GET /agents`` returns for ``query``, in its order.

    Speaks the a402 indexer's API: ``{"agents": [{"address": …}, …], "next_cursor": …}``,
    followed page by page (``limit``/``cursor``) until ``want`` addresses or the last
    page. ``registry`` is its listing filter (``open``, ``curated`` or an address).
    Also accepted, for other indexers: a bare JSON list, or the list under ``results``/
    ``items``; entries may be address strings or objects with ``agent``. Nothing but the
    addresses is used: the chain is re-read (:func:`verify_hits`).
    """
    endpoint = url.rstrip("/") + "/agents"
    params = {**query.indexer_params(), "limit": str(INDEXER_PAGE)}
    if registry:
        params["registry"] = registry
    out: list[str] = []
    for _ in range(INDEXER_MAX_PAGES):
        data = _indexer_page(endpoint, params, timeout)
        cursor = data.get("next_cursor") if isinstance(data, dict) else None
        if isinstance(data, dict):
            data = next((data[k] for k in ("agents", "results", "items") if k in data), None)
        if not isinstance(data, list):
            raise IndexerError(f"{endpoint} answered no list of agents")
        for entry in data:
            address = (entry.get("address") or entry.get("agent")) if isinstance(entry, dict) \
                else entry
            if not isinstance(address, str):
                raise IndexerError(f"{endpoint} answered an entry without an address: {entry!r}")
            try:
                out.append(to_checksum_address(address))
            except ValueError as e:
                raise IndexerError(f"{endpoint} answered a malformed address {address!r}") from e
        if not cursor or (want is not None and len(out) >= want):
            break
        params["cursor"] = str(cursor)
    return out


def _indexer_page(endpoint: str, params: Mapping[str, str], timeout: float) -> Any:
    try:
        response = httpx.get(endpoint, params=params, timeout=timeout)
    except httpx.HTTPError as e:
        raise IndexerError(f"cannot reach the indexer at {endpoint}: {e!r}") from e
    if response.status_code != 200:
        raise IndexerError(f"{endpoint} answered HTTP {response.status_code}: "
                           f"{response.text[:200]}")
    try:
        return response.json()
    except ValueError as e:
        raise IndexerError(f"{endpoint} did not answer JSON") from e


def verify_hits(
    suite: AgentSuite, addresses: Sequence[str], query: Query, *, source: str = "indexer"
) -> tuple[list[AgentView], list[tuple[str, str]]]:
    """Re-read each indexer hit from the chain and re-apply what the card decides: skill,
    price, network, liveness. Not the text match (an indexer ranks words its own way) nor
    the reputation (its own definition): those are the indexer's word.

    Returns (kept, dropped with the reason), kept in the indexer's order.
    """
    on_chain = dataclasses.replace(query, text=None, min_rating=None)
    kept, dropped = [], []
    seen: set[str] = set()
    for position, address in enumerate(addresses):
        if address in seen:
            continue
        seen.add(address)
        if not suite.factory.is_agent(address):
            dropped.append((address, "not an agent of this factory"))
            continue
        found = view_of(suite.agent(address), f"{source}#{position}")
        why = found.mismatch(on_chain)
        if why is None:
            kept.append(found)
        else:
            dropped.append((address, f"on-chain card: {why}"))
    return kept, dropped


# --------------------------------------------------------------------- rating & proofs

TRANSFER_TOPIC: Final = keccak(text="Transfer(address,address,uint256)")


@dataclass(frozen=True)
class PaymentProof:
    """A mined token transfer from a payer to an agent's ``payTo`` (ERC-8004 ``proofOfPayment``)."""

    tx_hash: str
    payer: str
    pay_to: str
    asset: str
    amount: int
    chain_id: int

    def to_json(self) -> dict[str, Any]:
        return {"fromAddress": self.payer, "toAddress": self.pay_to,
                "chainId": str(self.chain_id), "txHash": self.tx_hash}


class NoPayment(ValueError):
    """The transaction does not show the claimed payment."""


def payment_proof(chain: Chain, tx_hash: str, *, payer: str, payment: Payment) -> PaymentProof:
    """Check that ``tx_hash`` is mined, succeeded, and moved ``payment.asset`` from
    ``payer`` to ``payment.pay_to``; the proof carries the amount that moved.

    Feedback that claims a payment should not be believable on the rater's
    word: this reads the receipt's Transfer logs, the same evidence a reader
    of the feedback would check.
    """
    try:
        receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except Exception as e:
        raise NoPayment(f"no mined transaction {tx_hash}") from e
    if receipt["status"] != 1:
        raise NoPayment(f"transaction {tx_hash} reverted")
    amount = 0
    for log in receipt["logs"]:
        topics = log["topics"]
        if (address_key(log["address"]) == address_key(payment.asset) and len(topics) == 3
                and bytes(topics[0]) == TRANSFER_TOPIC
                and bytes(topics[1])[-20:] == bytes.fromhex(payer[2:])
                and bytes(topics[2])[-20:] == bytes.fromhex(payment.pay_to[2:])):
            amount += int.from_bytes(bytes(log["data"]), "big")
    if amount == 0:
        raise NoPayment(f"transaction {tx_hash} moved no {payment.asset} from {payer} "
                        f"to {payment.pay_to}")
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    return PaymentProof(tx, to_checksum_address(payer), payment.pay_to, payment.asset, amount,
                        chain.chain_id)


@dataclass(frozen=True)
class FeedbackGiven:
    agent_id: int
    index: int
    value: int
    feedback_uri: str
    feedback_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {"agentId": self.agent_id, "feedbackIndex": self.index, "value": self.value,
                "valueDecimals": 0, "tag1": RATING_TAG, "feedbackURI": self.feedback_uri,
                "feedbackHash": "0x" + self.feedback_hash.hex()}


def give_feedback(
    suite: AgentSuite, client: LocalAccount, identity: Identity, card: OnchainCard, score: int,
    *, comment: str = "", proof: PaymentProof | None = None, skill: str = "",
    task: Mapping[str, str] | None = None,
) -> FeedbackGiven:
    """ERC-8004 feedback (``starred``, 0–100) with its off-chain file inline as a data URI.

    The file holds the spec's required fields, the A2A skill/task it is about
    and the ``proofOfPayment``; its keccak-256 is the on-chain ``feedbackHash``,
    so the file cannot be swapped for another afterwards.
    """
    if not 0 <= score <= 100:
        raise ValueError("a score is 0..100")
    chain = suite.chain
    created = datetime.fromtimestamp(chain_time(chain), UTC)
    document: dict[str, Any] = {
        "agentRegistry": identity.agent_registry,
        "agentId": identity.agent_id,
        "clientAddress": f"{chain.network}:{client.address}",
        "createdAt": created.isoformat().replace("+00:00", "Z"),
        "value": score,
        "valueDecimals": 0,
        "tag1": RATING_TAG,
        "endpoint": card.interfaces[0].url,
    }
    if skill:
        document["tag2"] = skill
    if skill or task:
        document["a2a"] = {**({"skills": [skill]} if skill else {}), **dict(task or {})}
    if proof is not None:
        document["proofOfPayment"] = proof.to_json()
    if comment:
        document["comment"] = comment
    uri, digest = data_uri(document), keccak(document_bytes(document))
    index = suite.reputation.give_feedback(
        client, identity.agent_id, score, decimals=0, tag1=RATING_TAG, tag2=skill,
        endpoint=card.interfaces[0].url, feedback_uri=uri, feedback_hash=digest,
    )
    return FeedbackGiven(identity.agent_id, index, score, uri, digest)


__all__ = [
    "LINK_KEY",
    "PAYMENT_DESCRIPTION",
    "RATING_TAG",
    "REGISTRATION_TYPE",
    "SUITE_CONTRACTS",
    "AgentView",
    "FeedbackGiven",
    "Identity",
    "IndexerError",
    "NoAgentSuite",
    "NoPayment",
    "PaymentProof",
    "Query",
    "a2a_interfaces",
    "card_url",
    "data_uri",
    "document_bytes",
    "find_identity",
    "give_feedback",
    "indexer_addresses",
    "link_candidates",
    "linked_identity",
    "listing",
    "open_suite",
    "parse_skill",
    "payment_json",
    "payment_proof",
    "read_data_uri",
    "refresh_identity",
    "register_identity",
    "registration_file",
    "search_chain",
    "suite_addresses",
    "verify_hits",
    "view_of",
    "with_suite",
]
