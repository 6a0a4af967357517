"""AP2 v0.2 open payment mandates (SD-JWT VC) as a second encoding of an a402 mandate.

AP2 (the Agent Payments Protocol, release v0.2) carries what a user lets an agent
pay as an SD-JWT verifiable credential of type (``vct``) ``mandate.payment.open.1``:
a list of ``constraints`` and a ``cnf`` claim naming the agent's key. This module
writes an a402 :class:`~a402.mandate.document.Mandate` as such a credential
(:func:`export_open`) and reads one back (:func:`read_open`) into the *same*
``Mandate`` value, so the limits are enforced by the same :func:`~a402.mandate.policy.decide`,
the same spend store and the same revocation registry. :func:`load_sd_jwt` gives
a :class:`Ap2SignedMandate`, a :class:`~a402.mandate.document.SignedMandate` whose
proof is the owner's SD-JWT signature instead of an EIP-712 one: it drives the
paying client (``a402 pay --mandate mandate.sd-jwt``) like any mandate.

Per payment, the agent can also write AP2's *closed* payment mandate
(``mandate.payment.1``, :func:`write_closed`): a KB-SD-JWT leaf (``typ``
``kb+sd-jwt``) it signs on top of the open one (``<open>~~<leaf>~``), bound by
``sd_hash``, ``aud`` and ``nonce``, whose ``delegate_payload`` names payee,
amount, instrument and (``a402_resource``) the URL or skill. A verifier reads it
(:func:`read_closed`) into the open mandate and the :class:`ProposedPayment`,
and judges it with :func:`~a402.mandate.policy.decide`. The agent's key is
named in ``cnf`` by its did:pkh address, so the leaf's ES256K signature is
checked by recovering the signer's address (low ``s`` only: one encoding per
closed mandate, one receipt reference). Intermediate delegation hops are refused.

SD-JWT is verified and issued with the ``sd-jwt`` package (the IETF reference
implementation from the OpenWallet Foundation, which AP2's own SDK also depends
on), over ``jwcrypto``. The owner signs with the same secp256k1 key that owns the
mandate on-chain, as JWS ``ES256K``.

Field mapping (a402 ``Mandate`` ⇄ AP2 ``mandate.payment.open.1``)
------------------------------------------------------------------

=====================  ==================================================================
a402                   AP2 open payment mandate
=====================  ==================================================================
owner                  ``iss`` = ``did:pkh:eip155:<chainId>:<owner>``; the JWS header
                       ``jwk`` is the owner's public key, whose address must be ``owner``
agent                  ``cnf`` = ``{"kid": "did:pkh:eip155:<chainId>:<agent>"}`` (read:
                       also ``{"jwk": <secp256k1 key>}``, the agent being its address)
domain.chain_id        the ``eip155`` chain of ``iss``
domain.registry        top-level claim ``a402_registry`` (CAIP-10); where the owner revokes
max_per_payment        ``payment.amount_range.max`` (minor units = the token's atomic units)
budget                 ``payment.budget.max`` (major units: atomic / 10^decimals, exact)
networks × assets ×    ``payment.allowed_payment_instruments``: one instrument per
schemes                combination, ``{"id": "<network>/erc20:<asset>", "type": "x402",
                       "scheme": "<exact|a402>", "decimals": <d>}`` (read: the set must be
                       the full product, so nothing is widened)
payees                 ``payment.allowed_payees``: ``[{"id": "<network>:<payee>",
                       "name": "<payee>"}]`` (omitted: any payee)
valid_after            ``payment.execution_date.not_before`` (ISO 8601, UTC)
valid_before           ``exp`` and ``payment.execution_date.not_after`` = valid_before − 1 s
                       (read: the earlier of ``exp`` and ``not_after`` + 1 s; a date
                       alone means the end of that day, UTC)
nonce                  ``payment.reference.conditional_transaction_id`` (``0x`` hex); a402
                       has no checkout step, the reference names this mandate instance
(reuse)                ``payment.agent_recurrence`` ``{"frequency": "ON_DEMAND"}``
origins, url_patterns, ``a402.origins`` / ``a402.url_patterns`` / ``a402.skills``
skills                 ``{"allowed": [...]}``, only when the a402 mandate limits them
period_budget, period  ``a402.period_budget`` ``{"max": <atomic>, "period": <seconds>}``
confirm_above          ``a402.confirm_above`` ``{"amount": <atomic>}``
=====================  ==================================================================

``currency`` (both amount constraints) is the token's symbol, ``USDC`` by default.
AP2 asks for an ISO 4217 code; no code names a token, and an AP2 agent that
compares it with an ``USD`` payment simply does not match, which is the safe side.

Fail closed, on reading:

* a constraint ``type`` this module does not know is refused
  (``mandate_ap2_unknown_constraint``), AP2's own rule; so are the ``a402.*``
  ones by an AP2 agent that does not know them, which is right: it could not
  enforce a URL limit it cannot read;
* an AP2 constraint a402 cannot enforce is refused
  (``mandate_ap2_unresolved_constraint``): ``amount_range.min`` above 0,
  ``agent_recurrence`` other than ``ON_DEMAND`` or with ``max_occurrences``,
  ``allowed_pisps``, and pre-set ``payee`` / ``payment_amount`` /
  ``payment_instrument`` / ``pisp`` / ``execution_date`` claims;
* a credential whose every limit a402 needs is not there is refused
  (``mandate_ap2_incomplete``): no budget, no instrument, no expiry;
* a top-level claim it does not know (a ``status`` list, an ``aud``) is refused
  (``mandate_ap2_unknown_claim``): the owner's revocation bit or audience would
  otherwise be dropped silently;
* a withheld disclosure (an ``_sd`` digest or array element whose disclosure is
  not presented) is refused (``mandate_ap2_withheld``): a hidden constraint
  is a limit the agent would not enforce, and an allow-list shown in part would
  read, if empty, as "any";
* the signature must be ``ES256K`` by the key in the header, which must be the
  ``iss`` address (``mandate_bad_signature``).

Safety argument: an AP2 credential is accepted only when it maps onto an a402
``Mandate`` with no limit dropped or widened, and that ``Mandate`` has the same
EIP-712 hash as its a402 encoding. Spend is counted and revocation looked up by
that hash, so the two encodings of one mandate share one budget and one
revocation: presenting both cannot spend twice, and revoking one revokes both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from a402.evm.address import address_bytes, is_address, to_checksum
from a402.evm.ecdsa import OPENZEPPELIN, SECP256K1_HALF_N, SECP256K1_N, recover_address
from a402.evm.keccak import keccak256
from a402.mandate.document import Domain, Mandate, MandateError, SignedMandate
from a402.mandate.policy import ProposedPayment
from a402.wire import jsonstrict
from a402.wire.errors import WireError

VCT_OPEN: Final = "mandate.payment.open.1"
VCT_CLOSED: Final = "mandate.payment.1"
TYP: Final = "dc+sd-jwt"
ALG: Final = "ES256K"
FORMAT: Final = "ap2/" + VCT_OPEN
REGISTRY_CLAIM: Final = "a402_registry"
INSTRUMENT_TYPE: Final = "x402"
DEFAULT_CURRENCY: Final = "USDC"
DEFAULT_DECIMALS: Final = 6

# Constraint types.
AMOUNT_RANGE: Final = "payment.amount_range"
BUDGET: Final = "payment.budget"
PAYEES: Final = "payment.allowed_payees"
RECURRENCE: Final = "payment.agent_recurrence"
EXECUTION_DATE: Final = "payment.execution_date"
REFERENCE: Final = "payment.reference"
INSTRUMENTS: Final = "payment.allowed_payment_instruments"
PISPS: Final = "payment.allowed_pisps"
A402_ORIGINS: Final = "a402.origins"
A402_URLS: Final = "a402.url_patterns"
A402_SKILLS: Final = "a402.skills"
A402_PERIOD: Final = "a402.period_budget"
A402_CONFIRM: Final = "a402.confirm_above"
KNOWN: Final = frozenset({
    AMOUNT_RANGE, BUDGET, PAYEES, RECURRENCE, EXECUTION_DATE, REFERENCE, INSTRUMENTS,
    PISPS, A402_ORIGINS, A402_URLS, A402_SKILLS, A402_PERIOD, A402_CONFIRM,
})
#: Pre-set claims of an open payment mandate that fix the payment; a402 cannot
#: express them as limits, so a mandate carrying one is refused.
PRESET: Final = ("payee", "payment_amount", "payment_instrument", "pisp", "execution_date")

#: The top-level claims of an open payment mandate this module reads (or that carry no
#: limit: ``iat``, ``jti``, the SD-JWT's ``_sd_alg``). Any other claim is refused: an
#: owner's ``status`` list or ``aud`` restriction a402 cannot enforce must not be dropped.
OPEN_CLAIMS: Final = frozenset({
    "iss", "iat", "exp", "nbf", "vct", "cnf", "constraints", "jti", "_sd_alg",
})
UNKNOWN_CLAIM: Final = "mandate_ap2_unknown_claim"
UNKNOWN_CONSTRAINT: Final = "mandate_ap2_unknown_constraint"
UNRESOLVED: Final = "mandate_ap2_unresolved_constraint"
INCOMPLETE: Final = "mandate_ap2_incomplete"
WITHHELD: Final = "mandate_ap2_withheld"
INVALID: Final = "mandate_ap2_invalid"
UNMAPPABLE: Final = "mandate_ap2_unmappable"
BAD_SIGNATURE: Final = "mandate_bad_signature"


def _err(reason: str, message: str) -> MandateError:
    return MandateError(reason, message)


# ------------------------------------------------------------------ keys and ids


def did_pkh(chain_id: int, address: str) -> str:
    return f"did:pkh:eip155:{chain_id}:{to_checksum(address)}"


def parse_did_pkh(value: object, what: str) -> tuple[int, str]:
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 5 or parts[:3] != ["did", "pkh", "eip155"] or not parts[3].isdigit() \
            or not is_address(parts[4]):
        raise _err(INVALID, f"{what} must be did:pkh:eip155:<chainId>:<address>, "
                   f"got {value!r:.80}")
    return int(parts[3]), to_checksum(parts[4])


def _b64url_int(value: str) -> bytes:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if len(raw) != 32:
        raise ValueError("a secp256k1 coordinate is 32 bytes")
    return raw


def jwk_address(jwk: object) -> str:
    """The Ethereum address of a public secp256k1 JWK (refused: any other key)."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "secp256k1":
        raise _err(BAD_SIGNATURE, "the key must be an EC secp256k1 JWK")
    try:
        x, y = _b64url_int(str(jwk["x"])), _b64url_int(str(jwk["y"]))
        # Refuse a point off the curve before trusting its address.
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), b"\x04" + x + y)
    except (KeyError, ValueError) as e:
        raise _err(BAD_SIGNATURE, f"not a secp256k1 public key: {e}") from None
    return to_checksum(keccak256(x + y)[12:])


