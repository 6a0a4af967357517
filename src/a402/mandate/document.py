"""The mandate document: what an owner lets an agent spend, as EIP-712 typed data (pure).

A mandate is signed by the fund owner's key as EIP-712 typed data, so a wallet
shows the owner every limit before signing (``eth_signTypedData_v4``; the
structure is :func:`typed_data`). Its domain is ``("a402 Mandates", "1",
chainId, verifyingContract)`` where the contract is the ``MandateRegistry``
the owner revokes it in: a mandate therefore names the one place to look for
its revocation, and its hash (the EIP-712 digest, :attr:`SignedMandate.hash`)
is unique per chain and registry.

Amounts are atomic units of the listed assets. Totals add up atomic units of
every asset the mandate lists, which is meaningful for assets of equal decimals
(the USD stablecoins); an owner who lists one asset per mandate has no question
to ask.

Fail closed, everywhere:

* decoding (:func:`load_signed`) refuses any field it does not know, at every
  level, with :class:`MandateError` ``mandate_unknown_field``: a limit this
  version cannot read is a limit it would not enforce;
* ``networks``, ``assets`` and ``schemes`` may not be empty (money needs a
  where, a what and a how); a scheme other than ``exact``, ``a402`` and
  ``upto`` is refused (``upto`` payments count their signed maximum);
* the empty lists that do mean "any" (``payees``, ``origins``,
  ``urlPatterns``, ``skills``) say so in :func:`describe` and in the wallet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from a402.evm.address import address_bytes, address_key, is_address, to_checksum
from a402.evm.ecdsa import OPENZEPPELIN, recover_address
from a402.evm.keccak import keccak256

DOMAIN_NAME: Final = "a402 Mandates"
DOMAIN_VERSION: Final = "1"
FORMAT: Final = "a402-mandate/1"
SCHEMES: Final = ("exact", "a402", "upto")
UINT256_MAX: Final = (1 << 256) - 1
UINT64_MAX: Final = (1 << 64) - 1

#: The EIP-712 ``Mandate`` type, field by field in signing order: (name, type).
MANDATE_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("owner", "address"),
    ("agent", "address"),
    ("maxPerPayment", "uint256"),
    ("budget", "uint256"),
    ("periodBudget", "uint256"),
    ("period", "uint64"),
    ("payees", "address[]"),
    ("origins", "string[]"),
    ("urlPatterns", "string[]"),
    ("skills", "string[]"),
    ("networks", "string[]"),
    ("assets", "address[]"),
    ("schemes", "string[]"),
    ("validAfter", "uint64"),
    ("validBefore", "uint64"),
    ("nonce", "bytes32"),
    ("confirmAbove", "uint256"),
)
MANDATE_TYPE: Final = "Mandate(" + ",".join(f"{t} {n}" for n, t in MANDATE_FIELDS) + ")"
MANDATE_TYPEHASH: Final = keccak256(MANDATE_TYPE.encode())

#: The owner's approval of one payment above ``confirmAbove``.
CONFIRMATION_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("mandate", "bytes32"),
    ("payee", "address"),
    ("network", "string"),
    ("asset", "address"),
    ("scheme", "string"),
    ("amount", "uint256"),
    ("resource", "string"),
    ("nonce", "bytes32"),
    ("validBefore", "uint64"),
)
CONFIRMATION_TYPE: Final = (
    "PaymentConfirmation(" + ",".join(f"{t} {n}" for n, t in CONFIRMATION_FIELDS) + ")"
)
CONFIRMATION_TYPEHASH: Final = keccak256(CONFIRMATION_TYPE.encode())

#: Revocation by signature, relayable by anyone (``MandateRegistry.revokeBySig``).
REVOCATION_TYPE: Final = "Revocation(bytes32 mandate)"
REVOCATION_TYPEHASH: Final = keccak256(REVOCATION_TYPE.encode())

EIP712_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

_NETWORK = re.compile(r"^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$")
_ORIGIN = re.compile(r"^https?://[^/?#\s]+$")
_MAX_LIST = 256
_MAX_TEXT = 2048


class MandateError(ValueError):
    """A mandate (or confirmation) that cannot be used; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# ------------------------------------------------------------------ the document


