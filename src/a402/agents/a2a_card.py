"""Comparing the AgentCard an endpoint serves with the one the chain holds.

The chain is the authority: a client that found an agent on-chain must talk to
it only if the card served at the agent's endpoint says exactly what the
on-chain card says. Both are reduced to one canonical form and compared field
by field; any difference is a refusal that names the differing fields.

What must match: **every field of the A2A 1.0 AgentCard data model**, i.e.
``name``, ``description``, ``version``, ``provider``, ``documentationUrl``,
``iconUrl``, every ``supportedInterfaces`` entry (url, protocolBinding,
protocolVersion, tenant), ``capabilities`` (streaming, pushNotifications,
extendedAgentCard and every extension with its ``uri``, ``required``,
``description`` and ``params`` — for x402 the payment terms ``scheme``,
``network``, ``asset``, ``amount``, ``payTo``), ``defaultInputModes``,
``defaultOutputModes``, every skill (id, name, description, tags, examples,
modes, security) and ``securitySchemes`` / ``securityRequirements``.

What is normalised, and why that is safe:

- v0.3 spellings (``url``/``preferredTransport``/``additionalInterfaces``/
  ``protocolVersion``) are read as the interfaces they denote, with versions
  compared as major.minor (``"0.3.0"`` = ``"0.3"``). A served card may carry
  them *next to* ``supportedInterfaces`` (a2a-sdk 1.x does, for v0.3 clients);
  then each must name an interface that ``supportedInterfaces`` lists, else
  the card is refused: a v0.3 client would follow ``url``.
- A field at its default (``false``, ``""``, empty list/object) equals an
  absent one: in the data model they mean the same thing. Extension
  ``params`` are free-form and compared exactly.
- Interfaces, skills and extensions are compared as sets keyed by their
  identity (binding+version+url, ``id``, ``uri``), not by position.

What is ignored: ``signatures`` (a JWS over the card — it attests the content
compared here, and a randomized signature differs on every signing), and JSON
members outside the data model, which no client acting on the card can read.

Against a card in the Agent contract's own form (``Agent.cardJSON()``, modelled
by ``a402.agents.card.OnchainCard``) one more rule applies, and it is stricter:
the served card must render to the *same canonical JSON bytes* — the bytes
``cardHash()`` commits to. There, entry order and version spelling count, and a
served card carrying anything the chain cannot hold (unknown members, other
extensions, provider or security fields) is refused. The field comparison runs
first so that a refusal names the differing fields whenever it can.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from a2a.client.card_resolver import parse_agent_card
from a2a.types import AgentCard
from google.protobuf.json_format import MessageToDict, ParseError

from a402.agents.a2a_x402 import X402_EXTENSION_URIS, PaymentTerms
from a402.agents.card import InvalidCard, OnchainCard
from a402.evm.address import address_key
from a402.wire.errors import WireError
from a402.wire.jsonstrict import loads_object

IGNORED_FIELDS = ("signatures",)
_KEYED_LISTS = {"supportedInterfaces", "skills", "extensions"}


class CardError(Exception):
    """A card that cannot be used (unparseable, unknown agent, not what the chain says)."""


class UnknownAgent(CardError):
    """The card source has no card for this agent."""


class CardMismatch(CardError):
    """The served card differs from the on-chain card; ``differences`` names the fields."""

    def __init__(self, agent: str, differences: list[str]) -> None:
        shown = "; ".join(differences[:10]) + (" ..." if len(differences) > 10 else "")
        super().__init__(f"served card of {agent} differs from the on-chain card: {shown}")
        self.agent = agent
        self.differences = tuple(differences)


class CardSource(Protocol):
    """Where the authoritative card of an agent comes from (the chain, in production).

    ``onchain_card`` returns the card the chain holds as an A2A AgentCard JSON
    object (1.0 or 0.3 form), or raises ``UnknownAgent``. It is synchronous,
    like the web3 reads behind it; async callers run it in a worker thread.
    """

    def onchain_card(self, agent: str) -> Mapping[str, Any]: ...


class InMemoryCardSource:
    """A ``CardSource`` over a dict, for tests and for cards pinned by configuration."""

    def __init__(self, cards: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._cards = {address_key(k): copy.deepcopy(dict(v)) for k, v in (cards or {}).items()}

    def publish(self, agent: str, card: Mapping[str, Any]) -> None:
        self._cards[address_key(agent)] = copy.deepcopy(dict(card))

    def onchain_card(self, agent: str) -> Mapping[str, Any]:
        try:
            return copy.deepcopy(self._cards[address_key(agent)])
        except KeyError:
            raise UnknownAgent(f"no card registered for {agent}") from None


class JsonCardSource:
    """A ``CardSource`` over any function that returns an agent's card as JSON text.

    The on-chain hook: ``JsonCardSource(lambda a: agent_contract(a).functions.cardJSON().call())``
    (the Agent contract renders its card as A2A 1.0 JSON). Text that is not a JSON
    object is a ``CardError``; the function raises ``UnknownAgent`` for unknown agents.
    """

    def __init__(self, fetch: Callable[[str], str | bytes]) -> None:
        self._fetch = fetch

    def onchain_card(self, agent: str) -> Mapping[str, Any]:
        text = self._fetch(agent)
        try:  # bounded, like any JSON a peer wrote
            return loads_object(text)
        except WireError as e:
            raise CardError(f"the on-chain card of {agent} is not a JSON object: "
                            f"{e.message}") from e


# ------------------------------------------------------------------ canonical form


def parse_card(card: Mapping[str, Any] | AgentCard) -> AgentCard:
    """An AgentCard proto from JSON of either protocol version; CardError if malformed."""
    if isinstance(card, AgentCard):
        return card
    if not isinstance(card, Mapping):
        raise CardError(f"a card must be a JSON object, not {type(card).__name__}")
    try:
        return parse_agent_card(copy.deepcopy(dict(card)))
    except (ParseError, TypeError, ValueError) as e:
        raise CardError(f"malformed agent card: {e}") from e


def canonical_card(card: Mapping[str, Any] | AgentCard) -> dict[str, Any]:
    """The comparable form of a card (see the module docstring for the rules)."""
    data = MessageToDict(parse_card(card))
    for name in IGNORED_FIELDS:
        data.pop(name, None)
    for iface in data.get("supportedInterfaces", []):
        iface["protocolVersion"] = _major_minor(iface.get("protocolVersion", ""))
    return _drop_defaults(_sort_keyed(data))


def canonical_json(card: Mapping[str, Any] | AgentCard) -> str:
    """The canonical form as compact JSON with sorted keys (stable across processes)."""
    return json.dumps(canonical_card(card), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def card_differences(
    served: Mapping[str, Any], onchain: Mapping[str, Any] | AgentCard
) -> list[str]:
    """The paths at which ``served`` departs from ``onchain``; empty when they match."""
    diffs = _legacy_inconsistencies(served)
    _diff(canonical_card(served), canonical_card(onchain), "", diffs)
    if not diffs and not isinstance(onchain, AgentCard):
        diffs.extend(_chain_form_differences(served, onchain))
    return diffs


def cards_match(served: Mapping[str, Any], onchain: Mapping[str, Any] | AgentCard) -> bool:
    """True iff the served card says exactly what the on-chain card says."""
    try:
        return not card_differences(served, onchain)
    except CardError:
        return False


def payment_terms(card: Mapping[str, Any] | AgentCard) -> tuple[str, PaymentTerms] | None:
    """(extension URI, terms) of the card's x402 extension; None if it declares none.

    A card that declares the extension with incomplete params raises
    ``CardError``: an agent that asks for money must say how much, to whom.
    """
    proto = parse_card(card)
    for ext in proto.capabilities.extensions:
        if ext.uri in X402_EXTENSION_URIS:
            try:
                return ext.uri, PaymentTerms.from_params(MessageToDict(ext.params))
            except WireError as e:
                raise CardError(f"the card's x402 terms are unusable: {e.message}") from e
    return None


# ----------------------------------------------------------------------- internals


def major_minor(version: str) -> tuple[int, int] | None:
    """``"0.3.0"`` → (0, 3), ``"1.0"`` → (1, 0); None when it is not a version number."""
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _major_minor(version: str) -> str:
    mm = major_minor(version)
    return version if mm is None else f"{mm[0]}.{mm[1]}"


def _key_of(item: Any) -> str:
    if not isinstance(item, Mapping):
        return json.dumps(item, sort_keys=True)
    if "protocolBinding" in item or "url" in item:
        return "{} {} {}{}".format(
            item.get("protocolBinding", ""), item.get("protocolVersion", ""),
            item.get("url", ""), f" tenant={item['tenant']}" if item.get("tenant") else "",
        )
    for key in ("id", "uri"):
        if key in item:
            return str(item[key])
    return json.dumps(item, sort_keys=True)


def _sort_keyed(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {k: v if k == "params" else _sort_keyed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sort_keyed(v) for v in value]
        return sorted(items, key=_key_of) if name in _KEYED_LISTS else items
    return value


def _drop_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = v if k == "params" else _drop_defaults(v)
            if not _is_default(v):
                out[k] = v
        return out
    if isinstance(value, list):
        return [_drop_defaults(v) for v in value]
    return value


def _is_default(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def _legacy_inconsistencies(served: Mapping[str, Any]) -> list[str]:
    """v0.3 connection fields that name an interface the 1.0 list does not have."""
    if not isinstance(served, Mapping) or "supportedInterfaces" not in served:
        return []  # a pure v0.3 card: the legacy fields *are* its interfaces
    listed = {
        (i.get("url"), i.get("protocolBinding"))
        for i in served.get("supportedInterfaces") or [] if isinstance(i, Mapping)
    }
    out = []
    if "url" in served:
        named = (served.get("url"), served.get("preferredTransport", "JSONRPC"))
        if named not in listed:
            out.append(f"url: {named[0]!r} ({named[1]}) is not in supportedInterfaces")
    for i, extra in enumerate(served.get("additionalInterfaces") or []):
        other = (extra.get("url"), extra.get("transport")) if isinstance(extra, Mapping) else None
        if other not in listed:
            out.append(f"additionalInterfaces[{i}] is not in supportedInterfaces")
    return out


def _chain_form_differences(served: Mapping[str, Any], onchain: Mapping[str, Any]) -> list[str]:
    """Byte equality with the chain's canonical JSON, when the on-chain card is in that form.

    ``a402.agents.card`` renders a card exactly as ``Agent.cardJSON()`` does (the
    bytes ``cardHash()`` commits to). Against such a card the served one must
    render to the same bytes: entry order counts, and so does anything the
    chain cannot hold (which the served card then must not carry).
    """
    try:
        want = OnchainCard.from_a2a(onchain).canonical_json()
    except InvalidCard:
        return []  # not in the chain's form (e.g. pinned by configuration): fields decide
    try:
        got = OnchainCard.from_a2a(served).canonical_json()
    except InvalidCard as e:
        return [f"the served card says what the on-chain card cannot: {e}"]
    if got != want:
        return ["canonical JSON: the served card renders differently from the chain's "
                "(entry order or spelling)"]
    return []


def _diff(served: Any, onchain: Any, path: str, out: list[str], *, keyed: bool = False) -> None:
    if isinstance(served, dict) and isinstance(onchain, dict):
        for key in sorted(set(served) | set(onchain)):
            sub = f"{path}[{key}]" if keyed else (f"{path}.{key}" if path else key)
            if key not in served:
                out.append(f"{sub}: missing from the served card")
            elif key not in onchain:
                out.append(f"{sub}: not on chain")
            else:
                _diff(served[key], onchain[key], sub, out)
        return
    if (
        isinstance(served, list) and isinstance(onchain, list)
        and path.rsplit(".", 1)[-1] in _KEYED_LISTS
    ):
        by_key = [{_key_of(v): v for v in side} for side in (served, onchain)]
        if len(by_key[0]) != len(served):
            out.append(f"{path}: the served card lists an entry twice")
        if len(by_key[1]) != len(onchain):
            out.append(f"{path}: the on-chain card lists an entry twice")
        _diff(by_key[0], by_key[1], path, out, keyed=True)
        return
    if served != onchain:
        out.append(f"{path}: served {_short(served)}, on chain {_short(onchain)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."