def _private_jwk(secret: bytes) -> JWK:
    if len(secret) != 32:
        raise _err(INVALID, "an owner key is 32 bytes")
    key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())
    return JWK.from_pyca(key)


# ------------------------------------------------------------------ amounts and times


def _major(atomic: int, decimals: int) -> int | float:
    """``atomic`` in major units as a JSON number that reads back exactly, or refuse."""
    value = Decimal(atomic).scaleb(-decimals)
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise _err(UNMAPPABLE, f"{atomic} atomic units are not exactly representable as a "
                   "JSON number of major units")
    return as_float


def _atomic(major: object, decimals: int, what: str) -> int:
    if isinstance(major, bool) or not isinstance(major, int | float):
        raise _err(INVALID, f"{what} must be a number")
    try:
        value = Decimal(repr(major)) if isinstance(major, float) else Decimal(major)
        scaled = value.scaleb(decimals)
    except InvalidOperation:
        raise _err(INVALID, f"{what} is not a finite number") from None
    if not scaled.is_finite() or scaled < 0 or scaled != scaled.to_integral_value():
        raise _err(INVALID, f"{what} {major!r} is not a whole number of atomic units "
                   f"({decimals} decimals)")
    return int(scaled)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object, what: str, *, end_of_day: bool) -> int:
    """Unix seconds of an ISO 8601 date or date-time (no zone: UTC)."""
    if not isinstance(value, str) or not value:
        raise _err(INVALID, f"{what} must be an ISO 8601 date or date-time")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            # not_after names the last day allowed: the mandate pays until its end.
            moment = start + timedelta(days=1) - timedelta(seconds=1) if end_of_day else start
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise _err(INVALID, f"{what} {value!r:.40} is not ISO 8601") from None
    return int(moment.timestamp())


