"""The events the indexer follows, and a decoder fast enough for catch-up (pure).

Why not web3's event processing: it checksums every address and builds
AttributeDicts, ~100 µs a log; catch-up applies hundreds of thousands of logs.
Here each followed event gets a decoder precomputed from the committed ABI
(``a402.chain.artifacts``), keyed by ``(source, topic0)``, that slices 32-byte
words directly: static values from topics and the data head, ``string`` and
``bytes`` through their offset. Addresses come out lowercase (the store's
canonical form; the API checksums on the way out), integers as ``int``,
``bytes``/``bytes32`` as ``0x`` hex, and an indexed dynamic value (only its
hash is logged) as that hash.

A "source" is the kind of contract that emitted the log; the sync loop knows it
from the log's address (the factory, a registry, the ERC-8004 registries, or an
agent clone). Two sources may share a topic (``OwnershipTransferred`` of an
agent and of the curated registry): the source decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from eth_utils import keccak

from a402.chain.artifacts import load_artifact

FOLLOWED: Final[Mapping[str, tuple[str, frozenset[str]]]] = {
    # source: (artifact whose ABI declares the events, event names followed)
    "agent": ("Agent", frozenset({
        "OwnershipTransferred", "ActivityWindowSet", "ProfileUpdated", "VersionUpdated",
        "CapabilitiesUpdated", "PaymentTermsUpdated", "Heartbeat", "EnabledSet",
        "TokenAcceptanceSet", "Paid", "PaidAgent", "Withdrawn", "Rated", "RatingWithdrawn",
    })),
    "factory": ("AgentFactory", frozenset({"AgentCreated"})),
    # The curated registry's ABI is a superset of the open one's (AgentListed/AgentDelisted).
    "registry": ("CuratedAgentRegistry", frozenset({"AgentListed", "AgentDelisted"})),
    "identity": ("IdentityRegistry", frozenset({
        "Registered", "URIUpdated", "MetadataSet", "Transfer"})),
    "reputation": ("ReputationRegistry", frozenset({
        "NewFeedback", "FeedbackRevoked", "ResponseAppended"})),
    "validation": ("ValidationRegistry", frozenset({"ValidationRequest", "ValidationResponse"})),
}


class UndecodableLog(ValueError):
    """A log whose topics or data do not fit the event's ABI."""


Decoded = dict[str, Any]


@dataclass(frozen=True)
class EventSpec:
    source: str
    name: str
    signature: str
    topic0: str  # 0x-prefixed lowercase hex
    decode: Callable[[Sequence[str], str], Decoded]


def _static(abi_type: str) -> Callable[[bytes], Any]:
    if abi_type == "address":
        return lambda w: "0x" + w[12:].hex()
    if abi_type == "bool":
        return lambda w: w[31] != 0
    if abi_type.startswith("uint"):
        return lambda w: int.from_bytes(w, "big")
    if abi_type.startswith("int"):
        return lambda w: int.from_bytes(w, "big", signed=True)
    if abi_type.startswith("bytes") and abi_type != "bytes":
        size = int(abi_type[5:])
        return lambda w: "0x" + w[:size].hex()
    raise NotImplementedError(f"the indexer's decoder has no rule for {abi_type}")


def _make_decoder(inputs: Sequence[Mapping[str, Any]]) -> Callable[[Sequence[str], str], Decoded]:
    indexed: list[tuple[str, Callable[[bytes], Any] | None]] = []
    data: list[tuple[str, str, Callable[[bytes], Any] | None]] = []
    for item in inputs:
        kind = item["type"]
        dynamic = kind in ("string", "bytes") or kind.endswith("[]")
        if item["indexed"]:
            # An indexed dynamic value is only its keccak hash: keep the hash.
            indexed.append((item["name"], None if dynamic else _static(kind)))
        else:
            data.append((item["name"], kind, None if dynamic else _static(kind)))
    head = 32 * len(data)

    def decode(topics: Sequence[str], hexdata: str) -> Decoded:
        if len(topics) != len(indexed) + 1:
            raise UndecodableLog(f"expected {len(indexed) + 1} topics, got {len(topics)}")
        out: Decoded = {}
        for (name, conv), topic in zip(indexed, topics[1:], strict=True):
            word = bytes.fromhex(topic[2:])
            if len(word) != 32:
                raise UndecodableLog("a topic is not 32 bytes")
            out[name] = "0x" + word.hex() if conv is None else conv(word)
        raw = bytes.fromhex(hexdata[2:]) if len(hexdata) > 2 else b""
        if len(raw) < head:
            raise UndecodableLog(f"data is {len(raw)} bytes, the head alone needs {head}")
        for i, (name, kind, conv) in enumerate(data):
            word = raw[32 * i:32 * i + 32]
            if conv is not None:
                out[name] = conv(word)
                continue
            offset = int.from_bytes(word, "big")
            if offset + 32 > len(raw):
                raise UndecodableLog(f"{name}: offset out of range")
            length = int.from_bytes(raw[offset:offset + 32], "big")
            if offset + 32 + length > len(raw):
                raise UndecodableLog(f"{name}: length out of range")
            value = raw[offset + 32:offset + 32 + length]
            out[name] = value.decode("utf-8", "replace") if kind == "string" else "0x" + value.hex()
        return out

    return decode


@cache
def event_specs() -> dict[tuple[str, str], EventSpec]:
    """``(source, topic0) → EventSpec`` for every followed event, from the committed ABIs."""
    specs: dict[tuple[str, str], EventSpec] = {}
    for source, (artifact, names) in FOLLOWED.items():
        found = set()
        for item in load_artifact(artifact).abi:
            if item.get("type") != "event" or item["name"] not in names:
                continue
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            topic0 = "0x" + keccak(text=signature).hex()
            specs[(source, topic0)] = EventSpec(source, item["name"], signature, topic0,
                                                _make_decoder(item["inputs"]))
            found.add(item["name"])
        if missing := names - found:
            raise RuntimeError(f"{artifact} ABI lacks followed events {sorted(missing)}")
    return specs


@cache
def topics_of(source: str) -> tuple[str, ...]:
    """The topic0 values followed for ``source``, for an ``eth_getLogs`` topic filter."""
    return tuple(sorted(t for (s, t) in event_specs() if s == source))


def decode_log(source: str, topics: Sequence[str], data: str) -> tuple[str, Decoded] | None:
    """(event name, arguments) of a log from ``source``; None if the topic is not followed."""
    if not topics:
        return None
    spec = event_specs().get((source, topics[0].lower()))
    if spec is None:
        return None
    return spec.name, spec.decode(topics, data)


__all__ = ["FOLLOWED", "EventSpec", "UndecodableLog", "decode_log", "event_specs", "topics_of"]
