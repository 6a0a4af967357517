"""On-chain AgentCards as data (pure): the model, its canonical JSON and hash, its compact encoding.

``contracts/Agent.sol`` stores an A2A AgentCard and renders it as JSON
(``cardJSON()``) with a hash (``cardHash()`` = keccak-256 of that JSON). This
module builds the *same bytes* in Python, so a client can check a card served
at an agent's endpoint against the chain, or know a card's hash before
publishing it:

    card = OnchainCard.from_a2a(served_card_dict)     # InvalidCard if the chain could not hold it
    card.canonical_json() == agent.card_json()        # byte for byte
    card.card_hash() == agent.card_hash()

The canonical JSON is ``json.dumps(card.to_a2a(), sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` in UTF-8, which is also RFC 8785
(JCS) for these cards (no numbers, ASCII keys): the contract writes keys in
sorted order, escapes exactly ``"``, ``\\`` and control characters (``\\b \\t
\\n \\f \\r``, others as lowercase ``\\u00xx``), and copies every other
character verbatim. Shape (A2A 1.0 ProtoJSON, parseable by ``a2a-sdk``):

    {"capabilities":{"extendedAgentCard":false,
                     "extensions":[{"description":"…","params":{"amount":"10000","asset":"0xA0b8…",
                                    "network":"eip155:8453","payTo":"0x…","scheme":"exact"},
                                    "required":true,"uri":"https://github.com/google-a2a/a2a-x402/v0.1"}],
                     "pushNotifications":false,"streaming":false},
     "defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"],
     "description":"…","name":"…",
     "skills":[{"description":"…","examples":[…],"id":"…","inputModes":[…],"name":"…",
                "outputModes":[…],"tags":[…]}],
     "supportedInterfaces":[{"protocolBinding":"JSONRPC","protocolVersion":"1.0","url":"…"}],
     "version":"…"}

Rules: booleans are always written; ``extensions`` only when the agent charges
(then exactly one, the x402 extension, ``required``; its ``description`` only
when non-empty); a skill's ``examples``/``inputModes``/``outputModes`` only
when non-empty; amounts are decimal strings; addresses are EIP-55 checksummed.

The compact encoding (:func:`encode_profile`) is how the contract stores the
card's text: each ``ProfileUpdated`` event names a data contract whose code,
after one ``0x00`` byte, is that encoding, so an indexer can rebuild any
historical card from logs and code alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from eth_utils import is_address, keccak, to_checksum_address

X402_EXTENSION_URI: Final = "https://github.com/google-a2a/a2a-x402/v0.1"
"""The x402 extension URI the contract renders (``AgentCard.X402_EXTENSION_URI``)."""
ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
MAX_PROFILE_BYTES: Final = 24_575
"""EIP-170's 24,576-byte code limit, less the data contract's leading STOP byte."""
PROFILE_FORMAT: Final = 1
_U16: Final = 0xFFFF


class InvalidCard(ValueError):
    """A card the contract would refuse, or a served card the chain cannot represent."""


# ------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Interface:
    """An A2A 1.0 ``AgentInterface``: where and how the agent is reached."""

    url: str
    protocol_binding: str = "JSONRPC"
    protocol_version: str = "1.0"


@dataclass(frozen=True)
class Skill:
    """An A2A ``AgentSkill`` (without ``security``, which the chain does not hold)."""

    id: str
    name: str
    description: str
    tags: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    input_modes: tuple[str, ...] = ()
    output_modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("tags", "examples", "input_modes", "output_modes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise InvalidCard(f"skill {name} must be a list of strings, not one string")
            object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = False
    push_notifications: bool = False
    extended_agent_card: bool = False


@dataclass(frozen=True)
class Payment:
    """The x402 extension's params: pay ``amount`` base units of ``asset`` to ``pay_to``."""

    network: str
    asset: str
    amount: int
    pay_to: str
    scheme: str = "exact"

    def __post_init__(self) -> None:
        for name in ("asset", "pay_to"):
            value = getattr(self, name)
            if not isinstance(value, str) or not is_address(value):
                raise InvalidCard(f"payment {name} is not an address: {value!r}")
            object.__setattr__(self, name, to_checksum_address(value))
        if self.pay_to == ZERO_ADDRESS:
            raise InvalidCard("payment payTo is the zero address (leave payment out instead)")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise InvalidCard(f"payment amount must be an int, not {self.amount!r}")
        if not 0 <= self.amount < 2**256:
            raise InvalidCard("payment amount is out of uint256 range")
        if not self.network or not self.scheme:
            raise InvalidCard("payment needs a network and a scheme")

    def params(self) -> dict[str, str]:
        return {
            "amount": str(self.amount), "asset": self.asset, "network": self.network,
            "payTo": self.pay_to, "scheme": self.scheme,
        }