def _uint_claim(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _err(INVALID, f"{what} must be a non-negative integer")
    return value


# ------------------------------------------------------------------ writing


def open_claims(mandate: Mandate, domain: Domain, *, currency: str = DEFAULT_CURRENCY,
                decimals: int = DEFAULT_DECIMALS, issued_at: int | None = None
                ) -> dict[str, Any]:
    """The claims of the AP2 open payment mandate for ``mandate`` (module doc's mapping)."""
    m = mandate
    constraints: list[dict[str, Any]] = [
        {"type": REFERENCE, "conditional_transaction_id": "0x" + m.nonce.hex()},
        {"type": AMOUNT_RANGE, "currency": currency, "max": m.max_per_payment},
        {"type": BUDGET, "currency": currency, "max": _major(m.budget, decimals)},
        {"type": RECURRENCE, "frequency": "ON_DEMAND"},
        {"type": INSTRUMENTS, "allowed": [
            {"id": f"{network}/erc20:{asset}", "type": INSTRUMENT_TYPE, "scheme": scheme,
             "decimals": decimals}
            for network in m.networks for asset in m.assets for scheme in m.schemes]},
    ]
    window: dict[str, Any] = {"type": EXECUTION_DATE, "not_after": _iso(m.valid_before - 1)}
    if m.valid_after:
        window["not_before"] = _iso(m.valid_after)
    constraints.append(window)
    if m.payees:
        network = m.networks[0]
        constraints.append({"type": PAYEES, "allowed": [
            {"id": f"{network}:{payee}", "name": payee} for payee in m.payees]})
    for kind, values in ((A402_ORIGINS, m.origins), (A402_URLS, m.url_patterns),
                         (A402_SKILLS, m.skills)):
        if values:
            constraints.append({"type": kind, "allowed": list(values)})
    if m.period:
        constraints.append({"type": A402_PERIOD, "max": m.period_budget, "period": m.period})
    if m.confirm_above:
        constraints.append({"type": A402_CONFIRM, "amount": m.confirm_above})
    return {
        "iss": did_pkh(domain.chain_id, m.owner),
        "iat": int(time.time()) if issued_at is None else issued_at,
        "exp": m.valid_before,
        "vct": VCT_OPEN,
        "cnf": {"kid": did_pkh(domain.chain_id, m.agent)},
        REGISTRY_CLAIM: f"eip155:{domain.chain_id}:{to_checksum(domain.registry)}",
        "constraints": constraints,
    }


def export_open(mandate: Mandate, domain: Domain, owner_key: bytes, *,
                currency: str = DEFAULT_CURRENCY, decimals: int = DEFAULT_DECIMALS,
                issued_at: int | None = None) -> str:
    """``mandate`` as an AP2 open payment mandate, signed by the owner: an SD-JWT
    (compact, no disclosures). ``owner_key`` must be the mandate owner's 32-byte key.

    The result reads back (:func:`read_open`) into an equal ``Mandate``; if some
    limit could not be written exactly this raises ``mandate_ap2_unmappable``.
    """
    jwk = _private_jwk(owner_key)
    public = jwk.export_public(as_dict=True)
    if jwk_address(public) != mandate.owner:
        raise _err(BAD_SIGNATURE, "the key is not the mandate owner's")
    if not 0 <= decimals <= 36 or not currency:
        raise _err(UNMAPPABLE, "decimals must be 0..36 and the currency named")
    claims = open_claims(mandate, domain, currency=currency, decimals=decimals,
                         issued_at=issued_at)
    token = issue(claims, owner_key)
    back = read_open(token, now=None)
    if back.mandate != mandate or back.domain != domain:  # pragma: no cover - a mapping bug
        raise _err(UNMAPPABLE, "the AP2 encoding does not read back to the same mandate")
    return token


def issue(claims: dict[str, Any], owner_key: bytes) -> str:
    """Sign ``claims`` as an SD-JWT (compact, ``ES256K``, the public key in the header).

    Claims the ``sd-jwt`` package marks selectively disclosable (its ``SDObj``) get
    disclosures appended; a402 itself writes none (a mandate is read whole).
    """
    jwk = _private_jwk(owner_key)
    issuer = SDJWTIssuer(claims, jwk, sign_alg=ALG,
                         extra_header_parameters={"typ": TYP, "jwk": jwk.export_public(
                             as_dict=True)})
    return str(issuer.sd_jwt_issuance)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Ap2Read:
    """A verified AP2 open payment mandate and the a402 limits it maps to."""

    mandate: Mandate
    domain: Domain
    currency: str
    decimals: int
    claims: dict[str, Any] = field(repr=False)


def _split(token: str) -> tuple[str, list[str], str]:
    if not isinstance(token, str) or "~" not in token:
        raise _err(INVALID, "an SD-JWT is <issuer JWT>~<disclosure>~...~[KB-JWT]")
    jwt, *disclosures, kb = token.strip().split("~")
    if jwt.count(".") != 2:
        raise _err(INVALID, "the issuer-signed part is not a compact JWS")
    return jwt, disclosures, kb


def _b64json(part: str, what: str) -> Any:
    """A base64url JSON part, bounded like every wire body (:mod:`a402.wire.jsonstrict`:
    size, depth, duplicate keys) before any parser or recursive walk sees it."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except ValueError:
        raise _err(INVALID, f"the {what} is not base64url") from None
    try:
        if what == "disclosure":  # a JSON array: bounded here, parsed by the sd-jwt package
            return jsonstrict.check_bounds(raw)
        return jsonstrict.loads_object(raw)
    except WireError as e:
        raise _err(INVALID, f"the {what} is refused: {e.message}") from None


def _digests(node: Any) -> set[str]:
    """Every disclosure digest an SD-JWT payload refers to (``_sd`` and ``...`` entries)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("_sd"), list):
            found.update(d for d in node["_sd"] if isinstance(d, str))
        if set(node) == {"..."} and isinstance(node["..."], str):
            found.add(node["..."])
        for key, value in node.items():
            if key != "_sd":
                found |= _digests(value)
    elif isinstance(node, list):
        for item in node:
            found |= _digests(item)
    return found


