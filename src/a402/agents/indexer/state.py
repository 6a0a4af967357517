"""What the indexer derives from an entity's events: one fold for catch-up and replay (pure).

Two kinds of entity carry state that later events overwrite:

- an **agent** contract (keyed by its lowercase address): its card, owner,
  liveness, accepted tokens and registry listings, from its own events plus
  the factory's ``AgentCreated`` and the registries' ``AgentListed`` /
  ``AgentDelisted``;
- an **ERC-8004 identity** (keyed ``id:<agentId>``): owner, ``agentURI``,
  wallet and metadata, from the identity registry's events.

Both are folds: ``state = fold(state, event)`` in chain order. The store keeps
every such event (``state_logs``), so after a reorganisation an entity's state
is rebuilt by folding the events that remain; catch-up folds new events onto
the stored state. One function serves both, so the two paths cannot disagree.
Everything else the chain tells us (payments, ratings, feedback) is append-only
and needs no fold.

Liveness follows ``Agent.sol`` exactly: the owner is "seen" by ``initialize``
and by every owner-only call, and each of those emits one of
:data:`ACTIVITY_EVENTS`; ownership moves (``transferOwnership`` /
``acceptOwnership``) and incoming money do not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from a402.agents.card import InvalidCard, Profile, profile_from_code

ZERO: Final = "0x" + "00" * 20

ACTIVITY_EVENTS: Final = frozenset({
    "ActivityWindowSet", "ProfileUpdated", "VersionUpdated", "CapabilitiesUpdated",
    "PaymentTermsUpdated", "Heartbeat", "EnabledSet", "TokenAcceptanceSet", "PaidAgent",
    "Withdrawn",
})
"""Events only an owner-only call (or ``initialize``) emits: each means ``lastSeen = now``."""

AGENT_STATE_EVENTS: Final = ACTIVITY_EVENTS | {"OwnershipTransferred", "AgentCreated",
                                               "AgentListed", "AgentDelisted"}
IDENTITY_STATE_EVENTS: Final = frozenset({"Registered", "URIUpdated", "MetadataSet", "Transfer"})

LINK_KEY: Final = "agentContract"
"""ERC-8004 metadata key naming the agent contract an identity speaks for (see
:func:`linked_agent`). The link counts only while the identity's owner also owns
that agent, so nobody can attach feedback to someone else's agent."""

_ADDRESS_AT_END = re.compile(r"(0x[0-9a-fA-F]{40})\s*$")


# ---------------------------------------------------------------------------- agents


@dataclass
class AgentState:
    address: str
    owner: str | None = None
    factory_index: int | None = None
    created_block: int | None = None
    created_at: int | None = None
    revision: int = 0
    profile: dict[str, Any] | None = None
    profile_data: str | None = None
    version: str = ""
    streaming: bool = False
    push_notifications: bool = False
    extended_agent_card: bool = False
    payment: dict[str, str] | None = None
    accepted_tokens: list[str] = field(default_factory=list)
    enabled: bool = True
    activity_window: int = 0
    last_seen: int = 0
    listings: set[str] = field(default_factory=set)
    updated_block: int = 0
    reputation: float = 0.0
    profile_changed: bool = False
    """Transient: the profile changed in this fold (the store re-derives search terms)."""

    @property
    def active_until(self) -> int:
        """Last chain second at which ``isActive()`` holds (-1: disabled or never seen)."""
        if not self.enabled or not self.last_seen:
            return -1
        return self.last_seen + self.activity_window

    @property
    def price(self) -> int | None:
        return int(self.payment["amount"]) if self.payment else None


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """A decoded profile as plain JSON (what the store keeps and the API returns)."""
    return {
        "name": profile.name,
        "description": profile.description,
        "interfaces": [[i.url, i.protocol_binding, i.protocol_version]
                       for i in profile.interfaces],
        "defaultInputModes": list(profile.default_input_modes),
        "defaultOutputModes": list(profile.default_output_modes),
        "skills": [
            {"id": s.id, "name": s.name, "description": s.description, "tags": list(s.tags),
             "examples": list(s.examples), "inputModes": list(s.input_modes),
             "outputModes": list(s.output_modes)}
            for s in profile.skills
        ],
        "paymentDescription": profile.payment_description,
    }


def decode_profile_code(code_hex: str) -> dict[str, Any]:
    """The profile a data contract holds (``0x`` code), or ``{"invalid": reason}``.

    The contract validated the blob before storing it, so an invalid one means a
    node that answered wrongly, or a reorganisation that replaced the data
    contract; the agent is still indexed, its text just is not searchable.
    """
    try:
        return profile_to_dict(profile_from_code(bytes.fromhex(code_hex.removeprefix("0x"))))
    except (InvalidCard, ValueError) as e:
        return {"invalid": str(e)}