@dataclass(frozen=True)
class Domain:
    """Where a mandate lives: the chain and the ``MandateRegistry`` that revokes it."""

    chain_id: int
    registry: str

    def __post_init__(self) -> None:
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int) \
                or not 0 < self.chain_id <= UINT64_MAX:
            raise MandateError("mandate_invalid", f"bad chain id {self.chain_id!r}")
        if not is_address(self.registry):
            raise MandateError("mandate_invalid", f"bad registry address {self.registry!r:.60}")

    def separator(self) -> bytes:
        return keccak256(
            EIP712_DOMAIN_TYPEHASH
            + keccak256(DOMAIN_NAME.encode())
            + keccak256(DOMAIN_VERSION.encode())
            + self.chain_id.to_bytes(32, "big")
            + bytes(12) + address_bytes(self.registry)
        )

    def typed(self) -> dict[str, Any]:
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                "verifyingContract": to_checksum(self.registry)}


def _uint(value: object, bits: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise MandateError("mandate_invalid", f"{name} must be a uint{bits}, got {value!r:.60}")
    return value


def _texts(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > _MAX_LIST:
        raise MandateError("mandate_invalid", f"{name} must be a list of at most {_MAX_LIST}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > _MAX_TEXT:
            raise MandateError("mandate_invalid", f"{name} holds a bad entry {item!r:.60}")
    return tuple(value)


def _addresses(value: object, name: str) -> tuple[str, ...]:
    items = _texts(value, name)
    for item in items:
        if not is_address(item):
            raise MandateError("mandate_invalid", f"{name} holds a non-address {item!r:.60}")
    return tuple(to_checksum(a) for a in items)


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` lowercased, default ports dropped."""
    scheme, _, rest = origin.partition("://")
    scheme = scheme.lower()
    host = rest.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class Mandate:
    """The limits an owner signs (the EIP-712 ``Mandate`` message). See the module doc.

    ``max_per_payment``: the most one payment may pay (atomic units).
    ``budget``: the most all payments under this mandate may pay together.
    ``period_budget`` / ``period``: the most per ``period`` seconds, periods counted
    from ``valid_after`` (``period`` 0: no period limit, and ``period_budget`` must be 0).
    ``confirm_above``: a payment above this needs the owner's signed
    :class:`Confirmation` (0: never asked).
    ``valid_after`` / ``valid_before``: unix seconds, the mandate pays in
    ``[valid_after, valid_before)``.
    """

    owner: str
    agent: str
    max_per_payment: int
    budget: int
    valid_before: int
    nonce: bytes
    networks: tuple[str, ...]
    assets: tuple[str, ...]
    schemes: tuple[str, ...] = ("exact",)
    payees: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    url_patterns: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    period_budget: int = 0
    period: int = 0
    valid_after: int = 0
    confirm_above: int = 0

    def __post_init__(self) -> None:
        for name in ("owner", "agent"):
            if not is_address(getattr(self, name)):
                raise MandateError("mandate_invalid", f"{name} is not an address")
            object.__setattr__(self, name, to_checksum(getattr(self, name)))
        for name in ("max_per_payment", "budget", "period_budget", "confirm_above"):
            _uint(getattr(self, name), 256, name)
        for name in ("period", "valid_after", "valid_before"):
            _uint(getattr(self, name), 64, name)
        if not isinstance(self.nonce, bytes) or len(self.nonce) != 32:
            raise MandateError("mandate_invalid", "nonce must be 32 bytes")
        object.__setattr__(self, "payees", _addresses(self.payees, "payees"))
        object.__setattr__(self, "assets", _addresses(self.assets, "assets"))
        for name in ("origins", "url_patterns", "skills", "networks", "schemes"):
            object.__setattr__(self, name, _texts(getattr(self, name), name))
        object.__setattr__(self, "origins", tuple(normalize_origin(o) for o in self.origins))
        for origin in self.origins:
            if not _ORIGIN.match(origin):
                raise MandateError("mandate_invalid", f"bad origin {origin!r:.60} "
                                   "(want scheme://host[:port])")
        for network in self.networks:
            if not _NETWORK.match(network):
                raise MandateError("mandate_invalid", f"bad CAIP-2 network {network!r:.60}")
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown:
            raise MandateError("mandate_unknown_scheme",
                               f"schemes {unknown} (this version knows {list(SCHEMES)})")
        for name in ("networks", "assets", "schemes"):
            if not getattr(self, name):
                raise MandateError("mandate_invalid", f"{name} may not be empty: a mandate "
                                   "names where, in what and how it pays")
        if self.valid_before <= self.valid_after:
            raise MandateError("mandate_invalid", "valid_before must be after valid_after")
        if self.max_per_payment > self.budget:
            raise MandateError("mandate_invalid", "max_per_payment exceeds the budget")
        if (self.period == 0) != (self.period_budget == 0):
            raise MandateError("mandate_invalid",
                               "period and period_budget go together (both 0: no period limit)")
        if address_key(self.owner) == address_key(self.agent):
            raise MandateError("mandate_invalid", "owner and agent are one key: a mandate "
                               "limits a key other than the owner's")

    # --- EIP-712

    def struct_hash(self) -> bytes:
        parts = [MANDATE_TYPEHASH]
        for name, kind in MANDATE_FIELDS:
            parts.append(_encode(kind, self.message()[name]))
        return keccak256(b"".join(parts))

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest the owner signs: the mandate's hash."""
        return keccak256(b"\x19\x01" + domain.separator() + self.struct_hash())

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (camelCase names, ints, ``0x`` hex for bytes32)."""
        return {
            "owner": self.owner, "agent": self.agent,
            "maxPerPayment": self.max_per_payment, "budget": self.budget,
            "periodBudget": self.period_budget, "period": self.period,
            "payees": list(self.payees), "origins": list(self.origins),
            "urlPatterns": list(self.url_patterns), "skills": list(self.skills),
            "networks": list(self.networks), "assets": list(self.assets),
            "schemes": list(self.schemes),
            "validAfter": self.valid_after, "validBefore": self.valid_before,
            "nonce": "0x" + self.nonce.hex(), "confirmAbove": self.confirm_above,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Mandate:
        """Read an EIP-712 message; unknown or missing fields are refused (fail closed)."""
        _exact_keys(message, {n for n, _ in MANDATE_FIELDS}, "mandate")
        return cls(
            owner=message["owner"], agent=message["agent"],
            max_per_payment=message["maxPerPayment"], budget=message["budget"],
            period_budget=message["periodBudget"], period=message["period"],
            payees=_list(message["payees"]), origins=_list(message["origins"]),
            url_patterns=_list(message["urlPatterns"]), skills=_list(message["skills"]),
            networks=_list(message["networks"]), assets=_list(message["assets"]),
            schemes=_list(message["schemes"]),
            valid_after=message["validAfter"], valid_before=message["validBefore"],
            nonce=_bytes32(message["nonce"], "nonce"), confirm_above=message["confirmAbove"],
        )


def typed_data(mandate: Mandate, domain: Domain) -> dict[str, Any]:
    """The ``eth_signTypedData_v4`` payload a wallet shows and signs."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Mandate": [{"name": n, "type": t} for n, t in MANDATE_FIELDS],
        },
        "primaryType": "Mandate",
        "domain": domain.typed(),
        "message": mandate.message(),
    }


def _encode(kind: str, value: Any) -> bytes:
    """One EIP-712 ``encodeData`` word for the types a mandate uses."""
    if kind.endswith("[]"):
        inner = kind[:-2]
        return keccak256(b"".join(_encode(inner, v) for v in value))
    if kind == "address":
        return bytes(12) + address_bytes(value)
    if kind == "string":
        return keccak256(value.encode())
    if kind == "bytes32":
        return _bytes32(value, "bytes32")
    if kind.startswith("uint"):
        return int(value).to_bytes(32, "big")
    raise AssertionError(kind)  # pragma: no cover


def _bytes32(value: object, name: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise MandateError("mandate_invalid", f"{name} must be 32 bytes as 0x hex")


def _list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise MandateError("mandate_invalid", f"expected a list, got {type(value).__name__}")
    return tuple(value)


def _exact_keys(data: object, known: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise MandateError("mandate_invalid", f"{what} must be an object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise MandateError("mandate_unknown_field",
                           f"{what} has fields this version does not know: {unknown}; "
                           "a limit it cannot read is a limit it would not enforce")
    missing = sorted(known - set(data))
    if missing:
        raise MandateError("mandate_invalid", f"{what} lacks {missing}")


# ------------------------------------------------------------------ signing


def _signature(value: object, what: str) -> bytes:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 132:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise MandateError("mandate_bad_signature", f"{what} must be 65 bytes as 0x hex")


@dataclass(frozen=True)
class SignedMandate:
    """A mandate, its domain and the owner's signature, checked when built.

    Building one recovers the signer (OpenZeppelin's rule: ``v`` 27/28, low
    ``s``) and refuses, as ``mandate_bad_signature``, a signature that is not
    the owner's: no unsigned or mis-signed mandate ever exists as this type.
    Contract-wallet (ERC-1271) owners are not accepted here yet.
    """

    mandate: Mandate
    domain: Domain
    signature: bytes = field(repr=False)
    hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        digest = self.mandate.digest(self.domain)
        object.__setattr__(self, "hash", digest)
        signer = recover_address(digest, self.signature, policy=OPENZEPPELIN)
        if signer is None or signer != address_bytes(self.mandate.owner):
            raise MandateError("mandate_bad_signature",
                               "the signature is not the owner's over this mandate")

    @property
    def hash_hex(self) -> str:
        return "0x" + self.hash.hex()

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "domain": self.domain.typed(),
                "mandate": self.mandate.message(), "signature": "0x" + self.signature.hex(),
                "hash": self.hash_hex}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def sign_mandate(mandate: Mandate, domain: Domain, sign_digest: Any) -> SignedMandate:
    """Sign with ``sign_digest(digest) -> 65 bytes`` (an ``EcdsaSigner.sign_digest``)."""
    return SignedMandate(mandate, domain, bytes(sign_digest(mandate.digest(domain))))


def load_signed(data: str | bytes | Mapping[str, Any]) -> SignedMandate:
    """Read a signed mandate (JSON text or its object); unknown fields fail closed.

    A ``hash`` field, if present, must equal the recomputed hash (it is a
    convenience for humans; the signature is what is checked).
    """
    if isinstance(data, str | bytes):
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise MandateError("mandate_invalid", f"not JSON: {e}") from None
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise MandateError("mandate_invalid", "a signed mandate is a JSON object")
    _exact_keys({k: v for k, v in obj.items() if k != "hash"},
                {"format", "domain", "mandate", "signature"}, "signed mandate")
    if obj["format"] != FORMAT:
        raise MandateError("mandate_unknown_format",
                           f"format {obj['format']!r:.40}; this version reads {FORMAT!r}")
    dom = obj["domain"]
    _exact_keys(dom, {"name", "version", "chainId", "verifyingContract"}, "domain")
    if dom["name"] != DOMAIN_NAME or dom["version"] != DOMAIN_VERSION:
        raise MandateError("mandate_unknown_format",
                           f"domain {dom['name']!r:.40} v{dom['version']!r:.10} is not "
                           f"{DOMAIN_NAME!r} v{DOMAIN_VERSION}")
    domain = Domain(dom["chainId"], dom["verifyingContract"])
    signed = SignedMandate(Mandate.from_message(obj["mandate"]), domain,
                           _signature(obj["signature"], "signature"))
    if "hash" in obj and str(obj["hash"]).lower() != signed.hash_hex:
        raise MandateError("mandate_invalid", "the stated hash is not this mandate's")
    return signed


# ------------------------------------------------------------------ confirmations


@dataclass(frozen=True)
class Confirmation:
    """The owner's signature allowing one payment above the mandate's ``confirm_above``.

    It names the mandate and every term of the payment (payee, network, asset,
    scheme, amount, and the URL or A2A skill as ``resource``), carries a nonce
    (the spend store accepts each nonce once) and expires at ``valid_before``.
    """

    mandate: bytes
    payee: str
    network: str
    asset: str
    scheme: str
    amount: int
    resource: str
    nonce: bytes
    valid_before: int
    signature: bytes = field(repr=False, default=b"")

    def digest(self, domain: Domain) -> bytes:
        words = [
            CONFIRMATION_TYPEHASH, _encode("bytes32", self.mandate),
            _encode("address", self.payee), _encode("string", self.network),
            _encode("address", self.asset), _encode("string", self.scheme),
            _encode("uint256", _uint(self.amount, 256, "amount")),
            _encode("string", self.resource), _encode("bytes32", self.nonce),
            _encode("uint64", _uint(self.valid_before, 64, "valid_before")),
        ]
        return keccak256(b"\x19\x01" + domain.separator() + keccak256(b"".join(words)))

    def signer(self, domain: Domain) -> bytes | None:
        return recover_address(self.digest(domain), self.signature, policy=OPENZEPPELIN)

    def to_json(self) -> dict[str, Any]:
        return {"mandate": "0x" + self.mandate.hex(), "payee": to_checksum(self.payee),
                "network": self.network, "asset": to_checksum(self.asset),
                "scheme": self.scheme, "amount": self.amount, "resource": self.resource,
                "nonce": "0x" + self.nonce.hex(), "validBefore": self.valid_before,
                "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Confirmation:
        _exact_keys(data, {f.name for f in fields(cls)} - {"valid_before"} | {"validBefore"},
                    "confirmation")
        return cls(
            mandate=_bytes32(data["mandate"], "mandate"), payee=str(data["payee"]),
            network=str(data["network"]), asset=str(data["asset"]), scheme=str(data["scheme"]),
            amount=_uint(data["amount"], 256, "amount"), resource=str(data["resource"]),
            nonce=_bytes32(data["nonce"], "nonce"),
            valid_before=_uint(data["validBefore"], 64, "validBefore"),
            signature=_signature(data["signature"], "confirmation signature"),
        )


def revocation_digest(mandate_hash: bytes, domain: Domain) -> bytes:
    """What the owner signs for ``MandateRegistry.revokeBySig``."""
    struct = keccak256(REVOCATION_TYPEHASH + _bytes32(mandate_hash, "mandate hash"))
    return keccak256(b"\x19\x01" + domain.separator() + struct)


def describe(signed: SignedMandate) -> list[tuple[str, str]]:
    """The mandate as (field, value) rows a person reads; "any" where a list is empty."""
    m = signed.mandate

    def listing(items: Sequence[str]) -> str:
        return ", ".join(items) if items else "any"

    rows = [
        ("hash", signed.hash_hex),
        ("owner", m.owner), ("agent", m.agent),
        ("chain / registry", f"eip155:{signed.domain.chain_id} / {signed.domain.registry}"),
        ("max per payment", str(m.max_per_payment)),
        ("budget", str(m.budget)),
        ("per period", f"{m.period_budget} per {m.period} s" if m.period else "no period limit"),
        ("networks", listing(m.networks)), ("assets", listing(m.assets)),
        ("schemes", listing(m.schemes)), ("payees", listing(m.payees)),
        ("origins", listing(m.origins)), ("URL patterns", listing(m.url_patterns)),
        ("A2A skills", listing(m.skills)),
        ("valid", f"{m.valid_after} .. {m.valid_before} (unix s)"),
        ("owner confirms above", str(m.confirm_above) if m.confirm_above else "never asked"),
        ("nonce", "0x" + m.nonce.hex()),
    ]
    return rows