def verify_sd_jwt(token: str) -> dict[str, Any]:
    """The issuer-verified, fully disclosed claims of an SD-JWT signed ``ES256K`` by the
    key in its header, which must be the ``iss`` address. Refuses withheld disclosures."""
    jwt, disclosures, _kb = _split(token)
    header = _b64json(jwt.split(".")[0], "JWS header")
    payload = _b64json(jwt.split(".")[1], "JWS payload")
    for d in disclosures:  # bounded before the sd-jwt package parses them
        if d:
            _b64json(d, "disclosure")
    if not isinstance(header, dict) or header.get("alg") != ALG:
        alg = header.get("alg") if isinstance(header, dict) else None
        raise _err(BAD_SIGNATURE, f"the mandate must be signed {ALG} (the owner's "
                   f"secp256k1 key), not {alg!r:.20}")
    typ = str(header.get("typ", ""))
    if not typ.endswith("sd-jwt") or typ.startswith("kb+"):
        raise _err(INVALID, f"header typ {typ!r:.40} is not an issuer-signed SD-JWT")
    if not isinstance(payload, dict):
        raise _err(INVALID, "the payload is not an object")
    _, issuer = parse_did_pkh(payload.get("iss"), "iss")
    signer = jwk_address(header.get("jwk"))
    if signer != issuer:
        raise _err(BAD_SIGNATURE, f"the signing key is {signer}, the issuer {issuer}")

    def issuer_key(_iss: str, _header: dict[str, Any]) -> JWK:
        return JWK(**header["jwk"])

    try:
        verifier = SDJWTVerifier(token, issuer_key)
        claims = verifier.get_verified_payload()
    except MandateError:
        raise
    except Exception as e:  # jwcrypto's InvalidJWSSignature, a malformed disclosure, ...
        raise _err(BAD_SIGNATURE, f"the SD-JWT does not verify: {type(e).__name__}: {e}"
                   ) from None
    presented = {base64.urlsafe_b64encode(hashlib.sha256(d.encode("ascii")).digest())
                 .decode().rstrip("=") for d in disclosures if d}
    missing = _digests(payload) - presented
    if missing:
        raise _err(WITHHELD, f"{len(missing)} selectively disclosed claim(s) are withheld; "
                   "a mandate is read whole or not at all")
    if not isinstance(claims, dict):
        raise _err(INVALID, "the claims are not an object")
    return claims


def _constraint_fields(c: dict[str, Any], required: set[str],
                       optional: frozenset[str] = frozenset()) -> None:
    keys = set(c) - {"type"}
    if not required <= keys:
        raise _err(INVALID, f"{c['type']} lacks {sorted(required - keys)}")
    extra = keys - required - optional
    if extra:
        raise _err(UNKNOWN_CONSTRAINT, f"{c['type']} has fields {sorted(extra)} this "
                   "version does not know")


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _err(INVALID, f"{what} must be a non-empty list of strings")
    return list(value)


