"""Searching the index: agents by skill, text, price, network, reputation, activity, registry.

Every filter is an indexed lookup: skills and words go through ``agent_terms``
(``(kind, term, agent)`` primary key; the last word of ``q`` matches as a
prefix, by a range on that key), price through the zero-padded ``price_key``,
activity through ``active_until`` (the last second ``isActive()`` holds,
compared with the indexed chain time), and the order — reputation, then
address — through an index that also serves keyset paging (``cursor`` = the
last row's ``(reputation, address)``), so a page costs the same at any depth.
Candidates are ranked in the narrow ``agent_rank`` table and only the page's
wide rows (card text) are read: a broad skill matches thousands of agents, and
sorting their full rows cost five times more.

"Now" is the timestamp of the last indexed block, not the wall clock: the
answer is the one ``isActive()`` gave at that block, and two indexers at the
same block agree.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from eth_utils import is_address
from sqlalchemy import Connection, and_, distinct, exists, func, or_, select

from a402.agents.card import (
    Capabilities,
    Interface,
    InvalidCard,
    Payment,
    Profile,
    Skill,
)
from a402.agents.indexer.state import MAX_TERM
from a402.agents.indexer.store import (
    IndexStore,
    agents_t,
    identities_t,
    listings_t,
    payments_t,
    price_key,
    rank_t,
    ratings_t,
    reputation_t,
    terms_t,
)
from a402.agents.reputation import explain
from a402.evm.address import address_key, to_checksum
from a402.wire.errors import WireError
from a402.wire.jsonstrict import JsonLimits, check_bounds

MAX_LIMIT: Final = 100
DEFAULT_LIMIT: Final = 20
_WORD = re.compile(r"\w+", re.UNICODE)


class BadQuery(ValueError):
    """A search parameter that cannot be understood (the API answers 400)."""


@dataclass(frozen=True)
class Query:
    skill: str | None = None
    q: str | None = None
    max_price: int | None = None
    asset: str | None = None
    network: str | None = None
    min_reputation: float | None = None
    active: bool | None = None
    registry: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def _cs(address: str | None) -> str | None:
    """EIP-55 of a stored (lowercase) address: evm's checksum is cached and ten times
    cheaper than eth_utils', which made checksumming most of a 100-agent page's cost."""
    return to_checksum(address) if address else None


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise BadQuery(f"{what} is not an address: {value!r}")
    return address_key(value)


def encode_cursor(reputation: float, address: str) -> str:
    raw = json.dumps([reputation, address], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position a ``cursor`` (a caller's query parameter) names; its JSON is checked
    against the bounds of :mod:`a402.wire.jsonstrict` before it is parsed, so a cursor
    nested 100,000 deep is a 400, not a RecursionError (or a C stack overflow)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        reputation, address = json.loads(check_bounds(raw, _CURSOR_LIMITS))
        return float(reputation), _address(str(address), "cursor")
    except (ValueError, TypeError, WireError) as e:
        raise BadQuery(f"bad cursor: {e}") from None


_CURSOR_LIMITS: Final = JsonLimits(max_bytes=1024, max_depth=2)


class Search:
    """Read-side queries over an :class:`IndexStore` (safe to use from many threads)."""

    def __init__(self, store: IndexStore, registries: Mapping[str, str] | None = None) -> None:
        self.store = store
        config = store.get_meta("config") or {}
        self.registries = {address_key(a): label for a, label in
                           (registries if registries is not None
                            else config.get("registries", {})).items()}

    def now(self, conn: Connection | None = None) -> tuple[int | None, int]:
        """(cursor block, its timestamp): the chain time answers are computed at."""
        cursor = self.store.cursor(conn)
        return (None, 0) if cursor is None else (cursor.number, cursor.timestamp)

    def _registry_filter(self, value: str) -> list[str]:
        value = value.strip().lower()
        if value == "any":
            return sorted(self.registries)
        by_label = sorted(a for a, label in self.registries.items() if label == value)
        if by_label:
            return by_label
        return [_address(value, "registry")]

    def search(self, query: Query) -> dict[str, Any]:
        if not 1 <= query.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be 1..{MAX_LIMIT}")
        with self.store.read() as conn:  # one snapshot for the time and both phases
            return self._search(conn, query)

    def _search(self, conn: Connection, query: Query) -> dict[str, Any]:
        block, now = self.now(conn)
        # Phase 1 ranks candidates in the narrow ``agent_rank`` table; phase 2 fetches the
        # page's wide rows by primary key.
        a = rank_t.c
        stmt = select(a.address, a.reputation)
        if query.skill:
            stmt = stmt.where(a.address.in_(select(terms_t.c.agent).where(
                terms_t.c.kind == "s", terms_t.c.term == query.skill.strip().lower())))
        words = _WORD.findall((query.q or "").lower())
        for i, word in enumerate(words):
            if len(word) > MAX_TERM:
                word = word[:MAX_TERM]
            if i == len(words) - 1:  # the word being typed: a prefix
                upper = word[:-1] + chr(ord(word[-1]) + 1)
                cond = and_(terms_t.c.term >= word, terms_t.c.term < upper)
            elif len(word) < 2:
                continue
            else:
                cond = terms_t.c.term == word
            stmt = stmt.where(a.address.in_(
                select(terms_t.c.agent).where(terms_t.c.kind == "t", cond)))
        if query.max_price is not None:
            if query.max_price < 0:
                raise BadQuery("max_price must be >= 0")
            stmt = stmt.where(a.price_key <= price_key(query.max_price))
        if query.asset:
            stmt = stmt.where(a.pay_asset == _address(query.asset, "asset"))
        if query.network:
            stmt = stmt.where(a.pay_network == query.network.strip())
        if query.min_reputation is not None:
            stmt = stmt.where(a.reputation >= query.min_reputation)
        if query.active is True:
            stmt = stmt.where(a.active_until >= now)
        elif query.active is False:
            stmt = stmt.where(a.active_until < now)
        if query.registry:
            registries = self._registry_filter(query.registry)
            if query.skill or words:
                # Few candidates already: check each one's listing by primary key rather
                # than materialise every listed agent.
                stmt = stmt.where(exists().where(listings_t.c.agent == a.address,
                                                 listings_t.c.registry.in_(registries)))
            else:
                stmt = stmt.where(a.address.in_(select(listings_t.c.agent).where(
                    listings_t.c.registry.in_(registries))))
        if query.cursor:
            rep, after = decode_cursor(query.cursor)
            stmt = stmt.where(or_(a.reputation < rep,
                                  and_(a.reputation == rep, a.address > after)))
        stmt = stmt.order_by(a.reputation.desc(), a.address).limit(query.limit + 1)
        ranked = conn.execute(stmt).all()
        more = len(ranked) > query.limit
        ranked = ranked[:query.limit]
        w = agents_t.c
        wide = {r.address: r for r in conn.execute(
            select(w.address, w.owner, w.name, w.description, w.version, w.url, w.skills,
                   w.pay_scheme, w.pay_network, w.pay_asset, w.pay_amount, w.pay_to,
                   w.last_seen, w.active_until, w.reputation)
            .where(w.address.in_([r.address for r in ranked])))} if ranked else {}
        rows = [wide[r.address] for r in ranked if r.address in wide]
        return {
            "agents": [self._summary(r, now) for r in rows],
            "next_cursor": encode_cursor(ranked[-1].reputation, ranked[-1].address)
            if more else None,
            "as_of": {"block": block, "timestamp": now},
        }

    @staticmethod
    def _summary(r: Any, now: int) -> dict[str, Any]:
        return {
            "address": _cs(r.address),
            "owner": _cs(r.owner),
            "name": r.name,
            "description": r.description,
            "version": r.version,
            "url": r.url,
            "skills": json.loads(r.skills),
            "price": _price(r),
            "active": r.active_until >= now,
            "last_seen": r.last_seen,
            "reputation": r.reputation,
        }

    def agent(self, address: str) -> dict[str, Any] | None:
        """Everything known about one agent, with its reputation explained."""
        address = _address(address, "agent")
        with self.store.read() as conn:
            block, now = self.now(conn)
            r = conn.execute(select(agents_t).where(agents_t.c.address == address)).first()
            if r is None:
                return None
            listings = sorted(conn.execute(select(listings_t.c.registry).where(
                listings_t.c.agent == address)).scalars())
            identities = conn.execute(select(identities_t).where(
                identities_t.c.linked_agent == address)).all()
            p = payments_t.c
            count, senders, agents, last_paid = conn.execute(
                select(func.count(), func.count(distinct(p.sender)),
                       func.count(distinct(p.payer_agent)), func.max(p.ts))
                .where(p.payee == address)).one()
            ratings = conn.execute(
                select(ratings_t.c.rater, ratings_t.c.score).where(ratings_t.c.agent == address)
                .order_by(ratings_t.c.block_number, ratings_t.c.log_index)).all()
            detail = conn.execute(select(reputation_t.c.detail).where(
                reputation_t.c.agent == address)).scalar()
            validations = {i.agent_id: self.store.validations(i.agent_id, conn)
                           for i in identities}
            computed = self.store.get_meta("reputation", conn) or {}
        live = {rater: score for rater, score in ratings}
        live = {k: v for k, v in live.items() if v is not None}
        profile = json.loads(r.profile) if r.profile else None
        card, card_hash, card_error = _card(r, profile)
        return {
            "address": _cs(r.address),
            "owner": _cs(r.owner),
            "factory_index": r.factory_index,
            "created": {"block": r.created_block, "timestamp": r.created_at},
            "revision": r.revision,
            "card": card,
            "card_hash": card_hash,
            "card_error": card_error,
            "profile_data": _cs(r.profile_data),
            "terms": _price(r),
            "accepted_tokens": [_cs(t) for t in json.loads(r.accepted_tokens)],
            "activity": {
                "enabled": r.enabled, "last_seen": r.last_seen,
                "activity_window": r.activity_window,
                "active_until": r.active_until if r.active_until >= 0 else None,
                "active": r.active_until >= now,
            },
            "listings": [{"registry": _cs(reg), "label": self.registries.get(reg)}
                         for reg in listings],
            "erc8004": [{
                "agent_id": i.agent_id, "uri": i.uri, "owner": _cs(i.owner),
                "wallet": _cs(i.wallet),
                "verified": i.owner is not None and i.owner == r.owner,
                "validations": [{**v, "validator": _cs(v["validator"])}
                                for v in validations[i.agent_id]],
            } for i in identities],
            "payments": {"count": count, "paying_addresses": senders,
                         "paying_agents": agents, "last_payment": last_paid},
            "ratings": {"live": len(live),
                        "average": sum(live.values()) / len(live) if live else None},
            "reputation": explain(json.loads(detail), computed.get("computed_at"))
            if detail else {"score": r.reputation, "computed_at": None},
            "as_of": {"block": block, "timestamp": now},
        }

    def health(self) -> dict[str, Any]:
        cursor = self.store.cursor()
        head = self.store.get_meta("head") or {}
        computed = self.store.get_meta("reputation") or {}
        return {
            "cursor": None if cursor is None else cursor.__dict__,
            "head": head.get("number"),
            "lag_blocks": None if cursor is None or head.get("number") is None
            else max(0, head["number"] - cursor.number),
            "polled_at": head.get("polled_at"),
            "reputation_computed_at": computed.get("computed_at"),
        }


def _price(r: Any) -> dict[str, Any] | None:
    if r.pay_to is None:
        return None
    return {"amount": r.pay_amount, "asset": _cs(r.pay_asset), "network": r.pay_network,
            "scheme": r.pay_scheme, "payTo": _cs(r.pay_to)}


def _card(r: Any, profile: Mapping[str, Any] | None
          ) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The A2A card the contract renders (and its ``cardHash``), rebuilt from indexed data."""
    if profile is None or "invalid" in profile:
        return None, None, (profile or {}).get("invalid", "no profile")
    try:
        prof = Profile(
            name=profile["name"], description=profile["description"],
            interfaces=tuple(Interface(u, b, v) for u, b, v in profile["interfaces"]),
            default_input_modes=tuple(profile["defaultInputModes"]),
            default_output_modes=tuple(profile["defaultOutputModes"]),
            skills=tuple(Skill(s["id"], s["name"], s["description"], tuple(s["tags"]),
                               tuple(s["examples"]), tuple(s["inputModes"]),
                               tuple(s["outputModes"])) for s in profile["skills"]),
            payment_description=profile["paymentDescription"],
        )
        payment = None if r.pay_to is None else Payment(
            network=r.pay_network, asset=r.pay_asset, amount=int(r.pay_amount),
            pay_to=r.pay_to, scheme=r.pay_scheme)
        card = prof.with_terms(r.version, Capabilities(
            r.streaming, r.push_notifications, r.extended_agent_card), payment)
    except (InvalidCard, KeyError, ValueError) as e:
        return None, None, str(e)
    return card.to_a2a(), "0x" + card.card_hash().hex(), None


__all__ = ["BadQuery", "Query", "Search", "decode_cursor", "encode_cursor"]