@dataclass(frozen=True)
class OnchainCard:
    """Everything ``Agent.sol`` stores of an AgentCard.

    ``payment`` is None for an agent that charges nothing; ``payment_description``
    is the x402 extension's ``description`` (shown only with a payment).
    """

    name: str
    description: str
    interfaces: tuple[Interface, ...]
    version: str
    default_input_modes: tuple[str, ...] = ("text/plain",)
    default_output_modes: tuple[str, ...] = ("text/plain",)
    skills: tuple[Skill, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    payment: Payment | None = None
    payment_description: str = ""

    def __post_init__(self) -> None:
        for name in ("interfaces", "default_input_modes", "default_output_modes", "skills"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.name:
            raise InvalidCard("name is required")
        if not self.version:
            raise InvalidCard("version is required")
        if not self.interfaces:
            raise InvalidCard("at least one supportedInterfaces entry is required")
        for iface in self.interfaces:
            if not (iface.url and iface.protocol_binding and iface.protocol_version):
                raise InvalidCard("an interface needs url, protocolBinding and protocolVersion")
        for skill in self.skills:
            if not skill.id:
                raise InvalidCard("every skill needs an id")
        for text in self._strings():
            if not isinstance(text, str):
                raise InvalidCard(f"card text must be str, not {type(text).__name__}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidCard(f"card text is not valid Unicode: {e}") from None
        encode_profile(self)  # size limits

    def _strings(self) -> Iterable[Any]:
        yield from (self.name, self.description, self.version, self.payment_description)
        yield from self.default_input_modes
        yield from self.default_output_modes
        for i in self.interfaces:
            yield from (i.url, i.protocol_binding, i.protocol_version)
        for s in self.skills:
            yield from (s.id, s.name, s.description)
            yield from (*s.tags, *s.examples, *s.input_modes, *s.output_modes)
        if self.payment:
            yield from (self.payment.network, self.payment.scheme)

    # ------------------------------------------------------------- canonical form

    def to_a2a(self) -> dict[str, Any]:
        """The card as the A2A AgentCard JSON object the contract renders."""
        caps: dict[str, Any] = {
            "extendedAgentCard": self.capabilities.extended_agent_card,
            "pushNotifications": self.capabilities.push_notifications,
            "streaming": self.capabilities.streaming,
        }
        if self.payment is not None:
            ext: dict[str, Any] = {
                "params": self.payment.params(), "required": True, "uri": X402_EXTENSION_URI,
            }
            if self.payment_description:
                ext["description"] = self.payment_description
            caps["extensions"] = [ext]
        skills = []
        for s in self.skills:
            item: dict[str, Any] = {
                "description": s.description, "id": s.id, "name": s.name, "tags": list(s.tags),
            }
            for key, values in (("examples", s.examples), ("inputModes", s.input_modes),
                                ("outputModes", s.output_modes)):
                if values:
                    item[key] = list(values)
            skills.append(item)
        return {
            "capabilities": caps,
            "defaultInputModes": list(self.default_input_modes),
            "defaultOutputModes": list(self.default_output_modes),
            "description": self.description,
            "name": self.name,
            "skills": skills,
            "supportedInterfaces": [
                {"protocolBinding": i.protocol_binding, "protocolVersion": i.protocol_version,
                 "url": i.url}
                for i in self.interfaces
            ],
            "version": self.version,
        }

    def canonical_json(self) -> bytes:
        """The exact bytes of ``Agent.cardJSON()`` for this card."""
        return canonical_json_bytes(self.to_a2a())

    def card_hash(self) -> bytes:
        """``Agent.cardHash()``: keccak-256 of the canonical JSON."""
        return keccak(self.canonical_json())

    @classmethod
    def from_a2a(cls, card: Mapping[str, Any], *, strict: bool = True) -> OnchainCard:
        """Read an A2A AgentCard JSON object (1.0, or 0.3 spellings) into the on-chain model.

        With ``strict`` (the default) a card carrying information the chain cannot
        hold — provider, icon or documentation URLs, security schemes, interface
        tenants, other extensions, extra x402 params, an optional or second x402
        extension — raises :class:`InvalidCard`, so a hash match can never hide a
        difference. ``strict=False`` drops those fields instead.
        """
        return _from_a2a(card, strict)

    # -------------------------------------------------------------- contract ABI

    def to_abi(self) -> tuple[Any, ...]:
        """The ``AgentCardInput`` tuple that ``createAgent`` and ``updateCard`` take."""
        return (encode_profile(self), self.version, self.capabilities_abi(), self.payment_abi())

    def card_data_abi(self) -> tuple[Any, ...]:
        """The ``AgentCardData`` tuple (profile as a struct), for the renderer's ``renderCard``."""
        return (self.profile_abi(), self.version, self.capabilities_abi(), self.payment_abi())

    def profile_abi(self) -> tuple[Any, ...]:
        """The ``AgentProfile`` tuple (for ``AgentCardRenderer.encodeProfile``)."""
        return (
            self.name,
            self.description,
            [(i.url, i.protocol_binding, i.protocol_version) for i in self.interfaces],
            list(self.default_input_modes),
            list(self.default_output_modes),
            [(s.id, s.name, s.description, list(s.tags), list(s.examples), list(s.input_modes),
              list(s.output_modes)) for s in self.skills],
            self.payment_description,
        )

    def capabilities_abi(self) -> tuple[bool, bool, bool]:
        c = self.capabilities
        return (c.streaming, c.push_notifications, c.extended_agent_card)

    def payment_abi(self) -> tuple[Any, ...]:
        """The ``PaymentTerms`` tuple (for ``setPaymentTerms``); all empty for a free agent."""
        p = self.payment
        if p is None:
            return ("", "", ZERO_ADDRESS, 0, ZERO_ADDRESS)
        return (p.scheme, p.network, p.asset, p.amount, p.pay_to)

    @classmethod
    def from_abi(cls, data: Sequence[Any]) -> OnchainCard:
        """The card from ``Agent.card()``'s return value."""
        profile, version, caps, pay = data
        name, description, ifaces, inputs, outputs, skills, pay_description = profile
        scheme, network, asset, amount, pay_to = pay
        return cls(
            name=name, description=description, version=version,
            interfaces=tuple(Interface(u, b, v) for u, b, v in ifaces),
            default_input_modes=tuple(inputs), default_output_modes=tuple(outputs),
            skills=tuple(
                Skill(i, n, d, tuple(t), tuple(e), tuple(im), tuple(om))
                for i, n, d, t, e, im, om in skills
            ),
            capabilities=Capabilities(*caps),
            payment=None if int(pay_to, 16) == 0 else Payment(
                network=network, asset=asset, amount=int(amount), pay_to=pay_to, scheme=scheme),
            payment_description=pay_description,
        )


def canonical_json_bytes(card: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted, non-ASCII-verbatim JSON in UTF-8 (what the contract writes)."""
    return json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical_card_json(card: Mapping[str, Any], *, strict: bool = True) -> bytes:
    """The on-chain canonical JSON of an A2A AgentCard dict (see :meth:`OnchainCard.from_a2a`)."""
    return OnchainCard.from_a2a(card, strict=strict).canonical_json()


def card_hash(card: Mapping[str, Any], *, strict: bool = True) -> bytes:
    """What ``cardHash()`` returns for an agent publishing ``card``."""
    return keccak(canonical_card_json(card, strict=strict))


# ------------------------------------------------------------------ compact encoding


def encode_profile(card: OnchainCard) -> bytes:
    """The profile blob the contract stores for ``card`` (format in ``AgentCard.sol``)."""
    out = bytearray([PROFILE_FORMAT])

    def count(n: int) -> None:
        if n > _U16:
            raise InvalidCard("a list or string is longer than 65,535")
        out.extend(n.to_bytes(2, "big"))

    def text(s: str) -> None:
        raw = s.encode("utf-8")
        count(len(raw))
        out.extend(raw)

    def texts(items: Sequence[str]) -> None:
        count(len(items))
        for item in items:
            text(item)

    text(card.payment_description)
    texts(card.default_input_modes)
    texts(card.default_output_modes)
    text(card.description)
    text(card.name)
    count(len(card.skills))
    for s in card.skills:
        text(s.description)
        texts(s.examples)
        text(s.id)
        texts(s.input_modes)
        text(s.name)
        texts(s.output_modes)
        texts(s.tags)
    count(len(card.interfaces))
    for i in card.interfaces:
        text(i.protocol_binding)
        text(i.protocol_version)
        text(i.url)
    if len(out) > MAX_PROFILE_BYTES:
        raise InvalidCard(f"the card's text takes {len(out)} bytes; at most "
                          f"{MAX_PROFILE_BYTES} fit in one data contract")
    return bytes(out)


@dataclass(frozen=True)
class Profile:
    """The text part of a card, as decoded from a profile blob."""

    name: str
    description: str
    interfaces: tuple[Interface, ...]
    default_input_modes: tuple[str, ...]
    default_output_modes: tuple[str, ...]
    skills: tuple[Skill, ...]
    payment_description: str

    def with_terms(
        self, version: str, capabilities: Capabilities, payment: Payment | None
    ) -> OnchainCard:
        return OnchainCard(
            name=self.name, description=self.description, interfaces=self.interfaces,
            version=version, default_input_modes=self.default_input_modes,
            default_output_modes=self.default_output_modes, skills=self.skills,
            capabilities=capabilities, payment=payment,
            payment_description=self.payment_description,
        )


def profile_from_code(code: bytes) -> Profile:
    """The profile held by a data contract (``ProfileUpdated.data``): its code after 0x00."""
    if bytes(code[:1]) != b"\x00":
        raise InvalidCard("not a profile data contract (its code must start with STOP)")
    return decode_profile(bytes(code[1:]))


def decode_profile(blob: bytes) -> Profile:
    """Inverse of :func:`encode_profile`; InvalidCard for anything the contract would refuse
    except the card-level rules (required fields), which :meth:`Profile.with_terms` checks."""
    data = bytes(blob)
    if data[:1] != bytes([PROFILE_FORMAT]):
        raise InvalidCard("not a version-1 profile blob")
    pos = 1

    def count() -> int:
        nonlocal pos
        if pos + 2 > len(data):
            raise InvalidCard("truncated profile blob")
        n = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        return n

    def text() -> str:
        nonlocal pos
        n = count()
        if pos + n > len(data):
            raise InvalidCard("truncated profile blob")
        raw = data[pos:pos + n]
        pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidCard(f"profile text is not UTF-8: {e}") from None

    def texts() -> tuple[str, ...]:
        return tuple(text() for _ in range(count()))

    payment_description = text()
    inputs, outputs = texts(), texts()
    description, name = text(), text()
    skills = []
    for _ in range(count()):
        s_desc, examples, s_id, s_in = text(), texts(), text(), texts()
        s_name, s_out, tags = text(), texts(), texts()
        skills.append(Skill(s_id, s_name, s_desc, tags, examples, s_in, s_out))
    interfaces = []
    for _ in range(count()):
        binding, version, url = text(), text(), text()
        interfaces.append(Interface(url, binding, version))
    if pos != len(data):
        raise InvalidCard("trailing bytes after the profile")
    return Profile(name, description, tuple(interfaces), inputs, outputs, tuple(skills),
                   payment_description)


# ------------------------------------------------------------------ reading A2A cards

_REPRESENTED = {
    "name", "description", "version", "supportedInterfaces", "capabilities",
    "defaultInputModes", "defaultOutputModes", "skills",
    # 0.3 spellings of the same data
    "url", "preferredTransport", "additionalInterfaces", "protocolVersion",
    "supportsAuthenticatedExtendedCard",
}
_IGNORED = {"signatures"}  # a signature over the card, not part of it
_SKILL_KEYS = {"id", "name", "description", "tags", "examples", "inputModes", "outputModes"}
_CAPABILITY_KEYS = {"streaming", "pushNotifications", "extendedAgentCard", "extensions"}
_X402_URIS = (
    X402_EXTENSION_URI,
    "https://github.com/google-agentic-commerce/a2a-x402/blob/main/spec/v0.2",
    "urn:a2a-blockchain-x402:extensions:x402:v1",
)


def _is_default(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidCard(f"{where} must be a string")
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidCard(f"{where} must be a list of strings")
    return tuple(_str(v, where) for v in value)


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidCard(f"{where} must be a boolean")
    return value


def _unrepresentable(obj: Mapping[str, Any], allowed: set[str], where: str, strict: bool) -> None:
    if not strict:
        return
    extra = sorted(k for k, v in obj.items() if k not in allowed and not _is_default(v))
    if extra:
        raise InvalidCard(f"the chain cannot hold {where}{', '.join(extra)}")


def _interfaces(card: Mapping[str, Any], strict: bool) -> tuple[Interface, ...]:
    if "supportedInterfaces" in card:
        out: list[Interface] = []
        for item in card["supportedInterfaces"] or []:
            if not isinstance(item, Mapping):
                raise InvalidCard("supportedInterfaces entries must be objects")
            _unrepresentable(item, {"url", "protocolBinding", "protocolVersion"},
                             "supportedInterfaces.", strict)
            out.append(Interface(
                url=_str(item.get("url"), "interface url"),
                protocol_binding=_str(item.get("protocolBinding"), "interface protocolBinding"),
                protocol_version=_str(item.get("protocolVersion"), "interface protocolVersion"),
            ))
        if strict and card.get("url"):
            # a 1.0 card that also speaks 0.3 (a2a-sdk serves both): a 0.3 client follows `url`
            legacy = (card["url"], card.get("preferredTransport", "JSONRPC"))
            if legacy not in {(i.url, i.protocol_binding) for i in out}:
                raise InvalidCard(f"url {legacy[0]!r} is not among supportedInterfaces")
        return tuple(out)
    # A 0.3 card: `url` with `preferredTransport`, plus `additionalInterfaces`.
    version = _str(card.get("protocolVersion", "0.3.0"), "protocolVersion")
    out = [Interface(_str(card.get("url"), "url"),
                     _str(card.get("preferredTransport", "JSONRPC"), "preferredTransport"),
                     version)]
    for item in card.get("additionalInterfaces") or []:
        if not isinstance(item, Mapping):
            raise InvalidCard("additionalInterfaces entries must be objects")
        iface = Interface(_str(item.get("url"), "interface url"),
                          _str(item.get("transport"), "interface transport"), version)
        if iface not in out:
            out.append(iface)
    return tuple(out)


def _payment(caps: Mapping[str, Any], strict: bool) -> tuple[Payment | None, str]:
    found: list[Mapping[str, Any]] = []
    for ext in caps.get("extensions") or []:
        if not isinstance(ext, Mapping):
            raise InvalidCard("extensions entries must be objects")
        if ext.get("uri") in _X402_URIS:
            found.append(ext)
        elif strict:
            raise InvalidCard(f"the chain cannot hold extension {ext.get('uri')!r}")
    if not found:
        return None, ""
    if strict and len(found) > 1:
        raise InvalidCard("the card declares the x402 extension twice")
    ext = found[0]
    if strict:
        if ext.get("uri") != X402_EXTENSION_URI:
            raise InvalidCard(f"the chain renders the x402 extension as {X402_EXTENSION_URI}")
        if ext.get("required") is not True:
            raise InvalidCard("the chain renders the x402 extension as required")
        _unrepresentable(ext, {"uri", "required", "description", "params"}, "extension ", strict)
    params = ext.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidCard("x402 params must be an object")
    _unrepresentable(params, {"scheme", "network", "asset", "amount", "payTo"}, "x402 params ",
                     strict)
    amount = _str(params.get("amount"), "x402 amount")
    if not (amount.isascii() and amount.isdigit()):
        raise InvalidCard("x402 amount must be a decimal integer string")
    payment = Payment(
        network=_str(params.get("network"), "x402 network"),
        asset=_str(params.get("asset"), "x402 asset"),
        amount=int(amount),
        pay_to=_str(params.get("payTo"), "x402 payTo"),
        scheme=_str(params.get("scheme"), "x402 scheme"),
    )
    return payment, _str(ext.get("description", ""), "extension description")


def _from_a2a(card: Mapping[str, Any], strict: bool) -> OnchainCard:
    if not isinstance(card, Mapping):
        raise InvalidCard("a card must be a JSON object")
    _unrepresentable(card, _REPRESENTED | _IGNORED, "", strict)
    caps = card.get("capabilities") or {}
    if not isinstance(caps, Mapping):
        raise InvalidCard("capabilities must be an object")
    _unrepresentable(caps, _CAPABILITY_KEYS, "capabilities.", strict)
    payment, pay_description = _payment(caps, strict)
    skills = []
    for item in card.get("skills") or []:
        if not isinstance(item, Mapping):
            raise InvalidCard("skills entries must be objects")
        _unrepresentable(item, _SKILL_KEYS, "skills.", strict)
        skills.append(Skill(
            id=_str(item.get("id"), "skill id"), name=_str(item.get("name", ""), "skill name"),
            description=_str(item.get("description", ""), "skill description"),
            tags=_strs(item.get("tags"), "skill tags"),
            examples=_strs(item.get("examples"), "skill examples"),
            input_modes=_strs(item.get("inputModes"), "skill inputModes"),
            output_modes=_strs(item.get("outputModes"), "skill outputModes"),
        ))
    extended = _bool(caps.get("extendedAgentCard"), "extendedAgentCard") or _bool(
        card.get("supportsAuthenticatedExtendedCard"), "supportsAuthenticatedExtendedCard")
    return OnchainCard(
        name=_str(card.get("name"), "name"),
        description=_str(card.get("description", ""), "description"),
        interfaces=_interfaces(card, strict),
        version=_str(card.get("version"), "version"),
        default_input_modes=_strs(card.get("defaultInputModes"), "defaultInputModes"),
        default_output_modes=_strs(card.get("defaultOutputModes"), "defaultOutputModes"),
        skills=tuple(skills),
        capabilities=Capabilities(
            streaming=_bool(caps.get("streaming"), "streaming"),
            push_notifications=_bool(caps.get("pushNotifications"), "pushNotifications"),
            extended_agent_card=extended,
        ),
        payment=payment,
        payment_description=pay_description,
    )


__all__ = [
    "MAX_PROFILE_BYTES", "X402_EXTENSION_URI", "ZERO_ADDRESS", "Capabilities", "Interface",
    "InvalidCard", "OnchainCard", "Payment", "Profile", "Skill", "canonical_card_json",
    "canonical_json_bytes", "card_hash", "decode_profile", "encode_profile", "profile_from_code",
]