def read_open(token: str, *, registry: str | None = None, now: int | None = None) -> Ap2Read:
    """Verify an AP2 open payment mandate and map it onto an a402 ``Mandate`` (fail closed,
    see the module doc). ``registry``: the ``MandateRegistry`` to use when the credential
    names none (an AP2 mandate not written by a402); if it names one, they must agree.
    ``now``: if given, an expired credential (``exp``) is refused here already."""
    claims = verify_sd_jwt(token)
    if claims.get("vct") != VCT_OPEN:
        raise _err(INVALID, f"vct {claims.get('vct')!r:.40} is not {VCT_OPEN!r}")
    chain_id, owner = parse_did_pkh(claims["iss"], "iss")
    for name in PRESET:
        if name in claims:
            raise _err(UNRESOLVED, f"the pre-set claim {name!r} fixes the payment; a402 "
                       "mandates state limits only")
    unknown = set(claims) - OPEN_CLAIMS - {REGISTRY_CLAIM}
    if unknown:
        raise _err(UNKNOWN_CLAIM, f"claim(s) {sorted(unknown)!r:.120} are unknown to this "
                   "version; a limit it cannot read (a status list, an audience) is a limit "
                   "it would not enforce")
    agent = _agent(claims.get("cnf"), chain_id)
    named = claims.get(REGISTRY_CLAIM)
    if named is not None:
        reg_chain, reg = _caip10(named, REGISTRY_CLAIM)
        if reg_chain != chain_id:
            raise _err(INVALID, f"the registry is on chain {reg_chain}, the owner on {chain_id}")
        if registry is not None and address_bytes(registry) != address_bytes(reg):
            raise _err(INVALID, f"the mandate names registry {reg}, not {registry}")
        registry = reg
    if registry is None:
        raise _err(INCOMPLETE, f"the mandate names no {REGISTRY_CLAIM}: give the "
                   "MandateRegistry its owner revokes it in")
    constraints = claims.get("constraints")
    if not isinstance(constraints, list) or not constraints:
        raise _err(INCOMPLETE, "an open payment mandate has constraints")
    by_type: dict[str, dict[str, Any]] = {}
    for c in constraints:
        if not isinstance(c, dict) or not isinstance(c.get("type"), str):
            raise _err(INVALID, "every constraint is an object with a type")
        kind = c["type"]
        if kind not in KNOWN:
            raise _err(UNKNOWN_CONSTRAINT, f"constraint {kind!r:.60} is unknown to this "
                       "version; a limit it cannot read is a limit it would not enforce")
        if kind in by_type:
            raise _err(INVALID, f"constraint {kind} appears twice")
        by_type[kind] = c

    currency: str | None = None
    for kind in (AMOUNT_RANGE, BUDGET):
        if kind in by_type:
            cur = by_type[kind].get("currency")
            if not isinstance(cur, str) or not cur or (currency is not None and cur != currency):
                raise _err(INVALID, "amount_range and budget name one currency")
            currency = cur

    if REFERENCE not in by_type:
        raise _err(INCOMPLETE, f"{REFERENCE} is required")
    ref = by_type[REFERENCE]
    _constraint_fields(ref, {"conditional_transaction_id"})
    nonce = _nonce(ref["conditional_transaction_id"])

    if INSTRUMENTS not in by_type:
        raise _err(INCOMPLETE, "no payment.allowed_payment_instruments: a402 pays only on "
                   "named networks, in named assets")
    networks, assets, schemes, decimals = _instruments(by_type[INSTRUMENTS])

    if BUDGET not in by_type:
        raise _err(INCOMPLETE, "no payment.budget: a402 mandates always bound the total")
    budget_c = by_type[BUDGET]
    _constraint_fields(budget_c, {"max", "currency"})
    budget = _atomic(budget_c["max"], decimals, "payment.budget.max")

    max_per_payment = budget
    if AMOUNT_RANGE in by_type:
        ar = by_type[AMOUNT_RANGE]
        _constraint_fields(ar, {"max", "currency"}, frozenset({"min"}))
        max_per_payment = _uint_claim(ar["max"], "payment.amount_range.max")
        if ar.get("min", 0) not in (0, None):
            raise _err(UNRESOLVED, "payment.amount_range.min: a402 enforces no minimum")

    if RECURRENCE in by_type:
        rec = by_type[RECURRENCE]
        _constraint_fields(rec, {"frequency"}, frozenset({"max_occurrences"}))
        if rec["frequency"] != "ON_DEMAND" or rec.get("max_occurrences") is not None:
            raise _err(UNRESOLVED, "payment.agent_recurrence: a402 enforces amounts, not a "
                       "calendar or a count of payments (only ON_DEMAND without "
                       "max_occurrences maps)")
    if PISPS in by_type:
        raise _err(UNRESOLVED, "payment.allowed_pisps: a402 has no payment initiation "
                   "service provider to check")

    valid_before = _uint_claim(claims["exp"], "exp") if "exp" in claims else None
    valid_after = 0
    if EXECUTION_DATE in by_type:
        ed = by_type[EXECUTION_DATE]
        _constraint_fields(ed, set(), frozenset({"not_before", "not_after"}))
        if "not_before" in ed:
            valid_after = _parse_time(ed["not_before"], "not_before", end_of_day=False)
        if "not_after" in ed:
            last = _parse_time(ed["not_after"], "not_after", end_of_day=True) + 1
            valid_before = last if valid_before is None else min(valid_before, last)
    if "nbf" in claims:
        valid_after = max(valid_after, _uint_claim(claims["nbf"], "nbf"))
    if valid_before is None:
        raise _err(INCOMPLETE, "no exp and no execution_date.not_after: a402 mandates expire")
    if now is not None and now >= valid_before:
        raise _err("mandate_expired", f"valid until {valid_before}, now {now}")

    payees: tuple[str, ...] = ()
    if PAYEES in by_type:
        pc = by_type[PAYEES]
        _constraint_fields(pc, {"allowed"})
        payees = _payees(pc["allowed"], networks)

    extra: dict[str, Any] = {}
    for kind, name in ((A402_ORIGINS, "origins"), (A402_URLS, "url_patterns"),
                       (A402_SKILLS, "skills")):
        if kind in by_type:
            _constraint_fields(by_type[kind], {"allowed"})
            extra[name] = tuple(_strings(by_type[kind]["allowed"], kind))
    if A402_PERIOD in by_type:
        pc = by_type[A402_PERIOD]
        _constraint_fields(pc, {"max", "period"})
        extra["period_budget"] = _uint_claim(pc["max"], "a402.period_budget.max")
        extra["period"] = _uint_claim(pc["period"], "a402.period_budget.period")
    if A402_CONFIRM in by_type:
        _constraint_fields(by_type[A402_CONFIRM], {"amount"})
        extra["confirm_above"] = _uint_claim(by_type[A402_CONFIRM]["amount"],
                                             "a402.confirm_above.amount")

    mandate = Mandate(
        owner=owner, agent=agent, max_per_payment=max_per_payment, budget=budget,
        valid_before=valid_before, valid_after=valid_after, nonce=nonce,
        networks=networks, assets=assets, schemes=schemes, payees=payees, **extra)
    assert currency is not None  # the budget constraint names it
    return Ap2Read(mandate, Domain(chain_id, registry), currency, decimals, claims)