def fold_agent(state: AgentState, kind: str, data: Mapping[str, Any], ts: int, block: int) -> None:
    """Apply one event (``data``: the decoded arguments, plus ``profile`` for
    ``ProfileUpdated`` and ``registry`` for listings) to ``state``, in place."""
    state.updated_block = max(state.updated_block, block)
    if kind in ACTIVITY_EVENTS:
        state.last_seen = max(state.last_seen, ts)
    if "revision" in data:
        state.revision = max(state.revision, int(data["revision"]))
    if kind == "OwnershipTransferred":
        state.owner = None if data["newOwner"] == ZERO else data["newOwner"]
    elif kind == "AgentCreated":
        state.factory_index = int(data["index"])
        state.created_block = block
        state.created_at = ts
        state.owner = state.owner or data["owner"]
    elif kind == "ProfileUpdated":
        state.profile = data.get("profile") or {"invalid": "profile not fetched"}
        state.profile_data = data["data"]
        state.profile_changed = True
    elif kind == "VersionUpdated":
        state.version = data["version"]
    elif kind == "CapabilitiesUpdated":
        state.streaming = bool(data["streaming"])
        state.push_notifications = bool(data["pushNotifications"])
        state.extended_agent_card = bool(data["extendedAgentCard"])
    elif kind == "PaymentTermsUpdated":
        if data["payTo"] == ZERO:
            state.payment = None
        else:
            state.payment = {"scheme": data["scheme"], "network": data["network"],
                             "asset": data["asset"], "amount": str(data["amount"]),
                             "payTo": data["payTo"]}
    elif kind == "ActivityWindowSet":
        state.activity_window = int(data["window"])
    elif kind == "EnabledSet":
        state.enabled = bool(data["enabled"])
    elif kind == "TokenAcceptanceSet":
        tokens = set(state.accepted_tokens)
        (tokens.add if data["accepted"] else tokens.discard)(data["token"])
        state.accepted_tokens = sorted(tokens)
    elif kind == "AgentListed":
        state.listings.add(data["registry"])
    elif kind == "AgentDelisted":
        state.listings.discard(data["registry"])


# ------------------------------------------------------------------------ identities


@dataclass
class IdentityState:
    agent_id: str
    owner: str | None = None
    uri: str = ""
    wallet: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    registered_block: int | None = None
    registered_at: int | None = None
    updated_block: int = 0

    @property
    def linked_agent(self) -> str | None:
        return linked_agent(self.metadata.get(LINK_KEY))


def identity_key(agent_id: int | str) -> str:
    return f"id:{agent_id}"


def linked_agent(value_hex: str | None) -> str | None:
    """The agent address in an ``agentContract`` metadata value: 20 packed bytes (as
    ``agentWallet`` is stored), a 32-byte ABI word, or text ending in an address
    (``0x…`` or CAIP-10 ``eip155:<chain>:0x…``)."""
    if not value_hex or len(value_hex) <= 2:
        return None
    raw = bytes.fromhex(value_hex[2:])
    if len(raw) == 20:
        return "0x" + raw.hex()
    if len(raw) == 32 and raw[:12] == bytes(12):
        return "0x" + raw[12:].hex()
    match = _ADDRESS_AT_END.search(raw.decode("utf-8", "replace"))
    return match.group(1).lower() if match else None


def fold_identity(state: IdentityState, kind: str, data: Mapping[str, Any], ts: int, block: int
                  ) -> None:
    state.updated_block = max(state.updated_block, block)
    if kind == "Transfer":
        state.owner = None if data["to"] == ZERO else data["to"]
        if data["from"] == ZERO:
            state.registered_block, state.registered_at = block, ts
    elif kind == "Registered":
        state.uri = data["agentURI"]
        state.owner = state.owner or data["owner"]
    elif kind == "URIUpdated":
        state.uri = data["newURI"]
    elif kind == "MetadataSet":
        key, value = data["metadataKey"], data["metadataValue"]
        if key == "agentWallet":
            state.wallet = "0x" + value[2:][-40:] if len(value) == 42 else None
        elif value == "0x":
            state.metadata.pop(key, None)
        else:
            state.metadata[key] = value


# --------------------------------------------------------------------------- search


_TOKEN = re.compile(r"\w+", re.UNICODE)
MAX_TERM: Final = 64


def text_terms(*texts: str) -> set[str]:
    """Lowercased word tokens (2..64 characters) for full-text search."""
    out: set[str] = set()
    for text in texts:
        for token in _TOKEN.findall(text.lower()):
            if 2 <= len(token) <= MAX_TERM:
                out.add(token)
    return out


def search_terms(profile: Mapping[str, Any] | None) -> set[tuple[str, str]]:
    """(kind, term) rows for an agent: ``t`` words of its name, description and skills
    (names, descriptions, tags, examples); ``s`` skill ids and tags, whole and lowercased."""
    if not profile or "invalid" in profile:
        return set()
    texts = [profile["name"], profile["description"]]
    skills: set[str] = set()
    for s in profile["skills"]:
        texts += [s["id"], s["name"], s["description"], *s["tags"], *s["examples"]]
        skills.update(v.strip().lower()[:200] for v in (s["id"], *s["tags"]) if v.strip())
    return {("t", t) for t in text_terms(*texts)} | {("s", s) for s in skills}


def all_owners(events: Iterable[tuple[str, Mapping[str, Any]]]) -> set[str]:
    """Every address that ever owned an agent, from its ``OwnershipTransferred`` events."""
    out: set[str] = set()
    for kind, data in events:
        if kind == "OwnershipTransferred":
            out.update(a for a in (data["previousOwner"], data["newOwner"]) if a != ZERO)
    return out


__all__ = [
    "ACTIVITY_EVENTS", "AGENT_STATE_EVENTS", "IDENTITY_STATE_EVENTS", "LINK_KEY", "ZERO",
    "AgentState", "IdentityState", "all_owners", "decode_profile_code", "fold_agent",
    "fold_identity", "identity_key", "linked_agent", "profile_to_dict", "search_terms",
    "text_terms",
]