def _agent(cnf: object, chain_id: int) -> str:
    if not isinstance(cnf, dict) or len(cnf) != 1:
        raise _err(INCOMPLETE, "cnf names the agent's key: {\"kid\": did:pkh} or {\"jwk\"}")
    if "kid" in cnf:
        agent_chain, agent = parse_did_pkh(cnf["kid"], "cnf.kid")
        if agent_chain != chain_id:
            raise _err(INVALID, "the agent's did:pkh is on another chain than the owner's")
        return agent
    if "jwk" in cnf:
        return jwk_address(cnf["jwk"])
    raise _err(UNRESOLVED, f"cnf {sorted(cnf)} does not name a secp256k1 agent key")


def _caip10(value: object, what: str) -> tuple[int, str]:
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 3 or parts[0] != "eip155" or not parts[1].isdigit() \
            or not is_address(parts[2]):
        raise _err(INVALID, f"{what} must be eip155:<chainId>:<address>, got {value!r:.80}")
    return int(parts[1]), to_checksum(parts[2])


def _nonce(value: object) -> bytes:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    if isinstance(value, str) and value:
        # A reference written by another AP2 issuer (a b64url digest): its hash names it.
        return keccak256(value.encode())
    raise _err(INVALID, "payment.reference.conditional_transaction_id must be a string")


def _ordered(items: list[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _instruments(c: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...],
                                             tuple[str, ...], int]:
    _constraint_fields(c, {"allowed"})
    allowed = c["allowed"]
    if not isinstance(allowed, list) or not allowed:
        raise _err(INCOMPLETE, "payment.allowed_payment_instruments lists none")
    triples: list[tuple[str, str, str]] = []
    decimals: set[int] = set()
    for item in allowed:
        if not isinstance(item, dict) or item.get("type") != INSTRUMENT_TYPE:
            raise _err(UNRESOLVED, f"instrument {item!r:.80} is not an x402 token "
                       f"(type {INSTRUMENT_TYPE!r})")
        extra = set(item) - {"id", "type", "scheme", "decimals", "description"}
        if extra:
            raise _err(UNKNOWN_CONSTRAINT, f"instrument fields {sorted(extra)} are unknown")
        network, _, asset = str(item.get("id", "")).partition("/erc20:")
        if not network or not is_address(asset):
            raise _err(INVALID, f"instrument id {item.get('id')!r:.80} is not "
                       "<network>/erc20:<address>")
        scheme = item.get("scheme", "exact")
        if not isinstance(scheme, str):
            raise _err(INVALID, "instrument scheme must be a string")
        if "decimals" in item:
            decimals.add(_uint_claim(item["decimals"], "instrument decimals"))
        triples.append((network, to_checksum(asset), scheme))
    if len(decimals) > 1:
        raise _err(UNRESOLVED, "instruments of different decimals: one budget cannot add them")
    networks = _ordered([t[0] for t in triples])
    assets = _ordered([t[1] for t in triples])
    schemes = _ordered([t[2] for t in triples])
    if len(set(triples)) != len(networks) * len(assets) * len(schemes):
        raise _err(UNRESOLVED, "the instruments are not every network × asset × scheme "
                   "combination; a402 limits each separately and would widen them")
    return networks, assets, schemes, decimals.pop() if decimals else DEFAULT_DECIMALS


def _payees(allowed: object, networks: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(allowed, list) or not allowed:
        raise _err(INCOMPLETE, "payment.allowed_payees lists none (read as 'any' it would "
                   "widen the mandate)")
    out: list[str] = []
    for merchant in allowed:
        ident = merchant.get("id") if isinstance(merchant, dict) else None
        network, _, address = str(ident or "").rpartition(":")
        if not is_address(address) or network not in networks:
            raise _err(UNRESOLVED, f"payee id {ident!r:.80} is not <network>:<address> on "
                       "one of the mandate's networks")
        out.append(to_checksum(address))
    return _ordered(out)


# ------------------------------------------------------------------ as a SignedMandate


@dataclass(frozen=True)
class Ap2SignedMandate(SignedMandate):
    """A :class:`SignedMandate` proven by the owner's AP2 SD-JWT instead of EIP-712.

    Built only through a verified read: its ``__post_init__`` verifies ``sd_jwt``
    again and requires it to map to exactly ``mandate`` and ``domain``, so no
    instance exists whose limits the owner did not sign. ``hash`` is the a402
    EIP-712 hash of those limits (spend and revocation are keyed by it, shared
    with the a402 encoding); ``signature`` is empty.
    """

    sd_jwt: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        read = read_open(self.sd_jwt, registry=self.domain.registry)
        if read.mandate != self.mandate or read.domain != self.domain:
            raise _err(BAD_SIGNATURE, "the SD-JWT does not state these limits")
        object.__setattr__(self, "hash", self.mandate.digest(self.domain))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "sdJwt": self.sd_jwt, "domain": self.domain.typed(),
                "mandate": self.mandate.message(), "hash": self.hash_hex}

    def dumps(self) -> str:
        """The document as the owner signed it: the SD-JWT."""
        return self.sd_jwt


def load_sd_jwt(token: str, *, registry: str | None = None) -> Ap2SignedMandate:
    """An AP2 open payment mandate, verified, as a mandate the a402 payers enforce."""
    token = token.strip()
    read = read_open(token, registry=registry)
    return Ap2SignedMandate(read.mandate, read.domain, b"", sd_jwt=token)


# ------------------------------------------------------------------ closed mandates


@dataclass(frozen=True)
class ClosedPayment:
    """A verified AP2 closed payment mandate (``mandate.payment.1``): one payment the agent
    signed on top of its open mandate, as the :class:`ProposedPayment` a402 decides on."""

    open: Ap2SignedMandate
    payment: ProposedPayment
    claims: dict[str, Any] = field(repr=False)
    leaf: str = field(repr=False)

    @property
    def reference(self) -> str:
        """AP2's receipt reference: base64url(sha256(closed mandate JWT))."""
        return _b64(hashlib.sha256(self.leaf.encode("ascii")).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _root(token: str) -> str:
    token = token.strip()
    return token if token.endswith("~") else token + "~"


def write_closed(open_token: str, agent_key: bytes, payment: ProposedPayment, *, aud: str,
                 nonce: str, transaction_id: str | None = None, registry: str | None = None,
                 issued_at: int | None = None) -> str:
    """The agent's closed payment mandate for ``payment`` on top of ``open_token``: the AP2
    chain ``<open SD-JWT>~~<KB-SD-JWT>~``. The leaf (``typ`` ``kb+sd-jwt``, ES256K by the
    agent's key) binds to the open mandate by ``sd_hash`` and to the verifier by ``aud``
    and ``nonce``; its ``delegate_payload`` is the ``mandate.payment.1`` claims. The
    payment's URL or A2A skill rides in ``a402_resource`` (AP2 has no field for it).
    """
    root = _root(open_token)
    read = read_open(root, registry=registry)
    jwk = _private_jwk(agent_key)
    agent = jwk_address(jwk.export_public(as_dict=True))
    if agent != read.mandate.agent or address_bytes(payment.agent) != address_bytes(agent):
        raise _err("mandate_wrong_agent", f"the open mandate is for {read.mandate.agent}, "
                   f"the key is {agent}")
    now = int(time.time()) if issued_at is None else issued_at
    resource = {"skill": payment.skill} if payment.skill is not None else {"url": payment.url}
    closed = {
        "vct": VCT_CLOSED,
        "transaction_id": transaction_id or _b64(hashlib.sha256(
            json.dumps(resource, sort_keys=True).encode()).digest()),
        "payee": {"id": f"{payment.network}:{to_checksum(payment.payee)}",
                  "name": to_checksum(payment.payee)},
        "payment_amount": {"amount": payment.amount, "currency": read.currency},
        "payment_instrument": {"id": f"{payment.network}/erc20:{to_checksum(payment.asset)}",
                               "type": INSTRUMENT_TYPE, "scheme": payment.scheme,
                               "decimals": read.decimals},
        "iat": now,
        "a402_resource": resource,
    }
    body = {"iat": now, "aud": aud, "nonce": nonce,
            "sd_hash": _b64(hashlib.sha256(root.encode("ascii")).digest()),
            "delegate_payload": [closed]}
    jws = JWS(json.dumps(body).encode())
    jws.add_signature(jwk, alg=ALG, protected=json.dumps({"alg": ALG, "typ": "kb+sd-jwt"}))
    header, payload, signature = str(jws.serialize(compact=True)).split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s_ = raw[:32], int.from_bytes(raw[32:], "big")
    if s_ > SECP256K1_HALF_N:  # the same signature in its one low-s form (EIP-2)
        s_ = SECP256K1_N - s_
    leaf = f"{header}.{payload}.{_b64(r + s_.to_bytes(32, 'big'))}"
    return f"{root}~{leaf}~"


def _leaf_signers(leaf: str) -> set[str]:
    """The addresses that may have made the ES256K signature of a compact JWS: the keys
    recovered from it with either recovery id (did:pkh style). Only the holder of a key
    can make a signature from which that key's address is recovered. High ``s`` is
    refused, so each closed mandate has one encoding and one receipt reference."""
    header, payload, signature = leaf.split(".")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        return set()
    if len(raw) != 64:
        return set()
    digest = hashlib.sha256(f"{header}.{payload}".encode("ascii")).digest()
    out: set[str] = set()
    for v in (27, 28):
        found = recover_address(digest, raw + bytes([v]), policy=OPENZEPPELIN)
        if found is not None:
            out.add(to_checksum(found))
    return out


CLOSED_FIELDS: Final = frozenset({
    "vct", "transaction_id", "payee", "payment_amount", "payment_instrument", "iat", "exp",
    "execution_date", "risk_data", "a402_resource"})


def read_closed(chain: str, *, registry: str | None = None, expected_aud: str | None = None,
                expected_nonce: str | None = None) -> ClosedPayment:
    """Verify an AP2 chain open mandate ~~ closed mandate and read the payment it states.

    Checked: the open mandate (:func:`read_open`); exactly one hop (a402 follows no
    further delegation); the leaf is ``kb+sd-jwt``, signed ES256K by the open mandate's
    agent, bound to that open mandate by ``sd_hash`` and, when given, to ``aud`` and
    ``nonce``; the closed claims are known ones, in the open mandate's currency. The
    payment is *not* judged here: run :func:`a402.mandate.policy.decide` on
    ``(result.open, result.payment, spent)``.
    """
    parts = chain.strip().split("~~")
    if len(parts) != 2:
        raise _err(UNRESOLVED, f"a chain of {len(parts)} tokens: a402 reads an open mandate "
                   "and the agent's closed mandate, no further delegation")
    root, leaf = parts[0] + "~", parts[1]
    if not leaf.endswith("~") or leaf.count("~") != 1 or leaf.count(".") != 2:
        raise _err(INVALID, "the closed mandate is one compact JWS followed by ~")
    leaf = leaf[:-1]
    open_ = load_sd_jwt(root, registry=registry)
    header = _b64json(leaf.split(".")[0], "closed mandate header")
    body = _b64json(leaf.split(".")[1], "closed mandate payload")
    if not isinstance(header, dict) or header.get("alg") != ALG \
            or header.get("typ") != "kb+sd-jwt":
        raise _err(BAD_SIGNATURE, f"the closed mandate must be a kb+sd-jwt signed {ALG}")
    if open_.mandate.agent not in _leaf_signers(leaf):
        raise _err(BAD_SIGNATURE, "the closed mandate is not signed by the open mandate's "
                   f"agent {open_.mandate.agent}")
    if not isinstance(body, dict):
        raise _err(INVALID, "the closed mandate's payload is not an object")
    if body.get("sd_hash") != _b64(hashlib.sha256(root.encode("ascii")).digest()):
        raise _err(BAD_SIGNATURE, "the closed mandate is bound to another open mandate")
    if "cnf" in body:
        raise _err(UNRESOLVED, "the closed mandate delegates further (cnf)")
    if expected_aud is not None and body.get("aud") != expected_aud:
        raise _err(INVALID, f"the closed mandate is for audience {body.get('aud')!r:.60}")
    if expected_nonce is not None and body.get("nonce") != expected_nonce:
        raise _err(INVALID, "the closed mandate answers another nonce")
    delegated = body.get("delegate_payload")
    if not isinstance(delegated, list) or len(delegated) != 1 \
            or not isinstance(delegated[0], dict):
        raise _err(INVALID, "delegate_payload holds one payment mandate")
    claims = delegated[0]
    if claims.get("vct") != VCT_CLOSED:
        raise _err(INVALID, f"vct {claims.get('vct')!r:.40} is not {VCT_CLOSED!r}")
    unknown = set(claims) - CLOSED_FIELDS
    if unknown:
        raise _err(UNKNOWN_CONSTRAINT, f"closed mandate fields {sorted(unknown)} are unknown")
    read = read_open(open_.sd_jwt, registry=open_.domain.registry)
    amount = claims.get("payment_amount")
    if not isinstance(amount, dict) or amount.get("currency") != read.currency:
        raise _err(INVALID, f"the payment is not in the mandate's currency {read.currency}")
    payee_claim = claims.get("payee")
    payee: dict[str, Any] = payee_claim if isinstance(payee_claim, dict) else {}
    network, _, address = str(payee.get("id", "")).rpartition(":")
    instrument = claims.get("payment_instrument")
    if not isinstance(instrument, dict) or instrument.get("type") != INSTRUMENT_TYPE:
        raise _err(UNRESOLVED, "the payment instrument is not an x402 token")
    inet, _, asset = str(instrument.get("id", "")).partition("/erc20:")
    if not is_address(address) or not is_address(asset) or inet != network:
        raise _err(INVALID, "payee and instrument name <network>:<address> on one network")
    resource = claims.get("a402_resource") or {}
    if not isinstance(resource, dict) or set(resource) - {"url", "skill"}:
        raise _err(INVALID, "a402_resource is {\"url\": ...} or {\"skill\": ...}")
    payment = ProposedPayment(
        agent=open_.mandate.agent, payee=to_checksum(address), network=network,
        asset=to_checksum(asset), scheme=str(instrument.get("scheme", "exact")),
        amount=_uint_claim(amount.get("amount"), "payment_amount.amount"),
        url=resource.get("url"), skill=resource.get("skill"))
    return ClosedPayment(open_, payment, claims, leaf)


def looks_like_sd_jwt(text: str) -> bool:
    stripped = text.strip()
    return not stripped.startswith("{") and "~" in stripped and stripped.count(".") >= 2


__all__ = [
    "VCT_CLOSED",
    "VCT_OPEN",
    "Ap2Read",
    "Ap2SignedMandate",
    "ClosedPayment",
    "did_pkh",
    "export_open",
    "issue",
    "jwk_address",
    "load_sd_jwt",
    "looks_like_sd_jwt",
    "open_claims",
    "read_closed",
    "read_open",
    "verify_sd_jwt",
    "write_closed",
]
